//! Recordings: the events of the processes a `tt-track record` started, streamed to it
//! as they are applied (see [`crate::recording`] for the records).
//!
//! A recorder asks on the request socket (`record epoch_ms=T`); its processes are the
//! ones that descend from it (it is their subreaper, so orphans stay its descendants)
//! and belong to its user (root's recorder: anyone's). Records are sent only once the
//! events are in the journal, so an aggregator restarted mid-run sends none twice;
//! what it never sent shows in the recorder as a gap in a process's sequence numbers.
//! The queue to a recorder is bounded, in chunks and in bytes: a recorder that does
//! not keep up loses records, never slows draining. What it loses shows as gaps in the
//! processes' sequence numbers (counted by the recorder); events of socket clients,
//! which have none, are counted here, in a `Lost` record. A recorder that reads
//! nothing for `control::STREAM_WRITE_TIMEOUT` ends its recording.

use super::Aggregator;
use crate::accounting::{Placed, ProcKey};
use crate::counters_page::{DEVICE_CATS, HIST_FIELDS};
use crate::recording::{encode_events, Record};
use crate::shm_layout::{DeviceInfo, Event};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;

/// Chunks (one per pass) waiting for a recorder's connection before it loses records.
pub const QUEUE_CHUNKS: usize = 256;
/// Bytes waiting for a recorder's connection before it loses records.
pub const QUEUE_BYTES: u64 = 64 << 20;
/// Recordings at once, and of one user.
pub const MAX_RECORDINGS: usize = 16;
pub const MAX_RECORDINGS_PER_UID: usize = 4;
/// Events in one `Events` record at most (records stay small, blocks bounded).
const EVENTS_PER_RECORD: usize = 4096;

struct Recording {
    pid: u32,
    uid: u32,
    epoch_unix_ms: u64,
    tx: SyncSender<Vec<u8>>,
    queued: Arc<AtomicU64>,
    closed: Arc<AtomicBool>,
    members: HashSet<ProcKey>,
    buf: Vec<u8>,
    /// Events of socket clients in `buf` (they have no sequence numbers to show a
    /// gap), and those lost so far but not yet said.
    buf_unsequenced: u64,
    lost: u64,
    /// Members known only from TT-Metal's regions: what was last sent of each, by row.
    sampled:
        std::collections::HashMap<ProcKey, std::collections::BTreeMap<u32, [u64; HIST_FIELDS]>>,
    /// Processes of the regions found not to be the recording's (looked at once each).
    not_members: HashSet<ProcKey>,
    /// When it last had a member (or began).
    last_member: std::time::Instant,
}

#[derive(Default)]
pub(super) struct Recordings {
    list: Vec<Recording>,
    /// Parents looked up for membership, shared by every recording.
    parents: Parents,
}

