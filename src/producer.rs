//! The producer: how a tracked process writes its events into its own segment.
//!
//! # Guarantees
//! - The hot path ([`record`] once a thread has its lane) makes no system call, takes no
//!   lock, allocates nothing and formats nothing: a relaxed `fetch_add` for the sequence
//!   number, four relaxed stores into the slot and one release store of the lane's head.
//! - The segment is created on the process's first event; each thread claims a lane on
//!   its first event (one CAS) and gives it back when it exits.
//! - Tracking never stops the application: any failure turns tracking off in this
//!   process with one line on stderr, and no panic crosses the C ABI.
//!
//! # Full-lane policy
//! When a lane is full:
//! 1. If no aggregator is attached (the segment's consumer heartbeat is zero or older
//!    than [`ATTACH_TIMEOUT_NS`]), the event is dropped at once and counted in the lane.
//!    An aggregator counts as attached when it has marked this segment (consumer pid and
//!    heartbeat) or, before it has found the segment, when the directory's counters
//!    page shows a fresh heartbeat (read with `pread`, at most every 100 ms). In that
//!    second case the thread waits up to 250 ms for the aggregator to find the segment
//!    (it watches the directory with inotify and finds new segments within
//!    milliseconds) while the page stays fresh.
//! 2. If an aggregator is attached, the thread sends a byte to its wake socket (so it
//!    drains now rather than at its next pass) and waits for space: it spins briefly, then
//!    yields, then sleeps in 20 us steps, as long as the aggregator keeps draining
//!    (this lane's tail or the segment's heartbeat moves). It gives up when the
//!    aggregator has made no progress during `TTTRACK_MAX_WAIT_US` (default 1000 us)
//!    of quiet waiting: sleeps that overran their 20 us by more than 4x do not count,
//!    since on an oversubscribed machine the aggregator could not run either. It also
//!    gives up when the aggregator's heartbeat is older than 500 ms, or than
//!    `TTTRACK_MAX_WAIT_US` if that is longer (stopped, hung or gone), whatever the
//!    load. The event is then dropped and counted, and the lane enters *shedding*:
//!    further events on it are dropped at once while it stays full, until the
//!    aggregator's position moves again.
//!
//! So an aggregator that is draining loses nothing (a producer faster than the
//! aggregator is slowed to its pace); an aggregator that stopped costs each lane about
//! a millisecond of waiting once on an idle machine (at most 500 ms on a saturated
//! one); memory is bounded by the lanes; and every event not delivered is counted (the
//! aggregator flags the process inexact and shows the count).
//!
//! Events a thread reports after every lane is taken are counted in the segment header
//! (`no_lane_dropped`); events reported after tracking failed in this process are
//! counted in [`dropped_events`] only (there is no segment to tell anyone).

use crate::segment::SegmentView;
use crate::shm_layout::*;
use crate::sys;
use core::sync::atomic::{AtomicI32, AtomicPtr, AtomicU64, AtomicU8, Ordering::*};
use std::cell::Cell;
use std::io::Write;

const ST_UNKNOWN: u8 = 0;
const ST_DISABLED: u8 = 1;
const ST_IDLE: u8 = 2;
const ST_INIT: u8 = 3;
const ST_READY: u8 = 4;
const ST_FAILED: u8 = 5;

/// How long a full lane waits for a running aggregator to find a new segment.
pub const ATTACH_GRACE_NS: u64 = 250_000_000;

/// An aggregator whose heartbeat is older than this is considered absent (or older
/// than `TTTRACK_MAX_WAIT_US`, if that is longer: see [`absent_after_ns`]).
pub const ATTACH_TIMEOUT_NS: u64 = 500_000_000;

/// Age of a heartbeat past which its aggregator counts as absent: 500 ms, or the
/// configured `TTTRACK_MAX_WAIT_US` if longer, so that a deployment which asks its
/// producers to wait through an aggregator restart gets that whatever the restart takes.
#[inline]
fn absent_after_ns() -> u64 {
    MAX_WAIT_NS.load(Relaxed).max(ATTACH_TIMEOUT_NS)
}

