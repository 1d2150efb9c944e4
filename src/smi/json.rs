//! `tt-smi --json`: one JSON document (schema 1, documented in the README).

use super::model::Model;
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
        "asic_temp_c": opt(has(TEL_TEMP), t.asic_temp_mc as f64 / 1000.0),
        "asic_temp_max_c": opt(has(TEL_TEMP_MAX), t.temp_max_mc as f64 / 1000.0),
        "power_w": opt(has(TEL_POWER), t.power_uw as f64 / 1e6),
        "power_max_w": opt(has(TEL_POWER_MAX), t.power_max_uw as f64 / 1e6),
        "vcore_mv": opt(has(TEL_VCORE), t.vcore_mv),
        "vcore_max_mv": opt(has(TEL_VCORE_MAX), t.vcore_max_mv),
        "current_a": opt(has(TEL_CURRENT), t.current_ma as f64 / 1000.0),
        "current_max_a": opt(has(TEL_CURRENT_MAX), t.current_max_ma as f64 / 1000.0),
        "fan_rpm": opt(has(TEL_FAN), t.fan_rpm),
        "aiclk_mhz": opt(has(TEL_AICLK), t.aiclk_mhz),
        "axiclk_mhz": opt(has(TEL_AXICLK), t.axiclk_mhz),
        "arcclk_mhz": opt(has(TEL_ARCCLK), t.arcclk_mhz),
        "heartbeat": opt(has(TEL_HEARTBEAT), t.heartbeat),
        "heartbeat_stalled": opt(has(TEL_HEARTBEAT), t.heartbeat_stalled_samples >= HEARTBEAT_STALL_SAMPLES),
        "thermal_trip_count": opt(has(TEL_THERM_TRIP), t.therm_trip_count),
        "pcie_link_speed_gts": opt(has(TEL_PCIE), t.pcie_link_speed_milli_gts as f64 / 1000.0),
        "pcie_link_width": opt(has(TEL_PCIE), t.pcie_link_width),
        "pcie_max_link_speed_gts": opt(has(TEL_PCIE_MAX), t.pcie_max_link_speed_milli_gts as f64 / 1000.0),
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

pub fn render(m: &Model) -> String {
    let time = humantime::format_rfc3339_seconds(m.time).to_string();
    let aggregator = match &m.aggregator {
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
    };
    let devices: Vec<Value> = m
        .devices
        .iter()
        .map(|d| {
            let f = &d.figures;
            let k = d.memory_known;
            let fig = |c: usize, total: Option<Option<u64>>, count_name: &str| {
                let mut o = serde_json::Map::new();
                o.insert("used_bytes".into(), opt(k, f[c].used));
                if let Some(t) = total {
                    o.insert(
                        "total_bytes".into(),
                        t.map(Value::from).unwrap_or(Value::Null),
                    );
                }
                o.insert("peak_bytes".into(), opt(k, f[c].peak));
                o.insert(count_name.into(), opt(k, f[c].count));
                Value::Object(o)
            };
            let mut kernel = fig(CAT_KERNEL, None, "count");
            if let Value::Object(o) = &mut kernel {
                o.insert("application_bytes".into(), opt(k, f[CAT_KERNEL_APP].used));
                o.insert("fabric_bytes".into(), opt(k, f[CAT_KERNEL_FABRIC].used));
                o.insert("dispatch_bytes".into(), opt(k, f[CAT_KERNEL_DISPATCH].used));
            }
            json!({
                "id": d.id,
                "arch": if d.arch.is_empty() { Value::Null } else { d.arch.clone().into() },
                "board": if d.board.is_empty() { Value::Null } else { d.board.clone().into() },
                "remote": d.remote,
                "gone": d.gone,
                "serial": if d.serial.is_empty() { Value::Null } else { d.serial.clone().into() },
                "pci_address": if d.pci_bdf.is_empty() { Value::Null } else { d.pci_bdf.clone().into() },
                "asic_id": if d.asic_id.is_empty() { Value::Null } else { d.asic_id.clone().into() },
                "firmware_bundle": if d.fw_bundle.is_empty() { Value::Null } else { d.fw_bundle.clone().into() },
                "l1_resident_peak_bytes": opt(d.memory_known, d.l1_resident_peak),
                "memory": {
                    "dram": fig(CAT_DRAM, Some(d.dram_total), "buffers"),
                    "l1": fig(CAT_L1, Some(d.l1_total), "buffers"),
                    "l1_small": fig(CAT_L1_SMALL, None, "buffers"),
                    "trace": fig(CAT_TRACE, None, "buffers"),
                    "system_memory": fig(CAT_SYSTEM_MEMORY, None, "buffers"),
                    "cb": fig(CAT_CB, None, "count"),
                    "kernel": kernel,
                },
                "telemetry": telemetry_json(&d.telemetry),
            })
        })
        .collect();
    let processes: Vec<Value> = m
        .processes
        .iter()
        .map(|p| {
            json!({
                "pid": p.pid,
                "name": p.name,
                "exact": p.exact,
                "events_lost": p.events_lost,
                "untracked": p.untracked,
                "devices_truncated": p.devices_truncated,
                "buffers": p.buffers,
                "devices": p.devices.iter().map(|d| json!({
                    "id": d.id,
                    "dram_bytes": d.used[CAT_DRAM],
                    "l1_bytes": d.used[CAT_L1],
                    "l1_small_bytes": d.used[CAT_L1_SMALL],
                    "trace_bytes": d.used[CAT_TRACE],
                    "system_memory_bytes": d.used[CAT_SYSTEM_MEMORY],
                    "cb_bytes": d.used[CAT_CB],
                    "kernel_bytes": d.used[CAT_KERNEL],
                    "peak_dram_bytes": d.peak[CAT_DRAM],
                    "peak_l1_bytes": d.peak[CAT_L1],
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let doc = json!({
        "schema": 1,
        "time": time,
        "aggregator": aggregator,
        "devices": devices,
        "processes": processes,
    });
    let mut s = serde_json::to_string_pretty(&doc).unwrap_or_else(|_| "{}".into());
    s.push('\n');
    s
}
