//! The journal's unit tests: records, blocks, secret, snapshots, reuse.

use super::*;
#[test]
fn records_round_trip_and_torn_ones_are_refused() {
    let ev = Event {
        seq: 5,
        kind: 1,
        subtype: 3,
        _reserved: 0,
        device: 2,
        size: 77,
        id: 0xabc,
    };
    let r = Record::Event {
        key: (42, 99),
        lane: 7,
        pos: 1234,
        ev,
    };
    let b = encode(&r, 3);
    assert_eq!(decode(&b, 3), Some(r.clone()));
    // Of another generation: not this journal's.
    assert_eq!(decode(&b, 4), None);
    let rel = Record::Release { key: (1, 2) };
    assert_eq!(decode(&encode(&rel, 3), 3), Some(rel));
    let mut bad = b;
    bad[30] ^= 1;
    assert_eq!(decode(&bad, 3), None);
    assert_eq!(decode(&[0u8; 64], 3), None);
    assert_eq!(decode(&b[..40], 3), None);
    // Every single flipped bit, and every record cut short and zero-filled (a torn
    // write), is refused.
    for bit in 0..64 * 8 {
        let mut f = b;
        f[bit / 8] ^= 1 << (bit % 8);
        assert_eq!(decode(&f, 3), None, "bit {bit}");
    }
    for keep in 0..64 {
        let mut t = [0u8; 64];
        t[..keep].copy_from_slice(&b[..keep]);
        assert_eq!(decode(&t, 3), None, "torn after {keep} bytes");
    }
}

