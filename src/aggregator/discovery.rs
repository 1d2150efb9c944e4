//! Discovery: new segment files found, validated and attributed only to their owner's
//! processes, then attached for draining.

use super::segment_reader::MappedSegment;
use super::Aggregator;
use crate::accounting::ProcKey;
use crate::merge::Pending;
use crate::shm_layout::{Event, LANE_CAPACITY, NUM_LANES};
use crate::sys;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Instant;

/// A segment being drained.
pub(super) struct Attached {
    pub(super) seg: MappedSegment,
    pub(super) key: ProcKey,
    /// Read from the lanes but not applied yet.
    pub(super) pending: Vec<Pending>,
    /// Since when the first pending event waits for a missing sequence number.
    pub(super) gap_since: Option<Instant>,
    /// Broke the rules (corrupt, truncated): no longer read, only watched until its
    /// process ends so that what it held is released then.
    pub(super) broken: bool,
}

/// Names read from the directory per pass: a sweep over 300,000 names takes many
/// passes, each short, with publishing and the heartbeat between them.
const NAMES_PER_PASS: usize = 4096;
/// Names looked at per pass from inotify's reports (opened and checked).
const REPORTED_PER_PASS: usize = 256;
/// Names waiting from inotify's reports at most (beyond, a sweep finds them).
const MAX_REPORTED: usize = 65_536;
/// One log line about refused segment names per uid per this long; the others are
/// counted and said with the next.
const REFUSAL_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// A name refused: its file's inode (a new file at the name is looked at again) and
/// the sweep that last saw it (one no sweep sees any more is forgotten).
struct Refused {
    ino: u64,
    sweep: u64,
}

/// The segment files known to this aggregator.
#[derive(Default)]
pub(super) struct Segments {
    pub(super) attached: HashMap<PathBuf, Attached>,
    /// Names refused, each said in the log (at most one line per uid per
    /// [`REFUSAL_LOG_EVERY`]) and never opened again while the same file stands there.
    rejected: HashMap<std::ffi::OsString, Refused>,
    /// Users at `limits::MAX_SEGMENTS_PER_UID` (told once in the log).
    uids_at_bound: HashSet<u32>,
    /// Events read from one lane, reused from pass to pass.
    pub(super) buf: Vec<(Event, u64)>,
    /// The sweep of the directory under way, a bounded number of names per pass.
    sweep: Option<std::fs::ReadDir>,
    /// Sweeps begun so far.
    sweeps: u64,
    /// Names inotify reported, to look at first.
    reported: std::collections::BTreeSet<std::ffi::OsString>,
    /// Per uid: when a refusal was last said, and how many were not said since.
    said: HashMap<u32, (Instant, u64)>,
}

impl Segments {
    /// Whether a segment reports for process `key`.
    pub(super) fn reports_for(&self, key: ProcKey) -> bool {
        self.attached.values().any(|a| a.key == key)
    }

    /// Whether names wait to be looked at: a sweep under way, or names inotify
    /// reported.
    pub(super) fn has_work(&self) -> bool {
        self.sweep.is_some() || !self.reported.is_empty()
    }
}

impl Aggregator {
    /// Reads inotify's reports: the segment names created or moved in are kept to look
    /// at; whether there were any reports (an overflow of inotify's queue starts a
    /// sweep).
    pub(super) fn dir_changed(&mut self) -> bool {
        let fd = self.wakeups.inotify;
        if fd < 0 {
            return false;
        }
        let mut buf = [0u8; 8192];
        let mut changed = false;
        let head = std::mem::size_of::<libc::inotify_event>();
        loop {
            // SAFETY: reading into a buffer we own from our non-blocking inotify fd.
            let n = unsafe { libc::read(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len()) };
            if n <= 0 {
                return changed;
            }
            changed = true;
            let n = n as usize;
            let mut off = 0;
            while off + head <= n {
                let word = |i: usize| {
                    u32::from_ne_bytes(
                        buf[off + 4 * i..off + 4 * i + 4]
                            .try_into()
                            .unwrap_or_default(),
                    )
                };
                let (mask, len) = (word(1), word(3) as usize);
                let name = &buf[off + head..(off + head + len).min(n)];
                let name = &name[..name.iter().position(|&c| c == 0).unwrap_or(name.len())];
                let s = &mut self.segments;
                if mask & libc::IN_Q_OVERFLOW != 0 || s.reported.len() >= MAX_REPORTED {
                    // Names were lost: a sweep finds them.
                    if s.sweep.is_none() {
                        s.sweep = std::fs::read_dir(&self.cfg.dir).ok();
                        s.sweeps += 1;
                    }
                } else if std::str::from_utf8(name)
                    .ok()
                    .and_then(crate::shm_layout::parse_segment_file_name)
                    .is_some()
                {
                    use std::os::unix::ffi::OsStrExt;
                    s.reported
                        .insert(std::ffi::OsStr::from_bytes(name).to_os_string());
                }
                off += head + len;
            }
        }
    }

