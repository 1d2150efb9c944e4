//! `tt-smi --query-device=FIELDS` / `--query-process=FIELDS` with `--format=csv`: the
//! figures for scripts, with field names as nvidia-smi names them where they mean the
//! same. One table of fields (name, unit, help, value) for the output and `--help-query`.

use super::model::{DeviceView, Model, ProcDevView, ProcessView};
use crate::counters_page::*;

const MIB: f64 = 1024.0 * 1024.0;

/// How a value is written: `unit` after it (and in the header) unless `nounits`.
pub struct Value {
    text: Option<String>,
}

fn num(v: Option<f64>, decimals: usize) -> Value {
    Value {
        text: v.map(|x| format!("{x:.decimals$}")),
    }
}

fn int(v: Option<u64>) -> Value {
    Value {
        text: v.map(|x| x.to_string()),
    }
}

fn text(s: &str) -> Value {
    Value {
        text: (!s.is_empty()).then(|| s.to_string()),
    }
}

type DevFn = fn(&DeviceView) -> Value;
type ProcFn = fn(&ProcessView, &ProcDevView, &Model) -> Value;

/// A device field: name, unit ("" for none), what it is, its value.
pub struct DeviceField(pub &'static str, pub &'static str, pub &'static str, DevFn);
/// A process field (one row per process and device).
pub struct ProcessField(pub &'static str, pub &'static str, pub &'static str, ProcFn);

fn tel(d: &DeviceView, bit: u64) -> bool {
    d.telemetry.valid & bit != 0
}

fn mib(b: u64) -> f64 {
    b as f64 / MIB
}

pub const DEVICE_FIELDS: &[DeviceField] = &[
    DeviceField(
        "index",
        "",
        "device id (a local chip's /dev/tenstorrent index)",
        |d| int(Some(d.id as u64)),
    ),
    DeviceField(
        "name",
        "",
        "architecture and board, e.g. Wormhole n300",
        |d| text(&d.display_name()),
    ),
    DeviceField(
        "arch",
        "",
        "architecture (wormhole_b0, blackhole, ...)",
        |d| text(&d.arch),
    ),
    DeviceField("board", "", "board (n150, n300, p150a, ...)", |d| {
        text(&d.board)
    }),
    DeviceField("serial", "", "board serial (tt_serial)", |d| {
        text(&d.serial)
    }),
    DeviceField("uuid", "", "ASIC id (tt_asic_id)", |d| text(&d.asic_id)),
    DeviceField("pci.bus_id", "", "PCI address of a local chip", |d| {
        text(&d.pci_bdf)
    }),
    DeviceField("remote", "", "yes for a chip reached over Ethernet", |d| {
        text(if d.remote { "yes" } else { "no" })
    }),
    DeviceField("memory.total", "MiB", "DRAM size", |d| {
        num(d.dram_total.map(mib), 0)
    }),
    DeviceField("memory.used", "MiB", "DRAM in use", |d| {
        num(d.memory_known.then(|| mib(d.figures[CAT_DRAM].used)), 0)
    }),
    DeviceField("memory.free", "MiB", "DRAM not in use", |d| {
        num(
            d.dram_total
                .filter(|_| d.memory_known)
                .map(|t| mib(t.saturating_sub(d.figures[CAT_DRAM].used))),
            0,
        )
    }),
    DeviceField("memory.peak", "MiB", "DRAM high-water mark", |d| {
        num(d.memory_known.then(|| mib(d.figures[CAT_DRAM].peak)), 0)
    }),
    DeviceField(
        "utilization.memory",
        "%",
        "DRAM in use, percent of its size",
        |d| {
            num(
                d.dram_total
                    .filter(|&t| t > 0 && d.memory_known)
                    .map(|t| 100.0 * d.figures[CAT_DRAM].used as f64 / t as f64),
                1,
            )
        },
    ),
    DeviceField("l1.total", "MiB", "L1 size (all Tensix cores)", |d| {
        num(d.l1_total.map(mib), 1)
    }),
    DeviceField(
        "l1.used",
        "MiB",
        "everything L1-resident: buffers, L1_SMALL, CBs, kernels",
        |d| num(d.memory_known.then(|| mib(d.l1_resident())), 1),
    ),
    DeviceField(
        "l1.peak",
        "MiB",
        "high-water mark of everything L1-resident",
        |d| num(d.memory_known.then(|| mib(d.l1_resident_peak)), 1),
    ),
    DeviceField("temperature.gpu", "C", "ASIC temperature", |d| {
        num(d.telemetry.temp_c(), 1)
    }),
    DeviceField(
        "temperature.limit",
        "C",
        "ASIC temperature throttle limit",
        |d| num(d.telemetry.temp_max_c(), 1),
    ),
    DeviceField("power.draw", "W", "chip (TDP) power", |d| {
        num(d.telemetry.power_w(), 1)
    }),
    DeviceField("power.limit", "W", "chip power limit", |d| {
        num(d.telemetry.power_max_w(), 1)
    }),
    DeviceField("voltage.core", "mV", "core voltage", |d| {
        int(tel(d, TEL_VCORE).then_some(d.telemetry.vcore_mv))
    }),
    DeviceField("current", "A", "chip current", |d| {
        num(d.telemetry.current_a(), 1)
    }),
    DeviceField("fan.rpm", "RPM", "fan speed", |d| {
        int(tel(d, TEL_FAN).then_some(d.telemetry.fan_rpm))
    }),
    DeviceField("clocks.ai", "MHz", "AI clock (AICLK)", |d| {
        int(tel(d, TEL_AICLK).then_some(d.telemetry.aiclk_mhz))
    }),
    DeviceField("clocks.axi", "MHz", "AXI clock", |d| {
        int(tel(d, TEL_AXICLK).then_some(d.telemetry.axiclk_mhz))
    }),
    DeviceField("clocks.arc", "MHz", "ARC clock", |d| {
        int(tel(d, TEL_ARCCLK).then_some(d.telemetry.arcclk_mhz))
    }),
    DeviceField(
        "pcie.link.speed.current",
        "GT/s",
        "PCIe link speed as trained",
        |d| num(d.telemetry.pcie_speed_gts(), 1),
    ),
    DeviceField(
        "pcie.link.width.current",
        "",
        "PCIe link width as trained",
        |d| int(tel(d, TEL_PCIE).then_some(d.telemetry.pcie_link_width)),
    ),
    DeviceField(
        "pcie.link.width.max",
        "",
        "widest PCIe link the card and slot can train",
        |d| int(tel(d, TEL_PCIE_MAX).then_some(d.telemetry.pcie_max_link_width)),
    ),
    DeviceField(
        "heartbeat.stalled",
        "",
        "yes when the firmware heartbeat stopped",
        |d| Value {
            text: tel(d, TEL_HEARTBEAT).then(|| {
                if d.telemetry.heartbeat_stalled_samples >= HEARTBEAT_STALL_SAMPLES {
                    "yes".into()
                } else {
                    "no".into()
                }
            }),
        },
    ),
];

pub const PROCESS_FIELDS: &[ProcessField] = &[
    ProcessField("pid", "", "process id", |p, _, _| int(Some(p.pid as u64))),
    ProcessField("process_name", "", "its name (comm)", |p, _, _| {
        text(&p.name)
    }),
    ProcessField(
        "device",
        "",
        "the chip's device id, as the device rows number it (one row per process and device)",
        |_, d, _| int(Some(d.id as u64)),
    ),
    ProcessField(
        "logical_device",
        "",
        "the process's own id of that device (its TT-Metal device id); N/A for a card it holds without reporting",
        |_, d, _| int(u64::try_from(d.logical_id).ok()),
    ),
    ProcessField(
        "placement",
        "",
        "how the device was placed on its chip: reported, inferred (TT_VISIBLE_DEVICES), unplaced, as_reported, holder",
        |_, d, _| text(d.placement),
    ),
    ProcessField(
        "used_memory",
        "MiB",
        "DRAM it holds on that device",
        |_, d, _| num(Some(mib(d.used[CAT_DRAM])), 0),
    ),
    ProcessField(
        "peak_memory",
        "MiB",
        "its DRAM high-water mark on that device",
        |_, d, _| num(Some(mib(d.peak[CAT_DRAM])), 0),
    ),
    ProcessField(
        "l1.used",
        "MiB",
        "L1 buffers it holds on that device",
        |_, d, _| num(Some(mib(d.used[CAT_L1])), 1),
    ),
    ProcessField("l1_small.used", "MiB", "L1_SMALL it holds", |_, d, _| {
        num(Some(mib(d.used[CAT_L1_SMALL])), 1)
    }),
    ProcessField("trace.used", "MiB", "TRACE it holds", |_, d, _| {
        num(Some(mib(d.used[CAT_TRACE])), 1)
    }),
    ProcessField("cb.used", "MiB", "circular buffers it holds", |_, d, _| {
        num(Some(mib(d.used[CAT_CB])), 1)
    }),
    ProcessField("kernel.used", "MiB", "kernels it has loaded", |_, d, _| {
        num(Some(mib(d.used[CAT_KERNEL])), 1)
    }),
    ProcessField("buffers", "", "live buffers (all devices)", |p, _, _| {
        int(Some(p.buffers))
    }),
    ProcessField("exact", "", "no if events were lost for it", |p, _, _| {
        text(if p.exact { "yes" } else { "no" })
    }),
    ProcessField(
        "events_lost",
        "",
        "events that never reached the figures",
        |p, _, _| int(Some(p.events_lost)),
    ),
    ProcessField(
        "tracked",
        "",
        "no for a process holding a device without reporting",
        |p, _, _| text(if p.untracked { "no" } else { "yes" }),
    ),
    ProcessField(
        "source",
        "",
        "lanes, socket, tt-metal (TT-Metal's own region: counters only) or none",
        |p, _, _| text(p.source),
    ),
    ProcessField(
        "left_behind",
        "",
        "yes for bytes TT-Metal's region still counts for a process that is gone",
        |p, _, _| text(if p.left_behind { "yes" } else { "no" }),
    ),
];

/// `--format=csv[,noheader][,nounits]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Format {
    pub header: bool,
    pub units: bool,
}

/// Parses `--format`; the error says what is accepted.
pub fn parse_format(s: &str) -> Result<Format, String> {
    let mut f = Format {
        header: true,
        units: true,
    };
    let mut parts = s.split(',').map(str::trim);
    if parts.next() != Some("csv") {
        return Err(format!(
            "--format={s}: only csv is supported, with noheader and nounits (e.g. --format=csv,noheader)"
        ));
    }
    for p in parts {
        match p {
            "noheader" => f.header = false,
            "nounits" => f.units = false,
            other => {
                return Err(format!(
                    "--format: unknown option {other:?} (csv, noheader, nounits)"
                ))
            }
        }
    }
    Ok(f)
}

/// The named fields, in the order given; an unknown name is an error naming it.
fn pick<'a, T>(
    list: &str,
    all: &'a [T],
    name: fn(&T) -> &'static str,
    what: &str,
) -> Result<Vec<&'a T>, String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|n| {
            all.iter().find(|f| name(f) == n).ok_or_else(|| {
                format!("unknown {what} field {n:?}; tt-smi --help-query lists them")
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .and_then(|v| {
            if v.is_empty() {
                Err(format!(
                    "no {what} fields given; tt-smi --help-query lists them"
                ))
            } else {
                Ok(v)
            }
        })
}

/// A CSV cell: quoted when it holds a comma, a quote or a line break.
fn cell(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn header(fields: &[(&str, &str)], f: Format) -> String {
    let cols: Vec<String> = fields
        .iter()
        .map(|(n, u)| {
            if f.units && !u.is_empty() {
                cell(&format!("{n} [{u}]"))
            } else {
                cell(n)
            }
        })
        .collect();
    cols.join(", ") + "\n"
}

fn value(v: Value, unit: &str, f: Format) -> String {
    match v.text {
        None => "N/A".into(),
        Some(t) if f.units && !unit.is_empty() => cell(&format!("{t} {unit}")),
        Some(t) => cell(&t),
    }
}

/// The device table: one row per device.
pub fn devices(m: &Model, list: &str, f: Format, with_header: bool) -> Result<String, String> {
    let fields = pick(list, DEVICE_FIELDS, |x| x.0, "device")?;
    let mut o = String::new();
    if f.header && with_header {
        o += &header(&fields.iter().map(|x| (x.0, x.1)).collect::<Vec<_>>(), f);
    }
    for d in &m.devices {
        let row: Vec<String> = fields.iter().map(|x| value((x.3)(d), x.1, f)).collect();
        o += &(row.join(", ") + "\n");
    }
    Ok(o)
}

/// The process table: one row per process and device it uses.
pub fn processes(m: &Model, list: &str, f: Format, with_header: bool) -> Result<String, String> {
    let fields = pick(list, PROCESS_FIELDS, |x| x.0, "process")?;
    let mut o = String::new();
    if f.header && with_header {
        o += &header(&fields.iter().map(|x| (x.0, x.1)).collect::<Vec<_>>(), f);
    }
    for p in &m.processes {
        for d in &p.devices {
            let row: Vec<String> = fields
                .iter()
                .map(|x| value((x.3)(p, d, m), x.1, f))
                .collect();
            o += &(row.join(", ") + "\n");
        }
    }
    Ok(o)
}

/// `--help-query`: every field, its unit and what it is.
pub fn help() -> String {
    let mut o = String::from(
        "tt-smi --query-device=FIELD,... [--format=csv[,noheader][,nounits]] [-l SECONDS | -lms MS]\n\nDevice fields:\n",
    );
    for DeviceField(n, u, h, _) in DEVICE_FIELDS {
        o += &format!("  {n:<26} {:<6} {h}\n", if u.is_empty() { "" } else { u });
    }
    o += "\ntt-smi --query-process=FIELD,... (one row per process and device)\n\nProcess fields:\n";
    for ProcessField(n, u, h, _) in PROCESS_FIELDS {
        o += &format!("  {n:<26} {:<6} {h}\n", if u.is_empty() { "" } else { u });
    }
    o += "\nValues not known (no aggregator, a remote chip's telemetry) are N/A.\n";
    o
}
