//! The Python package (`python/`) and its pytest plugin, in a virtual environment
//! (built here with `pip install ./python` unless `TTTRACK_TEST_VENV` names one the
//! test command built), through real pytest runs against the real aggregator, with
//! Python processes reporting through `libtttrack.so` loaded with ctypes.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The virtual environment's python.
fn python() -> PathBuf {
    venv_python()
}

fn pytest(dir: &Path, args: &[&str]) -> Output {
    Command::new(python())
        .args(["-m", "pytest", "-p", "no:cacheprovider", "-q"])
        .args(args)
        .current_dir(repo_dir().join("tests/python"))
        .env("TTTRACK_DIR", dir)
        .env("TTTRACK_LIB", lib_path())
        .env("TT_ALLOC_TRACKING_ENABLED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn the_api_gives_exact_figures_peaks_and_nested_scopes() {
    let dir = TempDir::new("py-api");
    let _agg = AggProc::start(dir.path(), &[]);
    let o = pytest(dir.path(), &["test_api.py"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("5 passed"), "{}", text(&o));
}

#[test]
fn the_plugin_fails_a_leaking_test_naming_its_buffers() {
    let dir = TempDir::new("py-leaks");
    let _agg = AggProc::start(dir.path(), &[]);
    let o = pytest(dir.path(), &["leaky_suite.py", "--tttrack-leaks"]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("1 failed, 1 passed"), "{t}");
    assert!(
        t.contains("leaky_suite.py::test_leaks left device memory allocated:"),
        "{t}"
    );
    assert!(t.contains("device 0 dram: +3145728 bytes"), "{t}");
    assert!(
        t.contains("buffer on device 0, DRAM, 3145728 bytes at 0x"),
        "{t}"
    );
    assert!(
        t.contains("buffer on device 0, L1, 1048576 bytes at 0x"),
        "{t}"
    );
    assert!(!t.contains("test_clean left"), "{t}");
    // The flag before the path, as everyone types it (it took the path for its value:
    // a usage error, no test run).
    let o = pytest(dir.path(), &["--tttrack-leaks", "leaky_suite.py"]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("1 failed, 1 passed"), "{t}");
    // Warn only: both pass, the leak is a warning (after the path too).
    let o = pytest(dir.path(), &["leaky_suite.py", "--tttrack-leaks=warn"]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains("2 passed") && t.contains("TttrackLeakWarning"),
        "{t}"
    );
    let o = pytest(dir.path(), &["--tttrack-leaks=warn", "leaky_suite.py"]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains("2 passed") && t.contains("TttrackLeakWarning"),
        "{t}"
    );
    // Peaks: a table of each test's.
    let o = pytest(dir.path(), &["--tttrack-peaks", "leaky_suite.py"]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains("tttrack: device-memory peak of each test"),
        "{t}"
    );
    let row = t
        .lines()
        .find(|l| l.starts_with("leaky_suite.py::test_leaks") && l.contains(" dram "))
        .unwrap_or_else(|| panic!("{t}"));
    assert!(row.trim_end().ends_with(" 3145728"), "{row}");
}

#[test]
fn with_no_aggregator_the_plugin_says_so_once_and_tests_run() {
    let dir = TempDir::new("py-none");
    let o = pytest(dir.path(), &["no_aggregator_suite.py", "--tttrack-leaks"]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("2 passed"), "{t}");
    assert_eq!(t.matches("device memory was not checked").count(), 1, "{t}");
}

#[test]
fn another_user_is_refused_a_reset() {
    let dir = TempDir::new("py-reset");
    let _agg = AggProc::start(dir.path(), &[]);
    // A root process that reports (the victim), then uid 65534 asks to reset its peaks.
    let mut victim = spawn_producer(dir.path(), &["hold", "30", "1"], 0);
    wait_line(&mut victim, "ready");
    let script = format!(
        "import tttrack\n\
         try:\n    tttrack.reset_peak_memory_stats(pid={})\n    print('RESET')\n\
         except tttrack.PermissionRefusedError as e:\n    print('REFUSED', e)\n",
        victim.id()
    );
    let o = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(python())
        .args(["-c", &script])
        .env("TTTRACK_DIR", dir.path())
        .output()
        .unwrap();
    let t = text(&o);
    assert!(t.contains("REFUSED") && t.contains("not yours"), "{t}");
    let _ = victim.kill();
    let _ = victim.wait();
}

/// The shipping TT-Metal in mock mode for the Python tests (tests/python/metal_mock.py):
/// pytest run with the mock program, its runtime root and tt-track named.
fn pytest_with_metal(dir: &Path, args: &[&str]) -> Output {
    let root = common::mock::mock_root(0);
    let o = Command::new(python())
        .args(["-m", "pytest", "-p", "no:cacheprovider", "-q"])
        .args(args)
        .current_dir(repo_dir().join("tests/python"))
        .env("TTTRACK_DIR", dir)
        .env("TTTRACK_LIB", lib_path())
        .env("METAL_MOCK", common::mock::mock_exe())
        .env("TT_METAL_RUNTIME_ROOT", root.path())
        .env("TT_TRACK", env!("CARGO_BIN_EXE_tt-track"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap();
    drop(root);
    o
}

/// `tttrack.fits` and `tttrack.oom_snapshot` against the shipping allocator: the
/// answer before the allocation, the snapshot when TT-Metal raises its out-of-memory
/// error, a report that names the buffer to free.
#[test]
fn fits_and_oom_snapshot_on_the_shipping_allocator() {
    let dir = TempDir::new("py-oom");
    let _agg = AggProc::start(dir.path(), &[]);
    let o = pytest_with_metal(dir.path(), &["test_oom.py"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("2 passed"), "{}", text(&o));
}

/// `pytest --tttrack-oom DIR`: a test that runs TT-Metal out of memory leaves a
/// snapshot in DIR, named after it, that `tt-track report` explains.
#[test]
fn the_plugin_snapshots_a_test_that_runs_out_of_memory() {
    let dir = TempDir::new("py-oom-plugin");
    let snaps = TempDir::new("py-oom-snaps");
    let _agg = AggProc::start(dir.path(), &[]);
    let o = pytest_with_metal(
        dir.path(),
        &[
            "oom_suite.py",
            "--tttrack-oom",
            snaps.path().to_str().unwrap(),
        ],
    );
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("1 failed, 1 passed"), "{t}");
    // One file, named after the test (its node id, as pytest gives it from its rootdir).
    let files: Vec<PathBuf> = std::fs::read_dir(snaps.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let file = &files[0];
    assert!(
        file.to_str()
            .unwrap()
            .ends_with("oom_suite.py__test_runs_out_of_l1.ttrec"),
        "{file:?}"
    );
    assert!(
        t.lines().any(|l| l.contains(
            "oom_suite.py::test_runs_out_of_l1 ran out of device memory: tt-track report"
        ) && l.ends_with(&file.display().to_string())),
        "{t}"
    );
    let rep = Command::new(env!("CARGO_BIN_EXE_tt-track"))
        .arg("report")
        .arg(file)
        .output()
        .unwrap();
    let r = String::from_utf8_lossy(&rep.stdout);
    assert!(rep.status.success(), "{r}");
    assert!(
        r.contains("each bank needed 1000000 B; the largest free block was 600000 B")
            && r.contains("the allocation would have fit"),
        "{r}"
    );
}
