//! TT-Metal's own per-chip memory statistics (`/dev/shm/tt_device_<N>_memory`): the
//! layouts of every version TT-Metal has written, and a parser that turns a copy of a
//! region's bytes into figures. No I/O here: the aggregator's reader
//! (`aggregator/metal_regions.rs`) and `tt-smi`'s own look bring the bytes.
//!
//! A region is written by any process of its owner (and by anyone at all when it is
//! mode 0666), with relaxed atomics and no lock: nothing in it is trusted. The parser
//! accepts exactly the sizes and versions below and clamps every figure; whether a slot
//! belongs to a live process is the reader's question, not the parser's.
//!
//! Versions (facts from TT-Metal's sources and from running the shipping library):
//! v1 (9,280 bytes, with kernel counters), v2 and v3 (8,576 bytes), v4 (8,576 bytes, a
//! ready flag at the end that must read `REDY`).

use crate::counters_page::{
    CAT_CB, CAT_DRAM, CAT_KERNEL, CAT_L1, CAT_L1_SMALL, CAT_TRACE, NUM_CATS,
};
use bytemuck::{Pod, Zeroable};

pub mod reader;
use core::mem::{offset_of, size_of};

/// The file name's prefix and suffix: `tt_device_<N>_memory`, N a decimal u64.
pub const NAME_PREFIX: &str = "tt_device_";
pub const NAME_SUFFIX: &str = "_memory";
/// Where TT-Metal's `shm_open` puts them.
pub const DEFAULT_DIR: &str = "/dev/shm";
/// The directory to read: `$TTTRACK_METAL_SHM_DIR`, else [`DEFAULT_DIR`].
pub fn dir_from_env() -> std::path::PathBuf {
    std::env::var_os("TTTRACK_METAL_SHM_DIR")
        .filter(|v| !v.is_empty())
        .map(Into::into)
        .unwrap_or_else(|| DEFAULT_DIR.into())
}

/// Per-process slots in every version.
pub const MAX_SLOTS: usize = 64;
/// Per-chip entries in every version.
pub const MAX_CHIP_ENTRIES: usize = 16;
/// Bytes of a slot's process name.
pub const NAME_LEN: usize = 64;
/// v4's ready flag, `REDY` as a little-endian u32.
pub const V4_READY: u32 = 0x5245_4459;
/// Timestamps below this are nanoseconds of a monotonic clock (since boot), not of the
/// Unix epoch (v1 and early v2 used steady_clock; 1e17 ns is 1973).
pub const MONOTONIC_BELOW: u64 = 100_000_000_000_000_000;
/// No figure is believed above this (1 PiB): a chip has gigabytes.
pub const MAX_FIGURE: u64 = 1 << 50;

/// The header every version shares (up to and including the CB total).
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct RegionHeader {
    pub version: u32,
    pub num_active_processes: u32,
    pub last_update_ns: u64,
    pub reference_count: u32,
    pub _pad0: u32,
    pub board_serial: u64,
    pub asic_id: u64,
    pub device_id: u32,
    pub _pad1: u32,
    pub total_dram: u64,
    pub total_l1: u64,
    pub total_l1_small: u64,
    pub total_trace: u64,
    pub total_cb: u64,
}

/// A chip entry of v2-v4.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct ChipEntry {
    pub chip_id: u32,
    pub is_remote: u32,
    pub dram: u64,
    pub l1: u64,
    pub l1_small: u64,
    pub trace: u64,
    pub cb: u64,
}

/// A process slot of v2-v4.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct ProcessSlot {
    pub pid: i32,
    pub _pad: u32,
    pub dram: u64,
    pub l1: u64,
    pub l1_small: u64,
    pub trace: u64,
    pub cb: u64,
    pub last_update_ns: u64,
    pub name: [u8; NAME_LEN],
}

/// The whole region of v2, v3 and v4.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct RegionV2 {
    pub header: RegionHeader,
    pub chips: [ChipEntry; MAX_CHIP_ENTRIES],
    pub slots: [ProcessSlot; MAX_SLOTS],
    /// v4 only (tail padding in v2 and v3).
    pub init_state: u32,
    pub _tail: [u8; 36],
}

/// A chip entry of v1 (with kernels).
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct ChipEntryV1 {
    pub chip_id: u32,
    pub is_remote: u32,
    pub dram: u64,
    pub l1: u64,
    pub l1_small: u64,
    pub trace: u64,
    pub cb: u64,
    pub kernel: u64,
}

