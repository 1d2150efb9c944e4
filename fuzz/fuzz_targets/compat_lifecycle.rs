//! Socket clients' whole lives on any input: clients connect (a new process, or a pid
//! reused by a process with another start time), send any bytes in any chunks through
//! the compatibility protocol's parser, and end (released), in any interleaving. A
//! client's messages change only its own process's figures; an ended client's figures
//! are gone from every device; device figures are always the sum over live processes.
//! Input: records of 3 bytes (op, client, length) followed by `length` bytes of data.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::collections::HashMap;
use tttrack::accounting::*;
use tttrack::compat::{Parsed, StreamParser};
use tttrack::counters_page::NUM_CATS;

fuzz_target!(|data: &[u8]| {
    let mut acc = Accounting::default();
    // client -> (process key, its parser)
    let mut clients: HashMap<u8, (ProcKey, StreamParser)> = HashMap::new();
    let mut next_start = 1u64;
    let mut i = 0;
    while i + 3 <= data.len() {
        let (op, client, len) = (data[i] % 3, data[i + 1] % 4, data[i + 2] as usize);
        i += 3;
        let chunk = &data[i..(i + len).min(data.len())];
        i += chunk.len();
        match op {
            0 => {
                // Connect: the pid is the client number; a reconnect is a new process
                // (a reused pid with a new start time).
                if let Some((key, _)) = clients.remove(&client) {
                    acc.release(key);
                }
                let key = (client as u32 + 1, next_start);
                next_start += 1;
                acc.register(key, 0, "", 0);
                clients.insert(client, (key, StreamParser::default()));
            }
            1 => {
                let Some((key, parser)) = clients.get_mut(&client) else {
                    continue;
                };
                let key = *key;
                let others: Vec<(ProcKey, Vec<[u64; NUM_CATS]>)> = acc
                    .processes()
                    .iter()
                    .filter(|(k, _)| **k != key)
                    .map(|(k, p)| (*k, p.devices.values().map(|d| d.used).collect()))
                    .collect();
                for p in parser.feed(chunk) {
                    if let Parsed::Message(m) = p {
                        if let Some(ev) = m.event() {
                            acc.apply(key, &ev, 0);
                        }
                    }
                }
                for (k, before) in others {
                    let after: Vec<[u64; NUM_CATS]> =
                        acc.processes()[&k].devices.values().map(|d| d.used).collect();
                    assert_eq!(before, after, "client {client} changed process {k:?}");
                }
            }
            _ => {
                if let Some((key, _)) = clients.remove(&client) {
                    acc.release(key);
                    assert!(!acc.processes().contains_key(&key));
                }
            }
        }
        if let Err(e) = acc.check_device_sums() {
            panic!("{e}");
        }
    }
});
