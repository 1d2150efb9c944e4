//! The strict name parsers on any bytes: a segment name (`seg.PID.START`) is accepted
//! only in the one form the producer writes, so that no two names parse alike; a
//! device directory (`tenstorrent!N`) likewise.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tttrack::shm_layout::{canonical_decimal, parse_segment_file_name, segment_file_name};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Some((pid, start)) = parse_segment_file_name(s) {
        assert_eq!(segment_file_name(pid, start), s, "an alias of a segment name");
    }
    if let Some(n) = canonical_decimal::<u64>(s) {
        assert_eq!(n.to_string(), s, "an alias of a number");
    }
});