static STATE: AtomicU8 = AtomicU8::new(ST_UNKNOWN);
static BASE: AtomicPtr<u8> = AtomicPtr::new(core::ptr::null_mut());
static FD: AtomicI32 = AtomicI32::new(-1);
/// Bumped at every fork (in the child) so threads re-claim lanes in the new segment.
static GENERATION: AtomicU64 = AtomicU64::new(1);
/// Events that could not be written because tracking failed in this process.
static UNDELIVERED: AtomicU64 = AtomicU64::new(0);
static MAX_WAIT_NS: AtomicU64 = AtomicU64::new(1_000_000);
static ATFORK_REGISTERED: AtomicU8 = AtomicU8::new(0);
/// Set once the "no space for a lane" line has been printed.
static NO_SPACE_SAID: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

const NO_LANE: usize = usize::MAX;
/// One sleep of a producer waiting on a full lane.
const SLEEP_STEP_NS: u64 = 20_000;

/// A thread's claim on one lane, kept in thread-local storage.
struct ThreadLane {
    lane: Cell<usize>,
    generation: Cell<u64>,
    /// This thread's copy of the lane's head (it is the only writer).
    head: Cell<u64>,
    /// Last tail read from the lane; re-read only when the lane looks full.
    tail_cache: Cell<u64>,
    /// Set after a timed-out wait; holds the tail seen then.
    shedding: Cell<Option<u64>>,
    base: Cell<*mut u8>,
}

impl ThreadLane {
    const fn new() -> Self {
        Self {
            lane: Cell::new(NO_LANE),
            generation: Cell::new(0),
            head: Cell::new(0),
            tail_cache: Cell::new(0),
            shedding: Cell::new(None),
            base: Cell::new(core::ptr::null_mut()),
        }
    }

    fn view(&self) -> SegmentView {
        // SAFETY: base was taken from BASE while the generation matched, and a
        // segment stays mapped for the life of its generation (it is only unmapped in
        // a forked child, whose generation differs).
        unsafe { SegmentView::new(self.base.get()) }
    }

