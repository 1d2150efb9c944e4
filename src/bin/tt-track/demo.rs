//! `tt-track demo`: an aggregator on simulated cards, a cast of workload processes
//! coming and going, and the live view, together; everything it made is removed at
//! the end.

use super::lib_or_exit;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tttrack::devices::simulated::Readings;

/// The demo's cast: name, cycles (0 = runs until the demo ends), leaks.
const CAST: [(&str, u64, bool); 6] = [
    ("llama-70b", 0, false),
    ("resnet50", 120, false),
    ("bert-large", 80, true),
    ("whisper", 100, false),
    ("falcon-7b", 90, false),
    ("sd-unet", 60, true),
];

/// What the demo creates, removed when it ends (the aggregator's log is kept).
struct DemoPlace {
    dir: PathBuf,
    /// The tracking directory is the demo's own (not one given with --dir).
    owned: bool,
    log_path: PathBuf,
    sim_root: PathBuf,
}

impl DemoPlace {
    /// Makes the tracking directory, the log and the simulated cards.
    fn make(
        dir: Option<PathBuf>,
    ) -> Result<
        (
            Self,
            std::fs::File,
            Vec<tttrack::devices::simulated::SimCard>,
        ),
        String,
    > {
        let me = std::process::id();
        let owned = dir.is_none();
        let dir = dir.unwrap_or_else(|| PathBuf::from(format!("/dev/shm/tttrack-demo-{me}")));
        if owned {
            let _ = std::fs::remove_dir_all(&dir);
        }
        tttrack::sys::ensure_tracking_dir(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let log_path = std::env::temp_dir().join(format!("tttrack-demo-{me}.log"));
        let log = std::fs::File::create(&log_path)
            .map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
        // Simulated cards, laid out as the kernel lays them out, so every view is alive:
        // an n300 (chip 0 local, chip 1 remote behind it: the workload's devices 0 and 1)
        // and an idle p150a.
        let sim_root = PathBuf::from(format!("/dev/shm/tttrack-demo-{me}-host"));
        let cards = simulated_host(&sim_root).map_err(|e| {
            format!(
                "cannot lay out the simulated cards in {}: {e}",
                sim_root.display()
            )
        })?;
        let place = Self {
            dir,
            owned,
            log_path,
            sim_root,
        };
        Ok((place, log, cards))
    }

    fn remove(&self) {
        if self.owned {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        let _ = std::fs::remove_dir_all(&self.sim_root);
    }
}

pub(super) fn demo(dir: Option<PathBuf>, no_ui: bool, duration: u64, processes: usize) -> i32 {
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("tt-track"));
    let bindir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    let agg_bin = bindir.join("tt-aggregator");
    if !agg_bin.exists() {
        eprintln!(
            "tt-track demo: {} not found; build everything with `cargo build --release`",
            agg_bin.display()
        );
        return 127;
    }
    lib_or_exit();
    let ui = !no_ui && std::io::stdout().is_terminal();
    if !no_ui && !ui {
        eprintln!("tt-track demo: no terminal for the live view; running --no-ui for {duration} s");
    }
    let (place, log, cards) = match DemoPlace::make(dir) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("tt-track demo: {e}");
            return 1;
        }
    };
    let mut agg = match start_demo_aggregator(&agg_bin, &place, log) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("tt-track demo: cannot start {}: {e}", agg_bin.display());
            place.remove();
            return 1;
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let simulator = {
        let (stop, dir, root) = (stop.clone(), place.dir.clone(), place.sim_root.clone());
        std::thread::spawn(move || simulate(&stop, &dir, &root, &cards))
    };
    let children: Arc<Mutex<Vec<Child>>> = Arc::new(Mutex::new(Vec::new()));
    let spawner = {
        let (stop, children, dir) = (stop.clone(), children.clone(), place.dir.clone());
        std::thread::spawn(move || keep_workloads_running(&stop, &children, &dir, &exe, processes))
    };
    let code = if ui {
        demo_live_view(&place)
    } else {
        demo_snapshot_after(&place, duration)
    };
    // Shut everything down and clean up.
    stop.store(true, Ordering::Relaxed);
    let _ = spawner.join();
    let _ = simulator.join();
    for c in children
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter_mut()
    {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let _ = c.wait();
    }
    // Give the aggregator a moment to release the last processes, then stop it.
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(agg.id() as i32, libc::SIGTERM) };
    let _ = agg.wait();
    report_demo_leaks(&place.log_path);
    place.remove();
    println!("  (full aggregator log: {})", place.log_path.display());
    code
}