impl Recordings {
    pub(super) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

/// A process known only from TT-Metal's regions, as recordings sample it.
pub(super) struct SampledProcess {
    pub(super) key: ProcKey,
    pub(super) uid: u32,
    pub(super) comm: std::sync::Arc<str>,
    /// Its figures on each chip's row, by category.
    pub(super) rows: std::collections::BTreeMap<u32, [u64; crate::counters_page::NUM_CATS]>,
}

/// How long a process's parent, once read, is taken as known: a chain of processes
/// starting reporters reads each ancestor once a second at most, not once for every
/// new process and recording.
const PARENT_KNOWN_FOR: std::time::Duration = std::time::Duration::from_secs(1);

/// Parents read from `/proc`, each with when it was read.
#[derive(Default)]
pub(super) struct Parents(std::collections::HashMap<u32, (u32, std::time::Instant)>);

impl Parents {
    /// The ancestors of `pid`, nearest first, at most 64 generations up (not init).
    fn of(&mut self, proc_root: &std::path::Path, pid: u32) -> Vec<u32> {
        let now = std::time::Instant::now();
        if self.0.len() > 65_536 {
            self.0
                .retain(|_, (_, at)| now.duration_since(*at) < PARENT_KNOWN_FOR);
        }
        let mut v = Vec::new();
        let mut p = pid;
        for _ in 0..64 {
            let parent = match self.0.get(&p) {
                Some(&(pp, at)) if now.duration_since(at) < PARENT_KNOWN_FOR => Some(pp),
                _ => {
                    let pp = crate::sys::parent_of(proc_root, p);
                    if let Some(pp) = pp {
                        self.0.insert(p, (pp, now));
                    }
                    pp
                }
            };
            match parent {
                Some(pp) if pp > 1 => {
                    v.push(pp);
                    p = pp;
                }
                _ => break,
            }
        }
        v
    }
}

impl Aggregator {
    /// A recorder's request: its stream, with every process of its already known.
    pub(super) fn start_recording(
        &mut self,
        pid: u32,
        uid: u32,
        epoch_unix_ms: u64,
    ) -> Result<super::control_server::Stream, String> {
        self.prune_recordings();
        // One slot is kept for root (and the aggregator's own user): other users' idle
        // streams can hold all the others, never that one.
        let kept = super::limits::is_kept_for(uid);
        let others = self
            .recordings
            .list
            .iter()
            .filter(|r| !super::limits::is_kept_for(r.uid))
            .count();
        if self.recordings.list.len() >= MAX_RECORDINGS || (!kept && others >= MAX_RECORDINGS - 1) {
            return Err(format!(
                "{} recordings are running already (at most {MAX_RECORDINGS}, one kept for root)",
                self.recordings.list.len()
            ));
        }
        let mine = self.recordings.list.iter().filter(|r| r.uid == uid).count();
        if mine >= MAX_RECORDINGS_PER_UID {
            return Err(format!(
                "uid {uid} has {MAX_RECORDINGS_PER_UID} recordings running already"
            ));
        }
        let (tx, chunks) = std::sync::mpsc::sync_channel(QUEUE_CHUNKS);
        let queued = Arc::new(AtomicU64::new(0));
        let closed = Arc::new(AtomicBool::new(false));
        self.recordings.list.push(Recording {
            pid,
            uid,
            epoch_unix_ms,
            tx,
            queued: queued.clone(),
            closed: closed.clone(),
            members: HashSet::new(),
            buf: Vec::new(),
            buf_unsequenced: 0,
            lost: 0,
            sampled: Default::default(),
            not_members: HashSet::new(),
            last_member: std::time::Instant::now(),
        });
        self.log
            .info(format!("   recording for pid {pid} (uid {uid}) started"));
        let keys: Vec<ProcKey> = self.acc.processes().keys().copied().collect();
        for k in keys {
            self.consider_for_recordings(k);
        }
        Ok(super::control_server::Stream {
            chunks,
            queued,
            closed,
        })
    }

    /// A process that began to report (or was re-attached): in each recording whose
    /// recorder it descends from, and of the recorder's user.
    pub(super) fn consider_for_recordings(&mut self, key: ProcKey) {
        if self.recordings.is_empty() {
            return;
        }
        let Some(p) = self.acc.processes().get(&key) else {
            return;
        };
        // A descendant: only a process that runs, as itself (a segment of one that
        // ended, or forged for a pid now someone else's, is nobody's descendant).
        let root = &self.cfg.proc_root;
        let runs = crate::sys::proc_info(root, key.0).is_some_and(|i| i.start_time == key.1);
        let now = crate::sys::unix_ns() / 1_000_000;
        // Its ancestors once, for every recording (not one walk up per recording).
        let ancestors = if runs {
            self.recordings.parents.of(root, key.0)
        } else {
            Vec::new()
        };
        for r in &mut self.recordings.list {
            if r.members.contains(&key) || (r.uid != 0 && r.uid != p.uid) {
                continue;
            }
            // In a directory private to the recorder (only its user can report there),
            // every process is the recording's, ended or not: a command can end before
            // its segment is found.
            let private = self.cfg.private_to == Some(r.pid);
            if !private && !(runs && (key.0 == r.pid || ancestors.contains(&r.pid))) {
                continue;
            }
            r.members.insert(key);
            Record::Process {
                t_ms: now.saturating_sub(r.epoch_unix_ms),
                pid: key.0,
                start_time: key.1,
                uid: p.uid,
                comm: p.comm.clone(),
            }
            .encode(&mut r.buf);
            // What it already placed, for one that reported before the recording.
            for (&logical, &(chip, source)) in &p.placement.chips {
                if let Some(row) = self.acc.row_of(&chip) {
                    Record::Placed {
                        t_ms: now.saturating_sub(r.epoch_unix_ms),
                        pid: key.0,
                        logical,
                        row,
                        source: source as u8,
                    }
                    .encode(&mut r.buf);
                }
            }
        }
    }

