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

use crate::aggregator::accounting::{Accounting, ProcKey};
use crate::shm_layout::Event;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

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

/// The checksum of a record's first 56 bytes (seven little-endian words), enough to
/// tell a torn or foreign record from a whole one: each word multiplied by its own odd
/// constant (seven independent multiplications, which the processor runs side by side),
/// the products summed with the generation, and the sum mixed. A changed bit of any
/// word changes its product and so the sum. A few nanoseconds a record, against the
/// byte-at-a-time hash of earlier versions (still accepted on reading, see
/// [`checksum_v1`]).
fn checksum_words(w: &[u64; 7], generation: u64) -> u64 {
    const K: [u64; 7] = [
        0x9E37_79B9_7F4A_7C15,
        0xC2B2_AE3D_27D4_EB4F,
        0x1656_67B1_9E37_79F9,
        0x85EB_CA77_C2B2_AE63,
        0x27D4_EB2F_1656_67C5,
        0xFF51_AFD7_ED55_8CCD,
        0xC4CE_B9FE_1A85_EC53,
    ];
    let mut h = generation.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ 0x243F_6A88_85A3_08D3;
    for (x, k) in w.iter().zip(K) {
        h = h.wrapping_add((x ^ k.rotate_left(32)).wrapping_mul(k));
    }
    h ^= h >> 29;
    h = h.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    (h ^ (h >> 32)) | 1
}

/// [`checksum_words`] of the first 56 bytes of `b`.
fn checksum(b: &[u8], generation: u64) -> u64 {
    let mut w = [0u64; 7];
    for (d, c) in w.iter_mut().zip(b.chunks_exact(8)) {
        *d = u64::from_le_bytes(c.try_into().unwrap_or_default());
    }
    checksum_words(&w, generation)
}

