//! Attacks by an unprivileged local user (uid 65534) on a root aggregator and a root
//! process reporting through `libtttrack.so`: planted links and directories, links
//! swapped in while sockets are published, a held lock, alias segment names, escape
//! codes in a process name. Each checks that no file outside the aggregator's own
//! changed and that the root process's figures stay exact. CI runs as root.

mod common;
use common::*;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use tttrack::counters_page::*;

const NOBODY: u32 = 65534;

fn require_root() {
    assert_eq!(
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() },
        0,
        "these tests switch to uid 65534 and must run as root, as CI does"
    );
}

/// A tracking directory as the default one is: root's, mode 1777.
fn shared_dir(tag: &str) -> (TempDir, PathBuf) {
    let base = TempDir::new(tag);
    std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir = base.path().join("tttrack");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
    (base, dir)
}

/// A root-owned 0600 file with known content: what an attacker would like changed.
fn victim(base: &Path, name: &str) -> PathBuf {
    let p = base.join(name);
    std::fs::write(&p, "root's secret\n").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

fn assert_untouched(p: &Path) {
    let m = std::fs::metadata(p).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o600, "{} was chmodded", p.display());
    assert_eq!(m.uid(), 0);
    assert_eq!(
        std::fs::read_to_string(p).unwrap(),
        "root's secret\n",
        "{} was written",
        p.display()
    );
}

/// A root process holding `n` MiB of DRAM on device 0, killed when dropped.
struct Holder(std::process::Child);
impl Holder {
    fn id(&self) -> u32 {
        self.0.id()
    }
    fn kill(&mut self) -> std::io::Result<()> {
        self.0.kill()
    }
    fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        self.0.wait()
    }
    fn try_wait(&mut self) -> std::io::Result<Option<std::process::ExitStatus>> {
        self.0.try_wait()
    }
}
impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn root_holder(dir: &Path, n: u64) -> Holder {
    let mut p = spawn_producer(dir, &["hold", "600", &n.to_string()], 0);
    wait_line(&mut p, "ready");
    Holder(p)
}

fn dram_of(agg: &AggProc, pid: u32) -> Option<u64> {
    agg.snapshot()
        .and_then(|s| proc_dev(&s, pid, 0).map(|d| d.used[CAT_DRAM]))
}

/// Attack 1: a private directory and journal links planted before the first start.
#[test]
fn a_planted_private_directory_is_moved_aside_and_never_followed() {
    require_root();
    let (base, dir) = shared_dir("hostile-planted");
    let v1 = victim(base.path(), "victim-journal");
    let v2 = victim(base.path(), "victim-state");
    let d = dir.display();
    let s = as_nobody(&format!(
        "mkdir -m 777 {d}/aggregator && ln -s {} {d}/aggregator/journal.0 && \
         ln -s {} {d}/aggregator/.state.1.tmp && ln -s {} {d}/aggregator/lock && \
         printf 'forged' > {d}/aggregator/state.1",
        v1.display(),
        v2.display(),
        v1.display()
    ));
    assert!(s.success());
    let mut agg = AggProc::start(&dir, &[]);
    let mut holder = root_holder(&dir, 3);
    let pid = holder.id();
    agg.wait_for(
        || dram_of(&agg, pid) == Some(3 << 20),
        "the root process's 3 MiB",
    );
    assert!(
        agg.output()
            .contains("could not be trusted (it belongs to uid 65534"),
        "{}",
        agg.output()
    );
    // SIGTERM: a final snapshot is written; then a restart replays the journal.
    agg.stop();
    let agg = AggProc::start(&dir, &[]);
    agg.wait_for(
        || dram_of(&agg, pid) == Some(3 << 20),
        "the figures after a restart",
    );
    let priv_dir = std::fs::symlink_metadata(dir.join("aggregator")).unwrap();
    assert!(priv_dir.is_dir() && priv_dir.uid() == 0 && priv_dir.mode() & 0o777 == 0o700);
    assert_untouched(&v1);
    assert_untouched(&v2);
    let _ = holder.kill();
    let _ = holder.wait();
}

/// Attack 2: the published socket names swapped for links to a root file while the
/// aggregator starts and stops, in the shared tracking directory; and a tracking
/// directory the attacker owns (which it could swap for a link) is refused outright.
#[test]
fn sockets_are_never_chmodded_through_a_swapped_link() {
    require_root();
    let (base, dir) = shared_dir("hostile-swap");
    let v = victim(base.path(), "victim-socket");
    let stop = base.path().join("stop");
    let d = dir.display();
    let mut swapper = Command::new("sh")
        .args([
            "-c",
            &format!(
                "while [ ! -e {stop} ]; do for n in wake.sock aggregator.sock; do \
                 rm -f {d}/$n 2>/dev/null; ln -s {v} {d}/$n 2>/dev/null; done; done",
                stop = stop.display(),
                v = v.display()
            ),
        ])
        .uid(NOBODY)
        .gid(NOBODY)
        .spawn()
        .unwrap();
    for _ in 0..3 {
        let mut agg = AggProc::start(&dir, &[]);
        agg.wait_for(|| agg.snapshot().is_some(), "the page");
        agg.stop();
    }
    std::fs::write(&stop, "").unwrap();
    let _ = swapper.wait();
    assert_untouched(&v);

    let theirs = base.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::os::unix::fs::chown(&theirs, Some(NOBODY), Some(NOBODY)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tt-aggregator"))
        .args(["--dir", theirs.to_str().unwrap(), "--no-compat-socket"])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "a directory uid 65534 owns is not used"
    );
    assert_eq!(std::fs::read_dir(&theirs).unwrap().count(), 0);
}

