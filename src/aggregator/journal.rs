//! The aggregator's durable record, so that an aggregator killed at any moment and
//! started again loses no event and counts none twice.
//!
//! Rule: a lane's tail (what the producer may overwrite) only moves past events that
//! are written in the journal. The journal is a snapshot of the whole accounting
//! (`state.GEN`, bincode) plus the events applied since (`journal.GEN`). The events one
//! drain pass applies for one process are one *block*: a 32-byte header (the process,
//! the number of events, a checksum seeded with the generation over the whole block),
//! each event's 32 bytes as the lane held it (its lane in the spare field), and one
//! word per lane with the lane's position after the block. 32 bytes an event and one
//! checksum pass over them (the records of earlier versions took 64 bytes and a
//! checksum each, still read, see [`decode_as`]). Replay stops at the first block that
//! is not whole and of this generation: a torn last write (whose events the lanes
//! still hold: their tails had not moved past them), or what an earlier generation
//! left further on. A journal file is reused from one generation to the next (renamed
//! and overwritten from its start, never truncated), so that its pages are not freed
//! and allocated again every compaction: on tmpfs that cost a quarter of the
//! aggregator's time in a flood. Both live in the aggregator's private directory
//! `aggregator/` inside the tracking directory. A restarted aggregator loads the
//! snapshot, replays the journal, and resumes every lane at the position after its
//! last journaled event.

use crate::accounting::{Accounting, ProcKey};
use crate::shm_layout::Event;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

mod blocks;
mod legacy;
#[cfg(test)]
mod tests;

use blocks::{block_head, put, read_full, replay_from, BlockSum};
pub use blocks::{block_seed, replay_bytes, write_block};
#[cfg(test)]
use legacy::{checksum, checksum_v1};
pub use legacy::{decode, decode_as, encode, Written};

/// Size of a record of earlier versions (one event or release each).
pub const RECORD_SIZE: usize = 64;
const TAG_EVENT: u8 = 1;
const TAG_RELEASE: u8 = 2;
/// A block of events of one process.
const TAG_BLOCK: u8 = 3;
/// A process released (a block without events).
const TAG_BLOCK_RELEASE: u8 = 4;
/// Bytes of a block's header.
const BLOCK_HEADER: usize = 32;
/// Most events a block may hold (a pass applies at most `NUM_LANES * LANE_BATCH` of one
/// process); more in a header is a torn or foreign one.
const MAX_BLOCK_EVENTS: u64 = 1 << 22;

/// A snapshot file starts with this magic and [`STATE_VERSION`], then the bincode.
const STATE_MAGIC: &[u8; 8] = b"TTTRKST\0";
/// Bumped whenever the accounting's serialised form changes (2: kernel load times;
/// 3: figures per physical chip, each process's placement).
pub const STATE_VERSION: u32 = 3;
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

/// The file in the journal directory that holds the journal's secret (8 random bytes
/// from the kernel, made once).
pub const SECRET_FILE: &str = "journal.secret";

/// The journal's secret: read, or made (from `getrandom`) if there is none yet.
fn journal_secret(dir: &Path) -> io::Result<u64> {
    let path = dir.join(SECRET_FILE);
    match open_read(&path) {
        Ok(mut f) => {
            let mut b = [0u8; 9];
            let n = read_full(&mut f, &mut b)?;
            if n != 8 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{} holds {n} bytes, not 8; the journal beside it cannot be checked: move the directory {} aside to start afresh",
                        path.display(),
                        dir.display()
                    ),
                ));
            }
            Ok(u64::from_le_bytes(b[..8].try_into().unwrap_or_default()))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let mut b = [0u8; 8];
            // SAFETY: getrandom writes at most b.len() bytes into b.
            let got = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
            if got != b.len() as isize {
                return Err(io::Error::last_os_error());
            }
            let tmp = dir.join(format!(".{SECRET_FILE}.tmp"));
            let mut f = open_write(&tmp, true)?;
            f.write_all(&b)?;
            drop(f);
            std::fs::rename(&tmp, &path)?;
            Ok(u64::from_le_bytes(b))
        }
        Err(e) => Err(e),
    }
}

