//! Draining: each segment's lanes read into its process's pending events, the ordered
//! merge ([`crate::merge`]) deciding what can be applied, and the events applied to
//! the accounting (journal records queued for [`super::commit`]).

use super::discovery::Attached;
use super::segment_reader::SegmentError;
use super::{Aggregator, GAP_TIMEOUT};
use crate::accounting::{Outcome, ProcKey};
use crate::merge::{Gaps, Pending};
use crate::segment::SegmentView;
use crate::shm_layout::{Event, MAX_DEVICES, NUM_LANES};
use crate::sys;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Events read from one lane in one pass.
pub(super) const LANE_BATCH: usize = 8192;

impl Aggregator {
    /// Drains every attached segment. Returns the events read and whether a journal
    /// snapshot is needed (a device description changed).
    pub(super) fn drain_all(&mut self) -> (usize, bool) {
        let (mut read, mut snapshot) = (0, false);
        let paths: Vec<PathBuf> = self.segments.attached.keys().cloned().collect();
        for path in &paths {
            self.beat_if_due();
            match self.drain(path, false) {
                Ok((n, snap)) => {
                    read += n;
                    snapshot |= snap;
                }
                Err(e) => self.drop_corrupt(path, e),
            }
        }
        (read, snapshot)
    }

    /// Reads a segment's lanes and applies what is in order. With `final_drain`, reads
    /// everything and skips every gap at once (the process is dead). Returns events
    /// read and whether a snapshot is needed (device information changed).
    pub(super) fn drain(
        &mut self,
        path: &Path,
        final_drain: bool,
    ) -> Result<(usize, bool), SegmentError> {
        let segments = &mut self.segments;
        let Some(a) = segments.attached.get_mut(path) else {
            return Ok((0, false));
        };
        if a.broken {
            return Ok((0, false));
        }
        a.seg.heartbeat(self.me.pid, sys::monotonic_ns());
        let read = read_lanes(a, &mut segments.buf, final_drain)?;
        let key = a.key;
        let dropped = a.seg.dropped();
        match self.acc.set_producer_dropped(key, dropped) {
            None => return Ok((read, false)),
            Some(changed) => self.page.dirty |= changed,
        }
        if a.pending.is_empty() {
            a.gap_since = None;
            return Ok((read, false));
        }
        a.pending.sort_by_key(|p| p.ev.seq);
        let gaps = if final_drain {
            Gaps::SkipAll
        } else if a.gap_since.is_some_and(|t| t.elapsed() >= GAP_TIMEOUT) {
            Gaps::SkipFirst
        } else {
            Gaps::Wait
        };
        let Some(m) = self.acc.order(key, &a.pending, gaps) else {
            return Ok((read, false));
        };
        // One journal block for the pass's events of this process.
        let ready = a.pending[..m.ready].iter();
        self.journal
            .append_events(key, ready.map(|e| (e.lane, e.pos.wrapping_add(1), e.ev)));
        // A gap still open waits its own full time: after a skip the timer restarts.
        let still_waiting = a.pending.len() > m.ready;
        a.gap_since = if !still_waiting {
            None
        } else if m.skipped > 0 {
            Some(Instant::now())
        } else {
            Some(a.gap_since.unwrap_or_else(Instant::now))
        };
        // Applied from the pending list itself (taken out while the accounting is
        // borrowed, then put back with what still waits): no copy per pass.
        let mut pending = std::mem::take(&mut a.pending);
        let snapshot = self.apply_batch(key, &pending[..m.ready], path);
        if !self.recordings.is_empty() {
            let applied: Vec<&Event> = pending[..m.ready].iter().map(|p| &p.ev).collect();
            self.record_events(key, &applied, true);
        }
        self.keep_last_events(key, pending[..m.ready].iter().map(|p| &p.ev));
        pending.drain(..m.ready);
        if let Some(a) = self.segments.attached.get_mut(path) {
            a.pending = pending;
        }
        if m.ready > 0 {
            self.page.dirty = true;
        }
        Ok((read, snapshot))
    }

