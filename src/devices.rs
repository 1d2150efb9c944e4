//! Tenstorrent devices as the kernel driver (tt-kmd) shows them: discovery from sysfs,
//! telemetry from the class device, hwmon and the PCI function, the processes holding
//! each device.
//!
//! How the tree is read (the layout itself is drawn in `simulated.rs`): every
//! `sys/class/tenstorrent/tenstorrent!N` is resolved physically (`resolve.rs`: each
//! symlink from where it is, absolute ones from the root, nothing above the root) to
//! the class device under `sys/devices/`; its `device` link, resolved from there, is
//! the PCI function, whose directory name is the PCI address and whose `vendor` and
//! `device` give the architecture; the card's hwmon is the `hwmon/hwmonX` below that
//! PCI function whose `name` is `wormhole` or `blackhole`, so each card reads its own.
//! Any file may be missing, empty, malformed or fail with ENODATA/ENODEV: that field is
//! then unknown (its `valid` bit unset), never invented, and the other fields still read.
//!
//! Units, converted exactly: hwmon temperatures are millidegrees Celsius, voltages
//! millivolts, currents milliamperes, power microwatts (kept as read; shown as °C, mV,
//! A, W); clocks are MHz; PCIe link speed is kept in thousandths of GT/s; PCIe traffic
//! counters count 32-byte flits.

pub mod resolve;
pub mod simulated;

use crate::counters_page::*;
use std::path::{Path, PathBuf};

pub const VENDOR_TENSTORRENT: u32 = 0x1e52;

/// Built-in totals per chip, (DRAM bytes, L1 bytes), by architecture and board, from
/// the published specifications of each card. `None` where the figure is not known.
pub fn builtin_totals(arch: &str, board: &str) -> (Option<u64>, Option<u64>) {
    const GIB: u64 = 1 << 30;
    const WH_L1: u64 = 1_499_136;
    const BH_L1: u64 = 1_572_864;
    match (arch, board) {
        ("grayskull", "e150") => (Some(8 * GIB), Some(120 << 20)),
        ("grayskull", "e75") => (None, Some(96 << 20)),
        ("wormhole_b0", "n150") => (Some(12 * GIB), Some(72 * WH_L1)),
        ("wormhole_b0", "n300") => (Some(12 * GIB), Some(64 * WH_L1)),
        ("wormhole_b0", "galaxy-wormhole") => (Some(12 * GIB), None),
        // A Blackhole Galaxy's chips have a Blackhole's 8 x 4 GiB; how many Tensix
        // cores each keeps after harvesting is not published: the TT-Metal process
        // reports it.
        ("blackhole", "galaxy-blackhole") => (Some(32 * GIB), None),
        ("blackhole", "p100" | "p100a") => (Some(28 * GIB), Some(120 * BH_L1)),
        ("blackhole", "p150a" | "p150b" | "p150c") => (Some(32 * GIB), Some(120 * BH_L1)),
        ("blackhole", "p300a" | "p300b" | "p300c") => (Some(32 * GIB), Some(120 * BH_L1)),
        _ => (None, None),
    }
}

/// A device found in sysfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalDevice {
    pub id: u32,
    pub arch: String,
    pub board: String,
    pub serial: String,
    pub asic_id: String,
    pub pci_bdf: String,
    pub fw_bundle: String,
    /// Per-component firmware versions, packed (see `counters_page::pack_version`).
    pub fw: [u64; 5],
    /// The physical class-device directory (under `sys/devices/`).
    pub class_dir: PathBuf,
    /// The physical PCI function's directory, if the `device` link leads to one.
    pub pci_dir: Option<PathBuf>,
    /// The card's own hwmon directory, if the driver registered one.
    pub hwmon_dir: Option<PathBuf>,
    /// The driver's PCIe performance counters as last read.
    pub pcie_counters: Option<[u32; 12]>,
}

impl LocalDevice {
    /// The chip's id (`tt_asic_id`, 16 hex digits) as a number, 0 if not shown.
    pub fn asic_id_number(&self) -> u64 {
        hex_u64(&self.asic_id)
    }
    /// The board's id (`tt_serial`) as a number, 0 if not shown.
    pub fn board_id_number(&self) -> u64 {
        hex_u64(&self.serial)
    }
}

fn hex_u64(s: &str) -> u64 {
    u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap_or(0)
}

