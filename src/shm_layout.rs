//! Every structure that crosses a process boundary, defined once.
//!
//! Two kinds of file live in the tracking directory: one **segment** per tracked
//! process (written by that process's producer threads, drained by the aggregator) and
//! the aggregator's **counters page** (see [`crate::counters_page`]). All fields that
//! another process may touch are atomics, so no read or write of shared memory is ever a
//! data race in Rust's model, whatever the other side does. Nothing here is a pointer:
//! positions are `u64` counters that only grow, masked to find a slot.
//!
//! `cabi/tttrack_shm.h` describes the same layout for C; `tests/c_abi.rs` compiles it and
//! compares every size and offset with the ones asserted here.

use core::mem::size_of;
use core::sync::atomic::{AtomicU32, AtomicU64};

/// `b"TTTRSEG1"` read as a little-endian u64: the first 8 bytes of every segment file.
pub const SEGMENT_MAGIC: u64 = u64::from_le_bytes(*b"TTTRSEG1");
/// Bumped whenever anything in a segment's layout changes meaning or place.
pub const SEGMENT_LAYOUT_VERSION: u32 = 3;

/// Lanes per segment: the number of threads of one process that can report at once.
pub const NUM_LANES: usize = 64;
/// Event slots per lane (a power of two).
pub const LANE_CAPACITY: usize = 1 << 15;
/// Devices a process can describe with `tttrack_device_info`.
pub const MAX_DEVICES: usize = 64;

/// Size of the segment header region (the header itself, then padding).
pub const SEGMENT_HEADER_REGION: usize = 512;
/// Offset of the device-information slots.
pub const DEVICE_SLOTS_OFFSET: usize = SEGMENT_HEADER_REGION;
/// Offset of lane 0; later lanes follow every [`LANE_STRIDE`] bytes.
pub const LANES_OFFSET: usize = 12288;
/// Bytes from one lane to the next: its header, then its ring of events.
pub const LANE_STRIDE: usize = size_of::<LaneHeader>() + LANE_CAPACITY * size_of::<Event>();
/// Total size of a segment file (sparse: only pages that are written use memory).
pub const SEGMENT_SIZE: usize = LANES_OFFSET + NUM_LANES * LANE_STRIDE;

/// What an event reports. Values are part of the layout.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    Alloc = 1,
    Free = 2,
    CbAlloc = 3,
    CbFree = 4,
    KernelLoad = 5,
    KernelUnload = 6,
    /// The process wrote device `device`'s slot in the segment's device table.
    DeviceInfo = 7,
    /// The process wrote which physical chip its device `device` is
    /// ([`ChipIdentity`], in the same slot).
    DeviceIdentity = 8,
    /// Extension (version 1), after a buffer's `Alloc`: its footprint per bank and its
    /// layout ([`BufferDetail::to_events`] says which field goes where).
    BufferShape = 9,
    /// Extension (version 1), after a buffer's `Alloc`: its address in each bank and
    /// its page size.
    BufferPlace = 10,
    /// Extension (version 1): the allocator's banks of one buffer type on device
    /// `device` ([`BankGeometry::to_event`]).
    BankGeometry = 11,
    /// Extension (version 1), after a `CbAlloc`: where that circular buffer lies in
    /// L1 and on how many cores ([`CbPlace::to_event`]).
    CbPlace = 12,
    /// Extension (version 1): every circular buffer of device `device` freed at once
    /// (a program's, as TT-Metal releases them).
    CbReleaseAll = 13,
    /// Extension (version 1), after a buffer's `Alloc` on one chip of a mesh: the mesh
    /// buffer it is that chip's part of ([`MeshMember::to_event`]).
    MeshMember = 14,
}

impl EventKind {
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Alloc,
            2 => Self::Free,
            3 => Self::CbAlloc,
            4 => Self::CbFree,
            5 => Self::KernelLoad,
            6 => Self::KernelUnload,
            7 => Self::DeviceInfo,
            8 => Self::DeviceIdentity,
            9 => Self::BufferShape,
            10 => Self::BufferPlace,
            11 => Self::BankGeometry,
            12 => Self::CbPlace,
            13 => Self::CbReleaseAll,
            14 => Self::MeshMember,
            _ => return None,
        })
    }
}

/// TT-Metal's `BufferType` values.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BufferType {
    Dram = 0,
    L1 = 1,
    SystemMemory = 2,
    L1Small = 3,
    Trace = 4,
}

