//! Every buffer of a stock TT-Metal process, through TT-Metal's own graph-tracking hook:
//! when `libtt_metal.so` is in the process (and tracking is on), a processor of ours is
//! pushed onto TT-Metal's `GraphTracker`, which calls it for each buffer allocated and
//! freed; each becomes an event in this thread's lane (the buffer's address as its id).
//!
//! Nothing of TT-Metal is compiled in: its members are found in the loaded library by
//! their symbols, and the processor is an object of ours whose virtual table is a copy
//! of TT-Metal's base `IGraphProcessor` table (its own do-nothing members) with the two
//! slots we need replaced. The slots' order changes between TT-Metal versions, so it is
//! checked first against the library's own symbol table ([`SLOTS`]); anything that does
//! not match, and nothing is pushed: one line on stderr, the process runs on.
//!
//! Threads: the processor list is per thread (TT-Metal 0.81.1). The processor is pushed
//! on the thread that loads `libtttrack.so`, and on every thread made after that through
//! `pthread_create` (which this library wraps, passing every call on): threads that
//! already ran before it was loaded are not covered. A `libtt_metal.so` that comes in
//! later with `dlopen` (as `import ttnn` brings it) is hooked when that call returns
//! (`dlopen` is wrapped too), on the calling thread and the threads made after. Not
//! covered: programs. Circular buffers come through `track_allocate_cb` and
//! `track_deallocate_cb` (all of a device's at once). A buffer of a mesh of several
//! chips is reported on each chip, with the mesh's id ([`mesh`]).

mod mesh;

use crate::shm_layout::{BankGeometry, BufferDetail, BufferType, EventKind, MeshMember};
use std::ffi::{c_char, c_void, CStr};
use std::sync::OnceLock;

/// The base processor's virtual table, slot by slot (TT-Metal 0.81.1): the symbol each
/// slot must hold. Slot 13 is the complete-object destructor, which may be named D1 or
/// D2 (one function).
pub const SLOTS: [&[&str]; 15] = [
    &["_ZNK2tt8tt_metal15IGraphProcessor20is_capture_processorEv"],
    &["_ZN2tt8tt_metal15IGraphProcessor14track_allocateEPKNS0_6BufferE"],
    &["_ZN2tt8tt_metal15IGraphProcessor16track_deallocateEPNS0_6BufferE"],
    &["_ZN2tt8tt_metal15IGraphProcessor17track_allocate_cbERKNS0_12CoreRangeSetEmmbPKNS0_7IDeviceE"],
    &["_ZN2tt8tt_metal15IGraphProcessor30track_allocate_dataflow_bufferERKNS0_12CoreRangeSetEmmbPKNS0_7IDeviceE"],
    &["_ZN2tt8tt_metal15IGraphProcessor25track_allocate_scratchpadERKNS0_12CoreRangeSetEmmPKNS0_7IDeviceE"],
    &["_ZN2tt8tt_metal15IGraphProcessor19track_deallocate_cbEPKNS0_7IDeviceE"],
    &["_ZN2tt8tt_metal15IGraphProcessor13track_programEPNS0_7ProgramEPKNS0_7IDeviceE"],
    &["_ZN2tt8tt_metal15IGraphProcessor20track_function_startESt17basic_string_viewIcSt11char_traitsIcEESt4spanINS0_15TrackedArgumentELm18446744073709551615EE"],
    &["_ZN2tt8tt_metal15IGraphProcessor18track_function_endEv"],
    &["_ZN2tt8tt_metal15IGraphProcessor18track_function_endERKSt3any"],
    &["_ZN2tt8tt_metal15IGraphProcessor13begin_captureENS1_7RunModeE"],
    &["_ZN2tt8tt_metal15IGraphProcessor11end_captureB5cxx11Ev"],
    &["_ZN2tt8tt_metal15IGraphProcessorD1Ev", "_ZN2tt8tt_metal15IGraphProcessorD2Ev"],
    &["_ZN2tt8tt_metal15IGraphProcessorD0Ev"],
];
/// The slots we replace.
const SLOT_ALLOCATE: usize = 1;
const SLOT_DEALLOCATE: usize = 2;
const SLOT_ALLOCATE_CB: usize = 3;
const SLOT_DEALLOCATE_CB: usize = 6;

pub const VTABLE: &str = "_ZTVN2tt8tt_metal15IGraphProcessorE";
pub const MESH_DEVICE_VTABLE: &str = "_ZTVN2tt8tt_metal11distributed10MeshDeviceE";
/// The exported members called (`nm -D` of the shipping library).
pub const GRAPH_TRACKER_INSTANCE: &str = "_ZN2tt8tt_metal12GraphTracker8instanceEv";
pub const PUSH_PROCESSOR: &str =
    "_ZN2tt8tt_metal12GraphTracker14push_processorERKSt10shared_ptrINS0_15IGraphProcessorEE";
