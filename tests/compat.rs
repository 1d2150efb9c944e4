//! Drop-in for the original tools: the compatibility socket speaking the original
//! 144-byte protocol, `AllocationClient` interposition with LD_PRELOAD, the header-only
//! C++ client, and `tt-track run`.

mod common;
use common::*;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use tttrack::compat::*;
use tttrack::counters_page::*;

fn sock(dir: &TempDir) -> std::path::PathBuf {
    dir.path().join("tt_allocation_server.sock")
}

fn start(dir: &TempDir) -> AggProc {
    let s = sock(dir);
    let agg = AggProc::start(dir.path(), &["--compat-socket", s.to_str().unwrap()]);
    // Not just the file: a stale one may be there before the server binds.
    agg.wait_for(
        || UnixStream::connect(&s).is_ok(),
        "the compatibility socket",
    );
    agg
}

fn msg(kind: u8, dev: i32, size: u64, bt: u8, id: u64) -> [u8; MSG_SIZE] {
    AllocMessage {
        kind,
        device_id: dev,
        size,
        buffer_type: bt,
        process_id: 1,
        buffer_id: id,
        ..Default::default()
    }
    .encode()
}

/// The figures of `pid` on `dev` as (DRAM, L1, CB, kernel).
fn figs(agg: &AggProc, pid: u32, dev: i32) -> Option<(u64, u64, u64, u64)> {
    let s = agg.snapshot()?;
    let d = proc_dev(&s, pid, dev)?;
    Some((
        d.used[CAT_DRAM],
        d.used[CAT_L1],
        d.used[CAT_CB],
        d.used[CAT_KERNEL],
    ))
}

#[test]
fn the_original_python_device_info_query_works() {
    let dir = TempDir::new("compat-py");
    let agg = start(&dir);
    let mut p = spawn_producer(dir.path(), &["devinfo"], 30_000);
    wait_line(&mut p, "dropped");
    agg.wait_for(
        || {
            agg.snapshot().is_some_and(|s| {
                s.devices.len() == 2
                    && dev_fig(&s, 0, CAT_DRAM).used == 111
                    && dev_fig(&s, 1, CAT_DRAM).used == 222
            })
        },
        "devices and their allocations",
    );
    // The seed documentation's example, completed.
    let script = format!(
        r#"
import socket, struct
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.connect({path:?})
fmt = '<BxxxiQBxxxiQQ' + 'Q'*6 + 'Q'*2 + 'I'*6 + 'I'*4
assert struct.calcsize(fmt) == 144
msg = struct.pack(fmt, 6, -1, 0, 0, 0, 0, 0, *([0]*6), 0, 0, *([0]*6), *([0]*4))
sock.send(msg)
r = struct.unpack(fmt, sock.recv(144))
print("type", r[0], "num_devices", r[20])
msg = struct.pack(fmt, 6, 0, 0, 0, 0, 0, 0, *([0]*6), 0, 0, *([0]*6), *([0]*4))
sock.send(msg)
r = struct.unpack(fmt, sock.recv(144))
print("type", r[0], "available", r[19], "arch", r[15], "dram", r[13], "l1", r[14], "channels", r[16])
msg = struct.pack(fmt, 3, 1, 0, 0, 0, 0, 0, *([0]*6), 0, 0, *([0]*6), *([0]*4))
sock.send(msg)
r = struct.unpack(fmt, sock.recv(144))
print("type", r[0], "dram_allocated", r[7])
"#,
        path = sock(&dir).to_str().unwrap()
    );
    let out = Command::new("python3")
        .arg("-c")
        .arg(&script)
        .output()
        .expect("python3");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("type 7 num_devices 2"), "{text}");
    assert!(
        text.contains(&format!(
            "type 7 available 1 arch 2 dram {} l1 {} channels 12",
            12u64 << 30,
            64 * 1_499_136
        )),
        "{text}"
    );
    assert!(text.contains("type 4 dram_allocated 222"), "{text}");
    let _ = p.kill();
    let _ = p.wait();
}

