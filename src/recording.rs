//! A recording of a run (`tt-track record`): every event of the recorded processes, with
//! their starts and ends, placements and device descriptions, in one compact file that
//! `tt-track report`, `export` and `diff` read on any machine, without an aggregator.
//!
//! # The file
//! - A header: [`FILE_MAGIC`], the format version (u32 LE), then a u32 LE length and
//!   that many bytes of JSON ([`Meta`]: the command, the host, the start time).
//! - Blocks, each: stored length (u32 LE), length once decompressed (u32 LE), CRC-32 of
//!   the stored bytes (u32 LE), then the stored bytes: LZ4-compressed records. A block
//!   is written at least every second, so a file cut short (a recorder killed, a full
//!   disk) loses at most its last second; a reader stops at the first block that is not
//!   whole or whose checksum fails, and says so, with everything before it intact.
//!
//! # Records
//! A tag byte, then unsigned LEB128 varints (signed values zigzag-encoded). Times are
//! milliseconds since the recording began (the recorder's clock when it started the
//! command), taken when the aggregator applied the event: a few milliseconds after it
//! happened at most, in the order of the process's own sequence numbers.
//! [`Record`] lists them; [`Record::encode`] and [`decode`] are their one definition.

use crate::shm_layout::{DeviceInfo, Event};
use serde::{Deserialize, Serialize};

/// The first 8 bytes of a recording.
pub const FILE_MAGIC: &[u8; 8] = b"TTTRREC1";
/// Bumped whenever what a record or block means changes. 2: [`Record::Sampled`].
pub const FORMAT_VERSION: u32 = 2;
/// The earliest version this reader reads (1 has every record but `Sampled`).
pub const OLDEST_FORMAT_VERSION: u32 = 1;
/// Records are cut into blocks of about this many bytes (before compression).
pub const BLOCK_BYTES: usize = 64 << 10;

/// What the header says of the recording.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    pub command: Vec<String>,
    pub host: String,
    /// Unix time in milliseconds of time 0.
    pub started_unix_ms: u64,
    pub tttrack_version: String,
    /// `shared` (the aggregator of the tracking directory) or `private` (one the
    /// recorder started for this run).
    pub aggregator: String,
    /// A snapshot taken after a failure: what failed, in the words of the error (as
    /// TT-Metal's out-of-memory message gives it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

/// A device row as the recorder saw it on the counters page.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRow {
    pub id: u32,
    pub arch: String,
    pub board: String,
    pub remote: bool,
    pub dram_total: u64,
    pub l1_total: u64,
}

/// One record of a recording.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// A process began to report (or was already reporting when the recording began).
    Process {
        t_ms: u64,
        pid: u32,
        start_time: u64,
        uid: u32,
        comm: String,
    },
    /// Events of process `pid` applied together at `t_ms`, in their order.
    Events {
        t_ms: u64,
        pid: u32,
        events: Vec<Event>,
    },
    /// Process `pid`'s device `logical` is the chip in row `row` (`source`: a
    /// `counters_page::PLACED_*` value).
    Placed {
        t_ms: u64,
        pid: u32,
        logical: i32,
        row: u32,
        source: u8,
    },
    /// Process `pid` described its device `logical`.
    Info {
        pid: u32,
        logical: i32,
        info: DeviceInfo,
    },
    /// Process `pid` ended and was released; `events_lost`: its events that never
    /// reached the figures (dropped by the producer, skipped).
    End {
        t_ms: u64,
        pid: u32,
        events_lost: u64,
    },
    /// Events of process `pid` (0: unknown) that did not reach the recording (the
    /// aggregator's queue to the recorder was full, or the aggregator restarted).
    Lost { t_ms: u64, pid: u32, count: u64 },
    /// The device rows (written by the recorder at the start and at the end).
    Devices { t_ms: u64, rows: Vec<DeviceRow> },
    /// The recorded command ended: its exit code, or the signal that killed it.
    Exit {
        t_ms: u64,
        code: Option<i32>,
        signal: Option<i32>,
    },
    /// What process `pid` holds on the chip in row `row`, as TT-Metal's own region
    /// said at `t_ms` (a process known only from its region: counters, no events), by
    /// category in `counters_page::DEVICE_CATS` order. Sent when it changes.
    Sampled {
        t_ms: u64,
        pid: u32,
        row: u32,
        used: [u64; crate::counters_page::HIST_FIELDS],
    },
}

