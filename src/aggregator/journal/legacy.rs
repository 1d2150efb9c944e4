//! The journal's records of earlier versions (64 bytes, one event or release each, a
//! checksum each): still read, so that an upgraded aggregator recovers its journal.

use super::*;

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
pub(super) fn checksum(b: &[u8], generation: u64) -> u64 {
    let mut w = [0u64; 7];
    for (d, c) in w.iter_mut().zip(b.chunks_exact(8)) {
        *d = u64::from_le_bytes(c.try_into().unwrap_or_default());
    }
    checksum_words(&w, generation)
}

/// The checksum journals of earlier versions wrote (FNV-1a over each byte), accepted
/// when reading so that an upgraded aggregator recovers them.
pub(super) fn checksum_v1(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &x in b {
        h ^= x as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h | 1
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
