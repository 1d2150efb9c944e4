//! The recording file: the header, then checksummed blocks of records (see
//! [`super`] for the layout).

use super::{decode, Meta, Record, BLOCK_BYTES, FILE_MAGIC, FORMAT_VERSION, OLDEST_FORMAT_VERSION};
use std::io::{self, Read, Write};

/// Writes a recording: the header at once, then records gathered into blocks.
pub struct Writer<W: Write> {
    out: W,
    pending: Vec<u8>,
    /// Bytes written so far, header included.
    pub bytes: u64,
}

impl<W: Write> Writer<W> {
    pub fn new(mut out: W, meta: &Meta) -> io::Result<Self> {
        let json = serde_json::to_vec(meta).map_err(io::Error::other)?;
        out.write_all(FILE_MAGIC)?;
        out.write_all(&FORMAT_VERSION.to_le_bytes())?;
        out.write_all(&(json.len() as u32).to_le_bytes())?;
        out.write_all(&json)?;
        out.flush()?;
        Ok(Self {
            out,
            pending: Vec::with_capacity(BLOCK_BYTES + 4096),
            bytes: 16 + json.len() as u64,
        })
    }

    /// Adds encoded records (whole ones); a block is written when enough are pending.
    pub fn add(&mut self, records: &[u8]) -> io::Result<()> {
        self.pending.extend_from_slice(records);
        if self.pending.len() >= BLOCK_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    pub fn add_record(&mut self, r: &Record) -> io::Result<()> {
        let mut b = Vec::new();
        r.encode(&mut b);
        self.add(&b)
    }

    /// Writes what is pending as a block.
    pub fn flush(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let stored = lz4_flex::block::compress(&self.pending);
        let mut head = [0u8; 12];
        head[..4].copy_from_slice(&(stored.len() as u32).to_le_bytes());
        head[4..8].copy_from_slice(&(self.pending.len() as u32).to_le_bytes());
        head[8..].copy_from_slice(&crc32fast::hash(&stored).to_le_bytes());
        self.out.write_all(&head)?;
        self.out.write_all(&stored)?;
        self.out.flush()?;
        self.bytes += 12 + stored.len() as u64;
        self.pending.clear();
        Ok(())
    }

    pub fn into_inner(mut self) -> io::Result<W> {
        self.flush()?;
        Ok(self.out)
    }
}

/// A recording as read: its header, every record of every whole block, and why
/// reading stopped early, if it did.
#[derive(Debug, Clone, Default)]
pub struct Recording {
    pub meta: Meta,
    pub records: Vec<Record>,
    /// Set when the file ends inside a block or a block fails its checksum: what was
    /// wrong and where; everything before is in `records`.
    pub truncated: Option<String>,
    pub file_bytes: u64,
}

/// Why a file cannot be read as a recording at all.
#[derive(Debug)]
pub struct NotARecording(pub String);

impl std::fmt::Display for NotARecording {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Records and events a recording may expand to per byte of its file, and at least:
/// what a reader holds is bounded by the file's size, whatever its blocks claim (LZ4
/// expands a byte to 255, and a record of 5 bytes becomes 32 in memory and more in the
/// replay). Recordings of real runs take several bytes an event.
pub const MAX_EVENTS_PER_FILE_BYTE: u64 = 16;
pub const MIN_EVENTS_ALLOWED: u64 = 1 << 20;
/// Raises the bound for a recording one trusts.
pub const MAX_EVENTS_VAR: &str = "TTTRACK_MAX_RECORDING_EVENTS";

/// The bound for a file of `len` bytes.
fn max_events(len: u64) -> u64 {
    std::env::var(MAX_EVENTS_VAR)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| {
            len.saturating_mul(MAX_EVENTS_PER_FILE_BYTE)
                .max(MIN_EVENTS_ALLOWED)
        })
}

impl Recording {
    /// Reads a recording file. A file that is not one (or of another format version)
    /// is an error that says so; a damaged or cut one is read up to the damage.
    pub fn read(path: &std::path::Path) -> Result<Recording, NotARecording> {
        let mut f = std::fs::File::open(path)
            .map_err(|e| NotARecording(format!("cannot open {}: {e}", path.display())))?;
        let mut all = Vec::new();
        f.read_to_end(&mut all)
            .map_err(|e| NotARecording(format!("cannot read {}: {e}", path.display())))?;
        Self::parse(&all).map_err(|why| NotARecording(format!("{}: {why}", path.display())))
    }

