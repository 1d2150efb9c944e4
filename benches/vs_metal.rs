//! The anchor a TT-Metal user compares with: what a buffer event costs a program
//! through TT-Metal's own shared-memory tracking (the shipping `libtt_metal.so` of the
//! ttnn 0.81.1 wheel, fetched by scripts/fetch-ttnn.sh into target/ttnn-wheel) against
//! what it costs through `libtttrack.so` drained by the real `tt-aggregator`, in the same
//! program and the same run (`benches/c/vs_metal.cpp`): alloc/free pairs of 4 KiB DRAM
//! buffers in bursts of 1024 events 2 ms apart, in a flood, from 4 threads of one
//! process, and from 2 processes x 2 threads on one chip. Prints medians and ratios.
//!
//! Run: `cargo bench --bench vs_metal` (`TTTRACK_VS_METAL_RUNS`: runs of each shape,
//! default 3; `TTTRACK_BENCH_AGG_ARGS`: more flags for the aggregator).

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

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

fn start_aggregator(dir: &Path) -> Child {
    let c = Command::new(env!("CARGO_BIN_EXE_tt-aggregator"))
        .arg("--dir")
        .arg(dir)
        .args(["--quiet", "--no-compat-socket", "--no-metal-shm"])
        // TTTRACK_BENCH_AGG_ARGS: more of the aggregator's flags (to compare a setting).
        .args(
            std::env::var("TTTRACK_BENCH_AGG_ARGS")
                .unwrap_or_default()
                .split_whitespace(),
        )
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

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// The value after `name` in `text`.
fn field(text: &str, name: &str) -> f64 {
    let mut w = text.split_whitespace();
    w.find(|x| *x == name);
    w.next().and_then(|v| v.parse().ok()).unwrap_or(f64::NAN)
}

struct Bench {
    exe: PathBuf,
    dir: PathBuf,
    asic: u64,
}

impl Bench {
    fn cmd(&self, args: &[String]) -> Command {
        let mut c = Command::new(&self.exe);
        c.args(args)
            .env("TT_ALLOC_TRACKING_ENABLED", "1")
            .env("TTTRACK_DIR", &self.dir);
        c
    }

    fn run(&self, args: &[String]) -> String {
        let out = self.cmd(args).output().expect("vs_metal");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(field(&text, "dropped"), 0.0, "events dropped: {text}");
        text
    }

    /// `procs` processes of `threads` threads each through `which`: wall ns per event.
    fn threads(&self, procs: usize, threads: usize, events: u64, which: &str) -> f64 {
        let a = self.asic.to_string();
        let args: Vec<String> = vec![
            "threads".into(),
            threads.to_string(),
            events.to_string(),
            a,
            which.into(),
        ];
        let t = Instant::now();
        let kids: Vec<Child> = (0..procs)
            .map(|_| {
                self.cmd(&args)
                    .stdout(std::process::Stdio::piped())
                    .spawn()
                    .expect("vs_metal")
            })
            .collect();
        for k in kids {
            let out = k.wait_with_output().unwrap();
            assert!(out.status.success());
            let text = String::from_utf8_lossy(&out.stdout);
            assert_eq!(field(&text, "dropped"), 0.0, "events dropped: {text}");
        }
        t.elapsed().as_nanos() as f64 / (procs * threads) as f64 / events as f64
    }
}

fn main() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(repo.join("scripts/fetch-ttnn.sh"))
        .output()
        .expect("scripts/fetch-ttnn.sh");
    assert!(
        out.status.success(),
        "fetching the ttnn wheel: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metal = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    let lib = lib_path();
    let lib_dir = lib.parent().unwrap();
    let pid = std::process::id();
    let exe = lib_dir.join(format!("vs_metal-{pid}"));
    let built = Command::new("g++")
        .args(["-O2", "-std=c++17", "-pthread", "-o"])
        .arg(&exe)
        .arg(repo.join("benches/c/vs_metal.cpp"))
        .arg("-I")
        .arg(repo.join("cabi"))
        .arg("-I")
        .arg(repo.join("tests/cpp"))
        .arg("-L")
        .arg(lib_dir)
        .arg("-ltttrack")
        .arg("-L")
        .arg(&metal)
        .arg("-ltt_metal")
        .arg("-Wl,--disable-new-dtags")
        .arg(format!(
            "-Wl,-rpath,{}:{}",
            lib_dir.display(),
            metal.display()
        ))
        .status()
        .expect("g++");
    assert!(built.success(), "compiling benches/c/vs_metal.cpp failed");
    let dir = PathBuf::from(format!("/dev/shm/tttrack-vs-metal-{pid}"));
    let _ = std::fs::remove_dir_all(&dir);
    let asic = 0x7E57_BE00_0000_0000 | pid as u64;
    let region = PathBuf::from(format!("/dev/shm/tt_device_{asic}_memory"));
    let mut agg = start_aggregator(&dir);
    let b = Bench {
        exe: exe.clone(),
        dir: dir.clone(),
        asic,
    };
    let runs: usize = std::env::var("TTTRACK_VS_METAL_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let a = asic.to_string();
    let (mut bm, mut bt, mut fm, mut ft) = (vec![], vec![], vec![], vec![]);
    let (mut t4m, mut t4t, mut p2m, mut p2t) = (vec![], vec![], vec![], vec![]);
    for _ in 0..runs {
        let s = b.run(&["bursts".into(), "500".into(), a.clone()]);
        bm.push(field(&s, "metal"));
        bt.push(field(&s, "tttrack"));
        let s = b.run(&["flood".into(), "4000000".into(), a.clone()]);
        fm.push(field(&s, "metal"));
        ft.push(field(&s, "tttrack"));
        t4m.push(b.threads(1, 4, 1_000_000, "metal"));
        t4t.push(b.threads(1, 4, 1_000_000, "tttrack"));
        p2m.push(b.threads(2, 2, 1_000_000, "metal"));
        p2t.push(b.threads(2, 2, 1_000_000, "tttrack"));
    }
    println!("ns per buffer event, medians of {runs} runs (TT-Metal's own tracking | tttrack into the real aggregator | ratio):");
    for (name, m, t) in [
        ("bursts of 1024, 2 ms apart", bm, bt),
        ("flood, one thread", fm, ft),
        ("4 threads of one process", t4m, t4t),
        ("2 processes x 2 threads, one chip", p2m, p2t),
    ] {
        let (m, t) = (median(m), median(t));
        println!("  {name:<36} {m:>8.2} | {t:>8.2} | {:.2}x", t / m);
    }
    mock_mode(repo, &metal, &lib, &dir, runs);
    let _ = agg.kill();
    let _ = agg.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(&exe);
    let _ = std::fs::remove_file(&region);
}

/// A buffer made and dropped by the real allocator in TT-Metal's mock mode
/// (`tests/cpp/metal_mock.cpp`, `loop`): with TT-Metal's own tracking only, with our
/// graph-hook processor doing nothing (`TTTRACK_METAL_HOOK=bare`: the hook's mechanism),
/// and with it reporting every buffer into the real aggregator. ns per buffer event.
fn mock_mode(repo: &Path, metal: &Path, lib: &Path, dir: &Path, runs: usize) {
    let pid = std::process::id();
    let base = PathBuf::from(format!("/dev/shm/tttrack-vs-metal-mock-{pid}"));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).unwrap();
    let chip = 0x7E57_BF00_0000_0000u64 | pid as u64;
    let root = base.join("root");
    let ok = Command::new(repo.join("scripts/metal-mock-root.sh"))
        .arg(&root)
        .arg(chip.to_string())
        .status()
        .expect("scripts/metal-mock-root.sh")
        .success();
    assert!(ok);
    let exe = base.join("metal_mock");
    let ok = Command::new("g++")
        .args(["-O2", "-std=c++20", "-o"])
        .arg(&exe)
        .arg(repo.join("tests/cpp/metal_mock.cpp"))
        .arg("-L")
        .arg(metal)
        .arg("-ltt_metal")
        .arg(format!("-Wl,-rpath,{}", metal.display()))
        .status()
        .expect("g++")
        .success();
    assert!(ok, "building metal_mock");
    let once = |mode: &str| -> f64 {
        use std::io::Write;
        let mut c = Command::new(&exe);
        c.arg("wormhole")
            .current_dir(&base)
            .env("TT_METAL_RUNTIME_ROOT", &root)
            .env("OMPI_MCA_btl", "self")
            .env("TTTRACK_DIR", dir)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null());
        if mode != "metal" {
            c.env("LD_PRELOAD", lib)
                .env("TT_ALLOC_TRACKING_ENABLED", "1");
        }
        if mode == "bare" {
            c.env("TTTRACK_METAL_HOOK", "bare");
        }
        let mut child = c.spawn().expect("metal_mock");
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "loop 200000 4096 4096 0").unwrap();
        writeln!(stdin, "exit").unwrap();
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .find_map(|l| l.strip_prefix("ns ").and_then(|v| v.trim().parse().ok()))
            .unwrap_or(f64::NAN)
    };
    let (mut m, mut b, mut t) = (vec![], vec![], vec![]);
    for _ in 0..runs {
        m.push(once("metal"));
        b.push(once("bare"));
        t.push(once("tttrack"));
    }
    let (m, b, t) = (median(m), median(b), median(t));
    println!("a 4 KiB DRAM buffer made and dropped by the real allocator in mock mode, ns per buffer event, medians of {runs} runs:");
    println!("  TT-Metal alone (its own tracking):          {m:>8.2}");
    println!(
        "  + our processor doing nothing (bare hook):  {b:>8.2}  (+{:.2})",
        b - m
    );
    println!("  + our processor reporting every buffer:     {t:>8.2}  (+{:.2}: {:.2} ns over the bare hook)", t - m, t - b);
    let _ = std::fs::remove_dir_all(&base);
    let _ = std::fs::remove_file(format!("/dev/shm/tt_device_{chip}_memory"));
}