/// A process slot of v1 (with kernels).
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct ProcessSlotV1 {
    pub pid: i32,
    pub _pad: u32,
    pub dram: u64,
    pub l1: u64,
    pub l1_small: u64,
    pub trace: u64,
    pub cb: u64,
    pub kernel: u64,
    pub last_update_ns: u64,
    pub name: [u8; NAME_LEN],
}

/// The whole region of v1.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct RegionV1 {
    pub header: RegionHeader,
    pub total_kernel: u64,
    pub chips: [ChipEntryV1; MAX_CHIP_ENTRIES],
    pub slots: [ProcessSlotV1; MAX_SLOTS],
    pub _tail: [u8; 96],
}

pub const SIZE_V1: usize = 9280;
pub const SIZE_V2: usize = 8576;

// The facts, asserted: any difference is a compile error.
const _: () = {
    assert!(size_of::<RegionHeader>() == 88);
    assert!(offset_of!(RegionHeader, last_update_ns) == 8);
    assert!(offset_of!(RegionHeader, reference_count) == 16);
    assert!(offset_of!(RegionHeader, board_serial) == 24);
    assert!(offset_of!(RegionHeader, asic_id) == 32);
    assert!(offset_of!(RegionHeader, device_id) == 40);
    assert!(offset_of!(RegionHeader, total_dram) == 48);
    assert!(offset_of!(RegionHeader, total_cb) == 80);
    assert!(size_of::<ChipEntry>() == 48);
    assert!(size_of::<ProcessSlot>() == 120);
    assert!(offset_of!(ProcessSlot, last_update_ns) == 48);
    assert!(offset_of!(ProcessSlot, name) == 56);
    assert!(offset_of!(RegionV2, chips) == 88);
    assert!(offset_of!(RegionV2, slots) == 856);
    assert!(offset_of!(RegionV2, init_state) == 8536);
    assert!(size_of::<RegionV2>() == SIZE_V2);
    assert!(size_of::<ChipEntryV1>() == 56);
    assert!(size_of::<ProcessSlotV1>() == 128);
    assert!(offset_of!(ProcessSlotV1, kernel) == 48);
    assert!(offset_of!(ProcessSlotV1, last_update_ns) == 56);
    assert!(offset_of!(ProcessSlotV1, name) == 64);
    assert!(offset_of!(RegionV1, total_kernel) == 88);
    assert!(offset_of!(RegionV1, chips) == 96);
    assert!(offset_of!(RegionV1, slots) == 992);
    assert!(size_of::<RegionV1>() == SIZE_V1);
};

/// The chip a region file is about: the N of `tt_device_<N>_memory`, strictly
/// canonical decimal (no sign, no leading zero, fits in u64); `None` for any other name.
pub fn chip_of_name(name: &[u8]) -> Option<u64> {
    let digits = name
        .strip_prefix(NAME_PREFIX.as_bytes())?
        .strip_suffix(NAME_SUFFIX.as_bytes())?;
    if digits.is_empty()
        || digits.len() > 20
        || !digits.iter().all(u8::is_ascii_digit)
        || (digits.len() > 1 && digits[0] == b'0')
    {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// The file name of chip `n`'s region.
pub fn name_of_chip(n: u64) -> String {
    format!("{NAME_PREFIX}{n}{NAME_SUFFIX}")
}

/// When a slot was last written, in the clock its version used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stamp {
    /// Never written (0).
    None,
    /// Nanoseconds since the Unix epoch (v3, v4, later v2).
    Unix(u64),
    /// Nanoseconds of the monotonic clock (v1, early v2).
    Monotonic(u64),
}

impl Stamp {
    fn of(ns: u64) -> Self {
        match ns {
            0 => Stamp::None,
            n if n < MONOTONIC_BELOW => Stamp::Monotonic(n),
            n => Stamp::Unix(n),
        }
    }
}

/// A process slot in use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// Its index in the region (0..64).
    pub index: usize,
    pub pid: u32,
    /// Bytes by category, as the page keeps them (clamped to [`MAX_FIGURE`]).
    pub used: [u64; NUM_CATS],
    pub last_update: Stamp,
    /// The process name TT-Metal read from `/proc/PID/comm`, as stored (NUL-padded):
    /// [`Slot::name`] makes it safe to print.
    pub name_bytes: [u8; NAME_LEN],
}

impl Slot {
    /// The process name, control characters replaced: safe to print.
    pub fn name(&self) -> String {
        name_text(&self.name_bytes)
    }
}

