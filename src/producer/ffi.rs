//! The C ABI exported by `libtttrack.so` (declared in `cabi/tttrack.h`).
//!
//! Every entry point returns at once when tracking is off, is safe from any thread, and
//! catches any panic so that none unwinds into the application (the event entry points
//! through [`producer::record`], whose hot path cannot panic and whose slow path
//! catches).

use crate::producer;
use crate::shm_layout::{
    BankGeometry, BufferDetail, BufferType, ChipIdentity, DeviceInfo, EventKind,
    BANK_GEOMETRY_V1_SIZE, BUFFER_DETAIL_V1_SIZE, CHIP_IDENTITY_V1_SIZE,
};
use std::panic::{catch_unwind, AssertUnwindSafe};

#[inline(always)]
fn guarded<R>(default: R, f: impl FnOnce() -> R) -> R {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(default)
}

/// 1 when `TT_ALLOC_TRACKING_ENABLED=1` was set at the first call, else 0.
#[no_mangle]
pub extern "C" fn tttrack_enabled() -> i32 {
    guarded(0, || producer::enabled() as i32)
}

#[no_mangle]
pub extern "C" fn tttrack_alloc(device_id: i32, size: u64, buffer_type: u8, buffer_id: u64) {
    producer::record(EventKind::Alloc, buffer_type, device_id, size, buffer_id);
}

#[no_mangle]
pub extern "C" fn tttrack_free(device_id: i32, buffer_id: u64) {
    producer::record(EventKind::Free, 0, device_id, 0, buffer_id);
}

#[no_mangle]
pub extern "C" fn tttrack_cb_alloc(device_id: i32, size: u64, cb_id: u64) {
    producer::record(EventKind::CbAlloc, 0, device_id, size, cb_id);
}

#[no_mangle]
pub extern "C" fn tttrack_cb_free(device_id: i32, size: u64, cb_id: u64) {
    producer::record(EventKind::CbFree, 0, device_id, size, cb_id);
}

#[no_mangle]
pub extern "C" fn tttrack_kernel_load(device_id: i32, size: u64, kernel_id: u64, kernel_type: u8) {
    producer::record(
        EventKind::KernelLoad,
        kernel_type,
        device_id,
        size,
        kernel_id,
    );
}

#[no_mangle]
pub extern "C" fn tttrack_kernel_unload(device_id: i32, size: u64, kernel_id: u64) {
    producer::record(EventKind::KernelUnload, 0, device_id, size, kernel_id);
}

/// # Safety
/// `info` must be null or point to a readable `tttrack_device_info_t`.
#[no_mangle]
pub unsafe extern "C" fn tttrack_device_info(device_id: i32, info: *const DeviceInfo) {
    if info.is_null() {
        return;
    }
    // SAFETY: the caller passes a readable tttrack_device_info_t (checked non-null);
    // read_unaligned tolerates any alignment.
    let info = unsafe { core::ptr::read_unaligned(info) };
    guarded((), || producer::record_device_info(device_id, &info))
}

/// # Safety
/// `id` must be null or point to a readable `tttrack_chip_identity_t` of at least
/// `id->struct_size` bytes.
#[no_mangle]
pub unsafe extern "C" fn tttrack_device_identity(device_id: i32, id: *const ChipIdentity) {
    if id.is_null() {
        return;
    }
    // SAFETY: the caller passes a readable struct whose first word is its size (checked
    // non-null); read_unaligned tolerates any alignment.
    let size = unsafe { core::ptr::read_unaligned(id as *const u32) };
    if size < CHIP_IDENTITY_V1_SIZE {
        // Not a tttrack_chip_identity_t this library knows: the event still goes out,
        // with a size the aggregator refuses (and counts).
        guarded((), || {
            producer::record_device_identity(device_id, &ChipIdentity::default())
        });
        return;
    }
    // SAFETY: the struct is at least as long as the version this library knows (a
    // later, longer version only appends fields, which are not read).
    let mut id = unsafe { core::ptr::read_unaligned(id) };
    id.struct_size = CHIP_IDENTITY_V1_SIZE;
    guarded((), || producer::record_device_identity(device_id, &id))
}

/// Reads a caller's versioned struct (its first word is its size): `None` if null or
/// of a size below the version this library knows.
///
/// # Safety
/// `p` is null or points to a readable struct of at least its first word's bytes.
unsafe fn read_versioned<T: bytemuck::Pod>(p: *const T, v1_size: u32) -> Option<T> {
    if p.is_null() {
        return None;
    }
    // SAFETY: the caller's contract; read_unaligned tolerates any alignment.
    let size = unsafe { core::ptr::read_unaligned(p as *const u32) };
    if size < v1_size {
        return None;
    }
    // SAFETY: the struct is at least as long as the version this library knows (a
    // later, longer version only appends fields, which are not read).
    Some(unsafe { core::ptr::read_unaligned(p) })
}