impl BufferType {
    pub const ALL: [BufferType; 5] = [
        Self::Dram,
        Self::L1,
        Self::SystemMemory,
        Self::L1Small,
        Self::Trace,
    ];
    pub fn from_u8(v: u8) -> Option<Self> {
        Self::ALL.get(v as usize).copied()
    }
    /// TT-Metal's name of the type, as every view shows it (its category's display
    /// name: [`crate::counters_page::CATEGORY_TABLE`]).
    pub fn name(self) -> &'static str {
        crate::counters_page::CAT_DISPLAY[crate::counters_page::cat_of_buffer(self)]
    }
}

/// Kernel types as TT-Metal reports them.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KernelType {
    Application = 0,
    Fabric = 1,
    Dispatch = 2,
}

impl KernelType {
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => Self::Application,
            1 => Self::Fabric,
            2 => Self::Dispatch,
            _ => return None,
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            Self::Application => "Application",
            Self::Fabric => "Fabric",
            Self::Dispatch => "Dispatch",
        }
    }
}

/// One event record: 32 bytes, four u64 words in a lane slot.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Event {
    /// Per-process sequence number: the order in which events happened across threads.
    pub seq: u64,
    /// An [`EventKind`] value.
    pub kind: u8,
    /// [`BufferType`] for buffers, [`KernelType`] for kernels, 0 otherwise.
    pub subtype: u8,
    pub _reserved: u16,
    pub device: i32,
    /// Bytes (0 for FREE and DEVICE_INFO).
    pub size: u64,
    /// Buffer address, CB id or kernel id.
    pub id: u64,
}

impl Event {
    pub fn to_words(self) -> [u64; 4] {
        bytemuck::cast(self)
    }
    pub fn from_words(w: [u64; 4]) -> Self {
        bytemuck::cast(w)
    }
}

/// A lane slot as it sits in shared memory.
#[repr(C)]
pub struct Slot {
    pub words: [AtomicU64; 4],
}

/// What a TT-Metal process knows about one device (`tttrack_device_info_t` in C).
#[repr(C)]
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    bytemuck::Pod,
    bytemuck::Zeroable,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct DeviceInfo {
    /// 0 unknown, 1 Grayskull, 2 Wormhole B0, 3 Blackhole, 4 Quasar.
    pub arch: u32,
    /// Non-zero for a chip reached over Ethernet (no PCIe function of its own).
    pub is_remote: u32,
    pub num_tensix_cores: u32,
    pub num_dram_channels: u32,
    pub l1_size_per_core: u64,
    pub dram_size_per_channel: u64,
    pub total_dram_bytes: u64,
    pub total_l1_bytes: u64,
    pub l1_small_size: u64,
    pub trace_region_size: u64,
}

/// Which physical chip one of a process's logical devices is (`tttrack_chip_identity_t`
/// in C): what TT-Metal knows of it. Versioned by `struct_size`: a later version only
/// appends fields, and a caller passing an older, shorter struct still works.
#[repr(C)]
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    bytemuck::Pod,
    bytemuck::Zeroable,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct ChipIdentity {
    /// `sizeof(tttrack_chip_identity_t)` as the caller compiled it.
    pub struct_size: u32,
    /// Non-zero for a chip reached over Ethernet (no PCIe function of its own).
    pub is_remote: u32,
    /// A local chip's `/dev/tenstorrent` index, -1 if unknown.
    pub pcie_index: i32,
    /// A remote chip: the `/dev/tenstorrent` index of the local chip it is reached
    /// through, -1 if unknown.
    pub via_pcie_index: i32,
    /// The board's id (the driver's `tt_serial`), 0 if unknown.
    pub board_id: u64,
    /// The chip's unique id (the driver's `tt_asic_id`), 0 if unknown.
    pub asic_id: u64,
    /// A local chip's PCI address, `DDDD:BB:DD.F`, NUL-padded; empty if unknown.
    pub pci_address: [u8; 16],
}

/// Bytes of the first version of [`ChipIdentity`]: the least a caller may pass.
pub const CHIP_IDENTITY_V1_SIZE: u32 = 48;

/// TT-Metal's `TensorMemoryLayout`: how a buffer's pages are spread over the banks.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BufferLayout {
    Interleaved = 0,
    SingleBank = 1,
    HeightSharded = 2,
    WidthSharded = 3,
    BlockSharded = 4,
    NdSharded = 5,
}

