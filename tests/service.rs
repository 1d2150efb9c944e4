//! The systemd unit and its metrics drop-in, checked by systemd itself
//! (`systemd-analyze verify`, in a root laid out as an installed system: the unit in
//! /etc/systemd/system, the binary at /usr/bin/tt-aggregator, systemd's own units).

mod common;
use common::*;
use std::path::Path;
use std::process::Command;

fn system_root(tag: &str, with_drop_in: bool) -> TempDir {
    let root = TempDir::new(tag);
    let r = root.path();
    let units = r.join("etc/systemd/system");
    std::fs::create_dir_all(units.join("tt-aggregator.service.d")).unwrap();
    std::fs::create_dir_all(r.join("usr/bin")).unwrap();
    std::fs::create_dir_all(r.join("usr/lib/systemd")).unwrap();
    let contrib = repo_dir().join("contrib/systemd");
    std::fs::copy(
        contrib.join("tt-aggregator.service"),
        units.join("tt-aggregator.service"),
    )
    .unwrap();
    if with_drop_in {
        std::fs::copy(
            contrib.join("tt-aggregator.service.d/metrics.conf"),
            units.join("tt-aggregator.service.d/metrics.conf"),
        )
        .unwrap();
    }
    std::fs::copy(
        env!("CARGO_BIN_EXE_tt-aggregator"),
        r.join("usr/bin/tt-aggregator"),
    )
    .unwrap();
    // systemd's own units (targets the service depends on by default).
    let st = Command::new("cp")
        .args(["-r", "/lib/systemd/system"])
        .arg(r.join("usr/lib/systemd/"))
        .status()
        .unwrap();
    assert!(st.success());
    root
}

/// (exit code, what systemd printed).
fn verify(root: &Path) -> (Option<i32>, String) {
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .arg("tt-aggregator.service")
        .output()
        .expect("systemd-analyze (package systemd)");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), said)
}

#[test]
fn the_unit_and_its_metrics_drop_in_pass_systemd_analyze_verify_without_a_warning() {
    for drop_in in [false, true] {
        let root = system_root("unit", drop_in);
        let (code, said) = verify(root.path());
        assert_eq!(code, Some(0), "drop-in {drop_in}: {said}");
        assert_eq!(said.trim(), "", "drop-in {drop_in}: systemd warned: {said}");
    }
    // The check can fail: a unit with a key systemd does not know is reported.
    let root = system_root("unit-bad", true);
    let bad = root
        .path()
        .join("etc/systemd/system/tt-aggregator.service.d/typo.conf");
    std::fs::write(&bad, "[Service]\nRestartSecs=1\n").unwrap();
    let (_, said) = verify(root.path());
    assert!(said.contains("Unknown key"), "{said}");
    // And one whose binary is missing.
    let root = system_root("unit-nobin", false);
    std::fs::remove_file(root.path().join("usr/bin/tt-aggregator")).unwrap();
    let (code, said) = verify(root.path());
    assert_ne!(code, Some(0), "{said}");
}

/// The arguments the unit and the drop-in give, as systemd splits them, are ones
/// tt-aggregator takes: it starts with them (on a private directory and port).
#[test]
fn the_units_arguments_start_the_aggregator() {
    let unit =
        std::fs::read_to_string(repo_dir().join("contrib/systemd/tt-aggregator.service")).unwrap();
    let drop_in = std::fs::read_to_string(
        repo_dir().join("contrib/systemd/tt-aggregator.service.d/metrics.conf"),
    )
    .unwrap();
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart");
    let extra = drop_in
        .lines()
        .find_map(|l| l.strip_prefix("Environment=\"TTTRACK_AGGREGATOR_ARGS="))
        .and_then(|v| v.strip_suffix('"'))
        .expect("the drop-in's arguments");
    let args: Vec<String> = exec
        .replace("$TTTRACK_AGGREGATOR_ARGS", extra)
        .split_whitespace()
        .skip(1)
        .map(String::from)
        .collect();
    assert_eq!(
        args[..2],
        ["--dir".to_string(), "/dev/shm/tttrack".to_string()]
    );
    assert_eq!(
        args[2..],
        ["--metrics-addr".to_string(), "0.0.0.0:9464".to_string()]
    );
    // The same flags, on a private directory and a free port.
    let dir = TempDir::new("unit-args");
    let mut agg = Command::new(env!("CARGO_BIN_EXE_tt-aggregator"))
        .arg(&args[0])
        .arg(dir.path())
        .arg(&args[2])
        .arg("127.0.0.1:0")
        .args([
            "--no-compat-socket",
            "--sysfs-root",
            "/nonexistent-tttrack-sysfs",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let line = wait_line(&mut agg, "   metrics: http://");
    assert!(line.contains("/metrics"), "{line}");
    let _ = agg.kill();
    let _ = agg.wait();
}