const T_PROCESS: u8 = 1;
const T_EVENTS: u8 = 2;
const T_PLACED: u8 = 3;
const T_INFO: u8 = 4;
const T_END: u8 = 5;
const T_LOST: u8 = 6;
const T_DEVICES: u8 = 7;
const T_EXIT: u8 = 8;
const T_SAMPLED: u8 = 9;

fn put(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_i(out: &mut Vec<u8>, v: i64) {
    put(out, ((v << 1) ^ (v >> 63)) as u64);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let b = &s.as_bytes()[..s.len().min(255)];
    put(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// Reads records from bytes; every read checks what is left.
struct Cursor<'a> {
    b: &'a [u8],
}

impl Cursor<'_> {
    fn u(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&x, rest) = self.b.split_first()?;
            self.b = rest;
            v |= ((x & 0x7f) as u64) << shift;
            if x & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    fn u32(&mut self) -> Option<u32> {
        u32::try_from(self.u()?).ok()
    }
    fn i(&mut self) -> Option<i64> {
        let v = self.u()?;
        Some((v >> 1) as i64 ^ -((v & 1) as i64))
    }
    fn i32(&mut self) -> Option<i32> {
        i32::try_from(self.i()?).ok()
    }
    fn str(&mut self) -> Option<String> {
        let n = self.u()? as usize;
        if n > self.b.len() {
            return None;
        }
        let (s, rest) = self.b.split_at(n);
        self.b = rest;
        Some(crate::sys::printable(s))
    }
    fn byte(&mut self) -> Option<u8> {
        let (&x, rest) = self.b.split_first()?;
        self.b = rest;
        Some(x)
    }
}

impl Record {
    /// Appends the record's bytes to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Record::Process {
                t_ms,
                pid,
                start_time,
                uid,
                comm,
            } => {
                out.push(T_PROCESS);
                put(out, *t_ms);
                put(out, *pid as u64);
                put(out, *start_time);
                put(out, *uid as u64);
                put_str(out, comm);
            }
            Record::Events { t_ms, pid, events } => {
                encode_events(out, *t_ms, *pid, events.iter());
            }
            Record::Placed {
                t_ms,
                pid,
                logical,
                row,
                source,
            } => {
                out.push(T_PLACED);
                put(out, *t_ms);
                put(out, *pid as u64);
                put_i(out, *logical as i64);
                put(out, *row as u64);
                put(out, *source as u64);
            }
            Record::Info { pid, logical, info } => {
                out.push(T_INFO);
                put(out, *pid as u64);
                put_i(out, *logical as i64);
                for w in bytemuck::cast::<DeviceInfo, [u64; 8]>(*info) {
                    put(out, w);
                }
            }
            Record::End {
                t_ms,
                pid,
                events_lost,
            } => {
                out.push(T_END);
                put(out, *t_ms);
                put(out, *pid as u64);
                put(out, *events_lost);
            }
            Record::Lost { t_ms, pid, count } => {
                out.push(T_LOST);
                put(out, *t_ms);
                put(out, *pid as u64);
                put(out, *count);
            }
            Record::Devices { t_ms, rows } => {
                out.push(T_DEVICES);
                put(out, *t_ms);
                put(out, rows.len() as u64);
                for r in rows {
                    put(out, r.id as u64);
                    put_str(out, &r.arch);
                    put_str(out, &r.board);
                    put(out, r.remote as u64);
                    put(out, r.dram_total);
                    put(out, r.l1_total);
                }
            }
            Record::Exit { t_ms, code, signal } => {
                out.push(T_EXIT);
                put(out, *t_ms);
                put_i(out, code.map_or(-1, |c| c as i64 & 0xffff_ffff));
                put_i(out, signal.map_or(-1, |s| s as i64));
            }
            Record::Sampled {
                t_ms,
                pid,
                row,
                used,
            } => {
                out.push(T_SAMPLED);
                put(out, *t_ms);
                put(out, *pid as u64);
                put(out, *row as u64);
                for &u in used {
                    put(out, u);
                }
            }
        }
    }
}

