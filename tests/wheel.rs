//! The wheel (`pip wheel ./python`): the Python package, the tools and `libtttrack.so`
//! in one manylinux wheel, checked with auditwheel; installed in a fresh virtual
//! environment beside Tenstorrent's official `tt-smi` package (from PyPI), neither
//! takes the other's command; from it `tt-track demo` runs and `tt-track run` tracks a
//! Python program with the wheel's library.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn ok(c: &mut Command, what: &str) -> String {
    let o = c.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "{what} failed:\n{text}");
    text
}

/// A fresh virtual environment's `bin`.
fn fresh_venv(at: &Path) -> PathBuf {
    ok(
        Command::new("python3").args(["-m", "venv"]).arg(at),
        "python3 -m venv",
    );
    at.join("bin")
}

fn pip(bin: &Path, args: &[&str]) -> String {
    ok(
        Command::new(bin.join("python"))
            .args(["-m", "pip", "--disable-pip-version-check", "--quiet"])
            .args(args),
        &format!("pip {args:?}"),
    )
}

#[test]
fn one_wheel_beside_the_official_tt_smi() {
    let out = TempDir::new("wheel");
    let dist = out.path().join("dist");
    // Built as a user builds it, with the tests' own target directory for the Rust parts.
    let py = venv_python();
    let builder = py.parent().unwrap().to_path_buf();
    pip(&builder, &["install", "auditwheel"]);
    ok(
        Command::new(&py)
            .args([
                "-m",
                "pip",
                "wheel",
                "--no-deps",
                "--disable-pip-version-check",
                "-w",
            ])
            .arg(&dist)
            .arg(repo_dir().join("python"))
            .env("CARGO_TARGET_DIR", repo_dir().join("target/python-ext"))
            // As for PyPI: pip's build (maturin's PEP 517 backend) tags wheels for
            // the local machine (linux_x86_64) unless told the policy.
            .env("MATURIN_PEP517_ARGS", "--compatibility manylinux_2_34"),
        "pip wheel ./python",
    );
    let wheels: Vec<PathBuf> = std::fs::read_dir(&dist)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "whl"))
        .collect();
    assert_eq!(wheels.len(), 1, "{wheels:?}");
    let wheel = &wheels[0];
    let name = wheel.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.contains("manylinux_2_34_x86_64"), "{name}");
    // auditwheel: consistent with its tag, no library outside the policy.
    let show = ok(
        Command::new(&py)
            .args(["-m", "auditwheel", "show"])
            .arg(wheel),
        "auditwheel show",
    );
    let said = show.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        said.contains("is consistent with the following platform tag: \"manylinux_2_34_x86_64\""),
        "{show}"
    );
    // The only libraries it needs are the system's own (glibc's and libgcc's).
    let libs: std::collections::BTreeSet<&str> = said
        .split(|c: char| c.is_whitespace() || ",{}'".contains(c))
        .filter(|w| w.starts_with("lib") && w.contains(".so"))
        .collect();
    assert!(
        libs.iter()
            .all(|l| ["libc.so.6", "libm.so.6", "libgcc_s.so.1"].contains(l)),
        "{libs:?}\n{show}"
    );
    // What is in it: the extension and the tools, no bundled libraries.
    let listing = ok(
        Command::new(&py)
            .args([
                "-c",
                "import sys, zipfile; print('\\n'.join(zipfile.ZipFile(sys.argv[1]).namelist()))",
            ])
            .arg(wheel),
        "listing the wheel",
    );
    for f in [
        "tttrack/_bin/tt-aggregator",
        "tttrack/_bin/tt-smi",
        "tttrack/_bin/tt-track",
        "tttrack/_bin/libtttrack.so",
        "tttrack/_cli.py",
    ] {
        assert!(
            listing.lines().any(|l| l == f),
            "{f} not in the wheel:\n{listing}"
        );
    }
    assert!(!listing.contains(".libs/"), "bundled libraries:\n{listing}");

    // A fresh environment: Tenstorrent's tt-smi first (its command only: --no-deps
    // keeps its hundred megabytes of dependencies out of CI), then the wheel, then
    // tt-smi again: each command stays its package's.
    let env = fresh_venv(&out.path().join("env"));
    pip(&env, &["install", "--no-deps", "tt-smi"]);
    pip(&env, &["install", wheel.to_str().unwrap()]);
    pip(
        &env,
        &["install", "--no-deps", "--force-reinstall", "tt-smi"],
    );
    let official = std::fs::read_to_string(env.join("tt-smi")).unwrap();
    assert!(official.contains("tt_smi"), "{official}");
    for c in ["tttrack-smi", "tt-track", "tt-aggregator"] {
        let s = std::fs::read_to_string(env.join(c)).unwrap();
        assert!(s.contains("tttrack._cli"), "{c}: {s}");
    }
    let v = ok(
        Command::new(env.join("tttrack-smi")).arg("--version"),
        "tttrack-smi --version",
    );
    assert!(v.contains(env!("CARGO_PKG_VERSION")), "{v}");
    // tt-smi is taken: no alias over it.
    let a = Command::new(env.join("tt-track"))
        .args(["alias-tt-smi"])
        .arg(&env)
        .output()
        .unwrap();
    assert_eq!(a.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&a.stderr).contains("exists already"));

    // The demo, from the wheel alone.
    let demo = ok(
        Command::new(env.join("tt-track"))
            .args(["demo", "--no-ui", "--duration", "3"])
            .env_remove("TTTRACK_LIB")
            .env_remove("TTTRACK_DIR"),
        "tt-track demo from the wheel",
    );
    assert!(demo.contains("tt-track demo: done"), "{demo}");

    // A Python program tracked with the wheel's library (tt-track run preloads the one
    // beside it), its figures shown by the wheel's aggregator and tt-smi.
    let dir = TempDir::new("wheel-track");
    let mut agg = Command::new(env.join("tt-aggregator"))
        .arg("--dir")
        .arg(dir.path())
        .args(["--no-metal-shm"])
        .spawn()
        .unwrap();
    let model = out.path().join("model.py");
    std::fs::write(
        &model,
        "import ctypes, os, sys, time\n\
         lib = ctypes.CDLL(None)  # libtttrack.so, preloaded by tt-track run\n\
         lib.tttrack_alloc.argtypes = [ctypes.c_int32, ctypes.c_uint64, ctypes.c_uint8, ctypes.c_uint64]\n\
         lib.tttrack_alloc(0, 3 << 20, 0, 0x4000)\n\
         print('ready', flush=True)\n\
         time.sleep(30)\n",
    )
    .unwrap();
    let mut prog = Command::new(env.join("tt-track"))
        .arg("run")
        .arg("--")
        .arg(env.join("python"))
        .arg(&model)
        .env("TTTRACK_DIR", dir.path())
        .env_remove("TTTRACK_LIB")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = prog.id();
    let t = Instant::now();
    let seen = loop {
        let o = Command::new(env.join("tttrack-smi"))
            .args(["--json", "--dir"])
            .arg(dir.path())
            .output()
            .unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        let mine = doc["processes"].as_array().and_then(|ps| {
            ps.iter()
                .find(|p| p["pid"] == pid)
                .map(|p| p["devices"][0]["dram_bytes"].clone())
        });
        if let Some(b) = mine {
            break b;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "never tracked: {doc:#}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(seen, 3 << 20);
    let _ = prog.kill();
    let _ = prog.wait();
    let _ = agg.kill();
    let _ = agg.wait();

    // Where no other tt-smi is installed, tt-track makes one that is tttrack's.
    let alone = fresh_venv(&out.path().join("alone"));
    pip(&alone, &["install", wheel.to_str().unwrap()]);
    ok(
        Command::new(alone.join("tt-track"))
            .args(["alias-tt-smi"])
            .arg(&alone),
        "tt-track alias-tt-smi",
    );
    let v = ok(
        Command::new(alone.join("tt-smi")).arg("--version"),
        "tt-smi --version",
    );
    assert!(v.contains(env!("CARGO_PKG_VERSION")), "{v}");
}
