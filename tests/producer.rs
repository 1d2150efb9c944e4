//! The producer side through libtttrack.so, with real processes and real shared memory.

mod common;
use common::*;
use std::collections::{HashMap, HashSet};
use std::process::Command;
use tttrack::aggregator::segment_reader::{list_segments, MappedSegment};
use tttrack::shm_layout::*;

/// Checks a process's events are every sequence number exactly once, from 0.
fn assert_contiguous(evs: &[Event]) {
    for (i, e) in evs.iter().enumerate() {
        assert_eq!(
            e.seq, i as u64,
            "sequence numbers must be 0..n with no gap or repeat"
        );
    }
}

#[test]
fn several_multithreaded_processes_deliver_every_event_once_in_order() {
    let _heavy = heavy();
    let dir = TempDir::new("multi");
    let threads = 4u64;
    let pairs = 100_000u64;
    let (outs, c) = with_consumer(dir.path(), || {
        let hs: Vec<_> = (0..3)
            .map(|_| {
                let d = dir.path().to_path_buf();
                std::thread::spawn(move || run_producer(&d, &["pairs", "4", "100000"]))
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    });
    assert_eq!(c.events.len(), 3, "one segment per process");
    for o in &outs {
        assert!(o.status.success());
        assert_eq!(stdout_value(o, "dropped "), Some(0));
    }
    for &pid in c.events.keys() {
        let evs = c.ordered(pid);
        assert_eq!(evs.len() as u64, threads * pairs * 2);
        assert_contiguous(&evs);
        // Per thread: alloc k, free k, alloc k+1, ... in order.
        let mut next: HashMap<u64, (u64, bool)> = HashMap::new();
        for e in &evs {
            let t = e.id >> 32;
            let k = e.id & 0xffff_ffff;
            let st = next.entry(t).or_insert((0, false));
            assert_eq!(k, st.0, "thread {t}: events out of order");
            if !st.1 {
                assert_eq!(e.kind, EventKind::Alloc as u8);
                assert_eq!(e.size, 4096 + (k & 7));
                assert_eq!(e.subtype, BufferType::Dram as u8);
                st.1 = true;
            } else {
                assert_eq!(e.kind, EventKind::Free as u8);
                *st = (k + 1, false);
            }
        }
        assert_eq!(next.len() as u64, threads);
        assert!(next.values().all(|&(k, open)| k == pairs && !open));
        assert_eq!(c.dropped[&pid], 0);
    }
}

#[test]
fn cross_thread_free_and_address_reuse_replay_to_one_live_buffer() {
    let _heavy = heavy();
    let dir = TempDir::new("handoff");
    let (out, c) = with_consumer(dir.path(), || {
        run_producer(dir.path(), &["handoff", "20000"])
    });
    assert!(out.status.success());
    let pid = *c.events.keys().next().expect("a segment");
    // The two threads used two lanes.
    let lanes: HashSet<usize> = c.events[&pid].iter().map(|(l, _)| *l).collect();
    assert_eq!(
        lanes.len(),
        2,
        "thread A and thread B report through their own lanes"
    );
    let evs = c.ordered(pid);
    assert_contiguous(&evs);
    let mut live = 0i64;
    for e in &evs {
        assert_eq!(e.id, 0x1000);
        match EventKind::from_u8(e.kind) {
            Some(EventKind::Alloc) => {
                live += 1;
                assert_eq!(live, 1, "allocated twice without a free in between");
            }
            Some(EventKind::Free) => {
                live -= 1;
                assert_eq!(live, 0, "freed before allocated");
            }
            k => panic!("unexpected kind {k:?}"),
        }
    }
    assert_eq!(live, 1, "exactly one live buffer at 0x1000 at the end");
}

#[test]
fn a_forked_child_reports_into_its_own_segment() {
    let dir = TempDir::new("fork");
    let (out, c) = with_consumer(dir.path(), || run_producer(dir.path(), &["fork", "1000"]));
    assert!(out.status.success());
    let parent = stdout_value(&out, "parent ").unwrap() as u32;
    // The child printed its pid into the same stdout before the parent printed its own.
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let child: u32 = text
        .lines()
        .find_map(|l| l.strip_prefix("child "))
        .map(|v| v.trim().parse().unwrap())
        .expect("child pid");
    assert_ne!(parent, child);
    let p = c.ordered(parent);
    let ch = c.ordered(child);
    assert_eq!(p.len(), 1000);
    assert!(p
        .iter()
        .all(|e| e.device == 0 && e.id >= 0xA000_0000 && e.id < 0xC000_0000));
    assert_eq!(ch.len(), 1000);
    assert!(ch.iter().all(|e| e.device == 1 && e.id >= 0xC000_0000));
    assert_contiguous(&p);
    assert_contiguous(&ch);
}

#[test]
fn a_forked_child_does_not_keep_its_parent_alive() {
    let dir = TempDir::new("forklive");
    // The parent exits at once; its child lives on until killed below.
    let out = Command::new(c_program("producer"))
        .args(["fork", "10"])
        .env("TT_ALLOC_TRACKING_ENABLED", "1")
        .env("TTTRACK_DIR", dir.path())
        .env("PRODUCER_CHILD_SLEEP_S", "120")
        .output()
        .unwrap();
    assert!(out.status.success());
    let parent = stdout_value(&out, "parent ").unwrap() as u32;
    let child = stdout_value(&out, "child ").unwrap() as i32;
    struct Kill(i32);
    impl Drop for Kill {
        fn drop(&mut self) {
            // SAFETY: signalling the test's own grandchild by its pid.
            unsafe { libc::kill(self.0, libc::SIGKILL) };
        }
    }
    let _kill = Kill(child);
    let segs = list_segments(dir.path()).unwrap();
    let mut seen_parent = false;
    for p in &segs {
        let s = MappedSegment::open(p).unwrap();
        if s.pid == parent {
            seen_parent = true;
            assert!(
                !s.is_alive(),
                "parent is dead although its child still runs"
            );
        } else {
            assert!(s.is_alive(), "the child (pid {}) is still sleeping", s.pid);
        }
    }
    assert!(seen_parent);
    assert_eq!(segs.len(), 2, "the parent's segment and the child's own");
    let c = MappedSegment::open(&segment_of(dir.path(), child as u32)).unwrap();
    assert!(c.is_alive(), "the child's segment is alive");
}

#[test]
fn full_lane_without_consumer_drops_and_counts_without_blocking() {
    let dir = TempDir::new("full");
    let extra = 1000u64;
    let n = LANE_CAPACITY as u64 + extra;
    c_program("producer"); // built before the clock starts
    let t0 = std::time::Instant::now();
    let out = run_producer(dir.path(), &["burst", &n.to_string()]);
    let took = t0.elapsed();
    assert!(out.status.success());
    assert_eq!(stdout_value(&out, "dropped "), Some(extra));
    // Nothing waited: no aggregator was attached (generous bound, not a benchmark).
    assert!(took.as_secs() < 10, "took {took:?}");
    let segs = list_segments(dir.path()).unwrap();
    let s = MappedSegment::open(&segs[0]).unwrap();
    assert_eq!(s.dropped(), extra, "the segment shows the same count");
    let mut c = TestConsumer::new(dir.path());
    while c.poll() > 0 {}
    let evs = c.ordered(s.pid);
    assert_eq!(
        evs.len(),
        LANE_CAPACITY,
        "the ring holds exactly its capacity"
    );
    assert_contiguous(&evs);
    assert!(
        evs.iter().enumerate().all(|(k, e)| e.id == k as u64),
        "the first events were kept"
    );
}

#[test]
fn full_lane_with_a_draining_consumer_loses_nothing() {
    let _heavy = heavy();
    let dir = TempDir::new("fullok");
    let n = 10 * LANE_CAPACITY as u64;
    let (out, c) = with_consumer(dir.path(), || {
        run_producer(dir.path(), &["burst", &n.to_string()])
    });
    assert!(out.status.success());
    assert_eq!(stdout_value(&out, "dropped "), Some(0));
    let pid = *c.events.keys().next().unwrap();
    let evs = c.ordered(pid);
    assert_eq!(evs.len() as u64, n);
    assert!(evs
        .iter()
        .enumerate()
        .all(|(k, e)| e.id == k as u64 && e.seq == k as u64));
}

#[test]
fn threads_that_exit_give_their_lanes_back() {
    let _heavy = heavy();
    let dir = TempDir::new("churn");
    // 200 threads one after another: more than NUM_LANES, so lanes must be reused.
    let (out, c) = with_consumer(dir.path(), || {
        run_producer(dir.path(), &["churn", "200", "50"])
    });
    assert!(out.status.success());
    assert_eq!(stdout_value(&out, "dropped "), Some(0));
    let pid = *c.events.keys().next().unwrap();
    let evs = c.ordered(pid);
    assert_eq!(evs.len(), 200 * 50);
    assert_contiguous(&evs);
    let s = c.segs.values().next().unwrap();
    let claims: u64 = (0..NUM_LANES)
        .map(|i| {
            s.view()
                .lane(i)
                .claims
                .load(std::sync::atomic::Ordering::Relaxed)
        })
        .sum();
    assert_eq!(claims, 200, "each thread claimed a lane once");
    assert_eq!(
        s.view()
            .header()
            .no_lane_dropped
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    assert!(
        (0..NUM_LANES).all(|i| s
            .view()
            .lane(i)
            .state
            .load(std::sync::atomic::Ordering::Relaxed)
            == LANE_FREE),
        "every lane given back"
    );
}

/// An event from a thread's last moments (a thread-specific data destructor, run after
/// the library's own thread-local destructors gave the lane back) is delivered, and
/// the lane it borrows for it is given back too: 100 such threads, more than there
/// are lanes, all deliver.
#[test]
fn an_event_after_the_threads_lane_was_given_back_is_delivered() {
    let _heavy = heavy();
    let dir = TempDir::new("late");
    let (out, c) = with_consumer(dir.path(), || {
        run_producer(dir.path(), &["late", "100", "20"])
    });
    assert!(out.status.success());
    assert_eq!(stdout_value(&out, "dropped "), Some(0));
    let pid = *c.events.keys().next().unwrap();
    let evs = c.ordered(pid);
    assert_eq!(evs.len(), 100 * 21);
    assert_contiguous(&evs);
    for t in 0..100u64 {
        assert!(
            evs.iter().any(|e| e.id == (t << 32) | 20),
            "thread {t}'s last event, from its destructor"
        );
    }
    let s = c.segs.values().next().unwrap();
    let free = (0..NUM_LANES).all(|i| {
        s.view()
            .lane(i)
            .state
            .load(std::sync::atomic::Ordering::Relaxed)
            == LANE_FREE
    });
    assert!(free, "every lane given back");
    let v = s.view();
    let h = v.header();
    assert_eq!(
        h.no_lane_dropped.load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    assert_eq!(
        h.lanes_claimed.load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

#[test]
fn disabled_tracking_creates_nothing_and_reports_off() {
    let dir = TempDir::new("off");
    for val in [None, Some("0"), Some("yes")] {
        let mut cmd = std::process::Command::new(c_program("producer"));
        cmd.args(["pairs", "2", "1000"])
            .env("TTTRACK_DIR", dir.path());
        cmd.env_remove("TT_ALLOC_TRACKING_ENABLED");
        if let Some(v) = val {
            cmd.env("TT_ALLOC_TRACKING_ENABLED", v);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success());
        assert_eq!(stdout_value(&out, "enabled "), Some(0));
        assert_eq!(stdout_value(&out, "dropped "), Some(0));
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "no file created"
        );
    }
}

#[test]
fn unusable_tracking_directory_turns_tracking_off_with_one_line() {
    let dir = TempDir::new("bad");
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let out = run_producer(&file, &["pairs", "2", "1000"]);
    assert!(out.status.success(), "the application goes on");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "exactly one line: {err}");
    assert!(err.contains("tracking is off in this process"), "{err}");
    assert!(err.contains("not a directory"), "{err}");
    assert_eq!(
        stdout_value(&out, "dropped "),
        Some(4000),
        "every event counted as undelivered"
    );
}

#[test]
fn segment_file_is_private_and_directory_is_shared() {
    use std::os::unix::fs::PermissionsExt;
    let base = TempDir::new("perm");
    let dir = base.path().join("tttrack");
    let out = run_producer(&dir, &["burst", "10"]);
    assert!(out.status.success());
    let dm = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o7777;
    assert_eq!(dm, 0o1777);
    let segs = list_segments(&dir).unwrap();
    assert_eq!(segs.len(), 1);
    let fm = std::fs::metadata(&segs[0]).unwrap().permissions().mode() & 0o777;
    assert_eq!(fm, 0o600);
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "no temporary left behind: {names:?}");
}

#[test]
fn device_info_reaches_the_segment() {
    let dir = TempDir::new("devinfo");
    let out = run_producer(dir.path(), &["devinfo"]);
    assert!(out.status.success());
    let segs = list_segments(dir.path()).unwrap();
    let s = MappedSegment::open(&segs[0]).unwrap();
    let d0 = s.view().read_device_info(0).unwrap();
    let d1 = s.view().read_device_info(1).unwrap();
    assert_eq!(d0.arch, 2);
    assert_eq!(d0.is_remote, 0);
    assert_eq!(d1.is_remote, 1);
    assert_eq!(d0.total_dram_bytes, 12 << 30);
    assert_eq!(d0.total_l1_bytes, 64 * 1_499_136);
    assert!(s.view().read_device_info(2).is_none());
    let mut c = TestConsumer::new(dir.path());
    while c.poll() > 0 {}
    let kinds: Vec<u8> = c.ordered(s.pid).iter().map(|e| e.kind).collect();
    let di = EventKind::DeviceInfo as u8;
    let a = EventKind::Alloc as u8;
    assert_eq!(kinds, vec![di, di, a, a]);
}

/// The hot path makes no system call: strace every call of the reporting thread
/// between two marks around one million events.
#[test]
fn hot_path_makes_no_syscall() {
    let _heavy = heavy();
    if std::process::Command::new("strace")
        .arg("-V")
        .output()
        .is_err()
    {
        panic!("strace is required for this test (apt-get install strace)");
    }
    let dir = TempDir::new("strace");
    let log = dir.path().join("strace.log");
    let trace = |consumer: bool| -> (Vec<String>, std::process::Output) {
        let run = || {
            std::process::Command::new("strace")
                .args(["-f", "-qq", "-o"])
                .arg(&log)
                .arg(c_program("producer"))
                .args(["syscalls", "1000000"])
                .env("TT_ALLOC_TRACKING_ENABLED", "1")
                .env("TTTRACK_DIR", dir.path())
                .output()
                .unwrap()
        };
        let out = if consumer {
            with_consumer(dir.path(), run).0
        } else {
            run()
        };
        let text = std::fs::read_to_string(&log).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let marks: Vec<usize> = (0..lines.len())
            .filter(|&i| lines[i].contains("getppid()"))
            .collect();
        assert_eq!(marks.len(), 2, "two window marks in:\n{text}");
        let window = lines[marks[0] + 1..marks[1]]
            .iter()
            .map(|l| l.to_string())
            .collect();
        (window, out)
    };
    // No consumer: the lane fills and further events are dropped. The only call allowed
    // is the drop path's look for an aggregator (an open of the counters page, at most
    // once per 100 ms).
    let (window, out) = trace(false);
    assert!(out.status.success());
    assert!(
        window
            .iter()
            .all(|l| l.contains("openat(") && l.contains("/counters\"")),
        "system calls on the hot path: {window:?}"
    );
    assert!(window.len() <= 20, "{} opens", window.len());
    assert_eq!(
        stdout_value(&out, "dropped "),
        Some(1_000_000 - LANE_CAPACITY as u64 + 2)
    );
    for p in list_segments(dir.path()).unwrap() {
        std::fs::remove_file(p).unwrap();
    }
    // With a consumer draining: nothing is dropped; the only calls allowed are the
    // documented waits of a full lane (yield, short sleeps, clock reads off the vDSO,
    // the look at the counters page, the datagram that wakes the aggregator).
    let (window, out) = trace(true);
    assert_eq!(stdout_value(&out, "dropped "), Some(0));
    let allowed = [
        "sched_yield",
        "nanosleep",
        "clock_nanosleep",
        "clock_gettime",
        "pread64",
        "close",
        "socket",
        "sendto",
    ];
    for l in &window {
        let name = l
            .split_whitespace()
            .nth(1)
            .unwrap_or("")
            .split('(')
            .next()
            .unwrap_or("");
        let counters_open = name == "openat" && l.contains("/counters\"");
        assert!(
            allowed.contains(&name) || counters_open,
            "unexpected system call in the window: {l}"
        );
    }
    eprintln!(
        "system calls in the window with a consumer: {} (full-lane waits)",
        window.len()
    );
}

/// A tracking directory the user cannot write (root's, mode 0755, for uid 65534): the
/// application runs on, says so in one line, and counts every event as undelivered.
/// Needs root to switch users, as CI runs.
#[test]
fn unwritable_tracking_directory_for_this_user_turns_tracking_off_with_one_line() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let dir = TempDir::new("unwritable");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new(c_program("producer"))
        .args(["pairs", "2", "1000"])
        .env("TT_ALLOC_TRACKING_ENABLED", "1")
        .env("TTTRACK_DIR", dir.path())
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert!(out.status.success(), "the application goes on");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "exactly one line: {err}");
    assert!(err.contains("tracking is off in this process"), "{err}");
    assert!(err.contains("ermission denied"), "says why: {err}");
    assert_eq!(stdout_value(&out, "dropped "), Some(4000));
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing created"
    );
}

