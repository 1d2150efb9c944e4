//! Helpers shared by the integration tests: build directories, the C test programs,
//! and a test consumer that drains real segments the way the aggregator does.
#![allow(dead_code)]

pub mod mock;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use tttrack::aggregator::segment_reader::{list_segments, MappedSegment};
use tttrack::shm_layout::{Event, NUM_LANES};

/// `target/<profile>`, where libtttrack.so and the binaries are.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test-binary>
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf()
}

pub fn repo_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Where cargo put the libtttrack.so built with this test binary (the copy in
/// `target/<profile>` is only refreshed by `cargo build`).
pub fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent().expect("deps dir").to_path_buf()
}

pub fn lib_path() -> PathBuf {
    let p = lib_dir().join("libtttrack.so");
    assert!(
        p.exists(),
        "{} not built (cargo build builds it)",
        p.display()
    );
    p
}

/// Compiles tests/c/<name>.c (linked to libtttrack.so) once per test binary.
pub fn c_program(name: &str) -> PathBuf {
    build_c_program(name, true)
}

/// Compiles tests/c/<name>.c without libtttrack.so (a program that opens it itself).
pub fn c_program_unlinked(name: &str) -> PathBuf {
    build_c_program(name, false)
}

fn build_c_program(name: &str, link: bool) -> PathBuf {
    static BUILT: OnceLock<std::sync::Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let m = BUILT.get_or_init(Default::default);
    let mut m = m.lock().unwrap();
    if let Some(p) = m.get(name) {
        return p.clone();
    }
    let out_dir = target_dir().join("c-test-programs");
    std::fs::create_dir_all(&out_dir).unwrap();
    let out = out_dir.join(format!("{name}-{}", std::process::id()));
    let src = repo_dir().join("tests/c").join(format!("{name}.c"));
    let mut cc = Command::new("cc");
    cc.args(["-O2", "-Wall", "-Werror", "-pthread", "-o"])
        .arg(&out)
        .arg(&src)
        .arg("-I")
        .arg(repo_dir().join("cabi"));
    if link {
        cc.arg("-L")
            .arg(lib_dir())
            .arg("-ltttrack")
            // RPATH (not RUNPATH): wins over the LD_LIBRARY_PATH cargo sets for tests.
            .arg("-Wl,--disable-new-dtags")
            .arg(format!("-Wl,-rpath,{}", lib_dir().display()));
    } else {
        cc.arg("-ldl");
    }
    let status = cc.status().expect("run cc");
    assert!(status.success(), "compiling {} failed", src.display());
    m.insert(name.to_string(), out.clone());
    out
}

/// Tests that load both cores take this lock so they do not run at the same time as
/// each other within one test binary.
pub fn heavy() -> std::sync::MutexGuard<'static, ()> {
    static M: std::sync::Mutex<()> = std::sync::Mutex::new(());
    M.lock().unwrap_or_else(|e| e.into_inner())
}

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);
impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = PathBuf::from("/dev/shm").join(format!(
            "tttrack-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs a C test program with tracking on, its segment in `dir`.
pub fn run_producer(dir: &Path, args: &[&str]) -> Output {
    Command::new(c_program("producer"))
        .args(args)
        .env("TT_ALLOC_TRACKING_ENABLED", "1")
        .env("TTTRACK_DIR", dir)
        .output()
        .expect("run producer")
}

pub fn stdout_value(out: &Output, key: &str) -> Option<u64> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(key).map(|v| v.trim().parse().ok()))
        .flatten()
}

/// Drains every segment in a directory, like a minimal aggregator: keeps each
/// process's events (with lane and position) and publishes tails.
pub struct TestConsumer {
    pub dir: PathBuf,
    pub segs: HashMap<PathBuf, MappedSegment>,
    pub events: HashMap<u32, Vec<(usize, Event)>>,
    pub dropped: HashMap<u32, u64>,
    buf: Vec<(Event, u64)>,
}