fn attr(dir: &Path, name: &str) -> Option<String> {
    resolve::read_attr(dir, name)
}

fn attr_u64(dir: &Path, name: &str) -> Option<u64> {
    attr(dir, name)?.parse().ok()
}

fn attr_i64(dir: &Path, name: &str) -> Option<i64> {
    attr(dir, name)?.parse().ok()
}

fn attr_hex(dir: &Path, name: &str) -> Option<u32> {
    let s = attr(dir, name)?;
    u32::from_str_radix(s.strip_prefix("0x").unwrap_or(&s), 16).ok()
}

/// The `N` of `tenstorrent!N`, canonical decimal only.
fn class_index(name: &str) -> Option<u32> {
    crate::shm_layout::canonical_decimal(name.strip_prefix("tenstorrent!")?)
}

/// A PCI address as the kernel names a function's directory: `DDDD:BB:SS.F` in
/// lower-case hex.
pub fn is_pci_address(s: &str) -> bool {
    let b = s.as_bytes();
    let hex = |r: std::ops::Range<usize>| {
        b[r].iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
    };
    b.len() == 12
        && b[4] == b':'
        && b[7] == b':'
        && b[10] == b'.'
        && hex(0..4)
        && hex(5..7)
        && hex(8..10)
        && hex(11..12)
}

/// The hwmon directory of a card: `hwmon/hwmonX` under its PCI function, the one whose
/// `name` is the driver's (`wormhole`, `blackhole`), lowest X first.
fn find_hwmon(pci_dir: &Path) -> Option<(PathBuf, String)> {
    let mut found: Vec<(u32, PathBuf, String)> = std::fs::read_dir(pci_dir.join("hwmon"))
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let n: u32 = name.strip_prefix("hwmon")?.parse().ok()?;
            // A real directory on every kernel: a link here is not followed.
            let dir = pci_dir.join("hwmon").join(&name);
            std::fs::symlink_metadata(&dir)
                .ok()?
                .is_dir()
                .then_some(())?;
            let driver = attr(&dir, "name")?;
            crate::arch::by_hwmon(&driver)
                .is_some()
                .then_some((n, dir, driver))
        })
        .collect();
    found.sort();
    found.into_iter().next().map(|(_, d, n)| (d, n))
}

/// Every `sys/class/tenstorrent/tenstorrent!N` under `root`, sorted by N.
pub fn discover(root: &Path) -> Vec<LocalDevice> {
    let Some(class) = resolve::resolve_dir(root, Path::new("sys/class/tenstorrent")) else {
        return Vec::new();
    };
    let Ok(rd) = std::fs::read_dir(&class) else {
        return Vec::new();
    };
    let mut v: Vec<LocalDevice> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let id = class_index(&name)?;
            let rel = Path::new("sys/class/tenstorrent").join(&name);
            let dir = resolve::resolve_dir(root, &rel)?;
            Some(describe(root, id, dir))
        })
        .collect();
    v.sort_by_key(|d| d.id);
    v
}

/// What the class device at the physical `dir` and its PCI function say.
fn describe(root: &Path, id: u32, dir: PathBuf) -> LocalDevice {
    let rel_device = dir.strip_prefix(root).unwrap_or(&dir).join("device");
    // The card's PCI function: named as one, and Tenstorrent's (not, say, the root
    // port a broken link would lead to).
    let pci_dir = resolve::resolve_dir(root, &rel_device).filter(|p| {
        p.file_name()
            .is_some_and(|n| is_pci_address(&n.to_string_lossy()))
            && attr_hex(p, "vendor") == Some(VENDOR_TENSTORRENT)
    });
    let hwmon = pci_dir.as_deref().and_then(find_hwmon);
    let arch = pci_dir
        .as_ref()
        .and_then(|p| attr_hex(p, "device"))
        .and_then(crate::arch::by_pci_device)
        // The PCI ids unreadable: the hwmon name is the next best witness.
        .or_else(|| hwmon.as_ref().and_then(|(_, n)| crate::arch::by_hwmon(n)))
        .map(|a| a.name.to_string())
        .unwrap_or_default();
    LocalDevice {
        id,
        arch,
        board: attr(&dir, "tt_card_type").unwrap_or_default(),
        serial: attr(&dir, "tt_serial").unwrap_or_default(),
        asic_id: attr(&dir, "tt_asic_id").unwrap_or_default(),
        pci_bdf: pci_dir
            .as_ref()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        fw_bundle: attr(&dir, "tt_fw_bundle_ver").unwrap_or_default(),
        fw: FW_FILES.map(|f| attr(&dir, f).and_then(|v| pack_version(&v)).unwrap_or(0)),
        pcie_counters: read_pcie_counters(&dir),
        class_dir: dir,
        hwmon_dir: hwmon.map(|(d, _)| d),
        pci_dir,
    }
}