/// Attack 4: the lock. The old lock name held with a shared lock stops nothing, and
/// the real lock cannot be opened by another user.
#[test]
fn another_user_cannot_hold_the_lock() {
    require_root();
    let (_base, dir) = shared_dir("hostile-lock");
    let d = dir.display();
    let mut holder = Command::new("flock")
        .args(["-s", &format!("{d}/aggregator.lock"), "sleep", "60"])
        .uid(NOBODY)
        .gid(NOBODY)
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    for _ in 0..2 {
        let mut agg = AggProc::start(&dir, &[]);
        agg.wait_for(|| agg.snapshot().is_some(), "a started aggregator");
        let s = as_nobody(&format!("exec 3<{d}/aggregator/lock"));
        assert!(!s.success(), "uid 65534 opened the aggregator's lock");
        agg.stop();
    }
    let _ = holder.kill();
    let _ = holder.wait();
}

/// Attack 3: segments of uid 65534's under alias names of a root process's segment
/// (`seg.0PID.START`, `seg.+PID.START`), and under its exact name pattern in another
/// directory-entry form, claiming root's pid and start time, unlocked as if dead: none
/// is taken for root's process, root's figures stay exact, root's process runs on.
#[test]
fn alias_and_forged_dead_segments_never_touch_another_users_process() {
    require_root();
    let (base, dir) = shared_dir("hostile-alias");
    let agg = AggProc::start(&dir, &[]);
    let mut holder = root_holder(&dir, 10);
    let pid = holder.id();
    agg.wait_for(|| dram_of(&agg, pid) == Some(10 << 20), "root's 10 MiB");
    let seg = segment_of(&dir, pid);
    let name = seg.file_name().unwrap().to_string_lossy().into_owned();
    let rest = name.strip_prefix("seg.").unwrap().to_string();
    let start: u64 = rest.split_once('.').unwrap().1.parse().unwrap();
    let own = base.path().join("attacker");
    std::fs::create_dir(&own).unwrap();
    std::fs::set_permissions(&own, std::fs::Permissions::from_mode(0o1777)).unwrap();
    // Made elsewhere, moved in by uid 65534 (as the attacker would write its own file).
    for (i, alias) in [
        format!("seg.0{rest}"),
        format!("seg.+{rest}"),
        format!("seg.00{rest}"),
    ]
    .iter()
    .enumerate()
    {
        let made = own.join(format!("forged{i}"));
        forged_segment(&made, pid, NOBODY, start, 3 << 30);
        let s = as_nobody(&format!("mv {} {}/{alias}", made.display(), dir.display()));
        assert!(s.success());
    }
    // A compatibility-socket client's or a dead process's name with root's pid: the
    // header claims root's process, the file is uid 65534's.
    let other_start = start + 1;
    let made = own.join("forged-dead");
    forged_segment(&made, pid, NOBODY, other_start, 3 << 30);
    let s = as_nobody(&format!(
        "mv {} {}/seg.{pid}.{other_start}",
        made.display(),
        dir.display()
    ));
    assert!(s.success());
    std::thread::sleep(std::time::Duration::from_millis(1500)); // past a directory scan
    let snap = agg.snapshot().unwrap();
    assert_eq!(dram_of(&agg, pid), Some(10 << 20), "root's figures");
    let root_rows: Vec<_> = snap
        .processes
        .iter()
        .filter(|p| p.pid == pid && p.uid == 0)
        .collect();
    assert_eq!(root_rows.len(), 1);
    assert!(
        root_rows[0].flags & PROC_EXACT != 0,
        "root's process is still exact"
    );
    assert!(
        holder.try_wait().unwrap().is_none(),
        "the root process runs on"
    );
    // Root's process was never taken for dead or re-attached; the forged file with a
    // start time of its own is counted as what it is: uid 65534's own dead process.
    let log = agg.output();
    assert!(!log.contains("re-attached"), "{log}");
    assert_eq!(
        log.matches(&format!("pid {pid} (producer")).count(),
        1,
        "{log}"
    );
    let _ = holder.kill();
    let _ = holder.wait();
    agg.wait_for(
        || dram_of(&agg, pid).is_none(),
        "root's process released at its end",
    );
}

