//! The aggregator's durable record, so that an aggregator killed at any moment and
//! started again loses no event and counts none twice.
//!
//! Rule: a lane's tail (what the producer may overwrite) only moves past events that
//! are written in the journal. The journal is a snapshot of the whole accounting
//! (`state.GEN`, bincode) plus the events applied since (`journal.GEN`, 64-byte records
//! with a checksum each; a torn last record is ignored). Both live in the aggregator's
//! private directory `aggregator/` inside the tracking directory. A restarted
//! aggregator loads the snapshot, replays the journal, and resumes every lane at the
//! position after its last journaled event.

use crate::aggregator::accounting::{Accounting, ProcKey};
use crate::shm_layout::Event;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

pub const RECORD_SIZE: usize = 64;
const TAG_EVENT: u8 = 1;
const TAG_RELEASE: u8 = 2;
/// A snapshot file starts with this magic and [`STATE_VERSION`], then the bincode.
const STATE_MAGIC: &[u8; 8] = b"TTTRKST\0";
/// Bumped whenever the accounting's serialised form changes (2: kernel load times).
pub const STATE_VERSION: u32 = 2;
/// Compact when the journal grows past this.
pub const COMPACT_BYTES: u64 = 16 << 20;

/// What a journal record says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// `ev` of process `key` was applied; it sat at `pos - 1` in `lane`.
    Event {
        key: ProcKey,
        lane: u8,
        pos: u64,
        ev: Event,
    },
    /// Process `key` ended and was released.
    Release { key: ProcKey },
}

fn checksum(b: &[u8]) -> u64 {
    // FNV-1a, enough to tell a torn or foreign record from a whole one.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &x in b {
        h ^= x as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h | 1
}

pub fn encode(r: &Record) -> [u8; RECORD_SIZE] {
    let mut b = [0u8; RECORD_SIZE];
    let (tag, lane, key, pos, ev) = match r {
        Record::Event { key, lane, pos, ev } => (TAG_EVENT, *lane, *key, *pos, *ev),
        Record::Release { key } => (TAG_RELEASE, 0, *key, 0, bytemuck::Zeroable::zeroed()),
    };
    b[0] = tag;
    b[1] = lane;
    b[4..8].copy_from_slice(&key.0.to_le_bytes());
    b[8..16].copy_from_slice(&key.1.to_le_bytes());
    b[16..24].copy_from_slice(&pos.to_le_bytes());
    b[24..56].copy_from_slice(bytemuck::bytes_of(&ev));
    let c = checksum(&b[..56]);
    b[56..64].copy_from_slice(&c.to_le_bytes());
    b
}

pub fn decode(b: &[u8]) -> Option<Record> {
    if b.len() != RECORD_SIZE {
        return None;
    }
    let c = u64::from_le_bytes(b[56..64].try_into().ok()?);
    // Only what `encode` writes is accepted: padding must be zero.
    if c != checksum(&b[..56]) || b[2..4] != [0, 0] {
        return None;
    }
    let key = (
        u32::from_le_bytes(b[4..8].try_into().ok()?),
        u64::from_le_bytes(b[8..16].try_into().ok()?),
    );
    match b[0] {
        TAG_EVENT => Some(Record::Event {
            key,
            lane: b[1],
            pos: u64::from_le_bytes(b[16..24].try_into().ok()?),
            ev: bytemuck::pod_read_unaligned(&b[24..56]),
        }),
        TAG_RELEASE if b[1] == 0 && b[16..56].iter().all(|&x| x == 0) => {
            Some(Record::Release { key })
        }
        _ => None,
    }
}

/// The journal of a running aggregator.
pub struct Journal {
    dir: PathBuf,
    generation: u64,
    file: File,
    buf: Vec<u8>,
    len: u64,
}

/// Opens a file of the journal directory for reading, never through a link.
fn open_read(p: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(p)
}