impl TestConsumer {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            segs: HashMap::new(),
            events: HashMap::new(),
            dropped: HashMap::new(),
            buf: Vec::new(),
        }
    }

    /// Announces this consumer in the directory's counters page presence block, as the
    /// aggregator does, so producers wait for it rather than drop.
    pub fn announce(&self) {
        use std::os::unix::fs::FileExt;
        let mut b = [0u8; 64];
        b[0..8].copy_from_slice(&tttrack::shm_layout::COUNTERS_MAGIC.to_le_bytes());
        b[8..12].copy_from_slice(&1u32.to_le_bytes());
        b[12..16].copy_from_slice(&std::process::id().to_le_bytes());
        b[16..24].copy_from_slice(&tttrack::sys::monotonic_ns().to_le_bytes());
        if let Ok(f) = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(self.dir.join(tttrack::shm_layout::COUNTERS_FILE_NAME))
        {
            let _ = f.write_all_at(&b, 0);
        }
    }

    /// One pass: attach new segments, drain every lane. Returns events read.
    pub fn poll(&mut self) -> usize {
        self.announce();
        for p in list_segments(&self.dir).unwrap_or_default() {
            if let std::collections::hash_map::Entry::Vacant(e) = self.segs.entry(p) {
                if let Ok(s) = MappedSegment::open(e.key()) {
                    e.insert(s);
                }
            }
        }
        let mut n = 0;
        for s in self.segs.values_mut() {
            for lane in 0..NUM_LANES {
                // Heartbeat often and read in bounded batches, as the aggregator does:
                // waiting producers take a moving heartbeat as progress.
                // The draining thread's id: producers read its /proc state to tell a
                // busy consumer from a stopped one.
                // SAFETY: gettid has no preconditions.
                s.heartbeat(
                    unsafe { libc::gettid() } as u32,
                    tttrack::sys::monotonic_ns(),
                );
                self.buf.clear();
                let got = s.read_lane(lane, &mut self.buf, 4096).expect("lane valid");
                if got > 0 {
                    let evs = self
                        .events
                        .entry(s.pid)
                        .or_insert_with(|| Vec::with_capacity(1 << 20));
                    evs.extend(self.buf.iter().map(|(e, _)| (lane, *e)));
                    s.release(lane, s.read_pos(lane));
                    n += got;
                }
            }
            self.dropped.insert(s.pid, s.dropped());
        }
        n
    }

    /// A process's events sorted by sequence number.
    pub fn ordered(&self, pid: u32) -> Vec<Event> {
        let mut v: Vec<Event> = self
            .events
            .get(&pid)
            .map(|e| e.iter().map(|(_, e)| *e).collect())
            .unwrap_or_default();
        v.sort_by_key(|e| e.seq);
        v
    }
}

