//! The physical chips a TT-Metal device stands for, as the graph hook reports them.
//!
//! A buffer made on a `MeshDevice` of several chips is allocated once, by the mesh's
//! lockstep allocator, at the same address on every chip: TT-Metal calls the processor
//! once, with the mesh as the buffer's device. Each chip holds the buffer's bytes, so it
//! is reported on every chip of the mesh (as TT-Metal's own tracking counts it on each
//! chip's region), with the mesh's id beside it ([`crate::shm_layout::MeshMember`]) so
//! views can group the parts.
//!
//! A mesh's chips are read once (TT-Metal's `MeshDevice::get_devices()`, which returns
//! a vector it allocates, and each device's `id()`), then kept in a small table of
//! recent meshes read without a lock (a sequence count per slot, as a seqlock): every
//! later buffer of that mesh costs a scan of [`SLOTS`] words. `get_devices()` lists the
//! chips of this host only, and never throws; a mesh's chips on other hosts are theirs
//! to report.

use super::{device_id, Api};
use std::ffi::c_void;
use std::sync::atomic::{fence, AtomicI32, AtomicU32, AtomicUsize, Ordering};

/// At most this many chips are reported for one mesh (a Galaxy has 32).
pub const MAX_MESH_CHIPS: usize = 64;
/// Recent meshes kept.
const SLOTS: usize = 8;

/// The chips a device stands for: one, or every chip of a mesh with its id.
pub struct Chips {
    pub n: usize,
    pub ids: [i32; MAX_MESH_CHIPS],
    /// The mesh's id and chip count, for a mesh of several chips.
    pub mesh: Option<(u32, u32)>,
}

impl Chips {
    pub fn one(chip: i32) -> Self {
        let mut ids = [0; MAX_MESH_CHIPS];
        ids[0] = chip;
        Chips {
            n: 1,
            ids,
            mesh: None,
        }
    }
    pub fn iter(&self) -> impl Iterator<Item = i32> + '_ {
        self.ids[..self.n].iter().copied()
    }
}

/// One kept mesh. `seq` is odd while a writer fills it; readers take what they read
/// only if `seq` was the same even number before and after.
struct Slot {
    seq: AtomicU32,
    dev: AtomicUsize,
    mesh_id: AtomicI32,
    n: AtomicUsize,
    chips: [AtomicI32; MAX_MESH_CHIPS],
}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: Slot = Slot {
    seq: AtomicU32::new(0),
    dev: AtomicUsize::new(0),
    mesh_id: AtomicI32::new(0),
    n: AtomicUsize::new(0),
    chips: [const { AtomicI32::new(0) }; MAX_MESH_CHIPS],
};
static KEPT: [Slot; SLOTS] = [EMPTY; SLOTS];
/// The slot the next new mesh takes when none is free (oldest first).
static NEXT: AtomicUsize = AtomicUsize::new(0);

/// `mesh` (its id `id`) as kept, if it is.
fn lookup(mesh: usize, id: i32) -> Option<Chips> {
    use Ordering::{Acquire, Relaxed};
    for s in &KEPT {
        let before = s.seq.load(Acquire);
        if before & 1 == 1 || s.dev.load(Relaxed) != mesh || s.mesh_id.load(Relaxed) != id {
            continue;
        }
        let n = s.n.load(Relaxed).min(MAX_MESH_CHIPS);
        let mut ids = [0; MAX_MESH_CHIPS];
        for (k, c) in ids.iter_mut().enumerate().take(n) {
            *c = s.chips[k].load(Relaxed);
        }
        fence(Acquire);
        if s.seq.load(Relaxed) == before {
            return Some(Chips {
                n,
                ids,
                mesh: Some((id as u32, n as u32)),
            });
        }
    }
    None
}