#[test]
fn socket_events_use_the_peer_pid_and_are_released_when_it_dies() {
    let dir = TempDir::new("compat-ev");
    let agg = start(&dir);
    // A real separate process (python) sends messages claiming process_id 1.
    let script = format!(
        r#"
import socket, struct, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect({path:?})
fmt = '<BxxxiQBxxxiQQ' + 'Q'*6 + 'Q'*2 + 'I'*6 + 'I'*4
def m(t, d, size, bt, bid): return struct.pack(fmt, t, d, size, bt, 1, bid, 0, *([0]*6), 0, 0, *([0]*6), *([0]*4))
s.sendall(m(1, 0, 4096, 0, 0x10) + m(1, 0, 4096, 0, 0x10) + m(2, 0, 0, 0, 0x10) + m(1, 0, 100, 2, 0x20))
s.sendall(m(8, 0, 300, 0, 0x30) + m(9, 0, 999999, 0, 0x31) + m(10, 0, 800, 1, 0x40) + m(11, 0, 5, 0, 0x40))
print("sent", flush=True)
time.sleep(30)
"#,
        path = sock(&dir).to_str().unwrap()
    );
    let mut py = Command::new("python3")
        .arg("-c")
        .arg(&script)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_line(&mut py, "sent");
    let pid = py.id();
    agg.wait_for(
        || {
            agg.snapshot().is_some_and(|s| {
                s.processes
                    .iter()
                    .any(|p| p.pid == pid && p.events_applied == 8)
            })
        },
        "8 events",
    );
    let s = agg.snapshot().unwrap();
    assert!(
        s.processes.iter().all(|p| p.pid != 1),
        "the claimed process_id is never trusted"
    );
    let d = proc_dev(&s, pid, 0).unwrap();
    assert_eq!(
        d.used[CAT_DRAM], 4096,
        "re-reported buffer counted once, still live after one free"
    );
    assert_eq!(
        d.used[CAT_SYSTEM_MEMORY], 100,
        "SYSTEM_MEMORY is its own figure"
    );
    assert_eq!(d.used[CAT_L1_SMALL], 0);
    assert_eq!(
        d.used[CAT_CB], 300,
        "a CB_FREE of an unknown id subtracts nothing"
    );
    assert_eq!(
        d.used[CAT_KERNEL], 0,
        "KERNEL_UNLOAD subtracts the recorded 800, not the claimed 5"
    );
    assert_eq!(s.status.unknown_frees, 1);
    let _ = py.kill();
    let _ = py.wait();
    agg.wait_for(
        || {
            agg.snapshot().is_some_and(|s| {
                s.processes.iter().all(|p| p.pid != pid) && dev_fig(&s, 0, CAT_DRAM).used == 0
            })
        },
        "release on death",
    );
    assert!(
        agg.output()
            .contains(&format!("pid {pid} (python3) exited holding 2 buffers")),
        "{}",
        agg.output()
    );
}

#[test]
fn bad_input_resyncs_closes_after_ten_and_never_blocks_others() {
    let dir = TempDir::new("compat-bad");
    let agg = start(&dir);
    // Garbage, then a valid message: skipped byte by byte, then applied.
    let mut a = UnixStream::connect(sock(&dir)).unwrap();
    let mut bytes = vec![0xEEu8; 7];
    bytes.extend_from_slice(&msg(ALLOC, 0, 1234, 0, 0x77));
    a.write_all(&bytes).unwrap();
    // A client that stops mid-message.
    let mut stuck = UnixStream::connect(sock(&dir)).unwrap();
    stuck.write_all(&msg(ALLOC, 0, 55, 0, 0x55)[..60]).unwrap();
    // Many concurrent clients, each 100 allocations.
    let hs: Vec<_> = (0..20u64)
        .map(|c| {
            let p = sock(&dir);
            std::thread::spawn(move || {
                let mut s = UnixStream::connect(p).unwrap();
                for k in 0..100u64 {
                    s.write_all(&msg(ALLOC, 1, 10, 1, (c << 32) | k)).unwrap();
                }
                s
            })
        })
        .collect();
    let _clients: Vec<UnixStream> = hs.into_iter().map(|h| h.join().unwrap()).collect();
    let me = std::process::id();
    agg.wait_for(
        || {
            agg.snapshot().is_some_and(|s| {
                proc_dev(&s, me, 1).is_some_and(|d| d.used[CAT_L1] == 20 * 100 * 10)
                    && proc_dev(&s, me, 0).is_some_and(|d| d.used[CAT_DRAM] == 1234)
            })
        },
        "every client's events, the stuck one blocking nobody",
    );
    // Ten bad messages in a row: the server closes the connection.
    let mut b = UnixStream::connect(sock(&dir)).unwrap();
    b.write_all(&[0xFFu8; MSG_SIZE + 10]).unwrap();
    b.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(b.read(&mut buf).unwrap(), 0, "closed by the server");
    agg.wait_for(
        || agg.output().contains("malformed messages skipped"),
        "the log line",
    );
    drop(stuck);
}