/// The journal of a running aggregator.
pub struct Journal {
    dir: PathBuf,
    generation: u64,
    file: File,
    buf: Vec<u8>,
    /// Bytes of whole records of this generation (where the next are written).
    len: u64,
    /// The file may be reused for the next generation: it holds no record of an earlier
    /// version, whose unseeded checksum a later generation would accept.
    reusable: bool,
    /// Mixed into every block's checksum ([`block_seed`]).
    secret: u64,
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
        let secret = journal_secret(dir)?;
        let mut acc = if generation > 0 {
            let mut acc = read_snapshot(dir, generation)?;
            acc.recount();
            acc
        } else {
            Accounting::default()
        };
        let jp = journal_path(dir, generation);
        let (replayed, torn, valid_len, legacy) =
            replay_records(&jp, generation, secret, &mut acc, apply)?;
        // New records overwrite whatever follows the whole ones (a torn record, or what
        // an earlier generation left): never read, since replay stops before it.
        let file = open_write(&jp, false)?;
        let j = Self {
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
            reusable: !legacy,
            secret,
        };
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

    /// Appends one record: an event as a block of one, or a release.
    pub fn append(&mut self, r: &Record) {
        match r {
            Record::Event { key, lane, pos, ev } => {
                self.append_events(*key, [(*lane, *pos, *ev)]);
            }
            Record::Release { key } => {
                let head = block_head(TAG_BLOCK_RELEASE, 0, *key, 0);
                let c = BlockSum::new().finish(head, block_seed(self.secret, self.generation));
                put(&mut self.buf, &[head[0], head[1], head[2], c]);
            }
        }
    }

    /// Appends, as one block, events of process `key` in the order applied: each with
    /// its lane and the lane's position after it.
    pub fn append_events(
        &mut self,
        key: ProcKey,
        events: impl IntoIterator<Item = (u8, u64, Event)>,
    ) {
        let mut events = events.into_iter().peekable();
        while events.peek().is_some() {
            self.append_block(key, events.by_ref().take(MAX_BLOCK_EVENTS as usize));
        }
    }

    /// One block of at most [`MAX_BLOCK_EVENTS`] events (none: nothing is written).
    fn append_block(&mut self, key: ProcKey, events: impl Iterator<Item = (u8, u64, Event)>) {
        write_block(
            &mut self.buf,
            block_seed(self.secret, self.generation),
            key,
            events,
        );
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
        let old = self.generation;
        let (old_journal, new_journal) = (journal_path(&self.dir, old), journal_path(&self.dir, g));
        // A fresh journal file is made before the snapshot that puts it in use: failing,
        // generation g - 1 goes on as it was (its snapshot and journal still current).
        let fresh = if self.reusable {
            None
        } else {
            Some(open_write(&new_journal, true)?)
        };
        std::fs::rename(&tmp, state_path(&self.dir, g))?;
        // From here on recovery uses generation g: the snapshot holds everything, and
        // journal g is empty (missing, or the old file, whose records are of g - 1).
        let fresh = match fresh {
            Some(f) => Some(f),
            None if std::fs::rename(&old_journal, &new_journal).is_ok() => None,
            None => match open_write(&new_journal, true) {
                Ok(f) => Some(f),
                Err(e) => {
                    // No journal for generation g: take its snapshot back, so that what
                    // is written next (to g - 1's journal) is what recovery reads.
                    std::fs::remove_file(state_path(&self.dir, g))?;
                    return Err(e);
                }
            },
        };
        if let Some(f) = fresh {
            self.file = f;
            let _ = std::fs::remove_file(&old_journal);
        }
        self.generation = g;
        self.buf.clear();
        self.len = 0;
        self.reusable = true;
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
/// bytes of whole records, whether one was written with the unseeded checksum).
fn replay_records(
    path: &Path,
    generation: u64,
    secret: u64,
    acc: &mut Accounting,
    apply: impl FnMut(&mut Accounting, &Record),
) -> io::Result<(u64, bool, u64, bool)> {
    let Ok(f) = open_read(path) else {
        return Ok((0, false, 0, false));
    };
    // Block by block: the file may be as long as the longest generation was.
    replay_from(
        io::BufReader::with_capacity(256 << 10, f),
        generation,
        secret,
        acc,
        apply,
    )
}
