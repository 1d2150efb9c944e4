//! Typed access to a mapped segment, shared by the producer (which writes it) and the
//! aggregator (which drains it and trusts none of it).

use crate::shm_layout::*;
use core::marker::PhantomData;
use core::mem::size_of;
use core::sync::atomic::{AtomicU64, Ordering::*};

/// A view of a mapping of [`SEGMENT_SIZE`] bytes laid out as in [`crate::shm_layout`],
/// borrowed from that mapping for `'a` (a view made from a mapping owner such as the
/// aggregator's `MappedSegment::view` cannot outlive it).
#[derive(Clone, Copy)]
pub struct SegmentView<'a> {
    base: *mut u8,
    mapping: PhantomData<&'a [u8]>,
}

// SAFETY: every field reached through a SegmentView is an atomic, and the mapping it
// points into outlives the view ('a, and the contract of `SegmentView::new`).
unsafe impl Send for SegmentView<'_> {}
// SAFETY: as above; shared access only goes through atomics.
unsafe impl Sync for SegmentView<'_> {}

impl<'a> SegmentView<'a> {
    /// # Safety
    /// `base` must be 64-byte aligned, valid for reads and writes of [`SEGMENT_SIZE`]
    /// bytes, and stay mapped for `'a` (as long as the view, or anything borrowed from
    /// it, is used).
    pub unsafe fn new(base: *mut u8) -> Self {
        debug_assert!(!base.is_null() && (base as usize).is_multiple_of(64));
        Self {
            base,
            mapping: PhantomData,
        }
    }

    pub fn base(&self) -> *mut u8 {
        self.base
    }

    pub fn header(&self) -> &SegmentHeader {
        // SAFETY: offset 0 is inside the mapping (new's contract), aligned, and a
        // SegmentHeader consists only of atomics, valid for any bit pattern.
        unsafe { &*(self.base as *const SegmentHeader) }
    }

    /// Lane `i` found once, for a producer's hot path (panics if `i >= NUM_LANES`).
    pub fn lane_view(&self, i: usize) -> LaneView {
        LaneView {
            lane: self.lane(i),
            seq: &self.header().seq,
        }
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
        let slot: *const Slot = self.lane_view(i).slot(pos);
        // SAFETY: the slot lies in this view's mapping (LaneView::slot), which lives as
        // long as the view by the contract of `new`.
        unsafe { &*slot }
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

    /// Reads a device slot's words (description, then identity) under its sequence
    /// lock; `None` if never written or if a writer kept it busy through every retry.
    fn read_slot(&self, d: usize) -> Option<[u64; 14]> {
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
            let mut w = [0u64; 14];
            for (o, a) in w.iter_mut().zip(slot.words.iter().chain(&slot.identity)) {
                *o = a.load(Relaxed);
            }
            fence(Acquire);
            if slot.seq.load(Relaxed) == s1 {
                return Some(w);
            }
        }
        None
    }

    /// The description of device `d` (`tttrack_device_info`), if one was written.
    pub fn read_device_info(&self, d: usize) -> Option<DeviceInfo> {
        let w = self.read_slot(d)?;
        let info: [u64; 8] = w[..8].try_into().ok()?;
        Some(bytemuck::cast(info))
    }

    /// Which chip device `d` is (`tttrack_device_identity`), if that was written.
    pub fn read_identity(&self, d: usize) -> Option<ChipIdentity> {
        let w = self.read_slot(d)?;
        let id: [u64; 6] = w[8..].try_into().ok()?;
        let id: ChipIdentity = bytemuck::cast(id);
        (id.struct_size != 0).then_some(id)
    }

    /// Writes one part of a device slot (`identity`: the identity words, else the
    /// description's) under its sequence lock (several writers may race).
    fn write_slot(&self, d: usize, identity: bool, w: &[u64]) {
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
        let part: &[AtomicU64] = if identity {
            &slot.identity
        } else {
            &slot.words
        };
        for (a, &v) in part.iter().zip(w) {
            a.store(v, Relaxed);
        }
        // Skip 0 on wrap so "never written" stays distinguishable.
        let next = match s.wrapping_add(2) {
            0 => 2,
            n => n,
        };
        slot.seq.store(next, Release);
    }

    /// Writes the description of device `d`.
    pub fn write_device_info(&self, d: usize, info: &DeviceInfo) {
        let w: [u64; 8] = bytemuck::cast(*info);
        self.write_slot(d, false, &w);
    }

    /// Writes which chip device `d` is.
    pub fn write_identity(&self, d: usize, id: &ChipIdentity) {
        let w: [u64; 6] = bytemuck::cast(*id);
        self.write_slot(d, true, &w);
    }