/// Attack 11: a process whose name carries terminal escape codes: printed nowhere raw.
#[test]
fn escape_codes_in_a_process_name_are_never_printed_raw() {
    require_root();
    let (_base, dir) = shared_dir("hostile-escape");
    let agg = AggProc::start(&dir, &["-v"]);
    let script = r#"
import ctypes, sys
libc = ctypes.CDLL(None)
libc.prctl(15, b"\x1b[2J\x1b]0;pw\x07", 0, 0, 0)   # PR_SET_NAME
lib = ctypes.CDLL(None)
lib.tttrack_alloc.argtypes = [ctypes.c_int32, ctypes.c_uint64, ctypes.c_uint8, ctypes.c_uint64]
lib.tttrack_alloc(0, 5 << 20, 0, 0x1000)
print("ok", flush=True)
sys.stdin.readline()
"#;
    let mut p = tracked_python(&dir, script);
    wait_line(&mut p, "ok");
    let pid = p.id();
    agg.wait_for(
        || dram_of(&agg, pid) == Some(5 << 20),
        "the program's 5 MiB",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_tt-smi"))
        .args(["--buffers", "--dir", dir.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains(&pid.to_string()), "{text}");
    let plain = Command::new(env!("CARGO_BIN_EXE_tt-smi"))
        .args(["--dir", dir.to_str().unwrap()])
        .output()
        .unwrap();
    for (what, bytes) in [
        ("tt-smi --buffers", out.stdout.as_slice()),
        ("tt-smi", plain.stdout.as_slice()),
        ("the aggregator's log", agg.output().as_bytes()),
    ] {
        assert!(
            !bytes.iter().any(|&b| b == 0x1b || b == 0x07),
            "{what} printed a raw escape code:\n{}",
            String::from_utf8_lossy(bytes)
        );
    }
    drop(p.stdin.take());
    let _ = p.wait();
}

/// Attack 9: a socket client that connected and ended before it was looked at is never
/// bound to the process that gets its pid next: identification goes through a pidfd
/// taken at connect time.
#[test]
fn a_socket_client_is_bound_to_its_own_process_not_to_its_pid() {
    let base = TempDir::new("hostile-peer");
    let path = base.path().join("s.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let connect = format!(
        "import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect('{}'); print('c', flush=True); sys.stdin.readline()",
        path.display()
    );
    // One that ends before we accept.
    let mut gone = Command::new("python3")
        .args(["-c", &connect])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_line(&mut gone, "c");
    drop(gone.stdin.take());
    gone.wait().unwrap();
    let (conn, _) = listener.accept().unwrap();
    assert!(
        tttrack::peer::identify_peer(&conn, Path::new("/proc")).is_none(),
        "an ended client must not be identified by its (reusable) pid"
    );
    // One that is still there.
    let mut here = Command::new("python3")
        .args(["-c", &connect])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_line(&mut here, "c");
    let (conn, _) = listener.accept().unwrap();
    let peer = tttrack::peer::identify_peer(&conn, Path::new("/proc")).expect("a live peer");
    assert_eq!(peer.pid, here.id());
    assert!(peer.pidfd.is_some());
    drop(here.stdin.take());
    let _ = here.wait();
}

/// Samples the aggregator while `busy` runs: the oldest its page's heartbeat got and
/// its largest resident memory.
struct Watch {
    max_age: std::time::Duration,
    max_rss_kib: u64,
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn watch_while(agg: &AggProc, mut busy: impl FnMut() -> bool) -> Watch {
    let mut w = Watch {
        max_age: std::time::Duration::ZERO,
        max_rss_kib: 0,
    };
    while busy() {
        if let Some(s) = agg.snapshot() {
            let age = tttrack::sys::unix_ns().saturating_sub(s.status.heartbeat_unix_ns);
            w.max_age = w.max_age.max(std::time::Duration::from_nanos(age));
        }
        w.max_rss_kib = w.max_rss_kib.max(rss_kib(agg.child.id()));
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    w
}

/// A compatibility-socket client of uid 65534's sending alloc/free pairs with fresh ids
/// as fast as it can for `secs` seconds.
fn flooding_client(sock: &Path, secs: u32) -> std::process::Child {
    let script = format!(
        r#"
import socket, struct, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect({sock:?})
fmt = '<BxxxiQBxxxiQQ' + 'Q'*6 + 'Q'*2 + 'I'*6 + 'I'*4
def msg(t, i): return struct.pack(fmt, t, 0, 4096, 0, 0, i, 0, *([0]*6), 0, 0, *([0]*6), *([0]*4))
end = time.time() + {secs}
i = 1
while time.time() < end:
    blob = b''.join(msg(1, i + k) + msg(2, i + k) for k in range(2000))
    i += 2000
    s.sendall(blob)
"#,
        sock = sock.to_str().unwrap()
    );
    Command::new("python3")
        .args(["-c", &script])
        .uid(NOBODY)
        .gid(NOBODY)
        .spawn()
        .unwrap()
}

/// Attack 5: two clients of uid 65534's flood the compatibility socket while a root
/// process reports through its lanes: the root process loses nothing, the heartbeat
/// stays fresh, the aggregator's memory stays bounded.
#[test]
fn a_compatibility_socket_flood_slows_no_one_else() {
    require_root();
    let _h = heavy();
    let (base, dir) = shared_dir("hostile-flood");
    let sock = base.path().join("compat.sock");
    let agg = AggProc::start(&dir, &["--compat-socket", sock.to_str().unwrap()]);
    agg.wait_for(|| sock.exists(), "the compatibility socket");
    let mut floods = [flooding_client(&sock, 6), flooding_client(&sock, 6)];
    std::thread::sleep(std::time::Duration::from_millis(500));
    let mut root = spawn_producer(&dir, &["pairs", "1", "2000000"], 0);
    let w = watch_while(&agg, || root.try_wait().unwrap().is_none());
    eprintln!(
        "compat flood: heartbeat at most {:?} old, aggregator RSS at most {} KiB",
        w.max_age, w.max_rss_kib
    );
    let out = root.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("dropped 0"),
        "the root process dropped events: {text}"
    );
    for f in &mut floods {
        let _ = f.kill();
        let _ = f.wait();
    }
    assert!(
        w.max_age < std::time::Duration::from_millis(500),
        "heartbeat {:?} old during the flood",
        w.max_age
    );
    assert!(
        w.max_rss_kib < 256 * 1024,
        "aggregator RSS {} KiB",
        w.max_rss_kib
    );
}

/// Attack 6: with many buffers held, eight request clients of uid 65534's ask for
/// every buffer and never read; draining goes on, and an answer is bounded.
#[test]
fn buffers_requests_are_bounded_and_never_stall_draining() {
    require_root();
    let _h = heavy();
    let (_base, dir) = shared_dir("hostile-requests");
    let agg = AggProc::start(&dir, &[]);
    let mut holder = root_holder(&dir, 200_000);
    let pid = holder.id();
    agg.wait_for(
        || dram_of(&agg, pid) == Some(200_000 << 20),
        "200,000 buffers held",
    );
    let sock = dir.join("aggregator.sock");
    let mut askers: Vec<_> = (0..8)
        .map(|_| {
            Command::new("python3")
                .args([
                    "-c",
                    &format!(
                        "import socket,time; s=socket.socket(socket.AF_UNIX); s.connect({:?}); s.sendall(b'buffers limit=100000\\n'); time.sleep(8)",
                        sock.to_str().unwrap()
                    ),
                ])
                .uid(NOBODY)
                .gid(NOBODY)
                .spawn()
                .unwrap()
        })
        .collect();
    let mut root = spawn_producer(&dir, &["pairs", "1", "1000000"], 0);
    let w = watch_while(&agg, || root.try_wait().unwrap().is_none());
    eprintln!(
        "8 pending buffers requests: heartbeat at most {:?} old, aggregator RSS at most {} KiB",
        w.max_age, w.max_rss_kib
    );
    let out = root.wait_with_output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("dropped 0"));
    assert!(
        w.max_age < std::time::Duration::from_millis(500),
        "heartbeat {:?} old while requests were pending",
        w.max_age
    );
    // An answer is at most the default limit, with a line saying what was left out.
    let text = tttrack::control::request(&dir, "buffers").unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), tttrack::control::DEFAULT_BUFFERS_ANSWER + 1);
    let last: serde_json::Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert_eq!(last["truncated"], true);
    assert_eq!(last["total"], 200_000);
    let smi = Command::new(env!("CARGO_BIN_EXE_tt-smi"))
        .args(["--buffers", "--dir", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&smi.stdout).contains("the 10000 largest of 200000 live buffers")
    );
    for a in &mut askers {
        let _ = a.kill();
        let _ = a.wait();
    }
    let _ = holder.kill();
}

