//! Stock TT-Metal, no rebuild: the aggregator and tt-smi read TT-Metal's own regions
//! (`tt_device_<N>_memory`). The regions are written by the shipping `libtt_metal.so`
//! (the ttnn 0.81.1 wheel from PyPI, fetched once into target/ttnn-wheel by
//! scripts/fetch-ttnn.sh) through a C++ program of ours (tests/cpp/metal_stats.cpp)
//! that declares the few members it calls, checked against `nm -D` here. Older and
//! newer layouts are written byte by byte at the offsets of the facts file.
//!
//! The shipping library writes into /dev/shm itself (shm_open); each test uses chip
//! ids of its own and removes its regions. Tests of hostile input run the attacker as
//! uid 65534 against a root aggregator (CI runs as root).

mod common;
use common::mock::*;
use common::*;
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;
const NOBODY: u32 = 65534;

/// Builds tests/cpp/metal_stats.cpp against the shipping library (and, `lanes`, against
/// libtttrack.so too), after checking that every member it declares is exported.
fn metal_stats(lanes: bool) -> PathBuf {
    static BUILT: OnceLock<std::sync::Mutex<Vec<(bool, PathBuf)>>> = OnceLock::new();
    let m = BUILT.get_or_init(Default::default);
    let mut m = m.lock().unwrap();
    if let Some((_, p)) = m.iter().find(|(l, _)| *l == lanes) {
        return p.clone();
    }
    let lib = ttnn_lib();
    assert_exported(
        &[
            "_ZN2tt8tt_metal25SharedMemoryStatsProviderC1Emibb",
            "_ZN2tt8tt_metal25SharedMemoryStatsProviderD1Ev",
            "_ZN2tt8tt_metal25SharedMemoryStatsProvider17record_allocationEimNS0_13ShmBufferTypeEj",
            "_ZN2tt8tt_metal25SharedMemoryStatsProvider19record_deallocationEimNS0_13ShmBufferTypeEj",
        ],
        "tests/cpp/tt_metal_stats.hpp",
    );
    let out = target_dir().join(format!("cpp-test-programs-{}", std::process::id()));
    std::fs::create_dir_all(&out).unwrap();
    let bin = out.join(if lanes {
        "metal_stats_lanes"
    } else {
        "metal_stats"
    });
    let mut cc = Command::new("g++");
    cc.args(["-O2", "-std=c++17", "-o"])
        .arg(&bin)
        .arg(repo_dir().join("tests/cpp/metal_stats.cpp"))
        .arg("-L")
        .arg(&lib)
        .arg("-ltt_metal")
        .arg(format!("-Wl,-rpath,{}", lib.display()));
    if lanes {
        cc.arg("-DWITH_LANES")
            .arg("-I")
            .arg(repo_dir().join("cabi"))
            .arg("-L")
            .arg(lib_dir())
            .arg("-ltttrack")
            .arg(format!("-Wl,-rpath,{}", lib_dir().display()));
    }
    assert!(cc.status().expect("g++").success(), "building metal_stats");
    m.push((lanes, bin.clone()));
    bin
}

