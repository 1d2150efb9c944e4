//! Start-up: the tracking directory checked, the private directory and its lock, the
//! journal recovered, the counters page and the sockets published, the devices found.

use super::journal::{Journal, Recovered};
use super::state_dir::{self, StateDir};
use super::{commit, Aggregator, Clock, Config, Identity, Log, StartError, Wakeups};
use crate::counters_page::{AggregatorStatus, PAGE_SIZE};
use crate::shm_layout::{COUNTERS_FILE_NAME, WAKE_SOCKET_NAME};
use crate::sys;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::time::Instant;

pub(super) fn map_err<E: std::fmt::Display>(
    what: &str,
    path: &Path,
) -> impl FnOnce(E) -> StartError {
    let msg = format!("{what} {}", path.display());
    move |e| StartError(format!("{msg}: {e}"))
}

impl Aggregator {
    /// Takes the directory's aggregator lock, recovers the journal and creates a fresh
    /// counters page.
    pub fn start(cfg: Config) -> Result<Self, StartError> {
        let log = Log {
            verbosity: cfg.verbosity,
        };
        let me = claim_directory(&cfg.dir, &log)?;
        // The page first: its fresh heartbeat tells producers with full lanes that an
        // aggregator is coming while the journal is replayed.
        let page =
            super::publish::Page::create(&me.state_dir, &cfg.dir, me.pid, me.started_unix_ns)?;
        let (journal, rec) = recover(&me.state_dir, &page)?;
        let status = AggregatorStatus {
            pid: me.pid,
            start_unix_ns: me.started_unix_ns,
            recovered_from_journal: (rec.replayed > 0 || rec.generation > 0) as u64,
            ..Default::default()
        };
        let wakeups = Wakeups {
            inotify: watch_dir(&cfg.dir),
            wake: bind_wake_socket(&me.state_dir),
        };
        let now = Instant::now();
        let mut agg = Self {
            log,
            acc: Default::default(),
            journal,
            me,
            segments: Default::default(),
            segmentless: Default::default(),
            page,
            status,
            wakeups,
            telemetry: Default::default(),
            compat: Default::default(),
            requests: Default::default(),
            clock: Clock {
                discovery: now - super::DISCOVERY_INTERVAL_WATCHED * 2,
                liveness: now,
                history: now - super::HISTORY_INTERVAL * 2,
                beat_ns: 0,
                activity: now,
            },
            over_limit_logged: Default::default(),
            recordings: Default::default(),
            last: super::last_events::LastEvents::new(cfg.last_events_seconds, cfg.last_events_mib),
            refusals_logged: Default::default(),
            metal: super::metal_regions::MetalSource::new(
                cfg.metal_shm_dir.as_deref(),
                &cfg.proc_root,
            ),
            cfg,
        };
        agg.log.info(format!(
            "tt-aggregator {} started (pid {})\n   tracking directory: {}\n   counters page: {} ({} bytes)",
            env!("CARGO_PKG_VERSION"),
            agg.me.pid,
            agg.cfg.dir.display(),
            agg.cfg.dir.join(COUNTERS_FILE_NAME).display(),
            PAGE_SIZE
        ));
        // The recovered accounting first: the cards the first sample finds are given to
        // it (given to an accounting replaced afterwards, they were lost until the
        // first publication, and events applied meanwhile made rows of ids as reported
        // that stayed beside the cards' rows).
        agg.log_recovery(&rec);
        agg.acc = rec.accounting;
        agg.start_telemetry();
        Ok(agg)
    }

    fn log_recovery(&self, rec: &Recovered) {
        if rec.replayed > 0 || rec.generation > 0 {
            self.log.info(format!(
                "   recovered from a previous run: {} processes, {} journaled events replayed{}",
                rec.accounting.processes().len(),
                rec.replayed,
                if rec.torn {
                    " (a torn last record was ignored)"
                } else {
                    ""
                }
            ));
        }
    }
}

/// Makes sure the tracking directory is one to use, opens the private directory beside
/// it and takes the lock there.
fn claim_directory(dir: &Path, log: &Log) -> Result<Identity, StartError> {
    sys::ensure_tracking_dir(dir).map_err(map_err("cannot create", dir))?;
    refuse_foreign_directory(dir)?;
    warn_about_directory(dir, log);
    let state_dir = StateDir::open(dir, |w| log.warn(w)).map_err(StartError)?;
    let lock = take_lock(&state_dir, dir)?;
    Ok(Identity {
        pid: std::process::id(),
        started_unix_ns: sys::unix_ns(),
        state_dir,
        _lock: lock,
    })
}