/// Attack 7: one process of uid 65534's allocating more distinct buffers than one
/// process may: the excess is refused and counted lost for it alone.
#[test]
fn buffers_beyond_the_per_process_bound_are_counted_lost_for_that_process() {
    require_root();
    let _h = heavy();
    let (_base, dir) = shared_dir("hostile-bound");
    let agg = AggProc::start(&dir, &[]);
    let mut root = root_holder(&dir, 3);
    let rpid = root.id();
    let over = tttrack::accounting::MAX_BUFFERS_PER_PROCESS as u64 + 500;
    let mut p = Command::new(c_program("producer"))
        .args(["keep", "1", &over.to_string()])
        .env("TT_ALLOC_TRACKING_ENABLED", "1")
        .env("TTTRACK_DIR", &dir)
        .env("PRODUCER_LINGER_MS", "30000")
        .stdout(std::process::Stdio::piped())
        .uid(NOBODY)
        .gid(NOBODY)
        .spawn()
        .unwrap();
    let pid = p.id();
    wait_line(&mut p, "dropped");
    agg.wait_for(
        || {
            agg.snapshot().is_some_and(|s| {
                s.processes.iter().any(|x| {
                    x.pid == pid
                        && x.events_lost == 500
                        && x.buffers as usize == tttrack::accounting::MAX_BUFFERS_PER_PROCESS
                })
            })
        },
        "the bound reached, 500 counted lost",
    );
    let s = agg.snapshot().unwrap();
    let me = s.processes.iter().find(|x| x.pid == pid).unwrap();
    assert_eq!(me.flags & PROC_EXACT, 0, "marked inexact");
    assert_eq!(dram_of(&agg, rpid), Some(3 << 20));
    let r = s.processes.iter().find(|x| x.pid == rpid).unwrap();
    assert!(r.flags & PROC_EXACT != 0 && r.events_lost == 0);
    assert!(
        agg.output().contains("the most one process may"),
        "{}",
        agg.output()
    );
    let _ = p.kill();
    let _ = p.wait();
    let _ = root.kill();
}

