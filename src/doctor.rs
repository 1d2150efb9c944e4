//! `tt-track doctor`: the troubleshooting steps as one command. Each line says OK, or
//! what is wrong and what to do; a NOTE is worth knowing but not wrong. The exit
//! status is 1 when anything is wrong.

pub mod elf;

use crate::counters_page::{CountersReader, PageError, Snapshot, PROC_UNTRACKED};
use crate::counters_page::{HEARTBEAT_STALL_SAMPLES, TEL_HEARTBEAT};
use crate::producer::ffi::allocation_client::SYMBOLS;
use crate::sys;
use std::path::{Path, PathBuf};

/// What to look at.
#[derive(Debug, Clone)]
pub struct Options {
    pub dir: PathBuf,
    pub sysfs_root: PathBuf,
    pub compat_socket: PathBuf,
    pub metal_lib: Option<PathBuf>,
    /// Where TT-Metal's own regions are (`/dev/shm` normally).
    pub metal_shm_dir: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    Note,
    Fix,
}

/// One finding.
#[derive(Debug, Clone)]
pub struct Finding {
    pub verdict: Verdict,
    pub topic: &'static str,
    pub text: String,
}

fn found(verdict: Verdict, topic: &'static str, text: impl Into<String>) -> Finding {
    Finding {
        verdict,
        topic,
        text: text.into(),
    }
}

/// Every finding, in the order a person would check them.
pub fn examine(o: &Options) -> Vec<Finding> {
    let mut v = vec![tracking_enabled(), tracking_dir(&o.dir)];
    let snap = aggregator(&o.dir, &mut v);
    v.push(compat_socket(&o.compat_socket));
    cards(o, snap.as_ref(), &mut v);
    metal_regions(&o.metal_shm_dir, &mut v);
    if let Some(lib) = &o.metal_lib {
        v.push(metal_lib(lib));
    }
    v
}

/// Prints the findings; returns the exit status.
pub fn report(findings: &[Finding]) -> i32 {
    for f in findings {
        let tag = match f.verdict {
            Verdict::Ok => "OK  ",
            Verdict::Note => "NOTE",
            Verdict::Fix => "FIX ",
        };
        println!("{tag} {}: {}", f.topic, f.text);
    }
    let wrong = findings
        .iter()
        .filter(|f| f.verdict == Verdict::Fix)
        .count();
    if wrong == 0 {
        println!("tt-track doctor: nothing wrong found");
        0
    } else {
        println!("tt-track doctor: {wrong} thing(s) to fix (the FIX lines)");
        1
    }
}

fn tracking_enabled() -> Finding {
    match std::env::var("TT_ALLOC_TRACKING_ENABLED") {
        Ok(v) if v == "1" => found(
            Verdict::Ok,
            "tracking",
            "TT_ALLOC_TRACKING_ENABLED=1 here: workloads started from this environment report",
        ),
        _ => found(
            Verdict::Fix,
            "tracking",
            "TT_ALLOC_TRACKING_ENABLED is not 1 here, so workloads started from this environment report nothing: `export TT_ALLOC_TRACKING_ENABLED=1` first, or start them with `tt-track run -- CMD`",
        ),
    }
}

fn tracking_dir(dir: &Path) -> Finding {
    use std::os::unix::fs::MetadataExt;
    let from = if std::env::var_os("TTTRACK_DIR").is_some() {
        " (from TTTRACK_DIR)"
    } else {
        ""
    };
    match std::fs::symlink_metadata(dir) {
        Err(_) => found(
            Verdict::Fix,
            "directory",
            format!(
                "{}{from} does not exist: start tt-aggregator, which makes it",
                dir.display()
            ),
        ),
        Ok(m) if !m.file_type().is_dir() => found(
            Verdict::Fix,
            "directory",
            format!(
                "{}{from} is not a directory (a link?): remove it and start tt-aggregator",
                dir.display()
            ),
        ),
        Ok(m) => found(
            Verdict::Ok,
            "directory",
            format!(
                "{}{from}, mode {:o}, owned by uid {}",
                dir.display(),
                m.mode() & 0o7777,
                m.uid()
            ),
        ),
    }
}

