//! The producer: how a tracked process writes its events into its own segment.
//!
//! # Guarantees
//! - The hot path ([`record`] once a thread has its lane) makes no system call, takes no
//!   lock, allocates nothing and formats nothing: a relaxed `fetch_add` for the sequence
//!   number, four relaxed stores into the slot and one release store of the lane's head.
//! - The segment is created on the process's first event; each thread claims a lane on
//!   its first event (one CAS) and gives it back when it exits.
//! - Tracking never stops the application: any failure turns tracking off in this
//!   process with one line on stderr, and no panic crosses the C ABI.
//!
//! # Full-lane policy
//! When a lane is full:
//! 1. If no aggregator is attached (the segment's consumer heartbeat is zero or older
//!    than [`ATTACH_TIMEOUT_NS`]), the event is dropped at once and counted in the lane.
//!    An aggregator counts as attached when it has marked this segment (consumer pid and
//!    heartbeat) or, before it has found the segment, when the directory's counters
//!    page shows a fresh heartbeat (read with `pread`, at most every 100 ms). In that
//!    second case the thread waits up to 250 ms for the aggregator to find the segment
//!    (it watches the directory with inotify and finds new segments within
//!    milliseconds) while the page stays fresh.
//! 2. If an aggregator is attached, the thread sends a byte to its wake socket (so it
//!    drains now rather than at its next pass) and waits for space: it spins briefly, then
//!    yields, then sleeps in 20 us steps, as long as the aggregator keeps draining
//!    (this lane's tail or the segment's heartbeat moves). It gives up when the
//!    aggregator has made no progress during `TTTRACK_MAX_WAIT_US` (default 1000 us)
//!    of quiet waiting: sleeps that overran their 20 us by more than 4x do not count,
//!    since on an oversubscribed machine the aggregator could not run either. It also
//!    gives up when the aggregator's heartbeat is older than 500 ms, or than
//!    `TTTRACK_MAX_WAIT_US` if that is longer (stopped, hung or gone), whatever the
//!    load. The event is then dropped and counted, and the lane enters *shedding*:
//!    further events on it are dropped at once while it stays full, until the
//!    aggregator's position moves again.
//!
//! So an aggregator that is draining loses nothing (a producer faster than the
//! aggregator is slowed to its pace); an aggregator that stopped costs each lane about
//! a millisecond of waiting once on an idle machine (at most 500 ms on a saturated
//! one); memory is bounded by the lanes; and every event not delivered is counted (the
//! aggregator flags the process inexact and shows the count).
//!
//! Where it is written: `producer/lane.rs` (a thread's lane, the wait for space),
//! `producer/presence.rs` (is an aggregator there), `producer/segment_file.rs` (the
//! segment created and published), `producer/thread_slot.rs` (where a thread finds
//! its lane), `producer/ffi.rs` (the C ABI).
//!
//! Events a thread reports after every lane is taken are counted in the segment header
//! (`no_lane_dropped`); events reported after tracking failed in this process are
//! counted in [`dropped_events`] only (there is no segment to tell anyone).

pub mod ffi;
mod lane;
pub mod metal_hook;
mod presence;
mod segment_file;
mod thread_slot;

use crate::segment::SegmentView;
use crate::shm_layout::*;
use crate::sys;
use core::sync::atomic::{AtomicI32, AtomicPtr, AtomicU64, AtomicU8, Ordering::*};
pub use lane::publish;
use segment_file::create_segment;
pub use segment_file::write_identity;
use std::io::Write;
use thread_slot::LANE;

const ST_UNKNOWN: u8 = 0;
const ST_DISABLED: u8 = 1;
const ST_IDLE: u8 = 2;
const ST_INIT: u8 = 3;
const ST_READY: u8 = 4;
const ST_FAILED: u8 = 5;

/// How long a full lane waits for a running aggregator to find a new segment.
pub const ATTACH_GRACE_NS: u64 = 250_000_000;

