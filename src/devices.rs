//! Tenstorrent devices as the kernel driver (tt-kmd) shows them: discovery from sysfs,
//! telemetry from the class directory and hwmon, the processes holding each device.
//!
//! Every path is looked up under a root directory (`/` normally; tests use fixture
//! trees), and links are only followed when they are relative, so a fixture never
//! leads to the real `/sys`. Any file may be missing, empty, malformed or fail with
//! ENODATA/ENODEV: that field is then unknown (its `valid` bit unset), never invented,
//! and the other fields still read.
//!
//! Units, converted exactly: hwmon temperatures are millidegrees Celsius, voltages
//! millivolts, currents milliamperes, power microwatts (kept as read; shown as °C, mV,
//! A, W); clocks are MHz; PCIe link speed is kept in thousandths of GT/s.

use crate::counters_page::*;
use std::path::{Path, PathBuf};

pub const VENDOR_TENSTORRENT: u32 = 0x1e52;

/// Architecture from the PCI device id.
pub fn arch_of_pci_device(id: u32) -> Option<&'static str> {
    match id {
        0xfaca => Some("grayskull"),
        0x401e => Some("wormhole_b0"),
        0xb140 => Some("blackhole"),
        _ => None,
    }
}

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
    pub class_dir: PathBuf,
    pub pci_dir: Option<PathBuf>,
}

/// Reads a small attribute file, trimmed; `None` if missing, unreadable (ENODATA,
/// ENODEV...) or empty.
fn attr(p: &Path) -> Option<String> {
    let s = std::fs::read(p).ok()?;
    let s = String::from_utf8_lossy(&s).trim().to_string();
    (!s.is_empty() && s.len() < 256).then_some(s)
}

fn attr_u64(p: &Path) -> Option<u64> {
    attr(p)?.parse().ok()
}

fn attr_i64(p: &Path) -> Option<i64> {
    attr(p)?.parse().ok()
}

fn attr_hex(p: &Path) -> Option<u32> {
    let s = attr(p)?;
    u32::from_str_radix(s.strip_prefix("0x").unwrap_or(&s), 16).ok()
}

/// Follows `link` (a symlink inside `root`) if it is relative; `None` otherwise.
fn follow(root: &Path, link: &Path) -> Option<PathBuf> {
    let target = std::fs::read_link(link).ok()?;
    if target.is_absolute() {
        // Resolve inside the root, never on the real system.
        let rel = target.strip_prefix("/").ok()?;
        return Some(root.join(rel));
    }
    let mut p = link.parent()?.to_path_buf();
    for c in target.components() {
        match c {
            std::path::Component::ParentDir => {
                p.pop();
            }
            std::path::Component::Normal(x) => p.push(x),
            _ => {}
        }
    }
    p.starts_with(root).then_some(p)
}

/// Every `sys/class/tenstorrent/tenstorrent!N` under `root`, sorted by N.
pub fn discover(root: &Path) -> Vec<LocalDevice> {
    let class = root.join("sys/class/tenstorrent");
    let Ok(rd) = std::fs::read_dir(&class) else {
        return Vec::new();
    };
    let mut v: Vec<LocalDevice> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let id: u32 = name.strip_prefix("tenstorrent!")?.parse().ok()?;
            let dir = e.path();
            let pci_dir = follow(root, &dir.join("device")).filter(|p| p.is_dir());
            let pci_id = pci_dir.as_ref().and_then(|p| attr_hex(&p.join("device")));
            let arch = pci_id
                .and_then(arch_of_pci_device)
                .map(str::to_string)
                .or_else(|| {
                    // No PCI link: the hwmon name is the next best witness.
                    attr(&dir.join("device/hwmon/name")).map(|n| match n.as_str() {
                        "wormhole" => "wormhole_b0".to_string(),
                        other => other.to_string(),
                    })
                })
                .unwrap_or_default();
            Some(LocalDevice {
                id,
                arch,
                board: attr(&dir.join("tt_card_type")).unwrap_or_default(),
                serial: attr(&dir.join("tt_serial")).unwrap_or_default(),
                asic_id: attr(&dir.join("tt_asic_id")).unwrap_or_default(),
                pci_bdf: pci_dir
                    .as_ref()
                    .and_then(|p| p.file_name())
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                fw_bundle: attr(&dir.join("tt_fw_bundle_ver")).unwrap_or_default(),
                fw: FW_FILES.map(|f| {
                    attr(&dir.join(f))
                        .and_then(|v| pack_version(&v))
                        .unwrap_or(0)
                }),
                class_dir: dir,
                pci_dir,
            })
        })
        .collect();
    v.sort_by_key(|d| d.id);
    v
}

fn hwmon_dir(d: &LocalDevice) -> Option<PathBuf> {
    let base = d.pci_dir.as_ref()?.join("hwmon");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&base)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("hwmon"))
        })
        .collect();
    dirs.sort();
    dirs.into_iter().next()
}

