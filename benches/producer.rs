//! Per-event cost of reporting an allocation event, with a consumer draining
//! concurrently, for tttrack's lanes and the designs it is compared with:
//!
//! - `tttrack_cabi_real_aggregator`: `tttrack_alloc`/`tttrack_free` through the C ABI
//!   into a lane of a real segment, drained by the real `tt-aggregator` binary (exact
//!   accounting, journal on): events back to back, a flood;
//! - `tttrack_cabi_real_aggregator_bursts`: the same in bursts of 1024 events, 2 ms
//!   apart (only the bursts are timed);
//! - `tttrack_cabi_bare_drainer`: the same lanes drained by a bare consumer thread of
//!   this bench (reads and releases, no accounting, no journal): the lanes' own cost;
//! - `tttrack_cabi_2threads_bare_drainer`: two producing threads (wall time per event);
//! - `unix_socket_144b`: the original design, a 144-byte `send()` per event on a Unix
//!   stream socket, read by a thread;
//! - `rtrb` and `rtrb_bursts`: a minimal in-process SPSC ring of the same 32-byte
//!   records with a batching consumer, flooded and in the same bursts;
//! - `crossbeam_arrayqueue`: crossbeam's bounded MPMC queue of the same records.
//!
//! Every variant produces the same alternating alloc/free content. At the end it checks
//! that the real aggregator applied every event and lost none. Run:
//! `cargo bench --bench producer`.

use criterion::{criterion_group, criterion_main, Criterion};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tttrack::aggregator::segment_reader::{list_segments, MappedSegment};
use tttrack::producer::ffi::{tttrack_alloc, tttrack_free};
use tttrack::shm_layout::NUM_LANES;

type Rec = [u64; 4];

fn rec(i: u64) -> Rec {
    [i, if i & 1 == 0 { 1 } else { 2 }, 4096, 0x1000 + (i >> 1)]
}

/// A consumer thread that drains every segment of `dir` like the aggregator.
fn spawn_drainer(dir: std::path::PathBuf, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut segs: Vec<MappedSegment> = Vec::new();
        let mut buf = Vec::with_capacity(1 << 16);
        let mut total = 0u64;
        // SAFETY: gettid has no preconditions (the draining thread's id, as the aggregator).
        let me = unsafe { libc::gettid() } as u32;
        let mut last_scan = Instant::now() - Duration::from_secs(1);
        while !stop.load(Ordering::Relaxed) {
            if last_scan.elapsed() > Duration::from_millis(50) {
                for p in list_segments(&dir).unwrap_or_default() {
                    if !segs.iter().any(|s| s.path == p) {
                        if let Ok(s) = MappedSegment::open(&p) {
                            segs.push(s);
                        }
                    }
                }
                last_scan = Instant::now();
            }
            let mut got = 0;
            for s in segs.iter_mut() {
                s.heartbeat(me, tttrack::sys::monotonic_ns());
                for lane in 0..NUM_LANES {
                    buf.clear();
                    if let Ok(n) = s.read_lane(lane, &mut buf, 1 << 16) {
                        if n > 0 {
                            // Touch the records as an aggregator would.
                            total += buf.iter().map(|(e, _)| e.size).sum::<u64>();
                            s.release(lane, s.read_pos(lane));
                            got += n;
                        }
                    }
                }
            }
            if got < 4096 {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        total
    })
}

/// One alloc or free through the C ABI, by the content of event `i`.
fn report(i: u64) {
    let r = rec(i);
    if r[1] == 1 {
        tttrack_alloc(0, r[2], 0, r[3]);
    } else {
        tttrack_free(0, r[3]);
    }
}

const BURST: u64 = 1024;
const BURST_GAP: Duration = Duration::from_millis(2);

/// Runs `iters` events in bursts of [`BURST`], [`BURST_GAP`] apart, through `one`;
/// returns the time spent in the bursts only.
fn in_bursts(iters: u64, mut one: impl FnMut(u64)) -> Duration {
    let mut spent = Duration::ZERO;
    let mut i = 0;
    while i < iters {
        std::thread::sleep(BURST_GAP);
        let n = BURST.min(iters - i);
        let t = Instant::now();
        for k in i..i + n {
            one(k);
        }
        spent += t.elapsed();
        i += n;
    }
    spent
}

/// A minimal in-process SPSC ring (rtrb) of the same records, with a consumer thread
/// that lets a batch pile up before it drains (the baseline of the bursts).
struct MinimalRing {
    tx: rtrb::Producer<Rec>,
    stop: Arc<AtomicBool>,
    consumer: std::thread::JoinHandle<u64>,
}

