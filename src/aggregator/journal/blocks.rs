//! The journal's blocks: how the events of one pass are written, checked and replayed
//! (the format is described in [`super`]).

use super::*;

/// The checksum of a block: every word after the header, in groups of four (each word
/// of a group multiplied by its own odd constant after mixing in the group's index,
/// four sums side by side), then the header's first three words as one more group,
/// seeded with the generation. A changed bit of any word changes its product and so
/// its sum, and the final mix changes with any one sum; the index makes a group count
/// where it is.
#[derive(Clone, Copy)]
pub(super) struct BlockSum {
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

    pub(super) fn new() -> Self {
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
    pub(super) fn add(&mut self, w: [u64; 4]) {
        let at = self.group.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
        for ((a, x), k) in self.acc.iter_mut().zip(w).zip(Self::K) {
            *a = a.wrapping_add((x ^ at).wrapping_mul(k));
        }
        self.group += 1;
    }

    pub(super) fn finish(mut self, head: [u64; 3], seed: u64) -> u64 {
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

/// A block's header words (before its checksum).
pub(super) fn block_head(tag: u8, lanes: usize, key: ProcKey, events: u64) -> [u64; 3] {
    [
        tag as u64 | (lanes as u64) << 8 | (key.0 as u64) << 32,
        key.1,
        events,
    ]
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
pub(super) fn put(buf: &mut Vec<u8>, w: &[u64]) {
    if cfg!(target_endian = "big") {
        for x in w {
            buf.extend_from_slice(&x.to_le_bytes());
        }
    } else {
        buf.extend_from_slice(bytemuck::cast_slice(w));
    }
}
/// Reads into `buf` until it is full or the file ends; returns the bytes read.
pub(super) fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
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
    let event = |e: usize| -> Event {
        bytemuck::cast::<[u64; 4], Event>(core::array::from_fn(|j| word(4 * e + j)))
    };
    // Every event's lane among the block's before anything is applied.
    if (0..n as usize).any(|e| {
        after
            .get(event(e)._reserved as usize)
            .is_none_or(|p| p.is_none())
    }) {
        return Ok(Err(Stop::Torn));
    }
    for e in 0..n as usize {
        let ev = event(e);
        let lane = ev._reserved as usize;
        let pos = after[lane].unwrap_or_default();
        let ev = Event { _reserved: 0, ..ev };
        apply(
            acc,
            &Record::Event {
                key,
                lane: lane as u8,
                pos,
                ev,
            },
        );
    }
    Ok(Ok((n, (BLOCK_HEADER + words * 8) as u64)))
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

pub(super) fn replay_from(
    mut r: impl Read,
    generation: u64,
    secret: u64,
    acc: &mut Accounting,
    mut apply: impl FnMut(&mut Accounting, &Record),
) -> io::Result<(u64, bool, u64, bool)> {
    let (mut replayed, mut torn, mut valid_len, mut legacy) = (0u64, false, 0u64, false);
    let mut head = [0u8; BLOCK_HEADER];
    let mut body = Vec::new();
    let seeds = (
        block_seed(secret, generation),
        block_seed(secret, generation.wrapping_sub(1)),
    );
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