pub const BUFFER_ADDRESS: &str = "_ZNK2tt8tt_metal6Buffer7addressEv";
pub const BUFFER_SIZE: &str = "_ZNK2tt8tt_metal6Buffer4sizeEv";
pub const BUFFER_TYPE: &str = "_ZNK2tt8tt_metal6Buffer11buffer_typeEv";
pub const BUFFER_DEVICE: &str = "_ZNK2tt8tt_metal6Buffer6deviceEv";
pub const MESH_DEVICE_ID: &str = "_ZNK2tt8tt_metal11distributed10MeshDevice2idEv";
pub const MESH_NUM_DEVICES: &str = "_ZNK2tt8tt_metal11distributed10MeshDevice11num_devicesEv";
pub const MESH_GET_DEVICE: &str = "_ZNK2tt8tt_metal11distributed10MeshDevice10get_deviceEmm";
/// A mesh's chips (read once per mesh of several chips; without it such a mesh is
/// reported as one device, its id).
pub const MESH_GET_DEVICES: &str = "_ZNK2tt8tt_metal11distributed10MeshDevice11get_devicesEv";
/// libstdc++'s sized `operator delete`, to give back the vector `get_devices` returns.
const OPERATOR_DELETE: &str = "_ZdlPvm";
/// Members read for a buffer's detail and its allocator's banks (without them the
/// buffers are still reported, without detail or address map).
pub const BUFFER_PAGE_SIZE: &str = "_ZNK2tt8tt_metal6Buffer9page_sizeEv";
pub const BUFFER_SIZE_PER_BANK: &str = "_ZNK2tt8tt_metal6Buffer21aligned_size_per_bankEv";
pub const BUFFER_LAYOUT: &str = "_ZNK2tt8tt_metal6Buffer13buffer_layoutEv";
pub const BUFFER_NUM_CORES: &str = "_ZNK2tt8tt_metal6Buffer9num_coresEv";
pub const BUFFER_ALLOCATOR: &str = "_ZNK2tt8tt_metal6Buffer9allocatorEv";
pub const ALLOCATOR_NUM_BANKS: &str =
    "_ZNK2tt8tt_metal9Allocator13get_num_banksERKNS0_10BufferTypeE";
pub const ALLOCATOR_BANK_SIZE: &str =
    "_ZNK2tt8tt_metal9Allocator13get_bank_sizeERKNS0_10BufferTypeE";
pub const ALLOCATOR_ALIGNMENT: &str = "_ZNK2tt8tt_metal9Allocator13get_alignmentENS0_10BufferTypeE";
pub const ALLOCATOR_BASE: &str =
    "_ZNK2tt8tt_metal9Allocator23get_base_allocator_addrERKNS0_10HalMemTypeE";
/// How many cores a `CoreRangeSet` covers (a circular buffer's).
pub const CORE_RANGE_SET_NUM_CORES: &str = "_ZNK2tt8tt_metal12CoreRangeSet9num_coresEv";
/// The detail members, in [`Detail`]'s order.
pub const DETAIL_MEMBERS: [&str; 9] = [
    BUFFER_PAGE_SIZE,
    BUFFER_SIZE_PER_BANK,
    BUFFER_LAYOUT,
    BUFFER_NUM_CORES,
    BUFFER_ALLOCATOR,
    ALLOCATOR_NUM_BANKS,
    ALLOCATOR_BANK_SIZE,
    ALLOCATOR_ALIGNMENT,
    ALLOCATOR_BASE,
];

/// What a buffer's detail and its allocator's banks are read with. Every member is
/// non-virtual and exported; none takes a lock while TT-Metal calls the processor
/// (`track_allocate` is called by `BufferImpl::allocate_impl` after the allocator has
/// returned, in 0.81.1: its only caller), and none throws for DRAM or L1.
struct Detail {
    page_size: extern "C" fn(*const c_void) -> u64,
    size_per_bank: extern "C" fn(*const c_void) -> u64,
    layout: extern "C" fn(*const c_void) -> i32,
    /// `std::optional<uint32_t>`: the value in the low 32 bits, set in bit 32.
    num_cores: extern "C" fn(*const c_void) -> u64,
    allocator: extern "C" fn(*const c_void) -> *const c_void,
    num_banks: extern "C" fn(*const c_void, *const i32) -> u32,
    bank_size: extern "C" fn(*const c_void, *const i32) -> u64,
    alignment: extern "C" fn(*const c_void, i32) -> u32,
    /// `HalMemType`: L1 0, DRAM 1.
    base: extern "C" fn(*const c_void, *const u8) -> u64,
}

