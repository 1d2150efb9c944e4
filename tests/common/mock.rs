//! The shipping TT-Metal (the ttnn wheel's libtt_metal.so) in its own mock mode, for
//! the tests that run it: the wheel fetched once, the members a test program declares
//! checked against `nm -D`, a runtime root, and tests/cpp/metal_mock.cpp driven line by
//! line.

use super::*;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::OnceLock;
use std::time::Instant;

/// The directory of the shipping libtt_metal.so (fetched on first use).
pub fn ttnn_lib() -> PathBuf {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        let t = Instant::now();
        let out = Command::new(repo_dir().join("scripts/fetch-ttnn.sh"))
            .output()
            .expect("scripts/fetch-ttnn.sh");
        assert!(
            out.status.success(),
            "fetching the ttnn wheel failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("ttnn wheel ready in {:.1} s", t.elapsed().as_secs_f64());
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    })
    .clone()
}

/// Checks that the shipping libtt_metal.so exports every member of `symbols` (as `nm -D`
/// lists them), the members `declared_in` declares for itself.
pub fn assert_exported(symbols: &[&str], declared_in: &str) {
    let nm = Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(ttnn_lib().join("libtt_metal.so"))
        .output()
        .expect("nm");
    let syms = String::from_utf8_lossy(&nm.stdout);
    for s in symbols {
        assert!(
            syms.lines().any(|l| l.ends_with(&format!(" {s}"))),
            "libtt_metal.so does not export {s}: the declarations in {declared_in} no longer match"
        );
    }
}

/// A runtime root for the shipping TT-Metal in mock mode (what an unpacked wheel
/// lacks, see ../shared facts): the wheel's `tt_metal` files, a cluster description of
/// one Wormhole n150 (written here from UMD's format; its board id is one of a known
/// n150, its chip id `chip`: the region's N), and a stand-in for the RISC-V compiler
/// that only says its version (the firmware is the wheel's pre-compiled one).
/// The shipping TT-Metal in mock mode: a real device, real buffers from its allocator
/// at the addresses the facts give, TT-Metal's own tracking writing its region; the
/// aggregator shows the process and its bytes, and the frees.
pub fn mock_root(chip: u64) -> TempDir {
    mock_root_n300(chip, chip.wrapping_add(1))
}

/// [`mock_root`], whose Wormhole n300 (two chips, `METAL_MOCK_CHIPS=2`) has chip ids
/// `chip` and `chip2`.
pub fn mock_root_n300(chip: u64, chip2: u64) -> TempDir {
    let root = TempDir::new("metal-mock-root");
    let ok = Command::new(repo_dir().join("scripts/metal-mock-root.sh"))
        .arg(root.path())
        .arg(chip.to_string())
        .arg(chip2.to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok, "scripts/metal-mock-root.sh failed");
    root
}

/// tests/cpp/metal_mock.cpp built against the shipping library (once), after checking
/// that every member it declares is exported.
pub fn mock_exe() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {

        assert_exported(
            &[
                "_ZN2tt8tt_metal12experimental19configure_mock_modeENS_4ARCHEj",
                "_ZN2tt8tt_metal11distributed10MeshDevice16create_unit_meshEimmmRKNS0_18DispatchCoreConfigESt4spanIKjLm18446744073709551615EEm",
                "_ZN2tt8tt_metal10BufferImpl6createEPNS0_7IDeviceEmmNS0_10BufferTypeERKNS0_18BufferShardingArgsESt8optionalIbES8_IN4ttsl10StrongTypeIhNS0_14SubDeviceIdTagEEEE",
                "_ZN2tt8tt_metal18BufferShardingArgsC1Ev",
                "_ZNK2tt8tt_metal6Buffer7addressEv",
                "_ZNK2tt8tt_metal6Buffer21aligned_size_per_bankEv",
                "_ZN2tt8tt_metal11distributed10MeshDevice5closeEv",
                "_ZN2tt8tt_metal11distributed10MeshDevice6createERKNS1_16MeshDeviceConfigEmmmRKNS0_18DispatchCoreConfigESt4spanIKjLm18446744073709551615EEm",
                "_ZNK2tt8tt_metal11distributed10MeshDevice11num_devicesEv",
                "_ZNK2tt8tt_metal11distributed10MeshDevice9allocatorEv",
                "_ZNK2tt8tt_metal9Allocator14get_statisticsERKNS0_10BufferTypeE",
                "_ZNK2tt8tt_metal9Allocator13get_num_banksERKNS0_10BufferTypeE",
                "_ZNK2tt8tt_metal9Allocator13get_bank_sizeERKNS0_10BufferTypeE",
                "_ZNK2tt8tt_metal9Allocator13get_alignmentENS0_10BufferTypeE",
                "_ZNK2tt8tt_metal9Allocator23get_base_allocator_addrERKNS0_10HalMemTypeE",
                "_ZN2tt8tt_metal9CoreRangeC1ERKNS_7xy_pairES4_",
                "_ZN2tt8tt_metal12CoreRangeSetC1ERKNS0_9CoreRangeE",
                "_ZN2tt8tt_metal12GraphTracker8instanceEv",
                "_ZN2tt8tt_metal12GraphTracker17track_allocate_cbERKNS0_12CoreRangeSetEmmbPKNS0_7IDeviceE",
                "_ZN2tt8tt_metal12GraphTracker19track_deallocate_cbEPKNS0_7IDeviceE",
            ],
            "tests/cpp/metal_mock.cpp",
        );
        let out = target_dir().join(format!("cpp-test-programs-{}", std::process::id()));
        std::fs::create_dir_all(&out).unwrap();
        let bin = out.join("metal_mock");
        build_with_metal("tests/cpp/metal_mock.cpp", &bin, &[]);
        bin
    }).clone()
}