/// Runs `f` while a test consumer drains `dir` in a background thread; returns the
/// consumer after a final pass.
pub fn with_consumer<T>(dir: &Path, f: impl FnOnce() -> T) -> (T, TestConsumer) {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let d = dir.to_path_buf();
    let first = TestConsumer::new(dir);
    first.announce();
    let h = std::thread::spawn(move || {
        let mut c = TestConsumer::new(&d);
        while !stop2.load(Ordering::Acquire) {
            if c.poll() == 0 {
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
        }
        while c.poll() > 0 {}
        c
    });
    let r = f();
    stop.store(true, Ordering::Release);
    (r, h.join().unwrap())
}

/// A real tt-aggregator process on a directory, its output in a log file.
pub struct AggProc {
    pub child: std::process::Child,
    pub dir: PathBuf,
    pub log: PathBuf,
}

impl AggProc {
    pub fn start(dir: &Path, extra: &[&str]) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let log = std::env::temp_dir().join(format!(
            "tttrack-agg-{}-{}.log",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let f = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tt-aggregator"));
        cmd.arg("--dir").arg(dir).args(extra);
        if !extra.contains(&"--compat-socket") {
            cmd.arg("--no-compat-socket");
        }
        if !extra.contains(&"--metal-shm-dir") {
            // TT-Metal's regions in /dev/shm (of tests/metal.rs, or of a real TT-Metal on
            // this machine) are read only by the tests that ask for them.
            cmd.arg("--no-metal-shm");
        }
        if !extra.contains(&"--sysfs-root") {
            // No real devices leak into tests on a machine that has some.
            cmd.args(["--sysfs-root", "/nonexistent-tttrack-sysfs"]);
        }
        let child = cmd
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .expect("start tt-aggregator");
        let a = AggProc {
            child,
            dir: dir.to_path_buf(),
            log,
        };
        // This aggregator's page: one killed before it leaves its own page behind.
        let pid = a.child.id();
        a.wait_for(
            || a.snapshot().is_some_and(|s| s.status.pid == pid),
            "the counters page",
        );
        a
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn snapshot(&self) -> Option<tttrack::counters_page::Snapshot> {
        tttrack::counters_page::CountersReader::open(&self.dir)
            .ok()?
            .view()
            .snapshot()
    }

    /// Waits (up to 20 s) until `f` holds; panics with the log otherwise.
    pub fn wait_for(&self, mut f: impl FnMut() -> bool, what: &str) {
        let t = std::time::Instant::now();
        while t.elapsed() < std::time::Duration::from_secs(20) {
            if f() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!(
            "timed out waiting for {what}; aggregator log:\n{}",
            self.output()
        );
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn stop(&mut self) -> std::process::ExitStatus {
        // SAFETY: sending SIGTERM to our child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait().unwrap()
    }
}

impl Drop for AggProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Starts the C producer in the background with tracking on.
pub fn spawn_producer(dir: &Path, args: &[&str], linger_ms: u64) -> std::process::Child {
    Command::new(c_program("producer"))
        .args(args)
        .env("TT_ALLOC_TRACKING_ENABLED", "1")
        .env("TTTRACK_DIR", dir)
        .env("PRODUCER_LINGER_MS", linger_ms.to_string())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn producer")
}

/// Reads lines of a child's stdout until one starts with `prefix` (at most 120 s).
/// Reads byte by byte, so nothing after that line is consumed: the next call sees it.
pub fn wait_line(child: &mut std::process::Child, prefix: &str) -> String {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    let out = child.stdout.as_mut().expect("piped stdout");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let mut line = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let mut pfd = libc::pollfd {
            fd: out.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, for the duration of the call.
        let r = unsafe { libc::poll(&mut pfd, 1, left.as_millis() as i32) };
        if r < 0 {
            continue; // interrupted
        }
        if r == 0 {
            panic!(
                "no line starting with {prefix:?} within 120 s (so far: {:?})",
                String::from_utf8_lossy(&line)
            );
        }
        let mut b = [0u8; 1];
        match out.read(&mut b) {
            Ok(0) | Err(_) => panic!("the child ended before printing {prefix:?}"),
            Ok(_) if b[0] == b'\n' => {
                let text = String::from_utf8_lossy(&line).into_owned();
                if text.starts_with(prefix) {
                    return text.trim().to_string();
                }
                line.clear();
            }
            Ok(_) => line.push(b[0]),
        }
    }
}

/// The figures of one process and device on the page.
pub fn proc_dev(
    s: &tttrack::counters_page::Snapshot,
    pid: u32,
    dev: i32,
) -> Option<tttrack::counters_page::ProcessDevice> {
    let p = s.processes.iter().find(|p| p.pid == pid)?;
    p.devices[..p.num_devices as usize]
        .iter()
        .find(|d| d.device == dev)
        .copied()
}

pub fn dev_fig(
    s: &tttrack::counters_page::Snapshot,
    dev: u32,
    cat: usize,
) -> tttrack::counters_page::Figure {
    s.devices
        .iter()
        .find(|d| d.id == dev)
        .map(|d| d.figures[cat])
        .unwrap_or_default()
}

#[allow(unused_imports)]
pub use tttrack::devices::simulated::SimCard;

/// Lists `pids` as holding device `id` (`proc/driver/tenstorrent/N/pids`), one line
/// each as the driver writes them (a pid repeats once per open file).
pub fn set_holders(root: &Path, id: u32, pids: &[u32]) {
    tttrack::devices::simulated::set_holders(root, id, pids).unwrap();
}

/// Compiles the C++ stand-in for an instrumented TT-Metal (libfake_metal.so) and a
/// program linked against it; returns (program, library directory).
pub fn fake_metal() -> (PathBuf, PathBuf) {
    static BUILT: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let out = target_dir().join(format!("cpp-test-programs-{}", std::process::id()));
            std::fs::create_dir_all(&out).unwrap();
            let src = repo_dir().join("tests/cpp");
            let ok = Command::new("g++")
                .args(["-O2", "-shared", "-fPIC", "-o"])
                .arg(out.join("libfake_metal.so"))
                .arg(src.join("fake_metal.cpp"))
                .status()
                .expect("g++")
                .success();
            assert!(ok, "building libfake_metal.so");
            let ok = Command::new("g++")
                .args(["-O2", "-o"])
                .arg(out.join("model"))
                .arg(src.join("model.cpp"))
                .arg("-L")
                .arg(&out)
                .arg("-lfake_metal")
                .arg(format!("-Wl,-rpath,{}", out.display()))
                .status()
                .unwrap()
                .success();
            assert!(ok, "building the model program");
            (out.join("model"), out)
        })
        .clone()
}

/// Compiles a C++ program of tests/cpp against cabi/ and libtttrack.so.
pub fn cpp_program(name: &str) -> PathBuf {
    let out = target_dir().join(format!("cpp-test-programs-{}", std::process::id()));
    std::fs::create_dir_all(&out).unwrap();
    let bin = out.join(name);
    let ok = Command::new("g++")
        .args(["-O2", "-std=c++17", "-o"])
        .arg(&bin)
        .arg(repo_dir().join("tests/cpp").join(format!("{name}.cpp")))
        .arg("-I")
        .arg(repo_dir().join("cabi"))
        .arg("-L")
        .arg(lib_dir())
        .arg("-ltttrack")
        .arg("-Wl,--disable-new-dtags")
        .arg(format!("-Wl,-rpath,{}", lib_dir().display()))
        .status()
        .expect("g++")
        .success();
    assert!(ok, "building {name}");
    bin
}

/// Runs `c` to the end and returns its standard output; panics with its error output
/// if it fails.
pub fn stdout_of_success(c: &mut Command) -> Vec<u8> {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `tt-smi ARGS`'s output; panics with tt-smi's error output if it fails.
pub fn smi(args: &[&str]) -> String {
    // TT-Metal's regions in /dev/shm are read only where a test names the directory
    // (--metal-shm-dir wins over this).
    let out = stdout_of_success(
        Command::new(env!("CARGO_BIN_EXE_tt-smi"))
            .args(args)
            .env("TTTRACK_METAL_SHM_DIR", "/nonexistent-tttrack-metal-shm"),
    );
    String::from_utf8(out).unwrap()
}

/// `tt-smi --json ARGS`, parsed; panics with tt-smi's error output if it fails.
pub fn smi_json(args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    serde_json::from_str(&smi(&all)).unwrap()
}

/// A Python program run under `tt-track run` (libtttrack.so preloaded) reporting into
/// `dir`, with its standard input and output piped.
pub fn tracked_python(dir: &Path, script: &str) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_tt-track"))
        .args(["run", "python3", "-c", script])
        .env("TTTRACK_LIB", lib_path())
        .env("TTTRACK_DIR", dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("tt-track run python3")
}

/// The segment file of process `pid` in `dir`.
pub fn segment_of(dir: &Path, pid: u32) -> PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&format!("seg.{pid}."))
        })
        .unwrap_or_else(|| panic!("no segment of pid {pid} in {}", dir.display()))
}