impl BufferLayout {
    pub const ALL: [BufferLayout; 6] = [
        Self::Interleaved,
        Self::SingleBank,
        Self::HeightSharded,
        Self::WidthSharded,
        Self::BlockSharded,
        Self::NdSharded,
    ];
    pub fn from_u8(v: u8) -> Option<Self> {
        Self::ALL.get(v as usize).copied()
    }
    /// The name every view and script sees.
    pub fn name(self) -> &'static str {
        match self {
            Self::Interleaved => "interleaved",
            Self::SingleBank => "single_bank",
            Self::HeightSharded => "height_sharded",
            Self::WidthSharded => "width_sharded",
            Self::BlockSharded => "block_sharded",
            Self::NdSharded => "nd_sharded",
        }
    }
}

/// Where a buffer lies in its banks and how (`tttrack_buffer_detail_t` in C), reported
/// after its `Alloc`. Versioned by `struct_size`, as [`ChipIdentity`].
#[repr(C)]
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    bytemuck::Pod,
    bytemuck::Zeroable,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct BufferDetail {
    /// `sizeof(tttrack_buffer_detail_t)` as the caller compiled it.
    pub struct_size: u32,
    /// The buffer's address, the same in every bank it uses.
    pub address: u32,
    pub page_size: u64,
    /// Bytes each bank holds of it (TT-Metal's `aligned_size_per_bank()`).
    pub size_per_bank: u64,
    /// A [`BufferLayout`] value.
    pub layout: u32,
    /// Cores a sharded buffer spans; 0 for an interleaved one.
    pub num_cores: u32,
}

/// Bytes of the first version of [`BufferDetail`].
pub const BUFFER_DETAIL_V1_SIZE: u32 = 32;

/// The low 40 bits of a packed size field: a size (at most 1 TiB, the accounting's
/// limit for one event); the high 24 bits carry a count.
pub const PACKED_SIZE_BITS: u32 = 40;
const PACKED_SIZE_MASK: u64 = (1 << PACKED_SIZE_BITS) - 1;

/// `size` in the low bits, `count` (saturated to 24 bits) in the high bits.
fn pack_size(size: u64, count: u32) -> u64 {
    size.min(PACKED_SIZE_MASK) | u64::from(count.min(0xff_ffff)) << PACKED_SIZE_BITS
}

impl BufferDetail {
    /// The two lane events that carry it for buffer `id` of device `device`:
    /// [`EventKind::BufferShape`] (`subtype` the layout, `size` the footprint per bank
    /// in its low 40 bits and the cores in its high 24) and [`EventKind::BufferPlace`]
    /// (`size` the address in its low 32 bits and the page size, saturated to 32
    /// bits, in its high 32). The spare field is the journal's, not the producer's.
    pub fn to_events(&self, device: i32, id: u64) -> [Event; 2] {
        let layout = u8::try_from(self.layout).unwrap_or(u8::MAX);
        let page = u32::try_from(self.page_size).unwrap_or(u32::MAX);
        [
            Event {
                seq: 0,
                kind: EventKind::BufferShape as u8,
                subtype: layout,
                _reserved: 0,
                device,
                size: pack_size(self.size_per_bank, self.num_cores),
                id,
            },
            Event {
                seq: 0,
                kind: EventKind::BufferPlace as u8,
                subtype: 0,
                _reserved: 0,
                device,
                size: u64::from(self.address) | u64::from(page) << 32,
                id,
            },
        ]
    }

    /// Takes what `ev` (one of the two events of [`Self::to_events`]) carries.
    pub fn take(&mut self, ev: &Event) {
        self.struct_size = BUFFER_DETAIL_V1_SIZE;
        if ev.kind == EventKind::BufferShape as u8 {
            self.layout = u32::from(ev.subtype);
            self.size_per_bank = ev.size & PACKED_SIZE_MASK;
            self.num_cores = (ev.size >> PACKED_SIZE_BITS) as u32;
        } else if ev.kind == EventKind::BufferPlace as u8 {
            self.address = ev.size as u32;
            self.page_size = ev.size >> 32;
        }
    }
}

/// Where a circular buffer lies: its address in L1 (its id), its bytes on each core,
/// the cores it is on, and whether it is globally allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct CbPlace {
    pub address: u64,
    pub size_per_core: u64,
    pub cores: u32,
    pub global: bool,
}