/// What the callbacks call, found once.
struct Api {
    address: extern "C" fn(*const c_void) -> u32,
    size: extern "C" fn(*const c_void) -> u64,
    buffer_type: extern "C" fn(*const c_void) -> i32,
    device: extern "C" fn(*const c_void) -> *const c_void,
    /// The slot of `IDevice::id()` in a device's virtual table.
    id_slot: usize,
    /// A MeshDevice's virtual table pointer (its table's address point).
    mesh_vptr: usize,
    num_devices: extern "C" fn(*const c_void) -> usize,
    get_device: extern "C" fn(*const c_void, usize, usize) -> *const c_void,
    /// `MeshDevice::get_devices() const`: its vector returned through the first argument.
    get_devices: Option<unsafe extern "C" fn(*mut mesh::DeviceVec, *const c_void)>,
    delete: Option<unsafe extern "C" fn(*mut c_void, usize)>,
    detail: Option<Detail>,
    /// `CoreRangeSet::num_cores() const`, if exported.
    num_cores_of: Option<extern "C" fn(*const c_void) -> u32>,
}

/// Per chip, the buffer types whose banks were sent (one bit per type).
static BANKS_SENT: [std::sync::atomic::AtomicU8; crate::shm_layout::MAX_DEVICES] =
    [const { std::sync::atomic::AtomicU8::new(0) }; crate::shm_layout::MAX_DEVICES];

/// A hooked buffer's id: its address with its type above it (a DRAM and an L1 buffer
/// may have the same address).
fn buffer_key(ty: u8, address: u32) -> u64 {
    u64::from(ty) << 32 | u64::from(address)
}

/// Sends where `buffer` lies in its banks and, the first time for its chip and type,
/// the banks themselves (DRAM and L1: the types whose base the allocator says).
fn send_detail(d: &Detail, buffer: *const c_void, chip: i32, ty: u8, address: u32) {
    let cores = (d.num_cores)(buffer);
    let detail = BufferDetail {
        struct_size: crate::shm_layout::BUFFER_DETAIL_V1_SIZE,
        address,
        page_size: (d.page_size)(buffer),
        size_per_bank: (d.size_per_bank)(buffer),
        layout: (d.layout)(buffer) as u32,
        num_cores: if cores >> 32 & 1 == 1 {
            cores as u32
        } else {
            0
        },
    };
    super::record_buffer_detail(chip, buffer_key(ty, address), &detail);
    let Some(sent) = usize::try_from(chip).ok().and_then(|c| BANKS_SENT.get(c)) else {
        return;
    };
    let mem: u8 = match BufferType::from_u8(ty) {
        Some(BufferType::L1) => 0,
        Some(BufferType::Dram) => 1,
        _ => return,
    };
    // A load first: once sent, every later buffer reads the line, never writes it.
    use std::sync::atomic::Ordering::Relaxed;
    if sent.load(Relaxed) & (1 << ty) != 0 || sent.fetch_or(1 << ty, Relaxed) & (1 << ty) != 0 {
        return;
    }
    let alloc = (d.allocator)(buffer);
    if alloc.is_null() {
        return;
    }
    let t = i32::from(ty);
    let dram = BufferType::Dram as i32;
    let geometry = BankGeometry {
        struct_size: crate::shm_layout::BANK_GEOMETRY_V1_SIZE,
        num_banks: (d.num_banks)(alloc, &t),
        bank_size: (d.bank_size)(alloc, &t),
        base_address: (d.base)(alloc, &mem),
        page_alignment: (d.alignment)(alloc, t),
        // Observed in 0.81.1 (Wormhole and Blackhole, checked against the allocator's
        // own statistics by the tests): each range is rounded to the larger of the
        // DRAM alignment and the type's own.
        block_alignment: (d.alignment)(alloc, dram).max((d.alignment)(alloc, t)),
    };
    super::record_bank_geometry(
        chip,
        BufferType::from_u8(ty).unwrap_or(BufferType::Dram),
        &geometry,
    );
}

static API: OnceLock<Api> = OnceLock::new();

/// The device id of `dev` (an `IDevice*`), through its own virtual `id()`.
///
/// # Safety
/// `dev` is a live TT-Metal device whose virtual table has `id()` at `slot`.
unsafe fn device_id(dev: *const c_void, slot: usize) -> i32 {
    if dev.is_null() {
        return 0;
    }
    // SAFETY: the caller's contract: dev's first word is its vtable pointer, and slot
    // `slot` of it is `int id() const`.
    unsafe {
        let vt = *(dev as *const *const usize);
        let f: extern "C" fn(*const c_void) -> i32 = std::mem::transmute(*vt.add(slot));
        f(dev)
    }
}