/// The aggregator's state from its page; the snapshot if one is running.
fn aggregator(dir: &Path, v: &mut Vec<Finding>) -> Option<Snapshot> {
    let start = format!("start one: `tt-aggregator --dir {}`", dir.display());
    let r = match CountersReader::open(dir) {
        Ok(r) => r,
        Err(PageError::Missing) => {
            v.push(found(
                Verdict::Fix,
                "aggregator",
                format!("none runs on this directory (no counters page): {start}"),
            ));
            return None;
        }
        Err(e) => {
            v.push(found(Verdict::Fix, "aggregator", format!("{e}")));
            return None;
        }
    };
    let Some(s) = r.view().snapshot() else {
        v.push(found(
            Verdict::Fix,
            "aggregator",
            "its counters page could not be read consistently: it may be stopped mid-write; restart it",
        ));
        return None;
    };
    let age = sys::unix_ns().saturating_sub(s.status.heartbeat_unix_ns) as f64 / 1e9;
    let pid = s.status.pid;
    if !Path::new(&format!("/proc/{pid}")).exists() {
        v.push(found(
            Verdict::Fix,
            "aggregator",
            format!("pid {pid} left its counters page but is gone (killed?): {start}"),
        ));
        return None;
    }
    if age > 2.0 {
        v.push(found(
            Verdict::Fix,
            "aggregator",
            format!("pid {pid} has not published for {age:.1} s (stopped or hung): `kill -CONT {pid}`, or restart it"),
        ));
        return Some(s);
    }
    v.push(found(
        Verdict::Ok,
        "aggregator",
        format!(
            "pid {pid}, heartbeat {age:.2} s old, {} events applied, {} lost, {} processes tracked",
            s.status.events_applied, s.status.events_lost, s.status.processes_tracked
        ),
    ));
    Some(s)
}

fn compat_socket(path: &Path) -> Finding {
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return found(
            Verdict::Ok,
            "compatibility socket",
            format!(
                "{} accepts connections: builds reporting over the original socket are tracked",
                path.display()
            ),
        );
    }
    found(
        Verdict::Note,
        "compatibility socket",
        format!(
            "{} is not served: only builds that report over the original socket need it (tt-aggregator serves it unless --no-compat-socket)",
            path.display()
        ),
    )
}

/// The driver's cards, their telemetry, and the processes holding them.
fn cards(o: &Options, snap: Option<&Snapshot>, v: &mut Vec<Finding>) {
    let sample = crate::devices::sample(&o.sysfs_root, &Default::default(), sys::unix_ns());
    if sample.devices.is_empty() {
        v.push(found(
            Verdict::Fix,
            "cards",
            format!(
                "none under {}: is the tt-kmd driver loaded (`lsmod | grep tenstorrent`; `modprobe tenstorrent`)?",
                o.sysfs_root.join("sys/class/tenstorrent").display()
            ),
        ));
        return;
    }
    for (d, t, _) in &sample.devices {
        let mut readings = Vec::new();
        if let Some(c) = t.temp_c() {
            readings.push(format!("{c:.0} °C"));
        }
        if let Some(w) = t.power_w() {
            readings.push(format!("{w:.0} W"));
        }
        let what = format!("{} {} at {}", d.arch, d.board, d.pci_bdf);
        if readings.is_empty() {
            v.push(found(
                Verdict::Fix,
                "card",
                format!("{} ({what}): no telemetry in its hwmon (a driver too old for it, or the card is in reset)", d.id),
            ));
        } else {
            v.push(found(
                Verdict::Ok,
                "card",
                format!("{} ({what}): {}", d.id, readings.join(", ")),
            ));
        }
        let stalled = snap
            .and_then(|s| s.devices.iter().find(|r| r.id == d.id))
            .is_some_and(|r| {
                r.telemetry.has(TEL_HEARTBEAT)
                    && r.telemetry.heartbeat_stalled_samples >= HEARTBEAT_STALL_SAMPLES
            });
        if stalled {
            v.push(found(
                Verdict::Fix,
                "card",
                format!(
                    "{}: its firmware heartbeat has stopped: reset the card (`tt-smi -r`)",
                    d.id
                ),
            ));
        }
    }
    holders(&sample, snap, o, v);
}

