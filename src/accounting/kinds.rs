//! What each kind of event does to a process's and a device's figures: the rules of
//! exact accounting, one function per kind (see [`super`] for the semantics).

use super::buffer_table::Probe;
use super::{BufRec, DevState, Outcome, ProcDev, MAX_EVENT_SIZE};
use crate::counters_page::*;
use crate::shm_layout::{
    BankGeometry, BufferType, CbPlace, Event, EventKind, KernelType, MeshMember, MAX_DEVICES,
};

pub use crate::counters_page::cat_of_buffer;

pub fn cat_of_kernel(t: KernelType) -> usize {
    match t {
        KernelType::Application => CAT_KERNEL_APP,
        KernelType::Fabric => CAT_KERNEL_FABRIC,
        KernelType::Dispatch => CAT_KERNEL_DISPATCH,
    }
}

/// Adds (or with `sub`, removes) `size` bytes and one item to category `cat` of both
/// the process's and the device's figures, raising peaks.
fn change(pd: &mut ProcDev, dev: &mut DevState, cat: usize, size: u64, sub: bool) {
    let f = &mut dev.figures[cat];
    if sub {
        pd.used[cat] = pd.used[cat].saturating_sub(size);
        pd.count[cat] = pd.count[cat].saturating_sub(1);
        f.used = f.used.saturating_sub(size);
        f.count = f.count.saturating_sub(1);
    } else {
        pd.used[cat] += size;
        pd.count[cat] += 1;
        pd.peak[cat] = pd.peak[cat].max(pd.used[cat]);
        f.used += size;
        f.count += 1;
        f.peak = f.peak.max(f.used);
        if L1_RESIDENT_CATS.contains(&cat) {
            let now: u64 = L1_RESIDENT_CATS.iter().map(|&c| dev.figures[c].used).sum();
            dev.l1_resident_peak = dev.l1_resident_peak.max(now);
        }
    }
}

/// What one valid event of `kind` does to the process's and the device's figures on
/// that device. `live`: the process's live buffers.
pub(super) fn apply_kind(
    kind: EventKind,
    pd: &mut ProcDev,
    dev: &mut DevState,
    ev: &Event,
    live: u64,
    now_unix_s: u32,
) -> Outcome {
    match kind {
        EventKind::Alloc => alloc(pd, dev, ev, live as usize, now_unix_s),
        EventKind::Free => free(pd, dev, ev),
        EventKind::CbAlloc => cb_alloc(pd, dev, ev),
        EventKind::CbFree => cb_free(pd, dev, ev),
        EventKind::KernelLoad => kernel_load(pd, dev, ev, now_unix_s),
        EventKind::KernelUnload => kernel_unload(pd, dev, ev),
        EventKind::DeviceInfo => Outcome::DeviceInfo,
        EventKind::DeviceIdentity => Outcome::DeviceIdentity,
        EventKind::BufferShape | EventKind::BufferPlace => {
            if pd.buffers.get(ev.id).is_some() {
                pd.details.entry(ev.id).or_default().take(ev);
            }
            Outcome::Described
        }
        EventKind::CbPlace => {
            if pd.cbs.contains_key(&ev.id) {
                pd.cb_places.insert(ev.id, CbPlace::from_event(ev));
            }
            Outcome::Described
        }
        EventKind::CbReleaseAll => cb_release_all(pd, dev),
        EventKind::MeshMember => {
            if pd.buffers.get(ev.id).is_some() {
                pd.meshes.insert(ev.id, MeshMember::from_event(ev));
            }
            Outcome::Described
        }
        EventKind::BankGeometry => match BankGeometry::from_event(ev) {
            Some((t, g)) => {
                pd.banks.insert(t as u8, g);
                Outcome::Described
            }
            None => Outcome::Invalid("unknown buffer type"),
        },
    }
}

/// The event's kind, if it is one whose device and size make sense.
#[inline]
pub(super) fn validate(ev: &Event) -> Result<EventKind, &'static str> {
    let kind = EventKind::from_u8(ev.kind).ok_or("unknown event kind")?;
    if !(0..MAX_DEVICES as i32).contains(&ev.device) {
        return Err("device id out of range");
    }
    let sized = matches!(
        kind,
        EventKind::Alloc | EventKind::CbAlloc | EventKind::KernelLoad
    );
    if sized && (ev.size == 0 || ev.size > MAX_EVENT_SIZE) {
        return Err("implausible size");
    }
    Ok(kind)
}