#[test]
fn dump_with_nc_style_input_and_dump_kernels() {
    let dir = TempDir::new("compat-dump");
    let agg = start(&dir);
    let mut c = UnixStream::connect(sock(&dir)).unwrap();
    c.write_all(&msg(ALLOC, 0, 1 << 20, 0, 0xABC000)).unwrap();
    c.write_all(&msg(KERNEL_LOAD, 0, 4096, 2, 0xD1)).unwrap();
    let me = std::process::id();
    agg.wait_for(
        || figs(&agg, me, 0).is_some_and(|f| f.0 == 1 << 20 && f.3 == 4096),
        "events",
    );
    // `echo "" | nc -U SOCKET`
    let mut nc = UnixStream::connect(sock(&dir)).unwrap();
    nc.write_all(b"\n").unwrap();
    nc.shutdown(std::net::Shutdown::Write).unwrap();
    let mut text = String::new();
    nc.read_to_string(&mut text).unwrap();
    assert!(
        text.contains("Remaining buffers")
            && text.contains("Device 0 DRAM: 1 buffers, 1.0 MiB")
            && text.contains("0xabc000"),
        "{text}"
    );
    let mut k = UnixStream::connect(sock(&dir)).unwrap();
    k.write_all(&msg(DUMP_KERNELS, 0, 0, 0, 0)).unwrap();
    k.shutdown(std::net::Shutdown::Write).unwrap();
    let mut text = String::new();
    k.read_to_string(&mut text).unwrap();
    assert!(text.contains("kernel 0xd1 Dispatch 4.0 KiB"), "{text}");
    // Size, owner and age, like the original.
    let line = text.lines().find(|l| l.contains("kernel 0xd1")).unwrap();
    assert!(
        line.contains("(pid ") && line.contains(", loaded ") && line.ends_with(" s ago"),
        "{line}"
    );
    assert!(
        agg.output().contains("Remaining buffers"),
        "the dump is also in the log"
    );
}

#[test]
fn a_stale_socket_is_replaced_and_a_live_one_is_never_stolen() {
    let dir = TempDir::new("compat-stale");
    let path = sock(&dir);
    {
        let _l = std::os::unix::net::UnixListener::bind(&path).unwrap();
    } // listener dropped: the file stays, nobody answers
    assert!(path.exists());
    let first = start(&dir);
    let mut c = UnixStream::connect(&path).unwrap();
    c.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    c.write_all(&msg(DEVICE_INFO_QUERY, -1, 0, 0, 0)).unwrap();
    let mut r = [0u8; MSG_SIZE];
    c.read_exact(&mut r).unwrap();
    assert_eq!(r[0], DEVICE_INFO_RESPONSE);
    // A second aggregator on another directory but the same socket path: refused there.
    let dir2 = TempDir::new("compat-stale2");
    let second = AggProc::start(dir2.path(), &["--compat-socket", path.to_str().unwrap()]);
    second.wait_for(
        || second.output().contains("belongs to a running server"),
        "the refusal",
    );
    let mut c = UnixStream::connect(&path).unwrap();
    c.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    c.write_all(&msg(DEVICE_INFO_QUERY, -1, 0, 0, 0)).unwrap();
    c.read_exact(&mut r).unwrap();
    assert_eq!(r[0], DEVICE_INFO_RESPONSE, "the first server still answers");
    drop(first);
}

