//! `tt-smi` snapshot: the device table, the memory breakdown with bars, the process
//! table. Plain text, with colour only when asked for (a terminal, no `NO_COLOR`).

use super::format::{bar, memory_cell, pct, process_rows, telemetry_cells, Level, PROCESS_COLUMNS};
use super::model::{DeviceView, Model};
use crate::counters_page::*;
use crate::sys::human_bytes;
use std::fmt::Write;

pub struct Style {
    pub color: bool,
}

impl Style {
    fn paint(&self, code: &str, s: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
    fn bold(&self, s: &str) -> String {
        self.paint("1", s)
    }
    fn dim(&self, s: &str) -> String {
        self.paint("2", s)
    }
    fn level(&self, level: Level, s: &str) -> String {
        let code = match level {
            Level::Full => "31",
            Level::High => "33",
            Level::Ok => "32",
        };
        self.paint(code, s)
    }
    fn warn(&self, s: &str) -> String {
        self.paint("33", s)
    }
}

/// The snapshot: title, device table, memory breakdown, processes.
pub fn render(m: &Model, st: &Style) -> String {
    let mut o = String::new();
    title(&mut o, m, st);
    device_table(&mut o, m, st);
    if m.aggregator.is_some() && !m.devices.is_empty() {
        o.push('\n');
        let _ = writeln!(o, "{}", st.bold("Memory breakdown"));
        for d in &m.devices {
            breakdown(&mut o, d, st);
        }
    }
    if m.aggregator.is_some() {
        o.push('\n');
        processes(&mut o, m, st);
    } else if !m.processes.is_empty() {
        holders(&mut o, m, st);
    }
    o
}

/// The title line, and the aggregator's line (or why memory is N/A).
fn title(o: &mut String, m: &Model, st: &Style) {
    let when = humantime::format_rfc3339_seconds(m.time).to_string();
    let _ = writeln!(
        o,
        "{}  {}",
        st.bold(&format!("tt-smi {} (tttrack)", env!("CARGO_PKG_VERSION"))),
        st.dim(&when)
    );
    if m.simulated {
        let _ = writeln!(o, "cards: simulated by tt-track demo (not real hardware)");
    }
    match &m.aggregator {
        Some(a) => {
            let _ = writeln!(
                o,
                "aggregator: pid {}, up {}, {} events applied, {} lost, {} unknown frees, {} processes",
                a.pid,
                fmt_uptime(a.uptime_s),
                a.events_applied,
                a.events_lost,
                a.unknown_frees,
                a.processes_tracked
            );
        }
        None => {
            let _ = writeln!(
                o,
                "{}",
                st.warn(&format!(
                    "memory: N/A, {}",
                    m.not_running.clone().unwrap_or_default()
                ))
            );
        }
    }
    o.push('\n');
}

/// The device table, boxed.
fn device_table(o: &mut String, m: &Model, st: &Style) {
    if m.devices.is_empty() {
        let _ = writeln!(
            o,
            "No Tenstorrent devices found (none in sysfs, none reported by a tracked process)."
        );
    } else {
        let rows: Vec<[String; 6]> = m
            .devices
            .iter()
            .map(|d| {
                let (t, p, c) = telemetry_cells(d);
                [
                    format!("{}{}", d.id, if d.remote { " R" } else { "" }),
                    d.display_name(),
                    t,
                    p,
                    c,
                    memory_cell(d),
                ]
            })
            .collect();
        let head = [
            "Dev",
            "Name",
            "Temp",
            "Power",
            "AICLK",
            "Memory-Usage (DRAM)",
        ];
        let mut w = head.map(|h| h.chars().count());
        for r in &rows {
            for (i, c) in r.iter().enumerate() {
                w[i] = w[i].max(c.chars().count());
            }
        }
        let line = |l: &str, m: &str, r: &str| {
            let mut s = l.to_string();
            for (i, wi) in w.iter().enumerate() {
                s.push_str(&"─".repeat(wi + 2));
                s.push_str(if i + 1 == w.len() { r } else { m });
            }
            s
        };
        let row = |cells: &[String]| {
            let mut s = "│".to_string();
            for (c, wi) in cells.iter().zip(w.iter()) {
                let pad = wi - c.chars().count();
                s.push_str(&format!(" {c}{} │", " ".repeat(pad)));
            }
            s
        };
        let _ = writeln!(o, "{}", line("┌", "┬", "┐"));
        let _ = writeln!(o, "{}", row(&head.map(String::from)));
        let _ = writeln!(o, "{}", line("├", "┼", "┤"));
        for r in &rows {
            let _ = writeln!(o, "{}", row(r));
        }
        let _ = writeln!(o, "{}", line("└", "┴", "┘"));
        if m.devices.iter().any(|d| d.remote) {
            let _ = writeln!(o, "{}", st.dim("R: remote chip (reached over Ethernet): memory tracked, telemetry N/A by design"));
        }
    }
}

/// Without an aggregator the driver still says who holds each card.
fn holders(o: &mut String, m: &Model, st: &Style) {
    // Without an aggregator the driver still says who holds each card.
    o.push('\n');
    let _ = writeln!(o, "{}", st.bold("Processes holding a device (memory N/A)"));
    for p in &m.processes {
        let devs: Vec<String> = p.devices.iter().map(|d| d.id.to_string()).collect();
        let _ = writeln!(
            o,
            "  {:>7}  {:<16} device {}",
            p.pid,
            p.name,
            devs.join(", ")
        );
    }
}

fn fmt_uptime(s: f64) -> String {
    let s = s.max(0.0) as u64;
    if s >= 3600 {
        format!("{}h {}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m {}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

fn breakdown(o: &mut String, d: &DeviceView, st: &Style) {
    let f = &d.figures;
    let _ = writeln!(
        o,
        "Device {}{} ({}){}:",
        d.id,
        if d.remote { " R" } else { "" },
        d.display_name(),
        d.remote_note()
    );
    let main = |o: &mut String, name: &str, used: u64, total: Option<u64>, peak: u64| {
        let tot = total.map(human_bytes).unwrap_or_else(|| "?".into());
        let (b, p) = match pct(used, total) {
            Some(p) => (
                st.level(Level::of(used, total), &bar(used, total.unwrap_or(0), 24)),
                format!("{p:5.1}%"),
            ),
            None => (st.dim(&bar(0, 0, 24)), "    ?".to_string()),
        };
        let _ = writeln!(
            o,
            "  {name:<10} {:>10} / {:<10} {b} {p}   peak {}",
            human_bytes(used),
            tot,
            human_bytes(peak)
        );
    };
    let part = |o: &mut String, name: &str, used: u64, peak: u64, count: u64, unit: &str| {
        let _ = writeln!(
            o,
            "    {name:<12} {:>10}   peak {:<10} {count} {unit}",
            human_bytes(used),
            human_bytes(peak)
        );
    };
    main(
        o,
        CAT_DISPLAY[CAT_DRAM],
        f[CAT_DRAM].used,
        d.dram_total,
        f[CAT_DRAM].peak,
    );
    let l1_peak = d.l1_resident_peak.max(d.l1_resident());
    main(o, CAT_DISPLAY[CAT_L1], d.l1_resident(), d.l1_total, l1_peak);
    for (name, c, unit) in [
        ("buffers", CAT_L1, "buffers"),
        (CAT_DISPLAY[CAT_L1_SMALL], CAT_L1_SMALL, "buffers"),
        ("CBs", CAT_CB, "CBs"),
        ("kernels", CAT_KERNEL, "kernels"),
    ] {
        part(o, name, f[c].used, f[c].peak, f[c].count, unit);
    }
    let _ = writeln!(
        o,
        "      {}",
        st.dim(&format!(
            "application {}, fabric {}, dispatch {}",
            human_bytes(f[CAT_KERNEL_APP].used),
            human_bytes(f[CAT_KERNEL_FABRIC].used),
            human_bytes(f[CAT_KERNEL_DISPATCH].used)
        ))
    );
    let _ = writeln!(
        o,
        "  {:<10} {:>10}   peak {:<10} {} buffers",
        "TRACE",
        human_bytes(f[CAT_TRACE].used),
        human_bytes(f[CAT_TRACE].peak),
        f[CAT_TRACE].count
    );
    if f[CAT_SYSTEM_MEMORY].used > 0 || f[CAT_SYSTEM_MEMORY].peak > 0 {
        let _ = writeln!(
            o,
            "  {:<10} {:>10}   peak {:<10} {}",
            "HOST",
            human_bytes(f[CAT_SYSTEM_MEMORY].used),
            human_bytes(f[CAT_SYSTEM_MEMORY].peak),
            st.dim("(SYSTEM_MEMORY buffers: host memory, not device memory)")
        );
    }
}

/// What the `~` mark of a process means.
pub const METAL_NOTE: &str = "~ from TT-Metal's own region (tt_device_<N>_memory): counters only, no buffers, CBs as TT-Metal keeps them";
/// What the `!` mark of a process means.
pub const LEFT_BEHIND_NOTE: &str = "! left behind: the process is gone, TT-Metal's region still counts these bytes (not in the device figures); see tt-track doctor";

fn processes(o: &mut String, m: &Model, st: &Style) {
    let _ = writeln!(o, "{}", st.bold("Processes"));
    if m.processes.is_empty() {
        let _ = writeln!(o, "  no tracked processes");
        return;
    }
    let columns: Vec<_> = PROCESS_COLUMNS.iter().collect();
    let mut head = vec!["PID", "Name", "Dev"];
    head.extend(columns.iter().map(|c| c.header));
    let procs: Vec<_> = m.processes.iter().collect();
    let inexact = procs
        .iter()
        .any(|p| !p.untracked && !p.exact && p.source != "tt-metal");
    let metal = procs
        .iter()
        .any(|p| p.source == "tt-metal" && !p.left_behind);
    let left = procs.iter().any(|p| p.left_behind);
    let rows: Vec<Vec<String>> = process_rows(&procs, &columns, " (untracked)")
        .into_iter()
        .map(|(_, cells)| cells)
        .collect();
    let mut w: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let fmt_row = |cells: &[String]| {
        let mut s = String::from(" ");
        for (i, c) in cells.iter().enumerate() {
            let pad = w[i].saturating_sub(c.chars().count());
            if i < 2 {
                s.push_str(&format!(" {c}{}", " ".repeat(pad)));
            } else {
                s.push_str(&format!(" {}{c}", " ".repeat(pad)));
            }
        }
        s.trim_end().to_string()
    };
    let head: Vec<String> = head.into_iter().map(String::from).collect();
    let _ = writeln!(o, "{}", st.bold(&fmt_row(&head)));
    for r in &rows {
        let _ = writeln!(o, "{}", fmt_row(r));
    }
    if inexact {
        let _ = writeln!(
            o,
            "{}",
            st.warn(
                "  * inexact: events of this process were lost (see tt-smi --json: events_lost)"
            )
        );
    }
    if metal {
        let _ = writeln!(o, "  {}", st.dim(METAL_NOTE));
    }
    if left {
        let _ = writeln!(o, "{}", st.warn(&format!("  {LEFT_BEHIND_NOTE}")));
    }
}
