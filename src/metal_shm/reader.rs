//! Finding and reading TT-Metal's regions in a directory (`/dev/shm` normally), and
//! telling which slots are live processes. Used by the aggregator on every tick and by
//! `tt-smi` once when no aggregator runs.
//!
//! Every file there may be another user's trap. A region is opened without following
//! links and without blocking (a FIFO), must be a regular file of exactly one version's
//! size, and is read with `pread` into a buffer of ours, never mapped: a mapping of a
//! file its owner can shrink raises SIGBUS on the next read, a `pread` returns short.
//! A name that was refused is remembered by inode and looked at again only after a
//! wait that doubles each time, so junk costs nothing on later sweeps; a sweep reads a
//! bounded number of names per tick, and each uid has a bounded number of regions.
//!
//! A slot speaks for a live process only if that process exists, is of the file
//! owner's uid (root's files: any uid), and did not start after the slot was last
//! written (its pid was reused). Liveness is held through a pidfd, so a reused pid is
//! never taken for the process that had it.

use super::{chip_of_name, parse, Region, RegionError, Stamp};
use crate::counters_page::NUM_CATS;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsStr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirEntryExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Names read from the directory per tick (a sweep over 300,000 names takes many ticks).
const NAMES_PER_TICK: usize = 4096;
/// Files opened and checked per tick.
const OPENS_PER_TICK: usize = 64;
/// Regions held for one uid other than root, and in all.
pub const MAX_REGIONS_PER_UID: usize = 64;
pub const MAX_REGIONS: usize = 512;
/// Refused names remembered (beyond this, a refused name is looked at again each sweep,
/// still within the per-tick bounds).
const MAX_REMEMBERED: usize = 100_000;
/// Processes whose liveness is held (a pidfd each).
const MAX_PIDS: usize = 8192;
/// How long after the last full sweep another starts when inotify reports names.
const SWEEP_EVERY_WATCHED: Duration = Duration::from_secs(5);
/// A slot's process may have started this long after the slot's stamp (clock ticks are
/// 10 ms; the boot time is computed) before its pid counts as reused.
const START_SLACK_NS: u64 = 50_000_000;

/// A region file that was refused, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A symlink, FIFO, directory or other non-regular file.
    NotAFile,
    /// The file's mode does not let us read it (another user's, 0600).
    NoPermission {
        uid: u32,
    },
    /// Its bytes are not a region this reader knows.
    Layout(RegionError),
    /// Its uid holds [`MAX_REGIONS_PER_UID`] already, or [`MAX_REGIONS`] are held.
    TooMany {
        uid: u32,
    },
    Io(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::NotAFile => f.write_str("not a regular file (a link, FIFO or directory)"),
            Refusal::NoPermission { uid } => write!(
                f,
                "mode 0600, uid {uid}: only that user or root can read it (TT-Metal makes its regions 0600)"
            ),
            Refusal::Layout(e) => e.fmt(f),
            Refusal::TooMany { uid } => write!(
                f,
                "uid {uid} has {MAX_REGIONS_PER_UID} regions read already (or {MAX_REGIONS} are read in all)"
            ),
            Refusal::Io(e) => f.write_str(e),
        }
    }
}

/// A region held open.
struct Held {
    file: std::fs::File,
    ino: u64,
    uid: u32,
    mode: u32,
    size: usize,
    region: Option<Region>,
}

/// A name refused, looked at again after `retry_at`.
struct Refused {
    ino: u64,
    retry_at: Instant,
    wait: Duration,
    why: Refusal,
}

/// A process's liveness, held through its pidfd.
struct PidEntry {
    _pidfd: OwnedFd,
    fd: i32,
    uid: u32,
    comm: std::sync::Arc<str>,
    /// Start time in clock ticks since boot (as the lanes' processes are keyed).
    start_time: u64,
    /// The same since boot, in nanoseconds.
    start_boot_ns: u64,
    /// Tick in which a slot named it last.
    touched: u64,
}

/// A slot of a live process of the file owner's (root's files: any process).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveSlot {
    pub chip: u64,
    pub pid: u32,
    pub start_time: u64,
    pub uid: u32,
    /// Its name from `/proc` (safe to print).
    pub comm: std::sync::Arc<str>,
    pub used: [u64; NUM_CATS],
}

