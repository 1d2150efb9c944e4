//! The counters page: one file (`counters` in the tracking directory, mode 0644) that
//! the aggregator alone writes and every reader maps read-only.
//!
//! Records are plain `#[repr(C)]` `Pod` values stored as u64 words through atomics,
//! under sequence locks: the aggregator makes the sequence odd, writes, makes it even;
//! a reader copies and retries if the sequence moved. No data race, whatever the
//! timing. The main block (status, devices, processes) and the history ring have a
//! lock each, so a reader that wants only the current figures copies little.

mod view;

use crate::shm_layout::{DeviceInfo, PagePresence};
pub use crate::sys::{get_str, put_str};
use bytemuck::{Pod, Zeroable};
use core::mem::{offset_of, size_of};
use core::sync::atomic::AtomicU64;
pub use view::{CountersReader, PageError, PageView, Snapshot};

/// 4: rows are physical chips; a process's devices carry their logical id and chip.
/// 5: a process's source (lanes, socket, TT-Metal's own region) and the region's figures
/// beside the lanes' for a process that reports both ways.
pub const COUNTERS_LAYOUT_VERSION: u32 = 5;
pub const MAX_PAGE_DEVICES: usize = 64;
pub const MAX_PAGE_PROCESSES: usize = 1024;
/// Devices a process record can carry figures for.
pub const MAX_PROCESS_DEVICES: usize = 32;
/// History samples (one per second): 16 minutes.
pub const HISTORY_LEN: usize = 960;

/// Figure categories, in this order everywhere (page, JSON, metrics).
pub const CAT_DRAM: usize = 0;
pub const CAT_L1: usize = 1;
pub const CAT_SYSTEM_MEMORY: usize = 2;
pub const CAT_L1_SMALL: usize = 3;
pub const CAT_TRACE: usize = 4;
pub const CAT_CB: usize = 5;
pub const CAT_KERNEL: usize = 6;
pub const CAT_KERNEL_APP: usize = 7;
pub const CAT_KERNEL_FABRIC: usize = 8;
pub const CAT_KERNEL_DISPATCH: usize = 9;
pub const NUM_CATS: usize = 10;
/// Every category, in its index's order: the name JSON, metrics, recordings and the
/// Python package use (`tttrack.TYPES`, through the extension), and the name tables
/// show. The one place a category is named.
pub const CATEGORY_TABLE: [(&str, &str); NUM_CATS] = [
    ("dram", "DRAM"),
    ("l1", "L1"),
    ("system_memory", "SYSTEM_MEMORY"),
    ("l1_small", "L1_SMALL"),
    ("trace", "TRACE"),
    ("cb", "CB"),
    ("kernel", "Kernel"),
    ("kernel_application", "application"),
    ("kernel_fabric", "fabric"),
    ("kernel_dispatch", "dispatch"),
];

/// The categories' names for scripts ([`CATEGORY_TABLE`]'s first column).
pub const CAT_NAMES: [&str; NUM_CATS] = {
    let mut n = [""; NUM_CATS];
    let mut i = 0;
    while i < NUM_CATS {
        n[i] = CATEGORY_TABLE[i].0;
        i += 1;
    }
    n
};

/// The categories' names in tables ([`CATEGORY_TABLE`]'s second column).
pub const CAT_DISPLAY: [&str; NUM_CATS] = {
    let mut n = [""; NUM_CATS];
    let mut i = 0;
    while i < NUM_CATS {
        n[i] = CATEGORY_TABLE[i].1;
        i += 1;
    }
    n
};

/// The category a buffer of type `t` counts in.
pub const fn cat_of_buffer(t: crate::shm_layout::BufferType) -> usize {
    use crate::shm_layout::BufferType;
    match t {
        BufferType::Dram => CAT_DRAM,
        BufferType::L1 => CAT_L1,
        BufferType::SystemMemory => CAT_SYSTEM_MEMORY,
        BufferType::L1Small => CAT_L1_SMALL,
        BufferType::Trace => CAT_TRACE,
    }
}

/// Every category with its name, in order.
pub fn categories() -> impl Iterator<Item = (usize, &'static str)> {
    CAT_NAMES.iter().copied().enumerate()
}