#[test]
fn ld_preload_takes_the_socket_clients_place_with_the_same_figures() {
    let _h = heavy();
    let (model, _libdir) = fake_metal();
    let dir = TempDir::new("compat-preload");
    let agg = start(&dir);
    let mark_sock = dir.path().join("mark-socket");
    let mark_pre = dir.path().join("mark-preload");
    // Without LD_PRELOAD: the stand-in's own client sends over the socket.
    let mut a = Command::new(&model)
        .args(["10", "30"])
        .env("TT_ALLOC_TRACKING_ENABLED", "1")
        .env("FAKE_METAL_SOCKET", sock(&dir))
        .env("FAKE_METAL_MARK", &mark_sock)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_line(&mut a, "done");
    // With LD_PRELOAD (through tt-track run): libtttrack.so's AllocationClient wins.
    let mut b = Command::new(env!("CARGO_BIN_EXE_tt-track"))
        .args(["run", "--"])
        .arg(&model)
        .args(["10", "30"])
        .env("TTTRACK_LIB", lib_path())
        .env("TTTRACK_DIR", dir.path())
        .env("FAKE_METAL_SOCKET", sock(&dir))
        .env("FAKE_METAL_MARK", &mark_pre)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_line(&mut b, "done");
    let (pa, pb) = (a.id(), b.id());
    // Expected: 5 live weights of 1 MiB on device 0 (10 loaded and re-reported, 5 freed once),
    // 5 live activations of 64 KiB, 5 CBs of 32 KiB, 5 kernels of 8 KiB on device 1,
    // one dispatch kernel of 256 KiB on device 0.
    let want0 = (10u64 << 20, 0, 0, 262144);
    let want1 = (0, 5 * 65536, 5 * 32768, 5 * 8192);
    agg.wait_for(
        || {
            figs(&agg, pa, 0) == Some(want0)
                && figs(&agg, pa, 1) == Some(want1)
                && figs(&agg, pb, 0) == Some(want0)
                && figs(&agg, pb, 1) == Some(want1)
        },
        "the same figures by both paths",
    );
    let sent = std::fs::read_to_string(&mark_sock)
        .unwrap_or_default()
        .lines()
        .count();
    assert_eq!(sent, 1 + 10 * 5 + 5 * 4, "the socket path sent every event");
    assert!(
        !mark_pre.exists(),
        "under LD_PRELOAD the stand-in's socket code never ran"
    );
    let segs: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        segs.iter().any(|n| n.starts_with(&format!("seg.{pb}."))),
        "the preloaded process reports through shared memory: {segs:?}"
    );
    assert!(!segs.iter().any(|n| n.starts_with(&format!("seg.{pa}."))));
    for c in [&mut a, &mut b] {
        let _ = c.kill();
        let _ = c.wait();
    }
}

#[test]
fn header_only_cpp_client_links_against_the_library() {
    let bin = cpp_program("header_client");
    let dir = TempDir::new("compat-hpp");
    let agg = start(&dir);
    let mut p = Command::new(&bin)
        .env("TT_ALLOC_TRACKING_ENABLED", "1")
        .env("TTTRACK_DIR", dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    assert_eq!(wait_line(&mut p, "done"), "done 0");
    let pid = p.id();
    agg.wait_for(
        || figs(&agg, pid, 0) == Some((5000, 0, 300, 900)),
        "the header client's figures",
    );
    let _ = p.kill();
    let _ = p.wait();
}

#[test]
fn tt_track_run_tracks_a_python_ctypes_program_and_passes_its_status() {
    let dir = TempDir::new("compat-run");
    let agg = start(&dir);
    let script = r#"
import ctypes, sys
lib = ctypes.CDLL(None)   # libtttrack.so is preloaded: its symbols are global
lib.tttrack_alloc.argtypes = [ctypes.c_int32, ctypes.c_uint64, ctypes.c_uint8, ctypes.c_uint64]
lib.tttrack_enabled.restype = ctypes.c_int
assert lib.tttrack_enabled() == 1
lib.tttrack_alloc(0, 7 << 20, 0, 0x1000)
lib.tttrack_alloc(0, 3 << 20, 4, 0x2000)
print("ok", flush=True)
sys.stdin.readline()   # lives until the test has seen its figures
sys.exit(7)
"#;
    let mut p = tracked_python(dir.path(), script);
    wait_line(&mut p, "ok");
    let pid = p.id();
    agg.wait_for(
        || {
            agg.snapshot().is_some_and(|s| {
                proc_dev(&s, pid, 0)
                    .is_some_and(|d| d.used[CAT_DRAM] == 7 << 20 && d.used[CAT_TRACE] == 3 << 20)
            })
        },
        "the python program's figures",
    );
    drop(p.stdin.take()); // end of input: the program exits
    assert_eq!(
        p.wait().unwrap().code(),
        Some(7),
        "exit status passed through"
    );
    // A clear error when the library is missing.
    let out = Command::new(env!("CARGO_BIN_EXE_tt-track"))
        .args(["run", "true"])
        .env("TTTRACK_LIB", "/nonexistent/libtttrack.so")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(127));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("/nonexistent/libtttrack.so does not exist")
    );
    // Existing LD_PRELOAD entries are kept.
    let out = Command::new(env!("CARGO_BIN_EXE_tt-track"))
        .args(["run", "sh", "-c", "echo $LD_PRELOAD"])
        .env("TTTRACK_LIB", lib_path())
        .env("LD_PRELOAD", "libm.so.6")
        .output()
        .unwrap();
    let v = String::from_utf8_lossy(&out.stdout);
    assert!(
        v.trim().ends_with(":libm.so.6") && v.contains("libtttrack.so"),
        "{v}"
    );
}

