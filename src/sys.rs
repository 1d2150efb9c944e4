//! Small wrappers over the operating system: clocks, the tracking directory, `/proc`.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Default tracking directory.
pub const DEFAULT_DIR: &str = "/dev/shm/tttrack";

/// The tracking directory: `$TTTRACK_DIR` if set and non-empty, else `/dev/shm/tttrack`.
pub fn tracking_dir_from_env() -> PathBuf {
    match std::env::var_os("TTTRACK_DIR") {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => PathBuf::from(DEFAULT_DIR),
    }
}

/// Creates the tracking directory if missing, with mode 1777 (like /tmp) so several
/// users can track. An existing path must be a real directory, not a symlink.
pub fn ensure_tracking_dir(dir: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.file_type().is_dir() => return Ok(()),
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} exists but is not a directory", dir.display()),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if let Some(parent) = dir.parent() {
        if !parent.as_os_str().is_empty() && !parent.exists() {
            std::fs::create_dir_all(parent)?;
        }
    }
    let c = cstring(dir)?;
    // SAFETY: c is a valid NUL-terminated path.
    let r = unsafe { libc::mkdir(c.as_ptr(), 0o1777) };
    if r != 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::AlreadyExists {
            return Err(e);
        }
        // Someone made it meanwhile: it must still be a real directory.
        return match std::fs::symlink_metadata(dir) {
            Ok(m) if m.file_type().is_dir() => Ok(()),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} appeared meanwhile and is not a directory",
                    dir.display()
                ),
            )),
        };
    }
    // mkdir applies the umask; set the mode exactly, on the directory we made (opened
    // without following a link), never through its path.
    // SAFETY: c is a valid NUL-terminated path; the descriptor is checked and closed.
    unsafe {
        let fd = libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        );
        if fd >= 0 {
            libc::fchmod(fd, 0o1777);
            libc::close(fd);
        }
    }
    Ok(())
}

pub fn cstring(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// CLOCK_MONOTONIC in nanoseconds (a vDSO call: no system call on x86-64 Linux).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write into.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Wall-clock time in nanoseconds since the Unix epoch.
pub fn unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Facts about a live process from `/proc/PID/stat` and `/proc/PID`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcInfo {
    pub pid: u32,
    pub comm: String,
    /// Start time in clock ticks since boot.
    pub start_time: u64,
    pub uid: u32,
}

/// Reads `/proc/PID/stat` (under `proc_root`, normally `/proc`); `None` if the process
/// does not exist or the file does not parse.
pub fn proc_info(proc_root: &Path, pid: u32) -> Option<ProcInfo> {
    use std::os::unix::fs::MetadataExt;
    let dir = proc_root.join(pid.to_string());
    let stat = std::fs::read(dir.join("stat")).ok()?;
    let uid = std::fs::metadata(&dir).ok()?.uid();
    let (comm, start_time) = parse_stat(&stat)?;
    Some(ProcInfo {
        pid,
        comm,
        start_time,
        uid,
    })
}

/// The parent of process `pid` (`/proc/PID/stat` field 4).
pub fn parent_of(proc_root: &Path, pid: u32) -> Option<u32> {
    let stat = std::fs::read(proc_root.join(pid.to_string()).join("stat")).ok()?;
    let close = stat.iter().rposition(|&c| c == b')')?;
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    rest.split_ascii_whitespace().nth(1)?.parse().ok()
}

/// The value of variable `name` in the environment process `pid` started with
/// (`/proc/PID/environ`, at most 1 MiB read): `Ok(None)` if it is not set, `Err` if the
/// file cannot be read (another user's process, to an unprivileged reader).
pub fn proc_env_var(proc_root: &Path, pid: u32, name: &str) -> std::io::Result<Option<Vec<u8>>> {
    use std::io::Read;
    let f = std::fs::File::open(proc_root.join(pid.to_string()).join("environ"))?;
    let mut b = Vec::new();
    f.take(1 << 20).read_to_end(&mut b)?;
    let key = format!("{name}=");
    Ok(b.split(|&c| c == 0)
        .find_map(|e| e.strip_prefix(key.as_bytes()))
        .map(<[u8]>::to_vec))
}

/// Copies a string into a NUL-padded fixed field (cut at the field's size).
pub fn put_str<const N: usize>(s: &str) -> [u8; N] {
    let mut b = [0u8; N];
    for (d, c) in b.iter_mut().zip(s.bytes().take(N)) {
        *d = c;
    }
    b
}

/// Reads a NUL-padded fixed field (a name in shared memory), replacing anything
/// unprintable.
pub fn get_str(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    printable(&b[..end])
}

/// A name another process chose (its comm, from its segment, `/proc` or a socket), made
/// safe to print: invalid UTF-8 and every control character (escape codes included)
/// become `?`.
pub fn printable(b: &[u8]) -> String {
    String::from_utf8_lossy(b)
        .chars()
        .map(|c| {
            if c.is_control() || c == '\u{fffd}' {
                '?'
            } else {
                c
            }
        })
        .collect()
}

/// Parses `comm` and `starttime` (field 22) out of a `/proc/PID/stat` line. The comm is
/// between the first '(' and the last ')', and may itself contain spaces and parens.
pub fn parse_stat(stat: &[u8]) -> Option<(String, u64)> {
    let open = stat.iter().position(|&c| c == b'(')?;
    let close = stat.iter().rposition(|&c| c == b')')?;
    if close < open {
        return None;
    }
    let comm = printable(&stat[open + 1..close]);
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    // After ")": field 3 (state) is the first; starttime is field 22.
    let start_time = rest.split_ascii_whitespace().nth(19)?.parse().ok()?;
    Some((comm, start_time))
}

/// This process's start time in clock ticks since boot.
pub fn self_start_time() -> Option<u64> {
    let stat = std::fs::read("/proc/self/stat").ok()?;
    parse_stat(&stat).map(|(_, st)| st)
}

/// An age in seconds, for reading: "42 s", "3 min 20 s", "2 h 5 min", "3 d 4 h".
pub fn human_age(s: u64) -> String {
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min {} s", s / 60, s % 60),
        3600..=86_399 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86_400, s % 86_400 / 3600),
    }
}

/// Formats a byte count for people: B, KiB, MiB, GiB, TiB.
pub fn human_bytes(b: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    if b < 1024 {
        return format!("{b} B");
    }
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.1} {}", U[i])
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn parses_stat_with_odd_comm() {
        let line = b"4711 (we(ird) name) S 1 4711 4711 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 12345 67 18446744073709551615";
        let (comm, st) = parse_stat(line).unwrap();
        assert_eq!(comm, "we(ird) name");
        assert_eq!(st, 987654);
        assert!(parse_stat(b"garbage").is_none());
        assert!(parse_stat(b"1 (x) S 1").is_none());
    }
    #[test]
    fn human_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1024), "1.0 KiB");
        assert_eq!(human_bytes(1536 * 1024 * 1024), "1.5 GiB");
        assert_eq!(human_age(0), "0 s");
        assert_eq!(human_age(200), "3 min 20 s");
        assert_eq!(human_age(7500), "2 h 5 min");
        assert_eq!(human_age(3 * 86_400 + 4 * 3600 + 5), "3 d 4 h");
    }
    #[test]
    fn own_start_time_matches_proc() {
        let me = proc_info(Path::new("/proc"), std::process::id()).unwrap();
        assert_eq!(Some(me.start_time), self_start_time());
    }
}
