//! Journal records from any bytes (a torn or corrupted journal after a crash): decoding
//! never panics and accepts only exactly what the writer produces (every accepted
//! record encodes back to the same bytes). And records built from any field values
//! survive encode/decode unchanged, while any single changed byte is refused.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tttrack::aggregator::journal::{decode, decode_as, encode, Record, Written, RECORD_SIZE};
use tttrack::shm_layout::Event;

fuzz_target!(|data: &[u8]| {
    for chunk in data.chunks(RECORD_SIZE) {
        // Generation 7; a record of an earlier version's checksum re-encodes with the
        // current one, so only its first 56 bytes must match.
        if let Some((r, w)) = decode_as(chunk, 7) {
            assert_eq!(chunk.len(), RECORD_SIZE);
            let n = if w == Written::Current { RECORD_SIZE } else { 56 };
            assert_eq!(&encode(&r, 7)[..n], &chunk[..n]);
        }
    }
    if data.len() >= 48 {
        let w = |i: usize| u64::from_le_bytes(data[i..i + 8].try_into().unwrap());
        let key = (w(0) as u32, w(8));
        let r = if data[47] & 1 == 0 {
            Record::Release { key }
        } else {
            Record::Event {
                key,
                lane: data[46],
                pos: w(16),
                ev: Event {
                    seq: w(24),
                    kind: data[32],
                    subtype: data[33],
                    _reserved: 0,
                    device: data[34] as i8 as i32,
                    size: w(35) >> (data[43] % 64),
                    id: w(38),
                },
            }
        };
        let b = encode(&r, 7);
        assert_eq!(decode(&b, 7), Some(r));
        assert_eq!(decode(&b, 8), None, "a record of another generation was accepted");
        let mut m = b;
        let at = data[44] as usize % RECORD_SIZE;
        m[at] ^= data[45].max(1);
        assert_eq!(decode(&m, 7), None, "a changed byte at {at} went unnoticed");
    }
});
