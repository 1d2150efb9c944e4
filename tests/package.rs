//! The Debian package: built with cargo-deb from this tree, installed with dpkg (into a
//! root of its own, so the test machine's system is left as it was), its files where
//! they belong, and the installed parts working together: a C program built against the
//! installed header and library reports to the installed tt-aggregator, the installed
//! tt-smi shows it, the installed tt-track finds the installed library.

mod common;
use common::*;
use std::path::Path;
use std::process::{Command, Stdio};

fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_debian_package_installs_and_its_parts_work_together() {
    let work = TempDir::new("deb");
    let deb = work.path().join("tttrack.deb");
    // cargo-deb builds the release binaries of this tree (scripts/test.sh installs it).
    run(
        Command::new("cargo")
            .args(["deb", "--fast", "--output"])
            .arg(&deb)
            .current_dir(repo_dir()),
        "cargo deb (cargo-deb: `cargo install cargo-deb`; scripts/test.sh installs it)",
    );
    let fields = run(
        Command::new("dpkg-deb")
            .arg("-f")
            .arg(&deb)
            .args(["Package", "Depends"]),
        "dpkg-deb -f",
    );
    assert!(fields.contains("Package: tttrack"), "{fields}");
    assert!(fields.contains("libc6"), "{fields}");

    // Installed with dpkg into a root of its own.
    let root = work.path().join("root");
    let admin = root.join("var/lib/dpkg");
    for d in ["updates", "info", "triggers"] {
        std::fs::create_dir_all(admin.join(d)).unwrap();
    }
    std::fs::write(admin.join("status"), "").unwrap();
    run(
        Command::new("dpkg")
            .arg(format!("--root={}", root.display()))
            .args([
                "--force-depends",
                "--force-not-root",
                "--force-script-chrootless",
            ])
            .args(["--log=/dev/null", "-i"])
            .arg(&deb),
        "dpkg -i",
    );
    let status = run(
        Command::new("dpkg")
            .arg(format!("--root={}", root.display()))
            .args(["-s", "tttrack"]),
        "dpkg -s",
    );
    assert!(status.contains("Status: install ok installed"), "{status}");
    for f in [
        "usr/bin/tt-aggregator",
        "usr/bin/tt-smi",
        "usr/bin/tt-track",
        "usr/lib/libtttrack.so",
        "usr/include/tttrack/tttrack.h",
        "usr/include/tttrack/tttrack_shm.h",
        "usr/include/tttrack/allocation_client.hpp",
        "lib/systemd/system/tt-aggregator.service",
        "usr/share/doc/tttrack/examples/tt-aggregator.service.d/metrics.conf",
    ] {
        assert!(root.join(f).is_file(), "{f} not installed");
    }
    let r = |p: &str| root.join(p);

    // A C program against the installed header and library.
    let src = work.path().join("reporter.c");
    std::fs::write(
        &src,
        "#include <tttrack.h>\n#include <stdio.h>\n#include <unistd.h>\n\
         int main(void) { tttrack_alloc(0, 4096, TTTRACK_BUFFER_DRAM, 0x1000);\n\
         printf(\"ready\\n\"); fflush(stdout); sleep(30); return 0; }\n",
    )
    .unwrap();
    let prog = work.path().join("reporter");
    run(
        Command::new("gcc")
            .arg(format!("-I{}", r("usr/include/tttrack").display()))
            .arg(&src)
            .arg(format!("-L{}", r("usr/lib").display()))
            .arg("-ltttrack")
            .arg(format!("-Wl,-rpath,{}", r("usr/lib").display()))
            .arg("-o")
            .arg(&prog),
        "building against the installed header and library",
    );
    let dir = TempDir::new("deb-dir");
    let mut agg = Command::new(r("usr/bin/tt-aggregator"))
        .arg("--dir")
        .arg(dir.path())
        .args([
            "--quiet",
            "--no-compat-socket",
            "--sysfs-root",
            "/nonexistent-tttrack-sysfs",
        ])
        .spawn()
        .unwrap();
    let t = std::time::Instant::now();
    while !dir.path().join("counters").exists() {
        assert!(
            t.elapsed().as_secs() < 10,
            "the installed aggregator did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let mut reporter = Command::new(&prog)
        .env("TT_ALLOC_TRACKING_ENABLED", "1")
        .env("TTTRACK_DIR", dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_line(&mut reporter, "ready");
    let pid = reporter.id();
    let mut seen = String::new();
    for _ in 0..200 {
        seen = run(
            Command::new(r("usr/bin/tt-smi"))
                .arg("--dir")
                .arg(dir.path())
                .arg("--json"),
            "the installed tt-smi",
        );
        let v: serde_json::Value = serde_json::from_str(&seen).unwrap();
        let held = v["processes"].as_array().and_then(|ps| {
            ps.iter()
                .find(|p| p["pid"] == pid)
                .map(|p| p["devices"][0]["dram_bytes"].clone())
        });
        if held == Some(serde_json::json!(4096)) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(seen.contains(&format!("\"pid\": {pid}")), "{seen}");
    // The installed tt-track finds the installed library (in ../lib from /usr/bin).
    let out = Command::new(r("usr/bin/tt-track"))
        .args(["run", "--", "sh", "-c", "echo $LD_PRELOAD"])
        .env_remove("TTTRACK_LIB")
        .output()
        .unwrap();
    let preload = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{preload}");
    let lib = std::fs::canonicalize(r("usr/lib/libtttrack.so")).unwrap();
    assert!(
        preload
            .split(':')
            .any(|p| Path::new(p.trim()).canonicalize().ok().as_deref() == Some(lib.as_path())),
        "LD_PRELOAD {preload}"
    );
    let _ = reporter.kill();
    let _ = reporter.wait();
    let _ = agg.kill();
    let _ = agg.wait();
}
