//! Builds what the wheel carries beside the extension: the tools (`tt-aggregator`,
//! `tt-smi`, `tt-track`) and `libtttrack.so`, in release, from the crate one directory
//! up, into `tttrack/_bin/` (the package's own launchers run them: `tttrack._cli`).
//! `pip install ./python` then gives everything; `TTTRACK_WHEEL_TOOLS=0` builds the
//! extension alone.
//!
//! The tools are built by a cargo of their own, with a target directory of their own
//! (beside this build's): the outer cargo holds its own directory's lock.

use std::path::{Path, PathBuf};
use std::process::Command;

/// What the wheel carries, as cargo names them in `target/release`.
const TOOLS: [&str; 4] = ["tt-aggregator", "tt-smi", "tt-track", "libtttrack.so"];

fn main() {
    let here = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let root = here.parent().expect("the crate's directory").to_path_buf();
    for p in ["src", "cabi", "Cargo.toml", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", root.join(p).display());
    }
    println!("cargo:rerun-if-env-changed=TTTRACK_WHEEL_TOOLS");
    let bin = here.join("tttrack/_bin");
    if std::env::var("TTTRACK_WHEEL_TOOLS").is_ok_and(|v| v == "0") {
        let _ = std::fs::remove_dir_all(&bin);
        return;
    }
    let target = tools_target_dir();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // A clean environment: nothing of this build (its profile, flags, features, the
    // jobserver) leaks into the other.
    let mut cmd = Command::new(cargo);
    cmd.env_clear();
    for k in ["PATH", "HOME", "CARGO_HOME", "RUSTUP_HOME", "RUSTUP_TOOLCHAIN", "TMPDIR"] {
        if let Some(v) = std::env::var_os(k) {
            cmd.env(k, v);
        }
    }
    let status = cmd
        .args(["build", "--release", "--locked", "--bins", "--lib", "--manifest-path"])
        .arg(root.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        .status()
        .expect("running cargo to build the tools");
    assert!(status.success(), "building the tools the wheel carries failed");
    std::fs::create_dir_all(&bin).expect("tttrack/_bin");
    for t in TOOLS {
        let from = target.join("release").join(t);
        let to = bin.join(t);
        // Replaced, not written over: a tool that runs keeps its file.
        let _ = std::fs::remove_file(&to);
        std::fs::copy(&from, &to).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
        set_executable(&to);
    }
}

/// `$CARGO_TARGET_DIR/wheel-tools`, else `wheel-tools` beside this build's target
/// directory (OUT_DIR is `<target>/<profile>/build/<package>/out`).
fn tools_target_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(d).join("wheel-tools");
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    out.ancestors()
        .nth(4)
        .map(Path::to_path_buf)
        .unwrap_or(out)
        .join("wheel-tools")
}

fn set_executable(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755));
}