/// Appends an [`Record::Events`] of `events` without building the record (the
/// aggregator's path): each event is its kind and subtype (one byte), device, size, id
/// and the step of its sequence number from the one before.
pub fn encode_events<'a>(
    out: &mut Vec<u8>,
    t_ms: u64,
    pid: u32,
    events: impl ExactSizeIterator<Item = &'a Event>,
) {
    out.push(T_EVENTS);
    put(out, t_ms);
    put(out, pid as u64);
    put(out, events.len() as u64);
    let mut seq = 0u64;
    for e in events {
        out.push(e.kind << 4 | (e.subtype & 0x0f));
        put_i(out, e.device as i64);
        put(out, e.size);
        put(out, e.id);
        put_i(out, e.seq.wrapping_sub(seq) as i64);
        seq = e.seq;
    }
}

/// Decodes every record in `b`; `None` if the bytes are not whole records.
pub fn decode(b: &[u8]) -> Option<Vec<Record>> {
    let mut c = Cursor { b };
    let mut v = Vec::new();
    while !c.b.is_empty() {
        v.push(decode_one(&mut c)?);
    }
    Some(v)
}

fn decode_events(c: &mut Cursor) -> Option<Record> {
    let (t_ms, pid, n) = (c.u()?, c.u32()?, c.u()? as usize);
    // Each event takes at least five bytes: a count beyond that is corrupt.
    if n > c.b.len() / 5 {
        return None;
    }
    let mut events = Vec::with_capacity(n);
    let mut seq = 0u64;
    for _ in 0..n {
        let ks = c.byte()?;
        let device = c.i32()?;
        let (size, id) = (c.u()?, c.u()?);
        seq = seq.wrapping_add(c.i()? as u64);
        events.push(Event {
            seq,
            kind: ks >> 4,
            subtype: ks & 0x0f,
            _reserved: 0,
            device,
            size,
            id,
        });
    }
    Some(Record::Events { t_ms, pid, events })
}

fn decode_devices(c: &mut Cursor) -> Option<Record> {
    let t_ms = c.u()?;
    let n = c.u()? as usize;
    // Each row takes at least six bytes: a count beyond that is corrupt.
    if n > c.b.len() / 6 {
        return None;
    }
    let mut rows = Vec::with_capacity(n);
    for _ in 0..n {
        rows.push(DeviceRow {
            id: c.u32()?,
            arch: c.str()?,
            board: c.str()?,
            remote: c.u()? != 0,
            dram_total: c.u()?,
            l1_total: c.u()?,
        });
    }
    Some(Record::Devices { t_ms, rows })
}

fn decode_one(c: &mut Cursor) -> Option<Record> {
    Some(match c.byte()? {
        T_PROCESS => Record::Process {
            t_ms: c.u()?,
            pid: c.u32()?,
            start_time: c.u()?,
            uid: c.u32()?,
            comm: c.str()?,
        },
        T_EVENTS => decode_events(c)?,
        T_PLACED => Record::Placed {
            t_ms: c.u()?,
            pid: c.u32()?,
            logical: c.i32()?,
            row: c.u32()?,
            source: u8::try_from(c.u()?).ok()?,
        },
        T_INFO => {
            let (pid, logical) = (c.u32()?, c.i32()?);
            let mut w = [0u64; 8];
            for x in &mut w {
                *x = c.u()?;
            }
            Record::Info {
                pid,
                logical,
                info: bytemuck::cast(w),
            }
        }
        T_END => Record::End {
            t_ms: c.u()?,
            pid: c.u32()?,
            events_lost: c.u()?,
        },
        T_LOST => Record::Lost {
            t_ms: c.u()?,
            pid: c.u32()?,
            count: c.u()?,
        },
        T_DEVICES => decode_devices(c)?,
        T_EXIT => {
            let t_ms = c.u()?;
            let (code, signal) = (c.i()?, c.i()?);
            Record::Exit {
                t_ms,
                code: (code >= 0).then_some(code as i32),
                signal: (signal >= 0).then_some(signal as i32),
            }
        }
        T_SAMPLED => {
            let (t_ms, pid, row) = (c.u()?, c.u32()?, c.u32()?);
            let mut used = [0u64; crate::counters_page::HIST_FIELDS];
            for u in &mut used {
                *u = c.u()?;
            }
            Record::Sampled {
                t_ms,
                pid,
                row,
                used,
            }
        }
        _ => return None,
    })
}

pub mod analysis;
pub mod autopsy;
mod file;
pub use file::{NotARecording, Recording, Writer};
pub mod diff;
pub mod export;
pub mod html;
pub mod snapshot;

#[cfg(test)]
mod tests;
pub mod text;
