//! The recorder's children: the command, its orphans (the recorder is their
//! subreaper) and the private aggregator, waited for and reaped once the recording has
//! them.

use super::Seen;
use std::path::Path;
use std::process::Child;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long an ended child with a segment is kept unreaped for the aggregator to take
/// it into the recording.
const HOLD_FOR_RECORDING: Duration = Duration::from_secs(2);

/// A child of ours that has ended, left unreaped (`WNOWAIT`); None if there is none
/// (with `block`, once we have no children left).
fn ended_child(block: bool) -> Option<i32> {
    loop {
        // SAFETY: an all-zero siginfo_t is valid; waitid fills it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let flags = libc::WEXITED | libc::WNOWAIT | if block { 0 } else { libc::WNOHANG };
        // SAFETY: waitid with a valid siginfo pointer.
        let r = unsafe { libc::waitid(libc::P_ALL, 0, &mut info, flags) };
        if r < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return None;
        }
        // SAFETY: filled by waitid for a child that changed state (0 when WNOHANG
        // found none).
        let pid = unsafe { info.si_pid() };
        return (pid > 0).then_some(pid);
    }
}

/// Reaps our ended child `pid`, once the recording has it: a child that reported (it
/// has a segment in `dir`) stays a zombie until the aggregator has announced it on the
/// stream, [`HOLD_FOR_RECORDING`] at most. A zombie keeps its `/proc` entry, so the
/// aggregator still sees that it descends from us; reaped at once, a command that ends
/// before its segment is found would be left out. Returns its wait status.
fn reap(pid: i32, dir: &Path, seen: &Mutex<Seen>) -> i32 {
    let t = Instant::now();
    let recorded = || {
        let s = seen.lock().unwrap_or_else(|e| e.into_inner());
        s.started.contains(&(pid as u32))
    };
    if has_segment(dir, pid as u32) {
        while t.elapsed() < HOLD_FOR_RECORDING && !recorded() {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let mut st = 0;
    // SAFETY: waitpid with a valid status pointer, for a child that has ended.
    while unsafe { libc::waitpid(pid, &mut st, 0) } < 0
        && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
    {}
    if pid as u32 == PRIVATE_AGGREGATOR.load(std::sync::atomic::Ordering::Relaxed) {
        PRIVATE_AGGREGATOR_REAPED.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    st
}

/// Whether our ended child `pid` has a segment in `dir`: the one named for it and its
/// start time (a zombie's `/proc` entry still has it), owned by us. In a shared
/// directory anyone may make files with any name; one of another user's does not count.
fn has_segment(dir: &Path, pid: u32) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(info) = tttrack::sys::proc_info(Path::new("/proc"), pid) else {
        return false;
    };
    let name = tttrack::shm_layout::segment_file_name(pid, info.start_time);
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    std::fs::symlink_metadata(dir.join(name)).is_ok_and(|m| m.is_file() && m.uid() == me)
}

/// The private aggregator's pid (0: none), and whether [`reap`] reaped it (it is our
/// child too, and may end early): then its pid is no longer its, and nobody may signal
/// or wait for it.
pub(super) static PRIVATE_AGGREGATOR: std::sync::atomic::AtomicU32 =
    std::sync::atomic::AtomicU32::new(0);
pub(super) static PRIVATE_AGGREGATOR_REAPED: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Waits for CMD; returns its wait status. Orphans it leaves become our children
/// (we are their subreaper): reaped as they end ([`reap`]).
pub(super) fn wait_for(child: &Child, dir: &Path, seen: &Mutex<Seen>) -> i32 {
    let pid = child.id() as i32;
    while let Some(p) = ended_child(true) {
        let st = reap(p, dir, seen);
        if p == pid {
            return st;
        }
    }
    0
}

/// Our children still running, but for `except` (the private aggregator): orphans of
/// the command. Those that ended are reaped on the way ([`reap`]).
pub(super) fn orphans_running(except: Option<u32>, dir: &Path, seen: &Mutex<Seen>) -> bool {
    while let Some(p) = ended_child(false) {
        reap(p, dir, seen);
    }
    let me = std::process::id();
    let proc_root = Path::new("/proc");
    std::fs::read_dir(proc_root)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
                .is_some_and(|p| {
                    Some(p) != except && tttrack::sys::parent_of(proc_root, p) == Some(me)
                })
        })
}