    /// Claims a free lane of `seg`. Set-up path: runs once per thread.
    fn claim(&self, seg: SegmentView, generation: u64) -> bool {
        self.lane.set(NO_LANE);
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() } as u32;
        let start = (tid as usize).wrapping_mul(2654435761) % NUM_LANES;
        let h = seg.header();
        for k in 0..NUM_LANES {
            let i = (start + k) % NUM_LANES;
            let bit = 1u64 << i;
            if h.lanes_claimed.load(Relaxed) & bit != 0
                || h.lanes_claimed.fetch_or(bit, AcqRel) & bit != 0
            {
                continue;
            }
            // Ours now. Give the lane real pages before touching it (never touch a lane
            // without its reserved bit: on a full tmpfs that would fault).
            if h.lanes_reserved.load(Acquire) & bit == 0 {
                if !reserve_lane_memory(i) {
                    h.lanes_claimed.fetch_and(!bit, AcqRel);
                    if !NO_SPACE_SAID.swap(true, Relaxed) {
                        let e = std::io::Error::last_os_error();
                        let _ = writeln!(
                            std::io::stderr(),
                            "tttrack: no space for a reporting lane in {} ({e}); this thread's events \
                             are dropped and counted. Free space there or set TTTRACK_DIR.",
                            sys::tracking_dir_from_env().display()
                        );
                    }
                    return false;
                }
                h.lanes_reserved.fetch_or(bit, Release);
            }
            let lane = seg.lane(i);
            lane.state.store(LANE_CLAIMED, Relaxed);
            lane.owner_tid.store(tid, Relaxed);
            lane.claims.store(lane.claims.load(Relaxed) + 1, Relaxed);
            self.lane.set(i);
            self.generation.set(generation);
            self.base.set(seg.base());
            self.head.set(lane.head.load(Acquire));
            self.tail_cache.set(lane.tail.load(Acquire));
            self.shedding.set(None);
            return true;
        }
        false
    }

    fn release(&self) {
        let i = self.lane.get();
        if i != NO_LANE && self.generation.get() == GENERATION.load(Acquire) {
            let seg = self.view();
            let lane = seg.lane(i);
            lane.owner_tid.store(0, Relaxed);
            lane.state.store(LANE_FREE, Relaxed);
            seg.header().lanes_claimed.fetch_and(!(1u64 << i), Release);
        }
        self.lane.set(NO_LANE);
    }

    #[inline(always)]
    fn push(&self, base: *mut u8, generation: u64, ev: Event) {
        if self.lane.get() == NO_LANE || self.generation.get() != generation {
            // SAFETY: base came from BASE in the READY state of this generation.
            let seg = unsafe { SegmentView::new(base) };
            if !self.claim(seg, generation) {
                seg.header().no_lane_dropped.fetch_add(1, Relaxed);
                return;
            }
        }
        let seg = self.view();
        let i = self.lane.get();
        let lane = seg.lane(i);
        let head = self.head.get();
        if head.wrapping_sub(self.tail_cache.get()) >= LANE_CAPACITY as u64
            && !self.wait_for_space(seg, i, head)
        {
            lane.dropped
                .store(lane.dropped.load(Relaxed).wrapping_add(1), Relaxed);
            return;
        }
        publish(seg, i, head, ev);
        self.head.set(head.wrapping_add(1));
    }

    /// Slow path: the lane looked full. Returns true once there is room.
    #[cold]
    #[inline(never)]
    fn wait_for_space(&self, seg: SegmentView, i: usize, head: u64) -> bool {
        let lane = seg.lane(i);
        let cap = LANE_CAPACITY as u64;
        let mut tail = lane.tail.load(Acquire);
        self.tail_cache.set(tail);
        if head.wrapping_sub(tail) < cap {
            self.shedding.set(None);
            return true;
        }
        if let Some(t) = self.shedding.get() {
            if t == tail {
                return false;
            }
            self.shedding.set(None);
        }
        if !consumer_attached(seg) {
            return false;
        }
        wake_aggregator();
        // Wait while the consumer makes progress. Give up once it has made none (its
        // position in this lane and its heartbeat both still) during max_wait of this
        // thread's own quiet sleeping: a sleep that overran its request by far means
        // the machine is oversubscribed and the consumer may not have had a core
        // either, so it does not count. A consumer whose heartbeat is older than
        // absent_after_ns() is gone whatever the load.
        let max_wait = MAX_WAIT_NS.load(Relaxed);
        let heartbeat = || seg.header().consumer_heartbeat_ns.load(Relaxed);
        let mut quiet_ns: u64 = 0;
        let wait_start = sys::monotonic_ns();
        let mut seen = (tail, heartbeat());
        let mut n: u32 = 0;
        loop {
            let mut slept = 0;
            if n < 64 {
                core::hint::spin_loop();
            } else if n < 80 {
                std::thread::yield_now();
            } else {
                let t0 = sys::monotonic_ns();
                std::thread::sleep(std::time::Duration::from_nanos(SLEEP_STEP_NS));
                slept = sys::monotonic_ns().saturating_sub(t0);
            }
            n = n.saturating_add(1);
            tail = lane.tail.load(Acquire);
            if head.wrapping_sub(tail) < cap {
                self.tail_cache.set(tail);
                return true;
            }
            if slept > 0 && seg.header().consumer_pid.load(Relaxed) == 0 {
                // The aggregator runs but has not found this segment yet (it looks
                // for new ones within milliseconds): wait for it up to ATTACH_GRACE_NS.
                let now = sys::monotonic_ns();
                if now.saturating_sub(wait_start) >= ATTACH_GRACE_NS
                    || (n.is_multiple_of(64) && !aggregator_running(now))
                {
                    self.shedding.set(Some(tail));
                    self.tail_cache.set(tail);
                    return false;
                }
                continue;
            }
            if slept > 0 {
                let cur = (tail, heartbeat());
                if cur != seen {
                    seen = cur;
                    quiet_ns = 0;
                } else if slept <= 4 * SLEEP_STEP_NS {
                    quiet_ns += slept;
                }
                if quiet_ns >= max_wait && aggregator_is_running(seg) == Some(true) {
                    // Runnable but not getting a core (the machine is oversubscribed):
                    // that is not a stopped aggregator.
                    quiet_ns = 0;
                }
                let stale = sys::monotonic_ns().saturating_sub(cur.1) >= absent_after_ns();
                if quiet_ns >= max_wait || (stale && !aggregator_running(sys::monotonic_ns())) {
                    self.shedding.set(Some(tail));
                    self.tail_cache.set(tail);
                    return false;
                }
            }
        }
    }
}