/// The 12 PCIe performance counters of `pcie_perf_counters/` (32 bytes a count).
pub const PCIE_PERF_COUNTERS: [&str; 12] = [
    "mst_rd_data_word_received0",
    "mst_rd_data_word_received1",
    "mst_nonposted_wr_data_word_sent0",
    "mst_nonposted_wr_data_word_sent1",
    "mst_posted_wr_data_word_sent0",
    "mst_posted_wr_data_word_sent1",
    "slv_nonposted_wr_data_word_received0",
    "slv_nonposted_wr_data_word_received1",
    "slv_posted_wr_data_word_received0",
    "slv_posted_wr_data_word_received1",
    "slv_rd_data_word_sent0",
    "slv_rd_data_word_sent1",
];

/// The driver's 12 PCIe performance counters (`pcie_perf_counters/`, in the order of
/// [`PCIE_PERF_COUNTERS`]), `None` unless every one reads.
fn read_pcie_counters(class_dir: &Path) -> Option<[u32; 12]> {
    let dir = class_dir.join("pcie_perf_counters");
    let mut v = [0u32; 12];
    for (slot, name) in v.iter_mut().zip(PCIE_PERF_COUNTERS) {
        *slot = attr(&dir, name)?.parse().ok()?;
    }
    Some(v)
}

/// Of the 12 counters, those that carry data from the host to the device (the host's
/// writes through the PCIe interface as NOC master; the device's reads of host
/// memory, data the interface sends as NOC slave) and from the device to the host
/// (the host's reads; the device's writes into host memory).
const PCIE_HOST_TO_DEVICE: [usize; 6] = [2, 3, 4, 5, 10, 11];
const PCIE_DEVICE_TO_HOST: [usize; 6] = [0, 1, 6, 7, 8, 9];
/// Bytes a counter step stands for (one 32-byte flit).
pub const PCIE_FLIT_BYTES: u64 = 32;

/// Flits counted between two readings of 32-bit counters that wrap.
fn flits_between(prev: &[u32; 12], now: &[u32; 12], which: &[usize]) -> u64 {
    which
        .iter()
        .map(|&i| now[i].wrapping_sub(prev[i]) as u64)
        .sum()
}

/// PCIe link speed text such as `16.0 GT/s PCIe` in thousandths of GT/s.
pub fn parse_link_speed(s: &str) -> Option<u64> {
    let num = s.split_whitespace().next()?;
    let v: f64 = num.parse().ok()?;
    (v.is_finite() && v > 0.0 && v < 1000.0).then(|| (v * 1000.0).round() as u64)
}

/// Reads one telemetry sample. `prev` (the previous sample of the same device) lets
/// the heartbeat stall count and the PCIe traffic totals carry on.
pub fn read_telemetry(
    d: &LocalDevice,
    prev: Option<(&LocalDevice, &Telemetry)>,
    now_unix_ns: u64,
) -> Telemetry {
    let mut t = Telemetry {
        sampled_unix_ns: now_unix_ns,
        ..Default::default()
    };
    read_class(&mut t, d, prev.map(|p| p.1));
    if let Some(h) = &d.hwmon_dir {
        read_hwmon(&mut t, h);
    }
    if let Some(p) = &d.pci_dir {
        read_pci_link(&mut t, p);
    }
    read_pcie_traffic(&mut t, d, prev);
    t
}

