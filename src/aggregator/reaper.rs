//! The reaper: every process that ended is released (what it held leaves the figures,
//! and is reported if it was anything), whichever way it reported: through a segment,
//! through the compatibility socket, or known only from the journal of an earlier run.

use super::journal::Record;
use super::segment_reader::SegmentError;
use super::Aggregator;
use crate::accounting::{leak_summary, ProcKey, ProcState};
use crate::counters_page::device_bytes;
use crate::shm_layout::segment_file_name;
use crate::sys;
use std::collections::{HashMap, HashSet};
use std::os::fd::OwnedFd;
use std::path::PathBuf;

/// Processes tracked without a segment, watched until they end (through a pidfd where
/// one could be had, else by their `/proc` entry): clients of the compatibility
/// socket, and running processes recovered from the journal.
pub(super) type Segmentless = HashMap<ProcKey, Option<OwnedFd>>;

/// How a released process had reported, which decides what the log says of it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reporter {
    Segment,
    SocketClient,
    /// Known only from the journal: it ended while no aggregator ran.
    Journal,
}

impl Aggregator {
    /// Releases every process that ended. Also stops reading segments cut short under
    /// their mapping (one fstat each).
    pub(super) fn reap_dead(&mut self) {
        let cut: Vec<PathBuf> = self
            .segments
            .attached
            .iter()
            .filter(|(_, a)| !a.broken && a.seg.truncated())
            .map(|(p, _)| p.clone())
            .collect();
        for path in cut {
            self.drop_corrupt(&path, SegmentError::Truncated);
        }
        self.reap_segments();
        self.reap_segmentless();
        self.reap_orphans();
    }

    /// Segments whose lock is gone: drained to the end, released, removed.
    fn reap_segments(&mut self) {
        let dead: Vec<PathBuf> = self
            .segments
            .attached
            .iter()
            .filter(|(_, a)| !a.seg.is_alive())
            .map(|(p, _)| p.clone())
            .collect();
        for path in dead {
            if let Err(e) = self.drain(&path, true) {
                // Release what it held all the same.
                self.drop_corrupt(&path, e);
            }
            self.persist_and_release(false);
            let Some(a) = self.segments.attached.remove(&path) else {
                continue;
            };
            self.release_process(a.key, Reporter::Segment);
            if let Err(e) = std::fs::remove_file(&path) {
                self.log
                    .warn(format!("cannot remove {}: {e}", path.display()));
            }
        }
    }

    /// Processes without a segment that have ended.
    fn reap_segmentless(&mut self) {
        let ended: Vec<ProcKey> = self
            .segmentless
            .iter()
            .filter(|(k, fd)| match fd {
                Some(fd) => {
                    let mut p = libc::pollfd {
                        fd: std::os::fd::AsRawFd::as_raw_fd(fd),
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // SAFETY: polling one descriptor we own, without waiting.
                    unsafe { libc::poll(&mut p, 1, 0) > 0 }
                }
                None => {
                    sys::proc_info(&self.cfg.proc_root, k.0).is_none_or(|i| i.start_time != k.1)
                }
            })
            .map(|(k, _)| *k)
            .collect();
        for key in ended {
            self.segmentless.remove(&key);
            self.release_process(key, Reporter::SocketClient);
        }
    }

    /// Processes recovered from the journal whose segment is gone for good: released
    /// if they ended, watched without a segment if they still run.
    fn reap_orphans(&mut self) {
        let watched: HashSet<ProcKey> = self
            .segments
            .attached
            .values()
            .map(|a| a.key)
            .chain(self.segmentless.keys().copied())
            .collect();
        let orphans: Vec<ProcKey> = self
            .acc
            .processes()
            .keys()
            .filter(|k| !watched.contains(k))
            .filter(|k| !self.cfg.dir.join(segment_file_name(k.0, k.1)).exists())
            .copied()
            .collect();
        for key in orphans {
            // Still running (a client of the compatibility socket from before a restart,
            // or a process whose segment someone deleted): its memory is still held.
            // Keep it, and release it when the process ends, not now.
            // The pidfd first, then the check: it then refers to the process checked.
            let pidfd = crate::peer::pidfd_open(key.0);
            let info = sys::proc_info(&self.cfg.proc_root, key.0);
            let Some(info) = info.filter(|i| i.start_time == key.1) else {
                self.release_process(key, Reporter::Journal);
                continue;
            };
            // Recovered from the journal, which does not keep names: /proc says.
            let comm = self.acc.name(key, &info.comm, false);
            self.log.info(format!(
                "= pid {} ({comm}) still runs without a segment (a socket client from before a restart?): its figures are kept until it ends",
                key.0
            ));
            self.segmentless.insert(key, pidfd);
        }
    }

    /// The release of one process: journaled first, then its memory leaves the
    /// figures; what it still held is counted and logged.
    fn release_process(&mut self, key: ProcKey, how: Reporter) {
        self.journal.append(&Record::Release { key });
        if let Err(e) = self.journal.flush() {
            self.log.error(format!("cannot write the journal: {e}"));
        }
        self.page.dirty = true;
        let Some(p) = self.acc.release(key) else {
            return;
        };
        self.record_end(key, p.events_lost());
        self.count_leak(&p);
        match leak_summary(&p) {
            Some(line) => self.log.info(line),
            None if how != Reporter::Journal => self
                .log
                .info(format!("- pid {} ({}) exited", p.pid, p.comm)),
            None => {}
        }
        let lost = p.events_lost();
        if lost > 0 && how == Reporter::Segment {
            self.log.warn(format!(
                "pid {} ({}): {lost} events were lost; its figures were not exact",
                p.pid, p.comm
            ));
        }
    }

    /// Counts a released process that still held memory.
    fn count_leak(&mut self, p: &ProcState) {
        let held: u64 = p.devices.values().map(|d| device_bytes(&d.used)).sum();
        if held > 0 {
            self.status.exits_holding_memory += 1;
            self.status.leaked_bytes += held;
        }
    }
}