/// Processes that have a card open but report nothing.
fn holders(
    sample: &crate::devices::Sample,
    snap: Option<&Snapshot>,
    o: &Options,
    v: &mut Vec<Finding>,
) {
    let me = std::process::id();
    let tracked = |pid: u32| {
        snap.is_some_and(|s| {
            s.status.pid == pid
                || s.processes
                    .iter()
                    .any(|p| p.pid == pid && p.flags & PROC_UNTRACKED == 0)
        })
    };
    let proc_root = o.sysfs_root.join("proc");
    for (d, _, pids) in &sample.devices {
        for &pid in pids.iter().filter(|&&p| p != me && !tracked(p)) {
            let comm = sys::proc_info(&proc_root, pid)
                .or_else(|| sys::proc_info(Path::new("/proc"), pid))
                .map_or_else(|| "?".to_string(), |i| i.comm);
            v.push(found(
                Verdict::Fix,
                "untracked",
                format!(
                    "pid {pid} ({comm}) has card {} open but reports nothing: start it with TT_ALLOC_TRACKING_ENABLED=1 (an instrumented build), or under `tt-track run`",
                    d.id
                ),
            ));
        }
    }
}

/// Whether a TT-Metal library's AllocationClient calls can be taken over with
/// LD_PRELOAD: only calls bound through a relocation (the PLT) can.
fn metal_lib(lib: &Path) -> Finding {
    let topic = "TT-Metal library";
    let bytes = match std::fs::read(lib) {
        Ok(b) => b,
        Err(e) => {
            return found(
                Verdict::Fix,
                topic,
                format!("cannot read {}: {e}", lib.display()),
            )
        }
    };
    let l = match elf::linkage(&bytes) {
        Ok(l) => l,
        Err(e) => return found(Verdict::Fix, topic, format!("{}: {e}", lib.display())),
    };
    if l.defined.contains(METAL_STATS_CONSTRUCTOR)
        || l.defined
            .contains(crate::producer::metal_hook::PUSH_PROCESSOR)
    {
        let stats = if l.defined.contains(METAL_STATS_CONSTRUCTOR) {
            "its own shared-memory stats are read by tt-aggregator and tt-smi (counters per process and chip, no rebuild, no LD_PRELOAD)"
        } else {
            "it writes no shared-memory stats"
        };
        return match crate::producer::metal_hook::check_file(&bytes) {
            Ok(what) => found(
                Verdict::Ok,
                topic,
                format!(
                    "{} is a stock TT-Metal: {stats}; its buffers can be tracked one by one through its graph hook (`tt-track run`, or LD_PRELOAD=libtttrack.so with TT_ALLOC_TRACKING_ENABLED=1): {what}",
                    lib.display()
                ),
            ),
            Err(why) => found(
                Verdict::Note,
                topic,
                format!(
                    "{} is a stock TT-Metal: {stats}; its graph hook cannot be used by this tttrack ({why}), so no per-buffer detail",
                    lib.display()
                ),
            ),
        };
    }
    let relocated = SYMBOLS.iter().filter(|s| l.relocated.contains(**s)).count();
    let defined = SYMBOLS.iter().filter(|s| l.defined.contains(**s)).count();
    if relocated > 0 {
        return found(
            Verdict::Ok,
            topic,
            format!(
                "{} calls {relocated} AllocationClient functions through its PLT: `LD_PRELOAD=libtttrack.so` (as `tt-track run` does) takes them over",
                lib.display()
            ),
        );
    }
    if defined > 0 {
        return found(
            Verdict::Fix,
            topic,
            format!(
                "{} defines AllocationClient and calls it directly (linked with -Bsymbolic, hidden visibility or LTO): LD_PRELOAD cannot take those calls over; let it report over the compatibility socket (tt-aggregator serves it), or build it with cabi/allocation_client.hpp",
                lib.display()
            ),
        );
    }
    found(
        Verdict::Fix,
        topic,
        format!(
            "{} neither calls nor defines AllocationClient: not an instrumented TT-Metal build (build TT-Metal with its allocation tracking, or with cabi/allocation_client.hpp)",
            lib.display()
        ),
    )
}

