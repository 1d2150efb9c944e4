//! Cost of one Prometheus scrape with 64 devices and 1000 processes (criterion).
//! Target: at most 5 ms. Run: `cargo bench --bench metrics`.

use criterion::{criterion_group, criterion_main, Criterion};
use tttrack::counters_page::*;

fn snapshot() -> Snapshot {
    let devices = (0..64u32)
        .map(|id| {
            let mut d = DeviceRecord {
                id,
                flags: DEV_PRESENT | DEV_LOCAL,
                dram_total: 12 << 30,
                l1_total: 96 << 20,
                ..Default::default()
            };
            d.arch = put_str("wormhole_b0");
            d.board = put_str("n300");
            for (c, f) in d.figures.iter_mut().enumerate() {
                *f = Figure {
                    used: (id as u64 + 1) << (10 + c),
                    peak: 1 << 30,
                    count: 7,
                };
            }
            d.telemetry.valid = TEL_TEMP | TEL_POWER | TEL_AICLK | TEL_HEARTBEAT;
            d.telemetry.asic_temp_mc = 45_000;
            d.telemetry.power_uw = 25_000_000;
            d.telemetry.aiclk_mhz = 1000;
            d
        })
        .collect();
    let processes = (0..1000u32)
        .map(|i| {
            let mut p = ProcessRecord {
                pid: 10_000 + i,
                flags: PROC_ALIVE | PROC_EXACT,
                num_devices: 2,
                ..Default::default()
            };
            p.comm = put_str("python3");
            for k in 0..2 {
                p.devices[k].device = ((i as usize + k) % 64) as i32;
                p.devices[k].used = [1 << 20; NUM_CATS];
                p.devices[k].peak = [2 << 20; NUM_CATS];
            }
            p
        })
        .collect();
    Snapshot {
        status: AggregatorStatus {
            events_applied: 123,
            processes_tracked: 1000,
            ..Default::default()
        },
        devices,
        processes,
    }
}

fn bench(c: &mut Criterion) {
    let s = std::sync::Arc::new(snapshot());
    let text = tttrack::aggregator::metrics::render(Some(s.clone()), true);
    assert!(text.contains("tt_process_memory_used_bytes"));
    eprintln!(
        "scrape body: {} bytes, {} lines",
        text.len(),
        text.lines().count()
    );
    c.bench_function("scrape_64_devices_1000_processes", |b| {
        b.iter(|| tttrack::aggregator::metrics::render(Some(s.clone()), true))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
