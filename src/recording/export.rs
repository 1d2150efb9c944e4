//! `tt-track export`: a recording as Chrome trace-event JSON (which Perfetto and
//! chrome://tracing load), or as CSV.
//!
//! Perfetto: each device is a track group (a "process" of the trace, pid
//! [`DEVICE_PID_BASE`] + its id) with one counter per memory type, in bytes; each
//! recorded process has its own counters per device and type; instant events mark a
//! process's end and each buffer it leaked. Timestamps are microseconds since the
//! recording began.

use super::analysis::Report;
use super::Recording;
use crate::counters_page::CAT_NAMES;
use serde_json::{json, Value};

/// Trace "process" ids of the device tracks: far above any real pid (at most 2^22).
pub const DEVICE_PID_BASE: u64 = 1 << 24;

fn us(t_ms: u64) -> u64 {
    t_ms.saturating_mul(1000)
}

/// The Chrome trace-event JSON of a recording.
pub fn perfetto(rec: &Recording, r: &Report) -> String {
    let mut ev: Vec<Value> = Vec::new();
    for d in &r.devices {
        let name = d.name();
        ev.push(json!({
            "name": "process_name", "ph": "M", "pid": DEVICE_PID_BASE + d.id as u64, "tid": 0,
            "args": { "name": format!("device {} {name}", d.id).trim_end().to_string() }
        }));
        ev.push(json!({
            "name": "process_sort_index", "ph": "M", "pid": DEVICE_PID_BASE + d.id as u64, "tid": 0,
            "args": { "sort_index": d.id }
        }));
    }
    for (&(row, cat), points) in &r.timeline {
        for &(t, v) in points {
            ev.push(json!({
                "name": format!("{} bytes", CAT_NAMES[cat]), "ph": "C", "ts": us(t),
                "pid": DEVICE_PID_BASE + row as u64, "tid": 0, "args": { "bytes": v }
            }));
        }
    }
    for p in &r.processes {
        ev.push(json!({
            "name": "process_name", "ph": "M", "pid": p.pid, "tid": 0,
            "args": { "name": format!("{} (pid {})", p.comm, p.pid) }
        }));
        if let Some(end) = p.ended_at_s {
            ev.push(json!({
                "name": format!("pid {} ended holding {}", p.pid, crate::sys::human_bytes(p.leaked_bytes)),
                "ph": "i", "s": "p", "ts": (end * 1e6) as u64, "pid": p.pid, "tid": 0
            }));
        }
    }
    for (&(pid, row, cat), points) in &r.process_timeline {
        for &(t, v) in points {
            ev.push(json!({
                "name": format!("{} bytes on device {row}", CAT_NAMES[cat]), "ph": "C", "ts": us(t),
                "pid": pid, "tid": 0, "args": { "bytes": v }
            }));
        }
    }
    for l in &r.leaks {
        let end = r
            .processes
            .iter()
            .find(|p| p.pid == l.pid)
            .and_then(|p| p.ended_at_s)
            .unwrap_or(r.duration_s);
        ev.push(json!({
            "name": format!("leaked {} {} at {:#x}", crate::sys::human_bytes(l.size), l.kind, l.address),
            "ph": "i", "s": "p", "ts": (end * 1e6) as u64, "pid": l.pid, "tid": 0,
            "args": { "device": l.device, "size": l.size, "address": format!("{:#x}", l.address),
                      "allocated_at_s": l.allocated_at_s }
        }));
    }
    let doc = json!({
        "displayTimeUnit": "ms",
        "metadata": { "command": rec.meta.command, "host": rec.meta.host,
                      "started_unix_ms": rec.meta.started_unix_ms, "source": "tttrack" },
        "traceEvents": ev,
    });
    serde_json::to_string(&doc).unwrap_or_default() + "\n"
}

/// CSV: one row per change of a figure, the device's (pid empty) and each process's.
pub fn csv(r: &Report) -> String {
    let mut o = String::from("time_s,device,type,pid,used_bytes\n");
    for (&(row, cat), points) in &r.timeline {
        for &(t, v) in points {
            o += &format!("{:.3},{row},{},,{v}\n", t as f64 / 1000.0, CAT_NAMES[cat]);
        }
    }
    for (&(pid, row, cat), points) in &r.process_timeline {
        for &(t, v) in points {
            o += &format!(
                "{:.3},{row},{},{pid},{v}\n",
                t as f64 / 1000.0,
                CAT_NAMES[cat]
            );
        }
    }
    o
}
