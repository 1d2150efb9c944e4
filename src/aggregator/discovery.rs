//! Discovery: new segment files found, validated and attributed only to their owner's
//! processes, then attached for draining.

use super::accounting::{ProcKey, ProcState};
use super::merge::Pending;
use super::segment_reader::{list_segments, MappedSegment};
use super::Aggregator;
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

/// The segment files known to this aggregator.
#[derive(Default)]
pub(super) struct Segments {
    pub(super) attached: HashMap<PathBuf, Attached>,
    /// Files refused (each said once in the log), until they are gone.
    rejected: HashSet<PathBuf>,
    /// Users at `limits::MAX_SEGMENTS_PER_UID` (told once in the log).
    uids_at_bound: HashSet<u32>,
    /// Events read from one lane, reused from pass to pass.
    pub(super) buf: Vec<(Event, u64)>,
}

impl Segments {
    /// Whether a segment reports for process `key`.
    pub(super) fn reports_for(&self, key: ProcKey) -> bool {
        self.attached.values().any(|a| a.key == key)
    }
}

impl Aggregator {
    /// Whether inotify reported new names in the directory since the last call.
    pub(super) fn dir_changed(&self) -> bool {
        let fd = self.wakeups.inotify;
        if fd < 0 {
            return false;
        }
        let mut buf = [0u8; 4096];
        let mut changed = false;
        loop {
            // SAFETY: reading into a buffer we own from our non-blocking inotify fd.
            let n = unsafe { libc::read(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len()) };
            if n <= 0 {
                return changed;
            }
            changed = true;
        }
    }

    /// Lists the directory and attaches every segment not seen before.
    pub(super) fn discover(&mut self) {
        let paths = match list_segments(&self.cfg.dir) {
            Ok(p) => p,
            Err(e) => {
                self.log
                    .error(format!("cannot list {}: {e}", self.cfg.dir.display()));
                return;
            }
        };
        for path in paths {
            let s = &self.segments;
            if s.attached.contains_key(&path) || s.rejected.contains(&path) {
                continue;
            }
            if !self.uid_has_room(&path) {
                continue;
            }
            if let Err(why) = self.attach(&path) {
                self.status.segments_rejected += 1;
                self.log
                    .warn(format!("rejected segment {}: {why}", path.display()));
                self.segments.rejected.insert(path);
            }
        }
        // Forget rejections of files that are gone, so a new file of the name is looked at.
        self.segments.rejected.retain(|p| p.exists());
    }

    /// Whether the owner of the segment file at `path` has fewer than
    /// `limits::MAX_SEGMENTS_PER_UID` segments attached. One that has that many is told
    /// once in the log; its further segments wait (their producers count what they
    /// cannot deliver) until some of its processes end.
    fn uid_has_room(&mut self, path: &Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        let Ok(uid) = std::fs::symlink_metadata(path).map(|m| m.uid()) else {
            return true;
        };
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
        let recovered = self.acc.processes.contains_key(&key);
        if recovered {
            self.resume_lanes(&mut seg, key);
        } else {
            self.add_process(&seg, key, comm.clone());
        }
        if let Some(p) = self.acc.processes.get_mut(&key) {
            p.comm = comm.clone();
            if p.uid == super::accounting::UID_UNKNOWN {
                p.uid = seg.file_uid;
            }
        }
        if self
            .acc
            .processes
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
        let p = &self.acc.processes[&key];
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
        let mut p = ProcState::new(key.0, key.1, seg.file_uid, comm, sys::unix_ns());
        for lane in 0..NUM_LANES {
            p.lane_applied[lane] = seg.read_pos(lane);
        }
        // A segment whose events were already consumed (tails > 0) by an earlier
        // aggregator whose journal is not here: those events are lost to us.
        p.gap_lost = p
            .lane_applied
            .iter()
            .fold(0u64, |a, &c| a.saturating_add(c));
        self.acc.processes.insert(key, p);
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
        if let Some(p) = self.acc.processes.get(&key) {
            // One known from journal records alone: its uid is the file's when /proc
            // says so (checked before this for a running process; one that ended can
            // only have its own figures released).
            if p.uid != seg.file_uid && p.uid != super::accounting::UID_UNKNOWN {
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