/// An aggregator whose heartbeat is older than this is considered absent (or older
/// than `TTTRACK_MAX_WAIT_US`, if that is longer: see [`absent_after_ns`]).
pub const ATTACH_TIMEOUT_NS: u64 = 500_000_000;

/// Age of a heartbeat past which its aggregator counts as absent: 500 ms, or the
/// configured `TTTRACK_MAX_WAIT_US` if longer, so that a deployment which asks its
/// producers to wait through an aggregator restart gets that whatever the restart takes.
#[inline]
fn absent_after_ns() -> u64 {
    MAX_WAIT_NS.load(Relaxed).max(ATTACH_TIMEOUT_NS)
}

static STATE: AtomicU8 = AtomicU8::new(ST_UNKNOWN);
static BASE: AtomicPtr<u8> = AtomicPtr::new(core::ptr::null_mut());
static FD: AtomicI32 = AtomicI32::new(-1);
/// Bumped at every fork (in the child) so threads re-claim lanes in the new segment.
static GENERATION: AtomicU64 = AtomicU64::new(1);
/// Events that could not be written because tracking failed in this process.
static UNDELIVERED: AtomicU64 = AtomicU64::new(0);
static MAX_WAIT_NS: AtomicU64 = AtomicU64::new(1_000_000);
static ATFORK_REGISTERED: AtomicU8 = AtomicU8::new(0);
/// Set once the "no space for a lane" line has been printed.
static NO_SPACE_SAID: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Whether tracking is on in this process (`TT_ALLOC_TRACKING_ENABLED=1`, read once).
pub fn enabled() -> bool {
    match STATE.load(Acquire) {
        ST_UNKNOWN => decide_enabled(),
        ST_DISABLED => false,
        _ => true,
    }
}

#[cold]
fn decide_enabled() -> bool {
    let on = std::env::var_os("TT_ALLOC_TRACKING_ENABLED").is_some_and(|v| v == "1");
    if let Some(us) = std::env::var_os("TTTRACK_MAX_WAIT_US")
        .and_then(|v| v.to_str().and_then(|s| s.parse::<u64>().ok()))
    {
        MAX_WAIT_NS.store(us.saturating_mul(1000), Relaxed);
    }
    let new = if on { ST_IDLE } else { ST_DISABLED };
    let _ = STATE.compare_exchange(ST_UNKNOWN, new, AcqRel, Acquire);
    STATE.load(Acquire) != ST_DISABLED
}

/// Records one event. Safe from any thread; never blocks for long, never unwinds (the
/// hot path has nothing that can panic, the slow path catches any panic).
#[inline(always)]
pub fn record(kind: EventKind, subtype: u8, device: i32, size: u64, id: u64) {
    record_event(Event {
        seq: 0,
        kind: kind as u8,
        subtype,
        _reserved: 0,
        device,
        size,
        id,
    })
}

/// Puts `ev` (its sequence number given here) in this thread's lane.
#[inline(always)]
fn record_event(ev: Event) {
    // The hot path: this thread's lane, found without a call, armed, with room.
    if LANE.with_learned(|tl| tl.push_fast(ev)) != Some(true) {
        let [_, w1, w2, w3] = ev.to_words();
        record_slow(w1, w2, w3);
    }
}

/// Where buffer `id` lies in its banks: two extension events after its `Alloc`.
pub fn record_buffer_detail(device: i32, id: u64, detail: &BufferDetail) {
    for ev in detail.to_events(device, id) {
        record_event(ev);
    }
}

/// The banks of one buffer type on `device` (nothing if a field does not fit).
pub fn record_bank_geometry(device: i32, btype: BufferType, geometry: &BankGeometry) {
    if let Some(ev) = geometry.to_event(device, btype) {
        record_event(ev);
    }
}

/// Everything else: tracking not decided yet or off, the segment not made yet, the
/// thread without a lane, the lane full. (The event as three words in registers, not
/// built on the stack: the hot path then keeps only those across its own work, and
/// needs no stack frame.)
#[inline(never)]
fn record_slow(w1: u64, w2: u64, w3: u64) {
    let _ = std::panic::catch_unwind(|| record_slow_unguarded(Event::from_words([0, w1, w2, w3])));
}