/// A buffer allocated, or one already live reported again (its reference count goes
/// up; its size is not added twice). `live`: the process's live buffers.
fn alloc(
    pd: &mut ProcDev,
    dev: &mut DevState,
    ev: &Event,
    live: usize,
    now_unix_s: u32,
) -> Outcome {
    let Some(bt) = BufferType::from_u8(ev.subtype) else {
        return Outcome::Invalid("unknown buffer type");
    };
    // One probe: the live buffer's slot, or the one the new buffer takes.
    pd.buffers.reserve_one();
    match pd.buffers.probe(ev.id) {
        Probe::Found(i) => {
            let b = pd.buffers.at_mut(i);
            let rc = (b.refcount() + 1).min(0x00ff_ffff);
            b.rc_type = (b.rc_type & 0xff00_0000) | rc;
            return Outcome::Referenced { refcount: rc };
        }
        Probe::Vacant(_) if live >= crate::accounting::MAX_BUFFERS_PER_PROCESS => {
            return Outcome::OverLimit;
        }
        Probe::Vacant(i) => pd.buffers.insert_at(
            i,
            ev.id,
            BufRec {
                size: ev.size,
                first_seen_unix_s: now_unix_s,
                rc_type: ((bt as u32) << 24) | 1,
            },
        ),
    }
    change(pd, dev, cat_of_buffer(bt), ev.size, false);
    Outcome::Allocated {
        size: ev.size,
        btype: bt,
    }
}

/// A buffer freed: its size leaves the figures when its last reference goes.
fn free(pd: &mut ProcDev, dev: &mut DevState, ev: &Event) -> Outcome {
    // One probe: the slot is updated or emptied in place.
    let Probe::Found(i) = pd.buffers.probe(ev.id) else {
        return Outcome::UnknownFree;
    };
    let b = pd.buffers.at_mut(i);
    let bt = BufferType::from_u8(b.btype()).unwrap_or(BufferType::Dram);
    let rc = b.refcount().saturating_sub(1);
    let size = b.size;
    if rc > 0 {
        b.rc_type = (b.rc_type & 0xff00_0000) | rc;
        return Outcome::Freed {
            size,
            btype: bt,
            last: false,
        };
    }
    pd.buffers.remove_at(i);
    if !pd.details.is_empty() {
        pd.details.remove(&ev.id);
    }
    if !pd.meshes.is_empty() {
        pd.meshes.remove(&ev.id);
    }
    change(pd, dev, cat_of_buffer(bt), size, true);
    Outcome::Freed {
        size,
        btype: bt,
        last: true,
    }
}

fn cb_alloc(pd: &mut ProcDev, dev: &mut DevState, ev: &Event) -> Outcome {
    pd.cbs.entry(ev.id).or_default().push(ev.size);
    change(pd, dev, CAT_CB, ev.size, false);
    Outcome::CbAllocated { size: ev.size }
}

/// A circular buffer freed: the size recorded at its allocation leaves the figures.
fn cb_free(pd: &mut ProcDev, dev: &mut DevState, ev: &Event) -> Outcome {
    let Some(v) = pd.cbs.get_mut(&ev.id) else {
        return Outcome::UnknownFree;
    };
    let size = v.pop().unwrap_or(0);
    if v.is_empty() {
        pd.cbs.remove(&ev.id);
        pd.cb_places.remove(&ev.id);
    }
    change(pd, dev, CAT_CB, size, true);
    Outcome::CbFreed { size }
}

/// Every circular buffer of the device freed (a program's, released together): each
/// one's recorded size leaves the figures.
fn cb_release_all(pd: &mut ProcDev, dev: &mut DevState) -> Outcome {
    let sizes: Vec<u64> = pd.cbs.drain().flat_map(|(_, v)| v).collect();
    pd.cb_places.clear();
    let mut total = 0u64;
    for size in sizes {
        change(pd, dev, CAT_CB, size, true);
        total = total.saturating_add(size);
    }
    Outcome::CbFreed { size: total }
}

fn kernel_load(pd: &mut ProcDev, dev: &mut DevState, ev: &Event, now_unix_s: u32) -> Outcome {
    let Some(kt) = KernelType::from_u8(ev.subtype) else {
        return Outcome::Invalid("unknown kernel type");
    };
    pd.kernels
        .entry(ev.id)
        .or_default()
        .push((ev.size, kt as u8, now_unix_s));
    change(pd, dev, CAT_KERNEL, ev.size, false);
    change(pd, dev, cat_of_kernel(kt), ev.size, false);
    Outcome::KernelLoaded {
        size: ev.size,
        ktype: kt,
        total: dev.figures[CAT_KERNEL].used,
    }
}

/// A kernel unloaded: the size recorded at its load leaves the figures.
fn kernel_unload(pd: &mut ProcDev, dev: &mut DevState, ev: &Event) -> Outcome {
    let Some(v) = pd.kernels.get_mut(&ev.id) else {
        return Outcome::UnknownFree;
    };
    let (size, kt, _) = v.pop().unwrap_or((0, 0, 0));
    if v.is_empty() {
        pd.kernels.remove(&ev.id);
    }
    let kt = KernelType::from_u8(kt).unwrap_or(KernelType::Application);
    change(pd, dev, CAT_KERNEL, size, true);
    change(pd, dev, cat_of_kernel(kt), size, true);
    Outcome::KernelUnloaded {
        size,
        ktype: kt,
        total: dev.figures[CAT_KERNEL].used,
    }
}
