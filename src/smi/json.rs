//! `tt-smi --json`: one JSON document (schema 1, documented in the README).

use super::model::{DeviceView, Model, ProcessView};
use crate::counters_page::*;
use serde_json::{json, Value};

fn opt<T: Into<Value>>(ok: bool, v: T) -> Value {
    if ok {
        v.into()
    } else {
        Value::Null
    }
}

/// Telemetry fields, `null` where not read.
pub fn telemetry_json(t: &Telemetry) -> Value {
    let has = |bit: u64| t.valid & bit != 0;
    json!({
        "asic_temp_c": t.temp_c(),
        "asic_temp_max_c": t.temp_max_c(),
        "power_w": t.power_w(),
        "power_max_w": t.power_max_w(),
        "vcore_mv": opt(has(TEL_VCORE), t.vcore_mv),
        "vcore_max_mv": opt(has(TEL_VCORE_MAX), t.vcore_max_mv),
        "current_a": t.current_a(),
        "current_max_a": t.current_max_a(),
        "fan_rpm": opt(has(TEL_FAN), t.fan_rpm),
        "aiclk_mhz": opt(has(TEL_AICLK), t.aiclk_mhz),
        "axiclk_mhz": opt(has(TEL_AXICLK), t.axiclk_mhz),
        "arcclk_mhz": opt(has(TEL_ARCCLK), t.arcclk_mhz),
        "heartbeat": opt(has(TEL_HEARTBEAT), t.heartbeat),
        "heartbeat_stalled": opt(has(TEL_HEARTBEAT), t.heartbeat_stalled_samples >= HEARTBEAT_STALL_SAMPLES),
        "thermal_trip_count": opt(has(TEL_THERM_TRIP), t.therm_trip_count),
        "pcie_link_speed_gts": t.pcie_speed_gts(),
        "pcie_link_width": opt(has(TEL_PCIE), t.pcie_link_width),
        "pcie_max_link_speed_gts": t.pcie_max_speed_gts(),
        "pcie_max_link_width": opt(has(TEL_PCIE_MAX), t.pcie_max_link_width),
        "pcie_host_to_device_bytes": opt(has(TEL_PCIE_TRAFFIC), t.pcie_h2d_bytes),
        "pcie_device_to_host_bytes": opt(has(TEL_PCIE_TRAFFIC), t.pcie_d2h_bytes),
        "pcie_host_to_device_bytes_per_s": opt(has(TEL_PCIE_TRAFFIC), t.pcie_h2d_bytes_per_s),
        "pcie_device_to_host_bytes_per_s": opt(has(TEL_PCIE_TRAFFIC), t.pcie_d2h_bytes_per_s),
        "firmware": t
            .firmware()
            .iter()
            .map(|&(name, v)| (name.to_string(), json!(version_text(v))))
            .collect::<serde_json::Map<_, _>>(),
    })
}

/// The whole document.
pub fn render(m: &Model) -> String {
    render_with_maps(m, &[])
}

/// The memory types an address map can be drawn for.
const MAPPED: [usize; 4] = [CAT_DRAM, CAT_L1, CAT_L1_SMALL, CAT_TRACE];

/// The whole document, each device's memory types with what their address maps
/// (`maps`: the aggregator's `map` answer, [`crate::accounting::maps`]) say: free bytes
/// and the largest free block per bank, as TT-Metal's out-of-memory message gives them,
/// and fragmentation; null where no process reported that type's banks.
pub fn render_with_maps(m: &Model, maps: &[Value]) -> String {
    let mut s = render_doc(m, maps);
    s.push('\n');
    s
}

fn render_doc(m: &Model, maps: &[Value]) -> String {
    let time = humantime::format_rfc3339_seconds(m.time).to_string();
    let mut doc = json!({
        "schema": 1,
        "time": time,
        "aggregator": aggregator_json(m),
        "devices": m.devices.iter().map(device_json).collect::<Vec<_>>(),
        "processes": m.processes.iter().map(process_json).collect::<Vec<_>>(),
    });
    if let Some(devices) = doc["devices"].as_array_mut() {
        for d in devices {
            let id = d["id"].clone();
            for c in MAPPED {
                let t = CAT_DISPLAY[c];
                let map = maps.iter().find(|x| x["device"] == id && x["type"] == t);
                let field = |k: &str| map.map_or(Value::Null, |x| x[k].clone());
                let o = &mut d["memory"][CAT_NAMES[c]];
                if o.is_object() {
                    o["free_bytes_per_bank"] = field("free_bytes_per_bank");
                    o["largest_free_block_bytes"] = field("largest_free_block_bytes");
                    o["fragmentation"] = field("fragmentation");
                    o["num_banks"] = field("num_banks");
                }
            }
        }
    }
    serde_json::to_string_pretty(&doc).unwrap_or_else(|_| "{}".into())
}