#[test]
fn a_reused_journal_file_replays_only_its_own_generation() {
    let dir = std::env::temp_dir().join(format!("tttrack-journal-reuse-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let key = (9, 90);
    let alloc = |id: u64| Record::Event {
        key,
        lane: 0,
        pos: id + 1,
        ev: Event {
            seq: id,
            kind: crate::shm_layout::EventKind::Alloc as u8,
            subtype: 0,
            _reserved: 0,
            device: 0,
            size: 100,
            id,
        },
    };
    let replay = |acc: &mut Accounting, r: &Record| {
        if let Record::Event { key, ev, .. } = r {
            acc.register(*key, 0, "j", 0);
            acc.apply(*key, ev, 0);
        }
    };
    let (mut j, _) = Journal::open(&dir, replay).unwrap();
    let mut acc = Accounting::default();
    for id in 0..10 {
        j.append(&alloc(id));
        replay(&mut acc, &alloc(id));
    }
    j.flush().unwrap();
    j.compact(&acc).unwrap();
    // Generation 1 reuses the file: its first two records overwrite generation 0's,
    // the other eight of generation 0 are still in the file after them.
    for id in 10..12 {
        j.append(&alloc(id));
        replay(&mut acc, &alloc(id));
    }
    j.flush().unwrap();
    let len = std::fs::metadata(journal_path(&dir, 1)).unwrap().len();
    // Ten blocks of one event each: header, the event, its lane's position.
    let block = (BLOCK_HEADER + 32 + 8) as u64;
    assert_eq!(len, 10 * block, "the file was reused, not recreated");
    drop(j);
    let (_, rec) = Journal::open(&dir, replay).unwrap();
    assert_eq!((rec.generation, rec.replayed, rec.torn), (1, 2, false));
    let got = &rec.accounting.processes()[&key].devices[&0];
    assert_eq!(got.buffers.len(), 12);
    assert_eq!(got.used, acc.processes()[&key].devices[&0].used);
    let _ = std::fs::remove_dir_all(&dir);
}

fn ev(seq: u64, id: u64) -> Event {
    Event {
        seq,
        kind: crate::shm_layout::EventKind::Alloc as u8,
        subtype: 1,
        _reserved: 0,
        device: 3,
        size: 4096 + id,
        id,
    }
}

/// The records replay passes on from the journal bytes `b` of generation `g`, and
/// whether it found a torn one.
fn replayed(b: &[u8], g: u64) -> (Vec<Record>, bool, u64) {
    replayed_with(b, g, SECRET)
}

/// The secret the test journals are given.
const SECRET: u64 = 0x005e_c7e7;

fn replayed_with(b: &[u8], g: u64, secret: u64) -> (Vec<Record>, bool, u64) {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let p = std::env::temp_dir().join(format!("tttrack-jblock-{}-{n}", std::process::id()));
    std::fs::write(&p, b).unwrap();
    let mut got = Vec::new();
    let mut acc = Accounting::default();
    let (count, torn, len, _) =
        replay_records(&p, g, secret, &mut acc, |_, r| got.push(r.clone())).unwrap();
    let _ = std::fs::remove_file(&p);
    assert_eq!(count as usize, got.len());
    (got, torn, len)
}

/// Journal bytes of generation `g` from `f`.
fn written(g: u64, f: impl FnOnce(&mut Journal)) -> Vec<u8> {
    let dir = std::env::temp_dir().join(format!(
        "tttrack-jblocks-{}-{g}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let (mut j, _) = Journal::open(&dir, |_, _| {}).unwrap();
    j.generation = g;
    j.secret = SECRET;
    f(&mut j);
    let b = j.buf.clone();
    drop(j);
    let _ = std::fs::remove_dir_all(&dir);
    b
}

#[test]
fn blocks_round_trip_and_every_torn_or_damaged_one_is_refused() {
    let key = (4242, 77);
    // Two lanes interleaved as a pass applies them (by sequence number), a lane's
    // spare field set by a hostile producer, and a release.
    let mut hostile = ev(2, 0xb);
    hostile._reserved = 0xffff;
    let events = [
        (0u8, 11u64, ev(0, 0xa)),
        (5, 3, ev(1, 0xc)),
        (0, 12, hostile),
    ];
    let b = written(7, |j| {
        j.append_events(key, events);
        j.append(&Record::Release { key });
    });
    assert_eq!(b.len(), 32 + 3 * 32 + 8 * 2 + 32, "32 bytes an event");
    let (got, torn, len) = replayed(&b, 7);
    let mut clean = hostile;
    clean._reserved = 0;
    // Each event with its lane's position after the block (what recovery keeps).
    let want = vec![
        Record::Event {
            key,
            lane: 0,
            pos: 12,
            ev: ev(0, 0xa),
        },
        Record::Event {
            key,
            lane: 5,
            pos: 3,
            ev: ev(1, 0xc),
        },
        Record::Event {
            key,
            lane: 0,
            pos: 12,
            ev: clean,
        },
        Record::Release { key },
    ];
    assert_eq!((got, torn, len), (want, false, b.len() as u64));
    // Of another generation: not this journal's; of the one before: stale, not torn.
    assert_eq!(replayed(&b, 8), (vec![], false, 0));
    // Without the journal's secret (a block forged by someone who cannot read it):
    // refused.
    assert_eq!(replayed_with(&b, 7, SECRET ^ 1).0, vec![]);
    assert_eq!(replayed(&b, 6).0, vec![]);
    assert!(replayed(&b, 6).1, "two generations off is foreign");
    // Every flipped bit of the event block, and the block cut short at every length
    // (a torn write, zeros after it), is refused whole; nothing of it is applied.
    let block = 32 + 3 * 32 + 16;
    for bit in 0..block * 8 {
        let mut f = b.clone();
        f[bit / 8] ^= 1 << (bit % 8);
        let (got, torn, len) = replayed(&f, 7);
        assert!(got.is_empty() && torn && len == 0, "bit {bit}: {got:?}");
    }
    for keep in 1..block {
        let mut t = b[..block].to_vec();
        t[keep..].fill(0);
        // (Zeros where zeros were written are no tear.)
        if t != b[..block] {
            let (got, torn, _) = replayed(&t, 7);
            assert!(got.is_empty() && torn, "torn after {keep} bytes");
        }
        let (got, torn, _) = replayed(&b[..keep], 7);
        assert!(got.is_empty() && torn, "cut after {keep} bytes");
    }
}

#[test]
fn a_journal_of_the_earlier_records_replays_and_goes_on_in_blocks() {
    let key = (5, 50);
    let old = Record::Event {
        key,
        lane: 2,
        pos: 9,
        ev: ev(0, 1),
    };
    let mut b = encode(&old, 3).to_vec();
    b.extend(written(3, |j| j.append_events(key, [(2, 10, ev(1, 2))])));
    let (got, torn, len) = replayed(&b, 3);
    let new = Record::Event {
        key,
        lane: 2,
        pos: 10,
        ev: ev(1, 2),
    };
    assert_eq!(got, vec![old.clone(), new.clone()]);
    assert_eq!((torn, len), (false, b.len() as u64));
    // After a block, what reads as an earlier version's record is an earlier
    // generation's bytes read out of step: replay stops there.
    let mut after = written(3, |j| j.append_events(key, [(2, 10, ev(1, 2))]));
    after.extend(encode(&old, 3));
    assert_eq!(replayed(&after, 3).0, vec![new]);
}

#[test]
fn the_journal_secret_is_made_once_and_kept() {
    let dir = std::env::temp_dir().join(format!("tttrack-jsecret-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let a = journal_secret(&dir).unwrap();
    assert_eq!(journal_secret(&dir).unwrap(), a);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.join(SECRET_FILE))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    std::fs::write(dir.join(SECRET_FILE), b"short").unwrap();
    let e = journal_secret(&dir).unwrap_err().to_string();
    assert!(e.contains("not 8") && e.contains("aside"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn records_of_the_earlier_checksum_are_still_recovered() {
    let r = Record::Release { key: (3, 4) };
    let mut b = encode(&r, 0);
    let old = checksum_v1(&b[..56]);
    b[56..64].copy_from_slice(&old.to_le_bytes());
    assert_ne!(old, checksum(&b[..56], 0));
    assert_eq!(decode_as(&b, 0), Some((r, Written::Legacy)));
}

#[test]
fn snapshots_round_trip_and_another_format_is_refused_clearly() {
    let dir = std::env::temp_dir().join(format!("tttrack-journal-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut acc = Accounting::default();
    let key = (7, 70);
    acc.register(key, 0, "k", 0);
    let ev = Event {
        seq: 0,
        kind: crate::shm_layout::EventKind::KernelLoad as u8,
        subtype: 0,
        _reserved: 0,
        device: 0,
        size: 4096,
        id: 0xd1,
    };
    acc.apply(key, &ev, 1_700_000_000);
    let (mut j, _) = Journal::open(&dir, |_, _| {}).unwrap();
    j.compact(&acc).unwrap();
    drop(j);
    let (_, rec) = Journal::open(&dir, |_, _| {}).unwrap();
    let pd = &rec.accounting.processes()[&key].devices[&0];
    assert_eq!(pd.kernels[&0xd1], vec![(4096, 0, 1_700_000_000)]);
    // A snapshot without the header (the format before versions) or of another
    // version: a clear refusal that says what to do, never a misread.
    let sp = state_path(&dir, rec.generation);
    let mut bytes = std::fs::read(&sp).unwrap();
    bytes[8] = 9;
    std::fs::write(&sp, &bytes).unwrap();
    let err = Journal::open(&dir, |_, _| {}).err().unwrap().to_string();
    let says = format!("state format 9, this one reads {STATE_VERSION}");
    assert!(err.contains(&says), "{err}");
    assert!(err.contains("aside to start afresh"), "{err}");
    std::fs::write(&sp, &bytes[12..]).unwrap();
    let err = Journal::open(&dir, |_, _| {}).err().unwrap().to_string();
    assert!(err.contains("state format 1 or unknown"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
