//! Journal blocks from any bytes (a torn or corrupted journal after a crash): replay
//! never panics, never reads past what it was given, and accepts only whole blocks:
//! any changed byte of a block written from any events makes replay refuse it whole.
//! And blocks built from any field values replay to the same events, in order, each with
//! its lane's position after the block and the spare field cleared.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tttrack::aggregator::journal::{block_seed, replay_bytes, write_block, Record};

const SECRET: u64 = 0x005e_c7e7;
use tttrack::shm_layout::Event;

fuzz_target!(|data: &[u8]| {
    let (_, _, len) = replay_bytes(data, 7, SECRET, |_| {});
    assert!(len as usize <= data.len());
    if data.len() < 20 {
        return;
    }
    let w = |i: usize| u64::from_le_bytes(data[i..i + 8].try_into().unwrap());
    let key = (w(0) as u32, w(4));
    // Events from the rest, 13 bytes each: lane, position, id.
    let events: Vec<(u8, u64, Event)> = data[12..]
        .chunks_exact(13)
        .enumerate()
        .map(|(k, c)| {
            let pos = u32::from_le_bytes(c[1..5].try_into().unwrap()) as u64;
            let ev = Event {
                seq: k as u64,
                kind: c[5],
                subtype: c[6],
                _reserved: u16::from_le_bytes([c[7], c[8]]),
                device: c[9] as i8 as i32,
                size: u16::from_le_bytes([c[10], c[11]]) as u64,
                id: c[12] as u64,
            };
            (c[0] % 8, pos, ev)
        })
        .collect();
    if events.is_empty() {
        return;
    }
    let mut b = Vec::new();
    write_block(&mut b, block_seed(SECRET, 7), key, events.iter().copied());
    let mut got = Vec::new();
    let (n, torn, len) = replay_bytes(&b, 7, SECRET, |r| got.push(r.clone()));
    assert_eq!((n as usize, torn, len as usize), (events.len(), false, b.len()));
    let last = |lane: u8| events.iter().rev().find(|e| e.0 == lane).unwrap().1;
    for (r, (lane, _, ev)) in got.iter().zip(&events) {
        let want = Record::Event {
            key,
            lane: *lane,
            pos: last(*lane),
            ev: Event { _reserved: 0, ..*ev },
        };
        assert_eq!(r, &want);
    }
    assert_eq!(replay_bytes(&b, 8, SECRET, |_| {}).0, 0, "a block of another generation was accepted");
    assert_eq!(replay_bytes(&b, 7, SECRET ^ 1, |_| {}).0, 0, "a block without the secret was accepted");
    let at = data[11] as usize % b.len();
    let mut m = b.clone();
    m[at] ^= data[10].max(1);
    assert_eq!(replay_bytes(&m, 7, SECRET, |_| {}).0, 0, "a changed byte at {at} went unnoticed");
});
