//! End-to-end harness: the real tt-aggregator, producer processes reporting through
//! libtttrack.so (`tt-track load`), and the counters page. Prints its figures:
//!
//! 1. throughput: 2 processes x 4 threads of alloc/free pairs, until the page shows
//!    every event applied (target: at least 5 million events per second, zero lost);
//! 2. event-to-page visibility: time from `tttrack_alloc` returning to the page
//!    showing it, p50/p99 over 500 samples (target: p99 at most 10 ms);
//! 3. aggregator idle CPU with three idle tracked processes, over
//!    `TTTRACK_BENCH_IDLE_S` seconds (default 60; target: at most 0.5% of a core);
//! 4. aggregator memory per live buffer: RSS growth with one million live buffers
//!    (target: at most 64 bytes);
//! 5. discovery: a new process's segment appearing to the process shown on the page
//!    (target: within 100 ms);
//! 6. `tt-smi -w -r 500` CPU in a real terminal (tmux) (target: at most 1% of a core);
//! 7. recording: the same flood into the same aggregator with and without a
//!    `tt-track record` streaming it, runs alternated, medians; and the recording's
//!    bytes per event;
//! 8. bursts: a C program linked with libtttrack.so, bursts of 1024 events 2 ms apart
//!    into the real aggregator, taking turns with bursts into a minimal C ring of the
//!    same records in the same program, behind a shared library's call and inlined
//!    (`benches/c/bursts.c`); medians, their ratios,
//!    and every event applied (target: within 1.5x of the ring behind the library's
//!    call, which costs the program the same call as ours).
//!
//! Run: `cargo bench --bench end_to_end` (builds in release mode).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tttrack::counters_page::{CountersReader, CAT_DRAM};

fn tt_track() -> &'static str {
    env!("CARGO_BIN_EXE_tt-track")
}

fn start_aggregator(dir: &Path) -> Child {
    let c = Command::new(env!("CARGO_BIN_EXE_tt-aggregator"))
        .arg("--dir")
        .arg(dir)
        .arg("--quiet")
        .arg("--no-compat-socket")
        .spawn()
        .expect("tt-aggregator");
    let t = Instant::now();
    while !dir.join("counters").exists() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "aggregator did not start"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    c
}

fn load(dir: &Path, args: &[&str]) -> Child {
    Command::new(tt_track())
        .arg("load")
        .args(args)
        .env("TT_ALLOC_TRACKING_ENABLED", "1")
        .env("TTTRACK_DIR", dir)
        .env("TTTRACK_LIB", lib_path())
        .stdout(Stdio::piped())
        .spawn()
        .expect("tt-track load")
}

fn lib_path() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    let p = deps.join("libtttrack.so");
    if p.exists() {
        p
    } else {
        deps.parent().unwrap().join("libtttrack.so")
    }
}

fn page(dir: &Path) -> CountersReader {
    CountersReader::open(dir).expect("counters page")
}

fn proc_stat_cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = s.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 (11 and 12 after the state field).
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