impl MinimalRing {
    fn start() -> Self {
        let (tx, mut cons) = rtrb::RingBuffer::<Rec>::new(1 << 15);
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let consumer = std::thread::spawn(move || {
            let mut sum = 0u64;
            while !st.load(Ordering::Relaxed) {
                let n = cons.slots();
                if n < 4096 {
                    std::thread::sleep(Duration::from_micros(200));
                }
                if let Ok(chunk) = cons.read_chunk(cons.slots()) {
                    for r in chunk {
                        sum += r[2];
                    }
                }
            }
            sum
        });
        Self { tx, stop, consumer }
    }

    #[inline]
    fn push(&mut self, i: u64) {
        let mut r = rec(i);
        loop {
            match self.tx.push(r) {
                Ok(()) => break,
                Err(rtrb::PushError::Full(back)) => {
                    r = back;
                    std::hint::spin_loop();
                }
            }
        }
    }

    /// The same push behind a call that is not inlined, as a program calls a library
    /// (ours is such a call): the baseline without the call's cost would leave ours
    /// paying for it alone.
    #[inline(never)]
    fn push_called(&mut self, i: u64) {
        self.push(i)
    }

    fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.consumer.join().unwrap();
    }
}

/// Bursts of ours (through the real aggregator) and of the minimal ring, behind a call
/// and inlined, taking turns [`BURST_GAP`] apart: each round of bursts sees the same
/// machine, so the ratios hold up where two benchmarks a minute apart do not on a noisy
/// machine. Prints the median cost per event of each and the ratios of the medians.
/// Returns how many events were reported through ours.
fn paired_bursts(rounds: usize) -> u64 {
    let mut ring = MinimalRing::start();
    let mut times = [(); 3].map(|_| Vec::with_capacity(rounds));
    let mut i = 0u64;
    // Warm-up: both rings' pages touched (ours is 32 bursts around), none timed.
    for _ in 0..64 {
        in_bursts(BURST, |k| report(i + k));
        in_bursts(BURST, |k| ring.push_called(i + k));
        i += BURST;
    }
    let per_event = |d: Duration| d.as_nanos() as f64 / BURST as f64;
    for _ in 0..rounds {
        times[0].push(per_event(in_bursts(BURST, |k| report(i + k))));
        times[1].push(per_event(in_bursts(BURST, |k| ring.push_called(i + k))));
        times[2].push(per_event(in_bursts(BURST, |k| ring.push(i + k))));
        i += BURST;
    }
    ring.finish();
    let [o, c, n] = times.map(|mut v| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    });
    println!(
        "bursts of {BURST}, {rounds} rounds taking turns (medians): tttrack through the real \
         aggregator {o:.2} ns/event; minimal ring behind a call {c:.2} ({:.2}x); the same \
         ring inlined {n:.2} ({:.2}x)",
        o / c,
        o / n
    );
    i
}

/// The real tt-aggregator on `dir`, once its counters page is there.
fn start_aggregator(dir: &std::path::Path) -> std::process::Child {
    let c = std::process::Command::new(env!("CARGO_BIN_EXE_tt-aggregator"))
        .arg("--dir")
        .arg(dir)
        .args(["--quiet", "--no-compat-socket"])
        .spawn()
        .expect("tt-aggregator");
    let t = Instant::now();
    while tttrack::counters_page::CountersReader::open(dir).is_err() {
        assert!(t.elapsed() < Duration::from_secs(10), "no aggregator");
        std::thread::sleep(Duration::from_millis(10));
    }
    c
}