/// libtttrack.so opened with dlopen, its thread-local block in static TLS (the loader's
/// spare room) and, with none to spare, in dynamic TLS: every event of every thread is
/// delivered once, in order, either way.
#[test]
fn a_library_opened_with_dlopen_delivers_every_event_in_static_and_in_dynamic_tls() {
    let _heavy = heavy();
    let threads = 4u64;
    let pairs = 50_000u64;
    for (tunables, placed) in [
        (None, "tls static"),
        (Some("glibc.rtld.optional_static_tls=0"), "tls dynamic"),
    ] {
        let dir = TempDir::new("dlopen");
        let (out, c) = with_consumer(dir.path(), || {
            let mut cmd = Command::new(c_program_unlinked("dlopened"));
            cmd.arg(lib_path())
                .args([threads.to_string(), pairs.to_string()])
                .env("TT_ALLOC_TRACKING_ENABLED", "1")
                .env("TTTRACK_DIR", dir.path());
            if let Some(t) = tunables {
                cmd.env("GLIBC_TUNABLES", t);
            }
            cmd.output().expect("run dlopened")
        });
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "dlopened failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains(placed),
            "expected {placed} with GLIBC_TUNABLES={tunables:?}, got: {text}"
        );
        assert_eq!(stdout_value(&out, "dropped "), Some(0));
        let pid = *c.events.keys().next().expect("a segment");
        let evs = c.ordered(pid);
        assert_eq!(evs.len() as u64, threads * pairs * 2 + 2, "{placed}");
        assert_contiguous(&evs);
        let mut next: HashMap<u64, u64> = HashMap::new();
        for e in evs.iter().filter(|e| e.id >> 62 == 0) {
            let k = next.entry(e.id >> 32).or_insert(0);
            assert_eq!(
                e.id & 0xffff_ffff,
                *k / 2,
                "{placed}: thread {}: out of order",
                e.id >> 32
            );
            *k += 1;
        }
        assert!(next.values().all(|&k| k == pairs * 2), "{placed}");
    }
}