extern "C" fn on_allocate(_this: *mut c_void, buffer: *const c_void) {
    let Some(api) = API.get() else { return };
    if buffer.is_null() {
        return;
    }
    let ty = (api.buffer_type)(buffer);
    let Ok(ty) = u8::try_from(ty) else { return };
    let dev = (api.device)(buffer);
    // SAFETY: dev is the buffer's device, a MeshDevice or Device whose id() slot was
    // found at install time.
    let chips = unsafe { mesh::chips_of(dev, api) };
    let address = (api.address)(buffer);
    let size = (api.size)(buffer);
    let key = buffer_key(ty, address);
    for chip in chips.iter() {
        super::record(EventKind::Alloc, ty, chip, size, key);
        if let Some(d) = &api.detail {
            send_detail(d, buffer, chip, ty, address);
        }
        if let Some((mesh_id, n)) = chips.mesh {
            let member = MeshMember { mesh_id, chips: n };
            super::record_event(member.to_event(chip, key));
        }
    }
}

extern "C" fn on_nothing(_this: *mut c_void, _buffer: *const c_void) {}

/// `track_allocate_cb(const CoreRangeSet&, uint64_t addr, uint64_t size, bool
/// is_globally_allocated, const IDevice*)`: a circular buffer of `size` bytes on each
/// core of the set, at `addr` in L1. Reported as a CB of all its cores' bytes (as
/// buffers count every bank's) and where it lies.
extern "C" fn on_allocate_cb(
    _this: *mut c_void,
    cores: *const c_void,
    addr: u64,
    size: u64,
    global: bool,
    dev: *const c_void,
) {
    let Some(api) = API.get() else { return };
    // SAFETY: dev is the program's device, a MeshDevice or Device whose id() slot was
    // found at install time.
    let chips = unsafe { mesh::chips_of(dev, api) };
    let n = match api.num_cores_of {
        Some(f) if !cores.is_null() => f(cores),
        _ => 0,
    };
    let place = crate::shm_layout::CbPlace {
        address: addr,
        size_per_core: size,
        cores: n,
        global,
    };
    for chip in chips.iter() {
        super::record(
            EventKind::CbAlloc,
            0,
            chip,
            size.saturating_mul(u64::from(n.max(1))),
            addr,
        );
        super::record_event(place.to_event(chip));
    }
}

/// `track_deallocate_cb(const IDevice*)`: every circular buffer of the device freed.
extern "C" fn on_deallocate_cb(_this: *mut c_void, dev: *const c_void) {
    let Some(api) = API.get() else { return };
    // SAFETY: as in on_allocate_cb.
    for chip in unsafe { mesh::chips_of(dev, api) }.iter() {
        super::record(EventKind::CbReleaseAll, 0, chip, 0, 0);
    }
}

extern "C" fn on_deallocate(_this: *mut c_void, buffer: *const c_void) {
    let Some(api) = API.get() else { return };
    if buffer.is_null() {
        return;
    }
    let Ok(ty) = u8::try_from((api.buffer_type)(buffer)) else {
        return;
    };
    let dev = (api.device)(buffer);
    let key = buffer_key(ty, (api.address)(buffer));
    // SAFETY: as in on_allocate.
    for chip in unsafe { mesh::chips_of(dev, api) }.iter() {
        super::record(EventKind::Free, 0, chip, 0, key);
    }
}

/// The control block of our processor's `shared_ptr` (libstdc++'s `_Sp_counted_base`:
/// its vtable, then the use and weak counts). The counts start so high that they never
/// reach zero: nothing is ever disposed, so its members are never called.
#[repr(C)]
struct ControlBlock {
    vtable: *const usize,
    use_count: i32,
    weak_count: i32,
}

extern "C" fn never(_this: *mut c_void) -> *mut c_void {
    std::ptr::null_mut()
}

/// A `std::shared_ptr<IGraphProcessor>` as libstdc++ lays it out.
#[repr(C)]
struct SharedPtr {
    ptr: *const c_void,
    control: *const ControlBlock,
}

fn sym(handle: *mut c_void, name: &str) -> Result<*mut c_void, String> {
    let c = std::ffi::CString::new(name).map_err(|e| e.to_string())?;
    // SAFETY: handle is a dlopen handle; c is NUL-terminated.
    let p = unsafe { libc::dlsym(handle, c.as_ptr()) };
    if p.is_null() {
        Err(format!("{name} not found"))
    } else {
        Ok(p)
    }
}

/// Whether the library's processor table is the one [`SLOTS`] describes: each slot of
/// the table in memory holds the function its symbol names (from the library file's own
/// symbol table).
fn check_slots(
    vtable: *const usize,
    base: usize,
    values: &std::collections::HashMap<String, u64>,
) -> Result<(), String> {
    for (i, names) in SLOTS.iter().enumerate() {
        // SAFETY: the table has at least 2 + SLOTS.len() words: install checked its
        // symbol's size in the library file before calling.
        let slot = unsafe { *vtable.add(2 + i) };
        let ok = names.iter().any(|n| {
            values
                .get(*n)
                .is_some_and(|&v| base.wrapping_add(v as usize) == slot)
        });
        if !ok {
            return Err(format!(
                "slot {i} of IGraphProcessor's table is not {} (another TT-Metal version)",
                names[0]
            ));
        }
    }
    Ok(())
}