/// Starts the demo's aggregator on the simulated cards, its output into `log`, and
/// waits (up to 5 s) for its counters page.
fn start_demo_aggregator(
    agg_bin: &Path,
    place: &DemoPlace,
    log: std::fs::File,
) -> std::io::Result<Child> {
    let agg = Command::new(agg_bin)
        .arg("--dir")
        .arg(&place.dir)
        .arg("--no-compat-socket")
        .arg("--sysfs-root")
        .arg(&place.sim_root)
        .args(["--telemetry-interval", "0.5"])
        .stdout(log.try_clone().map(Stdio::from).unwrap_or(Stdio::null()))
        .stderr(Stdio::from(log))
        .spawn()?;
    // This aggregator's page (a page left by one killed earlier may be there already).
    let ours = |pid: u32| {
        tttrack::counters_page::CountersReader::open(&place.dir)
            .ok()
            .and_then(|r| r.view().snapshot())
            .is_some_and(|s| s.status.pid == pid)
    };
    let t = Instant::now();
    while !ours(agg.id()) && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(agg)
}

/// Keeps `processes` workloads of the cast running (one started every 0.7 s at most)
/// until `stop`.
fn keep_workloads_running(
    stop: &AtomicBool,
    children: &Mutex<Vec<Child>>,
    dir: &Path,
    exe: &Path,
    processes: usize,
) {
    let (mut next, mut seed) = (0usize, 1u64);
    while !stop.load(Ordering::Relaxed) {
        let mut ch = children.lock().unwrap_or_else(|e| e.into_inner());
        ch.retain_mut(|c| !matches!(c.try_wait(), Ok(Some(_))));
        if ch.len() >= processes {
            drop(ch);
            std::thread::sleep(Duration::from_millis(200));
            continue;
        }
        let (name, cycles, leak) = CAST[next % CAST.len()];
        let mut cmd = Command::new(exe);
        cmd.args(["workload", "--seed", &seed.to_string()])
            .args(["--cycles", &cycles.to_string(), "--name", name])
            .env("TT_ALLOC_TRACKING_ENABLED", "1")
            .env("TTTRACK_DIR", dir)
            // The cast runs on the n300 (card 0), as one process per card is run on a
            // multi-card host: its device 0 is card 0's chip, its device 1 the n300's
            // remote chip behind it.
            .env("TT_VISIBLE_DEVICES", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if leak {
            cmd.arg("--leak");
        }
        if let Ok(c) = cmd.spawn() {
            ch.push(c);
        }
        next += 1;
        seed += 1;
        drop(ch);
        std::thread::sleep(Duration::from_millis(700));
    }
}

/// The live view on the demo's directory and cards, until the user quits.
fn demo_live_view(place: &DemoPlace) -> i32 {
    let mut src = tttrack::smi::tui::DirSource {
        dir: place.dir.clone(),
        sysfs_root: place.sim_root.clone(),
    };
    let color = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    match tttrack::smi::tui::run(&mut src, Duration::from_millis(500), color) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("tt-track demo: {e}");
            1
        }
    }
}

/// Without a terminal: the snapshot after `duration` seconds.
fn demo_snapshot_after(place: &DemoPlace, duration: u64) -> i32 {
    let end = Instant::now() + Duration::from_secs(duration);
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
    }
    match tttrack::smi::model::Model::load(&place.dir, 0, &place.sim_root) {
        Ok(m) => print!(
            "{}",
            tttrack::smi::text::render(&m, &tttrack::smi::text::Style { color: false })
        ),
        Err(e) => eprintln!("tt-track demo: {}", e.0),
    }
    0
}