/// Attack 8: hundreds of idle compatibility connections of uid 65534's: beyond its
/// bound they are refused, and a root process that starts afterwards is tracked.
#[test]
fn idle_connections_of_one_user_cannot_exhaust_the_aggregator() {
    require_root();
    let (base, dir) = shared_dir("hostile-fds");
    let sock = base.path().join("compat.sock");
    let agg = AggProc::start(&dir, &["--compat-socket", sock.to_str().unwrap()]);
    agg.wait_for(|| sock.exists(), "the compatibility socket");
    let n = tttrack::aggregator::limits::MAX_COMPAT_CONNECTIONS_PER_UID + 72;
    let mut hog = Command::new("python3")
        .args([
            "-c",
            &format!(
                "import socket,sys\nss=[]\nfor i in range({n}):\n    s=socket.socket(socket.AF_UNIX); s.connect({:?}); ss.append(s)\nprint('open', flush=True)\nsys.stdin.readline()",
                sock.to_str().unwrap()
            ),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .uid(NOBODY)
        .gid(NOBODY)
        .spawn()
        .unwrap();
    wait_line(&mut hog, "open");
    agg.wait_for(
        || agg.output().contains("already has 128 connections open"),
        "the refusals logged",
    );
    let fds = std::fs::read_dir(format!("/proc/{}/fd", agg.child.id()))
        .unwrap()
        .count();
    assert!(fds < 128 + 100, "the aggregator holds {fds} descriptors");
    let holder = root_holder(&dir, 4);
    agg.wait_for(
        || dram_of(&agg, holder.id()) == Some(4 << 20),
        "a new root process tracked",
    );
    drop(hog.stdin.take());
    let _ = hog.wait();
}

/// Attack 10 and the reader's read-ahead: forged drop counts and sequence gaps near
/// 2^64 saturate the process's loss count instead of wrapping it; a head pushed a
/// lane's capacity ahead again and again is taken as a broken lane, not read without
/// end; another process's figures and the aggregator's memory are unaffected.
#[test]
fn forged_counters_saturate_and_a_runaway_head_is_not_followed() {
    require_root();
    let (_base, dir) = shared_dir("hostile-counters");
    let agg = AggProc::start(&dir, &[]);
    let holder = root_holder(&dir, 2);
    let own = OwnSegment::create(&dir);
    let v = own.view();
    let ev = |seq: u64| alloc_event(seq, 4096, seq);
    v.lane(0)
        .dropped
        .store(u64::MAX - 10, std::sync::atomic::Ordering::Relaxed);
    for (pos, seq) in [0u64, u64::MAX - 3, u64::MAX - 1].into_iter().enumerate() {
        v.header()
            .seq
            .store(seq, std::sync::atomic::Ordering::Relaxed);
        tttrack::producer::publish(v, 0, pos as u64, ev(seq));
    }
    let me = std::process::id();
    agg.wait_for(
        || {
            agg.snapshot().is_some_and(|s| {
                s.processes
                    .iter()
                    .any(|p| p.pid == me && p.events_applied == 3)
            })
        },
        "the three events applied, the gaps skipped",
    );
    let s = agg.snapshot().unwrap();
    let p = s.processes.iter().find(|p| p.pid == me).unwrap();
    assert_eq!(p.events_lost, u64::MAX, "saturated, not wrapped");
    assert_eq!(s.status.events_lost, u64::MAX);
    let base_rss = rss_kib(agg.child.id());
    // Now the head runs away: a capacity ahead of what was given back, again and again.
    let cap = tttrack::shm_layout::LANE_CAPACITY as u64;
    let mut head = 3u64;
    let t = std::time::Instant::now();
    while t.elapsed() < std::time::Duration::from_secs(2) {
        head += cap;
        v.lane(0)
            .head
            .store(head, std::sync::atomic::Ordering::Release);
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    agg.wait_for(
        || agg.output().contains("lane 0"),
        "the runaway lane reported",
    );
    let grew = rss_kib(agg.child.id()).saturating_sub(base_rss);
    assert!(grew < 16 * 1024, "the aggregator grew by {grew} KiB");
    assert_eq!(
        dram_of(&agg, holder.id()),
        Some(2 << 20),
        "the other process's figures"
    );
    assert!(agg.child.id() > 0 && agg.snapshot().is_some());
}

/// Attack 6, through the compatibility socket: a client of uid 65534's asking for the
/// remaining-buffers dump over and over while 200,000 buffers are held. Each dump lists
/// at most 10,000 (the group lines count every buffer), dumps get a bounded share of
/// the draining thread, and a root process reporting meanwhile loses nothing.
#[test]
fn compatibility_dumps_are_bounded_and_share_the_draining_thread() {
    require_root();
    let _h = heavy();
    let (base, dir) = shared_dir("hostile-dumps");
    let sock = base.path().join("compat.sock");
    let agg = AggProc::start(&dir, &["--compat-socket", sock.to_str().unwrap()]);
    agg.wait_for(|| sock.exists(), "the compatibility socket");
    let holder = root_holder(&dir, 200_000);
    agg.wait_for(
        || dram_of(&agg, holder.id()) == Some(200_000 << 20),
        "200,000 buffers",
    );
    let script = format!(
        r#"
import socket, struct, time
fmt = '<BxxxiQBxxxiQQ' + 'Q'*6 + 'Q'*2 + 'I'*6 + 'I'*4
dump = struct.pack(fmt, 5, 0, 0, 0, 0, 0, 0, *([0]*6), 0, 0, *([0]*6), *([0]*4))
end = time.time() + 4
first = None
while time.time() < end:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect({sock:?})
    s.sendall(dump * 20)
    s.shutdown(socket.SHUT_WR)
    data = b''
    while True:
        b = s.recv(1 << 20)
        if not b: break
        data += b
    if first is None:
        first = data
        print(len(data.splitlines()), flush=True)
"#,
        sock = sock.to_str().unwrap()
    );
    let mut dumper = Command::new("python3")
        .args(["-c", &script])
        .stdout(std::process::Stdio::piped())
        .uid(NOBODY)
        .gid(NOBODY)
        .spawn()
        .unwrap();
    let mut root = spawn_producer(&dir, &["pairs", "1", "1000000"], 0);
    let w = watch_while(&agg, || root.try_wait().unwrap().is_none());
    eprintln!(
        "compatibility dumps: heartbeat at most {:?} old, aggregator RSS at most {} KiB",
        w.max_age, w.max_rss_kib
    );
    let out = root.wait_with_output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("dropped 0"));
    assert!(
        w.max_age < std::time::Duration::from_millis(500),
        "heartbeat {:?}",
        w.max_age
    );
    let lines: usize = wait_line(&mut dumper, "").trim().parse().unwrap_or(0);
    // 20 dumps of at most 10,000 buffer lines, a header, group lines and a trailer each.
    assert!(lines > 0 && lines <= 20 * (10_000 + 10), "{lines} lines");
    let _ = dumper.kill();
    let _ = dumper.wait();
}

/// Attack (round two, 1): 300,000 empty files named like segments in the tracking
/// directory, made by uid 65534 while a root process reports 500,000 events a second.
/// Each refused name costs nothing on later sweeps (remembered by inode), a sweep reads
/// a bounded number of names a pass, and the log says one user's junk in a few lines:
/// the heartbeat stays fresh and the root process drops nothing.
#[test]
fn three_hundred_thousand_junk_names_stall_nothing() {
    require_root();
    let _heavy = heavy();
    let (_base, dir) = shared_dir("junk300k");
    let agg = AggProc::start(&dir, &[]);
    let mut root = spawn_producer(&dir, &["paced", "500000", "12"], 0);
    wait_line(&mut root, "ready");
    let script = format!(
        "python3 -c 'import os, sys\nd = sys.argv[1]\nfor i in range(300000):\n    os.close(os.open(\"%s/seg.%d.%d\" % (d, 5000000 + i, i + 1), os.O_CREAT | os.O_WRONLY, 0o644))' {}",
        dir.display()
    );
    let attacker = std::thread::spawn(move || as_nobody(&script));
    // The page's heartbeat, every 20 ms, for as long as the root process reports.
    let mut ages = heartbeat_ages(&agg, std::time::Duration::from_secs(11));
    let worst = ages.iter().copied().max().unwrap_or(0);
    assert!(
        attacker.join().unwrap().success(),
        "the attacker's script failed"
    );
    let sent = wait_line(&mut root, "sent ");
    let dropped = wait_line(&mut root, "dropped ");
    let _ = root.wait();
    ages.sort_unstable();
    let p99 = ages[ages.len() * 99 / 100];
    eprintln!(
        "300,000 junk names: heartbeat age worst {} ms, 99th percentile {} ms; root {} {}",
        worst / 1_000_000,
        p99 / 1_000_000,
        sent.trim(),
        dropped.trim()
    );
    assert_eq!(
        dropped.trim(),
        "dropped 0",
        "the root process dropped events"
    );
    assert!(
        worst < 200_000_000,
        "heartbeat {} ms old at worst",
        worst / 1_000_000
    );
    let n: u64 = sent.trim().trim_start_matches("sent ").parse().unwrap();
    agg.wait_for(
        || agg.snapshot().is_some_and(|s| s.status.events_applied >= n),
        "every event of the root process applied",
    );
    agg.wait_for(
        || {
            agg.output()
                .contains("more names of uid 65534's rejected as segments")
        },
        "the count of what was not said",
    );
    let log = agg.output();
    let lines = log.lines().filter(|l| l.contains("uid 65534")).count();
    assert!(
        lines <= 5,
        "{lines} log lines about one user's junk:\n{log}"
    );
}

/// Attack (round two, 5): a process of uid 65534 named `error` (and one named
/// `refused`) holding buffers. Root's `tt-smi --buffers` and the Python API list them:
/// answers carry their status as a JSON key, never guessed from text.
#[test]
fn processes_named_error_and_refused_are_buffers_like_any() {
    require_root();
    let (base, dir) = shared_dir("named-error");
    let agg = AggProc::start(&dir, &[]);
    let bin = base.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut kids = Vec::new();
    for name in ["error", "refused"] {
        let exe = bin.join(name);
        std::fs::copy(c_program("producer"), &exe).unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut c = Command::new(&exe)
            .args(["hold", "60", "1"])
            .env("TT_ALLOC_TRACKING_ENABLED", "1")
            .env("TTTRACK_DIR", &dir)
            .uid(NOBODY)
            .gid(NOBODY)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        wait_line(&mut c, "ready");
        kids.push(c);
    }
    agg.wait_for(
        || agg.snapshot().is_some_and(|s| s.processes.len() == 2),
        "both processes",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_tt-smi"))
        .args(["--buffers", "--dir", dir.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in ["error", "refused"] {
        assert!(
            text.lines()
                .any(|l| l.split_whitespace().nth(1) == Some(name)),
            "{name} missing:\n{text}"
        );
    }
    let py = Command::new(venv_python())
        .args([
            "-c",
            "import sys, tttrack\nprint(sorted(b.comm for b in tttrack.buffers(dir=sys.argv[1])))",
        ])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        py.status.success(),
        "{}",
        String::from_utf8_lossy(&py.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&py.stdout).trim(),
        "['error', 'refused']"
    );
    for mut k in kids {
        let _ = k.kill();
        let _ = k.wait();
    }
}

/// Attack (round two, 6): uid 65534 plants a directory all may write with a fresh
/// counters page and a request socket of its own (its own tt-aggregator). Root's
/// clients do not read them and say which check failed: tt-smi, `--buffers`, and the
/// Python API (`is_available()` false, `UntrustedError`).
#[test]
fn a_page_and_socket_of_another_user_are_not_trusted() {
    require_root();
    let base = TempDir::new("planted");
    // Like /tmp or /dev/shm: anyone may make a directory there.
    std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let dir = base.path().join("theirs");
    assert!(as_nobody(&format!("mkdir -m 1777 {}", dir.display())).success());
    let log = TempDir::new("planted-log");
    let log = log.path().join("agg.log");
    let mut theirs = Command::new(env!("CARGO_BIN_EXE_tt-aggregator"))
        .args([
            "--dir",
            dir.to_str().unwrap(),
            "--no-compat-socket",
            "--no-metal-shm",
        ])
        .args(["--sysfs-root", "/nonexistent-tttrack-sysfs"])
        .uid(NOBODY)
        .gid(NOBODY)
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t = std::time::Instant::now();
    while !dir.join("aggregator.sock").exists() {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(10),
            "their aggregator did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let d = dir.to_str().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tt-smi"))
        .args(["--dir", d])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("belongs to uid 65534, neither root nor you"),
        "{err}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_tt-smi"))
        .args(["--buffers", "--dir", d])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("served by uid 65534, neither root nor you"),
        "{err}"
    );
    let py = Command::new(venv_python())
        .args([
            "-c",
            "import sys, tttrack\n\
             print(tttrack.is_available(sys.argv[1]))\n\
             for f in (tttrack.buffers, tttrack.processes):\n\
             \x20   try:\n\
             \x20       f(dir=sys.argv[1])\n\
             \x20   except tttrack.UntrustedError as e:\n\
             \x20       print('untrusted')\n",
        ])
        .arg(d)
        .output()
        .unwrap();
    assert!(
        py.status.success(),
        "{}",
        String::from_utf8_lossy(&py.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&py.stdout),
        "False\nuntrusted\nuntrusted\n"
    );
    let _ = theirs.kill();
    let _ = theirs.wait();
}