/// Whether a TT-Metal library file can be hooked: its processor table has the slots
/// [`SLOTS`] names, in that order (a slot the loader fills from a symbol is taken on
/// its symbol's word), and every member the hook calls is exported. `Ok` says what was
/// found; `Err` what does not match.
pub fn check_file(bytes: &[u8]) -> Result<String, String> {
    let values = crate::doctor::elf::symbol_values(bytes, &wanted_symbols())?;
    let vt = *values
        .get(VTABLE)
        .ok_or("no IGraphProcessor table (not a TT-Metal with GraphTracker)")?;
    let words = crate::doctor::elf::words_at(bytes, vt, 2 + SLOTS.len())
        .ok_or("its IGraphProcessor table cannot be read")?;
    let fills = crate::doctor::elf::fills_in(bytes, vt, 8 * (2 + SLOTS.len()) as u64);
    let mut relocated = 0;
    for (i, names) in SLOTS.iter().enumerate() {
        let at = vt + 8 * (2 + i) as u64;
        // What the loader writes there wins over the file's word.
        let w = match fills.get(&at) {
            Some(crate::doctor::elf::Fill::Symbol(n)) => {
                if !names.contains(&n.as_str()) {
                    return Err(format!(
                        "slot {i} of its IGraphProcessor table is {n}, not {} (another TT-Metal version: its processors are laid out otherwise)",
                        names[0]
                    ));
                }
                relocated += 1;
                continue;
            }
            Some(crate::doctor::elf::Fill::Base(a)) => *a,
            None => words[2 + i],
        };
        if !names.iter().any(|n| values.get(*n) == Some(&w)) {
            return Err(format!(
                "slot {i} of its IGraphProcessor table is not {} (another TT-Metal version: its processors are laid out otherwise)",
                names[0]
            ));
        }
    }
    let linkage = crate::doctor::elf::linkage(bytes)?;
    for m in [
        GRAPH_TRACKER_INSTANCE,
        PUSH_PROCESSOR,
        BUFFER_ADDRESS,
        BUFFER_SIZE,
        BUFFER_TYPE,
        BUFFER_DEVICE,
        MESH_DEVICE_ID,
        MESH_NUM_DEVICES,
        MESH_GET_DEVICE,
    ] {
        if !linkage.defined.contains(m) {
            return Err(format!("it does not export {m}"));
        }
    }
    let mut detail = match DETAIL_MEMBERS.iter().find(|m| !linkage.defined.contains(**m)) {
        None => "each buffer's page size, footprint per bank and layout, and its allocator's banks, are read too".to_string(),
        Some(m) => format!("it does not export {m}: buffers are reported without their detail or address map"),
    };
    detail.push_str(if linkage.defined.contains(MESH_GET_DEVICES) {
        "; a buffer of a mesh of several chips is reported on each chip"
    } else {
        "; it does not export MeshDevice::get_devices: a mesh of several chips is reported as one device"
    });
    Ok(format!(
        "its IGraphProcessor table has the {} slots tttrack knows, in order ({} filled at load from their symbols), and every member the hook calls is exported; {detail}",
        SLOTS.len(),
        relocated
    ))
}

/// Every name the check needs from the library file.
pub fn wanted_symbols() -> Vec<&'static str> {
    let mut v: Vec<&str> = SLOTS.iter().flat_map(|s| s.iter().copied()).collect();
    v.extend([VTABLE, MESH_DEVICE_VTABLE, MESH_DEVICE_ID]);
    v
}