    pub fn parse(all: &[u8]) -> Result<Recording, String> {
        if all.len() < 16 || &all[..8] != FILE_MAGIC {
            return Err("not a tttrack recording (no TTTRREC1 header)".into());
        }
        let le = |o: usize| u32::from_le_bytes([all[o], all[o + 1], all[o + 2], all[o + 3]]);
        let version = le(8);
        if !(OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&version) {
            return Err(format!(
                "recording format {version}, this tt-track reads {OLDEST_FORMAT_VERSION} to {FORMAT_VERSION}: use the tt-track that recorded it"
            ));
        }
        let n = le(12) as usize;
        let meta_end = 16usize.saturating_add(n);
        let meta: Meta = all
            .get(16..meta_end)
            .and_then(|b| serde_json::from_slice(b).ok())
            .ok_or("the header is cut short or damaged")?;
        // Names another person's machine wrote: printable wherever they are shown.
        let meta = Meta {
            command: meta
                .command
                .iter()
                .map(|c| crate::sys::printable(c.as_bytes()))
                .collect(),
            host: crate::sys::printable(meta.host.as_bytes()),
            failure: meta
                .failure
                .as_ref()
                .map(|f| crate::sys::printable(f.as_bytes())),
            ..meta
        };
        let cap = max_events(all.len() as u64);
        let mut events = 0u64;
        let mut rec = Recording {
            meta,
            file_bytes: all.len() as u64,
            ..Default::default()
        };
        let mut at = meta_end;
        let mut block = 0;
        while at < all.len() {
            let fail = |why: &str| {
                format!("{why} at byte {at} (block {block}); the {block} blocks before it are read")
            };
            if all.len() - at < 12 {
                rec.truncated = Some(fail("the file ends inside a block header"));
                break;
            }
            let (stored, raw, crc) = (le(at) as usize, le(at + 4) as usize, le(at + 8));
            let Some(bytes) = all.get(at + 12..at + 12 + stored) else {
                rec.truncated = Some(fail("the file ends inside a block"));
                break;
            };
            if crc32fast::hash(bytes) != crc {
                rec.truncated = Some(fail("a block fails its checksum"));
                break;
            }
            let records = (raw <= 64 * BLOCK_BYTES)
                .then(|| lz4_flex::block::decompress(bytes, raw).ok())
                .flatten()
                .and_then(|b| decode(&b));
            let Some(records) = records else {
                rec.truncated = Some(fail("a block holds records this tt-track cannot read"));
                break;
            };
            events += records
                .iter()
                .map(|r| match r {
                    Record::Events { events, .. } => events.len() as u64,
                    _ => 1,
                })
                .sum::<u64>();
            if events > cap {
                return Err(format!(
                    "it expands to more than {cap} records and events ({} per byte of its {}-byte file): refused, since reading it would take memory out of all proportion to the file (a recording bomb?). For a recording you trust, set {MAX_EVENTS_VAR}=N to read up to N",
                    cap / (all.len() as u64).max(1),
                    all.len()
                ));
            }
            rec.records.extend(records);
            at += 12 + stored;
            block += 1;
        }
        Ok(rec)
    }

    /// Events recorded, in all.
    pub fn events(&self) -> u64 {
        self.records
            .iter()
            .map(|r| match r {
                Record::Events { events, .. } => events.len() as u64,
                _ => 0,
            })
            .sum()
    }
}