fn record_slow_unguarded(ev: Event) {
    // A lane found only through the TLS descriptor (its offset not learned yet, or the
    // block in dynamic TLS) may still be armed and have room.
    if LANE.with(|tl| tl.push_fast(ev)) {
        return;
    }
    let state = match STATE.load(Acquire) {
        ST_READY => ST_READY,
        _ => ensure_segment(),
    };
    match state {
        ST_DISABLED => {}
        ST_READY => {
            let base = BASE.load(Relaxed);
            let generation = GENERATION.load(Relaxed);
            LANE.with(|tl| tl.push(base, generation, ev));
        }
        _ => {
            UNDELIVERED.fetch_add(1, Relaxed);
        }
    }
}

/// Decides whether tracking is on and creates the segment if needed; returns the
/// settled state (DISABLED, READY or FAILED).
#[cold]
fn ensure_segment() -> u8 {
    loop {
        match STATE.load(Acquire) {
            ST_UNKNOWN => {
                decide_enabled();
            }
            ST_IDLE => {
                if STATE
                    .compare_exchange(ST_IDLE, ST_INIT, AcqRel, Acquire)
                    .is_ok()
                {
                    let next = match create_segment() {
                        Ok(()) => ST_READY,
                        Err(msg) => {
                            let _ = writeln!(
                                std::io::stderr(),
                                "tttrack: tracking is off in this process (pid {}): {msg}. \
                                 The application continues untracked.",
                                std::process::id()
                            );
                            ST_FAILED
                        }
                    };
                    STATE.store(next, Release);
                }
            }
            ST_INIT => std::thread::yield_now(),
            s => return s,
        }
    }
}

/// Records a device description: writes the segment's device slot, then an event so
/// the aggregator applies it in order.
pub fn record_device_info(device: i32, info: &DeviceInfo) {
    record_in_slot(EventKind::DeviceInfo, device, |seg, d| {
        seg.write_device_info(d, info)
    })
}

/// Records which physical chip the process's device `device` is: written to the
/// device's slot in the segment, announced by an event.
pub fn record_device_identity(device: i32, id: &ChipIdentity) {
    record_in_slot(EventKind::DeviceIdentity, device, |seg, d| {
        seg.write_identity(d, id)
    })
}

/// Writes device `device`'s slot with `write`, then records a `kind` event that tells
/// the aggregator to read it. A device out of range is still an event, so the
/// aggregator counts it as invalid.
fn record_in_slot(kind: EventKind, device: i32, write: impl FnOnce(SegmentView, usize)) {
    if !enabled() {
        return;
    }
    if (0..MAX_DEVICES as i32).contains(&device) && ensure_segment() == ST_READY {
        let base = BASE.load(Acquire);
        // SAFETY: base is the live segment of this generation (READY was observed).
        let seg = unsafe { SegmentView::new(base) };
        write(seg, device as usize);
    }
    record(kind, 0, device, 0, 0);
}

/// Events this process could not deliver: dropped on full lanes, for want of a lane,
/// or because tracking failed.
pub fn dropped_events() -> u64 {
    let mut n = UNDELIVERED.load(Relaxed);
    let base = BASE.load(Acquire);
    if STATE.load(Acquire) == ST_READY && !base.is_null() {
        // SAFETY: base is the live segment of this generation.
        let seg = unsafe { SegmentView::new(base) };
        n += seg.header().no_lane_dropped.load(Relaxed);
        let reserved = seg.header().lanes_reserved.load(Acquire);
        for i in (0..NUM_LANES).filter(|i| reserved & (1 << i) != 0) {
            n += seg.lane(i).dropped.load(Relaxed);
        }
    }
    n
}

/// Gives this thread's lane back now (it is also given back when the thread exits).
pub fn release_thread_lane() {
    LANE.with(|tl| tl.release());
}