/// Pushes our processor onto TT-Metal's graph tracker, on this thread, if
/// `libtt_metal.so` is loaded and is a version whose tables we know. `Ok(false)`: no
/// TT-Metal here.
pub fn install() -> Result<bool, String> {
    if PUSHER.get().is_some() {
        return Ok(true);
    }
    // SAFETY: dlopen with RTLD_NOLOAD only looks up an already loaded library (libc's
    // own dlopen: ours would come back here).
    let handle = unsafe {
        real_dlopen()(
            c"libtt_metal.so".as_ptr(),
            libc::RTLD_NOLOAD | libc::RTLD_LAZY,
        )
    };
    if handle.is_null() {
        return Ok(false);
    }
    let vtable = sym(handle, VTABLE)? as *const usize;
    // The library file, to read its symbol table, and where it is loaded.
    // SAFETY: dladdr fills info for an address inside a loaded object.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: as above; info lives through the call.
    if unsafe { libc::dladdr(vtable as *const c_void, &mut info) } == 0 || info.dli_fname.is_null()
    {
        return Err("cannot tell which file libtt_metal.so was loaded from".into());
    }
    // SAFETY: dli_fname is a NUL-terminated path owned by the loader.
    let path = unsafe { CStr::from_ptr(info.dli_fname as *const c_char) }
        .to_string_lossy()
        .into_owned();
    let base = info.dli_fbase as usize;
    let bytes = std::fs::read(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let symbols = crate::doctor::elf::symbols(&bytes, &wanted_symbols())
        .map_err(|e| format!("{path}: {e}"))?;
    // The tables are read only within the sizes the file gives them.
    let words_of = |name: &str| {
        symbols
            .get(name)
            .map_or(0, |&(_, size)| (size / 8) as usize)
    };
    if words_of(VTABLE) < 2 + SLOTS.len() {
        return Err("IGraphProcessor's table is shorter than the one tttrack knows".into());
    }
    let values = symbols.iter().map(|(n, &(v, _))| (n.clone(), v)).collect();
    check_slots(vtable, base, &values)?;
    // IDevice::id()'s slot: where MeshDevice's table holds MeshDevice::id.
    let mesh_vt = sym(handle, MESH_DEVICE_VTABLE)? as *const usize;
    let mesh_id = sym(handle, MESH_DEVICE_ID)? as usize;
    let id_slot = (2..words_of(MESH_DEVICE_VTABLE))
        // SAFETY: k stays within MeshDevice's table, whose size the file's symbol gives.
        .find(|&k| unsafe { *mesh_vt.add(k) } == mesh_id)
        .ok_or("MeshDevice::id is in no slot of MeshDevice's table")?;
    // SAFETY: the symbols are the exported members whose signatures the constants name.
    let api = unsafe {
        Api {
            address: std::mem::transmute::<*mut c_void, extern "C" fn(*const c_void) -> u32>(sym(
                handle,
                BUFFER_ADDRESS,
            )?),
            size: std::mem::transmute::<*mut c_void, extern "C" fn(*const c_void) -> u64>(sym(
                handle,
                BUFFER_SIZE,
            )?),
            buffer_type: std::mem::transmute::<*mut c_void, extern "C" fn(*const c_void) -> i32>(
                sym(handle, BUFFER_TYPE)?,
            ),
            device: std::mem::transmute::<*mut c_void, extern "C" fn(*const c_void) -> *const c_void>(
                sym(handle, BUFFER_DEVICE)?,
            ),
            id_slot: id_slot - 2,
            mesh_vptr: mesh_vt.add(2) as usize,
            num_devices: std::mem::transmute::<*mut c_void, extern "C" fn(*const c_void) -> usize>(
                sym(handle, MESH_NUM_DEVICES)?,
            ),
            get_device: std::mem::transmute::<
                *mut c_void,
                extern "C" fn(*const c_void, usize, usize) -> *const c_void,
            >(sym(handle, MESH_GET_DEVICE)?),
            get_devices: sym(handle, MESH_GET_DEVICES).ok().map(|f| {
                std::mem::transmute::<
                    *mut c_void,
                    unsafe extern "C" fn(*mut mesh::DeviceVec, *const c_void),
                >(f)
            }),
            delete: sym(libc::RTLD_DEFAULT, OPERATOR_DELETE).ok().map(|f| {
                std::mem::transmute::<*mut c_void, unsafe extern "C" fn(*mut c_void, usize)>(f)
            }),
            detail: detail_members(handle),
            num_cores_of: sym(handle, CORE_RANGE_SET_NUM_CORES).ok().map(|f| {
                std::mem::transmute::<*mut c_void, extern "C" fn(*const c_void) -> u32>(f)
            }),
        }
    };
    let instance = sym(handle, GRAPH_TRACKER_INSTANCE)?;
    let push = sym(handle, PUSH_PROCESSOR)?;
    let _ = API.set(api);
    // Our table: TT-Metal's base table (offset, type info, its do-nothing members),
    // with the buffer and circular-buffer members replaced. Leaked: it lives as long as the process.
    let mut table: Vec<usize> = (0..2 + SLOTS.len())
        // SAFETY: the table has these words (checked above).
        .map(|k| unsafe { *vtable.add(k) })
        .collect();
    // TTTRACK_METAL_HOOK=bare: a processor that does nothing (the benchmark's baseline:
    // what the hook's mechanism costs TT-Metal, without our work).
    let bare = std::env::var_os("TTTRACK_METAL_HOOK").is_some_and(|v| v == "bare");
    let (alloc, free) = if bare {
        (
            on_nothing as *const () as usize,
            on_nothing as *const () as usize,
        )
    } else {
        (
            on_allocate as *const () as usize,
            on_deallocate as *const () as usize,
        )
    };
    table[2 + SLOT_ALLOCATE] = alloc;
    table[2 + SLOT_DEALLOCATE] = free;
    if !bare {
        table[2 + SLOT_ALLOCATE_CB] = on_allocate_cb as *const () as usize;
        table[2 + SLOT_DEALLOCATE_CB] = on_deallocate_cb as *const () as usize;
    }
    let table: &'static [usize] = Box::leak(table.into_boxed_slice());
    let object: &'static usize = Box::leak(Box::new(table[2..].as_ptr() as usize));
    let never = never as *const () as usize;
    let cb_table: &'static [usize] =
        Box::leak(vec![0, 0, never, never, never, never, never, never].into_boxed_slice());
    let control: &'static ControlBlock = Box::leak(Box::new(ControlBlock {
        vtable: cb_table[2..].as_ptr(),
        use_count: 1 << 30,
        weak_count: 1 << 30,
    }));
    // SAFETY: the symbols are GraphTracker::instance() and push_processor(this, const
    // shared_ptr&), as their names say.
    let pusher = unsafe {
        Pusher {
            instance: std::mem::transmute::<*mut c_void, extern "C" fn() -> *mut c_void>(instance),
            push: std::mem::transmute::<*mut c_void, extern "C" fn(*mut c_void, *const SharedPtr)>(
                push,
            ),
            object: object as *const usize as usize,
            control: control as *const ControlBlock as usize,
        }
    };
    pusher.push_here();
    let _ = PUSHER.set(pusher);
    Ok(true)
}

