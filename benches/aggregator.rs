//! Apply cost per event in the aggregator's accounting, with 100,000 live buffers and
//! an alloc / free / re-alloc mix (criterion), beside its baseline: a bare `HashMap`
//! (the same hasher) doing the same inserts, removes and updates of the same 16-byte
//! records. Target: the accounting at least 0.7x the bare map's rate.
//!
//! Criterion measures the variants one after another, minutes apart on a noisy
//! machine; after them the bench also takes turns, the accounting then the bare map on
//! the same events, 100 rounds, and prints both medians and their ratio.
//! Run: `cargo bench --bench aggregator`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tttrack::accounting::Accounting;
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

type Key = (u32, u64);
type Bare = std::collections::HashMap<u64, (u64, u32, u32), foldhash::fast::RandomState>;

/// As tt-aggregator applies a drained batch: runs of one process's events.
fn accounting_applies(mut a: Accounting, key: Key, ops: &[Event]) -> Accounting {
    let mut i = 0;
    while i < ops.len() {
        i += a.apply_run(key, &ops[i..], |e| e, 0).0;
    }
    a
}

/// The baseline: the same operations on a bare map of the same records.
fn bare_map_applies(mut m: Bare, ops: &[Event]) -> Bare {
    for e in ops {
        if e.kind == EventKind::Alloc as u8 {
            m.entry(e.id)
                .and_modify(|r| r.2 += 1)
                .or_insert((e.size, 0, 1));
        } else if let std::collections::hash_map::Entry::Occupied(mut o) = m.entry(e.id) {
            if o.get().2 > 1 {
                o.get_mut().2 -= 1;
            } else {
                o.remove();
            }
        }
    }
    m
}

/// The two taking turns on the same events, each from its own copy of the same
/// starting state: medians of the rates and their ratio.
fn taking_turns(acc: &Accounting, bare: &Bare, key: Key, ops: &[Event], rounds: usize) {
    use std::time::Instant;
    let (mut a_rates, mut b_rates) = (Vec::new(), Vec::new());
    let rate = |t: Instant| ops.len() as f64 / t.elapsed().as_secs_f64() / 1e6;
    for _ in 0..rounds {
        let a = acc.clone();
        let t = Instant::now();
        let a = std::hint::black_box(accounting_applies(a, key, ops));
        a_rates.push(rate(t));
        drop(a);
        let m = bare.clone();
        let t = Instant::now();
        let m = std::hint::black_box(bare_map_applies(m, ops));
        b_rates.push(rate(t));
        drop(m);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let (a, b) = (median(&mut a_rates), median(&mut b_rates));
    println!(
        "taking turns, {rounds} rounds of {} events with 100,000 live buffers (medians): \
         accounting {a:.1} M events/s, bare map {b:.1} M/s: {:.2}x",
        ops.len(),
        a / b
    );
}

fn bench(c: &mut Criterion) {
    let key = (1u32, 1u64);
    let mut acc = Accounting::default();
    acc.register(key, 0, "bench", 0);
    const LIVE: u64 = 100_000;
    for id in 0..LIVE {
        acc.apply(key, &ev(EventKind::Alloc, (id % 5) as u8, 4096 + id, id), 0);
    }
    // The mix: free a live buffer, allocate a fresh one, re-report (program cache) a
    // live one and free it again: live count stays at LIVE.
    let mut ops = Vec::with_capacity(400_000);
    let mut x = 0x9E37_79B9u64;
    let mut live: Vec<u64> = (0..LIVE).collect();
    for next in LIVE..LIVE + 100_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let slot = (x % LIVE) as usize;
        let victim = live[slot];
        ops.push(ev(EventKind::Free, 0, 0, victim));
        ops.push(ev(EventKind::Alloc, (next % 5) as u8, 8192, next));
        live[slot] = next;
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
            |a| {
                let a = accounting_applies(a, key, &ops);
                debug_assert_eq!(a.processes()[&key].live_buffers(), LIVE);
                a
            },
            criterion::BatchSize::LargeInput,
        )
    });
    // One event at a time (the compatibility socket's way, and `-v`).
    g.bench_function("mix_100k_live_one_by_one", |b| {
        b.iter_batched(
            || acc.clone(),
            |mut a| {
                for e in &ops {
                    a.apply(key, e, 0);
                }
                a
            },
            criterion::BatchSize::LargeInput,
        )
    });
    let mut bare: Bare = Default::default();
    for id in 0..LIVE {
        bare.insert(id, (4096 + id, 0, 1));
    }
    g.bench_function("bare_hashmap_baseline", |b| {
        b.iter_batched(
            || bare.clone(),
            |m| {
                let m = bare_map_applies(m, &ops);
                debug_assert_eq!(m.len() as u64, LIVE);
                m
            },
            criterion::BatchSize::LargeInput,
        )
    });
    g.finish();
    taking_turns(&acc, &bare, key, &ops, 100);
}

/// The address maps: what the graph hook's detail events add to applying (each
/// allocation followed by its two detail events, against the same allocations alone),
/// and what answering a `map` request with 10,000 live L1 buffers costs (built on
/// demand: nothing is kept per event).
fn bench_maps(c: &mut Criterion) {
    use tttrack::shm_layout::{BankGeometry, BufferDetail};
    const N: u64 = 10_000;
    let key = (2u32, 2u64);
    let mut fresh = Accounting::default();
    fresh.register(key, 0, "maps", 0);
    let geometry = BankGeometry {
        struct_size: 32,
        num_banks: 64,
        bank_size: 1_393_312,
        base_address: 105_824,
        page_alignment: 16,
        block_alignment: 32,
    };
    let mut plain = Vec::new();
    let mut detailed = vec![geometry
        .to_event(0, tttrack::shm_layout::BufferType::L1)
        .unwrap()];
    for i in 0..N {
        // Top down, 64 bytes a bank each, every other one freed below.
        let address = (105_824 + 1_393_312 - 64 * (i + 1)) as u32;
        let id = 1u64 << 32 | u64::from(address);
        let a = ev(EventKind::Alloc, 1, 4096, id);
        plain.push(a);
        detailed.push(a);
        let d = BufferDetail {
            struct_size: 32,
            address,
            page_size: 64,
            size_per_bank: 64,
            layout: 0,
            num_cores: 0,
        };
        detailed.extend(d.to_events(0, id));
    }
    let mut g = c.benchmark_group("address_map");
    g.throughput(Throughput::Elements(N));
    g.bench_function("apply_10k_allocs_plain", |b| {
        b.iter_batched(
            || fresh.clone(),
            |a| accounting_applies(a, key, &plain),
            criterion::BatchSize::LargeInput,
        )
    });
    g.bench_function("apply_10k_allocs_with_detail", |b| {
        b.iter_batched(
            || fresh.clone(),
            |a| accounting_applies(a, key, &detailed),
            criterion::BatchSize::LargeInput,
        )
    });
    let mut full = accounting_applies(fresh.clone(), key, &detailed);
    for i in (0..N).step_by(2) {
        let address = 105_824 + 1_393_312 - 64 * (i + 1);
        full.apply(key, &ev(EventKind::Free, 0, 0, 1u64 << 32 | address), 0);
    }
    let q = tttrack::accounting::maps::MapQuery::parse("fits=64000000,1000000".split(' ')).unwrap();
    g.bench_function("map_answer_5k_live_l1_buffers_with_fits", |b| {
        b.iter(|| tttrack::accounting::maps::answer(&full, &q))
    });
    g.finish();
}

criterion_group!(benches, bench, bench_maps);
criterion_main!(benches);
