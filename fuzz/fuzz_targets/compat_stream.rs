//! The compatibility socket's parser on any byte stream, cut into chunks of any size:
//! never panics, yields only valid requests, closes only after ten bad messages in a
//! row, and never holds more than one message of unparsed bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tttrack::compat::{Parsed, StreamParser, MSG_SIZE};

fuzz_target!(|data: &[u8]| {
    let Some((&cut, stream)) = data.split_first() else {
        return;
    };
    let cut = usize::from(cut).max(1);
    let mut p = StreamParser::default();
    for chunk in stream.chunks(cut) {
        let mut closed = false;
        for out in p.feed(chunk) {
            match out {
                Parsed::Message(m) => assert!(m.valid_request(), "{m:?}"),
                Parsed::Close => closed = true,
            }
        }
        assert!(p.leftover() < MSG_SIZE);
        if closed {
            assert!(p.bad_total >= 10);
            return;
        }
    }
});