/// Writes `ev` into the slot at `head` of lane `i` with the next sequence number and
/// publishes it. The caller owns the lane and has checked there is room.
#[inline(always)]
pub fn publish(seg: SegmentView, i: usize, head: u64, ev: Event) {
    let seq = seg.header().seq.fetch_add(1, Relaxed);
    let words = Event { seq, ..ev }.to_words();
    let slot = seg.slot(i, head);
    slot.words[0].store(words[0], Relaxed);
    slot.words[1].store(words[1], Relaxed);
    slot.words[2].store(words[2], Relaxed);
    slot.words[3].store(words[3], Relaxed);
    seg.lane(i).head.store(head.wrapping_add(1), Release);
}

impl Drop for ThreadLane {
    fn drop(&mut self) {
        self.release();
    }
}

thread_local! {
    static LANE: ThreadLane = const { ThreadLane::new() };
}

/// Whether an aggregator drains this segment, or runs on the tracking directory and
/// will attach to it shortly (it discovers new segments within milliseconds).
fn consumer_attached(seg: SegmentView) -> bool {
    let h = seg.header();
    let hb = h.consumer_heartbeat_ns.load(Acquire);
    let now = sys::monotonic_ns();
    if h.consumer_pid.load(Relaxed) != 0 && hb != 0 && now.saturating_sub(hb) < absent_after_ns() {
        return true;
    }
    aggregator_running(now)
}

/// Whether the aggregator draining `seg` is running or runnable right now (its main
/// thread's state in `/proc/PID/stat` is `R`); `None` if that cannot be read (it
/// exited, or lives in another PID namespace). Slow path only.
fn aggregator_is_running(seg: SegmentView) -> Option<bool> {
    let pid = seg.header().consumer_pid.load(Relaxed);
    if pid == 0 {
        return None;
    }
    let mut path = [0u8; 32];
    {
        let mut w = std::io::Cursor::new(&mut path[..]);
        write!(w, "/proc/{pid}/stat").ok()?;
    }
    let mut buf = [0u8; 512];
    // SAFETY: path is NUL-terminated (zero-filled past the text); buf is writable for
    // its length; the descriptor is checked and closed.
    let n = unsafe {
        let fd = libc::open(
            path.as_ptr() as *const libc::c_char,
            libc::O_RDONLY | libc::O_CLOEXEC,
        );
        if fd < 0 {
            return None;
        }
        let n = libc::read(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len());
        libc::close(fd);
        n
    };
    if n <= 0 {
        return None;
    }
    let text = &buf[..n as usize];
    let close = text.iter().rposition(|&c| c == b')')?;
    let state = text.get(close + 2)?;
    Some(*state == b'R')
}

static WAKE_FD: AtomicI32 = AtomicI32::new(-1);
static WAKE_ADDR: std::sync::OnceLock<(libc::sockaddr_un, libc::socklen_t)> =
    std::sync::OnceLock::new();