    /// Looks at new names, within bounds: those inotify reported, then the next names
    /// of the sweep under way (`sweep`: begin one if none is).
    pub(super) fn discover(&mut self, sweep: bool) {
        let mut reported = std::mem::take(&mut self.segments.reported);
        for _ in 0..REPORTED_PER_PASS {
            let Some(name) = reported.pop_first() else {
                break;
            };
            self.consider(&name, None);
        }
        self.segments.reported.append(&mut reported);
        if sweep && self.segments.sweep.is_none() {
            match std::fs::read_dir(&self.cfg.dir) {
                Ok(rd) => {
                    self.segments.sweep = Some(rd);
                    self.segments.sweeps += 1;
                }
                Err(e) => {
                    self.log
                        .error(format!("cannot list {}: {e}", self.cfg.dir.display()));
                    return;
                }
            }
        }
        for _ in 0..NAMES_PER_PASS {
            let Some(rd) = &mut self.segments.sweep else {
                return;
            };
            let Some(entry) = rd.next() else {
                // The sweep is over: forget refusals of names it no longer saw.
                let s = &mut self.segments;
                s.sweep = None;
                let now = s.sweeps;
                s.rejected.retain(|_, r| r.sweep == now);
                return;
            };
            let Ok(entry) = entry else { continue };
            let name = entry.file_name();
            let Some(n) = name.to_str() else { continue };
            if crate::shm_layout::parse_segment_file_name(n).is_none() {
                continue;
            }
            use std::os::unix::fs::DirEntryExt;
            self.consider(&name, Some(entry.ino()));
        }
    }