/// A server that dribbles its answer, or sends without end, costs a client at most its
/// deadline and its bound (a server of root's or the caller's own: one that is
/// trusted but broken).
#[test]
fn a_client_reads_within_a_deadline_and_a_bound() {
    use std::io::Write;
    let dir = TempDir::new("dribble");
    let sock = dir.path().join("aggregator.sock");
    let l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    std::thread::spawn(move || {
        for (i, c) in l.incoming().flatten().enumerate() {
            std::thread::spawn(move || {
                let mut c = c;
                let chunk = vec![b'x'; 1 << 16];
                loop {
                    let ok = if i == 0 {
                        std::thread::sleep(std::time::Duration::from_millis(200));
                        c.write_all(b"x").is_ok()
                    } else {
                        c.write_all(&chunk).is_ok()
                    };
                    if !ok {
                        return;
                    }
                }
            });
        }
    });
    let t = std::time::Instant::now();
    let r = tttrack::control::request_within(
        dir.path(),
        "buffers",
        std::time::Duration::from_secs(1),
        1 << 20,
    );
    assert!(
        matches!(r, Err(tttrack::control::RequestError::Timeout)),
        "{r:?}"
    );
    assert!(t.elapsed() < std::time::Duration::from_secs(2));
    let r = tttrack::control::request_within(
        dir.path(),
        "buffers",
        std::time::Duration::from_secs(10),
        1 << 20,
    );
    assert!(
        matches!(r, Err(tttrack::control::RequestError::TooLong)),
        "{r:?}"
    );
}

