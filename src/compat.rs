//! The original tracking server's socket protocol, so that instrumented TT-Metal builds
//! that report through `AllocationClient` over `/tmp/tt_allocation_server.sock` keep
//! working unchanged.
//!
//! - Messages are the 144-byte packed `AllocMessage`. The older 112-byte form is not
//!   accepted: a stream carries no length, and a 112-byte message cannot be told from
//!   the start of a 144-byte one, so guessing would corrupt figures.
//! - The process is the peer's real pid (`SO_PEERCRED`), never the claimed
//!   `process_id`; its memory is released when that process dies (watched with a pidfd,
//!   which PID reuse cannot fool).
//! - A message that does not parse is skipped one byte at a time (re-synchronising);
//!   ten bad messages in a row close the connection. Each connection has its own thread,
//!   so a client that stops mid-message blocks nobody.
//! - A client that sends less than one message and closes its side (as
//!   `echo "" | nc -U SOCKET` does) gets the dump of remaining buffers.

use crate::shm_layout::{Event, EventKind, MAX_DEVICES};

pub const DEFAULT_PATH: &str = "/tmp/tt_allocation_server.sock";
pub const MSG_SIZE: usize = 144;
const MAX_BAD_IN_A_ROW: u32 = 10;
/// The original accepted sizes up to 100 GiB.
const MAX_SIZE: u64 = 100 << 30;

pub const ALLOC: u8 = 1;
pub const FREE: u8 = 2;
pub const QUERY: u8 = 3;
pub const RESPONSE: u8 = 4;
pub const DUMP_REMAINING: u8 = 5;
pub const DEVICE_INFO_QUERY: u8 = 6;
pub const DEVICE_INFO_RESPONSE: u8 = 7;
pub const CB_ALLOC: u8 = 8;
pub const CB_FREE: u8 = 9;
pub const KERNEL_LOAD: u8 = 10;
pub const KERNEL_UNLOAD: u8 = 11;
pub const DUMP_KERNELS: u8 = 12;

/// The fields of an `AllocMessage` (offsets in the reference table).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AllocMessage {
    pub kind: u8,
    pub device_id: i32,
    pub size: u64,
    pub buffer_type: u8,
    pub process_id: i32,
    pub buffer_id: u64,
    pub timestamp: u64,
    pub allocated: [u64; 6],
    pub total_dram_size: u64,
    pub total_l1_size: u64,
    pub arch_type: u32,
    pub num_dram_channels: u32,
    pub dram_size_per_channel: u32,
    pub l1_size_per_core: u32,
    pub is_available: u32,
    pub num_devices: u32,
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}

impl AllocMessage {
    pub fn decode(b: &[u8; MSG_SIZE]) -> Self {
        let mut allocated = [0u64; 6];
        for (i, a) in allocated.iter_mut().enumerate() {
            *a = u64_at(b, 40 + 8 * i);
        }
        AllocMessage {
            kind: b[0],
            device_id: u32_at(b, 4) as i32,
            size: u64_at(b, 8),
            buffer_type: b[16],
            process_id: u32_at(b, 20) as i32,
            buffer_id: u64_at(b, 24),
            timestamp: u64_at(b, 32),
            allocated,
            total_dram_size: u64_at(b, 88),
            total_l1_size: u64_at(b, 96),
            arch_type: u32_at(b, 104),
            num_dram_channels: u32_at(b, 108),
            dram_size_per_channel: u32_at(b, 112),
            l1_size_per_core: u32_at(b, 116),
            is_available: u32_at(b, 120),
            num_devices: u32_at(b, 124),
        }
    }

    pub fn encode(&self) -> [u8; MSG_SIZE] {
        let mut b = [0u8; MSG_SIZE];
        b[0] = self.kind;
        b[4..8].copy_from_slice(&self.device_id.to_le_bytes());
        b[8..16].copy_from_slice(&self.size.to_le_bytes());
        b[16] = self.buffer_type;
        b[20..24].copy_from_slice(&self.process_id.to_le_bytes());
        b[24..32].copy_from_slice(&self.buffer_id.to_le_bytes());
        b[32..40].copy_from_slice(&self.timestamp.to_le_bytes());
        for (i, a) in self.allocated.iter().enumerate() {
            b[40 + 8 * i..48 + 8 * i].copy_from_slice(&a.to_le_bytes());
        }
        b[88..96].copy_from_slice(&self.total_dram_size.to_le_bytes());
        b[96..104].copy_from_slice(&self.total_l1_size.to_le_bytes());
        b[104..108].copy_from_slice(&self.arch_type.to_le_bytes());
        b[108..112].copy_from_slice(&self.num_dram_channels.to_le_bytes());
        b[112..116].copy_from_slice(&self.dram_size_per_channel.to_le_bytes());
        b[116..120].copy_from_slice(&self.l1_size_per_core.to_le_bytes());
        b[120..124].copy_from_slice(&self.is_available.to_le_bytes());
        b[124..128].copy_from_slice(&self.num_devices.to_le_bytes());
        b
    }