    /// Looks at the segment `name` (its inode, if the directory said it): attached if
    /// it is new and valid; refused (and remembered by inode, so that it costs nothing
    /// again) if it is not.
    fn consider(&mut self, name: &std::ffi::OsStr, ino: Option<u64>) {
        let path = self.cfg.dir.join(name);
        let s = &mut self.segments;
        let sweep = s.sweeps;
        if let Some(r) = s.rejected.get_mut(name) {
            if ino.is_some_and(|i| i == r.ino) {
                r.sweep = sweep;
                return;
            }
        }
        if s.attached.contains_key(&path) {
            return;
        }
        use std::os::unix::fs::MetadataExt;
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            // Gone already.
            s.rejected.remove(name);
            return;
        };
        if let Some(r) = s.rejected.get_mut(name) {
            if r.ino == meta.ino() {
                r.sweep = sweep;
                return;
            }
        }
        if !self.uid_has_room(meta.uid()) {
            return;
        }
        if let Err(why) = self.attach(&path) {
            self.status.segments_rejected += 1;
            self.say_refusal(
                meta.uid(),
                &format!("rejected segment {}: {why}", path.display()),
            );
            self.segments.rejected.insert(
                name.to_os_string(),
                Refused {
                    ino: meta.ino(),
                    sweep,
                },
            );
        }
    }

    /// A refusal in the log: at most one line per other uid per [`REFUSAL_LOG_EVERY`],
    /// the rest counted and said with the next (one user's junk cannot flood the log).
    fn say_refusal(&mut self, uid: u32, line: &str) {
        // SAFETY: geteuid has no preconditions.
        if uid == unsafe { libc::geteuid() } {
            // Our own user's files: every one said (nobody else can make them).
            self.log.warn(line);
            return;
        }
        let now = Instant::now();
        let e = self
            .segments
            .said
            .entry(uid)
            .or_insert((now - REFUSAL_LOG_EVERY, 0));
        if now.duration_since(e.0) < REFUSAL_LOG_EVERY {
            e.1 += 1;
            return;
        }
        let more = std::mem::take(&mut e.1);
        e.0 = now;
        if more > 0 {
            self.log.warn(format!(
                "{line} (and {more} more names of uid {uid}'s rejected as segments since the last line)"
            ));
        } else {
            self.log.warn(line);
        }
    }

    /// Says the refusals counted but not said (once a second is enough to ask: each uid
    /// at most once per [`REFUSAL_LOG_EVERY`]).
    pub(super) fn say_counted_refusals(&mut self) {
        let now = Instant::now();
        let mut lines = Vec::new();
        for (uid, (at, more)) in self.segments.said.iter_mut() {
            if *more > 0 && now.duration_since(*at) >= REFUSAL_LOG_EVERY {
                lines.push(format!(
                    "{more} more names of uid {uid}'s rejected as segments since the last line"
                ));
                *more = 0;
                *at = now;
            }
        }
        for l in lines {
            self.log.warn(l);
        }
        self.segments
            .said
            .retain(|_, (at, more)| *more > 0 || now.duration_since(*at) < REFUSAL_LOG_EVERY);
    }

    /// Looks at the segment of process `pid` now, if it has one (its name from its
    /// start time): a `sync` for a process whose segment is new.
    pub(super) fn discover_pid(&mut self, pid: u32) {
        if let Some(info) = sys::proc_info(&self.cfg.proc_root, pid) {
            let name = crate::shm_layout::segment_file_name(pid, info.start_time);
            self.consider(std::ffi::OsStr::new(&name), None);
        }
    }

    /// Whether user `uid` has fewer than `limits::MAX_SEGMENTS_PER_UID` segments
    /// attached. One that has that many is told once in the log; its further segments
    /// wait (their producers count what they cannot deliver) until some of its
    /// processes end.
    fn uid_has_room(&mut self, uid: u32) -> bool {
        let s = &mut self.segments;
        let n = s
            .attached
            .values()
            .filter(|a| a.seg.file_uid == uid)
            .count();
        if n < super::limits::MAX_SEGMENTS_PER_UID {
            s.uids_at_bound.remove(&uid);
            return true;
        }
        if s.uids_at_bound.insert(uid) {
            self.log.warn(format!(
                "uid {uid} has {n} segments attached, the most one user may: its further processes are not tracked until some end (their events are counted undelivered)"
            ));
        }
        false
    }

    fn attach(&mut self, path: &Path) -> Result<(), String> {
        let mut seg = MappedSegment::open(path).map_err(|e| e.to_string())?;
        if seg.file_uid != seg.header_uid {
            return Err(format!(
                "file owned by uid {} but its header claims uid {}",
                seg.file_uid, seg.header_uid
            ));
        }
        let (alive, comm) = self.identify(&seg)?;
        let key = (seg.pid, seg.start_time);
        self.check_claim(&seg, key, alive)?;
        let recovered = self.acc.processes().contains_key(&key);
        if recovered {
            self.resume_lanes(&mut seg, key);
        } else {
            self.add_process(&seg, key, comm.clone());
        }
        // The segment names it (and its user, for one known from the journal alone).
        self.acc.register(key, seg.file_uid, &comm, sys::unix_ns());
        self.acc.name(key, &comm, true);
        if self
            .acc
            .processes()
            .get(&key)
            .is_some_and(|p| p.placement.visible.is_none())
        {
            // Replayed from a journal without it: what the segment says.
            self.acc.set_visible(key, seg.view().visible_devices());
        }
        seg.heartbeat(self.me.pid, sys::monotonic_ns());
        self.status.segments_attached += 1;
        self.log.info(format!(
            "+ pid {} ({comm}) {}{}",
            seg.pid,
            if recovered { "re-attached" } else { "attached" },
            if alive { "" } else { ", already exited" }
        ));
        let a = Attached {
            seg,
            key,
            pending: Vec::new(),
            gap_since: None,
            broken: false,
        };
        self.segments.attached.insert(path.to_path_buf(), a);
        self.consider_for_recordings(key);
        self.page.dirty = true;
        Ok(())
    }

    /// Whether the segment's process runs (it holds the segment's lock) and its name.
    /// A running process must be the one the segment claims, and its owner's.
    fn identify(&self, seg: &MappedSegment) -> Result<(bool, String), String> {
        let mut alive = seg.is_alive();
        let info = if alive {
            sys::proc_info(&self.cfg.proc_root, seg.pid)
        } else {
            None
        };
        // The process may have ended between the two looks: ask the lock again.
        if alive && info.as_ref().is_none_or(|i| i.start_time != seg.start_time) && !seg.is_alive()
        {
            alive = false;
        }
        if !alive {
            return Ok((false, seg.comm.clone()));
        }
        let Some(info) = info else {
            return Err(format!(
                "its lock is held but pid {} does not exist here (another PID namespace?)",
                seg.pid
            ));
        };
        if info.start_time != seg.start_time {
            return Err(format!(
                "claims pid {} started at {}, but that process started at {}",
                seg.pid, seg.start_time, info.start_time
            ));
        }
        if info.uid != seg.file_uid {
            return Err(format!(
                "owned by uid {} but pid {} belongs to uid {}: a segment is attributed only to its owner's processes",
                seg.file_uid, seg.pid, info.uid
            ));
        }
        Ok((true, info.comm))
    }

    /// A process known from the journal: each lane resumes after its last journaled
    /// event (the lane's read and released positions move there) when that position is
    /// plausible for the lane.
    fn resume_lanes(&self, seg: &mut MappedSegment, key: ProcKey) {
        let p = &self.acc.processes()[&key];
        for lane in 0..NUM_LANES {
            if !seg.lane_reserved(lane) {
                continue;
            }
            let applied = p.lane_applied[lane];
            let released = seg.released(lane);
            let head = seg.view().lane(lane).head.load(Ordering::Acquire);
            if applied.wrapping_sub(released) <= LANE_CAPACITY as u64
                && head.wrapping_sub(applied) <= LANE_CAPACITY as u64
            {
                seg.set_read_pos(lane, applied);
                seg.release(lane, applied);
            }
        }
    }

    /// A process new to the accounting, applied up to where its lanes stand.
    fn add_process(&mut self, seg: &MappedSegment, key: ProcKey, comm: String) {
        let p = self.acc.register(key, seg.file_uid, &comm, sys::unix_ns());
        for lane in 0..NUM_LANES {
            p.lane_applied[lane] = seg.read_pos(lane);
        }
        // A segment whose events were already consumed (tails > 0) by an earlier
        // aggregator whose journal is not here: those events are lost to us.
        p.gap_lost = p
            .lane_applied
            .iter()
            .fold(0u64, |a, &c| a.saturating_add(c));
    }

    /// A segment speaks only for a process of its file's owner: one that claims a
    /// process another segment already reports for, or a process of another user's
    /// (known to the accounting, a socket client or recovered from the journal, say, or
    /// in `/proc`, zombies included) is not that process's.
    fn check_claim(&self, seg: &MappedSegment, key: ProcKey, alive: bool) -> Result<(), String> {
        if self.segments.attached.values().any(|a| a.key == key) {
            return Err(format!(
                "another segment already reports for pid {} started at {}",
                key.0, key.1
            ));
        }
        if let Some(p) = self.acc.processes().get(&key) {
            // One known from journal records alone: its uid is the file's when /proc
            // says so (checked before this for a running process; one that ended can
            // only have its own figures released).
            if p.uid != seg.file_uid && p.uid != crate::accounting::UID_UNKNOWN {
                return Err(format!(
                    "claims pid {} started at {}, a process of uid {}, but the file is uid {}'s",
                    key.0, key.1, p.uid, seg.file_uid
                ));
            }
        }
        if !alive {
            // Unlocked: a process that ended (perhaps still a zombie), or a forgery of
            // a process that runs. Either way it may speak only for its owner's.
            if let Some(info) = sys::proc_info(&self.cfg.proc_root, seg.pid) {
                if info.start_time == seg.start_time && info.uid != seg.file_uid {
                    return Err(format!(
                        "claims pid {} started at {}, a process of uid {}, but the file is uid {}'s",
                        seg.pid, seg.start_time, info.uid, seg.file_uid
                    ));
                }
            }
        }
        Ok(())
    }
}