/// The detail members, if the library exports every one.
fn detail_members(handle: *mut c_void) -> Option<Detail> {
    let f: Vec<*mut c_void> = DETAIL_MEMBERS
        .iter()
        .map(|n| sym(handle, n).ok())
        .collect::<Option<_>>()?;
    // SAFETY: each symbol is the exported member its constant names, with the
    // signature Detail gives it (`this` first; references as pointers; the enums as
    // their underlying integers; a std::optional<uint32_t> returned in one register).
    unsafe {
        use std::mem::transmute as t;
        Some(Detail {
            page_size: t::<*mut c_void, extern "C" fn(*const c_void) -> u64>(f[0]),
            size_per_bank: t::<*mut c_void, extern "C" fn(*const c_void) -> u64>(f[1]),
            layout: t::<*mut c_void, extern "C" fn(*const c_void) -> i32>(f[2]),
            num_cores: t::<*mut c_void, extern "C" fn(*const c_void) -> u64>(f[3]),
            allocator: t::<*mut c_void, extern "C" fn(*const c_void) -> *const c_void>(f[4]),
            num_banks: t::<*mut c_void, extern "C" fn(*const c_void, *const i32) -> u32>(f[5]),
            bank_size: t::<*mut c_void, extern "C" fn(*const c_void, *const i32) -> u64>(f[6]),
            alignment: t::<*mut c_void, extern "C" fn(*const c_void, i32) -> u32>(f[7]),
            base: t::<*mut c_void, extern "C" fn(*const c_void, *const u8) -> u64>(f[8]),
        })
    }
}

/// What it takes to push our processor on a thread: TT-Metal's list of processors is
/// per thread, so every thread that may allocate needs it pushed.
struct Pusher {
    instance: extern "C" fn() -> *mut c_void,
    push: extern "C" fn(*mut c_void, *const SharedPtr),
    object: usize,
    control: usize,
}

static PUSHER: OnceLock<Pusher> = OnceLock::new();

impl Pusher {
    /// Pushes our processor onto the calling thread's list.
    fn push_here(&self) {
        let sp = SharedPtr {
            ptr: self.object as *const c_void,
            control: self.control as *const ControlBlock,
        };
        // push_processor copies the shared_ptr: a count up on our control block, which
        // is never released.
        (self.push)((self.instance)(), &sp);
    }
}

/// A thread about to run: its start routine and argument, and whether to push.
struct Start {
    routine: extern "C" fn(*mut c_void) -> *mut c_void,
    arg: *mut c_void,
}

extern "C" fn start_thread(p: *mut c_void) -> *mut c_void {
    // SAFETY: p is the Box<Start> that pthread_create below made for this thread.
    let s = unsafe { Box::from_raw(p as *mut Start) };
    if let Some(pusher) = PUSHER.get() {
        pusher.push_here();
    }
    (s.routine)(s.arg)
}

type PthreadCreate = unsafe extern "C" fn(
    *mut libc::pthread_t,
    *const libc::pthread_attr_t,
    extern "C" fn(*mut c_void) -> *mut c_void,
    *mut c_void,
) -> i32;

