//! Typed access to a mapped segment, shared by the producer (which writes it) and the
//! aggregator (which drains it and trusts none of it).

use crate::shm_layout::*;
use core::mem::size_of;

/// A view of a mapping of [`SEGMENT_SIZE`] bytes laid out as in [`crate::shm_layout`].
#[derive(Clone, Copy)]
pub struct SegmentView {
    base: *mut u8,
}

// SAFETY: every field reached through a SegmentView is an atomic, and the mapping it
// points into outlives the view by the contract of `SegmentView::new`.
unsafe impl Send for SegmentView {}
// SAFETY: as above; shared access only goes through atomics.
unsafe impl Sync for SegmentView {}

impl SegmentView {
    /// # Safety
    /// `base` must be 64-byte aligned, valid for reads and writes of [`SEGMENT_SIZE`]
    /// bytes, and stay mapped for as long as the view (or anything borrowed from it) is used.
    pub unsafe fn new(base: *mut u8) -> Self {
        debug_assert!(!base.is_null() && (base as usize).is_multiple_of(64));
        Self { base }
    }

    pub fn base(&self) -> *mut u8 {
        self.base
    }

    pub fn header(&self) -> &SegmentHeader {
        // SAFETY: offset 0 is inside the mapping (new's contract), aligned, and a
        // SegmentHeader consists only of atomics, valid for any bit pattern.
        unsafe { &*(self.base as *const SegmentHeader) }
    }

    /// Lane `i` (panics if `i >= NUM_LANES`).
    pub fn lane(&self, i: usize) -> &LaneHeader {
        assert!(i < NUM_LANES);
        // SAFETY: i < NUM_LANES keeps the header inside SEGMENT_SIZE; LANES_OFFSET and
        // LANE_STRIDE are multiples of 64; LaneHeader is all atomics.
        unsafe { &*(self.base.add(LANES_OFFSET + i * LANE_STRIDE) as *const LaneHeader) }
    }

    /// The slot that position `pos` of lane `i` maps to.
    pub fn slot(&self, i: usize, pos: u64) -> &Slot {
        assert!(i < NUM_LANES);
        let idx = (pos as usize) & (LANE_CAPACITY - 1);
        // SAFETY: idx < LANE_CAPACITY, so the slot lies inside lane i's ring, inside the
        // mapping; Slot is four AtomicU64, 8-aligned here.
        unsafe {
            &*(self
                .base
                .add(LANES_OFFSET + i * LANE_STRIDE + size_of::<LaneHeader>() + idx * 32)
                as *const Slot)
        }
    }

    pub fn device_slot(&self, d: usize) -> &DeviceInfoSlot {
        assert!(d < MAX_DEVICES);
        // SAFETY: d < MAX_DEVICES keeps the slot below LANES_OFFSET (asserted in
        // shm_layout); DeviceInfoSlot is all atomics.
        unsafe {
            &*(self
                .base
                .add(DEVICE_SLOTS_OFFSET + d * size_of::<DeviceInfoSlot>())
                as *const DeviceInfoSlot)
        }
    }

    /// Reads a device slot under its sequence lock; `None` if never written or if a
    /// writer kept it busy through every retry.
    pub fn read_device_info(&self, d: usize) -> Option<DeviceInfo> {
        use core::sync::atomic::{fence, Ordering::*};
        let slot = self.device_slot(d);
        for _ in 0..64 {
            let s1 = slot.seq.load(Acquire);
            if s1 == 0 {
                return None;
            }
            if s1 % 2 == 1 {
                core::hint::spin_loop();
                continue;
            }
            let mut w = [0u64; 8];
            for (o, a) in w.iter_mut().zip(slot.words.iter()) {
                *o = a.load(Relaxed);
            }
            fence(Acquire);
            if slot.seq.load(Relaxed) == s1 {
                return Some(bytemuck::cast(w));
            }
        }
        None
    }

    /// Writes a device slot under its sequence lock (several writers may race).
    pub fn write_device_info(&self, d: usize, info: &DeviceInfo) {
        use core::sync::atomic::{fence, Ordering::*};
        let slot = self.device_slot(d);
        let mut spins = 0u32;
        let s = loop {
            let s = slot.seq.load(Relaxed);
            if s.is_multiple_of(2)
                && slot
                    .seq
                    .compare_exchange_weak(s, s.wrapping_add(1), Acquire, Relaxed)
                    .is_ok()
            {
                break s;
            }
            spins += 1;
            if spins > 1000 {
                std::thread::yield_now();
            } else {
                core::hint::spin_loop();
            }
        };
        fence(Release);
        let w: [u64; 8] = bytemuck::cast(*info);
        for (a, v) in slot.words.iter().zip(w) {
            a.store(v, Relaxed);
        }
        // Skip 0 on wrap so "never written" stays distinguishable.
        let next = match s.wrapping_add(2) {
            0 => 2,
            n => n,
        };
        slot.seq.store(next, Release);
    }

    /// Reads the process name stored in the header.
    pub fn comm(&self) -> String {
        use core::sync::atomic::Ordering::Relaxed;
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.header().comm[0].load(Relaxed).to_le_bytes());
        b[8..].copy_from_slice(&self.header().comm[1].load(Relaxed).to_le_bytes());
        crate::sys::get_str(&b)
    }
}
