//! `tt-track doctor` on real set-ups: a healthy one (aggregator, a simulated card laid
//! out as the kernel does, a tracked process holding it), then the same with what goes
//! wrong (tracking off, a process holding the card without reporting, the aggregator
//! stopped), and TT-Metal stand-in libraries built with and without PLT calls.

mod common;
use common::*;
use std::process::{Command, Output};
use tttrack::devices::simulated::{set_holders, SimCard};

fn doctor(dir: &std::path::Path, root: &std::path::Path, tracking: bool, extra: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tt-track"));
    c.arg("doctor")
        .arg("--dir")
        .arg(dir)
        .arg("--sysfs-root")
        .arg(root)
        .args(["--compat-socket", "/nonexistent-tttrack-compat.sock"])
        .args(extra)
        // TT-Metal's regions of this machine (or of tests/metal.rs) are not this test's.
        .env("TTTRACK_METAL_SHM_DIR", "/nonexistent-tttrack-metal-shm")
        .env_remove("TT_ALLOC_TRACKING_ENABLED");
    if tracking {
        c.env("TT_ALLOC_TRACKING_ENABLED", "1");
    }
    c.output().expect("tt-track doctor")
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn a_healthy_setup_is_all_ok_and_each_fault_is_named_with_what_to_do() {
    let dir = TempDir::new("doctor");
    let root = TempDir::new("doctor-sysfs");
    SimCard::wormhole(0, "0000:01:00.0", "n150")
        .install(root.path())
        .unwrap();
    let root_s = root.path().to_str().unwrap();
    let mut agg = AggProc::start(dir.path(), &["--sysfs-root", root_s]);
    let mut hold = spawn_producer(dir.path(), &["hold", "60", "1"], 0);
    wait_line(&mut hold, "ready");
    let hp = hold.id();
    agg.wait_for(
        || {
            agg.snapshot()
                .is_some_and(|s| s.processes.iter().any(|p| p.pid == hp))
        },
        "the holder tracked",
    );
    set_holders(root.path(), 0, &[hp]).unwrap();

    let ok = doctor(dir.path(), root.path(), true, &[]);
    let t = text(&ok);
    assert_eq!(ok.status.code(), Some(0), "{t}");
    assert!(!t.contains("FIX"), "{t}");
    assert!(
        t.contains("OK   tracking: TT_ALLOC_TRACKING_ENABLED=1"),
        "{t}"
    );
    assert!(
        t.contains(&format!("OK   aggregator: pid {}", agg.child.id())),
        "{t}"
    );
    assert!(
        t.contains("OK   card: 0 (wormhole_b0 n150 at 0000:01:00.0): 45 °C, 25 W"),
        "{t}"
    );
    assert!(t.contains("NOTE compatibility socket"), "{t}");

    // A process holding the card without reporting, and tracking off here.
    let mut quiet = Command::new("sleep").arg("60").spawn().unwrap();
    set_holders(root.path(), 0, &[hp, quiet.id()]).unwrap();
    let bad = doctor(dir.path(), root.path(), false, &[]);
    let t = text(&bad);
    assert_eq!(bad.status.code(), Some(1), "{t}");
    assert!(
        t.contains("FIX  tracking: TT_ALLOC_TRACKING_ENABLED is not 1 here"),
        "{t}"
    );
    assert!(t.contains("export TT_ALLOC_TRACKING_ENABLED=1"), "{t}");
    assert!(
        t.contains(&format!(
            "FIX  untracked: pid {} (sleep) has card 0 open but reports nothing",
            quiet.id()
        )),
        "{t}"
    );
    assert!(
        !t.contains(&format!("pid {hp} (")),
        "the tracked holder is not named: {t}"
    );

    // The aggregator stopped (SIGSTOP: its page stays, its heartbeat ages), then gone.
    // SAFETY: signalling our own child.
    unsafe { libc::kill(agg.child.id() as i32, libc::SIGSTOP) };
    std::thread::sleep(std::time::Duration::from_millis(2600));
    let t = text(&doctor(dir.path(), root.path(), true, &[]));
    assert!(t.contains("has not published for"), "{t}");
    assert!(
        t.contains(&format!("`kill -CONT {}`", agg.child.id())),
        "{t}"
    );
    // SAFETY: as above.
    unsafe { libc::kill(agg.child.id() as i32, libc::SIGCONT) };
    let _ = agg.child.kill();
    let _ = agg.child.wait();
    let out = doctor(dir.path(), root.path(), true, &[]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("FIX  aggregator: none runs on this directory")
            || t.contains("left its counters page but is gone"),
        "{t}"
    );
    assert!(
        t.contains(&format!("tt-aggregator --dir {}", dir.path().display())),
        "{t}"
    );
    let _ = quiet.kill();
    let _ = quiet.wait();
    let _ = hold.kill();
    let _ = hold.wait();
}

/// A host without cards, as this one: said, with what to check.
#[test]
fn no_cards_says_to_check_the_driver() {
    let dir = TempDir::new("doctor-nocards");
    let root = TempDir::new("doctor-nocards-sysfs");
    let t = text(&doctor(dir.path(), root.path(), true, &[]));
    assert!(t.contains("FIX  cards: none under"), "{t}");
    assert!(t.contains("modprobe tenstorrent"), "{t}");
}

#[test]
fn a_metal_library_calling_through_its_plt_can_be_taken_over_one_bound_directly_cannot() {
    let (_model, libdir) = fake_metal();
    let dir = TempDir::new("doctor-lib");
    let root = TempDir::new("doctor-lib-sysfs");
    let plt = libdir.join("libfake_metal.so");
    let t = text(&doctor(
        dir.path(),
        root.path(),
        true,
        &["--metal-lib", plt.to_str().unwrap()],
    ));
    assert!(t.contains("OK   TT-Metal library:"), "{t}");
    assert!(
        t.contains("AllocationClient functions through its PLT"),
        "{t}"
    );

    // The same source linked with -Bsymbolic: its own calls bound inside it.
    let direct = libdir.join("libfake_metal_symbolic.so");
    let ok = Command::new("g++")
        .args(["-O2", "-shared", "-fPIC", "-Wl,-Bsymbolic", "-o"])
        .arg(&direct)
        .arg(repo_dir().join("tests/cpp/fake_metal.cpp"))
        .status()
        .unwrap()
        .success();
    assert!(ok, "building the -Bsymbolic stand-in");
    let out = doctor(
        dir.path(),
        root.path(),
        true,
        &["--metal-lib", direct.to_str().unwrap()],
    );
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("defines AllocationClient and calls it directly"),
        "{t}"
    );
    assert!(t.contains("compatibility socket"), "{t}");

    // A library that has nothing to do with it, and a file that is not a library.
    let other = libdir.join("libother.so");
    let src = libdir.join("other.c");
    std::fs::write(&src, "int other(int x) { return x + 1; }\n").unwrap();
    let ok = Command::new("gcc")
        .args(["-O2", "-shared", "-fPIC", "-o"])
        .arg(&other)
        .arg(&src)
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let t = text(&doctor(
        dir.path(),
        root.path(),
        true,
        &["--metal-lib", other.to_str().unwrap()],
    ));
    assert!(
        t.contains("neither calls nor defines AllocationClient"),
        "{t}"
    );
    let t = text(&doctor(
        dir.path(),
        root.path(),
        true,
        &["--metal-lib", src.to_str().unwrap()],
    ));
    assert!(t.contains("not an ELF file"), "{t}");
}