/// Keeps `chips` as mesh `mesh`'s (a free slot, else the oldest); nothing if another
/// thread is filling that slot.
fn keep(mesh: usize, id: i32, chips: &Chips) {
    use Ordering::{AcqRel, Relaxed, Release};
    let free = KEPT.iter().position(|s| s.dev.load(Relaxed) == 0);
    let k = free.unwrap_or_else(|| NEXT.fetch_add(1, Relaxed) % SLOTS);
    let s = &KEPT[k];
    let seq = s.seq.load(Relaxed);
    if seq & 1 == 1
        || s.seq
            .compare_exchange(seq, seq + 1, AcqRel, Relaxed)
            .is_err()
    {
        return;
    }
    s.dev.store(mesh, Relaxed);
    s.mesh_id.store(id, Relaxed);
    s.n.store(chips.n, Relaxed);
    for (slot, &c) in s.chips.iter().zip(&chips.ids[..chips.n]) {
        slot.store(c, Relaxed);
    }
    s.seq.store(seq + 2, Release);
}

/// A `std::vector<IDevice*>` as libstdc++ lays it out.
#[repr(C)]
pub struct DeviceVec {
    begin: *const *const c_void,
    end: *const *const c_void,
    cap: *const *const c_void,
}

/// The chips of `mesh` (a MeshDevice of several chips) read from TT-Metal.
///
/// # Safety
/// `mesh` is a live MeshDevice; `api.get_devices` and `api.delete` are TT-Metal's
/// `MeshDevice::get_devices() const` and libstdc++'s sized `operator delete`.
unsafe fn read(mesh: *const c_void, id: i32, api: &Api) -> Option<Chips> {
    let (get, delete) = (api.get_devices?, api.delete?);
    let mut v = DeviceVec {
        begin: std::ptr::null(),
        end: std::ptr::null(),
        cap: std::ptr::null(),
    };
    // SAFETY: get_devices returns its vector through the hidden pointer (the first
    // argument, before `this`), which v is.
    unsafe { get(&mut v, mesh) };
    if v.begin.is_null() {
        return None;
    }
    // SAFETY: begin..end are the vector's elements, live devices of the mesh; the
    // vector's storage is then given back as libstdc++ allocated it (cap - begin).
    unsafe {
        let len = v.end.offset_from(v.begin).max(0) as usize;
        let mut chips = Chips::one(0);
        chips.n = len.min(MAX_MESH_CHIPS);
        for k in 0..chips.n {
            chips.ids[k] = device_id(*v.begin.add(k), api.id_slot);
        }
        chips.mesh = Some((id as u32, chips.n as u32));
        delete(
            v.begin as *mut c_void,
            (v.cap as usize).saturating_sub(v.begin as usize),
        );
        Some(chips)
    }
}

/// The physical chips of a buffer's (or a program's) device: every chip of a mesh of
/// several, the chip of a mesh of one, any other device itself.
///
/// # Safety
/// `dev` is null or a live TT-Metal device (a MeshDevice or a Device) whose virtual
/// table has `id()` at `api.id_slot`.
pub unsafe fn chips_of(dev: *const c_void, api: &Api) -> Chips {
    if dev.is_null() {
        return Chips::one(0);
    }
    // SAFETY: dev's first word is its vtable pointer; a MeshDevice's members are called
    // only on a MeshDevice.
    unsafe {
        if *(dev as *const usize) != api.mesh_vptr {
            return Chips::one(device_id(dev, api.id_slot));
        }
        let id = device_id(dev, api.id_slot);
        if (api.num_devices)(dev) == 1 {
            let chip = (api.get_device)(dev, 0, 0);
            return Chips::one(if chip.is_null() {
                id
            } else {
                device_id(chip, api.id_slot)
            });
        }
        if let Some(c) = lookup(dev as usize, id) {
            return c;
        }
        match read(dev, id, api) {
            Some(c) if c.n > 0 => {
                keep(dev as usize, id, &c);
                c
            }
            // Its chips cannot be read: the mesh as one device, as before.
            _ => Chips::one(id),
        }
    }
}