/// Opens (creating it, mode 0600) a file of the journal directory for writing, emptied
/// if `empty`, never through a link.
fn open_write(p: &Path, empty: bool) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(empty)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(p)
}

fn state_path(dir: &Path, g: u64) -> PathBuf {
    dir.join(format!("state.{g}"))
}
fn journal_path(dir: &Path, g: u64) -> PathBuf {
    dir.join(format!("journal.{g}"))
}

/// The newest complete snapshot generation in `dir`.
fn newest_generation(dir: &Path) -> Option<u64> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("state.")?.parse().ok())
        .max()
}

/// What recovery found.
pub struct Recovered {
    pub accounting: Accounting,
    pub replayed: u64,
    pub torn: bool,
    pub generation: u64,
}

impl Journal {
    /// Opens the journal directory, recovering the accounting it holds (empty if none).
    /// Replayed events are applied through `apply` so that replay and live application
    /// are the same code.
    pub fn open(
        dir: &Path,
        apply: impl FnMut(&mut Accounting, &Record),
    ) -> io::Result<(Self, Recovered)> {
        // The aggregator gives its verified private directory (see
        // `aggregator::state_dir`); a new one is made private.
        if !dir.exists() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        let generation = newest_generation(dir).unwrap_or(0);
        let mut acc = if generation > 0 {
            read_snapshot(dir, generation)?
        } else {
            Accounting::default()
        };
        let jp = journal_path(dir, generation);
        let (replayed, torn, valid_len) = replay_records(&jp, &mut acc, apply)?;
        let file = open_write(&jp, false)?;
        // Cut a torn tail so that new records follow whole ones.
        file.set_len(valid_len)?;
        let mut j = Self {
            dir: dir.to_path_buf(),
            generation,
            file,
            buf: {
                // Touched now, not bit by bit as passes grow: memory stays flat after
                // start (RSS counts only touched pages).
                let mut b = Vec::with_capacity(1 << 20);
                b.resize(1 << 20, 1u8);
                b.clear();
                b
            },
            len: valid_len,
        };
        use std::io::Seek;
        j.file.seek(io::SeekFrom::End(0))?;
        Ok((
            j,
            Recovered {
                accounting: acc,
                replayed,
                torn,
                generation,
            },
        ))
    }

    pub fn append(&mut self, r: &Record) {
        self.buf.extend_from_slice(&encode(r));
    }

    pub fn pending(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Writes what was appended. Once this returns, the records survive the death of
    /// this process (they are in the kernel's page cache of the tmpfs file). Written at
    /// the journal's known length, so a write that failed part way (a full file system)
    /// and is tried again rewrites the same bytes in the same place instead of
    /// appending the records already written a second time.
    pub fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        use std::os::unix::fs::FileExt;
        self.file.write_all_at(&self.buf, self.len)?;
        self.len += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    pub fn should_compact(&self) -> bool {
        self.len >= COMPACT_BYTES
    }

    /// Writes a snapshot of `acc` (which must include everything appended so far) as a
    /// new generation and starts an empty journal for it.
    pub fn compact(&mut self, acc: &Accounting) -> io::Result<()> {
        let g = self.generation + 1;
        let tmp = self.dir.join(format!(".state.{g}.tmp"));
        {
            // Streamed to the file: a snapshot of a million buffers is tens of MB, and
            // building it in memory first would leave the heap that much bigger.
            let mut w = io::BufWriter::with_capacity(256 << 10, open_write(&tmp, true)?);
            w.write_all(STATE_MAGIC)?;
            w.write_all(&STATE_VERSION.to_le_bytes())?;
            bincode::serialize_into(&mut w, acc).map_err(|e| io::Error::other(e.to_string()))?;
            w.flush()?;
        }
        let new_journal = open_write(&journal_path(&self.dir, g), true)?;
        std::fs::rename(&tmp, state_path(&self.dir, g))?;
        // From here on recovery uses generation g; the old files are garbage.
        let old = self.generation;
        self.generation = g;
        self.file = new_journal;
        self.buf.clear();
        self.len = 0;
        let _ = std::fs::remove_file(journal_path(&self.dir, old));
        let _ = std::fs::remove_file(state_path(&self.dir, old));
        Ok(())
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }
}

/// Reads snapshot `generation` of `dir`, streamed from the file as it was written (it
/// may be tens of MB).
fn read_snapshot(dir: &Path, generation: u64) -> io::Result<Accounting> {
    let sp = state_path(dir, generation);
    let mut r = io::BufReader::with_capacity(256 << 10, open_read(&sp)?);
    let mut head = [0u8; 12];
    let version = match r.read_exact(&mut head) {
        Ok(()) if &head[..8] == STATE_MAGIC => Some(u32::from_le_bytes(
            head[8..12].try_into().unwrap_or_default(),
        )),
        _ => None,
    };
    if version != Some(STATE_VERSION) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "snapshot {} was written by another tt-aggregator version (state format {}, this one reads {STATE_VERSION}); its figures cannot be carried over: move the directory {} aside to start afresh",
                sp.display(),
                version.map_or("1 or unknown".to_string(), |v| v.to_string()),
                dir.display()
            ),
        ));
    }
    bincode::deserialize_from(&mut r).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "snapshot {} is unreadable ({e}); move the directory {} aside to start afresh",
                sp.display(),
                dir.display()
            ),
        )
    })
}

