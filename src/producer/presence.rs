//! Whether an aggregator is there to drain this process's segment, and how to wake
//! it: read only on the slow path (a full lane), never on the hot path.

use super::*;
use std::io::Write;

/// Whether an aggregator drains this segment, or runs on the tracking directory and
/// will attach to it shortly (it discovers new segments within milliseconds).
pub(super) fn consumer_attached(seg: SegmentView) -> bool {
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
pub(super) fn aggregator_is_running(seg: SegmentView) -> Option<bool> {
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

pub(super) static WAKE_FD: AtomicI32 = AtomicI32::new(-1);
pub(super) static WAKE_ADDR: std::sync::OnceLock<(libc::sockaddr_un, libc::socklen_t)> =
    std::sync::OnceLock::new();

/// Sends a one-byte datagram to the aggregator's wake socket so it drains now (slow
/// path only). Datagrams to a socket nobody listens on fail quietly (no SIGPIPE).
pub(super) fn wake_aggregator() {
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

pub(super) static COUNTERS_FD: AtomicI32 = AtomicI32::new(-1);
pub(super) static COUNTERS_LAST_OPEN_NS: AtomicU64 = AtomicU64::new(0);
pub(super) static COUNTERS_PATH: std::sync::OnceLock<std::ffi::CString> =
    std::sync::OnceLock::new();

/// Reads the counters page's presence block with `pread` (a mapping could fault if
/// the file were truncated). Slow path only: a lane is full.
pub(super) fn aggregator_running(now: u64) -> bool {
    aggregator_running_inner(now, false)
}

pub(super) fn aggregator_running_inner(now: u64, reopened: bool) -> bool {
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
        && word(core::mem::offset_of!(PagePresence, magic)) == COUNTERS_MAGIC
        && now.saturating_sub(word(core::mem::offset_of!(PagePresence, heartbeat_ns)))
            < ATTACH_TIMEOUT_NS;
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
