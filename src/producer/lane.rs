//! A thread's lane: claimed on the thread's first event, given back when it exits;
//! the hot path's stores, and the wait for space when the lane is full (the full-lane
//! policy of [`super`]).

use super::presence::{
    aggregator_is_running, aggregator_running, consumer_attached, wake_aggregator,
};
use super::segment_file::reserve_lane_memory;
use super::thread_slot::LANE;
use super::*;
use crate::segment::LaneView;
use crate::shm_layout::LaneHeader;
use core::sync::atomic::AtomicU64;
use std::cell::Cell;
use std::io::Write;

/// One sleep of a producer waiting on a full lane.
const SLEEP_STEP_NS: u64 = 20_000;

/// A thread's claim on one lane, kept in thread-local storage ([`super::thread_slot`]).
/// Every field is valid as zeros, and zeros are the state of a thread that holds no
/// lane: the storage starts zeroed.
pub(super) struct ThreadLane {
    /// The lane held, if `generation` is not 0.
    lane: Cell<usize>,
    /// The segment generation the lane belongs to; 0: no lane.
    generation: Cell<u64>,
    /// This thread's copy of the lane's head (it is the only writer).
    head: Cell<u64>,
    /// Last tail read from the lane; re-read only when the lane looks full.
    tail_cache: Cell<u64>,
    /// Set after a timed-out wait, with the tail seen then in `shed_tail`.
    shedding: Cell<bool>,
    shed_tail: Cell<u64>,
    base: Cell<*mut u8>,
    /// The lane (a [`LaneView`] taken apart; null: none), while this thread may write
    /// it without a further check: set when it is claimed and while there is room,
    /// cleared when it fills and is shed, given back, or left behind by a fork.
    fast_lane: Cell<*const LaneHeader>,
    fast_seq: Cell<*const AtomicU64>,
}

impl ThreadLane {
    /// No lane held: all zeros.
    #[allow(dead_code)] // the thread-local storage of other targets starts from it
    pub(super) const fn new() -> Self {
        Self {
            lane: Cell::new(0),
            generation: Cell::new(0),
            head: Cell::new(0),
            tail_cache: Cell::new(0),
            shedding: Cell::new(false),
            shed_tail: Cell::new(0),
            base: Cell::new(core::ptr::null_mut()),
            fast_lane: Cell::new(core::ptr::null()),
            fast_seq: Cell::new(core::ptr::null()),
        }
    }

    #[cfg(test)]
    pub(super) fn holds_no_lane(&self) -> bool {
        self.generation.get() == 0 && self.fast_lane.get().is_null()
    }

    fn arm(&self, lane: Option<LaneView>) {
        let (l, s) = lane.map_or((core::ptr::null(), core::ptr::null()), LaneView::into_raw);
        self.fast_lane.set(l);
        self.fast_seq.set(s);
    }

    /// The hot path: writes `ev` if this thread holds a lane with room (known from
    /// its own copies of the positions); false sends it the slow way ([`Self::push`]).
    #[inline(always)]
    pub(super) fn push_fast(&self, ev: Event) -> bool {
        let lane = self.fast_lane.get();
        if lane.is_null() {
            return false;
        }
        // SAFETY: the pointers were set together by `arm` from a view of the segment of
        // this thread's generation, which stays mapped while they are set (`forget`
        // and `release` clear them before the mapping can go).
        let lane = unsafe { LaneView::from_raw(lane, self.fast_seq.get()) };
        let head = self.head.get();
        if head.wrapping_sub(self.tail_cache.get()) >= LANE_CAPACITY as u64 {
            return false;
        }
        lane.publish(head, ev);
        self.head.set(head.wrapping_add(1));
        true
    }

    /// In a forked child: the lane was the parent's, in a segment the child unmaps.
    pub(super) fn forget(&self) {
        self.arm(None);
        self.generation.set(0);
    }

