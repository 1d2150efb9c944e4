//! Commit: the applied events made durable in the journal, and only then their lane
//! slots released to the producers; and the replay of a journal at start-up, through
//! the same accounting code as live events.

use super::journal::Record;
use super::{Aggregator, COMPAT_LANE};
use crate::accounting::{Accounting, UID_UNKNOWN};
use crate::shm_layout::NUM_LANES;
use crate::sys;

impl Aggregator {
    /// Makes the applied events durable, then lets producers reuse their slots.
    pub(super) fn persist_and_release(&mut self, snapshot: bool) {
        self.beat_if_due();
        let res = if snapshot || self.journal.should_compact() {
            self.journal.compact(&self.acc)
        } else {
            self.journal.flush()
        };
        if let Err(e) = res {
            // Without a durable record we must not free the slots: keep the tails
            // where they are (producers wait or drop and count), and say so.
            self.log.error(format!(
                "cannot write the journal ({e}); lanes are not advanced until it can be written"
            ));
            return;
        }
        for a in self.segments.attached.values_mut() {
            let Some(p) = self.acc.processes().get(&a.key) else {
                continue;
            };
            for lane in 0..NUM_LANES {
                let applied = p.lane_applied[lane];
                if applied != a.seg.released(lane) {
                    a.seg.release(lane, applied);
                }
            }
        }
    }
}

/// Replays one journal record into an accounting (recovery).
pub(super) fn replay(acc: &mut Accounting, r: &Record) {
    match r {
        Record::Event { key, lane, pos, ev } => {
            let p = acc.register(*key, UID_UNKNOWN, "", sys::unix_ns());
            if *lane != COMPAT_LANE {
                let lane = (*lane as usize).min(NUM_LANES - 1);
                p.lane_applied[lane] = *pos;
                if ev.seq >= p.next_seq {
                    p.next_seq = ev.seq.saturating_add(1);
                }
            }
            acc.apply(*key, ev, (sys::unix_ns() / 1_000_000_000) as u32);
        }
        Record::Release { key } => {
            acc.release(*key);
        }
    }
}