/// `pthread_create`, as the process sees it while `libtttrack.so` is loaded: the real
/// one, and once TT-Metal's graph hook is in, every new thread has our processor pushed
/// before its own routine runs (TT-Metal's list is per thread). Until then, and in a
/// process with no TT-Metal, it only passes the call on.
///
/// # Safety
/// As `pthread_create`.
#[no_mangle]
pub unsafe extern "C" fn pthread_create(
    thread: *mut libc::pthread_t,
    attr: *const libc::pthread_attr_t,
    routine: extern "C" fn(*mut c_void) -> *mut c_void,
    arg: *mut c_void,
) -> i32 {
    static REAL: OnceLock<usize> = OnceLock::new();
    let real = *REAL.get_or_init(|| {
        // SAFETY: looking up the next definition of a libc function.
        unsafe { libc::dlsym(libc::RTLD_NEXT, c"pthread_create".as_ptr()) as usize }
    });
    if real == 0 {
        return libc::EAGAIN;
    }
    // SAFETY: real is libc's pthread_create.
    let real: PthreadCreate = unsafe { std::mem::transmute(real) };
    if PUSHER.get().is_none() {
        // SAFETY: the caller's arguments, passed on.
        return unsafe { real(thread, attr, routine, arg) };
    }
    let s = Box::into_raw(Box::new(Start { routine, arg }));
    // SAFETY: start_thread takes back the Box it is given.
    let r = unsafe { real(thread, attr, start_thread, s as *mut c_void) };
    if r != 0 {
        // SAFETY: the thread was not made: the Box is still ours.
        drop(unsafe { Box::from_raw(s) });
    }
    r
}

/// Runs when the library is loaded: with tracking on, in `libtttrack.so` itself (not in
/// a binary that links the crate), hooks a TT-Metal already in the process.
extern "C" fn at_load() {
    if std::env::var_os("TT_ALLOC_TRACKING_ENABLED").is_none_or(|v| v != "1") {
        return;
    }
    // SAFETY: dladdr on a function of ours.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: info lives through the call.
    let found = unsafe { libc::dladdr(at_load as *const c_void, &mut info) };
    if found == 0 || info.dli_fname.is_null() {
        return;
    }
    // SAFETY: a NUL-terminated path owned by the loader.
    let me = unsafe { CStr::from_ptr(info.dli_fname) }.to_string_lossy();
    if !me.ends_with("libtttrack.so") {
        return;
    }
    try_install();
}

#[used]
#[link_section = ".init_array"]
static AT_LOAD: extern "C" fn() = at_load;

type Dlopen = unsafe extern "C" fn(*const c_char, i32) -> *mut c_void;

/// libc's `dlopen` (the next definition after ours).
fn real_dlopen() -> Dlopen {
    static REAL: OnceLock<usize> = OnceLock::new();
    let real = *REAL.get_or_init(|| {
        // SAFETY: looking up the next definition of a libc function.
        unsafe { libc::dlsym(libc::RTLD_NEXT, c"dlopen".as_ptr()) as usize }
    });
    if real == 0 {
        return refuse_dlopen;
    }
    // SAFETY: real is libc's dlopen.
    unsafe { std::mem::transmute::<usize, Dlopen>(real) }
}

unsafe extern "C" fn refuse_dlopen(_: *const c_char, _: i32) -> *mut c_void {
    std::ptr::null_mut()
}

/// Whether this code runs in `libtttrack.so` itself (not in a binary linking the crate).
fn in_libtttrack() -> bool {
    static IN: OnceLock<bool> = OnceLock::new();
    *IN.get_or_init(|| {
        // SAFETY: dladdr on a function of ours; info lives through the call.
        let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let found = unsafe { libc::dladdr(in_libtttrack as *const c_void, &mut info) };
        // SAFETY: a NUL-terminated path owned by the loader.
        found != 0
            && !info.dli_fname.is_null()
            && unsafe { CStr::from_ptr(info.dli_fname) }
                .to_string_lossy()
                .ends_with("libtttrack.so")
    })
}

/// `dlopen`, as the process sees it while `libtttrack.so` is loaded: libc's, and then,
/// with tracking on, a TT-Metal that came in with this call (as `import ttnn` brings
/// one) is hooked on the calling thread and every thread made after.
///
/// # Safety
/// As `dlopen`.
#[no_mangle]
pub unsafe extern "C" fn dlopen(file: *const c_char, mode: i32) -> *mut c_void {
    // SAFETY: the caller's arguments, passed on.
    let h = unsafe { real_dlopen()(file, mode) };
    if !h.is_null() && PUSHER.get().is_none() && in_libtttrack() && super::enabled() {
        try_install();
    }
    h
}

/// Hooks a TT-Metal in the process, saying once on stderr if it cannot.
fn try_install() {
    static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let why = match std::panic::catch_unwind(install) {
        Ok(Ok(_)) => return,
        Ok(Err(why)) => why,
        Err(_) => "an internal error".to_string(),
    };
    if !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
        eprintln!(
            "tttrack: TT-Metal's buffers are not tracked one by one ({why}); TT-Metal's own counters still are"
        );
    }
}