    fn view(&self) -> SegmentView<'_> {
        // SAFETY: base was taken from BASE while the generation matched, and a
        // segment stays mapped for the life of its generation (it is only unmapped in
        // a forked child, whose generation differs).
        unsafe { SegmentView::new(self.base.get()) }
    }

    /// Claims a free lane of `seg`. Set-up path: runs once per thread.
    fn claim(&self, seg: SegmentView, generation: u64) -> bool {
        self.generation.set(0);
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() } as u32;
        let start = (tid as usize).wrapping_mul(2654435761) % NUM_LANES;
        let h = seg.header();
        for k in 0..NUM_LANES {
            let i = (start + k) % NUM_LANES;
            let bit = 1u64 << i;
            if h.lanes_claimed.load(Relaxed) & bit != 0
                || h.lanes_claimed.fetch_or(bit, AcqRel) & bit != 0
            {
                continue;
            }
            // Ours now. Give the lane real pages before touching it (never touch a lane
            // without its reserved bit: on a full tmpfs that would fault).
            if h.lanes_reserved.load(Acquire) & bit == 0 {
                if !reserve_lane_memory(i) {
                    h.lanes_claimed.fetch_and(!bit, AcqRel);
                    if !NO_SPACE_SAID.swap(true, Relaxed) {
                        let e = std::io::Error::last_os_error();
                        let _ = writeln!(
                            std::io::stderr(),
                            "tttrack: no space for a reporting lane in {} ({e}); this thread's events \
                             are dropped and counted. Free space there or set TTTRACK_DIR.",
                            sys::tracking_dir_from_env().display()
                        );
                    }
                    return false;
                }
                h.lanes_reserved.fetch_or(bit, Release);
            }
            let lane = seg.lane(i);
            lane.state.store(LANE_CLAIMED, Relaxed);
            lane.owner_tid.store(tid, Relaxed);
            lane.claims.store(lane.claims.load(Relaxed) + 1, Relaxed);
            self.lane.set(i);
            self.generation.set(generation);
            self.base.set(seg.base());
            self.head.set(lane.head.load(Acquire));
            self.tail_cache.set(lane.tail.load(Acquire));
            self.shedding.set(false);
            LANE.settle();
            return true;
        }
        false
    }

    pub(super) fn release(&self) {
        self.arm(None);
        let i = self.lane.get();
        let g = self.generation.get();
        if g != 0 && g == GENERATION.load(Acquire) {
            let seg = self.view();
            let lane = seg.lane(i);
            lane.owner_tid.store(0, Relaxed);
            lane.state.store(LANE_FREE, Relaxed);
            seg.header().lanes_claimed.fetch_and(!(1u64 << i), Release);
        }
        self.generation.set(0);
    }

    /// The slow path: claims a lane if this thread has none (or one of the segment
    /// before a fork), waits for room if the lane is full, writes `ev`, and arms the
    /// fast path for the events after it.
    #[inline(never)]
    pub(super) fn push(&self, base: *mut u8, generation: u64, ev: Event) {
        let mut owned = true;
        if self.generation.get() != generation {
            // SAFETY: base came from BASE in the READY state of this generation.
            let seg = unsafe { SegmentView::new(base) };
            if !self.claim(seg, generation) {
                seg.header().no_lane_dropped.fetch_add(1, Relaxed);
                return;
            }
            // The lane goes back when the thread exits. A thread already exiting (an
            // event from another thread-local destructor) gives it back at once.
            owned = OWNER.try_with(|_| ()).is_ok();
        }
        let seg = self.view();
        let i = self.lane.get();
        let lane = seg.lane(i);
        let head = self.head.get();
        if head.wrapping_sub(self.tail_cache.get()) >= LANE_CAPACITY as u64
            && !self.wait_for_space(seg, i, head)
        {
            lane.dropped
                .store(lane.dropped.load(Relaxed).wrapping_add(1), Relaxed);
            self.arm(None);
            return;
        }
        publish(seg, i, head, ev);
        self.head.set(head.wrapping_add(1));
        if owned {
            self.arm(Some(seg.lane_view(i)));
        } else {
            self.release();
        }
    }

    fn shed(&self, tail: u64) {
        self.shedding.set(true);
        self.shed_tail.set(tail);
    }

    /// Slow path: the lane looked full. Returns true once there is room.
    #[cold]
    #[inline(never)]
    fn wait_for_space(&self, seg: SegmentView, i: usize, head: u64) -> bool {
        let lane = seg.lane(i);
        let cap = LANE_CAPACITY as u64;
        let mut tail = lane.tail.load(Acquire);
        self.tail_cache.set(tail);
        if head.wrapping_sub(tail) < cap {
            self.shedding.set(false);
            return true;
        }
        if self.shedding.get() {
            if self.shed_tail.get() == tail {
                return false;
            }
            self.shedding.set(false);
        }
        if !consumer_attached(seg) {
            return false;
        }
        wake_aggregator();
        // Wait while the consumer makes progress. Give up once it has made none (its
        // position in this lane and its heartbeat both still) during max_wait of this
        // thread's own quiet sleeping: a sleep that overran its request by far means
        // the machine is oversubscribed and the consumer may not have had a core
        // either, so it does not count. A consumer whose heartbeat is older than
        // absent_after_ns() is gone whatever the load.
        let max_wait = MAX_WAIT_NS.load(Relaxed);
        let heartbeat = || seg.header().consumer_heartbeat_ns.load(Relaxed);
        let mut quiet_ns: u64 = 0;
        let wait_start = sys::monotonic_ns();
        let mut seen = (tail, heartbeat());
        // Spin, then yield (crossbeam's backoff), then sleep in steps.
        let backoff = crossbeam_utils::Backoff::new();
        let mut sleeps: u32 = 0;
        loop {
            let mut slept = 0;
            if !backoff.is_completed() {
                backoff.snooze();
            } else {
                let t0 = sys::monotonic_ns();
                std::thread::sleep(std::time::Duration::from_nanos(SLEEP_STEP_NS));
                slept = sys::monotonic_ns().saturating_sub(t0);
                sleeps = sleeps.wrapping_add(1);
            }
            tail = lane.tail.load(Acquire);
            if head.wrapping_sub(tail) < cap {
                self.tail_cache.set(tail);
                return true;
            }
            if slept > 0 && seg.header().consumer_pid.load(Relaxed) == 0 {
                // The aggregator runs but has not found this segment yet (it looks
                // for new ones within milliseconds): wait for it up to ATTACH_GRACE_NS.
                let now = sys::monotonic_ns();
                if now.saturating_sub(wait_start) >= ATTACH_GRACE_NS
                    || (sleeps.is_multiple_of(64) && !aggregator_running(now))
                {
                    self.shed(tail);
                    self.tail_cache.set(tail);
                    return false;
                }
                continue;
            }
            if slept > 0 {
                let cur = (tail, heartbeat());
                if cur != seen {
                    seen = cur;
                    quiet_ns = 0;
                } else if slept <= 4 * SLEEP_STEP_NS {
                    quiet_ns += slept;
                }
                if quiet_ns >= max_wait && aggregator_is_running(seg) == Some(true) {
                    // Runnable but not getting a core (the machine is oversubscribed):
                    // that is not a stopped aggregator.
                    quiet_ns = 0;
                }
                let stale = sys::monotonic_ns().saturating_sub(cur.1) >= absent_after_ns();
                if quiet_ns >= max_wait || (stale && !aggregator_running(sys::monotonic_ns())) {
                    self.shed(tail);
                    self.tail_cache.set(tail);
                    return false;
                }
            }
        }
    }
}

/// Writes `ev` into the slot at `head` of lane `i` with the next sequence number and
/// publishes it. The caller owns the lane and has checked there is room.
#[inline(always)]
pub fn publish(seg: SegmentView, i: usize, head: u64, ev: Event) {
    seg.lane_view(i).publish(head, ev);
}

/// Gives the thread's lane back when the thread exits. Apart from [`LANE`], which has
/// no destructor: reading it is then a plain thread-local access, with no check of
/// whether a destructor was registered or has run (the hot path's cost).
struct LaneOwner;

impl Drop for LaneOwner {
    fn drop(&mut self) {
        LANE.with(|tl| tl.release());
    }
}

thread_local! {
    static OWNER: LaneOwner = const { LaneOwner };
}