/// The last few "exited holding" lines of the aggregator's log.
fn report_demo_leaks(log_path: &Path) {
    let text = std::fs::read_to_string(log_path).unwrap_or_default();
    let leaks: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("exited holding"))
        .collect();
    println!(
        "tt-track demo: done. The aggregator reported {} process(es) that exited holding memory:",
        leaks.len()
    );
    for l in leaks.iter().rev().take(5).rev() {
        println!("  {l}");
    }
}

/// Lays out the demo's simulated host under `root`: card 0 an n300, card 2 a p150a
/// (card 1 is the n300's remote chip, known only from the workload).
fn simulated_host(root: &Path) -> std::io::Result<Vec<tttrack::devices::simulated::SimCard>> {
    use tttrack::devices::simulated::{mark_simulated, SimCard};
    let _ = std::fs::remove_dir_all(root);
    std::fs::create_dir_all(root)?;
    let cards = vec![
        SimCard::wormhole(0, "0000:01:00.0", "n300"),
        SimCard::blackhole(2, "0000:41:00.0", "p150a"),
    ];
    for c in &cards {
        c.install(root)?;
    }
    mark_simulated(root)?;
    Ok(cards)
}

/// Moves the simulated cards' readings with the load the aggregator sees on card 0
/// (events applied per second, memory in use): power, then temperature, follow it; the
/// clock drops when idle; the heartbeat advances, except card 2's, which stalls a
/// minute in to show the warning; PCIe traffic counts up with the events.
fn simulate(
    stop: &AtomicBool,
    dir: &Path,
    root: &Path,
    cards: &[tttrack::devices::simulated::SimCard],
) {
    let tick = Duration::from_millis(500);
    let start = Instant::now();
    let (mut temp, mut last_events, mut beat, mut flits) = (40.0f64, 0u64, 1000u64, 0u64);
    let mut reader: Option<tttrack::counters_page::CountersReader> = None;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(tick);
        // Kept mapped between ticks; opened once the aggregator has made it.
        if reader.as_ref().and_then(|r| r.view().snapshot()).is_none() {
            reader = tttrack::counters_page::CountersReader::open(dir).ok();
        }
        let snap = reader.as_ref().and_then(|r| r.view().snapshot());
        let events = snap.as_ref().map_or(0, |s| s.status.events_applied);
        let rate = events.saturating_sub(last_events) as f64 / tick.as_secs_f64();
        last_events = events;
        let busy = (rate / 2_000.0).min(1.0);
        let power = 22.0 + 95.0 * busy;
        temp += (38.0 + 0.32 * power - temp) * 0.15;
        beat += 1;
        flits = flits.wrapping_add((rate * 8.0) as u64);
        let w = &cards[0];
        let _ = w.set_readings(
            root,
            &Readings {
                temp_c: temp,
                power_w: power,
                current_a: Some(power / 0.85),
                fan_rpm: None,
            },
        );
        let _ = w.write_class(
            root,
            "tt_aiclk",
            if busy > 0.05 { "1000\n" } else { "500\n" },
        );
        let _ = w.write_class(root, "tt_heartbeat", &format!("{beat}\n"));
        let _ = w.write_class(
            root,
            "pcie_perf_counters/mst_posted_wr_data_word_sent0",
            &format!("{}\n", flits as u32),
        );
        let _ = w.write_class(
            root,
            "pcie_perf_counters/mst_rd_data_word_received0",
            &format!("{}\n", (flits / 3) as u32),
        );
        let b = &cards[1];
        let idle_temp = 41.0 + (start.elapsed().as_secs_f64() / 7.0).sin();
        let _ = b.set_readings(
            root,
            &Readings {
                temp_c: idle_temp,
                power_w: 33.0 + idle_temp / 10.0,
                current_a: None,
                fan_rpm: Some(1100 + (idle_temp * 12.0) as u64),
            },
        );
        if start.elapsed() < Duration::from_secs(60) {
            let _ = b.write_class(root, "tt_heartbeat", &format!("{beat}\n"));
        }
    }
}
