//! The C headers agree with the Rust layout, and a C program links against the library.

mod common;
use common::*;

/// Every size, offset and constant the Rust side asserts, as one table.
fn rust_layout() -> Vec<(&'static str, usize)> {
    let mut rust = tttrack::shm_layout::layout_table();
    rust.extend(tttrack::counters_page::layout_table());
    rust
}

/// `BufferDetail` -> `tttrack_buffer_detail_t`: the C header's name of a shared struct.
fn c_type(rust: &str) -> String {
    let mut s = String::from("tttrack_");
    for (i, c) in rust.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            s.push('_');
        }
        s.push(c.to_ascii_lowercase());
    }
    s + "_t"
}

/// A C program, generated from the Rust table, that prints what the C header says of
/// each entry: `sizeof X`, `X.f` (offsetof), `const C` (the header's `TTTRACK_C`).
fn c_checker(table: &[(&str, usize)]) -> String {
    let mut c = String::from(
        "#include <stddef.h>\n#include <stdio.h>\n#include \"tttrack_shm.h\"\nint main(void) {\n",
    );
    for (name, _) in table {
        let expr = if let Some(t) = name.strip_prefix("sizeof ") {
            format!("sizeof({})", c_type(t))
        } else if let Some(k) = name.strip_prefix("const ") {
            format!("(TTTRACK_{k})")
        } else {
            let (t, f) = name.split_once('.').unwrap();
            format!("offsetof({}, {f})", c_type(t))
        };
        c.push_str(&format!(
            "    printf(\"%s %llu\\n\", \"{name}\", (unsigned long long){expr});\n"
        ));
    }
    c.push_str("    return 0;\n}\n");
    c
}

#[test]
fn c_header_sizes_and_offsets_match_rust() {
    // The checker is generated from the Rust table: every entry the Rust side asserts
    // at compile time is looked up in the C header, none written twice by hand.
    let rust = rust_layout();
    let dir = target_dir().join("c-test-programs");
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join(format!("layout-{}.c", std::process::id()));
    let exe = dir.join(format!("layout-{}", std::process::id()));
    std::fs::write(&src, c_checker(&rust)).unwrap();
    let cc = std::process::Command::new("cc")
        .args(["-O0", "-Wall", "-Werror", "-o"])
        .arg(&exe)
        .arg(&src)
        .arg("-I")
        .arg(repo_dir().join("cabi"))
        .output()
        .expect("cc");
    assert!(
        cc.status.success(),
        "cabi/tttrack_shm.h lacks what the Rust layout has:\n{}",
        String::from_utf8_lossy(&cc.stderr)
    );
    let out = std::process::Command::new(&exe).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let c: std::collections::HashMap<String, usize> = text
        .lines()
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect();
    for (name, v) in &rust {
        assert_eq!(
            c.get(*name),
            Some(v),
            "{name}: C header says {:?}, Rust says {v}",
            c.get(*name)
        );
    }
    assert_eq!(c.len(), rust.len());
}

/// The shared structs (`#[repr(C)]` in src/shm_layout.rs and src/counters_page.rs)
/// and their fields, read from the source.
fn shared_structs() -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for file in ["src/shm_layout.rs", "src/counters_page.rs"] {
        let text = std::fs::read_to_string(repo_dir().join(file)).unwrap();
        let mut lines = text.lines();
        // Set by `#[repr(C...)]`, taken by the next item.
        let mut repr_c = false;
        while let Some(l) = lines.next() {
            let t = l.trim();
            if t.starts_with("#[repr(C") {
                repr_c = true;
                continue;
            }
            let item = ["pub struct ", "struct ", "pub enum ", "enum ", "pub union "]
                .iter()
                .any(|k| t.starts_with(k));
            if !item {
                continue;
            }
            if repr_c && t.starts_with("pub struct ") && t.ends_with('{') {
                let name = t["pub struct ".len()..].trim_end_matches('{').trim();
                let mut fields = Vec::new();
                for f in lines.by_ref() {
                    let f = f.trim();
                    if f == "}" {
                        break;
                    }
                    if let Some((n, _)) = f.strip_prefix("pub ").and_then(|r| r.split_once(':')) {
                        fields.push(n.trim().to_string());
                    }
                }
                out.push((name.to_string(), fields));
            }
            repr_c = false;
        }
    }
    out
}

#[test]
fn every_field_of_every_shared_struct_is_checked() {
    let table: std::collections::HashSet<&str> = rust_layout().iter().map(|e| e.0).collect();
    let structs = shared_structs();
    assert!(
        structs.iter().any(|(n, _)| n == "DeviceRecord")
            && structs.iter().any(|(n, _)| n == "SegmentHeader"),
        "the source reader found the shared structs: {structs:?}"
    );
    let mut missing = Vec::new();
    for (name, fields) in &structs {
        if !table.contains(format!("sizeof {name}").as_str()) {
            missing.push(format!("sizeof {name}"));
        }
        // Padding and reserved words (named with a leading _) need no name in C.
        for f in fields.iter().filter(|f| !f.starts_with('_')) {
            let k = format!("{name}.{f}");
            if !table.contains(k.as_str()) {
                missing.push(k);
            }
        }
    }
    assert!(
        missing.is_empty(),
        "shared fields whose offset no table asserts (add them to shared_layout!): {missing:?}"
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
        "tttrack_buffer_detail",
        "tttrack_bank_geometry",
        "tttrack_buffer_mesh",
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
