//! The recording's report as text: the summary `tt-track record` ends with, and the
//! whole of `tt-track report`.

use super::analysis::{Live, Report, TypeReport};
use crate::sys::human_bytes;
use std::fmt::Write;

/// Leaks and live buffers listed in text (the JSON has them all).
const LISTED: usize = 20;

fn used_types<'a>(
    t: &'a std::collections::BTreeMap<&'static str, TypeReport>,
) -> impl Iterator<Item = (&'a &'static str, &'a TypeReport)> {
    t.iter()
        .filter(|(_, t)| t.peak_bytes > 0 || t.allocations > 0)
}

/// A few lines: peak per device and type, and leaks.
pub fn summary_text(r: &Report) -> String {
    let mut o = String::new();
    for d in &r.devices {
        for (name, t) in used_types(&d.types) {
            let leak = if t.leaked_bytes > 0 {
                format!(
                    "; {} leaked in {} buffers",
                    human_bytes(t.leaked_bytes),
                    t.leaked_buffers
                )
            } else {
                String::new()
            };
            let _ = writeln!(
                o,
                "  device {} {name:<18} peak {:>10} at {:>8.3} s{leak}",
                d.id,
                human_bytes(t.peak_bytes),
                t.peak_at_s
            );
        }
    }
    let leaked: u64 = r.leaks.iter().map(|l| l.size).sum();
    let _ = writeln!(
        o,
        "  {} leaked buffers ({}); {}; {} events lost{}",
        r.leaks.len(),
        human_bytes(leaked),
        r.exit_text(),
        r.events_lost,
        match &r.truncated {
            Some(t) => format!("; TRUNCATED: {t}"),
            None => String::new(),
        }
    );
    o
}

fn live_table(o: &mut String, v: &[Live], indent: &str) {
    let _ = writeln!(
        o,
        "{indent}{:>10}  {:>18}  {:>8}  {:>6}  {:>12}",
        "size", "address", "pid", "device", "allocated at"
    );
    for l in v.iter().take(LISTED) {
        let at = l.allocated_at_s.map_or("-".into(), |s| format!("{s:.3} s"));
        let _ = writeln!(
            o,
            "{indent}{:>10}  {:>#18x}  {:>8}  {:>6}  {:>12}  {}",
            human_bytes(l.size),
            l.address,
            l.pid,
            l.device,
            at,
            l.kind
        );
    }
    if v.len() > LISTED {
        let _ = writeln!(o, "{indent}... and {} more", v.len() - LISTED);
    }
}

/// One device: its types, what was live at each peak, sizes.
fn device_text(o: &mut String, d: &super::analysis::DeviceReport) {
    let name = d.name();
    let _ = writeln!(
        o,
        "\nDevice {}{} {}",
        d.id,
        if d.remote { " (remote)" } else { "" },
        name
    );
    let _ = writeln!(
        o,
        "  {:<18} {:>10} {:>10} {:>9} {:>9} {:>11} {:>18} {:>14}",
        "type", "peak", "at", "allocs", "frees", "allocated", "leaked (buffers)", "temporary"
    );
    for (name, t) in used_types(&d.types) {
        let _ = writeln!(
            o,
            "  {name:<18} {:>10} {:>8.3} s {:>9} {:>9} {:>11} {:>18} {:>14}",
            human_bytes(t.peak_bytes),
            t.peak_at_s,
            t.allocations,
            t.frees,
            human_bytes(t.allocated_bytes),
            format!("{} ({})", human_bytes(t.leaked_bytes), t.leaked_buffers),
            t.temporary_allocations
        );
    }
    for (name, t) in used_types(&d.types) {
        if t.live_at_peak.is_empty() {
            continue;
        }
        let _ = writeln!(
            o,
            "  Live at the {name} peak ({} at {:.3} s), largest first:",
            human_bytes(t.peak_bytes),
            t.peak_at_s
        );
        live_table(o, &t.live_at_peak, "    ");
        if let Some(m) = &t.map_at_peak {
            let n = |k: &str| m[k].as_u64().unwrap_or(0);
            let _ = writeln!(
                o,
                "    its address map then: {} free per bank, largest free block {}, fragmentation {:.0}%",
                human_bytes(n("free_bytes_per_bank")),
                human_bytes(n("largest_free_block_bytes")),
                m["fragmentation"].as_f64().unwrap_or(0.0) * 100.0
            );
        }
    }
    for (name, t) in used_types(&d.types) {
        if t.size_histogram.is_empty() {
            continue;
        }
        let cells: Vec<String> = t
            .size_histogram
            .iter()
            .map(|(lo, n)| format!("{}+ x{n}", human_bytes(*lo)))
            .collect();
        let _ = writeln!(o, "  {name} allocation sizes: {}", cells.join(", "));
    }
}

/// The whole report.
pub fn report_text(r: &Report) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "Recording of `{}` on {} ({:.3} s, {}, {} events, {} lost){}",
        r.command.join(" "),
        if r.host.is_empty() { "?" } else { &r.host },
        r.duration_s,
        r.exit_text(),
        r.events,
        r.events_lost,
        if r.complete {
            ""
        } else {
            " — incomplete: not every process's end was recorded"
        }
    );
    if let Some(t) = &r.truncated {
        let _ = writeln!(o, "TRUNCATED: {t}");
    }
    if let Some(f) = &r.failure {
        let _ = write!(o, "\n{}", super::autopsy::failure_text(f));
    }
    for d in &r.devices {
        device_text(&mut o, d);
    }
    if !r.maps_at_end.is_empty() {
        let _ = writeln!(o, "\nAddress maps at the end:");
        for m in &r.maps_at_end {
            let _ = write!(o, "{}", crate::smi::map::describe(m));
        }
    }
    let _ = writeln!(
        o,
        "\nLeaks (held when their process ended): {}",
        r.leaks.len()
    );
    if !r.leaks.is_empty() {
        live_table(&mut o, &r.leaks, "  ");
    }
    if !r.live_at_end.is_empty() {
        let _ = writeln!(
            o,
            "\nStill held by processes running when the recording ended: {}",
            r.live_at_end.len()
        );
        live_table(&mut o, &r.live_at_end, "  ");
    }
    let _ = writeln!(o, "\nProcesses:");
    for p in &r.processes {
        let _ = writeln!(
            o,
            "  pid {:>7} {:<16} from {:>8.3} s to {}  {}",
            p.pid,
            p.comm,
            p.started_at_s,
            p.ended_at_s
                .map_or("(running)".into(), |t| format!("{t:.3} s")),
            if p.sampled {
                "sampled from TT-Metal's own region (counters every 100 ms, no buffers)".to_string()
            } else {
                format!(
                    "{} events, {} lost, left {}",
                    p.events,
                    p.events_lost,
                    human_bytes(p.leaked_bytes)
                )
            }
        );
    }
    o
}