/// A live segment of this test process (its own pid, start time and uid, its lock
/// held, lane 0 claimed), for tests that need a producer writing arbitrary words.
pub struct OwnSegment {
    _file: std::fs::File,
    map: memmap2::MmapRaw,
}

impl OwnSegment {
    pub fn create(dir: &Path) -> Self {
        use std::os::unix::fs::OpenOptionsExt;
        let me = std::process::id();
        let info = tttrack::sys::proc_info(std::path::Path::new("/proc"), me).unwrap();
        // Made under a temporary name, renamed into place once whole (see `publish`).
        let path = dir.join(".own.tmp");
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .unwrap();
        f.set_len(tttrack::shm_layout::SEGMENT_SIZE as u64).unwrap();
        let fd = std::os::unix::io::AsRawFd::as_raw_fd(&f);
        // SAFETY: fd is f's open descriptor; the lock goes with it.
        let locked = unsafe { libc::flock(fd, libc::LOCK_EX) };
        assert_eq!(locked, 0);
        let map = memmap2::MmapOptions::new()
            .len(tttrack::shm_layout::SEGMENT_SIZE)
            .map_raw(&f)
            .unwrap();
        let s = OwnSegment { _file: f, map };
        // SAFETY: geteuid has no preconditions.
        let uid = unsafe { libc::geteuid() };
        tttrack::producer::write_identity(s.view(), me, uid, info.start_time, b"self");
        s.view()
            .header()
            .lanes_reserved
            .store(1, std::sync::atomic::Ordering::Release);
        s.view()
            .header()
            .lanes_claimed
            .store(1, std::sync::atomic::Ordering::Release);
        std::fs::rename(
            &path,
            dir.join(tttrack::shm_layout::segment_file_name(me, info.start_time)),
        )
        .unwrap();
        s
    }
    pub fn view(&self) -> tttrack::segment::SegmentView<'_> {
        // SAFETY: the mapping is SEGMENT_SIZE bytes and lives as long as self.
        unsafe { tttrack::segment::SegmentView::new(self.map.as_mut_ptr()) }
    }
}