/// Sends a one-byte datagram to the aggregator's wake socket so it drains now (slow
/// path only). Datagrams to a socket nobody listens on fail quietly (no SIGPIPE).
fn wake_aggregator() {
    let Some((addr, len)) = WAKE_ADDR.get() else {
        return;
    };
    let mut fd = WAKE_FD.load(Acquire);
    if fd < 0 {
        // SAFETY: creating a socket has no preconditions; the result is checked.
        fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return;
        }
        if WAKE_FD.compare_exchange(-1, fd, AcqRel, Acquire).is_err() {
            // SAFETY: our unpublished descriptor.
            unsafe { libc::close(fd) };
            fd = WAKE_FD.load(Acquire);
        }
    }
    let b = 1u8;
    // SAFETY: sending one byte from a local to a valid sockaddr_un; never blocks, never
    // raises a signal; failure (no aggregator, queue full) is fine.
    unsafe {
        libc::sendto(
            fd,
            &b as *const u8 as *const libc::c_void,
            1,
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            addr as *const libc::sockaddr_un as *const libc::sockaddr,
            *len,
        )
    };
}

/// A `sockaddr_un` for `path`, or `None` if the path is too long for one.
pub fn unix_addr(path: &std::path::Path) -> Option<(libc::sockaddr_un, libc::socklen_t)> {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: sockaddr_un is plain old data; all-zero is a valid value.
    let mut a: libc::sockaddr_un = unsafe { core::mem::zeroed() };
    a.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let b = path.as_os_str().as_bytes();
    if b.len() >= a.sun_path.len() {
        return None;
    }
    for (d, s) in a.sun_path.iter_mut().zip(b) {
        *d = *s as libc::c_char;
    }
    let len = (core::mem::size_of::<libc::sa_family_t>() + b.len() + 1) as libc::socklen_t;
    Some((a, len))
}

static COUNTERS_FD: AtomicI32 = AtomicI32::new(-1);
static COUNTERS_LAST_OPEN_NS: AtomicU64 = AtomicU64::new(0);
static COUNTERS_PATH: std::sync::OnceLock<std::ffi::CString> = std::sync::OnceLock::new();

/// Reads the counters page's presence block with `pread` (a mapping could fault if
/// the file were truncated). Slow path only: a lane is full.
fn aggregator_running(now: u64) -> bool {
    aggregator_running_inner(now, false)
}

fn aggregator_running_inner(now: u64, reopened: bool) -> bool {
    let mut fd = COUNTERS_FD.load(Acquire);
    if fd < 0 {
        let last = COUNTERS_LAST_OPEN_NS.load(Relaxed);
        if last != 0 && now.saturating_sub(last) < 100_000_000 {
            return false;
        }
        COUNTERS_LAST_OPEN_NS.store(now, Relaxed);
        let Some(path) = COUNTERS_PATH.get() else {
            return false;
        };
        // SAFETY: path is a valid C string; read-only, never following a link.
        fd = unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return false;
        }
        if COUNTERS_FD
            .compare_exchange(-1, fd, AcqRel, Acquire)
            .is_err()
        {
            // SAFETY: fd is the descriptor we just opened and did not publish.
            unsafe { libc::close(fd) };
            fd = COUNTERS_FD.load(Acquire);
        }
    }
    let mut buf = [0u8; core::mem::size_of::<PagePresence>()];
    // SAFETY: buf is writable for its length; fd is an open descriptor (or -1, which
    // fails harmlessly).
    let n = unsafe { libc::pread(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0) };
    let word = |o: usize| u64::from_le_bytes(buf[o..o + 8].try_into().unwrap_or_default());
    let alive = n == buf.len() as isize
        && word(0) == COUNTERS_MAGIC
        && now.saturating_sub(word(16)) < ATTACH_TIMEOUT_NS;
    if !alive
        && COUNTERS_FD
            .compare_exchange(fd, -1, AcqRel, Acquire)
            .is_ok()
    {
        // SAFETY: fd was ours in COUNTERS_FD and is no longer published.
        unsafe { libc::close(fd) };
        // A restarted aggregator replaces the file: look at the new one at once.
        if !reopened {
            COUNTERS_LAST_OPEN_NS.store(0, Relaxed);
            return aggregator_running_inner(now, true);
        }
    }
    alive
}

