//! Any events a process can write (any kind, type, device, size and id) change only
//! that process's figures, and every device's figures stay exactly the sum over its
//! processes. Input: 12-byte records (process selector, kind, subtype, device, 4 size
//! bytes, id...), applied to two processes; a third process, never written to, must be
//! untouched.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tttrack::accounting::*;
use tttrack::shm_layout::Event;

fuzz_target!(|data: &[u8]| {
    let mut acc = Accounting::default();
    for k in 1..=3u32 {
        acc.register((k, k as u64), 0, &format!("p{k}"), 0);
    }
    for id in 0..16u64 {
        let ev = Event {
            seq: 0,
            kind: 1,
            subtype: 0,
            _reserved: 0,
            device: 0,
            size: 100 + id,
            id,
        };
        acc.apply((3, 3), &ev, 0);
    }
    let before = acc.processes()[&(3, 3)].devices.clone();
    for r in data.chunks_exact(12) {
        let who = 1 + (r[0] & 1) as u32;
        // Sizes up to 2^40 and a shift: small and huge values both occur.
        let size = (u32::from_le_bytes(r[4..8].try_into().unwrap()) as u64) << (r[8] % 9);
        let ev = Event {
            seq: 0,
            kind: r[1] % 12,
            subtype: r[2],
            _reserved: 0,
            device: r[3] as i8 as i32,
            size,
            id: (r[9] % 24) as u64 | ((r[10] as u64) << 56),
        };
        acc.apply((who, who as u64), &ev, r[11] as u32);
    }
    let after = &acc.processes()[&(3, 3)].devices;
    assert_eq!(before.len(), after.len());
    for (d, pd) in &before {
        assert_eq!(pd.used, after[d].used, "another process changed process 3's figures");
    }
    if let Err(e) = acc.check_device_sums() {
        panic!("{e}");
    }
});