/// Waits until the page shows every event of this process applied; returns (applied,
/// lost) as the page says.
fn wait_applied(dir: &std::path::Path, expect: u64) -> (u64, u64) {
    let me = std::process::id();
    let t = Instant::now();
    loop {
        let p = tttrack::counters_page::CountersReader::open(dir)
            .ok()
            .and_then(|r| r.view().snapshot())
            .and_then(|s| s.processes.into_iter().find(|p| p.pid == me));
        if let Some(p) = p {
            if p.events_applied + p.events_lost >= expect || t.elapsed() > Duration::from_secs(60) {
                return (p.events_applied, p.events_lost);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn bench(c: &mut Criterion) {
    // In /dev/shm, where the tracking directory is by default (a tmpfs).
    let dir = std::path::PathBuf::from(format!("/dev/shm/tttrack-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::env::set_var("TTTRACK_DIR", &dir);
    std::env::set_var("TT_ALLOC_TRACKING_ENABLED", "1");
    let mut g = c.benchmark_group("producer_per_event");
    g.measurement_time(Duration::from_secs(4));
    g.warm_up_time(Duration::from_secs(1));

    // Ours, through the real aggregator: every event applied and journaled.
    let mut agg = start_aggregator(&dir);
    let reported = std::cell::Cell::new(0u64);
    report(0); // creates the segment
    report(1);
    reported.set(2);
    std::thread::sleep(Duration::from_millis(100));
    g.bench_function("tttrack_cabi_real_aggregator", |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            for i in 0..iters {
                report(i);
            }
            reported.set(reported.get() + iters);
            t.elapsed()
        })
    });
    g.bench_function("tttrack_cabi_real_aggregator_bursts", |b| {
        b.iter_custom(|iters| {
            let d = in_bursts(iters, report);
            reported.set(reported.get() + iters);
            d
        })
    });
    reported.set(reported.get() + paired_bursts(2000));
    let (applied, lost) = wait_applied(&dir, reported.get());
    let dropped = tttrack::producer::ffi::tttrack_dropped_events();
    eprintln!(
        "real aggregator: {} events reported, {applied} applied, {lost} lost, {dropped} dropped by the producer",
        reported.get()
    );
    // SAFETY: signalling our own child.
    unsafe { libc::kill(agg.id() as i32, libc::SIGTERM) };
    let _ = agg.wait();
    // The same lanes drained by a bare consumer (no accounting, no journal).
    let stop = Arc::new(AtomicBool::new(false));
    let drainer = spawn_drainer(dir.clone(), stop.clone());
    std::thread::sleep(Duration::from_millis(100));
    g.bench_function("tttrack_cabi_bare_drainer", |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            for i in 0..iters {
                let r = rec(i);
                if r[1] == 1 {
                    tttrack_alloc(0, r[2], 0, r[3]);
                } else {
                    tttrack_free(0, r[3]);
                }
            }
            t.elapsed()
        })
    });
    g.bench_function("tttrack_cabi_2threads_bare_drainer", |b| {
        b.iter_custom(|iters| {
            let per = iters / 2 + 1;
            let t = Instant::now();
            let hs: Vec<_> = (0..2u64)
                .map(|k| {
                    std::thread::spawn(move || {
                        for i in 0..per {
                            let r = rec(i);
                            if r[1] == 1 {
                                tttrack_alloc(k as i32, r[2], 0, r[3]);
                            } else {
                                tttrack_free(k as i32, r[3]);
                            }
                        }
                    })
                })
                .collect();
            for h in hs {
                h.join().unwrap();
            }
            t.elapsed()
        })
    });
    stop.store(true, Ordering::Relaxed);
    drainer.join().unwrap();
    let dropped = tttrack::producer::ffi::tttrack_dropped_events();
    eprintln!("tttrack: events dropped during the benchmark: {dropped}");

    // The original: 144-byte send() per event on a Unix stream socket.
    {
        let (mut tx, mut rx) = std::os::unix::net::UnixStream::pair().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let reader = std::thread::spawn(move || {
            let mut m = [0u8; 144 * 64];
            let mut n = 0u64;
            rx.set_read_timeout(Some(Duration::from_millis(50)))
                .unwrap();
            while !st.load(Ordering::Relaxed) {
                if let Ok(k) = rx.read(&mut m) {
                    n += k as u64;
                }
            }
            n
        });
        g.bench_function("unix_socket_144b", |b| {
            b.iter_custom(|iters| {
                let mut msg = [0u8; 144];
                let t = Instant::now();
                for i in 0..iters {
                    let r = rec(i);
                    msg[0] = r[1] as u8;
                    msg[8..16].copy_from_slice(&r[2].to_le_bytes());
                    msg[24..32].copy_from_slice(&r[3].to_le_bytes());
                    tx.write_all(&msg).unwrap();
                }
                t.elapsed()
            })
        });
        stop.store(true, Ordering::Relaxed);
        drop(tx);
        reader.join().unwrap();
    }

    // An in-process SPSC ring of the same records.
    {
        let mut ring = MinimalRing::start();
        g.bench_function("rtrb", |b| {
            b.iter_custom(|iters| {
                let t = Instant::now();
                for i in 0..iters {
                    ring.push(i);
                }
                t.elapsed()
            })
        });
        g.bench_function("rtrb_bursts", |b| {
            b.iter_custom(|iters| in_bursts(iters, |i| ring.push(i)))
        });
        ring.finish();
    }

    // crossbeam's ArrayQueue.
    {
        let q = Arc::new(crossbeam_queue::ArrayQueue::<Rec>::new(1 << 15));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, q2) = (stop.clone(), q.clone());
        let h = std::thread::spawn(move || {
            let mut sum = 0u64;
            while !st.load(Ordering::Relaxed) {
                if q2.len() < 4096 {
                    std::thread::sleep(Duration::from_micros(200));
                }
                while let Some(r) = q2.pop() {
                    sum += r[2];
                }
            }
            sum
        });
        g.bench_function("crossbeam_arrayqueue", |b| {
            b.iter_custom(|iters| {
                let t = Instant::now();
                for i in 0..iters {
                    let mut r = rec(i);
                    while let Err(back) = q.push(r) {
                        r = back;
                        std::hint::spin_loop();
                    }
                }
                t.elapsed()
            })
        });
        stop.store(true, Ordering::Relaxed);
        h.join().unwrap();
    }
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, bench);
criterion_main!(benches);