/// The constructor of TT-Metal's own shared-memory stats (exported by a stock build).
const METAL_STATS_CONSTRUCTOR: &str = "_ZN2tt8tt_metal25SharedMemoryStatsProviderC1Emibb";

/// TT-Metal's own regions: which there are, their versions, whether TT-Metal's
/// tracking is off here, which cannot be read, and slots left by processes that are
/// gone (with how to clear them: the region is TT-Metal's, tttrack never writes it).
fn metal_regions(dir: &Path, v: &mut Vec<Finding>) {
    use crate::metal_shm::reader::{Gone, Reader, Refusal};
    let topic = "TT-Metal regions";
    if std::env::var_os("TT_METAL_SHM_TRACKING_DISABLED").is_some_and(|x| x == "1") {
        v.push(found(
            Verdict::Note,
            topic,
            "TT_METAL_SHM_TRACKING_DISABLED=1 here: TT-Metal processes started from this environment write no region, so tttrack sees their memory only if they report through libtttrack.so",
        ));
    }
    let s = Reader::new(dir, Path::new("/proc"), false).look();
    if s.regions.is_empty() && s.refused.is_empty() {
        v.push(found(
            Verdict::Note,
            topic,
            format!(
                "none in {} (a stock TT-Metal process writes tt_device_<N>_memory there for each chip it opens)",
                dir.display()
            ),
        ));
    } else if !s.regions.is_empty() {
        let mut versions: Vec<String> = s
            .regions
            .iter()
            .map(|r| format!("v{}", r.version))
            .collect();
        versions.sort();
        versions.dedup();
        v.push(found(
            Verdict::Ok,
            topic,
            format!(
                "{} read in {} (layout {}), {} live process slot{}",
                s.regions.len(),
                dir.display(),
                versions.join(", "),
                s.live.len(),
                if s.live.len() == 1 { "" } else { "s" }
            ),
        ));
    }
    let unreadable: Vec<&String> = s
        .refused
        .iter()
        .filter(|(_, r)| matches!(r, Refusal::NoPermission { .. }))
        .map(|(f, _)| f)
        .collect();
    if !unreadable.is_empty() {
        v.push(found(
            Verdict::Note,
            topic,
            format!(
                "{} cannot be read by this user (TT-Metal makes them mode 0600): run tt-track doctor as root, or as their owner; tt-aggregator run as root reads them all",
                unreadable.iter().map(|f| f.as_str()).collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    for (f, why) in &s.refused {
        if !matches!(why, Refusal::NoPermission { .. } | Refusal::TooMany { .. }) {
            v.push(found(
                Verdict::Note,
                topic,
                format!("{}/{f} is not read: {why}", dir.display()),
            ));
        }
    }
    for l in &s.left {
        let why = match l.why {
            Gone::Exited => "has exited",
            Gone::PidReused => "is gone (its pid now names a newer process)",
        };
        v.push(found(
            Verdict::Fix,
            topic,
            format!(
                "{}/{} still counts {} for pid {} ({}), which {why}: TT-Metal (layouts 1-3) never clears a crashed process's slot, so that file's totals stay wrong. tttrack shows these bytes as left behind, in no live figure. To clear it, when no process uses that chip any more: rm {}/{} (TT-Metal makes it anew; tttrack never writes it)",
                dir.display(),
                l.file,
                sys::human_bytes(crate::counters_page::device_bytes(&l.used)),
                l.pid,
                l.name,
                dir.display(),
                l.file
            ),
        ));
    }
}
