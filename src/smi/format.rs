//! What the snapshot text and the live view show alike: cells, bars, levels,
//! telemetry rows and process rows, each written once.

use super::model::{DeviceView, ProcDevView, ProcessView};
use crate::counters_page::*;
use crate::sys::human_bytes;

/// How full a memory is, for its colour: green, yellow from 70%, red from 90%.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Ok,
    High,
    Full,
}

impl Level {
    /// The level of `used` of `total` (an unknown or zero total is Ok).
    pub fn of(used: u64, total: Option<u64>) -> Self {
        let ratio = total
            .filter(|&t| t > 0)
            .map_or(0.0, |t| used as f64 / t as f64);
        if ratio >= 0.9 {
            Self::Full
        } else if ratio >= 0.7 {
            Self::High
        } else {
            Self::Ok
        }
    }
}

/// Percent of `total` that `used` is, if the total is known.
pub fn pct(used: u64, total: Option<u64>) -> Option<f64> {
    total
        .filter(|&t| t > 0)
        .map(|t| used as f64 * 100.0 / t as f64)
}

/// How many of `width` bar cells `used` of `total` fills (none for an unknown total).
pub fn filled_cells(used: u64, total: u64, width: usize) -> usize {
    let frac = if total == 0 {
        0.0
    } else {
        (used as f64 / total as f64).min(1.0)
    };
    ((frac * width as f64).round() as usize).min(width)
}

/// A bar of `width` cells for `used` of `total`.
pub fn bar(used: u64, total: u64, width: usize) -> String {
    let full = filled_cells(used, total, width);
    format!("[{}{}]", "█".repeat(full), "░".repeat(width - full))
}

/// The device table's temperature, power and AI clock cells.
pub fn telemetry_cells(d: &DeviceView) -> (String, String, String) {
    let t = &d.telemetry;
    let na = || "N/A".to_string();
    let temp = t.temp_c().map_or_else(na, |c| format!("{c:.0}°C"));
    let power = t.power_w().map_or_else(na, |w| format!("{w:.0} W"));
    let clk = if t.has(TEL_AICLK) {
        format!("{} MHz", t.aiclk_mhz)
    } else {
        na()
    };
    (temp, power, clk)
}

/// The device table's DRAM cell: used / total.
pub fn memory_cell(d: &DeviceView) -> String {
    if !d.memory_known {
        return "N/A".into();
    }
    let used = d.figures[CAT_DRAM].used;
    match d.dram_total {
        Some(t) => format!("{} / {}", human_bytes(used), human_bytes(t)),
        None => format!("{} / ?", human_bytes(used)),
    }
}

/// The device table's L1 cell: everything L1-resident / total.
pub fn l1_cell(d: &DeviceView) -> String {
    if !d.memory_known {
        return "N/A".into();
    }
    let total = d.l1_total.map_or_else(|| "?".into(), human_bytes);
    format!("{} / {total}", human_bytes(d.l1_resident()))
}

/// Whether the device's firmware heartbeat has stopped advancing.
pub fn heartbeat_stalled(d: &DeviceView) -> bool {
    d.telemetry.has(TEL_HEARTBEAT)
        && d.telemetry.heartbeat_stalled_samples >= HEARTBEAT_STALL_SAMPLES
}

/// "bundle 80.10.0.0 · arc 2.30.0.0 · eth 6.14.0 · ...", the versions the driver reports.
pub fn firmware_text(d: &DeviceView) -> String {
    let mut parts = Vec::new();
    if !d.fw_bundle.is_empty() {
        parts.push(format!("bundle {}", d.fw_bundle));
    }
    for (name, v) in d.telemetry.firmware() {
        if let Some(s) = version_text(v) {
            parts.push(format!("{name} {s}"));
        }
    }
    if parts.is_empty() {
        "N/A".into()
    } else {
        parts.join(" · ")
    }
}

/// One telemetry reading as the telemetry view lists it.
pub struct TelemetryRow {
    pub field: &'static str,
    pub value: String,
    pub limit: String,
    /// Drawn as a warning (a stalled heartbeat).
    pub alarm: bool,
}