/// What a region says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    pub version: u32,
    pub reference_count: u32,
    pub num_active_processes: u32,
    /// The ids in the header (v1 and early v2: the name's N split into board and
    /// location; later: board 0 and N).
    pub board_serial: u64,
    pub asic_id: u64,
    /// The logical id of the last process that attached.
    pub device_id: u32,
    pub last_update: Stamp,
    /// The region's own totals (which, in v1-v3, keep a crashed process's bytes
    /// forever): a cross-check, never a live figure.
    pub totals: [u64; NUM_CATS],
    /// Slots with a pid, in slot order.
    pub slots: Vec<Slot>,
}

/// Why a region's bytes were not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegionError {
    /// Not a size any version has.
    Size(usize),
    /// A version this reader does not know, or a version whose size is another.
    Version { version: u32, size: usize },
    /// v4 whose writer has not finished initialising it (not yet `REDY`).
    NotReady,
}

impl std::fmt::Display for RegionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RegionError::Size(n) => write!(
                f,
                "{n} bytes: not a TT-Metal memory region ({SIZE_V2} bytes for layout versions 2-4, {SIZE_V1} for version 1)"
            ),
            RegionError::Version { version, size } => write!(
                f,
                "layout version {version} in {size} bytes: not one this tttrack reads (1 in {SIZE_V1} bytes, 2-4 in {SIZE_V2}); a newer tttrack may"
            ),
            RegionError::NotReady => f.write_str("layout version 4 not yet initialised by its writer"),
        }
    }
}

fn clamp(v: u64) -> u64 {
    v.min(MAX_FIGURE)
}

fn name_text(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    crate::sys::printable(&b[..end])
}

fn figures(dram: u64, l1: u64, l1_small: u64, trace: u64, cb: u64, kernel: u64) -> [u64; NUM_CATS] {
    let mut u = [0u64; NUM_CATS];
    u[CAT_DRAM] = clamp(dram);
    u[CAT_L1] = clamp(l1);
    u[CAT_L1_SMALL] = clamp(l1_small);
    u[CAT_TRACE] = clamp(trace);
    u[CAT_CB] = clamp(cb);
    u[CAT_KERNEL] = clamp(kernel);
    u
}