/// Gives lane `i` real pages (tmpfs allocates lazily; a write to a page it cannot
/// allocate would raise SIGBUS in the application).
fn reserve_lane_memory(i: usize) -> bool {
    let fd = FD.load(Acquire);
    if fd < 0 {
        return false;
    }
    let off = (LANES_OFFSET + i * LANE_STRIDE) as libc::off_t;
    // SAFETY: fd is our segment's open descriptor; fallocate only reserves space.
    unsafe { libc::fallocate(fd, 0, off, LANE_STRIDE as libc::off_t) == 0 }
}

/// Whether tracking is on in this process (`TT_ALLOC_TRACKING_ENABLED=1`, read once).
pub fn enabled() -> bool {
    match STATE.load(Acquire) {
        ST_UNKNOWN => decide_enabled(),
        ST_DISABLED => false,
        _ => true,
    }
}

#[cold]
fn decide_enabled() -> bool {
    let on = std::env::var_os("TT_ALLOC_TRACKING_ENABLED").is_some_and(|v| v == "1");
    if let Some(us) = std::env::var_os("TTTRACK_MAX_WAIT_US")
        .and_then(|v| v.to_str().and_then(|s| s.parse::<u64>().ok()))
    {
        MAX_WAIT_NS.store(us.saturating_mul(1000), Relaxed);
    }
    let new = if on { ST_IDLE } else { ST_DISABLED };
    let _ = STATE.compare_exchange(ST_UNKNOWN, new, AcqRel, Acquire);
    STATE.load(Acquire) != ST_DISABLED
}

/// Records one event. Safe from any thread; never blocks for long, never panics.
#[inline]
pub fn record(kind: EventKind, subtype: u8, device: i32, size: u64, id: u64) {
    let ev = Event {
        seq: 0,
        kind: kind as u8,
        subtype,
        _reserved: 0,
        device,
        size,
        id,
    };
    if STATE.load(Acquire) == ST_READY {
        let base = BASE.load(Relaxed);
        let generation = GENERATION.load(Relaxed);
        if LANE.try_with(|tl| tl.push(base, generation, ev)).is_ok() {
            return;
        }
        // Thread-local storage already torn down (a late call from a TLS destructor):
        // borrow a lane for this one event.
        let tl = ThreadLane::new();
        tl.push(base, generation, ev);
        return;
    }
    record_slow(ev);
}

#[cold]
#[inline(never)]
fn record_slow(ev: Event) {
    match ensure_segment() {
        ST_DISABLED => {}
        ST_READY => {
            let base = BASE.load(Relaxed);
            let generation = GENERATION.load(Relaxed);
            if LANE.try_with(|tl| tl.push(base, generation, ev)).is_err() {
                ThreadLane::new().push(base, generation, ev);
            }
        }
        _ => {
            UNDELIVERED.fetch_add(1, Relaxed);
        }
    }
}

/// Decides whether tracking is on and creates the segment if needed; returns the
/// settled state (DISABLED, READY or FAILED).
#[cold]
fn ensure_segment() -> u8 {
    loop {
        match STATE.load(Acquire) {
            ST_UNKNOWN => {
                decide_enabled();
            }
            ST_IDLE => {
                if STATE
                    .compare_exchange(ST_IDLE, ST_INIT, AcqRel, Acquire)
                    .is_ok()
                {
                    let next = match create_segment() {
                        Ok(()) => ST_READY,
                        Err(msg) => {
                            let _ = writeln!(
                                std::io::stderr(),
                                "tttrack: tracking is off in this process (pid {}): {msg}. \
                                 The application continues untracked.",
                                std::process::id()
                            );
                            ST_FAILED
                        }
                    };
                    STATE.store(next, Release);
                }
            }
            ST_INIT => std::thread::yield_now(),
            s => return s,
        }
    }
}

