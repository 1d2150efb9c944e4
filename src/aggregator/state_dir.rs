//! The aggregator's private directory (`aggregator/` in the tracking directory): its
//! lock, journal and snapshots, and its sockets before they are published. Verified by
//! descriptor (a directory, not a link, owned by the aggregator's user, writable by no
//! one else) and used only through that descriptor, so a link or a directory another
//! user prepared in the world-writable tracking directory is never followed or trusted.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Its name in the tracking directory.
pub const STATE_DIR_NAME: &str = "aggregator";

/// An open, verified private directory.
pub struct StateDir {
    fd: OwnedFd,
    /// The tracking directory, as opened (without following a link) when this was.
    tracking: std::fs::File,
    /// Where it was found, for messages only.
    shown: PathBuf,
}

/// What was wrong with a directory found under the private directory's name.
fn untrusted(st: &libc::stat, euid: u32) -> Option<String> {
    if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
        return Some("it is not a directory".into());
    }
    if st.st_uid != euid {
        return Some(format!(
            "it belongs to uid {}, not to this aggregator's uid {euid}",
            st.st_uid
        ));
    }
    if st.st_mode & 0o022 != 0 {
        return Some(format!(
            "it is writable by other users (mode {:o})",
            st.st_mode & 0o7777
        ));
    }
    None
}

fn cstr(s: &str) -> CString {
    CString::new(s).unwrap_or_default()
}

impl StateDir {
    /// Opens `tracking_dir/aggregator`, creating it (mode 0700) if needed. One that is a
    /// link, not a directory, another user's, or writable by others is moved aside
    /// (`.aggregator.untrusted.PID.N`) and replaced, with `warn` told why; if it cannot
    /// be moved, the error says what to do.
    pub fn open(tracking_dir: &Path, mut warn: impl FnMut(String)) -> Result<Self, String> {
        let shown = tracking_dir.join(STATE_DIR_NAME);
        let tdir = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(tracking_dir)
                .map_err(|e| {
                    format!(
                        "cannot open {} as a directory without following a link: {e}",
                        tracking_dir.display()
                    )
                })?
        };
        let parent = tdir.as_raw_fd();
        let name = cstr(STATE_DIR_NAME);
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        for attempt in 0..4 {
            // SAFETY: parent is an open directory descriptor, name a valid C string.
            unsafe { libc::mkdirat(parent, name.as_ptr(), 0o700) };
            // SAFETY: as above; O_NOFOLLOW makes a link fail instead of being followed.
            let fd = unsafe {
                libc::openat(
                    parent,
                    name.as_ptr(),
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                )
            };
            let problem = if fd < 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::ENOENT) {
                    continue;
                }
                format!("it cannot be opened as a directory without following links ({e})")
            } else {
                // SAFETY: fd was just opened by us and is owned from here on.
                let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                // SAFETY: a zeroed stat is a valid out-parameter for fstat.
                let mut st: libc::stat = unsafe { std::mem::zeroed() };
                // SAFETY: fd is open; st is a valid out-parameter.
                if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
                    return Err(format!(
                        "cannot inspect {}: {}",
                        shown.display(),
                        std::io::Error::last_os_error()
                    ));
                }
                match untrusted(&st, euid) {
                    None => {
                        return Ok(StateDir {
                            fd,
                            tracking: tdir,
                            shown,
                        })
                    }
                    Some(why) => why,
                }
            };
            let aside = format!(
                ".{STATE_DIR_NAME}.untrusted.{}.{attempt}",
                std::process::id()
            );
            let aside_c = cstr(&aside);
            // SAFETY: both names are relative to the same open directory; renameat never
            // follows a link in its last component.
            if unsafe { libc::renameat(parent, name.as_ptr(), parent, aside_c.as_ptr()) } != 0 {
                return Err(format!(
                    "{} cannot be trusted: {problem}; and it cannot be moved aside ({}). Remove it (as its owner or root), or give this aggregator another directory with --dir",
                    shown.display(),
                    std::io::Error::last_os_error()
                ));
            }
            warn(format!(
                "{} could not be trusted ({problem}): moved aside to {} and replaced by a new private directory; nothing in it was read",
                shown.display(),
                tracking_dir.join(&aside).display()
            ));
        }
        Err(format!(
            "{} keeps being replaced by someone else while this aggregator starts; find who (ls -la {}) and stop them, or use another --dir",
            shown.display(),
            tracking_dir.display()
        ))
    }

    /// A path that names this directory itself whatever happens to its name
    /// (`/proc/self/fd/N`): opening through it cannot be redirected by a rename or a
    /// link in the tracking directory.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
    }

    /// Where it is in the tracking directory, for messages.
    pub fn shown(&self) -> &Path {
        &self.shown
    }

    /// Moves `name` from this directory to `to` in the tracking directory (publishing a
    /// socket or the page made here); an entry already there (a stale one, or anything
    /// someone planted) is replaced, never followed.
    pub fn publish(&self, name: &str, to: &str) -> std::io::Result<()> {
        let d = &self.tracking;
        let (from_c, to_c) = (cstr(name), cstr(to));
        // SAFETY: both descriptors are open directories, both names valid C strings.
        let r = unsafe {
            libc::renameat(
                self.fd.as_raw_fd(),
                from_c.as_ptr(),
                d.as_raw_fd(),
                to_c.as_ptr(),
            )
        };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Removes `dir/name` only if it is this user's and `ours` says it is what the
/// aggregator published, so shutting down never removes what another user put there.
pub fn remove_own(dir: &Path, name: &str, ours: impl Fn(&std::fs::Metadata) -> bool) {
    use std::os::unix::fs::MetadataExt;
    let p = dir.join(name);
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if let Ok(m) = std::fs::symlink_metadata(&p) {
        if m.uid() == euid && ours(&m) {
            let _ = std::fs::remove_file(&p);
        }
    }
}

/// Removes `dir/name` only if it is a socket of this user's.
pub fn remove_own_socket(dir: &Path, name: &str) {
    use std::os::unix::fs::FileTypeExt;
    remove_own(dir, name, |m| m.file_type().is_socket());
}

/// Binds a Unix socket at `path` with mode 0666 from its creation (the umask is set to
/// 0111 around `bind`), so its permissions are never changed through a path.
pub fn bind_mode_0666<T>(
    path: &Path,
    bind: impl FnOnce(&Path) -> std::io::Result<T>,
) -> std::io::Result<T> {
    static UMASK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _g = UMASK.lock().unwrap_or_else(|e| e.into_inner());
    // SAFETY: umask has no preconditions; the old mask is restored below.
    let old = unsafe { libc::umask(0o111) };
    let r = bind(path);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    r
}
