//! The C headers agree with the Rust layout, and a C program links against the library.

mod common;
use common::*;

#[test]
fn c_header_sizes_and_offsets_match_rust() {
    let prog = c_program("layout");
    let out = std::process::Command::new(&prog).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let c: std::collections::HashMap<String, usize> = text
        .lines()
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect();
    let mut rust = tttrack::shm_layout::layout_table();
    rust.extend(tttrack::counters_page::layout_table());
    for (name, v) in &rust {
        assert_eq!(
            c.get(*name),
            Some(v),
            "{name}: C header says {:?}, Rust says {v}",
            c.get(*name)
        );
    }
    assert_eq!(
        c.len(),
        rust.len(),
        "the C side checks exactly what the Rust side asserts"
    );
}

#[test]
fn library_exports_exactly_the_documented_c_abi() {
    let out = std::process::Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(lib_path())
        .output()
        .expect("nm (binutils)");
    let text = String::from_utf8_lossy(&out.stdout);
    for sym in [
        "tttrack_enabled",
        "tttrack_alloc",
        "tttrack_free",
        "tttrack_cb_alloc",
        "tttrack_cb_free",
        "tttrack_kernel_load",
        "tttrack_kernel_unload",
        "tttrack_device_info",
        "tttrack_device_identity",
        "tttrack_dropped_events",
        "tttrack_thread_detach",
    ] {
        assert!(
            text.lines().any(|l| l.ends_with(&format!(" T {sym}"))),
            "{sym} not exported"
        );
        let header = std::fs::read_to_string(repo_dir().join("cabi/tttrack.h")).unwrap();
        assert!(
            header.contains(&format!(" {sym}(")),
            "{sym} not declared in tttrack.h"
        );
    }
    // The AllocationClient members that LD_PRELOAD takes over (the list tt-track
    // doctor looks for in a TT-Metal library).
    for sym in tttrack::producer::ffi::allocation_client::SYMBOLS {
        assert!(
            text.lines().any(|l| l.ends_with(&format!(" T {sym}"))),
            "{sym} not exported"
        );
    }
}