/// Replays the journal of the private directory, keeping the page's heartbeat fresh
/// meanwhile.
fn recover(
    state_dir: &StateDir,
    page: &super::publish::Page,
) -> Result<(Journal, Recovered), StartError> {
    let mut replayed = 0u64;
    let opened = Journal::open(&state_dir.path(), |acc, r| {
        commit::replay(acc, r);
        replayed += 1;
        if replayed.is_multiple_of(16384) {
            page.view.beat();
        }
    })
    .map_err(map_err("cannot recover the journal in", state_dir.shown()))?;
    page.view.beat();
    Ok(opened)
}

/// A tracking directory owned by another user (not root, not us) is refused: its owner
/// could swap it for a link at any moment and have the aggregator create its page and
/// sockets wherever that leads.
fn refuse_foreign_directory(dir: &Path) -> Result<(), StartError> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(dir).map_err(map_err("cannot inspect", dir))?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if !m.file_type().is_dir() {
        return Err(StartError(format!(
            "{} is not a directory (a link?); remove it, or give another --dir",
            dir.display()
        )));
    }
    if m.uid() != me && m.uid() != 0 {
        return Err(StartError(format!(
            "the tracking directory {} is owned by uid {}, not by root or by this user (uid {me}): that user could replace it with a link at any moment, so it is not used. Remove it (the aggregator makes a new one, mode 1777), or give a directory of root's or yours with --dir",
            dir.display(),
            m.uid()
        )));
    }
    Ok(())
}

/// Says so when the tracking directory is writable by all without the sticky bit
/// (anyone could then remove others' segments).
fn warn_about_directory(dir: &Path, log: &Log) {
    use std::os::unix::fs::MetadataExt;
    let Ok(m) = std::fs::symlink_metadata(dir) else {
        return;
    };
    if m.mode() & 0o002 != 0 && m.mode() & 0o1000 == 0 {
        log.warn(format!(
            "the tracking directory {} is writable by all users without the sticky bit: anyone can remove other users' segments; chmod 1777 it",
            dir.display()
        ));
    }
}

/// Binds a socket in the private directory, mode 0666 from its creation (every user's
/// producers and viewers may connect), and publishes it in the tracking directory under
/// the same name, replacing whatever is there without following it.
pub(super) fn bind_published<T>(
    state: &StateDir,
    name: &str,
    bind: impl FnOnce(&Path) -> std::io::Result<T>,
) -> std::io::Result<T> {
    let private = state.path().join(name);
    // Ours, left by a crash: nobody else can write in the private directory.
    let _ = std::fs::remove_file(&private);
    let s = state_dir::bind_mode_0666(&private, bind)?;
    state.publish(name, name)?;
    Ok(s)
}

/// Binds the wake socket, writable by every user so any producer can wake us. None if
/// that fails.
fn bind_wake_socket(state: &StateDir) -> Option<std::os::unix::net::UnixDatagram> {
    let s = bind_published(state, WAKE_SOCKET_NAME, |p| {
        std::os::unix::net::UnixDatagram::bind(p)
    })
    .ok()?;
    s.set_nonblocking(true).ok()?;
    Some(s)
}

/// Watches `dir` for names created or moved in; -1 if inotify is not available.
fn watch_dir(dir: &Path) -> i32 {
    let Ok(c) = sys::cstring(dir) else { return -1 };
    // SAFETY: plain inotify calls; the fd is checked and owned by the aggregator.
    unsafe {
        let fd = libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC);
        if fd < 0 {
            return -1;
        }
        if libc::inotify_add_watch(fd, c.as_ptr(), libc::IN_MOVED_TO | libc::IN_CREATE) < 0 {
            libc::close(fd);
            return -1;
        }
        fd
    }
}

/// Takes the directory's lock, a file in the private directory that no other user can
/// open (so none can hold it to stop a restart).
fn take_lock(state: &StateDir, dir: &Path) -> Result<std::fs::File, StartError> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = state.path().join("lock");
    let shown = state.shown().join("lock");
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
        .map_err(map_err("cannot open", &shown))?;
    // SAFETY: f is an open descriptor.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let mut other = String::new();
        let _ = std::io::Read::read_to_string(&mut std::io::Read::take(&f, 32), &mut other);
        let other = other.trim();
        return Err(StartError(format!(
            "another tt-aggregator{} is already running on {}; stop it first, or give this one another directory with --dir",
            if other.is_empty() { String::new() } else { format!(" (pid {other})") },
            dir.display()
        )));
    }
    f.set_len(0).map_err(map_err("cannot write", &shown))?;
    use std::os::unix::fs::FileExt;
    f.write_all_at(format!("{}\n", std::process::id()).as_bytes(), 0)
        .map_err(map_err("cannot write", &shown))?;
    Ok(f)
}