/// Clocks, heartbeat, thermal trips and firmware versions from the class device.
fn read_class(t: &mut Telemetry, d: &LocalDevice, prev: Option<&Telemetry>) {
    let c = &d.class_dir;
    let fields: [(&str, u64, &mut u64); 5] = [
        ("tt_aiclk", TEL_AICLK, &mut t.aiclk_mhz),
        ("tt_axiclk", TEL_AXICLK, &mut t.axiclk_mhz),
        ("tt_arcclk", TEL_ARCCLK, &mut t.arcclk_mhz),
        ("tt_heartbeat", TEL_HEARTBEAT, &mut t.heartbeat),
        (
            "tt_therm_trip_count",
            TEL_THERM_TRIP,
            &mut t.therm_trip_count,
        ),
    ];
    let mut valid = 0;
    for (file, bit, dst) in fields {
        if let Some(v) = attr_u64(c, file) {
            *dst = v;
            valid |= bit;
        }
    }
    t.valid |= valid;
    [
        t.arc_fw_ver,
        t.eth_fw_ver,
        t.m3bl_fw_ver,
        t.m3app_fw_ver,
        t.ttflash_ver,
    ] = d.fw;
    if t.valid & TEL_HEARTBEAT != 0 {
        t.heartbeat_stalled_samples = match prev {
            Some(p) if p.valid & TEL_HEARTBEAT != 0 && p.heartbeat == t.heartbeat => {
                p.heartbeat_stalled_samples + 1
            }
            _ => 0,
        };
    }
}

/// Temperature, voltage, current, power and fan from the card's hwmon directory.
fn read_hwmon(t: &mut Telemetry, h: &Path) {
    if let Some(v) = attr_i64(h, "temp1_input") {
        t.asic_temp_mc = v;
        t.valid |= TEL_TEMP;
    }
    if let Some(v) = attr_i64(h, "temp1_max") {
        t.temp_max_mc = v;
        t.valid |= TEL_TEMP_MAX;
    }
    let fields: [(&str, u64, &mut u64); 7] = [
        ("in0_input", TEL_VCORE, &mut t.vcore_mv),
        ("in0_max", TEL_VCORE_MAX, &mut t.vcore_max_mv),
        ("curr1_input", TEL_CURRENT, &mut t.current_ma),
        ("curr1_max", TEL_CURRENT_MAX, &mut t.current_max_ma),
        ("power1_input", TEL_POWER, &mut t.power_uw),
        ("power1_max", TEL_POWER_MAX, &mut t.power_max_uw),
        ("fan1_input", TEL_FAN, &mut t.fan_rpm),
    ];
    let mut valid = 0;
    for (file, bit, dst) in fields {
        if let Some(v) = attr_u64(h, file) {
            *dst = v;
            valid |= bit;
        }
    }
    t.valid |= valid;
}

/// The PCIe link as trained now and at most, from the kernel's PCI core files.
fn read_pci_link(t: &mut Telemetry, p: &Path) {
    let link = |speed: &str, width: &str| {
        let s = attr(p, speed).and_then(|s| parse_link_speed(&s))?;
        Some((s, attr_u64(p, width)?))
    };
    if let Some((s, w)) = link("current_link_speed", "current_link_width") {
        (t.pcie_link_speed_milli_gts, t.pcie_link_width) = (s, w);
        t.valid |= TEL_PCIE;
    }
    if let Some((s, w)) = link("max_link_speed", "max_link_width") {
        (t.pcie_max_link_speed_milli_gts, t.pcie_max_link_width) = (s, w);
        t.valid |= TEL_PCIE_MAX;
    }
}

/// Bytes moved each way since the first sample (the driver's 32-bit counters
/// extended across wraps, as long as a sample comes before one wraps twice) and the
/// rate over the last interval.
fn read_pcie_traffic(t: &mut Telemetry, d: &LocalDevice, prev: Option<(&LocalDevice, &Telemetry)>) {
    let Some(now) = &d.pcie_counters else {
        return;
    };
    t.valid |= TEL_PCIE_TRAFFIC;
    let Some((pd, pt)) = prev else {
        return;
    };
    let Some(before) = &pd.pcie_counters else {
        return;
    };
    if pt.valid & TEL_PCIE_TRAFFIC == 0 {
        return;
    }
    let h2d = flits_between(before, now, &PCIE_HOST_TO_DEVICE) * PCIE_FLIT_BYTES;
    let d2h = flits_between(before, now, &PCIE_DEVICE_TO_HOST) * PCIE_FLIT_BYTES;
    t.pcie_h2d_bytes = pt.pcie_h2d_bytes.saturating_add(h2d);
    t.pcie_d2h_bytes = pt.pcie_d2h_bytes.saturating_add(d2h);
    let dt = t.sampled_unix_ns.saturating_sub(pt.sampled_unix_ns);
    if dt > 0 {
        let rate = |b: u64| (b as u128 * 1_000_000_000 / dt as u128).min(u64::MAX as u128) as u64;
        t.pcie_h2d_bytes_per_s = rate(h2d);
        t.pcie_d2h_bytes_per_s = rate(d2h);
    }
}