    /// Whether the message is one a client may send, with plausible fields (the
    /// original's checks, with our device range).
    pub fn valid_request(&self) -> bool {
        let dev_ok = (0..MAX_DEVICES as i32).contains(&self.device_id);
        match self.kind {
            ALLOC => dev_ok && self.size > 0 && self.size <= MAX_SIZE && self.buffer_type <= 4,
            FREE => dev_ok,
            CB_ALLOC | CB_FREE => dev_ok && self.size <= MAX_SIZE,
            KERNEL_LOAD => {
                dev_ok && self.size > 0 && self.size <= MAX_SIZE && self.buffer_type <= 2
            }
            KERNEL_UNLOAD => dev_ok && self.size <= MAX_SIZE,
            QUERY => dev_ok,
            DEVICE_INFO_QUERY => self.device_id == -1 || dev_ok,
            DUMP_REMAINING | DUMP_KERNELS => true,
            _ => false,
        }
    }

    /// The tracking event this message reports, if it reports one.
    pub fn event(&self) -> Option<Event> {
        let (kind, sub) = match self.kind {
            ALLOC => (EventKind::Alloc, self.buffer_type),
            FREE => (EventKind::Free, 0),
            CB_ALLOC => (EventKind::CbAlloc, 0),
            CB_FREE => (EventKind::CbFree, 0),
            KERNEL_LOAD => (EventKind::KernelLoad, self.buffer_type),
            KERNEL_UNLOAD => (EventKind::KernelUnload, 0),
            _ => return None,
        };
        Some(Event {
            seq: 0,
            kind: kind as u8,
            subtype: sub,
            _reserved: 0,
            device: self.device_id,
            size: self.size,
            id: self.buffer_id,
        })
    }
}

/// What the parser found in a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Message(AllocMessage),
    /// Ten bad messages in a row: close the connection.
    Close,
}

/// Splits a byte stream into messages: a message that does not parse is skipped one
/// byte at a time; ten bad ones in a row ask for the connection to be closed.
#[derive(Debug, Default)]
pub struct StreamParser {
    buf: Vec<u8>,
    bad_in_a_row: u32,
    pub bad_total: u64,
    pub whole: u64,
}

impl StreamParser {
    pub fn feed(&mut self, data: &[u8]) -> Vec<Parsed> {
        self.buf.extend_from_slice(data);
        let mut out = Vec::new();
        let mut off = 0;
        while self.buf.len() - off >= MSG_SIZE {
            let mut m = [0u8; MSG_SIZE];
            m.copy_from_slice(&self.buf[off..off + MSG_SIZE]);
            let msg = AllocMessage::decode(&m);
            if !msg.valid_request() {
                self.bad_in_a_row += 1;
                self.bad_total += 1;
                if self.bad_in_a_row >= MAX_BAD_IN_A_ROW {
                    out.push(Parsed::Close);
                    self.buf.clear();
                    return out;
                }
                off += 1;
                continue;
            }
            self.bad_in_a_row = 0;
            self.whole += 1;
            off += MSG_SIZE;
            out.push(Parsed::Message(msg));
        }
        self.buf.drain(..off);
        out
    }

    /// Bytes received that do not yet form a message.
    pub fn leftover(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn encode_decode_round_trip_at_documented_offsets() {
        let m = AllocMessage {
            kind: ALLOC,
            device_id: 3,
            size: 4096,
            buffer_type: 1,
            process_id: 999,
            buffer_id: 0x7f8a_2c00_0000,
            timestamp: 5,
            num_devices: 7,
            arch_type: 2,
            ..Default::default()
        };
        let b = m.encode();
        assert_eq!(b[0], 1);
        assert_eq!(&b[4..8], &3i32.to_le_bytes());
        assert_eq!(&b[8..16], &4096u64.to_le_bytes());
        assert_eq!(b[16], 1);
        assert_eq!(&b[20..24], &999i32.to_le_bytes());
        assert_eq!(&b[24..32], &0x7f8a_2c00_0000u64.to_le_bytes());
        assert_eq!(&b[104..108], &2u32.to_le_bytes());
        assert_eq!(&b[124..128], &7u32.to_le_bytes());
        assert_eq!(AllocMessage::decode(&b), m);
        assert!(m.valid_request());
        assert!(!AllocMessage {
            kind: RESPONSE,
            ..m
        }
        .valid_request());
        assert!(!AllocMessage {
            buffer_type: 5,
            ..m
        }
        .valid_request());
        assert!(!AllocMessage { size: 0, ..m }.valid_request());
        assert!(!AllocMessage {
            size: (100 << 30) + 1,
            ..m
        }
        .valid_request());
        assert!(!AllocMessage { device_id: 64, ..m }.valid_request());
        assert!(AllocMessage {
            kind: DEVICE_INFO_QUERY,
            device_id: -1,
            ..m
        }
        .valid_request());
    }
}