    /// Processes known only from TT-Metal's regions, each with its figures by row:
    /// one that belongs to a recording (it descends from the recorder and is of its
    /// user, looked at once) begins in it, its figures are sent when they change, and
    /// it ends when it is gone from the regions.
    pub(super) fn record_sampled(&mut self, live: &[SampledProcess]) {
        if self.recordings.is_empty() {
            return;
        }
        let root = self.cfg.proc_root.clone();
        let now = crate::sys::unix_ns() / 1_000_000;
        let recs = &mut self.recordings;
        for r in &mut recs.list {
            let t_ms = now.saturating_sub(r.epoch_unix_ms);
            for p in live {
                let key = p.key;
                if !r.sampled.contains_key(&key) {
                    if r.not_members.contains(&key) || r.members.contains(&key) {
                        continue;
                    }
                    // Regions are the whole host's, also for a recorder with a private
                    // directory: only its own descendants are its.
                    let mine = r.uid == 0 || r.uid == p.uid;
                    if !mine || !(key.0 == r.pid || recs.parents.of(&root, key.0).contains(&r.pid))
                    {
                        r.not_members.insert(key);
                        continue;
                    }
                    Record::Process {
                        t_ms,
                        pid: key.0,
                        start_time: key.1,
                        uid: p.uid,
                        comm: p.comm.to_string(),
                    }
                    .encode(&mut r.buf);
                    r.sampled.insert(key, Default::default());
                }
                let Some(sent) = r.sampled.get_mut(&key) else {
                    continue;
                };
                for (&row, used) in &p.rows {
                    let now_used = DEVICE_CATS.map(|c| used[c]);
                    if sent.get(&row) != Some(&now_used) {
                        sent.insert(row, now_used);
                        Record::Sampled {
                            t_ms,
                            pid: key.0,
                            row,
                            used: now_used,
                        }
                        .encode(&mut r.buf);
                    }
                }
            }
            let gone: Vec<ProcKey> = r
                .sampled
                .keys()
                .filter(|k| !live.iter().any(|p| p.key == **k))
                .copied()
                .collect();
            for key in gone {
                r.sampled.remove(&key);
                Record::End {
                    t_ms,
                    pid: key.0,
                    events_lost: 0,
                }
                .encode(&mut r.buf);
            }
            r.not_members.retain(|k| live.iter().any(|p| p.key == *k));
        }
    }

    /// Events of `key` just applied, for the recordings it is in (`sequenced`: they
    /// carry the process's sequence numbers, as a segment's do).
    pub(super) fn record_events(&mut self, key: ProcKey, events: &[&Event], sequenced: bool) {
        if self.recordings.is_empty() || events.is_empty() {
            return;
        }
        let now = crate::sys::unix_ns() / 1_000_000;
        for r in &mut self.recordings.list {
            if r.members.contains(&key) {
                let t = now.saturating_sub(r.epoch_unix_ms);
                for part in events.chunks(EVENTS_PER_RECORD) {
                    encode_events(&mut r.buf, t, key.0, part.iter().copied());
                }
                if !sequenced {
                    r.buf_unsequenced += events.len() as u64;
                }
            }
        }
    }