/// A process of the shipping TT-Metal's tracking, driven line by line.
struct MetalProc {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl MetalProc {
    fn start(lanes: Option<&Path>) -> Self {
        let mut c = Command::new(metal_stats(lanes.is_some()));
        c.stdin(Stdio::piped()).stdout(Stdio::piped());
        if let Some(dir) = lanes {
            c.env("TT_ALLOC_TRACKING_ENABLED", "1")
                .env("TTTRACK_DIR", dir);
        }
        let mut child = c.spawn().expect("metal_stats");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        MetalProc {
            child,
            stdin,
            stdout,
        }
    }
    fn cmd(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").unwrap();
        let mut answer = String::new();
        self.stdout.read_line(&mut answer).unwrap();
        assert_eq!(answer.trim(), "ok", "{line}: {answer}");
    }
    fn pid(&self) -> u32 {
        self.child.id()
    }
    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for MetalProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Chip ids no other test (or earlier run) uses, with their region files removed at
/// the end.
struct Chips(Vec<u64>);
impl Chips {
    fn new(n: usize) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        Chips(
            (0..n)
                .map(|_| {
                    0x7E57_0000_0000_0000
                        | (std::process::id() as u64) << 16
                        | N.fetch_add(1, Ordering::Relaxed)
                })
                .collect(),
        )
    }
}
impl Drop for Chips {
    fn drop(&mut self) {
        for c in &self.0 {
            let _ = std::fs::remove_file(format!("/dev/shm/tt_device_{c}_memory"));
        }
    }
}

fn hex(chip: u64) -> String {
    format!("{chip:016X}")
}

/// The row of the chip whose `asic_id` is `chip`.
fn row(doc: &Value, chip: u64) -> Option<u64> {
    doc["devices"]
        .as_array()?
        .iter()
        .find(|d| d["asic_id"] == hex(chip))
        .and_then(|d| d["id"].as_u64())
}

fn device(doc: &Value, chip: u64) -> &Value {
    let r = row(doc, chip).unwrap_or_else(|| panic!("no row for chip {chip:X}: {doc:#}"));
    doc["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == r)
        .unwrap()
}

/// The live process row of `pid` (not a left-behind one).
fn live_proc(doc: &Value, pid: u32) -> Option<&Value> {
    doc["processes"]
        .as_array()?
        .iter()
        .find(|p| p["pid"] == pid && p["left_behind"] == false)
}

/// What process `pid` holds of `cat` (e.g. "dram_bytes") on chip `chip`.
fn held(doc: &Value, pid: u32, chip: u64, cat: &str) -> Option<u64> {
    let r = row(doc, chip)?;
    live_proc(doc, pid)?["devices"]
        .as_array()?
        .iter()
        .find(|d| d["id"] == r)?[cat]
        .as_u64()
}

fn json_of(dir: &Path) -> Value {
    smi_json(&["--dir", dir.to_str().unwrap()])
}

fn wait_json(what: &str, dir: &Path, mut f: impl FnMut(&Value) -> bool) -> Value {
    let t = Instant::now();
    loop {
        let d = json_of(dir);
        if f(&d) {
            return d;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}: {d:#}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The shipping library, two processes on two chips: exact per process and per chip,
/// in every view; one SIGKILLed: out of the live figures within a second, its bytes
/// shown as left behind; the other exits cleanly: gone.
#[test]
fn stock_tt_metal_two_processes_two_chips() {
    let dir = TempDir::new("metal-two");
    let chips = Chips::new(2);
    let (a, b) = (chips.0[0], chips.0[1]);
    let agg = AggProc::start(
        dir.path(),
        &[
            "--metal-shm-dir",
            "/dev/shm",
            "--metrics-addr",
            "127.0.0.1:0",
        ],
    );
    let mut p1 = MetalProc::start(None);
    let mut p2 = MetalProc::start(None);
    for p in [&mut p1, &mut p2] {
        p.cmd(&format!("open {a} 0"));
        p.cmd(&format!("open {b} 1"));
    }
    p1.cmd(&format!("alloc 0 {} 0", MIB));
    p1.cmd("alloc 0 65536 1");
    p1.cmd(&format!("alloc 1 {} 0", 3 * MIB));
    p1.cmd("alloc 1 4096 4");
    p2.cmd(&format!("alloc 0 {} 0", 2 * MIB));
    p2.cmd("alloc 1 5000 3");
    // A free repeats the size (TT-Metal keeps no buffer): 1 MiB of 2 freed.
    p2.cmd(&format!("alloc 0 {} 0", MIB));
    p2.cmd(&format!("free 0 {} 0", MIB));
    let (pid1, pid2) = (p1.pid(), p2.pid());
    let doc = wait_json("both processes from the regions", dir.path(), |d| {
        held(d, pid1, b, "trace_bytes") == Some(4096)
            && held(d, pid2, b, "l1_small_bytes") == Some(5000)
            && held(d, pid2, a, "dram_bytes") == Some(2 * MIB)
    });
    for pid in [pid1, pid2] {
        let p = live_proc(&doc, pid).unwrap();
        assert_eq!(p["source"], "tt-metal");
        assert_eq!(p["exact"], false, "counters only: {p:#}");
        assert!(p["exact_note"].as_str().unwrap().contains("no buffers"));
        assert_eq!(p["name"], "metal_stats");
    }
    assert_eq!(held(&doc, pid1, a, "dram_bytes"), Some(MIB));
    assert_eq!(held(&doc, pid1, a, "l1_bytes"), Some(65536));
    assert_eq!(held(&doc, pid1, b, "dram_bytes"), Some(3 * MIB));
    let (da, db) = (device(&doc, a), device(&doc, b));
    assert_eq!(da["memory"]["dram"]["used_bytes"], 3 * MIB);
    assert_eq!(da["memory"]["l1"]["used_bytes"], 65536);
    assert_eq!(db["memory"]["dram"]["used_bytes"], 3 * MIB);
    assert_eq!(db["memory"]["l1_small"]["used_bytes"], 5000);
    assert_eq!(db["memory"]["trace"]["used_bytes"], 4096);

    // The same in the table, the CSV query and Prometheus.
    let d = dir.path().to_str().unwrap();
    let table = smi(&["--dir", d]);
    assert!(table.contains(&format!("{pid1} ~")), "{table}");
    assert!(table.contains("~ from TT-Metal's own region"), "{table}");
    let csv = smi(&[
        "--dir",
        d,
        "--query-process=pid,source,used_memory",
        "--format=csv,noheader,nounits",
    ]);
    assert!(
        csv.lines()
            .any(|l| l.starts_with(&format!("{pid2}, tt-metal, "))),
        "{csv}"
    );
    let metrics = scrape(&agg);
    let want = format!(
        "tt_process_memory_used_bytes{{pid=\"{pid1}\",comm=\"metal_stats\",device=\"{}\",logical_device=\"-1\",type=\"dram\",source=\"tt-metal\"}} {}",
        row(&doc, b).unwrap(),
        3 * MIB
    );
    assert!(
        metrics.lines().any(|l| l == want),
        "{want} missing:\n{metrics}"
    );

    // The Python API, for a stock process (no libtttrack.so in it).
    let out = Command::new(venv_python())
        .args([
            "-c",
            "import sys, tttrack\n\
             pid, d = int(sys.argv[1]), sys.argv[2]\n\
             print(tttrack.memory_allocated(pid=pid, dir=d), tttrack.memory_allocated(type='l1', pid=pid, dir=d),\n\
                   [p.source for p in tttrack.processes(d) if p.pid == pid])",
        ])
        .arg(pid1.to_string())
        .arg(d)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("{} 65536 ['tt-metal']", 4 * MIB)
    );

    // SIGKILL: TT-Metal never clears the slot; tttrack takes it out of the live figures.
    let killed = Instant::now();
    p1.kill9();
    let doc = wait_json(
        "the killed process out of the live figures",
        dir.path(),
        |d| live_proc(d, pid1).is_none() && device(d, b)["memory"]["dram"]["used_bytes"] == 0,
    );
    let took = killed.elapsed();
    eprintln!("killed process out of the live figures after {took:?}");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    let left: Vec<&Value> = doc["processes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["pid"] == pid1)
        .collect();
    assert_eq!(left.len(), 2, "one left-behind row per region: {doc:#}");
    for l in &left {
        assert_eq!(l["left_behind"], true);
        assert_eq!(l["alive"], false);
        let file = l["region_file"].as_str().unwrap();
        let want = if file == format!("tt_device_{a}_memory") {
            MIB
        } else {
            assert_eq!(file, format!("tt_device_{b}_memory"));
            3 * MIB
        };
        assert_eq!(l["tt_metal_region"]["dram_bytes"], want);
    }
    assert_eq!(device(&doc, a)["memory"]["dram"]["used_bytes"], 2 * MIB);
    assert_eq!(device(&doc, a)["memory"]["l1"]["used_bytes"], 0);
    assert_eq!(device(&doc, b)["memory"]["l1_small"]["used_bytes"], 5000);
    let table = smi(&["--dir", d]);
    assert!(table.contains(&format!("{pid1} !")), "{table}");
    assert!(table.contains("! left behind"), "{table}");
    assert!(agg.output().contains(&format!(
        "pid {pid1} (metal_stats) has exited but tt_device_"
    )));
    let metrics = scrape(&agg);
    assert!(
        metrics.contains(&format!(
            "tt_tt_metal_region_left_behind_bytes{{file=\"tt_device_{b}_memory\",pid=\"{pid1}\",comm=\"metal_stats\",type=\"dram\"}} {}",
            3 * MIB
        )),
        "{metrics}"
    );

    // tt-track doctor names the file and how to clear it, and knows the library.
    let out = Command::new(env!("CARGO_BIN_EXE_tt-track"))
        .args(["doctor", "--dir", d, "--metal-shm-dir", "/dev/shm"])
        .args(["--sysfs-root", "/nonexistent-tttrack-sysfs"])
        .arg("--metal-lib")
        .arg(ttnn_lib().join("libtt_metal.so"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("FIX  TT-Metal regions: /dev/shm/")
            && l.contains(&format!("tt_device_{b}_memory still counts 3.0 MiB for pid {pid1} (metal_stats), which has exited"))
            && l.contains(&format!("rm /dev/shm/tt_device_{b}_memory"))),
        "{text}"
    );
    assert!(
        text.contains("is a stock TT-Metal: its own shared-memory stats are read")
            && text.contains("its buffers can be tracked one by one through its graph hook"),
        "{text}"
    );
    assert!(text.contains("OK   TT-Metal regions: "), "{text}");

    // A clean exit zeroes its slot: nothing of it stays.
    p2.cmd("exit");
    let _ = p2.child.wait();
    wait_json("the clean exit", dir.path(), |d| {
        live_proc(d, pid2).is_none()
            && device(d, a)["memory"]["dram"]["used_bytes"] == 0
            && device(d, b)["memory"]["l1_small"]["used_bytes"] == 0
    });
}

fn scrape(agg: &AggProc) -> String {
    use std::io::Read;
    let addr = {
        let t = Instant::now();
        loop {
            if let Some(l) = agg
                .output()
                .lines()
                .find_map(|l| l.split_once("http://").map(|(_, r)| r.to_string()))
            {
                break l.trim_end_matches("/metrics").to_string();
            }
            assert!(t.elapsed() < Duration::from_secs(10), "{}", agg.output());
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    write!(s, "GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    raw.split_once("\r\n\r\n").unwrap().1.to_string()
}

/// A process that reports through libtttrack.so and also through TT-Metal's region is
/// counted once, from its lanes; the region's figure is shown beside, not added.
#[test]
fn a_process_reporting_both_ways_is_counted_once() {
    let dir = TempDir::new("metal-both");
    let chips = Chips::new(1);
    let a = chips.0[0];
    let _agg = AggProc::start(dir.path(), &["--metal-shm-dir", "/dev/shm"]);
    let mut p = MetalProc::start(Some(dir.path()));
    p.cmd(&format!("open {a} 0"));
    p.cmd(&format!("alloc 0 {} 0", 4 * MIB));
    p.cmd(&format!("lanes 0 {} 4096", 4 * MIB));
    let pid = p.pid();
    let doc = wait_json(
        "the process from its lanes, the region beside",
        dir.path(),
        |d| {
            live_proc(d, pid).is_some_and(|p| {
                p["source"] == "lanes" && p["tt_metal_region"]["dram_bytes"] == 4 * MIB
            })
        },
    );
    let rows: Vec<&Value> = doc["processes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["pid"] == pid)
        .collect();
    assert_eq!(rows.len(), 1, "one row for the process: {doc:#}");
    assert_eq!(rows[0]["exact"], true);
    // Counted once: on its lanes' device, and no row of the region's bytes beside.
    let lanes_row = rows[0]["devices"][0]["id"].clone();
    let dram_of = |doc: &Value| {
        doc["devices"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["id"] == lanes_row)
            .map(|d| d["memory"]["dram"]["used_bytes"].clone())
    };
    assert_eq!(dram_of(&doc), Some(Value::from(4 * MIB)), "{doc:#}");
    assert_eq!(
        row(&doc, a),
        None,
        "the region's bytes added as a row: {doc:#}"
    );
    // The two disagree: shown, still not added.
    p.cmd(&format!("alloc 0 {} 0", MIB));
    let doc = wait_json("the region's new figure beside", dir.path(), |d| {
        live_proc(d, pid).is_some_and(|p| p["tt_metal_region"]["dram_bytes"] == 5 * MIB)
    });
    assert_eq!(dram_of(&doc), Some(Value::from(4 * MIB)), "{doc:#}");
    assert_eq!(row(&doc, a), None);
    p.cmd("exit");
}

fn put(b: &mut [u8], off: usize, v: u64, width: usize) {
    b[off..off + width].copy_from_slice(&v.to_le_bytes()[..width]);
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is writable for the call.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A region of `version` written byte by byte at the offsets of the facts file
/// (../shared/reference/tt-metal-shm-stats.md), with one slot: `pid` holding `dram`
/// and `l1` bytes, stamped `stamp`.
fn region_bytes(version: u32, pid: u32, dram: u64, l1: u64, stamp: u64) -> Vec<u8> {
    let (size, slots, stride, ts_off, name_off) = match version {
        1 => (9280, 992, 128, 56, 64),
        _ => (8576, 856, 120, 48, 56),
    };
    let mut b = vec![0u8; size];
    put(&mut b, 0, version as u64, 4);
    put(&mut b, 4, 1, 4);
    put(&mut b, 8, stamp, 8);
    put(&mut b, 16, 1, 4);
    put(&mut b, 48, dram, 8);
    put(&mut b, 56, l1, 8);
    let s = slots + 5 * stride;
    put(&mut b, s, pid as u64, 4);
    put(&mut b, s + 8, dram, 8);
    put(&mut b, s + 16, l1, 8);
    put(&mut b, s + ts_off, stamp, 8);
    b[s + name_off..s + name_off + 6].copy_from_slice(b"oldver");
    if version == 4 {
        put(&mut b, 8536, 0x5245_4459, 4);
    }
    b
}

/// v1 (its own strides, a monotonic clock), v2 and v4 (only once ready) as the facts
/// give them, for a live process of root's.
#[test]
fn every_layout_version_from_the_facts() {
    let dir = TempDir::new("metal-versions");
    let shm = TempDir::new("metal-versions-shm");
    let agg = AggProc::start(
        dir.path(),
        &["--metal-shm-dir", shm.path().to_str().unwrap()],
    );
    let mut holder = Command::new("sleep").arg("60").spawn().unwrap();
    let pid = holder.id();
    std::thread::sleep(Duration::from_millis(50));
    let write = |n: u64, b: &[u8]| {
        let p = shm.path().join(format!("tt_device_{n}_memory"));
        std::fs::write(&p, b).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    };
    write(0x101, &region_bytes(1, pid, MIB, 10, monotonic_ns()));
    write(0x102, &region_bytes(2, pid, 2 * MIB, 20, now_ns()));
    let mut v4 = region_bytes(4, pid, 4 * MIB, 40, now_ns());
    put(&mut v4, 8536, 1, 4); // being initialised
    write(0x104, &v4);
    let doc = wait_json("v1 and v2", dir.path(), |d| {
        held(d, pid, 0x101, "dram_bytes") == Some(MIB)
            && held(d, pid, 0x102, "dram_bytes") == Some(2 * MIB)
    });
    assert_eq!(held(&doc, pid, 0x101, "l1_bytes"), Some(10));
    assert_eq!(held(&doc, pid, 0x102, "l1_bytes"), Some(20));
    assert_eq!(row(&doc, 0x104), None, "v4 not ready: not read");
    put(&mut v4, 8536, 0x5245_4459, 4);
    write(0x104, &v4);
    wait_json("v4 once ready", dir.path(), |d| {
        held(d, pid, 0x104, "dram_bytes") == Some(4 * MIB)
    });
    // Another version: one line, the file ignored, nothing else changes.
    let mut v9 = region_bytes(2, pid, 9 * MIB, 0, now_ns());
    put(&mut v9, 0, 9, 4);
    write(0x109, &v9);
    agg.wait_for(
        || {
            agg.output()
                .contains("tt_device_265_memory ignored: layout version 9")
        },
        "the log line about version 9",
    );
    let doc = json_of(dir.path());
    assert_eq!(row(&doc, 0x109), None);
    assert_eq!(held(&doc, pid, 0x102, "dram_bytes"), Some(2 * MIB));
    let _ = holder.kill();
    let _ = holder.wait();
    wait_json(
        "the ended process out of the live figures",
        dir.path(),
        |d| live_proc(d, pid).is_none(),
    );
}

/// A slot whose pid now names a process that started after the slot was last written
/// (pid reuse) is not that process: left behind.
#[test]
fn a_reused_pid_is_not_the_slots_process() {
    let dir = TempDir::new("metal-reuse");
    let shm = TempDir::new("metal-reuse-shm");
    let _agg = AggProc::start(
        dir.path(),
        &["--metal-shm-dir", shm.path().to_str().unwrap()],
    );
    let mut holder = Command::new("sleep").arg("60").spawn().unwrap();
    let pid = holder.id();
    // Stamped a minute before the process started.
    let b = region_bytes(3, pid, 7 * MIB, 0, now_ns() - 60_000_000_000);
    std::fs::write(shm.path().join("tt_device_77_memory"), &b).unwrap();
    let doc = wait_json("the slot left behind", dir.path(), |d| {
        d["processes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["pid"] == pid && p["left_behind"] == true)
    });
    assert!(live_proc(&doc, pid).is_none(), "{doc:#}");
    assert_eq!(device(&doc, 77)["memory"]["dram"]["used_bytes"], 0);
    let _ = holder.kill();
    let _ = holder.wait();
}

/// With no aggregator, tt-smi reads the regions itself.
#[test]
fn tt_smi_reads_regions_without_an_aggregator() {
    let dir = TempDir::new("metal-noagg");
    let chips = Chips::new(1);
    let a = chips.0[0];
    let mut p = MetalProc::start(None);
    p.cmd(&format!("open {a} 0"));
    p.cmd(&format!("alloc 0 {} 0", 6 * MIB));
    let d = dir.path().to_str().unwrap();
    let doc = smi_json(&["--dir", d, "--metal-shm-dir", "/dev/shm"]);
    assert_eq!(doc["aggregator"]["running"], false);
    assert!(
        doc["aggregator"]["message"]
            .as_str()
            .unwrap()
            .contains("read from TT-Metal's own regions"),
        "{doc:#}"
    );
    assert_eq!(held(&doc, p.pid(), a, "dram_bytes"), Some(6 * MIB));
    assert_eq!(device(&doc, a)["memory"]["dram"]["used_bytes"], 6 * MIB);
    // As another user: root's 0600 region cannot be read, and tt-smi says so.
    let out = Command::new(env!("CARGO_BIN_EXE_tt-smi"))
        .args(["--dir", d, "--json", "--metal-shm-dir", "/dev/shm"])
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        doc["aggregator"]["message"]
            .as_str()
            .unwrap()
            .contains("cannot be read by this user (mode 0600)"),
        "{doc:#}"
    );
    assert!(live_proc(&doc, p.pid()).is_none());
    p.cmd("exit");
}

/// Every hostile file uid 65534 can make in the regions' directory, against a root
/// aggregator and a root process writing a real region: a region claiming the root
/// process's pid, a link to root's region, a FIFO, a truncated, a sparse and an
/// oversized file, absurd counters, and 10,000 junk names. Root's figures stay exact,
/// the aggregator stays responsive and never writes or unlinks anything there.
#[test]
fn hostile_regions_change_nothing_of_roots() {
    assert_eq!(
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() },
        0,
        "must run as root, as CI does"
    );
    let dir = TempDir::new("metal-hostile");
    let shm = TempDir::new("metal-hostile-shm");
    std::fs::set_permissions(shm.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let mut agg = AggProc::start(
        dir.path(),
        &["--metal-shm-dir", shm.path().to_str().unwrap()],
    );
    // Root's process and its region (root's file: written as TT-Metal writes it).
    let mut root_proc = Command::new("sleep").arg("120").spawn().unwrap();
    let rpid = root_proc.id();
    let root_region = shm.path().join("tt_device_1000_memory");
    std::fs::write(&root_region, region_bytes(3, rpid, 8 * MIB, 100, now_ns())).unwrap();
    std::fs::set_permissions(&root_region, std::fs::Permissions::from_mode(0o600)).unwrap();
    wait_json("root's region", dir.path(), |d| {
        held(d, rpid, 1000, "dram_bytes") == Some(8 * MIB)
    });
    let before = std::fs::read(&root_region).unwrap();

    // The attacker's files.
    let forged = region_bytes(3, rpid, 1 << 40, 1 << 40, now_ns());
    let mut absurd = region_bytes(3, rpid, u64::MAX, u64::MAX, now_ns());
    put(&mut absurd, 856, 1, 4); // pid 1, root's init
    let stage = TempDir::new("metal-hostile-stage");
    std::fs::set_permissions(stage.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(stage.path().join("forged"), &forged).unwrap();
    std::fs::write(stage.path().join("absurd"), &absurd).unwrap();
    let s = shm.path().display();
    let st = stage.path().display();
    let script = format!(
        "set -e
         cp {st}/forged {s}/tt_device_1000000_memory
         cp {st}/absurd {s}/tt_device_1000001_memory
         ln -s {s}/tt_device_1000_memory {s}/tt_device_1000002_memory
         mkfifo {s}/tt_device_1000003_memory
         head -c 100 {st}/forged > {s}/tt_device_1000004_memory
         truncate -s 8576 {s}/tt_device_1000005_memory
         head -c 9000 /dev/zero > {s}/tt_device_1000006_memory
         i=0; while [ $i -lt 10000 ]; do : > {s}/tt_device_$((2000000 + i))_memory; i=$((i + 1)); done"
    );
    assert!(as_nobody(&script).success(), "the attacker's script failed");
    // The forged region, made valid under the aggregator's eyes, then cut short.
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    assert!(as_nobody(&format!("truncate -s 10 {s}/tt_device_1000000_memory")).success());
    std::thread::sleep(Duration::from_millis(500));
    let doc = json_of(dir.path());
    assert_eq!(
        held(&doc, rpid, 1000, "dram_bytes"),
        Some(8 * MIB),
        "{doc:#}"
    );
    let rows: Vec<&Value> = doc["processes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["pid"] == rpid || p["pid"] == 1)
        .filter(|p| p["left_behind"] == false)
        .collect();
    assert_eq!(
        rows.len(),
        1,
        "only root's own region speaks for root's process: {doc:#}"
    );
    let total: u64 = doc["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["memory"]["dram"]["used_bytes"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(total, 8 * MIB, "{doc:#}");
    // Responsive throughout: the page's heartbeat is fresh.
    let snap = agg.snapshot().expect("page");
    let age = now_ns().saturating_sub(snap.status.heartbeat_unix_ns);
    assert!(age < 200_000_000, "heartbeat {age} ns old");
    eprintln!(
        "10,000 junk names and 7 traps handled; {:?} after",
        t.elapsed()
    );
    // Nothing written or removed: root's region as it was, every trap still there.
    assert_eq!(std::fs::read(&root_region).unwrap(), before);
    for n in 1_000_000..=1_000_006u64 {
        assert!(
            std::fs::symlink_metadata(shm.path().join(format!("tt_device_{n}_memory"))).is_ok(),
            "{n} was removed"
        );
    }
    let log = agg.output();
    let lines = log.lines().filter(|l| l.contains("tt_device_2")).count();
    assert!(lines < 10, "junk logged {lines} times:\n{log}");
    assert_eq!(
        agg.child.try_wait().ok().flatten(),
        None,
        "the aggregator ended:\n{log}"
    );
    let _ = root_proc.kill();
    let _ = root_proc.wait();
}

/// `tt-track record` of a stock TT-Metal program: the process is sampled from its
/// region (its curve and peak in the report, marked as sampled).
#[test]
fn a_stock_program_is_recorded_from_its_region() {
    let dir = TempDir::new("metal-record");
    let out = TempDir::new("metal-record-out");
    let chips = Chips::new(1);
    let a = chips.0[0];
    let _agg = AggProc::start(dir.path(), &["--metal-shm-dir", "/dev/shm"]);
    let file = out.path().join("run.ttrec");
    let script = format!(
        "printf 'open {a} 0\\nalloc 0 {four} 0\\nsleep 400\\nalloc 0 {one} 1\\nsleep 400\\nfree 0 {four} 0\\nsleep 400\\nexit\\n' | {prog}",
        four = 4 * MIB,
        one = MIB,
        prog = metal_stats(false).display()
    );
    let o = Command::new(env!("CARGO_BIN_EXE_tt-track"))
        .args(["record", "-o"])
        .arg(&file)
        .args(["--", "sh", "-c", &script])
        .env("TTTRACK_DIR", dir.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rep = Command::new(env!("CARGO_BIN_EXE_tt-track"))
        .args(["report", "--json"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        rep.status.success(),
        "{}",
        String::from_utf8_lossy(&rep.stderr)
    );
    let r: Value = serde_json::from_slice(&rep.stdout).unwrap();
    let p = r["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["comm"] == "metal_stats")
        .unwrap_or_else(|| panic!("no metal_stats process in {r:#}"));
    assert_eq!(p["sampled"], true, "{p:#}");
    assert!(p["ended_at_s"].is_number(), "{p:#}");
    let dev = r["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["types"]["dram"]["peak_bytes"] == 4 * MIB)
        .unwrap_or_else(|| panic!("no device with the 4 MiB DRAM peak in {r:#}"));
    assert_eq!(dev["types"]["l1"]["peak_bytes"], MIB, "{dev:#}");
    let text = Command::new(env!("CARGO_BIN_EXE_tt-track"))
        .arg("report")
        .arg(&file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("sampled from TT-Metal's own region"),
        "{text}"
    );
}

#[test]
fn mock_mode_buffers_through_tt_metals_own_tracking() {
    let dir = TempDir::new("metal-mock");
    let chips = Chips::new(1);
    let a = chips.0[0];
    let root = mock_root(a);
    let _agg = AggProc::start(dir.path(), &["--metal-shm-dir", "/dev/shm"]);
    let mut p = MockProc::start(&root);
    // 1 MiB of DRAM in 2 KiB pages over 12 banks: 88,064 bytes a bank, from 0x100040.
    assert_eq!(p.say("alloc 1048576 2048 0"), "buf 0 1048640 88064");
    // 64 KiB of L1: interleaved L1 from the top down.
    assert_eq!(p.say("alloc 65536 2048 1"), "buf 1 1497088 2048");
    assert!(p.say("alloc 4096 4096 0").starts_with("buf 2 "));
    let pid = p.child.id();
    wait_json("the buffers in TT-Metal's region", dir.path(), |d| {
        held(d, pid, a, "dram_bytes") == Some(MIB + 4096)
            && held(d, pid, a, "l1_bytes") == Some(65536)
    });
    assert_eq!(p.say("free 1"), "ok");
    wait_json("the free", dir.path(), |d| {
        held(d, pid, a, "l1_bytes") == Some(0)
    });
    // TT-Metal's out-of-memory is an exception the program catches: nothing changes.
    let oom = p.say("alloc 1073741824 2048 1");
    assert!(
        oom.starts_with("oom ") && oom.contains("Out of Memory"),
        "{oom}"
    );
    assert_eq!(p.say("exit"), "ok");
    wait_json("the clean exit", dir.path(), |d| {
        live_proc(d, pid).is_none()
    });
}

/// Every buffer of a stock TT-Metal program, through TT-Metal's own graph-tracking hook
/// (`LD_PRELOAD=libtttrack.so`, no rebuild): each with the address the real allocator
/// gave it, on the physical chip, also one allocated on another thread; counted once
/// (from the lanes, TT-Metal's region beside); frees exact; a SIGKILL releases
/// everything.
#[test]
fn a_stock_program_s_buffers_through_the_graph_hook() {
    let dir = TempDir::new("metal-hook");
    let chips = Chips::new(1);
    let a = chips.0[0];
    let root = mock_root(a);
    let agg = AggProc::start(dir.path(), &["--metal-shm-dir", "/dev/shm"]);
    let mut p = hooked_mock(&root, dir.path());
    assert_eq!(p.say("alloc 1048576 2048 0"), "buf 0 1048640 88064");
    assert_eq!(p.say("alloc 65536 2048 1"), "buf 1 1497088 2048");
    // On a thread of its own (TT-Metal's processor list is per thread).
    let on_thread = p.say("thread 4096 4096 0");
    assert!(on_thread.starts_with("buf 2 1136704 "), "{on_thread}");
    let per_bank_of_thread: u64 = on_thread.split(' ').nth(3).unwrap().parse().unwrap();
    let pid = p.child.id();
    let d = dir.path().to_str().unwrap();
    let buffers = || -> Vec<(String, u64, String)> {
        smi(&["--dir", d, "--buffers", "--pid", &pid.to_string()])
            .lines()
            .skip(1)
            .filter(|l| l.trim_start().starts_with(&pid.to_string()))
            .map(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                // PID Name Dev (as) Type Address Size ...
                (
                    w[4].to_string(),
                    u64::from_str_radix(w[5].trim_start_matches("0x"), 16).unwrap(),
                    w[2].to_string(),
                )
            })
            .collect()
    };
    let t = Instant::now();
    while buffers().len() < 3 {
        assert!(t.elapsed() < Duration::from_secs(20), "{:?}", buffers());
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut b = buffers();
    b.sort();
    assert_eq!(
        b,
        vec![
            ("DRAM".to_string(), 0x100040, "0".to_string()),
            ("DRAM".to_string(), 1136704, "0".to_string()),
            ("L1".to_string(), 0x16d800, "0".to_string()),
        ]
    );
    // The same for scripts.
    let j: Value = serde_json::from_str(&smi(&[
        "--dir",
        d,
        "--buffers",
        "--json",
        "--pid",
        &pid.to_string(),
    ]))
    .unwrap();
    let mut addrs: Vec<u64> = j["buffers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["address"].as_u64().unwrap())
        .collect();
    addrs.sort();
    assert_eq!(addrs, vec![0x100040, 1136704, 0x16d800], "{j:#}");
    assert!(j["truncated"].is_null(), "{j:#}");
    // Each with the page size it was made with, the footprint per bank that
    // Buffer::aligned_size_per_bank() returned (the mock printed it), and its layout.
    let mut detail: Vec<(u64, u64, u64, String, u64)> = j["buffers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["address"].as_u64().unwrap(),
                b["page_size"].as_u64().unwrap(),
                b["size_per_bank"].as_u64().unwrap(),
                b["layout"].as_str().unwrap().to_string(),
                b["num_cores"].as_u64().unwrap(),
            )
        })
        .collect();
    detail.sort();
    let il = || "interleaved".to_string();
    assert_eq!(
        detail,
        vec![
            (0x100040, 2048, 88064, il(), 0),
            (1136704, 4096, per_bank_of_thread, il(), 0),
            (0x16d800, 2048, 2048, il(), 0),
        ],
        "{j:#}"
    );
    // Counted once: from the lanes, TT-Metal's region beside. TT-Metal's own tracking is
    // a processor of the allocating thread too: the other thread's buffer is not in its
    // region (a difference shown, not added).
    let doc = wait_json("the region beside the lanes", dir.path(), |d| {
        live_proc(d, pid).is_some_and(|p| p["tt_metal_region"]["dram_bytes"] == MIB)
    });
    let me = live_proc(&doc, pid).unwrap();
    assert_eq!(me["source"], "lanes");
    assert_eq!(me["devices"][0]["dram_bytes"], MIB + 4096);
    assert_eq!(me["devices"][0]["l1_bytes"], 65536);
    assert_eq!(p.say("free 1"), "ok");
    let t = Instant::now();
    while buffers().len() != 2 {
        assert!(t.elapsed() < Duration::from_secs(20), "{:?}", buffers());
        std::thread::sleep(Duration::from_millis(20));
    }
    // SIGKILL: everything it held is released.
    let _ = p.child.kill();
    let _ = p.child.wait();
    agg.wait_for(
        || {
            agg.snapshot().is_some_and(|s| {
                s.processes.iter().all(|r| {
                    r.pid != pid || r.flags & tttrack::counters_page::PROC_LEFT_BEHIND != 0
                })
            })
        },
        "the killed process released",
    );
    assert!(
        agg.output()
            .contains(&format!("pid {pid} (metal_mock) exited holding 2 buffers")),
        "{}",
        agg.output()
    );
}

/// A TT-Metal whose processor table is laid out otherwise (a stand-in library of
/// another version, tests/cpp/standin_metal.cpp): nothing is hooked, one line on
/// stderr, the program runs on; `tt-track doctor --metal-lib` says why.
#[test]
fn a_tt_metal_of_another_layout_is_refused_and_runs_on() {
    let out = TempDir::new("metal-standin");
    let libdir = out.path().join("lib");
    std::fs::create_dir_all(&libdir).unwrap();
    let ok = Command::new("g++")
        .args(["-O1", "-std=c++20", "-shared", "-fPIC", "-o"])
        .arg(libdir.join("libtt_metal.so"))
        .arg(repo_dir().join("tests/cpp/standin_metal.cpp"))
        .status()
        .unwrap()
        .success();
    assert!(ok, "building the stand-in");
    let main = out.path().join("main.cpp");
    std::fs::write(
        &main,
        "#include <cstdio>\nextern \"C\" void standin_metal_touch();\nint main() { standin_metal_touch(); std::puts(\"ran on\"); return 0; }\n",
    )
    .unwrap();
    let exe = out.path().join("main");
    let ok = Command::new("g++")
        .arg("-o")
        .arg(&exe)
        .arg(&main)
        .arg("-L")
        .arg(&libdir)
        .arg("-ltt_metal")
        .arg(format!("-Wl,-rpath,{}", libdir.display()))
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let dir = TempDir::new("metal-standin-track");
    let o = Command::new(&exe)
        .env("LD_PRELOAD", lib_path())
        .env("TT_ALLOC_TRACKING_ENABLED", "1")
        .env("TTTRACK_DIR", dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "ran on");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("tttrack: TT-Metal's buffers are not tracked one by one (slot 1 of IGraphProcessor's table"),
        "{err}"
    );
    let d = Command::new(env!("CARGO_BIN_EXE_tt-track"))
        .args([
            "doctor",
            "--metal-shm-dir",
            "/nonexistent-tttrack-metal-shm",
        ])
        .arg("--metal-lib")
        .arg(libdir.join("libtt_metal.so"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&d.stdout);
    assert!(
        text.contains("its graph hook cannot be used by this tttrack (slot 1 of its IGraphProcessor table is _ZN2tt8tt_metal15IGraphProcessor16track_deallocateEPNS0_6BufferE"),
        "{text}"
    );
}

/// `tt-track record` of a stock program (no rebuild): its buffers come through the
/// graph hook, and the report names the ones it left when it ended by their addresses.
#[test]
fn a_stock_program_recorded_through_the_graph_hook_names_its_leaks() {
    let dir = TempDir::new("metal-hook-record");
    let chips = Chips::new(1);
    let root = mock_root(chips.0[0]);
    let _agg = AggProc::start(dir.path(), &[]);
    let out = TempDir::new("metal-hook-record-out");
    let file = out.path().join("run.ttrec");
    let script = format!(
        "printf 'alloc 1048576 2048 0\\nalloc 65536 2048 1\\nalloc 4096 4096 0\\nfree 2\\nsleep 300\\nabort\\n' | {}",
        mock_exe().display()
    );
    let o = Command::new(env!("CARGO_BIN_EXE_tt-track"))
        .args(["record", "-o"])
        .arg(&file)
        .args(["--", "sh", "-c", &script])
        .current_dir(out.path())
        .env("TTTRACK_DIR", dir.path())
        .env("TTTRACK_LIB", lib_path())
        .env("TT_METAL_RUNTIME_ROOT", root.path())
        .env("OMPI_MCA_btl", "self")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rep = Command::new(env!("CARGO_BIN_EXE_tt-track"))
        .args(["report", "--json"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(rep.status.success());
    let r: Value = serde_json::from_slice(&rep.stdout).unwrap();
    // At the DRAM peak (both DRAM buffers live) its address map: 88,064 and 4,096
    // bytes a bank.
    let dram = r["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|d| d["types"].get("dram"))
        .unwrap();
    assert_eq!(
        dram["map_at_peak"]["allocated_bytes_per_bank"], 92160,
        "{dram:#}"
    );
    let mut leaks: Vec<(String, u64, u64)> = r["leaks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["type"].as_str().unwrap().to_string(),
                l["address"].as_u64().unwrap(),
                l["size"].as_u64().unwrap(),
            )
        })
        .collect();
    leaks.sort();
    assert_eq!(
        leaks,
        vec![
            ("dram".to_string(), 0x100040, MIB),
            ("l1".to_string(), 0x16d800, 65536)
        ],
        "{r:#}"
    );
}

/// A TT-Metal that comes in later with `dlopen` (as `import ttnn` brings it): hooked when
/// that call returns; its buffers listed with their addresses.
#[test]
fn a_tt_metal_loaded_later_with_dlopen_is_hooked() {
    let dir = TempDir::new("metal-dlopen");
    let chips = Chips::new(1);
    let root = mock_root(chips.0[0]);
    let _agg = AggProc::start(dir.path(), &[]);
    let out = TempDir::new("metal-dlopen-bin");
    let so = out.path().join("libmetal_mock.so");
    build_with_metal(
        "tests/cpp/metal_mock.cpp",
        &so,
        &["-shared", "-fPIC", "-DAS_LIBRARY"],
    );
    let main = out.path().join("dlopen_main");
    let ok = Command::new("g++")
        .arg("-o")
        .arg(&main)
        .arg(repo_dir().join("tests/cpp/dlopen_main.cpp"))
        .arg("-ldl")
        .status()
        .unwrap()
        .success();
    assert!(ok, "building dlopen_main");
    let o = Command::new(&main)
        .arg(&so)
        .arg("wormhole")
        .current_dir(out.path())
        .env("TT_METAL_RUNTIME_ROOT", root.path())
        .env("OMPI_MCA_btl", "self")
        .env("LD_PRELOAD", lib_path())
        .env("TT_ALLOC_TRACKING_ENABLED", "1")
        .env("TTTRACK_DIR", dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut p = o;
    {
        let mut stdin = p.stdin.take().unwrap();
        writeln!(stdin, "alloc 1048576 2048 0").unwrap();
        writeln!(stdin, "sleep 1500").unwrap();
        writeln!(stdin, "exit").unwrap();
    }
    let pid = p.id();
    let d = dir.path().to_str().unwrap();
    let t = Instant::now();
    let seen = loop {
        let text = smi(&["--dir", d, "--buffers", "--pid", &pid.to_string()]);
        if text.contains("0x100040") {
            break text;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "never listed:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(seen.contains("DRAM"), "{seen}");
    let out = p.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("tttrack:"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The same on a Blackhole p150 in mock mode: its allocator's addresses (DRAM from
/// 0x100080 with 64-byte alignment, 8 banks) listed through the hook.
#[test]
fn a_blackhole_program_s_buffers_through_the_graph_hook() {
    let dir = TempDir::new("metal-hook-bh");
    let chips = Chips::new(1);
    let root = mock_root(chips.0[0]);
    let _agg = AggProc::start(dir.path(), &[]);
    let lib = lib_path();
    let mut p = MockProc::start_arch(
        &root,
        "blackhole",
        &[
            ("LD_PRELOAD", lib.as_os_str()),
            ("TT_ALLOC_TRACKING_ENABLED", std::ffi::OsStr::new("1")),
            ("TTTRACK_DIR", dir.path().as_os_str()),
        ],
    );
    // 1 MiB in 2 KiB pages over 8 banks: 131,072 bytes a bank.
    assert_eq!(p.say("alloc 1048576 2048 0"), "buf 0 1048704 131072");
    assert_eq!(p.say("alloc 65536 2048 1"), "buf 1 1570816 2048");
    let pid = p.child.id();
    let d = dir.path().to_str().unwrap();
    let t = Instant::now();
    loop {
        let j: Value = serde_json::from_str(&smi(&[
            "--dir",
            d,
            "--buffers",
            "--json",
            "--pid",
            &pid.to_string(),
        ]))
        .unwrap();
        let mut got: Vec<(String, u64, u64)> = j["buffers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| {
                (
                    b["type"].as_str().unwrap().to_string(),
                    b["address"].as_u64().unwrap(),
                    b["size"].as_u64().unwrap(),
                )
            })
            .collect();
        got.sort();
        if got
            == vec![
                ("DRAM".to_string(), 0x100080, MIB),
                ("L1".to_string(), 0x17f800, 65536),
            ]
        {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "{j:#}");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Its address maps are the allocator's own (Blackhole rounds each range to 64
    // bytes, its DRAM alignment, also in L1), with a gap made in each.
    assert!(p.say("alloc 4096 64 1").starts_with("buf 2 "));
    assert!(p.say("alloc 800 16 0").starts_with("buf 3 "));
    assert!(p.say("alloc 8192 64 1").starts_with("buf 4 "));
    assert!(p.say("alloc 4096 4096 0").starts_with("buf 5 "));
    assert_eq!(p.say("free 2"), "ok");
    assert_eq!(p.say("free 3"), "ok");
    let dram = map_agrees(dir.path(), &mut p, 0, "DRAM", "Blackhole DRAM");
    assert_eq!(
        (dram["num_banks"].as_u64(), dram["block_alignment"].as_u64()),
        (Some(8), Some(64)),
        "{dram:#}"
    );
    let l1 = map_agrees(dir.path(), &mut p, 1, "L1", "Blackhole L1");
    assert_eq!(l1["num_banks"], 130, "{l1:#}");
    assert_eq!(p.say("exit"), "ok");
}

/// The allocator's own view of a type: (allocated, free, largest free block), per bank.
fn real_stats(p: &mut MockProc, btype: u8) -> (u64, u64, u64) {
    let line = p.say(&format!("stats {btype}"));
    let w: Vec<u64> = line
        .split(' ')
        .skip(1)
        .map(|x| x.parse().unwrap())
        .collect();
    (w[4], w[5], w[6])
}

/// `tt-smi --map --json` for one type of device 0.
fn map_of(dir: &Path, btype: &str) -> Option<Value> {
    let o = Command::new(env!("CARGO_BIN_EXE_tt-smi"))
        .args([
            "--dir",
            dir.to_str().unwrap(),
            "--map",
            "--json",
            "--device",
            "0",
        ])
        .args(["--type", btype])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&o.stdout).ok()?;
    v["maps"].as_array()?.first().cloned()
}

/// Waits until tttrack's map of `btype` has the allocated bytes the real allocator
/// says, then checks free bytes and the largest free block against it too.
fn map_agrees(dir: &Path, p: &mut MockProc, btype: u8, name: &str, step: &str) -> Value {
    let (allocated, free, largest) = real_stats(p, btype);
    let t = Instant::now();
    loop {
        let m = map_of(dir, name);
        if let Some(m) = m.filter(|m| m["allocated_bytes_per_bank"] == allocated) {
            assert_eq!(m["free_bytes_per_bank"], free, "{step}: {m:#}");
            assert_eq!(m["largest_free_block_bytes"], largest, "{step}: {m:#}");
            assert_eq!(m["buffers_without_address"], 0, "{step}: {m:#}");
            return m;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "{step}: tttrack's {name} map never showed {allocated} B allocated per bank (the allocator's own): {:#}",
            map_of(dir, name).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `tt-smi --fits` for device 0: its exit code and its JSON.
fn fits(dir: &Path, btype: &str, what: &str) -> (i32, Value) {
    let o = Command::new(env!("CARGO_BIN_EXE_tt-smi"))
        .args(["--dir", dir.to_str().unwrap(), "--json", "--device", "0"])
        .args(["--type", btype, "--fits", what])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    (o.status.code().unwrap_or(-1), v["maps"][0].clone())
}

/// The out-of-memory autopsy against the real thing: the shipping TT-Metal's allocator
/// (mock mode, Wormhole n150) makes and frees buffers in a pattern that fragments L1
/// and DRAM; after each step tttrack's address map (from the graph hook's detail and
/// banks) has the allocated and free bytes per bank and the largest free block that
/// the allocator's own `get_statistics` returns. Then a few small buffers split L1 so
/// that a large one fails with most of L1 free: `tt-smi --fits` says no before the
/// real allocator refuses it (with the same largest free block in its message), names
/// the small buffers that split the space, and says yes once one is freed; the
/// allocator then succeeds.
#[test]
fn the_address_map_is_the_allocators_own() {
    let dir = TempDir::new("metal-map");
    let root = mock_root(0);
    let agg = AggProc::start(dir.path(), &["--metrics-addr", "127.0.0.1:0"]);
    let mut p = hooked_mock(&root, dir.path());
    let d = dir.path();
    // DRAM: several sizes and page sizes, one freed in the middle.
    for (i, cmd) in [
        "alloc 1048576 2048 0",
        "alloc 800 16 0",
        "alloc 4096 4096 0",
        "alloc 3145728 32768 0",
    ]
    .iter()
    .enumerate()
    {
        assert!(p.say(cmd).starts_with(&format!("buf {i} ")));
    }
    map_agrees(d, &mut p, 0, "DRAM", "four DRAM buffers");
    assert_eq!(p.say("free 1"), "ok");
    let m = map_agrees(d, &mut p, 0, "DRAM", "the second DRAM buffer freed");
    assert!(m["gaps"].as_array().unwrap().len() >= 2, "{m:#}");
    // L1: large, small, large, small (top down); pages of several sizes.
    let l1 = |p: &mut MockProc, cmd: &str| -> usize {
        let a = p.say(cmd);
        assert!(a.starts_with("buf "), "{cmd}: {a}");
        a.split(' ').nth(1).unwrap().parse().unwrap()
    };
    let big_a = l1(&mut p, "alloc 38400000 600000 1");
    let small_1 = l1(&mut p, "alloc 4096 64 1");
    let big_b = l1(&mut p, "alloc 38400000 600000 1");
    let small_2 = l1(&mut p, "alloc 64512 1008 1");
    map_agrees(d, &mut p, 1, "L1", "two large and two small L1 buffers");
    assert_eq!(p.say(&format!("free {big_a}")), "ok");
    assert_eq!(p.say(&format!("free {big_b}")), "ok");
    let m = map_agrees(d, &mut p, 1, "L1", "the large L1 buffers freed");
    let free = m["free_bytes_per_bank"].as_u64().unwrap();
    let largest = m["largest_free_block_bytes"].as_u64().unwrap();
    assert!(largest < free / 2, "split: {m:#}");
    assert!(m["fragmentation"].as_f64().unwrap() > 0.5, "{m:#}");
    // tt-smi --json gives the same beside each memory type's figures.
    let doc = smi_json(&["--dir", d.to_str().unwrap()]);
    let dev = doc["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == 0)
        .unwrap();
    assert_eq!(
        dev["memory"]["l1"]["largest_free_block_bytes"], largest,
        "{dev:#}"
    );
    assert_eq!(dev["memory"]["l1"]["free_bytes_per_bank"], free, "{dev:#}");
    assert!(
        dev["memory"]["dram"]["free_bytes_per_bank"].is_u64(),
        "{dev:#}"
    );
    assert!(
        dev["memory"]["trace"]["free_bytes_per_bank"].is_null(),
        "{dev:#}"
    );
    // And Prometheus.
    let (code, body) = http_get(&metrics_addr(&agg), "/metrics");
    assert_eq!(code, 200, "{body}");
    for line in [
        format!("tt_device_memory_largest_free_block_bytes{{device=\"0\",type=\"l1\"}} {largest}"),
        format!("tt_device_memory_free_per_bank_bytes{{device=\"0\",type=\"l1\"}} {free}"),
    ] {
        assert!(body.lines().any(|l| l == line), "{line} not in:\n{body}");
    }
    // The live view's memory map (view 4) in a real terminal: the strip with the
    // largest block marked.
    let session = format!("map{}", std::process::id());
    tmux_session(
        &session,
        120,
        30,
        &format!(
            "{} -w -r 200 --dir {}",
            env!("CARGO_BIN_EXE_tt-smi"),
            d.display()
        ),
    );
    wait_screen(&session, "tt-smi [main]");
    tmux(&["send-keys", "-t", &session, "4"]);
    // The legend is the last line drawn.
    let s = wait_screen(&session, "the largest free block");
    assert!(
        s.contains("device 0 L1 64 banks")
            && s.contains("largest block 585.9 KiB at 0x")
            && s.contains('━')
            && s.contains('▒'),
        "{s}"
    );
    tmux(&["kill-session", "-t", &session]);
    // 1,000,000 bytes a bank: far less than is free, more than the largest block.
    let want = "64000000,1000000";
    let (code, f) = fits(d, "L1", want);
    assert_eq!(code, 1, "{f:#}");
    assert_eq!(f["fits"]["fits"], false, "{f:#}");
    assert_eq!(f["fits"]["needed_per_bank"], 1_000_000, "{f:#}");
    // The small buffers that split the space are named, with their process.
    let small_1_addr = {
        let b = smi(&["--dir", d.to_str().unwrap(), "--buffers", "--json"]);
        let j: Value = serde_json::from_str(&b).unwrap();
        j["buffers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["type"] == "L1" && b["size"] == 4096)
            .unwrap()["address"]
            .as_u64()
            .unwrap()
    };
    let borders = f["fits"]["borders"].as_array().unwrap();
    assert!(
        borders
            .iter()
            .any(|b| b["address"] == small_1_addr && b["pid"] == p.child.id()),
        "{f:#}"
    );
    // The text says it in TT-Metal's terms.
    let o = Command::new(env!("CARGO_BIN_EXE_tt-smi"))
        .args(["--dir", d.to_str().unwrap(), "--device", "0"])
        .args(["--type", "L1", "--fits", want])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("each bank needs 1000000 B, but the largest free block is")
            && text.contains(&format!("{small_1_addr:#x}")),
        "{text}"
    );
    // The real allocator agrees: it refuses, with the same largest free block.
    let oom = p.say("alloc 64000000 1000000 1");
    assert!(
        oom.starts_with("oom ") && oom.contains(&format!("largest free block: {largest} B")),
        "{oom}"
    );
    // The last seconds, as the Python package takes them on that error: a snapshot
    // whose report explains the failure in TT-Metal's terms and names the buffer to
    // free.
    let snap = d.join("oom.ttrec");
    let o = Command::new(env!("CARGO_BIN_EXE_tt-track"))
        .args(["snapshot", "--dir", d.to_str().unwrap()])
        .args([
            "--pid",
            &p.child.id().to_string(),
            "--failure",
            &oom[4..],
            "-o",
        ])
        .arg(&snap)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rep = Command::new(env!("CARGO_BIN_EXE_tt-track"))
        .arg("report")
        .arg(&snap)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&rep.stdout);
    assert!(rep.status.success(), "{text}");
    assert!(
        text.contains(&format!(
            "TT-Metal could not allocate 64000000 B of L1 across 64 banks: each bank needed 1000000 B; the largest free block was {largest} B"
        )) && text.contains("There was enough memory free, but not in one block"),
        "{text}"
    );
    let names_it = format!(
        "buffer at {small_1_addr:#x}, 4096 B (64 B per bank): freeing it makes a free block of"
    );
    assert!(
        text.lines()
            .any(|l| l.contains(&names_it) && l.ends_with("the allocation would have fit")),
        "{text}"
    );
    let rep = Command::new(env!("CARGO_BIN_EXE_tt-track"))
        .args(["report", "--json"])
        .arg(&snap)
        .output()
        .unwrap();
    let r: Value = serde_json::from_slice(&rep.stdout).unwrap();
    // What the snapshot replays to is what was live: the same map as the aggregator's.
    let at_end = r["maps_at_end"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["type"] == "L1")
        .unwrap();
    assert_eq!(at_end["largest_free_block_bytes"], largest, "{r:#}");
    assert_eq!(at_end["free_bytes_per_bank"], free, "{r:#}");
    assert_eq!(r["failure"]["maps"][0]["fits"]["fits"], false, "{r:#}");
    // Freeing the small buffer between the two freed ones joins them: now it fits.
    assert_eq!(p.say(&format!("free {small_1}")), "ok");
    map_agrees(d, &mut p, 1, "L1", "the small buffer freed");
    let (code, f) = fits(d, "L1", want);
    assert_eq!((code, &f["fits"]["fits"]), (0, &Value::Bool(true)), "{f:#}");
    let ok = p.say("alloc 64000000 1000000 1");
    assert!(ok.starts_with("buf "), "{ok}");
    map_agrees(d, &mut p, 1, "L1", "the large buffer made");
    let _ = small_2;
    assert_eq!(p.say("exit"), "ok");
}

/// Circular buffers through the graph hook: told to TT-Metal's graph tracker as a
/// program tells it (`GraphTracker::track_allocate_cb` on 64 cores, then
/// `track_deallocate_cb`; running a program needs compiled kernels, which mock mode
/// has not), each CB counted with every core's bytes, the L1 map giving the headroom
/// between the CBs' top and the lowest L1 buffer (the "clash" TT-Metal reports), and
/// everything released at once.
#[test]
fn circular_buffers_through_the_graph_hook() {
    let dir = TempDir::new("metal-cb");
    let root = mock_root(0);
    let _agg = AggProc::start(dir.path(), &[]);
    let mut p = hooked_mock(&root, dir.path());
    let pid = p.child.id();
    // An L1 buffer (1 KiB a bank, at the top), then 64 KiB of CB on each of 64 cores
    // from the bottom of L1 (its base, as the allocator says: 105,824).
    let b = p.say("alloc 65536 1024 1");
    let lowest: u64 = b.split(' ').nth(2).unwrap().parse().unwrap();
    assert_eq!(p.say("cb 105824 65536"), "ok");
    wait_json("the CBs counted", dir.path(), |d| {
        live_proc(d, pid).is_some_and(|p| p["devices"][0]["cb_bytes"] == 64 * 65536)
    });
    let m = map_of(dir.path(), "L1").unwrap();
    assert_eq!(m["circular_buffers_top_address"], 105824 + 65536, "{m:#}");
    assert_eq!(m["lowest_buffer_address"], lowest, "{m:#}");
    assert_eq!(
        m["clash_headroom_bytes"].as_i64(),
        Some(lowest as i64 - (105824 + 65536)),
        "{m:#}"
    );
    let text = smi(&[
        "--dir",
        dir.path().to_str().unwrap(),
        "--map",
        "--type",
        "L1",
    ]);
    assert!(
        text.contains(&format!(
            "circular buffers up to {:#x}; {} B before the lowest L1 buffer",
            105824 + 65536,
            lowest - (105824 + 65536)
        )),
        "{text}"
    );
    // Released together.
    assert_eq!(p.say("cbfree"), "ok");
    wait_json("the CBs released", dir.path(), |d| {
        live_proc(d, pid).is_some_and(|p| p["devices"][0]["cb_bytes"] == 0)
    });
    let m = map_of(dir.path(), "L1").unwrap();
    assert!(m["circular_buffers_top_address"].is_null(), "{m:#}");
    assert_eq!(p.say("exit"), "ok");
}

/// L1 with an L1_SMALL reservation (32 KiB: the L1 bank shrinks to 1,360,544 bytes and
/// its buffers move down by 0x8000): tttrack's L1 map still has the allocator's own
/// figures after every step.
#[test]
fn the_l1_map_with_an_l1_small_reservation_is_the_allocators_own() {
    let dir = TempDir::new("metal-map-small");
    let root = mock_root(0);
    let _agg = AggProc::start(dir.path(), &[]);
    let mut p = hooked_mock_with(
        &root,
        dir.path(),
        &[("METAL_MOCK_L1_SMALL", std::ffi::OsStr::new("32768"))],
    );
    let stats = p.say("stats 1");
    assert_eq!(stats.split(' ').nth(2), Some("1360544"), "{stats}");
    let first = p.say("alloc 65536 2048 1");
    // 0x16d800 without the reservation.
    assert_eq!(first, format!("buf 0 {} 2048", 0x16d800 - 0x8000));
    for cmd in [
        "alloc 131072 4096 1",
        "alloc 4096 64 1",
        "alloc 64512 1008 1",
    ] {
        assert!(p.say(cmd).starts_with("buf "), "{cmd}");
    }
    let m = map_agrees(
        dir.path(),
        &mut p,
        1,
        "L1",
        "four L1 buffers under L1_SMALL",
    );
    assert_eq!(m["bank_size"], 1360544, "{m:#}");
    assert_eq!(p.say("free 1"), "ok");
    map_agrees(dir.path(), &mut p, 1, "L1", "one freed in the middle");
    assert_eq!(p.say("exit"), "ok");
}

/// The owner (kernel thread id) of each lane of the segment file `seg` that holds events.
fn lanes_with_events(seg: &Path) -> Vec<u32> {
    use std::os::unix::fs::FileExt;
    use tttrack::shm_layout::{LANES_OFFSET, LANE_STRIDE, NUM_LANES};
    let f = std::fs::File::open(seg).unwrap();
    let table = tttrack::shm_layout::layout_table();
    let off = |k: &str| table.iter().find(|e| e.0 == k).unwrap().1 as u64;
    let mut owners = Vec::new();
    for lane in 0..NUM_LANES as u64 {
        let base = (LANES_OFFSET + lane as usize * LANE_STRIDE) as u64;
        let mut head = [0u8; 8];
        f.read_exact_at(&mut head, base + off("LaneHeader.head"))
            .unwrap();
        if u64::from_le_bytes(head) > 0 {
            let mut tid = [0u8; 4];
            f.read_exact_at(&mut tid, base + off("LaneHeader.owner_tid"))
                .unwrap();
            owners.push(u32::from_le_bytes(tid));
        }
    }
    owners
}

/// A mesh of two chips (a Wormhole n300 in mock mode, opened whole as TT-Metal opens a
/// system's mesh): TT-Metal allocates each buffer once, on the mesh, and calls the
/// processor once; tttrack reports it on each chip, at the address the mesh's
/// allocator gave, with the mesh's id so views group the parts. TT-Metal's own
/// tracking writes the same bytes into each chip's region: the cross-check agrees.
#[test]
fn a_mesh_buffer_is_reported_on_each_chip_of_the_mesh() {
    let dir = TempDir::new("metal-mesh");
    let chips = Chips::new(2);
    let root = common::mock::mock_root_n300(chips.0[0], chips.0[1]);
    let _agg = AggProc::start(dir.path(), &["--metal-shm-dir", "/dev/shm"]);
    let mut p = hooked_mock_with(
        &root,
        dir.path(),
        &[("METAL_MOCK_CHIPS", std::ffi::OsStr::new("2"))],
    );
    let pid = p.child.id();
    let dram = p.say("alloc 1048576 2048 0");
    let dram_addr: u64 = dram.split(' ').nth(2).unwrap().parse().unwrap();
    let dram_per_bank: u64 = dram.split(' ').nth(3).unwrap().parse().unwrap();
    let l1 = p.say("alloc 65536 2048 1");
    let l1_addr: u64 = l1.split(' ').nth(2).unwrap().parse().unwrap();
    let d = dir.path().to_str().unwrap();
    let listed = || -> Value {
        serde_json::from_str(&smi(&[
            "--dir",
            d,
            "--buffers",
            "--json",
            "--pid",
            &pid.to_string(),
        ]))
        .unwrap()
    };
    let t = Instant::now();
    let mut j = listed();
    while j["buffers"].as_array().unwrap().len() < 4 {
        assert!(t.elapsed() < Duration::from_secs(20), "{j:#}");
        std::thread::sleep(Duration::from_millis(20));
        j = listed();
    }
    // Each buffer once per chip (devices 0 and 1 of the process), at the mesh's address,
    // with the mesh's id and its two chips.
    let mut parts: Vec<(String, i64, u64, u64, Option<u64>)> = j["buffers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            assert_eq!(b["mesh"]["chips"], 2, "{b:#}");
            (
                b["type"].as_str().unwrap().to_string(),
                b["logical_device"].as_i64().unwrap(),
                b["address"].as_u64().unwrap(),
                b["size"].as_u64().unwrap(),
                b["size_per_bank"].as_u64(),
            )
        })
        .collect();
    parts.sort();
    assert_eq!(
        parts,
        vec![
            ("DRAM".into(), 0, dram_addr, MIB, Some(dram_per_bank)),
            ("DRAM".into(), 1, dram_addr, MIB, Some(dram_per_bank)),
            ("L1".into(), 0, l1_addr, 65536, Some(2048)),
            ("L1".into(), 1, l1_addr, 65536, Some(2048)),
        ],
        "{j:#}"
    );
    let ids: std::collections::BTreeSet<u64> = j["buffers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["mesh"]["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids.len(), 1, "one mesh: {j:#}");
    // Which threads allocate: TT-Metal made threads of its own when it opened the
    // mesh (each with our processor pushed, through the pthread_create wrapper), yet
    // every buffer came from the thread that asked for it: one lane holds events, owned
    // by the main thread.
    let threads = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .count();
    let lanes = lanes_with_events(&segment_of(dir.path(), pid));
    assert_eq!(lanes, vec![pid], "the lanes' owners, of {threads} threads");
    eprintln!(
        "mesh process: {threads} threads, events from {} of them",
        lanes.len()
    );
    // The table says it too.
    let text = smi(&["--dir", d, "--buffers", "--pid", &pid.to_string()]);
    let mesh_id = ids.iter().next().unwrap();
    assert_eq!(
        text.matches(&format!("{mesh_id} (2 chips)")).count(),
        4,
        "{text}"
    );
    // Per chip, exact: each chip holds each buffer's bytes; TT-Metal's own region of
    // each chip says the same DRAM (its L1 too), beside the lanes, not added.
    let doc = wait_json("both chips' regions beside the lanes", dir.path(), |doc| {
        live_proc(doc, pid).is_some_and(|p| {
            let devs = p["devices"].as_array().unwrap();
            devs.len() == 2
                && devs
                    .iter()
                    .all(|d| d["dram_bytes"] == MIB && d["l1_bytes"] == 65536)
                && p["tt_metal_region"]["dram_bytes"] == 2 * MIB
        })
    });
    let me = live_proc(&doc, pid).unwrap();
    assert_eq!(me["source"], "lanes", "{me:#}");
    for c in &chips.0 {
        let region = std::fs::read(format!("/dev/shm/tt_device_{c}_memory")).unwrap();
        assert!(!region.is_empty(), "TT-Metal wrote chip {c:X}'s region");
    }
    assert_eq!(me["tt_metal_region"]["dram_bytes"], 2 * MIB, "{me:#}");
    // The address map of the second chip is the mesh allocator's (lockstep): the
    // same free space as the first.
    let m0 = smi_json(&["--dir", d, "--map", "--device", "0", "--type", "DRAM"]);
    let m1 = smi_json(&["--dir", d, "--map", "--device", "1", "--type", "DRAM"]);
    let (s0, s1) = (&m0["maps"][0], &m1["maps"][0]);
    assert_eq!(
        s0["largest_free_block_bytes"], s1["largest_free_block_bytes"],
        "{m0:#} {m1:#}"
    );
    assert!(s1["largest_free_block_bytes"].as_u64().is_some(), "{m1:#}");
    // Freed once by TT-Metal: gone from both chips.
    assert_eq!(p.say("free 0"), "ok");
    wait_json("the DRAM part freed on both chips", dir.path(), |doc| {
        live_proc(doc, pid).is_some_and(|p| {
            p["devices"]
                .as_array()
                .unwrap()
                .iter()
                .all(|d| d["dram_bytes"] == 0 && d["l1_bytes"] == 65536)
        })
    });
    assert_eq!(p.say("exit"), "ok");
}