impl CbPlace {
    /// Its lane event: `id` the address, `size` the bytes per core in its low 40 bits
    /// and the cores in its high 24, `subtype` 1 if globally allocated.
    pub fn to_event(&self, device: i32) -> Event {
        Event {
            seq: 0,
            kind: EventKind::CbPlace as u8,
            subtype: self.global as u8,
            _reserved: 0,
            device,
            size: pack_size(self.size_per_core, self.cores),
            id: self.address,
        }
    }

    pub fn from_event(ev: &Event) -> Self {
        CbPlace {
            address: ev.id,
            size_per_core: ev.size & PACKED_SIZE_MASK,
            cores: (ev.size >> PACKED_SIZE_BITS) as u32,
            global: ev.subtype != 0,
        }
    }
}

/// Which mesh a buffer is part of. TT-Metal allocates a buffer of a mesh of several
/// chips once, at the same address on every chip; each chip's part is reported as a
/// buffer of that chip, with this beside it so views can group the parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct MeshMember {
    /// TT-Metal's id of the mesh (`MeshDevice::id()`).
    pub mesh_id: u32,
    /// How many chips (of this host) the mesh has.
    pub chips: u32,
}

impl MeshMember {
    /// Its lane event for buffer `id` of chip `device`: `size` the mesh id in its low
    /// 32 bits and the chips in its high 32.
    pub fn to_event(&self, device: i32, id: u64) -> Event {
        Event {
            seq: 0,
            kind: EventKind::MeshMember as u8,
            subtype: 0,
            _reserved: 0,
            device,
            size: u64::from(self.mesh_id) | u64::from(self.chips) << 32,
            id,
        }
    }

    pub fn from_event(ev: &Event) -> Self {
        MeshMember {
            mesh_id: ev.size as u32,
            chips: (ev.size >> 32) as u32,
        }
    }
}

/// The allocator's banks of one buffer type on a device (`tttrack_bank_geometry_t` in
/// C): what the address map of that type is drawn against. Banks move in lockstep: a
/// buffer takes the same range in each bank it uses.
#[repr(C)]
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    bytemuck::Pod,
    bytemuck::Zeroable,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct BankGeometry {
    /// `sizeof(tttrack_bank_geometry_t)` as the caller compiled it.
    pub struct_size: u32,
    pub num_banks: u32,
    /// Allocatable bytes of one bank.
    pub bank_size: u64,
    /// The lowest allocatable address of a bank.
    pub base_address: u64,
    /// What each page is rounded up to in a bank.
    pub page_alignment: u32,
    /// What each buffer's range in a bank is rounded up to.
    pub block_alignment: u32,
}

/// Bytes of the first version of [`BankGeometry`].
pub const BANK_GEOMETRY_V1_SIZE: u32 = 32;

impl BankGeometry {
    /// The lane event that carries it for buffer type `btype` of device `device`
    /// (`size`: the bank size in its low 40 bits, the banks in its high 24; `id`: the
    /// base in its low 32 bits, the page and block alignments in the next 16 each), or
    /// `None` if a field does not fit.
    pub fn to_event(&self, device: i32, btype: BufferType) -> Option<Event> {
        let base = u32::try_from(self.base_address).ok()?;
        let page = u16::try_from(self.page_alignment).ok()?;
        let block = u16::try_from(self.block_alignment).ok()?;
        if self.bank_size > PACKED_SIZE_MASK || self.num_banks > 0xff_ffff {
            return None;
        }
        Some(Event {
            seq: 0,
            kind: EventKind::BankGeometry as u8,
            subtype: btype as u8,
            _reserved: 0,
            device,
            size: pack_size(self.bank_size, self.num_banks),
            id: u64::from(base) | u64::from(page) << 32 | u64::from(block) << 48,
        })
    }

    /// What an [`EventKind::BankGeometry`] event says: the buffer type and the banks.
    pub fn from_event(ev: &Event) -> Option<(BufferType, Self)> {
        let btype = BufferType::from_u8(ev.subtype)?;
        Some((
            btype,
            Self {
                struct_size: BANK_GEOMETRY_V1_SIZE,
                num_banks: (ev.size >> PACKED_SIZE_BITS) as u32,
                bank_size: ev.size & PACKED_SIZE_MASK,
                base_address: ev.id & 0xffff_ffff,
                page_alignment: (ev.id >> 32 & 0xffff) as u32,
                block_alignment: (ev.id >> 48) as u32,
            },
        ))
    }
}