/// A DRAM allocation event of `size` bytes with buffer id `id` and sequence number `seq`
/// on device 0.
pub fn alloc_event(seq: u64, size: u64, id: u64) -> tttrack::shm_layout::Event {
    tttrack::shm_layout::Event {
        seq,
        kind: 1,
        subtype: 0,
        _reserved: 0,
        device: 0,
        size,
        id,
    }
}

/// A segment file made by hand at `path`, owned by `uid`, whose header claims process
/// `pid` started at `start`, with one `size`-byte DRAM allocation in lane 0. Not locked:
/// the caller holds the returned file's lock to make it look alive.
pub fn forged_segment(path: &Path, pid: u32, uid: u32, start: u64, size: u64) -> std::fs::File {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    f.set_len(tttrack::shm_layout::SEGMENT_SIZE as u64).unwrap();
    let map = memmap2::MmapOptions::new()
        .len(tttrack::shm_layout::SEGMENT_SIZE)
        .map_raw(&f)
        .unwrap();
    // SAFETY: the mapping is SEGMENT_SIZE bytes and outlives every use here.
    let seg = unsafe { tttrack::segment::SegmentView::new(map.as_mut_ptr()) };
    tttrack::producer::write_identity(seg, pid, uid, start, b"forged");
    // A test producer owns every lane's pages (sparse files on /dev/shm).
    seg.header()
        .lanes_reserved
        .store(u64::MAX, std::sync::atomic::Ordering::Release);
    tttrack::producer::publish(seg, 0, 0, alloc_event(0, size, 1));
    std::os::unix::fs::chown(path, Some(uid), Some(uid)).unwrap();
    f
}

