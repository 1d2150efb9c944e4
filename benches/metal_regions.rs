//! What reading TT-Metal's own regions costs the aggregator: a read of 64 regions of 64
//! live slots each (4,096 processes' figures: far more than a host has), beside the
//! aggregator's idle pass measured in the same run. The regions are read every 100 ms,
//! so the figure that matters is the read's share of that period.
//!
//! `cargo bench --bench metal_regions` prints medians (ns) over many repetitions.

use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command};
use std::time::{Duration, Instant};
use tttrack::metal_shm::reader::Reader;

const REGIONS: u64 = 64;
const SLOTS: usize = 64;

fn put(b: &mut [u8], off: usize, v: u64, width: usize) {
    b[off..off + width].copy_from_slice(&v.to_le_bytes()[..width]);
}

/// A version 3 region (8,576 bytes) whose 64 slots are `pids`, each holding some DRAM.
fn region(pids: &[u32]) -> Vec<u8> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut b = vec![0u8; 8576];
    put(&mut b, 0, 3, 4);
    put(&mut b, 8, now, 8);
    for (i, &pid) in pids.iter().enumerate().take(SLOTS) {
        let s = 856 + i * 120;
        put(&mut b, s, pid as u64, 4);
        put(&mut b, s + 8, (i as u64 + 1) << 20, 8);
        put(&mut b, s + 48, now, 8);
        b[s + 56..s + 61].copy_from_slice(b"bench");
    }
    b
}

/// A quiet aggregator of `dir` (no cards), reading TT-Metal's regions in `metal`.
fn aggregator(
    dir: std::path::PathBuf,
    metal: Option<std::path::PathBuf>,
) -> tttrack::aggregator::Aggregator {
    tttrack::aggregator::Aggregator::start(tttrack::aggregator::Config {
        dir,
        verbosity: tttrack::aggregator::Verbosity::Quiet,
        proc_root: "/proc".into(),
        sysfs_root: "/nonexistent-tttrack-sysfs".into(),
        telemetry_interval: Duration::from_secs(1),
        private_to: None,
        recording_idle_timeout: tttrack::aggregator::RECORDING_IDLE_TIMEOUT,
        last_events_seconds: tttrack::aggregator::last_events::DEFAULT_SECONDS,
        last_events_mib: tttrack::aggregator::last_events::DEFAULT_MIB_PER_CHIP,
        metal_shm_dir: metal,
    })
    .expect("aggregator")
}

/// The share of a core an aggregator's passes take when it runs as idle: one pass,
/// then a 10 ms nap, for 3 s.
fn busy_share(agg: &mut tttrack::aggregator::Aggregator) -> f64 {
    let start = Instant::now();
    let mut busy = Duration::ZERO;
    while start.elapsed() < Duration::from_secs(3) {
        let t = Instant::now();
        agg.pass();
        busy += t.elapsed();
        std::thread::sleep(Duration::from_millis(10));
    }
    busy.as_secs_f64() / start.elapsed().as_secs_f64()
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

fn main() {
    let base = std::env::temp_dir().join(format!("tttrack-bench-metal-{}", std::process::id()));
    let shm = base.join("shm");
    let track = base.join("track");
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&shm).unwrap();
    std::fs::create_dir_all(&track).unwrap();
    std::fs::set_permissions(&track, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let mut children: Vec<Child> = (0..SLOTS)
        .map(|_| Command::new("sleep").arg("600").spawn().unwrap())
        .collect();
    let pids: Vec<u32> = children.iter().map(|c| c.id()).collect();
    let bytes = region(&pids);
    for n in 0..REGIONS {
        std::fs::write(shm.join(format!("tt_device_{}_memory", 1000 + n)), &bytes).unwrap();
    }

    // The aggregator's idle pass (no process, no region), as it runs today.
    let mut agg = aggregator(track.clone(), None);
    for _ in 0..100 {
        agg.pass();
    }
    let idle: Vec<u64> = (0..2000)
        .map(|_| {
            let t = Instant::now();
            agg.pass();
            t.elapsed().as_nanos() as u64
        })
        .collect();
    let idle_share = busy_share(&mut agg);
    drop(agg);

    // The same aggregator reading the 64 regions: every pass as the loop runs it when
    // idle (a 10 ms nap between passes), over 3 s: reads every 100 ms and the
    // publications they cause included.
    let track2 = base.join("track2");
    std::fs::create_dir_all(&track2).unwrap();
    let mut agg = aggregator(track2, Some(shm.clone()));
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(1) {
        agg.pass();
    }
    let regions_share = busy_share(&mut agg);
    drop(agg);

    // A host as hosts are: 8 chips, 8 processes on each.
    let small = base.join("shm-small");
    std::fs::create_dir_all(&small).unwrap();
    let few = region(&pids[..8]);
    for n in 0..8 {
        std::fs::write(small.join(format!("tt_device_{}_memory", 2000 + n)), &few).unwrap();
    }
    let track3 = base.join("track3");
    std::fs::create_dir_all(&track3).unwrap();
    let mut agg = aggregator(track3, Some(small.clone()));
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(1) {
        agg.pass();
    }
    let small_share = busy_share(&mut agg);
    drop(agg);

    // One read of every region, every slot's process checked (as each 100 ms tick does,
    // once the regions are found).
    let mut r = Reader::new(&shm, std::path::Path::new("/proc"), true);
    let s = r.look();
    assert_eq!(s.regions.len(), REGIONS as usize);
    assert_eq!(s.live.len(), REGIONS as usize * SLOTS);
    let reads: Vec<u64> = (0..200)
        .map(|_| {
            let t = Instant::now();
            let s = r.tick(Instant::now());
            let ns = t.elapsed().as_nanos() as u64;
            assert_eq!(s.live.len(), REGIONS as usize * SLOTS);
            ns
        })
        .collect();
    // The same reader over an empty directory: the tick's own cost.
    let empty = base.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let mut e = Reader::new(&empty, std::path::Path::new("/proc"), true);
    e.look();
    let empty_reads: Vec<u64> = (0..2000)
        .map(|_| {
            let t = Instant::now();
            e.tick(Instant::now());
            t.elapsed().as_nanos() as u64
        })
        .collect();

    let (idle, read, none) = (median(idle), median(reads), median(empty_reads));
    println!("aggregator idle pass (no region):            {idle:>10} ns (median of 2000)");
    println!("region read, none there:                     {none:>10} ns (median of 2000)");
    println!(
        "region read, {REGIONS} regions x {SLOTS} live slots:     {read:>10} ns (median of 200), {:.1}x the idle pass",
        read as f64 / idle.max(1) as f64
    );
    println!(
        "share of a core at one read per 100 ms:      {:>10.3} %",
        read as f64 / 100e6 * 100.0
    );
    println!(
        "aggregator busy, idle loop (10 ms naps), no region:  {:>8.3} % of a core",
        idle_share * 100.0
    );
    println!(
        "aggregator busy, idle loop, 64 x 64 regions:         {:>8.3} % of a core",
        regions_share * 100.0
    );
    println!(
        "aggregator busy, idle loop, 8 x 8 regions:           {:>8.3} % of a core",
        small_share * 100.0
    );
    for c in &mut children {
        let _ = c.kill();
        let _ = c.wait();
    }
    let _ = std::fs::remove_dir_all(&base);
}
