//! Records and files: round trips, cut and damaged files.

use super::*;
use crate::shm_layout::EventKind;

fn sample() -> Vec<Record> {
    let ev = |seq, kind: EventKind, size, id| Event {
        seq,
        kind: kind as u8,
        subtype: 1,
        _reserved: 0,
        device: 1,
        size,
        id,
    };
    vec![
        Record::Process {
            t_ms: 0,
            pid: 42,
            start_time: 99,
            uid: 1000,
            comm: "python3".into(),
        },
        Record::Events {
            t_ms: 3,
            pid: 42,
            events: vec![
                ev(0, EventKind::Alloc, 4096, 0x1000),
                ev(1, EventKind::Free, 0, 0x1000),
            ],
        },
        Record::Placed {
            t_ms: 3,
            pid: 42,
            logical: 0,
            row: 1,
            source: 1,
        },
        Record::Info {
            pid: 42,
            logical: 0,
            info: DeviceInfo {
                arch: 2,
                ..Default::default()
            },
        },
        Record::Lost {
            t_ms: 4,
            pid: 42,
            count: 2,
        },
        Record::Devices {
            t_ms: 5,
            rows: vec![DeviceRow {
                id: 1,
                arch: "wormhole_b0".into(),
                board: "n150".into(),
                remote: false,
                dram_total: 1 << 30,
                l1_total: 5,
            }],
        },
        Record::End {
            t_ms: 9,
            pid: 42,
            events_lost: 0,
        },
        Record::Exit {
            t_ms: 10,
            code: None,
            signal: Some(9),
        },
    ]
}

#[test]
fn records_round_trip_and_a_cut_file_is_read_up_to_the_cut() {
    let mut w = Writer::new(
        Vec::new(),
        &Meta {
            command: vec!["x".into()],
            ..Default::default()
        },
    )
    .unwrap();
    for r in sample() {
        w.add_record(&r).unwrap();
    }
    w.flush().unwrap();
    for r in sample() {
        w.add_record(&r).unwrap();
    }
    let file = w.into_inner().unwrap();
    let rec = Recording::parse(&file).unwrap();
    assert_eq!(rec.truncated, None);
    assert_eq!(rec.records.len(), 16);
    assert_eq!(rec.records[..8], sample()[..]);
    assert_eq!(rec.meta.command, vec!["x".to_string()]);
    // Cut inside the second block: the first is still there, and the cut is named.
    let cut = Recording::parse(&file[..file.len() - 3]).unwrap();
    assert_eq!(cut.records.len(), 8);
    assert!(cut.truncated.unwrap().contains("ends inside a block"));
    // A flipped bit in the second block: its checksum says so.
    let mut bad = file.clone();
    let last = bad.len() - 2;
    bad[last] ^= 0x10;
    let r = Recording::parse(&bad).unwrap();
    assert_eq!(r.records.len(), 8);
    assert!(r.truncated.unwrap().contains("checksum"));
    assert!(Recording::parse(b"hello")
        .unwrap_err()
        .contains("not a tttrack recording"));
    let mut v3 = file.clone();
    v3[8] = 3;
    assert!(Recording::parse(&v3)
        .unwrap_err()
        .contains("recording format 3, this tt-track reads 1 to 2"));
}

#[test]
fn a_sampled_record_round_trips() {
    let r = Record::Sampled {
        t_ms: 1234,
        pid: 77,
        row: 3,
        used: [u64::MAX, 1, 0, 4096, 5, 1 << 40],
    };
    let mut b = Vec::new();
    r.encode(&mut b);
    assert_eq!(crate::recording::decode(&b), Some(vec![r]));
    // Cut anywhere: not a whole record.
    for n in 0..b.len() {
        assert_eq!(
            crate::recording::decode(&b[..n]).filter(|v| !v.is_empty()),
            None
        );
    }
}