/// Creates, locks, sizes, maps and publishes this process's segment.
fn create_segment() -> Result<(), String> {
    let dir = sys::tracking_dir_from_env();
    sys::ensure_tracking_dir(&dir)
        .map_err(|e| format!("cannot create tracking directory {}: {e}", dir.display()))?;
    let pid = std::process::id();
    let start_time = sys::self_start_time().unwrap_or(0);
    let name = segment_file_name(pid, start_time);
    if let Ok(c) = sys::cstring(&dir.join(COUNTERS_FILE_NAME)) {
        let _ = COUNTERS_PATH.set(c);
    }
    if let Some(a) = unix_addr(&dir.join(WAKE_SOCKET_NAME)) {
        let _ = WAKE_ADDR.set(a);
    }
    let tmp = dir.join(format!(".new.{name}"));
    let fin = dir.join(&name);
    let ctmp = sys::cstring(&tmp).map_err(|e| e.to_string())?;
    let cfin = sys::cstring(&fin).map_err(|e| e.to_string())?;
    // A leftover temporary from a process with our pid and start time cannot be alive.
    // SAFETY: ctmp is a valid path.
    unsafe { libc::unlink(ctmp.as_ptr()) };
    // SAFETY: ctmp is a valid path; flags create a new file, never following links.
    let fd = unsafe {
        libc::open(
            ctmp.as_ptr(),
            libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0o600,
        )
    };
    if fd < 0 {
        return Err(format!(
            "cannot create {}: {}",
            tmp.display(),
            std::io::Error::last_os_error()
        ));
    }
    let fail = |what: &str| {
        let e = std::io::Error::last_os_error();
        // SAFETY: fd is ours; ctmp a valid path.
        unsafe {
            libc::close(fd);
            libc::unlink(ctmp.as_ptr());
        }
        format!("{what} {}: {e}", tmp.display())
    };
    // The lock is our liveness: the kernel drops it when the process dies.
    // SAFETY: fd is a valid descriptor.
    if unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(fail("cannot lock"));
    }
    // SAFETY: fd is a valid descriptor.
    if unsafe { libc::ftruncate(fd, SEGMENT_SIZE as libc::off_t) } != 0 {
        return Err(fail("cannot size"));
    }
    // SAFETY: fd is a valid descriptor; reserve the header pages for real.
    if unsafe { libc::fallocate(fd, 0, 0, LANES_OFFSET as libc::off_t) } != 0 {
        return Err(fail("no space for"));
    }
    // SAFETY: mapping a file we just sized; the result is checked.
    let base = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            SEGMENT_SIZE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(fail("cannot map"));
    }
    let base = base as *mut u8;
    // SAFETY: base maps SEGMENT_SIZE bytes, page aligned, kept until exit or fork.
    let seg = unsafe { SegmentView::new(base) };
    let comm = std::fs::read("/proc/self/comm").unwrap_or_default();
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    write_identity(seg, pid, uid, start_time, &comm);

    // Publish under the final name, never replacing anything.
    // SAFETY: both paths are valid C strings; AT_FDCWD with absolute or relative paths.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            ctmp.as_ptr(),
            libc::AT_FDCWD,
            cfin.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if r != 0 {
        let msg = fail("cannot publish");
        // SAFETY: base/len are the mapping made above.
        unsafe { libc::munmap(base as *mut libc::c_void, SEGMENT_SIZE) };
        return Err(msg);
    }
    FD.store(fd, Release);
    BASE.store(base, Release);
    if ATFORK_REGISTERED.swap(1, AcqRel) == 0 {
        // SAFETY: registering a handler with no preconditions; it runs in the child.
        unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
    }
    Ok(())
}