/// A device-information slot in a segment: a sequence lock over the [`DeviceInfo`]
/// words and the [`ChipIdentity`] words. `seq` is 0 when never written, odd while being
/// written; a writer changes one of the two parts, keeping the other.
#[repr(C)]
pub struct DeviceInfoSlot {
    pub seq: AtomicU32,
    pub _pad: AtomicU32,
    pub words: [AtomicU64; 8],
    pub identity: [AtomicU64; 6],
    pub _pad2: AtomicU64,
}

/// The header at offset 0 of every segment file.
///
/// Line 0 and 1: identity, written once before the file gets its final name.
/// Line 2: the per-process sequence counter (written on every event).
/// Line 3: counters the producer writes rarely.
/// Line 4: written by the aggregator (read by producers only when a lane is full).
#[repr(C)]
pub struct SegmentHeader {
    pub magic: AtomicU64,
    pub version: AtomicU32,
    pub header_size: AtomicU32,
    pub segment_size: AtomicU64,
    pub pid: AtomicU32,
    pub uid: AtomicU32,
    /// Process start time in clock ticks since boot (`/proc/PID/stat` field 22).
    pub start_time: AtomicU64,
    pub num_lanes: AtomicU32,
    pub lane_capacity: AtomicU32,
    pub lanes_offset: AtomicU64,
    pub lane_stride: AtomicU64,
    /// Process name (`comm`), NUL-padded.
    pub comm: [AtomicU64; 2],
    pub created_unix_ns: AtomicU64,
    /// Bit i: lane i is owned by a thread (claimed with an atomic OR, given back with an
    /// atomic AND).
    pub lanes_claimed: AtomicU64,
    /// Bit i: lane i's pages are allocated (set once after `fallocate`, never cleared).
    /// Nobody touches a lane whose bit is clear: on a full tmpfs even reading a page
    /// that was never allocated raises SIGBUS.
    pub lanes_reserved: AtomicU64,
    pub _pad1: [AtomicU64; 3],
    /// Next per-process sequence number.
    pub seq: AtomicU64,
    pub _pad2: [AtomicU64; 7],
    /// Events dropped because every lane was taken.
    pub no_lane_dropped: AtomicU64,
    pub _pad3: [AtomicU64; 7],
    /// Id of the thread draining this segment (the aggregator's main thread: its pid),
    /// 0 if none yet. Producers read `/proc/ID/stat` to tell a busy consumer from a
    /// stopped one.
    pub consumer_pid: AtomicU32,
    pub _pad4: AtomicU32,
    /// CLOCK_MONOTONIC nanoseconds of the aggregator's last drain pass.
    pub consumer_heartbeat_ns: AtomicU64,
    pub _pad5: [AtomicU64; 6],
    /// Line 5 and 6, written once with the identity: the process's
    /// `TT_VISIBLE_DEVICES` when the segment was made ([`VISIBLE_UNSET`],
    /// [`VISIBLE_SET`] or [`VISIBLE_TOO_LONG`]), and its value, NUL-padded.
    pub visible_devices_state: AtomicU32,
    pub visible_devices_len: AtomicU32,
    pub visible_devices: [AtomicU64; 15],
}

/// `TT_VISIBLE_DEVICES` was not set: every card is visible.
pub const VISIBLE_UNSET: u32 = 0;
/// It was set; its value is in `visible_devices`.
pub const VISIBLE_SET: u32 = 1;
/// It was set to more than `visible_devices` holds: which cards are visible is unknown.
pub const VISIBLE_TOO_LONG: u32 = 2;
/// Bytes of `SegmentHeader::visible_devices`.
pub const VISIBLE_DEVICES_BYTES: usize = 15 * 8;

