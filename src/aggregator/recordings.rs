//! Recordings: the events of the processes a `tt-track record` started, streamed to it
//! as they are applied (see [`crate::recording`] for the records).
//!
//! A recorder asks on the request socket (`record epoch_ms=T`); its processes are the
//! ones that descend from it (it is their subreaper, so orphans stay its descendants)
//! and belong to its user (root's recorder: anyone's). Records are sent only once the
//! events are in the journal, so an aggregator restarted mid-run sends none twice;
//! what it never sent shows in the recorder as a gap in a process's sequence numbers.
//! The queue to a recorder is bounded: a recorder that does not keep up loses records
//! (counted, in a `Lost` record), never slows draining.

use super::accounting::{Placed, ProcKey};
use super::Aggregator;
use crate::recording::{encode_events, Record};
use crate::shm_layout::{DeviceInfo, Event};
use std::collections::HashSet;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};

/// Chunks (one per pass) waiting for a recorder's connection before it loses records.
pub const QUEUE_CHUNKS: usize = 256;
/// Recordings at once.
pub const MAX_RECORDINGS: usize = 16;

struct Recording {
    pid: u32,
    uid: u32,
    epoch_unix_ms: u64,
    tx: SyncSender<Vec<u8>>,
    members: HashSet<ProcKey>,
    buf: Vec<u8>,
    /// Events in `buf`, and events lost so far but not yet said.
    buf_events: u64,
    lost: u64,
}

#[derive(Default)]
pub(super) struct Recordings {
    list: Vec<Recording>,
}

impl Recordings {
    pub(super) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

/// Whether `pid` descends from `ancestor` (at most 64 generations up).
fn descends(proc_root: &std::path::Path, pid: u32, ancestor: u32) -> bool {
    let mut p = pid;
    for _ in 0..64 {
        match crate::sys::parent_of(proc_root, p) {
            Some(pp) if pp == ancestor => return true,
            Some(pp) if pp > 1 => p = pp,
            _ => return false,
        }
    }
    false
}

impl Aggregator {
    /// A recorder's request: its stream, with every process of its already known.
    pub(super) fn start_recording(
        &mut self,
        pid: u32,
        uid: u32,
        epoch_unix_ms: u64,
    ) -> Result<Receiver<Vec<u8>>, String> {
        self.recordings.list.retain(|r| !r.tx_closed());
        if self.recordings.list.len() >= MAX_RECORDINGS {
            return Err(format!("{MAX_RECORDINGS} recordings are running already"));
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE_CHUNKS);
        self.recordings.list.push(Recording {
            pid,
            uid,
            epoch_unix_ms,
            tx,
            members: HashSet::new(),
            buf: Vec::new(),
            buf_events: 0,
            lost: 0,
        });
        self.log
            .info(format!("   recording for pid {pid} (uid {uid}) started"));
        let keys: Vec<ProcKey> = self.acc.processes.keys().copied().collect();
        for k in keys {
            self.consider_for_recordings(k);
        }
        Ok(rx)
    }

    /// A process that began to report (or was re-attached): in each recording whose
    /// recorder it descends from, and of the recorder's user.
    pub(super) fn consider_for_recordings(&mut self, key: ProcKey) {
        if self.recordings.is_empty() {
            return;
        }
        let Some(p) = self.acc.processes.get(&key) else {
            return;
        };
        let now = crate::sys::unix_ns() / 1_000_000;
        for r in &mut self.recordings.list {
            if r.members.contains(&key) || (r.uid != 0 && r.uid != p.uid) {
                continue;
            }
            if key.0 != r.pid && !descends(&self.cfg.proc_root, key.0, r.pid) {
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

    /// Events of `key` just applied, for the recordings it is in.
    pub(super) fn record_events<'a>(
        &mut self,
        key: ProcKey,
        events: impl ExactSizeIterator<Item = &'a Event> + Clone,
    ) {
        if self.recordings.is_empty() || events.len() == 0 {
            return;
        }
        let now = crate::sys::unix_ns() / 1_000_000;
        for r in &mut self.recordings.list {
            if r.members.contains(&key) {
                let t = now.saturating_sub(r.epoch_unix_ms);
                encode_events(&mut r.buf, t, key.0, events.clone());
                r.buf_events += events.len() as u64;
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
        let now = crate::sys::unix_ns() / 1_000_000;
        let log = &self.log;
        self.recordings.list.retain_mut(|r| {
            if r.buf.is_empty() && r.lost == 0 {
                return true;
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
            match r.tx.try_send(chunk) {
                Ok(()) => {
                    r.lost = 0;
                    r.buf_events = 0;
                    true
                }
                Err(TrySendError::Full(_)) => {
                    r.lost += r.buf_events;
                    r.buf_events = 0;
                    true
                }
                Err(TrySendError::Disconnected(_)) => {
                    log.info(format!("   recording for pid {} ended", r.pid));
                    false
                }
            }
        });
    }

    /// Ends the recordings whose recorder went away without anything to send (once a
    /// second).
    pub(super) fn prune_recordings(&mut self) {
        let log = &self.log;
        self.recordings.list.retain(|r| {
            let open = !r.tx_closed();
            if !open {
                log.info(format!("   recording for pid {} ended", r.pid));
            }
            open
        });
    }
}

impl Recording {
    /// Whether its recorder's connection is gone (a send of nothing tells; the
    /// connection's thread skips empty chunks).
    fn tx_closed(&self) -> bool {
        matches!(
            self.tx.try_send(Vec::new()),
            Err(TrySendError::Disconnected(_))
        )
    }
}