    /// Anything else for the recordings `key` is in.
    fn record_other(&mut self, key: ProcKey, make: impl Fn(u64) -> Record) {
        let now = crate::sys::unix_ns() / 1_000_000;
        for r in &mut self.recordings.list {
            if r.members.contains(&key) {
                make(now.saturating_sub(r.epoch_unix_ms)).encode(&mut r.buf);
            }
        }
    }

    pub(super) fn record_placed(&mut self, p: &Placed) {
        if self.recordings.is_empty() {
            return;
        }
        let Some(row) = self.acc.row_of(&p.chip) else {
            return;
        };
        let (pid, logical, source) = (p.key.0, p.logical, p.source as u8);
        self.record_other(p.key, |t_ms| Record::Placed {
            t_ms,
            pid,
            logical,
            row,
            source,
        });
    }

    pub(super) fn record_info(&mut self, key: ProcKey, logical: i32, info: DeviceInfo) {
        if !self.recordings.is_empty() {
            self.record_other(key, |_| Record::Info {
                pid: key.0,
                logical,
                info,
            });
        }
    }

    /// A member released: its end, and it leaves the recordings.
    pub(super) fn record_end(&mut self, key: ProcKey, events_lost: u64) {
        if self.recordings.is_empty() {
            return;
        }
        self.record_other(key, |t_ms| Record::End {
            t_ms,
            pid: key.0,
            events_lost,
        });
        for r in &mut self.recordings.list {
            r.members.remove(&key);
        }
    }

    /// Sends each recording what it gathered (after the journal is written); a full
    /// queue loses the chunk (counted, and said in the next one that goes through), a
    /// recorder gone ends its recording.
    pub(super) fn flush_recordings(&mut self) {
        if self.recordings.is_empty() {
            return;
        }
        self.prune_recordings();
        let now = crate::sys::unix_ns() / 1_000_000;
        for r in &mut self.recordings.list {
            if r.buf.is_empty() && r.lost == 0 {
                continue;
            }
            let mut chunk = Vec::with_capacity(r.buf.len() + 16);
            if r.lost > 0 {
                Record::Lost {
                    t_ms: now.saturating_sub(r.epoch_unix_ms),
                    pid: 0,
                    count: r.lost,
                }
                .encode(&mut chunk);
            }
            chunk.append(&mut r.buf);
            let len = chunk.len() as u64;
            let room = r.queued.load(Ordering::Acquire).saturating_add(len) <= QUEUE_BYTES;
            if room && r.tx.try_send(chunk).is_ok() {
                r.queued.fetch_add(len, Ordering::AcqRel);
                r.lost = 0;
            } else {
                r.lost += r.buf_unsequenced;
            }
            r.buf_unsequenced = 0;
        }
    }

    /// Ends the recordings whose recorder went away.
    /// Ends the recordings whose recorder went away, and other users' recordings
    /// that have had no member for `Config::recording_idle_timeout` (streams held open
    /// for nothing would hold the slots; root's and the aggregator's own user's are
    /// never ended for it).
    pub(super) fn prune_recordings(&mut self) {
        let log = &self.log;
        let idle_after = self.cfg.recording_idle_timeout;
        let now = std::time::Instant::now();
        self.recordings.list.retain_mut(|r| {
            if !r.members.is_empty() || !r.sampled.is_empty() {
                r.last_member = now;
            }
            let open = !r.closed.load(Ordering::Acquire);
            if !open {
                log.info(format!("   recording for pid {} ended", r.pid));
                return false;
            }
            let idle = now.duration_since(r.last_member);
            if !super::limits::is_kept_for(r.uid) && idle >= idle_after {
                log.info(format!(
                    "   recording for pid {} (uid {}) ended: no process of it for {} s",
                    r.pid,
                    r.uid,
                    idle.as_secs()
                ));
                return false;
            }
            true
        });
    }
}