/// The header of one lane; its ring of [`LANE_CAPACITY`] slots follows.
///
/// # A lane's positions
/// Every position counts slots written to the lane since it was created (the slot is
/// the position modulo [`LANE_CAPACITY`]), and the project uses these four names only:
/// - **head** (this header, the producer's): every slot below it is published;
/// - **read** (the aggregator's, private: `MappedSegment::read_pos`): every slot below
///   it has been copied out;
/// - **applied** (the aggregator's, journaled: `ProcState::lane_applied`): every event
///   below it is in the accounting and in the journal;
/// - **released** (the `tail` word below, written by the aggregator after the journal
///   is durable: `MappedSegment::release`): every slot below it may be reused.
///
/// Always released <= applied <= read <= head, and head - released <= [`LANE_CAPACITY`].
#[repr(C)]
pub struct LaneHeader {
    /// The head position: slots below it are published.
    pub head: AtomicU64,
    /// Events this lane's threads could not deliver.
    pub dropped: AtomicU64,
    /// [`LANE_CLAIMED`] while a thread owns the lane, else [`LANE_FREE`] (informative:
    /// ownership itself is the header's `lanes_claimed` bit).
    pub state: AtomicU32,
    /// Kernel thread id of the current owner.
    pub owner_tid: AtomicU32,
    pub claims: AtomicU64,
    pub _pad1: [AtomicU64; 4],
    /// The released position: slots below it may be overwritten.
    pub tail: AtomicU64,
    pub _pad2: [AtomicU64; 7],
}

pub const LANE_FREE: u32 = 0;
pub const LANE_CLAIMED: u32 = 1;

/// `b"TTTRCNT1"`: the first 8 bytes of the aggregator's counters page.
pub const COUNTERS_MAGIC: u64 = u64::from_le_bytes(*b"TTTRCNT1");
/// File name of the counters page in the tracking directory.
pub const COUNTERS_FILE_NAME: &str = "counters";

/// The first 64 bytes of the counters page: who publishes it and whether it is alive.
/// Producers read it (with `pread`, never a mapping) when a lane is full, to learn
/// whether an aggregator is running before it has attached to their segment.
#[repr(C)]
pub struct PagePresence {
    pub magic: AtomicU64,
    pub version: AtomicU32,
    pub aggregator_pid: AtomicU32,
    /// CLOCK_MONOTONIC nanoseconds, refreshed by the aggregator at least every 100 ms.
    pub heartbeat_ns: AtomicU64,
    pub started_unix_ns: AtomicU64,
    pub page_size: AtomicU64,
    pub _pad: [AtomicU64; 3],
}

/// A Unix datagram socket in the tracking directory: a producer whose lane is full
/// sends it a byte to wake the aggregator at once instead of waiting for its next pass.
pub const WAKE_SOCKET_NAME: &str = "wake.sock";

/// Name of a segment file for a process.
pub fn segment_file_name(pid: u32, start_time: u64) -> String {
    format!("seg.{pid}.{start_time}")
}

/// Parses a segment file name back into (pid, start time).
pub fn parse_segment_file_name(name: &str) -> Option<(u32, u64)> {
    let rest = name.strip_prefix("seg.")?;
    let (pid, st) = rest.split_once('.')?;
    let pid: u32 = canonical_decimal(pid)?;
    let st: u64 = canonical_decimal(st)?;
    if pid == 0 {
        return None;
    }
    Some((pid, st))
}

/// A number written as the producer writes it: decimal digits only, no sign, no
/// leading zero. `seg.07318.1` and `seg.+7318.1` are not aliases of `seg.7318.1`.
pub fn canonical_decimal<T: core::str::FromStr>(s: &str) -> Option<T> {
    let ok =
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    if ok {
        s.parse().ok()
    } else {
        None
    }
}

