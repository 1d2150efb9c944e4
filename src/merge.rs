//! The ordered merge, the heart of exactness: a process's events come from several
//! lanes (one per thread) and are applied in the order of their sequence numbers, the
//! order in which the process made them. A missing number (an event still being
//! written, or one that will never come) holds back everything after it, up to a time
//! limit; then it is skipped and counted lost. A skipped number that arrives after all
//! is applied late and no longer counted lost.
//!
//! [`merge`] is a pure function of the pending events and the next expected number, so
//! that every case is tested below without processes or shared memory.

use crate::shm_layout::Event;

/// An event read from a lane but not applied yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pending {
    pub ev: Event,
    pub lane: u8,
    /// The event's position in its lane (slot count since the lane was created).
    pub pos: u64,
}

/// What to do about a missing sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gaps {
    /// Wait for it: apply only what precedes the first gap.
    Wait,
    /// It has been waited for long enough: skip the first gap, then wait again.
    SkipFirst,
    /// The process has ended and everything it wrote has been read: skip every gap.
    SkipAll,
}

/// The outcome of one merge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Merged {
    /// How many of the pending events (from the front) are to be applied now.
    pub ready: usize,
    /// The next sequence number expected after them.
    pub next_seq: u64,
    /// Sequence numbers skipped (to be counted lost).
    pub skipped: u64,
    /// Events applied late: numbers skipped earlier that arrived after all (to be taken
    /// back off the lost count).
    pub late: u64,
}

/// Decides which of `pending` (sorted by sequence number) can be applied now, given
/// the next number expected.
pub fn merge(pending: &[Pending], mut next_seq: u64, gaps: Gaps) -> Merged {
    let mut m = Merged::default();
    let mut skip = gaps != Gaps::Wait;
    for p in pending {
        let seq = p.ev.seq;
        if seq > next_seq {
            if !skip {
                break;
            }
            m.skipped = m.skipped.saturating_add(seq - next_seq);
            next_seq = seq;
            skip = gaps == Gaps::SkipAll;
        }
        if seq < next_seq {
            m.late += 1;
        } else {
            next_seq = seq.saturating_add(1);
        }
        m.ready += 1;
    }
    m.next_seq = next_seq;
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(seqs: &[u64]) -> Vec<Pending> {
        let mut v: Vec<Pending> = seqs
            .iter()
            .enumerate()
            .map(|(i, &seq)| Pending {
                ev: Event {
                    seq,
                    ..bytemuck::Zeroable::zeroed()
                },
                lane: (i % 2) as u8,
                pos: i as u64,
            })
            .collect();
        v.sort_by_key(|p| p.ev.seq);
        v
    }

    #[test]
    fn events_in_order_are_all_ready() {
        let m = merge(&pending(&[3, 1, 2, 0]), 0, Gaps::Wait);
        assert_eq!((m.ready, m.next_seq, m.skipped, m.late), (4, 4, 0, 0));
    }

    #[test]
    fn a_gap_holds_back_what_follows_it() {
        let m = merge(&pending(&[0, 1, 3, 4]), 0, Gaps::Wait);
        assert_eq!((m.ready, m.next_seq, m.skipped), (2, 2, 0));
        // Nothing ready at all when the first expected number is missing.
        let m = merge(&pending(&[5, 6]), 4, Gaps::Wait);
        assert_eq!((m.ready, m.next_seq), (0, 4));
    }

    #[test]
    fn a_timed_out_gap_is_skipped_and_counted_then_the_next_one_waits() {
        let m = merge(&pending(&[0, 2, 3, 6, 7]), 0, Gaps::SkipFirst);
        assert_eq!((m.ready, m.next_seq, m.skipped, m.late), (3, 4, 1, 0));
    }

    #[test]
    fn the_final_drain_skips_every_gap() {
        let m = merge(&pending(&[0, 2, 3, 6, 7]), 0, Gaps::SkipAll);
        assert_eq!((m.ready, m.next_seq, m.skipped, m.late), (5, 8, 3, 0));
    }

    #[test]
    fn a_number_skipped_earlier_is_applied_late() {
        // 1 was skipped (next is 3); it arrives with 3.
        let m = merge(&pending(&[1, 3]), 3, Gaps::Wait);
        assert_eq!((m.ready, m.next_seq, m.skipped, m.late), (2, 4, 0, 1));
    }

    #[test]
    fn nothing_pending_changes_nothing() {
        assert_eq!(
            merge(&[], 9, Gaps::SkipAll),
            Merged {
                next_seq: 9,
                ..Default::default()
            }
        );
    }

    #[test]
    fn the_largest_number_does_not_overflow() {
        let m = merge(&pending(&[u64::MAX]), 0, Gaps::SkipAll);
        assert_eq!((m.ready, m.next_seq, m.skipped), (1, u64::MAX, u64::MAX));
    }
}