/// Parses a copy of a region's bytes (the whole file).
pub fn parse(bytes: &[u8]) -> Result<Region, RegionError> {
    let size = bytes.len();
    if size != SIZE_V1 && size != SIZE_V2 {
        return Err(RegionError::Size(size));
    }
    let header: RegionHeader = bytemuck::pod_read_unaligned(&bytes[..size_of::<RegionHeader>()]);
    let h = &header;
    let mut r = Region {
        version: h.version,
        reference_count: h.reference_count,
        num_active_processes: h.num_active_processes,
        board_serial: h.board_serial,
        asic_id: h.asic_id,
        device_id: h.device_id,
        last_update: Stamp::of(h.last_update_ns),
        totals: figures(
            h.total_dram,
            h.total_l1,
            h.total_l1_small,
            h.total_trace,
            h.total_cb,
            0,
        ),
        slots: Vec::new(),
    };
    match (h.version, size) {
        (1, SIZE_V1) => {
            let v: RegionV1 = bytemuck::pod_read_unaligned(bytes);
            r.totals[CAT_KERNEL] = clamp(v.total_kernel);
            for (index, s) in v.slots.iter().enumerate() {
                if s.pid > 0 {
                    r.slots.push(Slot {
                        index,
                        pid: s.pid as u32,
                        used: figures(s.dram, s.l1, s.l1_small, s.trace, s.cb, s.kernel),
                        last_update: Stamp::of(s.last_update_ns),
                        name_bytes: s.name,
                    });
                }
            }
        }
        (2..=4, SIZE_V2) => {
            let v: RegionV2 = bytemuck::pod_read_unaligned(bytes);
            if h.version == 4 && v.init_state != V4_READY {
                return Err(RegionError::NotReady);
            }
            for (index, s) in v.slots.iter().enumerate() {
                if s.pid > 0 {
                    r.slots.push(Slot {
                        index,
                        pid: s.pid as u32,
                        used: figures(s.dram, s.l1, s.l1_small, s.trace, s.cb, 0),
                        last_update: Stamp::of(s.last_update_ns),
                        name_bytes: s.name,
                    });
                }
            }
        }
        (version, size) => return Err(RegionError::Version { version, size }),
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_strict() {
        assert_eq!(chip_of_name(b"tt_device_0_memory"), Some(0));
        assert_eq!(
            chip_of_name(b"tt_device_18446744073709551615_memory"),
            Some(u64::MAX)
        );
        for bad in [
            &b"tt_device__memory"[..],
            b"tt_device_01_memory",
            b"tt_device_+1_memory",
            b"tt_device_18446744073709551616_memory",
            b"tt_device_1_memory.tmp",
            b"xtt_device_1_memory",
            b"tt_device_1 _memory",
        ] {
            assert_eq!(chip_of_name(bad), None, "{}", String::from_utf8_lossy(bad));
        }
        assert_eq!(chip_of_name(name_of_chip(4711).as_bytes()), Some(4711));
    }

    fn put(b: &mut [u8], off: usize, v: u64, width: usize) {
        b[off..off + width].copy_from_slice(&v.to_le_bytes()[..width]);
    }

    #[test]
    fn every_version_read_at_the_documented_offsets() {
        // v3: a slot at index 2 written at the facts' offsets.
        let mut b = vec![0u8; 8576];
        put(&mut b, 0, 3, 4);
        put(&mut b, 48, 999, 8);
        let s = 856 + 2 * 120;
        put(&mut b, s, 4242, 4);
        put(&mut b, s + 8, 100, 8);
        put(&mut b, s + 16, 200, 8);
        put(&mut b, s + 24, 300, 8);
        put(&mut b, s + 32, 400, 8);
        put(&mut b, s + 40, 500, 8);
        put(&mut b, s + 48, 1_800_000_000_000_000_000, 8);
        b[s + 56..s + 60].copy_from_slice(b"py\x1b[");
        let r = parse(&b).unwrap();
        assert_eq!(r.totals[CAT_DRAM], 999);
        assert_eq!(r.slots.len(), 1);
        let sl = &r.slots[0];
        assert_eq!((sl.index, sl.pid), (2, 4242));
        assert_eq!(
            [
                sl.used[CAT_DRAM],
                sl.used[CAT_L1],
                sl.used[CAT_L1_SMALL],
                sl.used[CAT_TRACE],
                sl.used[CAT_CB]
            ],
            [100, 200, 300, 400, 500]
        );
        assert_eq!(sl.name(), "py?[", "the escape replaced");
        assert_eq!(sl.last_update, Stamp::Unix(1_800_000_000_000_000_000));
        // v4 needs its ready flag.
        put(&mut b, 0, 4, 4);
        assert_eq!(parse(&b), Err(RegionError::NotReady));
        put(&mut b, 8536, V4_READY as u64, 4);
        assert_eq!(parse(&b).unwrap().slots[0].pid, 4242);
        // v1: kernels, its own strides, a monotonic stamp.
        let mut b = vec![0u8; 9280];
        put(&mut b, 0, 1, 4);
        put(&mut b, 88, 77, 8);
        let s = 992 + 63 * 128;
        put(&mut b, s, 9, 4);
        put(&mut b, s + 8, 1, 8);
        put(&mut b, s + 48, 6, 8);
        put(&mut b, s + 56, 5_000_000_000, 8);
        let r = parse(&b).unwrap();
        assert_eq!(r.totals[CAT_KERNEL], 77);
        let sl = &r.slots[0];
        assert_eq!(
            (sl.index, sl.pid, sl.used[CAT_DRAM], sl.used[CAT_KERNEL]),
            (63, 9, 1, 6)
        );
        assert_eq!(sl.last_update, Stamp::Monotonic(5_000_000_000));
    }

    #[test]
    fn anything_else_is_refused_and_nothing_absurd_is_believed() {
        assert_eq!(parse(&[0u8; 100]), Err(RegionError::Size(100)));
        let mut b = vec![0u8; 8576];
        put(&mut b, 0, 1, 4);
        assert_eq!(
            parse(&b),
            Err(RegionError::Version {
                version: 1,
                size: 8576
            })
        );
        put(&mut b, 0, 5, 4);
        assert!(matches!(
            parse(&b),
            Err(RegionError::Version { version: 5, .. })
        ));
        put(&mut b, 0, 2, 4);
        let s = 856;
        put(&mut b, s, 1, 4);
        put(&mut b, s + 8, u64::MAX, 8);
        put(&mut b, s + 120, (-5i32) as u32 as u64, 4);
        let r = parse(&b).unwrap();
        assert_eq!(r.slots.len(), 1, "a negative pid is no slot");
        assert_eq!(r.slots[0].used[CAT_DRAM], MAX_FIGURE);
        // Any bytes at all: no panic.
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..200 {
            for w in b.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                w.copy_from_slice(&x.to_le_bytes()[..w.len()]);
            }
            put(&mut b, 0, 3, 4);
            let _ = parse(&b);
        }
    }
}