/// Applies the whole records of the journal at `path` (none if it does not exist), up
/// to the first torn or foreign one. Returns (records applied, whether one was torn,
/// bytes of whole records).
fn replay_records(
    path: &Path,
    acc: &mut Accounting,
    mut apply: impl FnMut(&mut Accounting, &Record),
) -> io::Result<(u64, bool, u64)> {
    let (mut replayed, mut torn, mut valid_len) = (0u64, false, 0u64);
    if let Ok(mut f) = open_read(path) {
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes)?;
        for chunk in bytes.chunks(RECORD_SIZE) {
            let Some(r) = decode(chunk) else {
                torn = true;
                break;
            };
            apply(acc, &r);
            replayed += 1;
            valid_len += RECORD_SIZE as u64;
        }
    }
    Ok((replayed, torn, valid_len))
}

#[cfg(test)]
mod tests {
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
        let b = encode(&r);
        assert_eq!(decode(&b), Some(r));
        let rel = Record::Release { key: (1, 2) };
        assert_eq!(decode(&encode(&rel)), Some(rel));
        let mut bad = b;
        bad[30] ^= 1;
        assert_eq!(decode(&bad), None);
        assert_eq!(decode(&[0u8; 64]), None);
        assert_eq!(decode(&b[..40]), None);
    }

    #[test]
    fn snapshots_round_trip_and_another_format_is_refused_clearly() {
        let dir = std::env::temp_dir().join(format!("tttrack-journal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut acc = Accounting::default();
        let key = (7, 70);
        acc.processes.insert(
            key,
            crate::aggregator::accounting::ProcState::new(7, 70, 0, "k".into(), 0),
        );
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
        let pd = &rec.accounting.processes[&key].devices[&0];
        assert_eq!(pd.kernels[&0xd1], vec![(4096, 0, 1_700_000_000)]);
        // A snapshot without the header (the format before versions) or of another
        // version: a clear refusal that says what to do, never a misread.
        let sp = state_path(&dir, rec.generation);
        let mut bytes = std::fs::read(&sp).unwrap();
        bytes[8] = 9;
        std::fs::write(&sp, &bytes).unwrap();
        let err = Journal::open(&dir, |_, _| {}).err().unwrap().to_string();
        assert!(err.contains("state format 9, this one reads 2"), "{err}");
        assert!(err.contains("aside to start afresh"), "{err}");
        std::fs::write(&sp, &bytes[12..]).unwrap();
        let err = Journal::open(&dir, |_, _| {}).err().unwrap().to_string();
        assert!(err.contains("state format 1 or unknown"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
