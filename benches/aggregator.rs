//! Apply cost per event in the aggregator's accounting, with 100,000 live buffers and
//! an alloc / free / re-alloc mix (criterion). Target: at least 20 million events per
//! second on one core (at most 50 ns per event). Run: `cargo bench --bench aggregator`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tttrack::aggregator::accounting::{Accounting, ProcState};
use tttrack::shm_layout::{Event, EventKind};

fn ev(kind: EventKind, sub: u8, size: u64, id: u64) -> Event {
    Event {
        seq: 0,
        kind: kind as u8,
        subtype: sub,
        _reserved: 0,
        device: (id % 2) as i32,
        size,
        id,
    }
}

fn bench(c: &mut Criterion) {
    let key = (1u32, 1u64);
    let mut acc = Accounting::default();
    acc.processes
        .insert(key, ProcState::new(1, 1, 0, "bench".into(), 0));
    const LIVE: u64 = 100_000;
    for id in 0..LIVE {
        acc.apply(key, &ev(EventKind::Alloc, (id % 5) as u8, 4096 + id, id), 0);
    }
    // The mix: free a live buffer, allocate a fresh one, re-report (program cache) a
    // live one and free it again: live count stays at LIVE.
    let mut ops = Vec::with_capacity(400_000);
    let mut x = 0x9E37_79B9u64;
    let mut next = LIVE;
    let mut live: Vec<u64> = (0..LIVE).collect();
    for _ in 0..100_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let slot = (x % LIVE) as usize;
        let victim = live[slot];
        ops.push(ev(EventKind::Free, 0, 0, victim));
        ops.push(ev(EventKind::Alloc, (next % 5) as u8, 8192, next));
        live[slot] = next;
        next += 1;
        let other = live[((x >> 20) % LIVE) as usize];
        ops.push(ev(EventKind::Alloc, 0, 8192, other));
        ops.push(ev(EventKind::Free, 0, 0, other));
    }
    let mut g = c.benchmark_group("aggregator_apply");
    g.throughput(Throughput::Elements(ops.len() as u64));
    g.bench_function("mix_100k_live", |b| {
        b.iter_batched(
            // Each run starts from the same 100k-live state (the mix changes it).
            || acc.clone(),
            |mut a| {
                for e in &ops {
                    a.apply(key, e, 0);
                }
                debug_assert_eq!(a.processes[&key].live_buffers(), LIVE);
                a
            },
            criterion::BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