/// Fills a new segment's header; the magic is stored last (release), so a reader that
/// sees it sees the rest.
pub fn write_identity(seg: SegmentView, pid: u32, uid: u32, start_time: u64, comm: &[u8]) {
    let h = seg.header();
    h.version.store(SEGMENT_LAYOUT_VERSION, Relaxed);
    h.header_size
        .store(core::mem::size_of::<SegmentHeader>() as u32, Relaxed);
    h.segment_size.store(SEGMENT_SIZE as u64, Relaxed);
    h.pid.store(pid, Relaxed);
    h.uid.store(uid, Relaxed);
    h.start_time.store(start_time, Relaxed);
    h.num_lanes.store(NUM_LANES as u32, Relaxed);
    h.lane_capacity.store(LANE_CAPACITY as u32, Relaxed);
    h.lanes_offset.store(LANES_OFFSET as u64, Relaxed);
    h.lane_stride.store(LANE_STRIDE as u64, Relaxed);
    let mut c = [0u8; 16];
    for (d, s) in c
        .iter_mut()
        .zip(comm.iter().take_while(|&&b| b != b'\n' && b != 0))
    {
        *d = *s;
    }
    let (lo, hi) = c.split_at(8);
    h.comm[0].store(
        u64::from_le_bytes(lo.try_into().unwrap_or_default()),
        Relaxed,
    );
    h.comm[1].store(
        u64::from_le_bytes(hi.try_into().unwrap_or_default()),
        Relaxed,
    );
    h.created_unix_ns.store(sys::unix_ns(), Relaxed);
    h.magic.store(SEGMENT_MAGIC, Release);
}

/// In a forked child: forget the parent's segment (and close our copy of its
/// descriptor, so the parent's liveness lock does not outlive the parent). The child's
/// first event creates its own segment.
extern "C" fn after_fork_in_child() {
    GENERATION.fetch_add(1, AcqRel);
    let fd = FD.swap(-1, AcqRel);
    let base = BASE.swap(core::ptr::null_mut(), AcqRel);
    if !base.is_null() {
        // SAFETY: base is the segment mapping of SEGMENT_SIZE bytes; no other thread
        // exists in the child to use it.
        unsafe { libc::munmap(base as *mut libc::c_void, SEGMENT_SIZE) };
    }
    if fd >= 0 {
        // SAFETY: fd is the inherited segment descriptor, ours to close.
        unsafe { libc::close(fd) };
    }
    let wfd = WAKE_FD.swap(-1, AcqRel);
    if wfd >= 0 {
        // SAFETY: inherited descriptor of the wake socket, ours to close.
        unsafe { libc::close(wfd) };
    }
    let cfd = COUNTERS_FD.swap(-1, AcqRel);
    if cfd >= 0 {
        // SAFETY: inherited descriptor of the counters page, ours to close.
        unsafe { libc::close(cfd) };
    }
    let s = STATE.load(Acquire);
    if s == ST_READY || s == ST_INIT || s == ST_FAILED {
        STATE.store(ST_IDLE, Release);
    }
}

/// Records a device description: writes the segment's device slot, then an event so
/// the aggregator applies it in order.
pub fn record_device_info(device: i32, info: &DeviceInfo) {
    if !enabled() {
        return;
    }
    if !(0..MAX_DEVICES as i32).contains(&device) {
        // Out of range: still an event, so the aggregator counts it as invalid.
        record(EventKind::DeviceInfo, 0, device, 0, 0);
        return;
    }
    if ensure_segment() == ST_READY {
        let base = BASE.load(Acquire);
        // SAFETY: base is the live segment of this generation (READY was observed).
        let seg = unsafe { SegmentView::new(base) };
        seg.write_device_info(device as usize, info);
    }
    record(EventKind::DeviceInfo, 0, device, 0, 0);
}

/// Events this process could not deliver: dropped on full lanes, for want of a lane,
/// or because tracking failed.
pub fn dropped_events() -> u64 {
    let mut n = UNDELIVERED.load(Relaxed);
    let base = BASE.load(Acquire);
    if STATE.load(Acquire) == ST_READY && !base.is_null() {
        // SAFETY: base is the live segment of this generation.
        let seg = unsafe { SegmentView::new(base) };
        n += seg.header().no_lane_dropped.load(Relaxed);
        let reserved = seg.header().lanes_reserved.load(Acquire);
        for i in (0..NUM_LANES).filter(|i| reserved & (1 << i) != 0) {
            n += seg.lane(i).dropped.load(Relaxed);
        }
    }
    n
}

/// Gives this thread's lane back now (it is also given back when the thread exits).
pub fn release_thread_lane() {
    let _ = LANE.try_with(|tl| tl.release());
}