fn fresh_dir(tag: &str) -> PathBuf {
    let d = PathBuf::from(format!("/dev/shm/tttrack-e2e-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Bursts from a C program through `libtttrack.so` against a minimal C ring in the
/// same program, behind a shared library's call and inlined, bursts of the three
/// taking turns (`benches/c/bursts.c`).
fn bursts() {
    let lib = lib_path();
    let lib_dir = lib.parent().unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let c_dir = repo.join("benches/c");
    // Built under the target directory (ours), not in a directory others can write.
    let pid = std::process::id();
    let exe = lib_dir.join(format!("bursts-{pid}"));
    let ring_lib = format!("libminimal-ring-{pid}.so");
    let built = Command::new("cc")
        .args(["-O2", "-Wall", "-Werror", "-fPIC", "-shared", "-o"])
        .arg(lib_dir.join(&ring_lib))
        .arg(c_dir.join("minimal_ring.c"))
        .status()
        .expect("run cc");
    assert!(built.success(), "compiling benches/c/minimal_ring.c failed");
    let built = Command::new("cc")
        .args(["-O2", "-Wall", "-Werror", "-pthread", "-o"])
        .arg(&exe)
        .arg(c_dir.join("bursts.c"))
        .arg("-I")
        .arg(repo.join("cabi"))
        .arg("-L")
        .arg(lib_dir)
        .arg("-ltttrack")
        .arg(format!("-l:{ring_lib}"))
        .arg("-Wl,--disable-new-dtags")
        .arg(format!("-Wl,-rpath,{}", lib_dir.display()))
        .status()
        .expect("run cc");
    assert!(built.success(), "compiling benches/c/bursts.c failed");
    let dir = fresh_dir("bursts");
    let mut agg = start_aggregator(&dir);
    let out = Command::new(&exe)
        .arg("2000")
        .env("TT_ALLOC_TRACKING_ENABLED", "1")
        .env("TTTRACK_DIR", &dir)
        .output()
        .expect("bursts program");
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| -> f64 {
        let mut w = text.split_whitespace();
        w.find(|x| *x == name);
        w.next().and_then(|v| v.parse().ok()).unwrap_or(f64::NAN)
    };
    let (ours, library, inline) = (field("ours"), field("library"), field("inline"));
    let events = field("events") as u64;
    let p = page(&dir);
    let t = Instant::now();
    let (applied, lost) = loop {
        let s = p.view().snapshot().unwrap();
        if s.status.events_applied + s.status.events_lost >= events
            || t.elapsed() > Duration::from_secs(30)
        {
            break (s.status.events_applied, s.status.events_lost);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    println!(
        "bursts: a C program, bursts of 1024 events 2 ms apart, 2000 rounds (medians): \
         through libtttrack.so {ours:.2} ns/event; a minimal C ring behind a shared \
         library's call {library:.2} ({:.2}x); the same ring inlined, no call, {inline:.2} \
         ({:.2}x); {applied} of {events} events applied, {lost} lost",
        ours / library,
        ours / inline
    );
    let _ = agg.kill();
    let _ = agg.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(&exe);
    let _ = std::fs::remove_file(lib_dir.join(&ring_lib));
}

fn throughput() {
    let dir = fresh_dir("tput");
    let mut agg = start_aggregator(&dir);
    let pairs = 2_500_000u64;
    let threads = 4u64;
    let total = 2 * threads * 2 * pairs;
    let t = Instant::now();
    let kids: Vec<Child> = (0..2)
        .map(|_| {
            load(
                &dir,
                &[
                    "--threads",
                    &threads.to_string(),
                    "--pairs",
                    &pairs.to_string(),
                    "--hold-ms",
                    "30000",
                ],
            )
        })
        .collect();
    let p = page(&dir);
    let mut lost = 0;
    loop {
        let s = p.view().snapshot().unwrap();
        lost = s.status.events_lost.max(lost);
        if s.status.events_applied >= total {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(300),
            "stuck at {} of {total}",
            s.status.events_applied
        );
        std::thread::sleep(Duration::from_micros(500));
    }
    let el = t.elapsed().as_secs_f64();
    let lanes = total as f64 / el;
    println!(
        "throughput: {total} events from 2 processes x {threads} threads applied in {el:.3} s = {:.2} M events/s end to end, {lost} lost",
        lanes / 1e6
    );
    for mut k in kids {
        let _ = k.kill();
        let _ = k.wait();
    }
    let _ = agg.kill();
    let _ = agg.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let socket = socket_throughput(2 * threads, pairs / 10);
    println!(
        "throughput baseline: the same events over the original 144-byte socket protocol into the same aggregator, {} connections: {:.2} M events/s; lanes {:.1}x faster",
        2 * threads,
        socket / 1e6,
        lanes / socket
    );
}

/// Events per second applied when `conns` connections each send `pairs` alloc/free
/// pairs as 144-byte messages of the original protocol to the real aggregator's
/// compatibility socket, until its page shows them all applied.
fn socket_throughput(conns: u64, pairs: u64) -> f64 {
    use std::io::Write;
    use tttrack::compat::{AllocMessage, ALLOC, FREE};
    let dir = fresh_dir("tput-socket");
    let sock = dir.join("compat.sock");
    let mut agg = Command::new(env!("CARGO_BIN_EXE_tt-aggregator"))
        .arg("--dir")
        .arg(&dir)
        .arg("--quiet")
        .arg("--compat-socket")
        .arg(&sock)
        .spawn()
        .expect("tt-aggregator");
    let t = Instant::now();
    while !sock.exists() || !dir.join("counters").exists() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "aggregator did not start"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let total = conns * pairs * 2;
    let t = Instant::now();
    let senders: Vec<_> = (0..conns)
        .map(|c| {
            let sock = sock.clone();
            std::thread::spawn(move || {
                let mut s = std::io::BufWriter::with_capacity(
                    144,
                    std::os::unix::net::UnixStream::connect(&sock).expect("connect"),
                );
                for i in 0..pairs {
                    let id = (c << 40) | (0x1000 + i);
                    for kind in [ALLOC, FREE] {
                        let m = AllocMessage {
                            kind,
                            device_id: 0,
                            size: 4096,
                            buffer_id: id,
                            ..Default::default()
                        };
                        s.write_all(&m.encode()).expect("send");
                    }
                }
                s.flush().expect("send");
                // Kept open until the events are applied (a closed client is released).
                s
            })
        })
        .collect();
    let conns_kept: Vec<_> = senders.into_iter().map(|h| h.join().unwrap()).collect();
    let p = page(&dir);
    loop {
        let s = p.view().snapshot().unwrap();
        if s.status.events_applied >= total {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(300),
            "socket baseline stuck"
        );
        std::thread::sleep(Duration::from_micros(500));
    }
    let rate = total as f64 / t.elapsed().as_secs_f64();
    drop(conns_kept);
    let _ = agg.kill();
    let _ = agg.wait();
    let _ = std::fs::remove_dir_all(&dir);
    rate
}

fn visibility() {
    let dir = fresh_dir("vis");
    let mut agg = start_aggregator(&dir);
    std::env::set_var("TT_ALLOC_TRACKING_ENABLED", "1");
    std::env::set_var("TTTRACK_DIR", &dir);
    let p = page(&dir);
    let mut lat = Vec::new();
    let mut x = 12345u64;
    let mut expected = 0u64;
    for i in 0..500u64 {
        let size = 4096 + i;
        let t = Instant::now();
        tttrack::producer::ffi::tttrack_alloc(0, size, 0, 0x1000 + i);
        expected += size;
        loop {
            let s = p.view().snapshot().unwrap();
            let used = s
                .devices
                .iter()
                .find(|d| d.id == 0)
                .map(|d| d.figures[CAT_DRAM].used)
                .unwrap_or(0);
            if used == expected {
                break;
            }
            std::hint::spin_loop();
        }
        lat.push(t.elapsed());
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        std::thread::sleep(Duration::from_micros(x % 20_000));
    }
    lat.sort();
    println!(
        "visibility: event to counters page p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (500 samples)",
        lat[250].as_secs_f64() * 1e3,
        lat[495].as_secs_f64() * 1e3,
        lat[499].as_secs_f64() * 1e3
    );
    let _ = agg.kill();
    let _ = agg.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

fn idle_cpu() {
    let secs: u64 = std::env::var("TTTRACK_BENCH_IDLE_S")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let dir = fresh_dir("idle");
    let mut agg = start_aggregator(&dir);
    let kids: Vec<Child> = (0..3)
        .map(|_| {
            load(
                &dir,
                &[
                    "--threads",
                    "1",
                    "--pairs",
                    "0",
                    "--keep",
                    "10",
                    "--hold-ms",
                    &((secs + 10) * 1000).to_string(),
                ],
            )
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    // SAFETY: sysconf reads a constant and touches no memory of ours.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let c0 = proc_stat_cpu_ticks(agg.id());
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let c1 = proc_stat_cpu_ticks(agg.id());
    let cpu = (c1 - c0) as f64 / tick / t.elapsed().as_secs_f64() * 100.0;
    println!(
        "idle: aggregator with 3 idle tracked processes used {cpu:.3}% of a core over {secs} s"
    );
    for mut k in kids {
        let _ = k.kill();
        let _ = k.wait();
    }
    let _ = agg.kill();
    let _ = agg.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

fn memory_per_buffer() {
    let dir = fresh_dir("mem");
    let mut agg = start_aggregator(&dir);
    std::thread::sleep(Duration::from_millis(500));
    let before = rss_kib(agg.id());
    let n = 1_000_000u64;
    let mut k = load(
        &dir,
        &[
            "--threads",
            "1",
            "--pairs",
            "0",
            "--keep",
            &n.to_string(),
            "--hold-ms",
            "600000",
        ],
    );
    let p = page(&dir);
    let t = Instant::now();
    loop {
        let s = p.view().snapshot().unwrap();
        if s.devices
            .iter()
            .any(|d| d.figures[tttrack::counters_page::CAT_L1].count == n)
        {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(120));
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let after = rss_kib(agg.id());
    println!(
        "memory: aggregator RSS {} KiB -> {} KiB with {n} live buffers = {:.1} bytes per live buffer",
        before,
        after,
        (after.saturating_sub(before)) as f64 * 1024.0 / n as f64
    );
    let _ = k.kill();
    let _ = k.wait();
    let _ = agg.kill();
    let _ = agg.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Time from a new process's first event to the page showing it: includes the
/// aggregator discovering the new segment (inotify) and attaching it.
fn discovery() {
    let dir = fresh_dir("disc");
    let mut agg = start_aggregator(&dir);
    let p = page(&dir);
    let mut lat = Vec::new();
    for i in 0..20u64 {
        let mut k = load(
            &dir,
            &[
                "--threads",
                "1",
                "--pairs",
                "0",
                "--keep",
                "1",
                "--hold-ms",
                "2000",
            ],
        );
        // The first event happens right after the library is loaded; wait for the
        // segment file to exist, then time until the page lists the process.
        let t0 = Instant::now();
        let pid = k.id();
        let seg_seen = loop {
            let found = std::fs::read_dir(&dir)
                .map(|rd| {
                    rd.filter_map(|e| e.ok()).any(|e| {
                        e.file_name()
                            .to_string_lossy()
                            .starts_with(&format!("seg.{pid}."))
                    })
                })
                .unwrap_or(false);
            if found {
                break Instant::now();
            }
            assert!(t0.elapsed() < Duration::from_secs(10));
            std::hint::spin_loop();
        };
        loop {
            let s = p.view().snapshot().unwrap();
            if s.processes
                .iter()
                .any(|r| r.pid == pid && r.events_applied >= 1)
            {
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(10));
            std::hint::spin_loop();
        }
        lat.push(seg_seen.elapsed());
        let _ = k.kill();
        let _ = k.wait();
        let _ = i;
    }
    lat.sort();
    println!(
        "discovery: new segment to its process on the page: p50 {:.2} ms, max {:.2} ms (20 processes)",
        lat[10].as_secs_f64() * 1e3,
        lat[19].as_secs_f64() * 1e3
    );
    let _ = agg.kill();
    let _ = agg.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Time from SIGKILL of a producer in the middle of a burst (4 threads writing as fast
/// as they can) to its memory leaving the page: the "released within 1 second" target.
fn release_after_kill() {
    let dir = fresh_dir("rel");
    let mut agg = start_aggregator(&dir);
    let p = page(&dir);
    let mut lat = Vec::new();
    for _ in 0..10 {
        let mut k = load(
            &dir,
            &["--threads", "4", "--pairs", "50000000", "--keep", "0"],
        );
        let pid = k.id();
        let t0 = Instant::now();
        loop {
            let s = p.view().snapshot().unwrap();
            if s.processes
                .iter()
                .any(|r| r.pid == pid && r.events_applied > 1_000_000)
            {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "burst never started"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        let t = Instant::now();
        let _ = k.kill();
        let _ = k.wait();
        loop {
            let s = p.view().snapshot().unwrap();
            if s.processes.iter().all(|r| r.pid != pid) {
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(30), "never released");
            std::thread::sleep(Duration::from_micros(200));
        }
        lat.push(t.elapsed());
    }
    lat.sort();
    println!(
        "release: SIGKILL mid-burst (4 threads) to memory off the page: p50 {:.1} ms, max {:.1} ms (10 kills)",
        lat[5].as_secs_f64() * 1e3,
        lat[9].as_secs_f64() * 1e3
    );
    let _ = agg.kill();
    let _ = agg.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

/// CPU used by `tt-smi -w` (500 ms refresh) in a real terminal (tmux) watching the
/// demo workload.
fn smi_watch_cpu() {
    if Command::new("tmux").arg("-V").output().is_err() {
        println!("smi: tmux not installed, tt-smi -w cost not measured");
        return;
    }
    let secs: u64 = std::env::var("TTTRACK_BENCH_IDLE_S")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60)
        .min(60);
    let dir = fresh_dir("smi");
    let mut agg = start_aggregator(&dir);
    let kids: Vec<Child> = (0..2)
        .map(|i| {
            Command::new(tt_track())
                .args(["workload", "--seed", &(i + 1).to_string()])
                .env("TT_ALLOC_TRACKING_ENABLED", "1")
                .env("TTTRACK_DIR", &dir)
                .env("TTTRACK_LIB", lib_path())
                .spawn()
                .unwrap()
        })
        .collect();
    let session = format!("bench{}", std::process::id());
    let cmd = format!(
        "{} -w -r 500 --dir {}",
        env!("CARGO_BIN_EXE_tt-smi"),
        dir.display()
    );
    let _ = Command::new("tmux")
        .args([
            "new-session",
            "-d",
            "-s",
            &session,
            "-x",
            "140",
            "-y",
            "45",
            &cmd,
        ])
        .status();
    std::thread::sleep(Duration::from_secs(2));
    let out = Command::new("tmux")
        .args(["list-panes", "-t", &session, "-F", "#{pane_pid}"])
        .output()
        .unwrap();
    let pid: u32 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    // SAFETY: sysconf reads a constant and touches no memory of ours.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let c0 = proc_stat_cpu_ticks(pid);
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let c1 = proc_stat_cpu_ticks(pid);
    let cpu = (c1 - c0) as f64 / tick / t.elapsed().as_secs_f64() * 100.0;
    println!("smi: tt-smi -w -r 500 (main view, 2 workload processes) used {cpu:.2}% of a core over {secs} s");
    let _ = Command::new("tmux")
        .args(["kill-session", "-t", &session])
        .status();
    for mut k in kids {
        let _ = k.kill();
        let _ = k.wait();
    }
    let _ = agg.kill();
    let _ = agg.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

/// One flood of `pairs` alloc/free pairs on 4 threads into the aggregator of `dir`,
/// recorded (to `file`) or not: events per second until the page shows them all.
fn flood_once(dir: &Path, pairs: u64, file: Option<&Path>) -> f64 {
    let before = page(dir).view().snapshot().unwrap().status.events_applied;
    let total = 4 * 2 * pairs;
    let args = ["load", "--threads", "4", "--pairs", &pairs.to_string()];
    let mut cmd = Command::new(tt_track());
    match file {
        Some(f) => {
            cmd.arg("record")
                .arg("-o")
                .arg(f)
                .arg("--")
                .arg(tt_track())
                .args(args);
        }
        None => {
            cmd.args(args);
        }
    }
    let t = Instant::now();
    let mut child = cmd
        .env("TT_ALLOC_TRACKING_ENABLED", "1")
        .env("TTTRACK_DIR", dir)
        .env("TTTRACK_LIB", lib_path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("tt-track");
    let p = page(dir);
    loop {
        let s = p.view().snapshot().unwrap();
        if s.status.events_applied >= before + total {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(300), "stuck");
        std::thread::sleep(Duration::from_micros(500));
    }
    let rate = total as f64 / t.elapsed().as_secs_f64();
    let _ = child.wait();
    rate
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn recording() {
    let dir = fresh_dir("rec");
    let mut agg = start_aggregator(&dir);
    let pairs = 1_000_000u64;
    let (mut plain, mut recorded, mut per_event) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..5 {
        plain.push(flood_once(&dir, pairs, None));
        let f = dir.with_extension(format!("{i}.ttrec"));
        recorded.push(flood_once(&dir, pairs, Some(&f)));
        let rec = tttrack::recording::Recording::read(&f).expect("the recording");
        per_event.push(rec.file_bytes as f64 / rec.events().max(1) as f64);
        let _ = std::fs::remove_file(&f);
    }
    let (p, r) = (median(plain), median(recorded));
    println!(
        "recording: {} events a run (4 threads), 5 runs each, medians: not recorded {:.2} M events/s, recorded {:.2} M events/s ({:.2}x); {:.2} bytes per event in the file",
        8 * pairs,
        p / 1e6,
        r / 1e6,
        r / p,
        median(per_event)
    );
    let _ = agg.kill();
    let _ = agg.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` would pass nothing: run only
    // when benchmarking.
    if !std::env::args().any(|a| a == "--bench") {
        println!("end_to_end: run with `cargo bench --bench end_to_end`");
        return;
    }
    // TTTRACK_BENCH_ONLY=name[,name...] runs only those measurements.
    let only = std::env::var("TTTRACK_BENCH_ONLY").unwrap_or_default();
    let parts: [(&str, fn()); 9] = [
        ("throughput", throughput),
        ("bursts", bursts),
        ("recording", recording),
        ("visibility", visibility),
        ("discovery", discovery),
        ("release", release_after_kill),
        ("smi", smi_watch_cpu),
        ("memory", memory_per_buffer),
        ("idle", idle_cpu),
    ];
    for (name, f) in parts {
        if only.is_empty() || only.split(',').any(|o| o == name) {
            f();
        }
    }
}
