//! The process's segment file: created, locked, sized, mapped and published under its
//! final name on the first event; lane pages reserved as threads claim lanes; forgotten
//! in a forked child.

use super::presence::{unix_addr, COUNTERS_FD, COUNTERS_PATH, WAKE_ADDR, WAKE_FD};
use super::*;

/// Gives lane `i` real pages (tmpfs allocates lazily; a write to a page it cannot
/// allocate would raise SIGBUS in the application).
pub(super) fn reserve_lane_memory(i: usize) -> bool {
    let fd = FD.load(Acquire);
    if fd < 0 {
        return false;
    }
    let off = (LANES_OFFSET + i * LANE_STRIDE) as libc::off_t;
    // SAFETY: fd is our segment's open descriptor; fallocate only reserves space.
    unsafe { libc::fallocate(fd, 0, off, LANE_STRIDE as libc::off_t) == 0 }
}

/// Creates, locks, sizes, maps and publishes this process's segment.
pub(super) fn create_segment() -> Result<(), String> {
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
    let ctmp = sys::cstring(&tmp).map_err(|e| e.to_string())?;
    let cfin = sys::cstring(&dir.join(&name)).map_err(|e| e.to_string())?;
    let fd = open_locked(&ctmp, &tmp.display().to_string())?;
    let fail = |what: &str| {
        let e = std::io::Error::last_os_error();
        // SAFETY: fd is ours; ctmp a valid path.
        unsafe {
            libc::close(fd);
            libc::unlink(ctmp.as_ptr());
        }
        format!("{what} {}: {e}", tmp.display())
    };
    let base = size_and_map(fd).map_err(&fail)?;
    // SAFETY: base maps SEGMENT_SIZE bytes, page aligned, kept until exit or fork.
    let seg = unsafe { SegmentView::new(base) };
    let comm = std::fs::read("/proc/self/comm").unwrap_or_default();
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    write_identity(seg, pid, uid, start_time, &comm);
    // Which cards this process sees, for the aggregator to tell which chip its device
    // 0 is (read here, once: the environment as it stands at the first event).
    let visible = std::env::var_os("TT_VISIBLE_DEVICES");
    seg.set_visible_devices(
        visible
            .as_deref()
            .map(std::os::unix::ffi::OsStrExt::as_bytes),
    );
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

/// Creates the temporary file `path` (shown as `shown`) and takes its lock, which is
/// this process's liveness: the kernel drops it when the process dies.
fn open_locked(path: &std::ffi::CStr, shown: &str) -> Result<libc::c_int, String> {
    // A leftover temporary from a process with our pid and start time cannot be alive.
    // SAFETY: path is a valid C string.
    unsafe { libc::unlink(path.as_ptr()) };
    // SAFETY: path is a valid C string; flags create a new file, never following links.
    let fd = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0o600,
        )
    };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        return Err(format!("cannot create {shown}: {e}"));
    }
    // SAFETY: fd is a valid descriptor.
    if unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = std::io::Error::last_os_error();
        // SAFETY: fd is ours; path a valid C string.
        unsafe {
            libc::close(fd);
            libc::unlink(path.as_ptr());
        }
        return Err(format!("cannot lock {shown}: {e}"));
    }
    Ok(fd)
}

/// Sizes the segment file, reserves its header pages and maps it. On failure, says
/// what failed (errno tells why).
fn size_and_map(fd: libc::c_int) -> Result<*mut u8, &'static str> {
    // SAFETY: fd is a valid descriptor.
    if unsafe { libc::ftruncate(fd, SEGMENT_SIZE as libc::off_t) } != 0 {
        return Err("cannot size");
    }
    // SAFETY: fd is a valid descriptor; reserve the header pages for real.
    if unsafe { libc::fallocate(fd, 0, 0, LANES_OFFSET as libc::off_t) } != 0 {
        return Err("no space for");
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
        return Err("cannot map");
    }
    Ok(base as *mut u8)
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
    // The forking thread, the child's only one, leaves the parent's lane behind.
    super::LANE.with(|tl| tl.forget());
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