/// PIDs holding device `id` open (`proc/driver/tenstorrent/N/pids`, one per line).
pub fn holders(root: &Path, id: u32) -> Vec<u32> {
    let rel = format!("proc/driver/tenstorrent/{id}");
    let Some(s) = resolve::resolve_dir(root, Path::new(&rel)).and_then(|d| {
        let f = std::fs::File::open(d.join("pids")).ok()?;
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::Read::take(f, 1 << 20), &mut s).ok()?;
        Some(s)
    }) else {
        return Vec::new();
    };
    let mut v: Vec<u32> = s
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .filter(|&p| p > 0)
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// The sysfs root: `--sysfs-root`, else `$TTTRACK_SYSFS_ROOT`, else `/`.
pub fn sysfs_root(arg: Option<PathBuf>) -> PathBuf {
    arg.or_else(|| {
        std::env::var_os("TTTRACK_SYSFS_ROOT")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    })
    .unwrap_or_else(|| PathBuf::from("/"))
}

/// What one sampling round found: devices with telemetry and their holders.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    pub devices: Vec<(LocalDevice, Telemetry, Vec<u32>)>,
}

/// Samples every device, carrying heartbeat stall counts over from `prev`.
pub fn sample(root: &Path, prev: &Sample, now_unix_ns: u64) -> Sample {
    let devices = discover(root)
        .into_iter()
        .map(|d| {
            let p = prev
                .devices
                .iter()
                .find(|(x, _, _)| x.id == d.id && x.pci_bdf == d.pci_bdf)
                .map(|(x, t, _)| (x, t));
            let t = read_telemetry(&d, p, now_unix_ns);
            let h = holders(root, d.id);
            (d, t, h)
        })
        .collect();
    Sample { devices }
}

/// Fills a device record's identity, totals (unless a process described the device)
/// and telemetry from a sysfs device.
pub fn fill_record(r: &mut DeviceRecord, d: &LocalDevice, t: &Telemetry) {
    r.flags |= DEV_LOCAL | DEV_PRESENT;
    r.flags &= !DEV_REMOTE;
    if r.flags & DEV_HAS_INFO == 0 || get_str(&r.arch).is_empty() || get_str(&r.arch) == "unknown" {
        r.arch = put_str(&d.arch);
    }
    r.board = put_str(&d.board);
    r.serial = put_str(&d.serial);
    r.pci_bdf = put_str(&d.pci_bdf);
    r.fw_bundle = put_str(&d.fw_bundle);
    r.asic_id = d.asic_id_number();
    if r.flags & DEV_HAS_INFO == 0 {
        let (dram, l1) = builtin_totals(&d.arch, &d.board);
        r.dram_total = dram.unwrap_or(0);
        r.l1_total = l1.unwrap_or(0);
    }
    r.telemetry = *t;
}

/// The per-component firmware version files, in the order of `LocalDevice::fw`.
const FW_FILES: [&str; 5] = [
    "tt_arc_fw_ver",
    "tt_eth_fw_ver",
    "tt_m3bl_fw_ver",
    "tt_m3app_fw_ver",
    "tt_ttflash_ver",
];

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn link_speeds_parse_exactly() {
        assert_eq!(parse_link_speed("16.0 GT/s PCIe"), Some(16_000));
        assert_eq!(parse_link_speed("2.5 GT/s"), Some(2_500));
        assert_eq!(parse_link_speed("8 GT/s"), Some(8_000));
        assert_eq!(parse_link_speed("Unknown"), None);
        assert_eq!(parse_link_speed(""), None);
    }
    #[test]
    fn builtin_table() {
        assert_eq!(
            builtin_totals("wormhole_b0", "n150"),
            (Some(12 << 30), Some(72 * 1_499_136))
        );
        assert_eq!(
            builtin_totals("blackhole", "p150a"),
            (Some(32 << 30), Some(120 * 1_572_864))
        );
        assert_eq!(builtin_totals("blackhole", "p100a").0, Some(28 << 30));
        assert_eq!(builtin_totals("wormhole_b0", "unknown"), (None, None));
        assert_eq!(
            builtin_totals("blackhole", "galaxy-blackhole"),
            (Some(32 << 30), None)
        );
    }
}