/// Why a slot's process is not live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gone {
    /// No such process.
    Exited,
    /// A process of that pid started after the slot was last written.
    PidReused,
}

/// A slot whose process is gone: bytes the region still counts (in v1-v3, forever).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeftSlot {
    pub chip: u64,
    pub file: String,
    pub file_uid: u32,
    pub pid: u32,
    pub name: String,
    pub used: [u64; NUM_CATS],
    pub why: Gone,
}

/// One region as last read, for views and `doctor`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionSummary {
    pub file: String,
    pub chip: u64,
    pub uid: u32,
    pub mode: u32,
    pub version: u32,
    pub slots: usize,
    pub live_slots: usize,
    pub left_slots: usize,
    /// Slots naming a live process of another uid than the file's: ignored.
    pub foreign_slots: usize,
    pub totals: [u64; NUM_CATS],
}

/// What one tick found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub regions: Vec<RegionSummary>,
    pub live: Vec<LiveSlot>,
    pub left: Vec<LeftSlot>,
    /// Region names refused (at most 64 listed; `refused_total` counts them all).
    pub refused: Vec<(String, Refusal)>,
    pub refused_total: usize,
}

/// Something worth a log line, returned once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    Found {
        file: String,
        version: u32,
        uid: u32,
    },
    Refused {
        file: String,
        why: Refusal,
    },
    Closed {
        file: String,
    },
}

pub struct Reader {
    dir: PathBuf,
    proc_root: PathBuf,
    inotify: Option<OwnedFd>,
    sweep: Option<std::fs::ReadDir>,
    sweep_started: Option<Instant>,
    held: BTreeMap<u64, Held>,
    refused: HashMap<u64, Refused>,
    pids: HashMap<u32, PidEntry>,
    tick: u64,
    /// Names to look at now (from inotify, or read again after they changed).
    pending: BTreeSet<u64>,
    notices: Vec<Notice>,
    buf: Vec<u8>,
    boot_unix_ns: u64,
    /// uids told in the log to be over their bound.
    over_logged: std::collections::HashSet<u32>,
}

fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: fd is a fresh descriptor that nothing else owns.
    Some(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Whether the process behind a pidfd has ended (its pidfd reads as ready).
fn exited(fd: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one pollfd that lives through the call; zero timeout.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n != 0
}

fn boottime_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is writable for the call.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn ticks_per_s() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

impl Reader {
    /// A reader of `dir`; `watch`: follow new names with inotify (the aggregator), else
    /// every tick sweeps the whole directory (a one-shot look).
    pub fn new(dir: &Path, proc_root: &Path, watch: bool) -> Self {
        let inotify = if watch { watch_dir(dir) } else { None };
        Self {
            dir: dir.to_path_buf(),
            proc_root: proc_root.to_path_buf(),
            inotify,
            sweep: None,
            sweep_started: None,
            held: BTreeMap::new(),
            refused: HashMap::new(),
            pids: HashMap::new(),
            tick: 0,
            pending: BTreeSet::new(),
            notices: Vec::new(),
            buf: vec![0; super::SIZE_V1 + 1],
            boot_unix_ns: crate::sys::unix_ns().saturating_sub(boottime_ns()),
            over_logged: Default::default(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Log-worthy changes since the last call.
    pub fn take_notices(&mut self) -> Vec<Notice> {
        std::mem::take(&mut self.notices)
    }

    /// Regions held now.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// One tick: new names looked at (within bounds), every held region read again,
    /// every slot's process checked.
    pub fn tick(&mut self, now: Instant) -> Summary {
        self.tick += 1;
        self.read_inotify();
        self.sweep_some(now);
        let mut opens = 0;
        for _ in 0..NAMES_PER_TICK {
            if opens >= OPENS_PER_TICK {
                break;
            }
            let Some(n) = self.pending.pop_first() else {
                break;
            };
            if self.consider(n, None, now) {
                opens += 1;
            }
        }
        self.read_all()
    }

    /// A full look, for a one-shot reader: sweeps until every name was seen.
    pub fn look(&mut self) -> Summary {
        let now = Instant::now();
        self.sweep = None;
        self.sweep_started = None;
        let mut s = self.tick(now);
        // Bounded: each tick reads NAMES_PER_TICK names of a finite directory.
        for _ in 0..10_000 {
            if self.sweep.is_none() && self.pending.is_empty() {
                break;
            }
            s = self.tick(now);
        }
        s
    }

    fn read_inotify(&mut self) {
        let Some(fd) = &self.inotify else { return };
        let mut buf = [0u8; 8192];
        loop {
            // SAFETY: reading into a buffer we own from our non-blocking inotify fd.
            let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            let mut off = 0usize;
            let head = std::mem::size_of::<libc::inotify_event>();
            while off + head <= n as usize {
                // The event's header: wd (i32), mask, cookie, len (u32 each).
                let word = |i: usize| {
                    u32::from_ne_bytes(
                        buf[off + 4 * i..off + 4 * i + 4]
                            .try_into()
                            .unwrap_or_default(),
                    )
                };
                let (mask, len) = (word(1), word(3));
                let name = &buf[off + head..(off + head + len as usize).min(n as usize)];
                let name = &name[..name.iter().position(|&c| c == 0).unwrap_or(name.len())];
                if mask & libc::IN_Q_OVERFLOW != 0 {
                    // Names were lost: a sweep finds them.
                    self.sweep_started = None;
                }
                if let Some(chip) = chip_of_name(name) {
                    if self.pending.len() < MAX_REMEMBERED {
                        self.pending.insert(chip);
                    }
                }
                off += head + len as usize;
            }
        }
    }

    /// Reads up to [`NAMES_PER_TICK`] names of the current sweep (starting one when
    /// due: at once without inotify, every [`SWEEP_EVERY_WATCHED`] with it).
    fn sweep_some(&mut self, now: Instant) {
        if self.sweep.is_none() {
            let due = match (self.sweep_started, &self.inotify) {
                (None, _) | (_, None) => true,
                (Some(t), Some(_)) => now.duration_since(t) >= SWEEP_EVERY_WATCHED,
            };
            if !due {
                return;
            }
            self.sweep_started = Some(now);
            self.sweep = std::fs::read_dir(&self.dir).ok();
            // Held regions whose file went away are closed by the sweep's end.
        }
        let mut opens = 0;
        for _ in 0..NAMES_PER_TICK {
            let Some(rd) = &mut self.sweep else { return };
            let Some(entry) = rd.next() else {
                self.sweep = None;
                return;
            };
            let Ok(entry) = entry else { continue };
            let Some(chip) = chip_of_name(entry.file_name().as_bytes()) else {
                continue;
            };
            let ino = entry.ino();
            if opens < OPENS_PER_TICK && self.consider(chip, Some(ino), now) {
                opens += 1;
            }
        }
    }

    /// Looks at chip `chip`'s file (its inode from the directory, if known); returns
    /// whether it opened anything.
    fn consider(&mut self, chip: u64, ino: Option<u64>, now: Instant) -> bool {
        if let Some(h) = self.held.get(&chip) {
            if ino.is_none_or(|i| i == h.ino) {
                return false;
            }
        }
        if let Some(r) = self.refused.get(&chip) {
            // inotify says the file changed: one being made or initialised is looked at
            // at once (a flood of such news costs at most OPENS_PER_TICK opens a tick).
            let changing = ino.is_none()
                && matches!(
                    r.why,
                    Refusal::Layout(
                        RegionError::Size(_) | RegionError::NotReady | RegionError::Version { .. }
                    )
                );
            if ino.is_none_or(|i| i == r.ino) && now < r.retry_at && !changing {
                return false;
            }
        }
        let name = super::name_of_chip(chip);
        let path = self.dir.join(&name);
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
            .open(&path);
        let file = match opened {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.refused.remove(&chip);
                self.drop_held(chip);
                return true;
            }
            Err(e) => {
                let why = match e.raw_os_error() {
                    Some(libc::ELOOP) => Refusal::NotAFile,
                    Some(libc::EACCES) | Some(libc::EPERM) => Refusal::NoPermission {
                        uid: std::fs::symlink_metadata(&path)
                            .map(|m| m.uid())
                            .unwrap_or(u32::MAX),
                    },
                    _ => Refusal::Io(e.to_string()),
                };
                self.refuse(chip, ino.unwrap_or(0), &name, why, now);
                return true;
            }
        };
        let Ok(m) = file.metadata() else {
            return true;
        };
        if !m.file_type().is_file() {
            self.refuse(chip, m.ino(), &name, Refusal::NotAFile, now);
            return true;
        }
        let uid = m.uid();
        let mine = self.held.values().filter(|h| h.uid == uid).count();
        let replacing = self.held.contains_key(&chip) as usize;
        if self.held.len() - replacing >= MAX_REGIONS
            || (uid != 0 && mine - replacing.min(mine) >= MAX_REGIONS_PER_UID)
        {
            if self.over_logged.insert(uid) {
                self.notices.push(Notice::Refused {
                    file: name.clone(),
                    why: Refusal::TooMany { uid },
                });
            }
            self.refuse_quiet(chip, m.ino(), Refusal::TooMany { uid }, now);
            return true;
        }
        let size = m.len().min(usize::MAX as u64) as usize;
        let mut h = Held {
            file,
            ino: m.ino(),
            uid,
            mode: m.mode() & 0o7777,
            size,
            region: None,
        };
        match read_region(&mut h, &mut self.buf) {
            Ok(r) => {
                self.notices.push(Notice::Found {
                    file: name,
                    version: r.version,
                    uid,
                });
                h.region = Some(r);
                self.refused.remove(&chip);
                self.held.insert(chip, h);
            }
            Err(e) => {
                self.drop_held(chip);
                self.refuse(chip, h.ino, &name, Refusal::Layout(e), now);
            }
        }
        true
    }

    fn refuse(&mut self, chip: u64, ino: u64, name: &str, why: Refusal, now: Instant) {
        // One line per name and reason, not per look.
        let repeated = self.refused.get(&chip).is_some_and(|r| {
            r.why == why
                || matches!(why, Refusal::Layout(RegionError::Size(_)))
                    && matches!(r.why, Refusal::Layout(RegionError::Size(_)))
        });
        // A file being made (shm_open, then ftruncate) is 0 bytes for a moment: not
        // worth a line.
        let making = why == Refusal::Layout(RegionError::Size(0));
        if !repeated && !making && self.refused.len() < MAX_REMEMBERED {
            self.notices.push(Notice::Refused {
                file: name.to_string(),
                why: why.clone(),
            });
        }
        self.refuse_quiet(chip, ino, why, now);
    }

    fn refuse_quiet(&mut self, chip: u64, ino: u64, why: Refusal, now: Instant) {
        let wait = match self.refused.get(&chip) {
            Some(r) if r.ino == ino => (r.wait * 2).min(Duration::from_secs(300)),
            // A region being made, or a v4 being initialised: soon.
            _ if matches!(
                why,
                Refusal::Layout(RegionError::NotReady) | Refusal::Layout(RegionError::Size(0))
            ) =>
            {
                Duration::from_millis(100)
            }
            _ => Duration::from_secs(1),
        };
        if self.refused.len() >= MAX_REMEMBERED && !self.refused.contains_key(&chip) {
            return;
        }
        self.refused.insert(
            chip,
            Refused {
                ino,
                retry_at: now + wait,
                wait,
                why,
            },
        );
    }

    fn drop_held(&mut self, chip: u64) {
        if self.held.remove(&chip).is_some() {
            self.notices.push(Notice::Closed {
                file: super::name_of_chip(chip),
            });
        }
    }

    /// Reads every held region again and sorts its slots into live and left behind.
    fn read_all(&mut self) -> Summary {
        let mut s = Summary::default();
        let mut gone = Vec::new();
        // Processes that ended since the last tick.
        self.pids.retain(|_, p| !exited(p.fd));
        let chips: Vec<u64> = self.held.keys().copied().collect();
        for chip in chips {
            let Some(h) = self.held.get_mut(&chip) else {
                continue;
            };
            match read_region(h, &mut self.buf) {
                Ok(r) => h.region = Some(r),
                Err(_) => {
                    gone.push(chip);
                    continue;
                }
            }
            let (uid, mode) = (h.uid, h.mode);
            // Taken out while its slots are checked (the check needs the reader), put
            // back after: no copy of the region.
            let Some(r) = h.region.take() else { continue };
            let file = super::name_of_chip(chip);
            let mut rs = RegionSummary {
                file: file.clone(),
                chip,
                uid,
                mode,
                version: r.version,
                slots: r.slots.len(),
                live_slots: 0,
                left_slots: 0,
                foreign_slots: 0,
                totals: r.totals,
            };
            for slot in &r.slots {
                match self.liveness(slot.pid, slot.last_update) {
                    Ok(p) if uid == 0 || p.uid == uid => {
                        rs.live_slots += 1;
                        s.live.push(LiveSlot {
                            chip,
                            pid: slot.pid,
                            start_time: p.start_time,
                            uid: p.uid,
                            comm: p.comm.clone(),
                            used: slot.used,
                        });
                    }
                    Ok(_) => rs.foreign_slots += 1,
                    Err(why) => {
                        rs.left_slots += 1;
                        s.left.push(LeftSlot {
                            chip,
                            file: file.clone(),
                            file_uid: uid,
                            pid: slot.pid,
                            name: slot.name(),
                            used: slot.used,
                            why,
                        });
                    }
                }
            }
            s.regions.push(rs);
            if let Some(h) = self.held.get_mut(&chip) {
                h.region = Some(r);
            }
        }
        for chip in gone {
            // Shrunk, grown or rewritten as something else: looked at afresh.
            self.drop_held(chip);
            if self.pending.len() < MAX_REMEMBERED {
                self.pending.insert(chip);
            }
        }
        let t = self.tick;
        self.pids.retain(|_, p| p.touched == t);
        let mut listed: Vec<(&u64, &Refused)> = self.refused.iter().collect();
        listed.sort_by_key(|(c, _)| **c);
        s.refused_total = listed.len();
        s.refused = listed
            .into_iter()
            .take(64)
            .map(|(c, r)| (super::name_of_chip(*c), r.why.clone()))
            .collect();
        s
    }

    /// The live process `pid` is, if the slot stamped `stamp` can be its.
    fn liveness(&mut self, pid: u32, stamp: Stamp) -> Result<&PidEntry, Gone> {
        let t = self.tick;
        if !self.pids.contains_key(&pid) {
            if self.pids.len() >= MAX_PIDS {
                return Err(Gone::Exited);
            }
            let fd = pidfd_open(pid).ok_or(Gone::Exited)?;
            let info = crate::sys::proc_info(&self.proc_root, pid).ok_or(Gone::Exited)?;
            // The /proc facts are those of the pidfd's process only if it still runs.
            if exited(fd.as_raw_fd()) {
                return Err(Gone::Exited);
            }
            let start_boot_ns = info.start_time.saturating_mul(1_000_000_000) / ticks_per_s();
            self.pids.insert(
                pid,
                PidEntry {
                    fd: fd.as_raw_fd(),
                    _pidfd: fd,
                    uid: info.uid,
                    comm: info.comm.into(),
                    start_time: info.start_time,
                    start_boot_ns,
                    touched: t,
                },
            );
        }
        let boot = self.boot_unix_ns;
        let p = self.pids.get_mut(&pid).ok_or(Gone::Exited)?;
        p.touched = t;
        let reused = match stamp {
            Stamp::None => false,
            Stamp::Unix(ns) => boot + p.start_boot_ns > ns.saturating_add(START_SLACK_NS),
            Stamp::Monotonic(ns) => p.start_boot_ns > ns.saturating_add(START_SLACK_NS),
        };
        if reused {
            return Err(Gone::PidReused);
        }
        Ok(p)
    }
}

/// Reads a held region's whole file again; an error if it is no longer one.
fn read_region(h: &mut Held, buf: &mut [u8]) -> Result<Region, RegionError> {
    // One byte more than the largest version: a file that grew reads long.
    let mut got = 0;
    while got < buf.len() {
        match h.file.read_at(&mut buf[got..], got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    h.size = got;
    parse(&buf[..got])
}

fn watch_dir(dir: &Path) -> Option<OwnedFd> {
    let c = crate::sys::cstring(dir).ok()?;
    // SAFETY: plain inotify calls on a descriptor we make and own.
    unsafe {
        let fd = libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC);
        if fd < 0 {
            return None;
        }
        let fd = OwnedFd::from_raw_fd(fd);
        // Made (shm_open, then ftruncate: a modification), moved in, or its mode changed.
        let mask = libc::IN_CREATE | libc::IN_MOVED_TO | libc::IN_MODIFY | libc::IN_ATTRIB;
        if libc::inotify_add_watch(fd.as_raw_fd(), c.as_ptr(), mask) < 0 {
            return None;
        }
        Some(fd)
    }
}

/// Whether `name` is a region's name (for listings).
pub fn is_region_name(name: &OsStr) -> bool {
    chip_of_name(name.as_bytes()).is_some()
}