/// What lives in L1: buffers, L1_SMALL, circular buffers and kernels (the kernel
/// subtypes are inside the kernel total).
pub const L1_RESIDENT_CATS: [usize; 4] = [CAT_L1, CAT_L1_SMALL, CAT_CB, CAT_KERNEL];

/// Device memory in a set of per-category figures: DRAM, everything L1-resident
/// (buffers, L1_SMALL, CBs, kernels) and TRACE; not SYSTEM_MEMORY (host memory), and
/// the kernel subtypes are already in the kernel total.
pub fn device_bytes(used: &[u64; NUM_CATS]) -> u64 {
    DEVICE_CATS.iter().map(|&c| used[c]).sum()
}

/// The categories of device memory, in the order the history ring and the original
/// protocol's query answer keep them: DRAM, L1, L1_SMALL, TRACE, CB, kernels.
pub const DEVICE_CATS: [usize; 6] = [
    CAT_DRAM,
    CAT_L1,
    CAT_L1_SMALL,
    CAT_TRACE,
    CAT_CB,
    CAT_KERNEL,
];

/// Used bytes, high-water mark and live count of one category.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Pod, Zeroable, serde::Serialize, serde::Deserialize,
)]
pub struct Figure {
    pub used: u64,
    pub peak: u64,
    pub count: u64,
}

/// Aggregator-wide status.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct AggregatorStatus {
    pub pid: u32,
    pub num_devices: u32,
    pub start_unix_ns: u64,
    pub heartbeat_unix_ns: u64,
    pub events_applied: u64,
    /// Events that never reached the accounting (dropped by producers, gaps skipped).
    pub events_lost: u64,
    pub unknown_frees: u64,
    /// Events rejected by validation (bad kind, type, device or size).
    pub invalid_events: u64,
    pub segments_attached: u64,
    pub segments_rejected: u64,
    pub processes_tracked: u32,
    /// Processes beyond MAX_PAGE_PROCESSES (tracked, not listed here).
    pub process_overflow: u32,
    pub num_processes: u32,
    pub _pad: u32,
    /// 1 when this aggregator started from the journal of an earlier one, else 0.
    pub recovered_from_journal: u64,
    /// Processes that ended while holding device memory (the leak lines).
    pub exits_holding_memory: u64,
    /// Bytes those processes still held when they ended.
    pub leaked_bytes: u64,
    pub _reserved: [u64; 2],
}

/// Telemetry of one device. `valid` has bit `TEL_*` set for each field read.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Telemetry {
    pub valid: u64,
    pub sampled_unix_ns: u64,
    pub asic_temp_mc: i64,
    pub temp_max_mc: i64,
    pub vcore_mv: u64,
    pub vcore_max_mv: u64,
    pub current_ma: u64,
    pub current_max_ma: u64,
    pub power_uw: u64,
    pub power_max_uw: u64,
    pub fan_rpm: u64,
    pub aiclk_mhz: u64,
    pub axiclk_mhz: u64,
    pub arcclk_mhz: u64,
    pub heartbeat: u64,
    pub therm_trip_count: u64,
    /// Consecutive samples in which the firmware heartbeat did not advance.
    pub heartbeat_stalled_samples: u64,
    pub pcie_link_speed_milli_gts: u64,
    pub pcie_link_width: u64,
    /// Firmware versions, packed by [`pack_version`] (0: not reported).
    pub arc_fw_ver: u64,
    pub eth_fw_ver: u64,
    pub m3bl_fw_ver: u64,
    pub m3app_fw_ver: u64,
    pub ttflash_ver: u64,
    /// The fastest link the card and its slot can train (`TEL_PCIE_MAX`).
    pub pcie_max_link_speed_milli_gts: u64,
    pub pcie_max_link_width: u64,
    /// Bytes over PCIe since the aggregator began sampling, host to device and device
    /// to host, and their rates over the last sampling interval (`TEL_PCIE_TRAFFIC`;
    /// the rates are 0 in the first sample).
    pub pcie_h2d_bytes: u64,
    pub pcie_d2h_bytes: u64,
    pub pcie_h2d_bytes_per_s: u64,
    pub pcie_d2h_bytes_per_s: u64,
}