/// The tests' virtual environment's python, with pytest and the Python package
/// (the test command's, `TTTRACK_TEST_VENV`, else made here in target/python-venv).
pub fn venv_python() -> PathBuf {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    VENV.get_or_init(|| {
        if let Some(v) = std::env::var_os("TTTRACK_TEST_VENV") {
            return PathBuf::from(v).join("bin/python");
        }
        let venv = target_dir().join("python-venv");
        if !venv.join("bin/python").exists() {
            let ok = Command::new("python3")
                .arg("-m")
                .arg("venv")
                .arg(&venv)
                .status()
                .unwrap()
                .success();
            assert!(ok, "python3 -m venv");
        }
        let py = venv.join("bin/python");
        let out = Command::new(&py)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "pytest",
            ])
            .arg(repo_dir().join("python"))
            // Its own target directory (see scripts/test.sh): never the main build's.
            .env("CARGO_TARGET_DIR", repo_dir().join("target/python-ext"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pip install ./python: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        py
    })
    .clone()
}

/// Runs `script` with sh as uid 65534 (an unprivileged attacker) and returns its status.
pub fn as_nobody(script: &str) -> std::process::ExitStatus {
    use std::os::unix::process::CommandExt;
    Command::new("sh")
        .args(["-c", script])
        .uid(65534)
        .gid(65534)
        .status()
        .expect("sh as uid 65534")
}

/// Before any test runs: TT-Metal's regions in /dev/shm (of tests/metal.rs run beside,
/// or of a real TT-Metal on this machine) are read by no tool these tests start unless a
/// test names the directory (`--metal-shm-dir` wins over the variable).
extern "C" fn no_metal_regions_unless_asked() {
    if std::env::var_os("TTTRACK_METAL_SHM_DIR").is_none() {
        std::env::set_var("TTTRACK_METAL_SHM_DIR", "/nonexistent-tttrack-metal-shm");
    }
}

#[used]
#[link_section = ".init_array"]
static NO_METAL_REGIONS: extern "C" fn() = no_metal_regions_unless_asked;

/// An HTTP/1.0 request to `addr`: its status code (0: no connection) and body.
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    http(addr, "GET", path)
}

pub fn http(addr: &str, method: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return (0, String::new());
    };
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    write!(s, "{method} {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_string())
        .unwrap_or_default();
    (code, body)
}

/// Where an aggregator started with `--metrics-addr` serves `/metrics` (its log says).
pub fn metrics_addr(agg: &AggProc) -> String {
    agg.wait_for(
        || agg.output().contains("metrics: http://"),
        "the metrics line",
    );
    let out = agg.output();
    let l = out
        .lines()
        .find(|l| l.contains("metrics: http://"))
        .unwrap();
    l.split("http://")
        .nth(1)
        .unwrap()
        .trim_end_matches("/metrics")
        .to_string()
}

/// tmux, for the tests that drive the live view in a real terminal.
pub fn tmux(args: &[&str]) -> String {
    let out = std::process::Command::new("tmux")
        .args(args)
        .output()
        .expect("tmux is required (apt-get install tmux)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A detached tmux session of `w` x `h` running `cmd`.
pub fn tmux_session(session: &str, w: u16, h: u16, cmd: &str) {
    tmux(&[
        "new-session",
        "-d",
        "-s",
        session,
        "-x",
        &w.to_string(),
        "-y",
        &h.to_string(),
        cmd,
    ]);
}

pub fn wait_screen(session: &str, what: &str) -> String {
    let t = std::time::Instant::now();
    loop {
        let s = tmux(&["capture-pane", "-p", "-t", session]);
        if s.contains(what) {
            return s;
        }
        if t.elapsed() > std::time::Duration::from_secs(20) {
            panic!("{what:?} never appeared; screen:\n{s}");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