/// The checksum journals of earlier versions wrote (FNV-1a over each byte), accepted
/// when reading so that an upgraded aggregator recovers them.
fn checksum_v1(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &x in b {
        h ^= x as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h | 1
}

/// The checksum of a block: every word after the header, in groups of four (each word
/// of a group multiplied by its own odd constant after mixing in the group's index,
/// four sums side by side), then the header's first three words as one more group,
/// seeded with the generation. A changed bit of any word changes its product and so
/// its sum, and the final mix changes with any one sum; the index makes a group count
/// where it is.
#[derive(Clone, Copy)]
struct BlockSum {
    acc: [u64; 4],
    group: u64,
}

impl BlockSum {
    const K: [u64; 4] = [
        0x9E37_79B9_7F4A_7C15,
        0xC2B2_AE3D_27D4_EB4F,
        0x1656_67B1_9E37_79F9,
        0x85EB_CA77_C2B2_AE63,
    ];

    fn new() -> Self {
        Self {
            acc: [
                0x243F_6A88_85A3_08D3,
                0x1319_8A2E_0370_7344,
                0xA409_3822_299F_31D0,
                0x082E_FA98_EC4E_6C89,
            ],
            group: 0,
        }
    }

    #[inline(always)]
    fn add(&mut self, w: [u64; 4]) {
        let at = self.group.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
        for ((a, x), k) in self.acc.iter_mut().zip(w).zip(Self::K) {
            *a = a.wrapping_add((x ^ at).wrapping_mul(k));
        }
        self.group += 1;
    }

    fn finish(mut self, head: [u64; 3], seed: u64) -> u64 {
        self.add([head[0], head[1], head[2], 0]);
        let mut h = seed ^ 0xC4CE_B9FE_1A85_EC53;
        for a in self.acc {
            h = (h ^ a).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            h ^= h >> 31;
        }
        h | 1
    }
}

/// What a block's checksum of generation `generation` is seeded with: the generation
/// and the journal's secret ([`SECRET_FILE`]). Producers choose most of a block's bytes
/// (their events, back to back); where an earlier generation's leftovers are read out
/// of step after a crash (blocks differ in length), a block forged from them cannot
/// pass without the secret, which only the aggregator can read.
pub fn block_seed(secret: u64, generation: u64) -> u64 {
    secret ^ generation.wrapping_mul(0x2545_F491_4F6C_DD1D)
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

/// A block's header words (before its checksum).
fn block_head(tag: u8, lanes: usize, key: ProcKey, events: u64) -> [u64; 3] {
    [tag as u64 | (lanes as u64) << 8 | (key.0 as u64) << 32, key.1, events]
}

/// A record's first 56 bytes as seven words: tag, lane and pid; start time; position;
/// the event's four words. Built in registers and written whole, which keeps the
/// journal's cost per event to a few stores (bytes written one field at a time and read
/// back as words stall the processor's store forwarding).
fn words(r: &Record) -> [u64; 7] {
    let (tag, lane, key, pos, ev) = match r {
        Record::Event { key, lane, pos, ev } => (TAG_EVENT, *lane, *key, *pos, *ev),
        Record::Release { key } => (TAG_RELEASE, 0, *key, 0, bytemuck::Zeroable::zeroed()),
    };
    let e: [u64; 4] = bytemuck::cast(ev);
    let head = tag as u64 | (lane as u64) << 8 | (key.0 as u64) << 32;
    [head, key.1, pos, e[0], e[1], e[2], e[3]]
}

/// The record as generation `generation` of the journal writes it.
pub fn encode(r: &Record, generation: u64) -> [u8; RECORD_SIZE] {
    let w = words(r);
    let mut b = [0u8; RECORD_SIZE];
    for (d, x) in b
        .chunks_exact_mut(8)
        .zip(w.iter().chain([checksum_words(&w, generation)].iter()))
    {
        d.copy_from_slice(&x.to_le_bytes());
    }
    b
}

/// How a whole record was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// By this version, in the generation asked for.
    Current,
    /// By an earlier version (unseeded checksum).
    Legacy,
}

/// The record in `b` if it is whole and of generation `generation` (or written by an
/// earlier version, which did not seed its checksums).
pub fn decode(b: &[u8], generation: u64) -> Option<Record> {
    decode_as(b, generation).map(|(r, _)| r)
}

/// [`decode`], saying how the record was written.
pub fn decode_as(b: &[u8], generation: u64) -> Option<(Record, Written)> {
    if b.len() != RECORD_SIZE {
        return None;
    }
    let c = u64::from_le_bytes(b[56..64].try_into().ok()?);
    let written = if c == checksum(&b[..56], generation) {
        Written::Current
    } else if c == checksum_v1(&b[..56]) {
        Written::Legacy
    } else {
        return None;
    };
    // Only what `encode` writes is accepted: padding must be zero.
    if b[2..4] != [0, 0] {
        return None;
    }
    let r = decode_fields(b)?;
    Some((r, written))
}

fn decode_fields(b: &[u8]) -> Option<Record> {
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
    pub fn append_events(&mut self, key: ProcKey, events: impl IntoIterator<Item = (u8, u64, Event)>) {
        let mut events = events.into_iter().peekable();
        while events.peek().is_some() {
            self.append_block(key, events.by_ref().take(MAX_BLOCK_EVENTS as usize));
        }
    }

    /// One block of at most [`MAX_BLOCK_EVENTS`] events (none: nothing is written).
    fn append_block(&mut self, key: ProcKey, events: impl Iterator<Item = (u8, u64, Event)>) {
        write_block(&mut self.buf, block_seed(self.secret, self.generation), key, events);
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

/// Appends to `buf` one block checksummed with `seed` ([`block_seed`]): events of
/// process `key` in the order applied, each with its lane and the lane's position
/// after it (at most [`MAX_BLOCK_EVENTS`]; none: nothing is written).
pub fn write_block(
    buf: &mut Vec<u8>,
    seed: u64,
    key: ProcKey,
    events: impl Iterator<Item = (u8, u64, Event)>,
) {
    let start = buf.len();
    buf.reserve(BLOCK_HEADER + 32 * events.size_hint().0);
    buf.resize(start + BLOCK_HEADER, 0);
    let mut sum = BlockSum::new();
    let mut after = [0u64; 256];
    let mut touched = [0u64; 4];
    let mut n = 0u64;
    for (lane, pos, ev) in events.take(MAX_BLOCK_EVENTS as usize) {
        // The lane in the event's spare field (whatever the producer left there).
        let w: [u64; 4] = bytemuck::cast(Event {
            _reserved: lane as u16,
            ..ev
        });
        sum.add(w);
        put(buf, &w);
        after[lane as usize] = pos;
        touched[lane as usize / 64] |= 1 << (lane % 64);
        n += 1;
    }
    if n == 0 {
        buf.truncate(start);
        return;
    }
    let mut lanes = 0;
    let mut tail = [0u64; 4];
    for lane in (0..256).filter(|&l| touched[l / 64] & (1 << (l % 64)) != 0) {
        tail[lanes % 4] = lane as u64 | after[lane] << 8;
        lanes += 1;
        if lanes % 4 == 0 {
            sum.add(tail);
            put(buf, &tail);
        }
    }
    if lanes % 4 != 0 {
        let rest = &tail[..lanes % 4];
        let mut padded = [0u64; 4];
        padded[..rest.len()].copy_from_slice(rest);
        sum.add(padded);
        put(buf, rest);
    }
    let head = block_head(TAG_BLOCK, lanes, key, n);
    let c = sum.finish(head, seed);
    for (d, w) in buf[start..start + BLOCK_HEADER]
        .chunks_exact_mut(8)
        .zip([head[0], head[1], head[2], c])
    {
        d.copy_from_slice(&w.to_le_bytes());
    }
}

/// Appends words to `buf`, little-endian.
#[inline(always)]
fn put(buf: &mut Vec<u8>, w: &[u64]) {
    if cfg!(target_endian = "big") {
        for x in w {
            buf.extend_from_slice(&x.to_le_bytes());
        }
    } else {
        buf.extend_from_slice(bytemuck::cast_slice(w));
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

/// Reads into `buf` until it is full or the file ends; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Why replay stopped where it did.
enum Stop {
    /// Not whole: a write cut short, or damage.
    Torn,
    /// Whole, of the generation before (the file is reused), or nothing (zeros).
    Clean,
}

/// A block, checked whole and of `generation`, read after its header `head`; `body` is
/// scratch. Applies its records through `apply`; returns how many and its bytes.
fn replay_block(
    r: &mut impl Read,
    head: &[u8; BLOCK_HEADER],
    seeds: (u64, u64),
    body: &mut Vec<u8>,
    acc: &mut Accounting,
    apply: &mut impl FnMut(&mut Accounting, &Record),
) -> io::Result<Result<(u64, u64), Stop>> {
    let w: [u64; 4] = core::array::from_fn(|i| {
        u64::from_le_bytes(head[i * 8..i * 8 + 8].try_into().unwrap_or_default())
    });
    let (tag, lanes, n) = (w[0] as u8, (w[0] >> 8) as u8 as usize, w[2]);
    let key = ((w[0] >> 32) as u32, w[1]);
    let shaped = (w[0] >> 16) & 0xffff == 0
        && match tag {
            TAG_BLOCK => (1..=MAX_BLOCK_EVENTS).contains(&n) && lanes >= 1,
            _ => n == 0 && lanes == 0,
        };
    if !shaped {
        return Ok(Err(Stop::Torn));
    }
    let words = 4 * n as usize + lanes;
    // Read as it comes: a damaged header's count costs no more memory than the file has.
    body.clear();
    r.take(words as u64 * 8).read_to_end(body)?;
    if body.len() < words * 8 {
        return Ok(Err(Stop::Torn));
    }
    let word = |i: usize| u64::from_le_bytes(body[i * 8..i * 8 + 8].try_into().unwrap_or_default());
    let mut sum = BlockSum::new();
    for g in 0..words.div_ceil(4) {
        sum.add(core::array::from_fn(|j| {
            let i = g * 4 + j;
            if i < words {
                word(i)
            } else {
                0
            }
        }));
    }
    let head3 = [w[0], w[1], w[2]];
    if sum.finish(head3, seeds.0) != w[3] {
        let stale = sum.finish(head3, seeds.1) == w[3];
        return Ok(Err(if stale { Stop::Clean } else { Stop::Torn }));
    }
    if tag == TAG_BLOCK_RELEASE {
        apply(acc, &Record::Release { key });
        return Ok(Ok((1, BLOCK_HEADER as u64)));
    }
    // Each lane's position after the block, lanes in increasing order.
    let mut after: [Option<u64>; 256] = [None; 256];
    let mut prev = None;
    for i in 4 * n as usize..words {
        let (lane, pos) = (word(i) as u8, word(i) >> 8);
        if prev.is_some_and(|p| p >= lane) {
            return Ok(Err(Stop::Torn));
        }
        prev = Some(lane);
        after[lane as usize] = Some(pos);
    }
    let event = |e: usize| -> Event { bytemuck::cast::<[u64; 4], Event>(core::array::from_fn(|j| word(4 * e + j))) };
    // Every event's lane among the block's before anything is applied.
    if (0..n as usize).any(|e| after.get(event(e)._reserved as usize).is_none_or(|p| p.is_none())) {
        return Ok(Err(Stop::Torn));
    }
    for e in 0..n as usize {
        let ev = event(e);
        let lane = ev._reserved as usize;
        let pos = after[lane].unwrap_or_default();
        let ev = Event { _reserved: 0, ..ev };
        apply(acc, &Record::Event { key, lane: lane as u8, pos, ev });
    }
    Ok(Ok((n, (BLOCK_HEADER + words * 8) as u64)))
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
    replay_from(io::BufReader::with_capacity(256 << 10, f), generation, secret, acc, apply)
}

/// The records a journal of generation `generation` holding `bytes` replays, through
/// `apply`; returns (records, whether replay stopped at a torn one, bytes of whole
/// ones). For tests and fuzzing of recovery.
pub fn replay_bytes(
    bytes: &[u8],
    generation: u64,
    secret: u64,
    mut apply: impl FnMut(&Record),
) -> (u64, bool, u64) {
    let mut acc = Accounting::default();
    let r = replay_from(bytes, generation, secret, &mut acc, |_, r| apply(r));
    let (n, torn, len, _) = r.unwrap_or((0, true, 0, false));
    (n, torn, len)
}

fn replay_from(
    mut r: impl Read,
    generation: u64,
    secret: u64,
    acc: &mut Accounting,
    mut apply: impl FnMut(&mut Accounting, &Record),
) -> io::Result<(u64, bool, u64, bool)> {
    let (mut replayed, mut torn, mut valid_len, mut legacy) = (0u64, false, 0u64, false);
    let mut head = [0u8; BLOCK_HEADER];
    let mut body = Vec::new();
    let seeds = (block_seed(secret, generation), block_seed(secret, generation.wrapping_sub(1)));
    // Records of an earlier version only where that version began the file: after a
    // block, bytes read as one are an earlier generation's read out of step.
    let mut blocks = false;
    loop {
        let got = read_full(&mut r, &mut head)?;
        if got < head.len() {
            // A part of a header at the end: a write cut short (or nothing).
            torn |= head[..got].iter().any(|&b| b != 0);
            break;
        }
        // The first record that is not whole and of this generation ends it: what
        // follows is a torn write or an earlier generation's (the file is reused).
        match head[0] {
            TAG_EVENT | TAG_RELEASE if blocks => break,
            TAG_EVENT | TAG_RELEASE => {
                // A record of an earlier version: 64 bytes.
                let mut chunk = [0u8; RECORD_SIZE];
                chunk[..BLOCK_HEADER].copy_from_slice(&head);
                if read_full(&mut r, &mut chunk[BLOCK_HEADER..])? < RECORD_SIZE - BLOCK_HEADER {
                    torn = true;
                    break;
                }
                let Some((rec, w)) = decode_as(&chunk, generation) else {
                    torn = decode(&chunk, generation.wrapping_sub(1)).is_none();
                    break;
                };
                legacy |= w == Written::Legacy;
                apply(acc, &rec);
                replayed += 1;
                valid_len += RECORD_SIZE as u64;
            }
            TAG_BLOCK | TAG_BLOCK_RELEASE => {
                match replay_block(&mut r, &head, seeds, &mut body, acc, &mut apply)? {
                    Ok((records, bytes)) => {
                        replayed += records;
                        valid_len += bytes;
                        blocks = true;
                    }
                    Err(stop) => {
                        torn = matches!(stop, Stop::Torn);
                        break;
                    }
                }
            }
            _ => {
                torn = head.iter().any(|&b| b != 0);
                break;
            }
        }
    }
    Ok((replayed, torn, valid_len, legacy))
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
        let dir =
            std::env::temp_dir().join(format!("tttrack-journal-reuse-{}", std::process::id()));
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
                acc.processes.entry(*key).or_insert_with(|| {
                    crate::aggregator::accounting::ProcState::new(9, 90, 0, "j".into(), 0)
                });
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
        let got = &rec.accounting.processes[&key].devices[&0];
        assert_eq!(got.buffers.len(), 12);
        assert_eq!(got.used, acc.processes[&key].devices[&0].used);
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
    const SECRET: u64 = 0x5ec7_e7;

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
        let events = [(0u8, 11u64, ev(0, 0xa)), (5, 3, ev(1, 0xc)), (0, 12, hostile)];
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
            Record::Event { key, lane: 0, pos: 12, ev: ev(0, 0xa) },
            Record::Event { key, lane: 5, pos: 3, ev: ev(1, 0xc) },
            Record::Event { key, lane: 0, pos: 12, ev: clean },
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
        let old = Record::Event { key, lane: 2, pos: 9, ev: ev(0, 1) };
        let mut b = encode(&old, 3).to_vec();
        b.extend(written(3, |j| j.append_events(key, [(2, 10, ev(1, 2))])));
        let (got, torn, len) = replayed(&b, 3);
        let new = Record::Event { key, lane: 2, pos: 10, ev: ev(1, 2) };
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
        let mode = std::fs::metadata(dir.join(SECRET_FILE)).unwrap().permissions().mode();
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
        let says = format!("state format 9, this one reads {STATE_VERSION}");
        assert!(err.contains(&says), "{err}");
        assert!(err.contains("aside to start afresh"), "{err}");
        std::fs::write(&sp, &bytes[12..]).unwrap();
        let err = Journal::open(&dir, |_, _| {}).err().unwrap().to_string();
        assert!(err.contains("state format 1 or unknown"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