/// Readings in the units people and tools are given them (the page keeps the driver's
/// integer units); `None` where the driver did not give the reading. Every view
/// converts through these.
impl Telemetry {
    /// Whether the reading(s) of `bit` (a `TEL_` flag) were given.
    pub fn has(&self, bit: u64) -> bool {
        self.valid & bit != 0
    }
    fn reading(&self, bit: u64, v: f64) -> Option<f64> {
        self.has(bit).then_some(v)
    }
    /// ASIC temperature, degrees Celsius.
    pub fn temp_c(&self) -> Option<f64> {
        self.reading(TEL_TEMP, self.asic_temp_mc as f64 / 1000.0)
    }
    pub fn temp_max_c(&self) -> Option<f64> {
        self.reading(TEL_TEMP_MAX, self.temp_max_mc as f64 / 1000.0)
    }
    /// Board power, watts.
    pub fn power_w(&self) -> Option<f64> {
        self.reading(TEL_POWER, self.power_uw as f64 / 1e6)
    }
    pub fn power_max_w(&self) -> Option<f64> {
        self.reading(TEL_POWER_MAX, self.power_max_uw as f64 / 1e6)
    }
    /// Core current, amperes.
    pub fn current_a(&self) -> Option<f64> {
        self.reading(TEL_CURRENT, self.current_ma as f64 / 1000.0)
    }
    pub fn current_max_a(&self) -> Option<f64> {
        self.reading(TEL_CURRENT_MAX, self.current_max_ma as f64 / 1000.0)
    }
    /// PCIe link speed, GT/s.
    pub fn pcie_speed_gts(&self) -> Option<f64> {
        self.reading(TEL_PCIE, self.pcie_link_speed_milli_gts as f64 / 1000.0)
    }
    pub fn pcie_max_speed_gts(&self) -> Option<f64> {
        self.reading(
            TEL_PCIE_MAX,
            self.pcie_max_link_speed_milli_gts as f64 / 1000.0,
        )
    }
    /// The AI clock, hertz.
    pub fn aiclk_hz(&self) -> Option<f64> {
        self.reading(TEL_AICLK, self.aiclk_mhz as f64 * 1e6)
    }