/// # Safety
/// `detail` must be null or point to a readable `tttrack_buffer_detail_t` of at least
/// `detail->struct_size` bytes.
#[no_mangle]
pub unsafe extern "C" fn tttrack_buffer_detail(
    device_id: i32,
    buffer_id: u64,
    detail: *const BufferDetail,
) {
    // SAFETY: the caller's contract, passed on.
    if let Some(d) = unsafe { read_versioned(detail, BUFFER_DETAIL_V1_SIZE) } {
        producer::record_buffer_detail(device_id, buffer_id, &d);
    }
}

/// # Safety
/// `geometry` must be null or point to a readable `tttrack_bank_geometry_t` of at least
/// `geometry->struct_size` bytes.
#[no_mangle]
pub unsafe extern "C" fn tttrack_bank_geometry(
    device_id: i32,
    buffer_type: u8,
    geometry: *const BankGeometry,
) {
    // SAFETY: the caller's contract, passed on.
    let g = unsafe { read_versioned(geometry, BANK_GEOMETRY_V1_SIZE) };
    if let (Some(g), Some(t)) = (g, BufferType::from_u8(buffer_type)) {
        producer::record_bank_geometry(device_id, t, &g);
    }
}

/// After `tttrack_alloc` of one chip's part of a buffer of a mesh of several chips:
/// the mesh's id and how many chips it spans (views group the parts by it).
#[no_mangle]
pub extern "C" fn tttrack_buffer_mesh(device_id: i32, buffer_id: u64, mesh_id: u32, chips: u32) {
    let m = crate::shm_layout::MeshMember { mesh_id, chips };
    guarded((), || {
        producer::record_event(m.to_event(device_id, buffer_id))
    });
}

/// Events this process could not deliver so far.
#[no_mangle]
pub extern "C" fn tttrack_dropped_events() -> u64 {
    guarded(0, producer::dropped_events)
}

/// Gives the calling thread's lane back before the thread exits (optional: it happens
/// at thread exit anyway).
#[no_mangle]
pub extern "C" fn tttrack_thread_detach() {
    guarded((), producer::release_thread_lane)
}

/// `tt::tt_metal::AllocationClient`'s static members, under their g++ mangled names
/// (as an instrumented TT-Metal build declares them): loaded with `LD_PRELOAD`, this
/// library takes the place of the socket client inside an instrumented TT-Metal build,
/// and its events go through the shared-memory lanes.
#[allow(non_snake_case)]
pub mod allocation_client {
    use super::*;

    /// The names of the functions below, as the dynamic linker sees them (the test of
    /// the library's exports checks that each is exported).
    pub const SYMBOLS: [&str; 7] = [
        "_ZN2tt8tt_metal16AllocationClient17report_allocationEimhm",
        "_ZN2tt8tt_metal16AllocationClient19report_deallocationEim",
        "_ZN2tt8tt_metal16AllocationClient20report_cb_allocationEimm",
        "_ZN2tt8tt_metal16AllocationClient22report_cb_deallocationEimm",
        "_ZN2tt8tt_metal16AllocationClient18report_kernel_loadEimmh",
        "_ZN2tt8tt_metal16AllocationClient20report_kernel_unloadEimm",
        "_ZN2tt8tt_metal16AllocationClient10is_enabledEv",
    ];

    #[no_mangle]
    pub extern "C" fn _ZN2tt8tt_metal16AllocationClient17report_allocationEimhm(
        device_id: i32,
        size: u64,
        buffer_type: u8,
        buffer_id: u64,
    ) {
        tttrack_alloc(device_id, size, buffer_type, buffer_id)
    }

    #[no_mangle]
    pub extern "C" fn _ZN2tt8tt_metal16AllocationClient19report_deallocationEim(
        device_id: i32,
        buffer_id: u64,
    ) {
        tttrack_free(device_id, buffer_id)
    }

    #[no_mangle]
    pub extern "C" fn _ZN2tt8tt_metal16AllocationClient20report_cb_allocationEimm(
        device_id: i32,
        size: u64,
        cb_id: u64,
    ) {
        tttrack_cb_alloc(device_id, size, cb_id)
    }

    #[no_mangle]
    pub extern "C" fn _ZN2tt8tt_metal16AllocationClient22report_cb_deallocationEimm(
        device_id: i32,
        size: u64,
        cb_id: u64,
    ) {
        tttrack_cb_free(device_id, size, cb_id)
    }

    #[no_mangle]
    pub extern "C" fn _ZN2tt8tt_metal16AllocationClient18report_kernel_loadEimmh(
        device_id: i32,
        size: u64,
        kernel_id: u64,
        kernel_type: u8,
    ) {
        tttrack_kernel_load(device_id, size, kernel_id, kernel_type)
    }

    #[no_mangle]
    pub extern "C" fn _ZN2tt8tt_metal16AllocationClient20report_kernel_unloadEimm(
        device_id: i32,
        size: u64,
        kernel_id: u64,
    ) {
        tttrack_kernel_unload(device_id, size, kernel_id)
    }

    #[no_mangle]
    pub extern "C" fn _ZN2tt8tt_metal16AllocationClient10is_enabledEv() -> bool {
        tttrack_enabled() != 0
    }
}
