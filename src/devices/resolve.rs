//! Paths inside a sysfs root resolved as the kernel resolves them for a process whose
//! root directory is that root: every symlink followed physically, one component at a
//! time, a relative link from the directory that holds it (not from the path it was
//! reached by), an absolute link from the root, `..` never above the root.
//!
//! Why a walk of our own rather than `openat2(RESOLVE_IN_ROOT)`: the callers need the
//! physical path itself (the PCI address is the name of the PCI device's directory, the
//! hwmon directories are listed there), which `openat2` does not give back; the walk
//! works the same on every kernel and in containers whose seccomp filter refuses
//! `openat2`; and the same code then reads the real `/sys` and a fixture tree. The
//! files read at the end are opened with `O_NOFOLLOW | O_NONBLOCK` and must be regular
//! files, so a link or a FIFO put where an attribute belongs is not followed nor
//! waited on.

use std::ffi::OsString;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

/// Links followed in one resolution before giving up, as Linux does (`ELOOP`).
pub const MAX_LINKS: usize = 40;

/// Attribute files are at most a page (what a sysfs `show` may write).
pub const MAX_ATTR_BYTES: u64 = 4096;

/// The physical path, under `root` and with no symlink in it, of `path` (relative to
/// the root; a leading `/` means the root too), or `None` when a component does not
/// exist or the links loop.
pub fn resolve(root: &Path, path: &Path) -> Option<PathBuf> {
    let mut physical: Vec<OsString> = Vec::new();
    // Components still to walk, the next one last.
    let mut todo: Vec<OsString> = Vec::new();
    push_components(&mut todo, path, &mut physical);
    let mut links = 0;
    while let Some(c) = todo.pop() {
        if c == ".." {
            physical.pop();
            continue;
        }
        let here: PathBuf = root.join(physical.iter().collect::<PathBuf>()).join(&c);
        let meta = std::fs::symlink_metadata(&here).ok()?;
        if meta.file_type().is_symlink() {
            links += 1;
            if links > MAX_LINKS {
                return None;
            }
            let target = std::fs::read_link(&here).ok()?;
            push_components(&mut todo, &target, &mut physical);
        } else {
            physical.push(c);
        }
    }
    Some(root.join(physical.iter().collect::<PathBuf>()))
}

/// Queues the components of `p` to be walked before those already queued; an absolute
/// `p` starts again from the root.
fn push_components(todo: &mut Vec<OsString>, p: &Path, physical: &mut Vec<OsString>) {
    let mut parts: Vec<OsString> = Vec::new();
    for c in p.components() {
        match c {
            Component::RootDir | Component::Prefix(_) => {
                physical.clear();
                parts.clear();
            }
            Component::CurDir => {}
            Component::ParentDir => parts.push("..".into()),
            Component::Normal(x) => parts.push(x.to_os_string()),
        }
    }
    todo.extend(parts.into_iter().rev());
}

/// Resolves `path` under `root` and requires a directory.
pub fn resolve_dir(root: &Path, path: &Path) -> Option<PathBuf> {
    resolve(root, path)
        .filter(|p| std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_dir()))
}

/// The trimmed text of attribute `name` in the physical directory `dir`; `None` when it
/// is missing, not a regular file, unreadable (ENODATA, ENODEV...), empty, longer than
/// a page or not UTF-8.
pub fn read_attr(dir: &Path, name: &str) -> Option<String> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return None;
    }
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(dir.join(name))
        .ok()?;
    if !f.metadata().ok()?.file_type().is_file() {
        return None;
    }
    let mut buf = Vec::new();
    f.take(MAX_ATTR_BYTES + 1).read_to_end(&mut buf).ok()?;
    if buf.len() as u64 > MAX_ATTR_BYTES {
        return None;
    }
    let s = String::from_utf8(buf).ok()?;
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tree() -> PathBuf {
        let p = std::env::temp_dir().join(format!(
            "tttrack-resolve-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(p.join("sys/devices/pci/card/class/dev0")).unwrap();
        std::fs::create_dir_all(p.join("sys/class/x")).unwrap();
        p
    }

    #[test]
    fn relative_links_resolve_from_where_they_physically_are() {
        let r = tree();
        symlink(
            "../../devices/pci/card/class/dev0",
            r.join("sys/class/x/dev0"),
        )
        .unwrap();
        symlink(
            "../../../card",
            r.join("sys/devices/pci/card/class/dev0/device"),
        )
        .unwrap();
        assert_eq!(
            resolve(&r, Path::new("sys/class/x/dev0/device")),
            Some(r.join("sys/devices/pci/card"))
        );
        // Applied to the path it was reached by, the same link would name sys/class/card.
        assert!(!r.join("sys/class/card").exists());
        std::fs::remove_dir_all(&r).unwrap();
    }

    #[test]
    fn nothing_escapes_the_root() {
        let r = tree();
        symlink("/sys/devices/pci", r.join("sys/class/x/abs")).unwrap();
        symlink("../../../../../../../../../..", r.join("sys/class/x/up")).unwrap();
        symlink("/etc/passwd", r.join("sys/class/x/passwd")).unwrap();
        assert_eq!(
            resolve(&r, Path::new("sys/class/x/abs")),
            Some(r.join("sys/devices/pci"))
        );
        assert_eq!(resolve(&r, Path::new("sys/class/x/up")), Some(r.clone()));
        assert_eq!(resolve(&r, Path::new("/../../sys")), Some(r.join("sys")));
        // /etc/passwd inside the root does not exist: not the host's file.
        assert_eq!(resolve(&r, Path::new("sys/class/x/passwd")), None);
        std::fs::remove_dir_all(&r).unwrap();
    }

    #[test]
    fn loops_end() {
        let r = tree();
        symlink("b", r.join("sys/class/x/a")).unwrap();
        symlink("a", r.join("sys/class/x/b")).unwrap();
        assert_eq!(resolve(&r, Path::new("sys/class/x/a")), None);
        std::fs::remove_dir_all(&r).unwrap();
    }

    #[test]
    fn attributes_are_regular_files_read_without_following_links() {
        let r = tree();
        let d = r.join("sys/class/x");
        std::fs::write(d.join("ok"), "42\n").unwrap();
        std::fs::write(d.join("big"), vec![b'1'; 5000]).unwrap();
        symlink("ok", d.join("link")).unwrap();
        let fifo = std::ffi::CString::new(d.join("fifo").to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path; mkfifo has no other preconditions.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        assert_eq!(read_attr(&d, "ok").as_deref(), Some("42"));
        assert_eq!(read_attr(&d, "link"), None);
        assert_eq!(read_attr(&d, "fifo"), None, "a FIFO is not waited on");
        assert_eq!(read_attr(&d, "big"), None);
        assert_eq!(read_attr(&d, "../x/ok"), None);
        std::fs::remove_dir_all(&r).unwrap();
    }
}