    /// Applies events of one process in order; returns whether a device description
    /// changed. Runs of up to 1024 events go to the accounting at once (the heartbeat
    /// is refreshed between them); an event whose outcome needs more (a description to
    /// read, a line to log) ends a run. With `-v` every event is applied and logged
    /// one by one.
    fn apply_batch(&mut self, key: ProcKey, batch: &[Pending], seg: &Path) -> bool {
        let now_s = (sys::unix_ns() / 1_000_000_000) as u32;
        let mut snapshot = false;
        let every = self.log.verbosity >= super::Verbosity::Verbose;
        let mut i = 0;
        while i < batch.len() {
            let (ev, out) = if every {
                let ev = &batch[i].ev;
                i += 1;
                (ev, self.acc.apply(key, ev, now_s))
            } else {
                let run = &batch[i..batch.len().min(i + 1024)];
                let (n, out) = self.acc.apply_run(key, run, |p| &p.ev, now_s);
                i += n;
                let Some(out) = out else {
                    self.beat_if_due();
                    continue;
                };
                (&batch[i - 1].ev, out)
            };
            match out {
                Outcome::DeviceInfo => snapshot |= self.take_device_info(key, ev, seg),
                Outcome::DeviceIdentity => snapshot |= self.take_identity(key, ev, seg),
                _ => {}
            }
            self.log_outcome(key, ev, &out);
            if every && i % 1024 == 0 {
                self.beat_if_due();
            }
        }
        snapshot
    }

    /// A view of the segment at `path`, while it stays attached (the view borrows it).
    fn view_of(&self, path: &Path) -> Option<SegmentView<'_>> {
        self.segments.attached.get(path).map(|a| a.seg.view())
    }

    /// Reads the description a device-info event announces from the slot of the
    /// segment at `seg`.
    fn take_device_info(&mut self, key: ProcKey, ev: &Event, seg: &Path) -> bool {
        let slot = ev.device.clamp(0, MAX_DEVICES as i32 - 1) as usize;
        let Some(info) = self.view_of(seg).and_then(|v| v.read_device_info(slot)) else {
            return false;
        };
        if self.acc.set_device_info(key, ev.device, info) {
            self.record_info(key, ev.device, info);
            return true;
        }
        self.log.warn(format!(
            "pid {}: implausible description of device {} ignored",
            key.0, ev.device
        ));
        false
    }

    /// Reads which chip a device-identity event names from the segment's slot, and
    /// places the device there (moving its figures if they were elsewhere). The
    /// placement is in the next snapshot before the event's slot is released.
    fn take_identity(&mut self, key: ProcKey, ev: &Event, seg: &Path) -> bool {
        let slot = ev.device.clamp(0, MAX_DEVICES as i32 - 1) as usize;
        let id = self
            .view_of(seg)
            .and_then(|v| v.read_identity(slot))
            .unwrap_or_default();
        match self.acc.set_identity(key, ev.device, id) {
            Ok(false) => false,
            Ok(true) => {
                if !crate::accounting::placement::names_a_card(&self.acc.cards, &id)
                    && !self.acc.cards.is_empty()
                {
                    self.log.warn(format!(
                        "pid {}: its device {} was reported as a local chip that matches no card of this host (index {}, PCI address {:?}, chip id {:016X})",
                        key.0,
                        ev.device,
                        id.pcie_index,
                        crate::sys::get_str(&id.pci_address),
                        id.asic_id
                    ));
                }
                self.log_placements();
                true
            }
            Err(why) => {
                // Once per process: the count is in its invalid events.
                if self.refusals_logged.insert(key) {
                    let acc = &self.acc;
                    self.refusals_logged
                        .retain(|k| acc.processes().contains_key(k));
                    self.log.warn(format!(
                        "pid {}: identity of device {} refused: {why} (further refusals for it are counted, not logged)",
                        key.0, ev.device
                    ));
                }
                false
            }
        }
    }

    /// A segment that broke the rules mid-life: stop reading it. Its process's
    /// figures stay as they were (it can only have hurt itself), flagged inexact, and
    /// are released when the process ends.
    pub(super) fn drop_corrupt(&mut self, path: &Path, e: SegmentError) {
        self.log
            .warn(format!("stopped reading segment {}: {e}", path.display()));
        if let Some(a) = self.segments.attached.get_mut(path) {
            a.broken = true;
            a.pending.clear();
            self.acc.count_lost(a.key, 1);
        }
        self.status.segments_rejected += 1;
        self.page.dirty = true;
    }
}

/// Reads every lane of `a` into its pending events (with `final_drain`, until the
/// lanes are empty). Returns the number read.
fn read_lanes(
    a: &mut Attached,
    buf: &mut Vec<(Event, u64)>,
    final_drain: bool,
) -> Result<usize, SegmentError> {
    let mut read = 0;
    loop {
        let mut round = 0;
        for lane in 0..NUM_LANES {
            buf.clear();
            round += a.seg.read_lane(lane, buf, LANE_BATCH)?;
            a.pending.extend(buf.iter().map(|&(ev, pos)| Pending {
                ev,
                lane: lane as u8,
                pos,
            }));
        }
        read += round;
        if !final_drain || round == 0 {
            return Ok(read);
        }
    }
}