    /// The per-component firmware versions with their names, in display order.
    pub fn firmware(&self) -> [(&'static str, u64); 5] {
        [
            ("arc", self.arc_fw_ver),
            ("eth", self.eth_fw_ver),
            ("m3bl", self.m3bl_fw_ver),
            ("m3app", self.m3app_fw_ver),
            ("ttflash", self.ttflash_ver),
        ]
    }
}

/// Packs a firmware version "A.B.C.D" (or "A.B.C") into a u64, 16 bits a component
/// (a missing fourth component is 0xFFFF); `None` for anything else.
pub fn pack_version(s: &str) -> Option<u64> {
    let parts: Vec<u16> = s
        .split('.')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let v = match parts[..] {
        [a, b, c, d] => (a as u64) << 48 | (b as u64) << 32 | (c as u64) << 16 | d as u64,
        [a, b, c] => (a as u64) << 48 | (b as u64) << 32 | (c as u64) << 16 | 0xFFFF,
        _ => return None,
    };
    (v != 0).then_some(v)
}

/// The text of a version packed by [`pack_version`]; `None` for 0 (not reported).
pub fn version_text(v: u64) -> Option<String> {
    if v == 0 {
        return None;
    }
    let c = |s: u32| (v >> s) & 0xFFFF;
    Some(if c(0) == 0xFFFF {
        format!("{}.{}.{}", c(48), c(32), c(16))
    } else {
        format!("{}.{}.{}.{}", c(48), c(32), c(16), c(0))
    })
}

/// Bits of `Telemetry::valid`.
pub const TEL_TEMP: u64 = 1 << 0;
pub const TEL_TEMP_MAX: u64 = 1 << 1;
pub const TEL_VCORE: u64 = 1 << 2;
pub const TEL_VCORE_MAX: u64 = 1 << 3;
pub const TEL_CURRENT: u64 = 1 << 4;
pub const TEL_CURRENT_MAX: u64 = 1 << 5;
pub const TEL_POWER: u64 = 1 << 6;
pub const TEL_POWER_MAX: u64 = 1 << 7;
pub const TEL_FAN: u64 = 1 << 8;
pub const TEL_AICLK: u64 = 1 << 9;
pub const TEL_AXICLK: u64 = 1 << 10;
pub const TEL_ARCCLK: u64 = 1 << 11;
pub const TEL_HEARTBEAT: u64 = 1 << 12;
pub const TEL_THERM_TRIP: u64 = 1 << 13;
pub const TEL_PCIE: u64 = 1 << 14;
pub const TEL_PCIE_MAX: u64 = 1 << 15;
pub const TEL_PCIE_TRAFFIC: u64 = 1 << 16;
/// A heartbeat unchanged for this many samples is shown as stalled (firmware hung?).
pub const HEARTBEAT_STALL_SAMPLES: u64 = 3;

/// Flags of a device record.
pub const DEV_PRESENT: u32 = 1;
pub const DEV_REMOTE: u32 = 2;
/// A process described it with `tttrack_device_info`.
pub const DEV_HAS_INFO: u32 = 4;
/// Found in sysfs (a local PCIe device).
pub const DEV_LOCAL: u32 = 8;
/// Was seen in sysfs earlier and has vanished.
pub const DEV_GONE: u32 = 16;

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct DeviceRecord {
    pub id: u32,
    pub flags: u32,
    /// Architecture name, NUL-padded (`wormhole_b0`, `blackhole`, ...).
    pub arch: [u8; 16],
    /// Board name, NUL-padded (`n150`, `n300`, `p150a`, ...).
    pub board: [u8; 16],
    pub serial: [u8; 24],
    pub pci_bdf: [u8; 16],
    pub dram_total: u64,
    pub l1_total: u64,
    pub info: DeviceInfo,
    pub figures: [Figure; NUM_CATS],
    pub telemetry: Telemetry,
    pub fw_bundle: [u8; 24],
    /// High-water mark of everything L1-resident together (buffers, L1_SMALL, CBs,
    /// kernels): what an out-of-memory in L1 is about.
    pub l1_resident_peak: u64,
    /// The chip's ASIC id (`tt_asic_id`, or as a process reported it), 0 if unknown.
    pub asic_id: u64,
    /// A remote chip only one process could name: that process's pid (else 0).
    pub owner_pid: u32,
    /// A remote chip: the row of the local chip it is reached through, -1 if unknown.
    pub via: i32,
    pub _reserved: u64,
}

/// Flags of a process record.
pub const PROC_EXACT: u32 = 1;
pub const PROC_ALIVE: u32 = 2;
/// Holds a device (driver's pid list) but reports nothing.
pub const PROC_UNTRACKED: u32 = 4;
/// Uses more devices than MAX_PROCESS_DEVICES (the rest are summed in no record).
pub const PROC_DEVICE_OVERFLOW: u32 = 8;
/// Reports through the compatibility socket (else, without `PROC_SOURCE_METAL`, through
/// lanes).
pub const PROC_SOURCE_SOCKET: u32 = 16;
/// Known from TT-Metal's own region (`tt_device_<N>_memory`): counters only, no buffers.
pub const PROC_SOURCE_METAL: u32 = 32;
/// A region's slot whose process is gone (exited, or its pid reused): bytes the region
/// still counts, in no live figure.
pub const PROC_LEFT_BEHIND: u32 = 64;
/// Reports through lanes and also has a slot in TT-Metal's region: counted once, from the
/// lanes; `region_used` holds what the region says, for comparison.
pub const PROC_ALSO_IN_REGION: u32 = 128;

/// Where a process's figures come from, as views name it.
pub fn source_name(flags: u32) -> &'static str {
    if flags & PROC_SOURCE_METAL != 0 {
        "tt-metal"
    } else if flags & PROC_SOURCE_SOCKET != 0 {
        "socket"
    } else if flags & PROC_UNTRACKED != 0 {
        "none"
    } else {
        "lanes"
    }
}