/// Declares the size and field offsets of shared structures, and shared constants,
/// once: emits the compile-time assertions and a function that lists every one of them
/// by name (`sizeof T`, `T.field`, `const NAME`), which the test of the C header
/// compares with what the C compiler says.
#[macro_export]
macro_rules! shared_layout {
    (
        $(#[$doc:meta])*
        pub fn $name:ident;
        $( struct $t:ident = $size:expr => { $( $f:ident = $off:expr ),* $(,)? } )*
        consts { $( $c:ident ),* $(,)? }
    ) => {
        const _: () = {
            $(
                assert!(core::mem::size_of::<$t>() == $size);
                $( assert!(core::mem::offset_of!($t, $f) == $off); )*
            )*
        };
        $(#[$doc])*
        pub fn $name() -> Vec<(&'static str, usize)> {
            let mut v = Vec::new();
            $(
                v.push((concat!("sizeof ", stringify!($t)), core::mem::size_of::<$t>()));
                $( v.push((
                    concat!(stringify!($t), ".", stringify!($f)),
                    core::mem::offset_of!($t, $f),
                )); )*
            )*
            $( v.push((concat!("const ", stringify!($c)), $c as usize)); )*
            v
        }
    };
}

// ---- The layout: any change here is a layout change (bump the version). ----
shared_layout! {
    /// Every size, offset and constant of a segment, for the test that checks
    /// `cabi/tttrack_shm.h`.
    pub fn layout_table;
    struct Slot = 32 => {
        words = 0,
    }
    struct Event = 32 => {
        seq = 0, kind = 8, subtype = 9, device = 12, size = 16, id = 24,
    }
    struct DeviceInfo = 64 => {
        arch = 0, is_remote = 4, num_tensix_cores = 8, num_dram_channels = 12,
        l1_size_per_core = 16, dram_size_per_channel = 24, total_dram_bytes = 32,
        total_l1_bytes = 40, l1_small_size = 48, trace_region_size = 56,
    }
    struct ChipIdentity = 48 => {
        struct_size = 0, is_remote = 4, pcie_index = 8, via_pcie_index = 12, board_id = 16,
        asic_id = 24, pci_address = 32,
    }
    struct BufferDetail = 32 => {
        struct_size = 0, address = 4, page_size = 8, size_per_bank = 16, layout = 24,
        num_cores = 28,
    }
    struct BankGeometry = 32 => {
        struct_size = 0, num_banks = 4, bank_size = 8, base_address = 16,
        page_alignment = 24, block_alignment = 28,
    }
    struct DeviceInfoSlot = 128 => {
        seq = 0, words = 8, identity = 72,
    }
    struct SegmentHeader = 448 => {
        magic = 0, version = 8, header_size = 12, segment_size = 16, pid = 24, uid = 28,
        start_time = 32, num_lanes = 40, lane_capacity = 44, lanes_offset = 48,
        lane_stride = 56, comm = 64, created_unix_ns = 80, lanes_claimed = 88,
        lanes_reserved = 96, seq = 128, no_lane_dropped = 192, consumer_pid = 256,
        consumer_heartbeat_ns = 264, visible_devices_state = 320, visible_devices_len = 324,
        visible_devices = 328,
    }
    struct LaneHeader = 128 => {
        head = 0, dropped = 8, state = 16, owner_tid = 20, claims = 24, tail = 64,
    }
    struct PagePresence = 64 => {
        magic = 0, version = 8, aggregator_pid = 12, heartbeat_ns = 16,
        started_unix_ns = 24, page_size = 32,
    }
    consts {
        SEGMENT_MAGIC, COUNTERS_MAGIC, NUM_LANES, LANE_CAPACITY, LANES_OFFSET, LANE_STRIDE,
        MAX_DEVICES, DEVICE_SLOTS_OFFSET, SEGMENT_LAYOUT_VERSION, CHIP_IDENTITY_V1_SIZE,
        BUFFER_DETAIL_V1_SIZE, BANK_GEOMETRY_V1_SIZE,
        VISIBLE_UNSET, VISIBLE_SET, VISIBLE_TOO_LONG, VISIBLE_DEVICES_BYTES,
    }
}

// What the table cannot say.
const _: () = {
    assert!(LANE_CAPACITY.is_power_of_two());
    // The atomic view of an event (not in the C header, which has only the event).
    assert!(size_of::<Slot>() == size_of::<Event>());
    assert!(size_of::<ChipIdentity>() == CHIP_IDENTITY_V1_SIZE as usize);
    assert!(NUM_LANES <= 64);
    assert!(size_of::<SegmentHeader>() <= SEGMENT_HEADER_REGION);
    assert!(DEVICE_SLOTS_OFFSET + MAX_DEVICES * size_of::<DeviceInfoSlot>() <= LANES_OFFSET);
    assert!(LANE_STRIDE.is_multiple_of(64));
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_are_parsed_strictly() {
        assert_eq!(
            parse_segment_file_name("seg.7318.111449"),
            Some((7318, 111449))
        );
        for alias in [
            "seg.07318.111449",
            "seg.+7318.111449",
            "seg.7318.0111449",
            "seg.7318.+111449",
            "seg. 7318.111449",
            "seg.7318.111449 ",
            "seg.7318.",
            "seg..111449",
            "seg.0.5",
            "seg.4294967296.1",
        ] {
            assert_eq!(parse_segment_file_name(alias), None, "{alias}");
        }
        assert_eq!(canonical_decimal::<u64>("0"), Some(0));
        assert_eq!(canonical_decimal::<u64>("00"), None);
    }
}