/// Every telemetry reading of a device, "N/A" where the driver gave none.
pub fn telemetry_rows(d: &DeviceView) -> Vec<TelemetryRow> {
    let t = &d.telemetry;
    let na = || "N/A".to_string();
    let unit = |v: Option<f64>, u: &str| v.map_or_else(na, |v| format!("{v:.1} {u}"));
    let raw = |bit: u64, v: u64, u: &str| if t.has(bit) { format!("{v} {u}") } else { na() };
    let row = |field, value, limit| TelemetryRow {
        field,
        value,
        limit,
        alarm: false,
    };
    let pcie_max = t.pcie_max_speed_gts().map_or_else(String::new, |s| {
        format!("max {s:.1} GT/s x{}", t.pcie_max_link_width)
    });
    let traffic = format!(
        "to device {}/s, to host {}/s",
        human_bytes(t.pcie_h2d_bytes_per_s),
        human_bytes(t.pcie_d2h_bytes_per_s)
    );
    let stalled = heartbeat_stalled(d);
    let beat = format!("{}{}", t.heartbeat, if stalled { " (STALLED)" } else { "" });
    let or_na = |bit: u64, s: String| if t.has(bit) { s } else { na() };
    vec![
        row(
            "ASIC temperature",
            unit(t.temp_c(), "°C"),
            unit(t.temp_max_c(), "°C"),
        ),
        row("Power", unit(t.power_w(), "W"), unit(t.power_max_w(), "W")),
        row(
            "Core voltage",
            raw(TEL_VCORE, t.vcore_mv, "mV"),
            raw(TEL_VCORE_MAX, t.vcore_max_mv, "mV"),
        ),
        row(
            "Current",
            unit(t.current_a(), "A"),
            unit(t.current_max_a(), "A"),
        ),
        row("Fan", raw(TEL_FAN, t.fan_rpm, "RPM"), String::new()),
        row("AICLK", raw(TEL_AICLK, t.aiclk_mhz, "MHz"), String::new()),
        row(
            "AXICLK",
            raw(TEL_AXICLK, t.axiclk_mhz, "MHz"),
            String::new(),
        ),
        row(
            "ARCCLK",
            raw(TEL_ARCCLK, t.arcclk_mhz, "MHz"),
            String::new(),
        ),
        TelemetryRow {
            alarm: stalled,
            ..row(
                "Firmware heartbeat",
                or_na(TEL_HEARTBEAT, beat),
                String::new(),
            )
        },
        row(
            "Thermal trips",
            or_na(TEL_THERM_TRIP, t.therm_trip_count.to_string()),
            String::new(),
        ),
        row(
            "PCIe link",
            t.pcie_speed_gts()
                .map_or_else(na, |s| format!("{s:.1} GT/s x{}", t.pcie_link_width)),
            pcie_max,
        ),
        row(
            "PCIe traffic",
            or_na(TEL_PCIE_TRAFFIC, traffic),
            String::new(),
        ),
        row("Firmware", firmware_text(d), String::new()),
        row(
            "ASIC id",
            if d.asic_id.is_empty() {
                na()
            } else {
                d.asic_id.clone()
            },
            String::new(),
        ),
    ]
}

/// A column of the process tables: a category's bytes in use (or its peak) for one
/// process on one device.
pub struct ProcessColumn {
    pub header: &'static str,
    pub cat: usize,
    pub peak: bool,
    /// Kept when the live view is too narrow for every column.
    pub narrow: bool,
}

impl ProcessColumn {
    pub fn cell(&self, d: &ProcDevView) -> String {
        human_bytes(if self.peak {
            d.peak[self.cat]
        } else {
            d.used[self.cat]
        })
    }
}

const fn column(header: &'static str, cat: usize, peak: bool, narrow: bool) -> ProcessColumn {
    ProcessColumn {
        header,
        cat,
        peak,
        narrow,
    }
}

/// The process tables' figure columns, in order.
pub const PROCESS_COLUMNS: [ProcessColumn; 8] = [
    column(CAT_DISPLAY[CAT_DRAM], CAT_DRAM, false, true),
    column(CAT_DISPLAY[CAT_L1], CAT_L1, false, true),
    column(CAT_DISPLAY[CAT_L1_SMALL], CAT_L1_SMALL, false, false),
    column(CAT_DISPLAY[CAT_TRACE], CAT_TRACE, false, false),
    column(CAT_DISPLAY[CAT_CB], CAT_CB, false, true),
    column(CAT_DISPLAY[CAT_KERNEL], CAT_KERNEL, false, true),
    column("Peak DRAM", CAT_DRAM, true, true),
    column("Peak L1", CAT_L1, true, true),
];

/// A process row's mark after its pid: untracked (`untracked`, as each view spells
/// it), or " *" for inexact figures.
pub fn process_mark<'a>(p: &ProcessView, untracked: &'a str) -> &'a str {
    if p.untracked {
        untracked
    } else if p.left_behind {
        " !"
    } else if p.source == "tt-metal" {
        " ~"
    } else if !p.exact {
        " *"
    } else {
        ""
    }
}

/// A process's device as the tables show it: its chip's row, and the process's own id
/// of it when that differs (`1 (0)`: the chip in row 1, the process's device 0).
pub fn device_cell(d: &ProcDevView) -> String {
    if d.logical_id >= 0 && d.logical_id != d.id {
        format!("{} ({})", d.id, d.logical_id)
    } else {
        d.id.to_string()
    }
}

/// The process tables' rows: PID, Name, Dev, then `columns`; one row per device of
/// each process (pid and name on its first), one row with "-" for a process on none.
/// Each row comes with its process.
pub fn process_rows<'p>(
    procs: &[&'p ProcessView],
    columns: &[&ProcessColumn],
    untracked_mark: &str,
) -> Vec<(&'p ProcessView, Vec<String>)> {
    let mut rows = Vec::new();
    for &p in procs {
        let pid = format!("{}{}", p.pid, process_mark(p, untracked_mark));
        if p.devices.is_empty() {
            rows.push((p, vec![pid, p.name.clone(), "-".into()]));
            continue;
        }
        for (i, d) in p.devices.iter().enumerate() {
            let (pid, name) = if i == 0 {
                (pid.clone(), p.name.clone())
            } else {
                (String::new(), String::new())
            };
            let mut cells = vec![pid, name, device_cell(d)];
            cells.extend(columns.iter().map(|c| c.cell(d)));
            rows.push((p, cells));
        }
    }
    rows
}