/// The shipping TT-Metal in mock mode (tests/cpp/metal_mock.cpp), driven line by line.
pub struct MockProc {
    pub child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    _scratch: TempDir,
}

impl MockProc {
    pub fn start(root: &TempDir) -> Self {
        Self::start_with(root, &[])
    }

    pub fn start_with(root: &TempDir, env: &[(&str, &std::ffi::OsStr)]) -> Self {
        Self::start_arch(root, "wormhole", env)
    }

    pub fn start_arch(root: &TempDir, arch: &str, env: &[(&str, &std::ffi::OsStr)]) -> Self {
        let exe = mock_exe();
        // It writes ./generated/: a scratch directory of its own.
        let scratch = TempDir::new("metal-mock-run");
        let mut child = Command::new(exe)
            .arg(arch)
            .current_dir(scratch.path())
            .env("TT_METAL_RUNTIME_ROOT", root.path())
            .env("OMPI_MCA_btl", "self")
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut l = String::new();
        loop {
            l.clear();
            assert!(
                stdout.read_line(&mut l).unwrap() > 0,
                "metal_mock ended before its device opened"
            );
            if l.trim() == "ready" {
                break;
            }
        }
        MockProc {
            child,
            stdin,
            stdout,
            _scratch: scratch,
        }
    }

    pub fn say(&mut self, line: &str) -> String {
        writeln!(self.stdin, "{line}").unwrap();
        let mut a = String::new();
        loop {
            a.clear();
            self.stdout.read_line(&mut a).unwrap();
            // TT-Metal's own lines go to stdout too: ours are these.
            if ["buf ", "oom ", "ok", "bad ", "ns ", "stats "]
                .iter()
                .any(|p| a.starts_with(p))
            {
                return a.trim().to_string();
            }
        }
    }
}

impl Drop for MockProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Builds the C++ test program `src` (from the repository) into `out`, linked with the
/// shipping libtt_metal.so (found at run time through its rpath); `extra`: more g++
/// arguments.
pub fn build_with_metal(src: &str, out: &std::path::Path, extra: &[&str]) {
    let lib = ttnn_lib();
    let ok = Command::new("g++")
        .args(["-O1", "-std=c++20"])
        .args(extra)
        .arg("-o")
        .arg(out)
        .arg(repo_dir().join(src))
        .arg("-L")
        .arg(&lib)
        .arg("-ltt_metal")
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .status()
        .unwrap()
        .success();
    assert!(ok, "building {src}");
}

/// The shipping TT-Metal in mock mode with `libtttrack.so` preloaded and tracking on
/// (its graph hook in), reporting into `dir`.
pub fn hooked_mock(root: &TempDir, dir: &std::path::Path) -> MockProc {
    hooked_mock_with(root, dir, &[])
}

/// [`hooked_mock`] with more of the environment.
pub fn hooked_mock_with(
    root: &TempDir,
    dir: &std::path::Path,
    more: &[(&str, &std::ffi::OsStr)],
) -> MockProc {
    let lib = lib_path();
    let mut env = vec![
        ("LD_PRELOAD", lib.as_os_str()),
        ("TT_ALLOC_TRACKING_ENABLED", std::ffi::OsStr::new("1")),
        ("TTTRACK_DIR", dir.as_os_str()),
    ];
    env.extend_from_slice(more);
    MockProc::start_with(root, &env)
}