/// How a process's device was placed on its chip (`ProcessDevice::placement`): the id
/// as reported (a host with no cards), inferred from `TT_VISIBLE_DEVICES`, reported by
/// the process, or not placeable (a chip of that process alone).
pub const PLACED_AS_REPORTED: u8 = 0;
pub const PLACED_INFERRED: u8 = 1;
pub const PLACED_REPORTED: u8 = 2;
pub const PLACED_UNPLACED: u8 = 3;
/// A process that reports nothing, seen in the card's driver list (no logical id).
pub const PLACED_HOLDER: u8 = 4;
/// The chip TT-Metal's region is named after (its ASIC id), no logical id.
pub const PLACED_REGION: u8 = 5;
/// Their names, by value (JSON, metrics).
pub const PLACEMENT_NAMES: [&str; 6] = [
    "as_reported",
    "inferred",
    "reported",
    "unplaced",
    "holder",
    "region",
];

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct ProcessDevice {
    /// The process's own (logical) id of the device.
    pub device: i32,
    /// The row (`DeviceRecord::id`) of the chip it is.
    pub chip: u16,
    /// `PLACED_*`.
    pub placement: u8,
    pub _pad: u8,
    pub used: [u64; NUM_CATS],
    pub peak: [u64; NUM_CATS],
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct ProcessRecord {
    pub pid: u32,
    pub flags: u32,
    pub uid: u32,
    pub num_devices: u32,
    pub start_time: u64,
    pub comm: [u8; 16],
    pub first_seen_unix_ns: u64,
    pub events_applied: u64,
    pub events_lost: u64,
    pub buffers: u64,
    /// With `PROC_ALSO_IN_REGION`: what TT-Metal's region says this process holds (all its
    /// chips), in [`DEVICE_CATS`] order; with `PROC_LEFT_BEHIND`: that slot's bytes.
    pub region_used: [u64; HIST_FIELDS],
    /// The N of the region file (`tt_device_<N>_memory`) of a `PROC_LEFT_BEHIND` slot.
    pub region_chip: u64,
    pub devices: [ProcessDevice; MAX_PROCESS_DEVICES],
}

/// Bytes of a process record holding `num_devices` devices (clamped to the maximum).
fn process_record_bytes(num_devices: u32) -> usize {
    offset_of!(ProcessRecord, devices)
        + (num_devices as usize).min(MAX_PROCESS_DEVICES) * size_of::<ProcessDevice>()
}

/// Per-device figures kept in history: those of [`DEVICE_CATS`], in its order.
pub const HIST_FIELDS: usize = DEVICE_CATS.len();

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
pub struct HistorySample {
    pub unix_secs: u64,
    pub used: [[u64; HIST_FIELDS]; MAX_PAGE_DEVICES],
    /// Millidegrees (i32::MIN: unknown) and milliwatts (u32::MAX: unknown).
    pub temp_mc: [i32; MAX_PAGE_DEVICES],
    pub power_mw: [u32; MAX_PAGE_DEVICES],
}

impl HistorySample {
    /// Bytes of category `cat` (one of [`DEVICE_CATS`]) used on device `dev` (0 for any
    /// other category or device).
    pub fn used_of(&self, dev: usize, cat: usize) -> u64 {
        match (
            self.used.get(dev),
            DEVICE_CATS.iter().position(|&c| c == cat),
        ) {
            (Some(u), Some(i)) => u[i],
            _ => 0,
        }
    }
}

/// Header after the presence block.
#[repr(C)]
pub struct PageHeader {
    pub presence: PagePresence,
    pub main_seq: AtomicU64,
    pub history_seq: AtomicU64,
    /// Number of samples written to history since start (the newest is at
    /// `(history_written - 1) % HISTORY_LEN`).
    pub history_written: AtomicU64,
    pub _pad: [AtomicU64; 5],
}

const fn words<T>() -> usize {
    size_of::<T>() / 8
}

pub const STATUS_OFFSET: usize = size_of::<PageHeader>();
pub const DEVICES_OFFSET: usize = STATUS_OFFSET + size_of::<AggregatorStatus>();
pub const PROCESSES_OFFSET: usize = DEVICES_OFFSET + MAX_PAGE_DEVICES * size_of::<DeviceRecord>();
pub const HISTORY_OFFSET: usize =
    PROCESSES_OFFSET + MAX_PAGE_PROCESSES * size_of::<ProcessRecord>();
pub const PAGE_SIZE: usize = HISTORY_OFFSET + HISTORY_LEN * size_of::<HistorySample>();

crate::shared_layout! {
    /// Every size, offset and constant of the page, for the test that checks
    /// `cabi/tttrack_shm.h`.
    pub fn layout_table;
    struct Figure = 24 => {
        used = 0, peak = 8, count = 16,
    }
    struct AggregatorStatus = 128 => {
        pid = 0, num_devices = 4, start_unix_ns = 8, heartbeat_unix_ns = 16,
        events_applied = 24, events_lost = 32, unknown_frees = 40, invalid_events = 48,
        segments_attached = 56, segments_rejected = 64, processes_tracked = 72,
        process_overflow = 76, num_processes = 80, recovered_from_journal = 88,
        exits_holding_memory = 96, leaked_bytes = 104,
    }
    struct Telemetry = 240 => {
        valid = 0, sampled_unix_ns = 8, asic_temp_mc = 16, temp_max_mc = 24, vcore_mv = 32,
        vcore_max_mv = 40, current_ma = 48, current_max_ma = 56, power_uw = 64,
        power_max_uw = 72, fan_rpm = 80, aiclk_mhz = 88, axiclk_mhz = 96, arcclk_mhz = 104,
        heartbeat = 112, therm_trip_count = 120, heartbeat_stalled_samples = 128,
        pcie_link_speed_milli_gts = 136, pcie_link_width = 144, arc_fw_ver = 152,
        eth_fw_ver = 160, m3bl_fw_ver = 168, m3app_fw_ver = 176, ttflash_ver = 184,
        pcie_max_link_speed_milli_gts = 192, pcie_max_link_width = 200,
        pcie_h2d_bytes = 208, pcie_d2h_bytes = 216, pcie_h2d_bytes_per_s = 224,
        pcie_d2h_bytes_per_s = 232,
    }
    struct DeviceRecord = 696 => {
        id = 0, flags = 4, arch = 8, board = 24, serial = 40, pci_bdf = 64, dram_total = 80,
        l1_total = 88, info = 96, figures = 160, telemetry = 400, fw_bundle = 640,
        l1_resident_peak = 664, asic_id = 672, owner_pid = 680, via = 684,
    }
    struct ProcessDevice = 168 => {
        device = 0, chip = 4, placement = 6, used = 8, peak = 88,
    }
    struct ProcessRecord = 128 + 32 * 168 => {
        pid = 0, flags = 4, uid = 8, num_devices = 12, start_time = 16, comm = 24,
        first_seen_unix_ns = 40, events_applied = 48, events_lost = 56, buffers = 64,
        region_used = 72, region_chip = 120, devices = 128,
    }
    struct HistorySample = 8 + 64 * 48 + 64 * 8 => {
        unix_secs = 0, used = 8, temp_mc = 3080, power_mw = 3336,
    }
    struct PageHeader = 128 => {
        presence = 0, main_seq = 64, history_seq = 72, history_written = 80,
    }
    consts {
        PAGE_SIZE, STATUS_OFFSET, DEVICES_OFFSET, PROCESSES_OFFSET, HISTORY_OFFSET,
        COUNTERS_LAYOUT_VERSION, PLACED_AS_REPORTED, PLACED_INFERRED, PLACED_REPORTED,
        PLACED_UNPLACED, PLACED_HOLDER, PLACED_REGION, PROC_SOURCE_SOCKET, PROC_SOURCE_METAL,
        PROC_LEFT_BEHIND, PROC_ALSO_IN_REGION,
    }
}

const _: () = {
    assert!(STATUS_OFFSET.is_multiple_of(8) && DEVICES_OFFSET.is_multiple_of(8));
    assert!(PROCESSES_OFFSET.is_multiple_of(8) && HISTORY_OFFSET.is_multiple_of(8));
};