fn aggregator_json(m: &Model) -> Value {
    match &m.aggregator {
        Some(a) => json!({
            "running": true,
            "pid": a.pid,
            "uptime_s": (a.uptime_s * 1000.0).round() / 1000.0,
            "events_applied": a.events_applied,
            "events_lost": a.events_lost,
            "unknown_frees": a.unknown_frees,
            "invalid_events": a.invalid_events,
            "processes_tracked": a.processes_tracked,
            "segments_rejected": a.segments_rejected,
        }),
        None => json!({
            "running": false, "pid": null, "uptime_s": null, "events_applied": null,
            "events_lost": null, "unknown_frees": null, "invalid_events": null,
            "processes_tracked": null, "segments_rejected": null,
            "message": m.not_running,
        }),
    }
}

/// The kernel subtypes, inside the kernel figure rather than beside it.
const KERNEL_SUBTYPES: [(usize, &str); 3] = [
    (CAT_KERNEL_APP, "application_bytes"),
    (CAT_KERNEL_FABRIC, "fabric_bytes"),
    (CAT_KERNEL_DISPATCH, "dispatch_bytes"),
];

/// A device's memory: one figure per category, named as everywhere (`CAT_NAMES`).
fn memory_json(d: &DeviceView) -> Value {
    let (f, k) = (&d.figures, d.memory_known);
    let mut memory = serde_json::Map::new();
    for (c, name) in categories().filter(|(c, _)| KERNEL_SUBTYPES.iter().all(|s| s.0 != *c)) {
        let mut o = serde_json::Map::new();
        o.insert("used_bytes".into(), opt(k, f[c].used));
        let total = match c {
            CAT_DRAM => Some(d.dram_total),
            CAT_L1 => Some(d.l1_total),
            _ => None,
        };
        if let Some(t) = total {
            o.insert(
                "total_bytes".into(),
                t.map(Value::from).unwrap_or(Value::Null),
            );
        }
        o.insert("peak_bytes".into(), opt(k, f[c].peak));
        let counted = if matches!(c, CAT_CB | CAT_KERNEL) {
            "count"
        } else {
            "buffers"
        };
        o.insert(counted.into(), opt(k, f[c].count));
        if c == CAT_KERNEL {
            for (s, key) in KERNEL_SUBTYPES {
                o.insert(key.into(), opt(k, f[s].used));
            }
        }
        memory.insert(name.into(), Value::Object(o));
    }
    Value::Object(memory)
}

fn device_json(d: &DeviceView) -> Value {
    let text = |s: &str| if s.is_empty() { Value::Null } else { s.into() };
    json!({
        "id": d.id,
        "arch": text(&d.arch),
        "board": text(&d.board),
        "remote": d.remote,
        "via_device": d.via,
        "owner_pid": d.owner_pid,
        "gone": d.gone,
        "serial": text(&d.serial),
        "pci_address": text(&d.pci_bdf),
        "asic_id": text(&d.asic_id),
        "firmware_bundle": text(&d.fw_bundle),
        "l1_resident_peak_bytes": opt(d.memory_known, d.l1_resident_peak),
        "memory": memory_json(d),
        "telemetry": telemetry_json(&d.telemetry),
    })
}

fn process_json(p: &ProcessView) -> Value {
    let devices: Vec<Value> = p
        .devices
        .iter()
        .map(|d| {
            let mut o = serde_json::Map::new();
            o.insert("id".into(), d.id.into());
            o.insert("logical_id".into(), d.logical_id.into());
            o.insert("placement".into(), d.placement.into());
            for (c, name) in categories().filter(|(c, _)| KERNEL_SUBTYPES.iter().all(|s| s.0 != *c))
            {
                o.insert(format!("{name}_bytes"), d.used[c].into());
            }
            for (c, name) in categories().filter(|(c, _)| KERNEL_SUBTYPES.iter().all(|s| s.0 != *c))
            {
                o.insert(format!("peak_{name}_bytes"), d.peak[c].into());
            }
            Value::Object(o)
        })
        .collect();
    let region = p.region_used.map(|u| {
        DEVICE_CATS
            .iter()
            .zip(u)
            .map(|(&c, v)| (format!("{}_bytes", CAT_NAMES[c]), Value::from(v)))
            .collect::<serde_json::Map<_, _>>()
    });
    let exact_note = match p.source {
        "tt-metal" => Value::from(
            "counters from TT-Metal's own region: no buffers, CBs as TT-Metal keeps them",
        ),
        _ => Value::Null,
    };
    json!({
        "pid": p.pid,
        "name": p.name,
        "source": p.source,
        "alive": !p.left_behind,
        "left_behind": p.left_behind,
        "region_file": p.region_file,
        "tt_metal_region": region,
        "exact": p.exact,
        "exact_note": exact_note,
        "events_lost": p.events_lost,
        "untracked": p.untracked,
        "devices_truncated": p.devices_truncated,
        "device_mapping": p.device_mapping(),
        "buffers": p.buffers,
        "devices": devices,
    })
}