/// PCIe link speed text such as `16.0 GT/s PCIe` in thousandths of GT/s.
pub fn parse_link_speed(s: &str) -> Option<u64> {
    let num = s.split_whitespace().next()?;
    let v: f64 = num.parse().ok()?;
    (v.is_finite() && v > 0.0 && v < 1000.0).then(|| (v * 1000.0).round() as u64)
}

/// Reads one telemetry sample. `prev` (the previous sample of the same device) lets
/// the heartbeat stall count carry on.
pub fn read_telemetry(d: &LocalDevice, prev: Option<&Telemetry>, now_unix_ns: u64) -> Telemetry {
    let mut t = Telemetry {
        sampled_unix_ns: now_unix_ns,
        ..Default::default()
    };
    let c = &d.class_dir;
    let mut set_u = |bit: u64, v: Option<u64>, dst: &mut u64| {
        if let Some(v) = v {
            *dst = v;
            t.valid |= bit;
        }
    };
    let mut aiclk = 0;
    let mut axiclk = 0;
    let mut arcclk = 0;
    let mut hb = 0;
    let mut trips = 0;
    set_u(TEL_AICLK, attr_u64(&c.join("tt_aiclk")), &mut aiclk);
    set_u(TEL_AXICLK, attr_u64(&c.join("tt_axiclk")), &mut axiclk);
    set_u(TEL_ARCCLK, attr_u64(&c.join("tt_arcclk")), &mut arcclk);
    set_u(TEL_HEARTBEAT, attr_u64(&c.join("tt_heartbeat")), &mut hb);
    set_u(
        TEL_THERM_TRIP,
        attr_u64(&c.join("tt_therm_trip_count")),
        &mut trips,
    );
    [
        t.arc_fw_ver,
        t.eth_fw_ver,
        t.m3bl_fw_ver,
        t.m3app_fw_ver,
        t.ttflash_ver,
    ] = d.fw;
    t.aiclk_mhz = aiclk;
    t.axiclk_mhz = axiclk;
    t.arcclk_mhz = arcclk;
    t.heartbeat = hb;
    t.therm_trip_count = trips;
    if t.valid & TEL_HEARTBEAT != 0 {
        t.heartbeat_stalled_samples = match prev {
            Some(p) if p.valid & TEL_HEARTBEAT != 0 && p.heartbeat == hb => {
                p.heartbeat_stalled_samples + 1
            }
            _ => 0,
        };
    }
    if let Some(h) = hwmon_dir(d) {
        if let Some(v) = attr_i64(&h.join("temp1_input")) {
            t.asic_temp_mc = v;
            t.valid |= TEL_TEMP;
        }
        if let Some(v) = attr_i64(&h.join("temp1_max")) {
            t.temp_max_mc = v;
            t.valid |= TEL_TEMP_MAX;
        }
        let pairs: [(&str, u64, u64); 7] = [
            ("in0_input", TEL_VCORE, 0),
            ("in0_max", TEL_VCORE_MAX, 1),
            ("curr1_input", TEL_CURRENT, 2),
            ("curr1_max", TEL_CURRENT_MAX, 3),
            ("power1_input", TEL_POWER, 4),
            ("power1_max", TEL_POWER_MAX, 5),
            ("fan1_input", TEL_FAN, 6),
        ];
        for (file, bit, slot) in pairs {
            if let Some(v) = attr_u64(&h.join(file)) {
                t.valid |= bit;
                match slot {
                    0 => t.vcore_mv = v,
                    1 => t.vcore_max_mv = v,
                    2 => t.current_ma = v,
                    3 => t.current_max_ma = v,
                    4 => t.power_uw = v,
                    5 => t.power_max_uw = v,
                    _ => t.fan_rpm = v,
                }
            }
        }
    }
    if let Some(p) = &d.pci_dir {
        let speed = attr(&p.join("current_link_speed")).and_then(|s| parse_link_speed(&s));
        let width = attr_u64(&p.join("current_link_width"));
        if let (Some(s), Some(w)) = (speed, width) {
            t.pcie_link_speed_milli_gts = s;
            t.pcie_link_width = w;
            t.valid |= TEL_PCIE;
        }
    }
    t
}

/// PIDs holding device `id` open (`proc/driver/tenstorrent/N/pids`, one per line).
pub fn holders(root: &Path, id: u32) -> Vec<u32> {
    let p = root.join(format!("proc/driver/tenstorrent/{id}/pids"));
    let Ok(s) = std::fs::read_to_string(p) else {
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
                .map(|(_, t, _)| t);
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
    r.asic_id = u64::from_str_radix(d.asic_id.trim_start_matches("0x"), 16).unwrap_or(0);
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
        assert_eq!(arch_of_pci_device(0x401e), Some("wormhole_b0"));
        assert_eq!(arch_of_pci_device(0x1234), None);
    }
}