/// Another user (uid 65534) reports over the compatibility socket and reads the
/// per-buffer list with tt-smi: both sockets are for every user of the host, like the
/// tracking directory. Needs root to switch users, as CI runs.
#[test]
fn another_user_reports_over_the_socket_and_reads_its_buffers() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let dir = TempDir::new("compat-users");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let agg = start(&dir);
    let mut p = holding_client(&dir, Some(65534));
    let pid = p.id();
    agg.wait_for(
        || figs(&agg, pid, 0).is_some_and(|f| f.0 == 1 << 20),
        "the other user's allocation",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_tt-smi"))
        .args(["--buffers", "--dir"])
        .arg(dir.path())
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("0xbeef000"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(p.stdin.take());
    let _ = p.wait();
}

/// A client of the socket that outlives an aggregator restart keeps its figures (it
/// still holds that memory) and is released, as a leak, only when it ends.
#[test]
fn a_socket_client_keeps_its_figures_across_an_aggregator_restart() {
    let dir = TempDir::new("compat-restart");
    let mut agg = start(&dir);
    let mut p = holding_client(&dir, None);
    let pid = p.id();
    agg.wait_for(
        || figs(&agg, pid, 0).is_some_and(|f| f.0 == 1 << 20),
        "the client's allocation",
    );
    agg.kill9();
    let agg = start(&dir);
    agg.wait_for(
        || agg.output().contains("still runs without a segment"),
        "the live client kept",
    );
    assert_eq!(figs(&agg, pid, 0).map(|f| f.0), Some(1 << 20));
    assert!(!agg.output().contains("exited holding"), "{}", agg.output());
    drop(p.stdin.take());
    let _ = p.wait();
    agg.wait_for(
        || figs(&agg, pid, 0).is_none() && agg.output().contains("exited holding"),
        "release when the client ends",
    );
}

/// A Python client of the socket (as user `uid`, if given) that reports a 1 MiB DRAM
/// buffer 0xbeef000 on device 0 and lives until its standard input closes.
fn holding_client(dir: &TempDir, uid: Option<u32>) -> std::process::Child {
    use std::os::unix::process::CommandExt;
    let script = format!(
        r#"
import socket, struct, sys
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.connect({path:?})
fmt = '<BxxxiQBxxxiQQ' + 'Q'*6 + 'Q'*2 + 'I'*6 + 'I'*4
sock.send(struct.pack(fmt, 1, 0, 1 << 20, 0, 0, 0xbeef000, 0, *([0]*6), 0, 0, *([0]*6), *([0]*4)))
print("sent", flush=True)
sys.stdin.readline()
"#,
        path = sock(dir).to_str().unwrap()
    );
    let mut cmd = Command::new("python3");
    cmd.arg("-c")
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    if let Some(u) = uid {
        cmd.uid(u).gid(u);
    }
    let mut p = cmd.spawn().expect("python3");
    wait_line(&mut p, "sent");
    p
}