    /// The process's `TT_VISIBLE_DEVICES` as its segment recorded it.
    pub fn visible_devices(&self) -> VisibleDevices {
        use core::sync::atomic::Ordering::Relaxed;
        let h = self.header();
        match h.visible_devices_state.load(Relaxed) {
            VISIBLE_UNSET => VisibleDevices::Unset,
            VISIBLE_SET => {
                let mut b = [0u8; VISIBLE_DEVICES_BYTES];
                for (c, w) in b.chunks_exact_mut(8).zip(&h.visible_devices) {
                    c.copy_from_slice(&w.load(Relaxed).to_le_bytes());
                }
                let len = (h.visible_devices_len.load(Relaxed) as usize).min(b.len());
                VisibleDevices::Set(String::from_utf8_lossy(&b[..len]).into_owned())
            }
            _ => VisibleDevices::Unknown,
        }
    }

    /// Records the process's `TT_VISIBLE_DEVICES` (before the segment is published).
    pub fn set_visible_devices(&self, value: Option<&[u8]>) {
        use core::sync::atomic::Ordering::Relaxed;
        let h = self.header();
        let state = match value {
            None => VISIBLE_UNSET,
            Some(v) if v.len() > VISIBLE_DEVICES_BYTES => VISIBLE_TOO_LONG,
            Some(v) => {
                let mut b = [0u8; VISIBLE_DEVICES_BYTES];
                b[..v.len()].copy_from_slice(v);
                for (c, w) in b.chunks_exact(8).zip(&h.visible_devices) {
                    w.store(
                        u64::from_le_bytes(c.try_into().unwrap_or_default()),
                        Relaxed,
                    );
                }
                h.visible_devices_len.store(v.len() as u32, Relaxed);
                VISIBLE_SET
            }
        };
        h.visible_devices_state.store(state, Relaxed);
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

/// What a process's `TT_VISIBLE_DEVICES` was, as its segment (or its environment)
/// says: the text is not checked here (see `accounting::placement`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum VisibleDevices {
    /// Not set: every card is visible.
    Unset,
    Set(String),
    /// Set, but to something not recorded (too long, unreadable).
    Unknown,
}

/// One lane of a mapped segment and the segment's sequence counter, with nothing left
/// to look up or check: a producer's hot path writes through it. Valid as long as the
/// [`SegmentView`] it came from (the same contract).
#[derive(Clone, Copy)]
pub struct LaneView {
    lane: *const LaneHeader,
    seq: *const AtomicU64,
}

impl LaneView {
    /// The view's two pointers, to be kept where an `Option` cannot be (memory that
    /// starts zeroed: never null for a view).
    pub fn into_raw(self) -> (*const LaneHeader, *const AtomicU64) {
        (self.lane, self.seq)
    }

    /// A view back from [`Self::into_raw`].
    ///
    /// # Safety
    /// `lane` and `seq` come from one `into_raw` of a view whose segment is still
    /// mapped (the contract of [`SegmentView::new`]).
    #[inline(always)]
    pub unsafe fn from_raw(lane: *const LaneHeader, seq: *const AtomicU64) -> Self {
        Self { lane, seq }
    }

    pub fn header(&self) -> &LaneHeader {
        // SAFETY: taken from SegmentView::lane, valid while the mapping is (the
        // contract of SegmentView::new, which a LaneView shares).
        unsafe { &*self.lane }
    }

    /// The slot that position `pos` maps to (the ring follows the lane's header).
    pub fn slot(&self, pos: u64) -> &Slot {
        let idx = (pos as usize) & (LANE_CAPACITY - 1);
        // SAFETY: idx < LANE_CAPACITY: the slot lies in this lane's ring, inside the
        // mapping (as SegmentView::slot); Slot is four AtomicU64, 8-aligned here.
        unsafe {
            &*((self.lane as *const u8).add(size_of::<LaneHeader>() + idx * size_of::<Slot>())
                as *const Slot)
        }
    }

    /// Writes `ev` into the slot at `head` with the next sequence number of the
    /// process and publishes it. The caller owns the lane and has checked there is room.
    #[inline(always)]
    pub fn publish(&self, head: u64, ev: Event) {
        // SAFETY: as in `header`: the header's counter, in the same mapping.
        let seq = unsafe { &*self.seq }.fetch_add(1, Relaxed);
        let words = Event { seq, ..ev }.to_words();
        let slot = self.slot(head);
        slot.words[0].store(words[0], Relaxed);
        slot.words[1].store(words[1], Relaxed);
        slot.words[2].store(words[2], Relaxed);
        slot.words[3].store(words[3], Relaxed);
        self.header().head.store(head.wrapping_add(1), Release);
    }
}
