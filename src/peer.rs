//! Who is at the other end of a Unix socket: its credentials, bound to the process
//! itself through a pidfd, so that a later process with the same pid is never taken
//! for it.

use std::os::unix::io::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;

/// The pid and uid of the process that connected, from its credentials at connect time.
pub fn peer(conn: &UnixStream) -> Option<(u32, u32)> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cred`, a valid ucred.
    let r = unsafe {
        libc::getsockopt(
            conn.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            &mut cred as *mut libc::ucred as *mut libc::c_void,
            &mut len,
        )
    };
    (r == 0 && cred.pid > 0).then_some((cred.pid as u32, cred.uid))
}

/// A pidfd of process `pid`, if it runs.
pub fn pidfd_open(pid: u32) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open takes a pid and flags; the result is checked.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) };
    // SAFETY: a non-negative result is a new descriptor that we own.
    (fd >= 0).then(|| unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
}

/// `SO_PEERPIDFD` (Linux 6.5): a pidfd of the process that connected, taken at connect
/// time. Not in the libc crate yet; 77 is its number in the generic socket numbering
/// that these architectures use (others fall back to the pid check).
#[cfg(any(
    target_arch = "x86_64",
    target_arch = "x86",
    target_arch = "aarch64",
    target_arch = "arm",
    target_arch = "riscv64"
))]
const SO_PEERPIDFD: Option<libc::c_int> = Some(77);
#[cfg(not(any(
    target_arch = "x86_64",
    target_arch = "x86",
    target_arch = "aarch64",
    target_arch = "arm",
    target_arch = "riscv64"
)))]
const SO_PEERPIDFD: Option<libc::c_int> = None;

fn peer_pidfd(conn: &UnixStream) -> Option<std::os::fd::OwnedFd> {
    let opt = SO_PEERPIDFD?;
    use std::os::fd::FromRawFd;
    let mut fd: libc::c_int = -1;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `fd`, a valid c_int.
    let r = unsafe {
        libc::getsockopt(
            conn.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            &mut fd as *mut libc::c_int as *mut libc::c_void,
            &mut len,
        )
    };
    // SAFETY: on success fd is a new descriptor that we own.
    (r == 0 && fd >= 0).then(|| unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// The pid a pidfd refers to, as `/proc/self/fdinfo` tells it: `None` once that process
/// has ended (the kernel shows -1), so its pid can no longer name it.
fn pidfd_pid(fd: &std::os::fd::OwnedFd) -> Option<u32> {
    use std::os::fd::AsRawFd;
    let s = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).ok()?;
    let v: i64 = s
        .lines()
        .find_map(|l| l.strip_prefix("Pid:"))?
        .trim()
        .parse()
        .ok()?;
    (v > 0).then_some(v as u32)
}

/// Who is at the other end of a connection, bound to that very process.
pub struct Peer {
    pub pid: u32,
    pub uid: u32,
    pub start_time: u64,
    pub comm: String,
    /// The process's pidfd: taken at connect time where the kernel gives one
    /// (`SO_PEERPIDFD`), else opened by pid here.
    pub pidfd: Option<std::os::fd::OwnedFd>,
}

/// Identifies the client of `conn`: its pid and uid from its credentials at connect
/// time, bound to the process itself through a pidfd taken at connect time, checked
/// before and after reading its start time and name, and against its uid. `None` when
/// that process has already ended (a later process with its pid is never taken for
/// it) or its pid now belongs to another user. On kernels without `SO_PEERPIDFD` the
/// pid is checked against the credentials' uid only.
pub fn identify_peer(conn: &UnixStream, proc_root: &Path) -> Option<Peer> {
    let (pid, uid) = peer(conn)?;
    let bound = peer_pidfd(conn);
    if let Some(fd) = &bound {
        if pidfd_pid(fd) != Some(pid) {
            return None;
        }
    }
    let info = crate::sys::proc_info(proc_root, pid)?;
    if info.uid != uid {
        return None;
    }
    if let Some(fd) = &bound {
        // Still the same process after /proc was read: what was read is its own.
        if pidfd_pid(fd) != Some(pid) {
            return None;
        }
    }
    Some(Peer {
        pid,
        uid,
        start_time: info.start_time,
        comm: info.comm,
        pidfd: bound.or_else(|| pidfd_open(pid)),
    })
}