/// Runs `code` with python3 as `uid`, with `args`.
fn python_as(uid: u32, code: &str, args: &[&str]) -> std::process::Child {
    Command::new("python3")
        .arg("-c")
        .arg(code)
        .args(args)
        .uid(uid)
        .gid(uid)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("python3")
}

/// Eight users: 65534 and seven uids without accounts.
const ATTACKERS: [u32; 8] = [65534, 60001, 60002, 60003, 60004, 60005, 60006, 60007];

/// Attack (round two, 4): 8 users x 8 connections to the request socket, each sending
/// one byte every half second and connecting again when closed. A request line has 2 s
/// in all (not per read), and root is bound per uid only: root's `tt-smi --buffers` and
/// `tt-track record` are served throughout.
#[test]
fn slowloris_on_the_request_socket_leaves_root_a_way_in() {
    require_root();
    let _heavy = heavy();
    let (_base, dir) = shared_dir("slowloris");
    let mut agg = AggProc::start(&dir, &[]);
    let mut holder = spawn_producer(&dir, &["hold", "60", "1"], 0);
    wait_line(&mut holder, "ready");
    let code = "import socket, sys, threading, time\n\
                p, end = sys.argv[1], time.time() + float(sys.argv[2])\n\
                def run():\n\
                \x20   while time.time() < end:\n\
                \x20       try:\n\
                \x20           s = socket.socket(socket.AF_UNIX)\n\
                \x20           s.connect(p)\n\
                \x20           while time.time() < end:\n\
                \x20               s.send(b'b')\n\
                \x20               time.sleep(0.5)\n\
                \x20       except OSError:\n\
                \x20           time.sleep(0.02)\n\
                ts = [threading.Thread(target=run) for _ in range(8)]\n\
                [t.start() for t in ts]\n\
                [t.join() for t in ts]\n";
    let sock = dir.join("aggregator.sock");
    let attackers: Vec<_> = ATTACKERS
        .iter()
        .map(|&u| python_as(u, code, &[sock.to_str().unwrap(), "8"]))
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let out = TempDir::new("slowloris-out");
    for round in 0..3 {
        let t = std::time::Instant::now();
        let o = Command::new(env!("CARGO_BIN_EXE_tt-smi"))
            .args(["--buffers", "--dir", dir.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(
            o.status.code(),
            Some(0),
            "round {round}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        eprintln!("tt-smi --buffers under slowloris: {:?}", t.elapsed());
        let o = Command::new(env!("CARGO_BIN_EXE_tt-track"))
            .args(["record", "-o"])
            .arg(out.path().join(format!("r{round}.ttrec")))
            .args(["--", "true"])
            .env("TTTRACK_DIR", &dir)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "round {round}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        std::thread::sleep(std::time::Duration::from_millis(700));
    }
    for mut a in attackers {
        let _ = a.wait();
    }
    assert!(agg.child.try_wait().unwrap().is_none());
    let _ = holder.kill();
    let _ = holder.wait();
}

/// Attack (round two, 3): four users each hold four recording streams that never read.
/// Other users can take all slots but one: root's `tt-track record` still runs.
#[test]
fn idle_recordings_of_other_users_leave_root_a_slot() {
    require_root();
    let (_base, dir) = shared_dir("idle-recs");
    let _agg = AggProc::start(&dir, &[]);
    let code = "import socket, sys, time\n\
                socks = []\n\
                for _ in range(4):\n\
                \x20   s = socket.socket(socket.AF_UNIX)\n\
                \x20   s.connect(sys.argv[1])\n\
                \x20   s.sendall(b'record epoch_ms=0\\n')\n\
                \x20   s.recv(3)\n\
                \x20   socks.append(s)\n\
                time.sleep(float(sys.argv[2]))\n";
    let sock = dir.join("aggregator.sock");
    let holders: Vec<_> = ATTACKERS[..4]
        .iter()
        .map(|&u| python_as(u, code, &[sock.to_str().unwrap(), "8"]))
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let out = TempDir::new("idle-recs-out");
    let o = Command::new(env!("CARGO_BIN_EXE_tt-track"))
        .args(["record", "-o"])
        .arg(out.path().join("root.ttrec"))
        .args(["--", "true"])
        .env("TTTRACK_DIR", &dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for mut h in holders {
        let _ = h.kill();
        let _ = h.wait();
    }
}

/// Idle streams end: another user's recording with no process of it for the idle
/// timeout (here 1 s) is ended by the aggregator, its connection closed.
#[test]
fn idle_recordings_of_other_users_time_out() {
    require_root();
    let (_base, dir) = shared_dir("idle-timeout");
    let agg = AggProc::start(&dir, &["--recording-idle-timeout", "1"]);
    let sock = dir.join("aggregator.sock");
    let out = Command::new("python3")
        .arg("-c")
        .arg(
            "import socket, sys, time\n\
             s = socket.socket(socket.AF_UNIX)\n\
             s.connect(sys.argv[1])\n\
             s.sendall(b'record epoch_ms=0\\n')\n\
             assert s.recv(3) == b'ok\\n'\n\
             s.settimeout(20)\n\
             t = time.time()\n\
             while s.recv(4096):\n\
             \x20   pass\n\
             print('closed after %.1f s' % (time.time() - t))\n",
        )
        .arg(&sock)
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let secs: f64 = text
        .trim()
        .trim_start_matches("closed after ")
        .trim_end_matches(" s")
        .parse()
        .unwrap();
    assert!(secs < 5.0, "{text}");
    agg.wait_for(
        || {
            agg.output()
                .contains("(uid 65534) ended: no process of it for 1 s")
        },
        "the log line",
    );
}

/// Attack (round two, 2): uid 65534 holds four recording streams it never reads and,
/// from the bottom of an 80-deep chain of processes, starts reporters as fast as it
/// can, while a root process reports 300,000 events a second. A new process's
/// ancestors are read once for every recording, each known for a second: the root
/// process drops nothing and the heartbeat stays fresh.
#[test]
fn a_deep_process_tree_beside_idle_recordings_throttles_nothing() {
    require_root();
    let _heavy = heavy();
    let (base, dir) = shared_dir("deep-tree");
    let agg = AggProc::start(&dir, &[]);
    let sock = dir.join("aggregator.sock");
    let streams = python_as(
        NOBODY,
        "import socket, sys, time\n\
         socks = []\n\
         for _ in range(4):\n\
         \x20   s = socket.socket(socket.AF_UNIX)\n\
         \x20   s.connect(sys.argv[1])\n\
         \x20   s.sendall(b'record epoch_ms=0\\n')\n\
         \x20   s.recv(3)\n\
         \x20   socks.append(s)\n\
         time.sleep(float(sys.argv[2]))\n",
        &[sock.to_str().unwrap(), "14"],
    );
    // The chain: each level a shell that starts the next; the last starts reporters.
    let bin = base.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let producer = bin.join("reporter");
    std::fs::copy(c_program("producer"), &producer).unwrap();
    let script = bin.join("chain.sh");
    std::fs::write(
        &script,
        format!(
            "if [ \"$1\" -gt 0 ]; then sh {s} $(($1 - 1)); exit; fi\n\
             end=$(($(date +%s) + 8))\n\
             while [ $(date +%s) -lt $end ]; do\n\
             \x20 for i in 1 2 3 4 5 6 7 8 9 10; do {p} hold 1 1 >/dev/null & done\n\
             \x20 sleep 0.025\n\
             done\n\
             wait\n",
            s = script.display(),
            p = producer.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&producer, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let mut root = spawn_producer(&dir, &["paced", "300000", "9"], 0);
    wait_line(&mut root, "ready");
    let chain = Command::new("sh")
        .arg(&script)
        .arg("80")
        .env("TT_ALLOC_TRACKING_ENABLED", "1")
        .env("TTTRACK_DIR", &dir)
        .uid(NOBODY)
        .gid(NOBODY)
        .spawn()
        .unwrap();
    let seen_before = agg
        .snapshot()
        .map(|s| s.status.segments_attached)
        .unwrap_or(0);
    let worst = heartbeat_ages(&agg, std::time::Duration::from_secs(8))
        .into_iter()
        .max()
        .unwrap_or(0);
    let sent = wait_line(&mut root, "sent ");
    let dropped = wait_line(&mut root, "dropped ");
    let _ = root.wait();
    let mut chain = chain;
    let _ = chain.wait();
    let reporters = agg
        .snapshot()
        .map(|s| s.status.segments_attached)
        .unwrap_or(0)
        .saturating_sub(seen_before);
    eprintln!(
        "deep tree: {reporters} reporters started under an 80-deep chain beside 4 idle streams; heartbeat worst {} ms; root {} {}",
        worst / 1_000_000,
        sent.trim(),
        dropped.trim()
    );
    assert!(
        reporters > 100,
        "the chain started only {reporters} reporters"
    );
    assert_eq!(dropped.trim(), "dropped 0");
    assert!(
        worst < 200_000_000,
        "heartbeat {} ms old at worst",
        worst / 1_000_000
    );
    let mut streams = streams;
    let _ = streams.kill();
    let _ = streams.wait();
}

/// How old the page's heartbeat was, in ns, looked at every 20 ms for `how_long`.
fn heartbeat_ages(agg: &AggProc, how_long: std::time::Duration) -> Vec<u64> {
    let t = std::time::Instant::now();
    let mut ages = Vec::new();
    while t.elapsed() < how_long {
        if let Some(s) = agg.snapshot() {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64;
            ages.push(now.saturating_sub(s.status.heartbeat_unix_ns));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    ages
}
