//! `tt-track report --html`: one self-contained page, readable offline: memory over
//! time per device and type (SVG drawn with plotters), then the report's tables.

use super::analysis::{Live, Report};
use crate::counters_page::{CAT_NAMES, DEVICE_CATS};
use crate::sys::human_bytes;
use plotters::prelude::*;
use std::fmt::Write;

/// Points per chart line at most (the highest of each stretch kept, so no peak is lost).
const MAX_POINTS: usize = 1500;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// At most `MAX_POINTS` points: each stretch of the series by its highest point.
fn thin(points: &[(u64, u64)]) -> Vec<(f64, f64)> {
    let step = points.len().div_ceil(MAX_POINTS).max(1);
    points
        .chunks(step)
        .map(|c| {
            let hi = c.iter().max_by_key(|p| p.1).copied().unwrap_or_default();
            (hi.0 as f64 / 1000.0, hi.1 as f64)
        })
        .collect()
}

/// One chart: a type's figure on a device over the run, in MiB.
fn chart(
    title: &str,
    points: &[(u64, u64)],
    duration_s: f64,
    total: Option<u64>,
) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (860, 260)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let mut pts: Vec<(f64, f64)> = thin(points)
            .into_iter()
            .map(|(t, v)| (t, v / (1u64 << 20) as f64))
            .collect();
        // Nothing was held before the first change.
        if pts.first().is_some_and(|p| p.0 > 0.0) {
            pts.insert(0, (0.0, 0.0));
        }
        let top = pts.iter().map(|p| p.1).fold(0.0f64, f64::max).max(1e-3) * 1.1;
        let mut c = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(32)
            .y_label_area_size(64)
            .build_cartesian_2d(0f64..duration_s.max(1e-3), 0f64..top)
            .map_err(|e| e.to_string())?;
        c.configure_mesh()
            .x_desc("seconds")
            .y_desc("MiB")
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(|e| e.to_string())?;
        // A step line: a figure holds until the next change.
        let mut steps = Vec::with_capacity(pts.len() * 2);
        for w in pts.windows(2) {
            steps.push(w[0]);
            steps.push((w[1].0, w[0].1));
        }
        if let Some(&last) = pts.last() {
            steps.push(last);
            steps.push((duration_s, last.1));
        }
        c.draw_series(LineSeries::new(
            steps,
            RGBColor(31, 119, 180).stroke_width(2),
        ))
        .map_err(|e| e.to_string())?;
        if let Some(t) = total
            .map(|t| t as f64 / (1u64 << 20) as f64)
            .filter(|&t| t <= top)
        {
            c.draw_series(LineSeries::new(
                [(0.0, t), (duration_s, t)],
                RED.stroke_width(1),
            ))
            .map_err(|e| e.to_string())?;
        }
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

fn live_table(o: &mut String, v: &[Live]) {
    o.push_str("<table><tr><th>size</th><th>address</th><th>pid</th><th>device</th><th>type</th><th>allocated at</th></tr>");
    for l in v {
        let _ = write!(
            o,
            "<tr><td>{}</td><td><code>{:#x}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            human_bytes(l.size),
            l.address,
            l.pid,
            l.device,
            l.kind,
            l.allocated_at_s.map_or("-".into(), |s| format!("{s:.3} s"))
        );
    }
    o.push_str("</table>");
}

/// One device: its charts, its types' table, what was live at each peak.
fn device_section(o: &mut String, r: &Report, d: &super::analysis::DeviceReport) {
    let name = d.name();
    let _ = write!(
        o,
        "<h2>Device {}{} {}</h2>",
        d.id,
        if d.remote { " (remote)" } else { "" },
        esc(&name)
    );
    for &cat in &DEVICE_CATS {
        let Some(points) = r.timeline.get(&(d.id, cat)) else {
            continue;
        };
        if points.iter().all(|p| p.1 == 0) {
            continue;
        }
        let total = match CAT_NAMES[cat] {
            "dram" => d.dram_total_bytes,
            "l1" => d.l1_total_bytes,
            _ => None,
        };
        let title = format!("device {} {}", d.id, CAT_NAMES[cat]);
        match chart(&title, points, r.duration_s, total) {
            Ok(svg) => {
                let _ = write!(o, "<div class=\"chart\">{svg}</div>");
            }
            Err(e) => {
                let _ = write!(o, "<p>chart not drawn: {}</p>", esc(&e));
            }
        }
    }
    o.push_str("<table><tr><th>type</th><th>peak</th><th>at</th><th>allocations</th><th>frees</th><th>allocated</th><th>leaked</th><th>leaked buffers</th><th>temporary</th></tr>");
    for (name, t) in &d.types {
        if t.peak_bytes == 0 && t.allocations == 0 {
            continue;
        }
        let _ = write!(
            o,
            "<tr><th>{name}</th><td>{}</td><td>{:.3} s</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            human_bytes(t.peak_bytes),
            t.peak_at_s,
            t.allocations,
            t.frees,
            human_bytes(t.allocated_bytes),
            human_bytes(t.leaked_bytes),
            t.leaked_buffers,
            t.temporary_allocations
        );
    }
    o.push_str("</table>");
    for (name, t) in &d.types {
        if !t.live_at_peak.is_empty() {
            let _ = write!(
                o,
                "<h3>Live at the {name} peak ({} at {:.3} s)</h3>",
                human_bytes(t.peak_bytes),
                t.peak_at_s
            );
            live_table(o, &t.live_at_peak);
        }
    }
}

/// The page.
pub fn page(r: &Report) -> String {
    let mut o = String::new();
    let cmd = esc(&r.command.join(" "));
    let _ = write!(
        o,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>tttrack: {cmd}</title><style>\
         body{{font-family:sans-serif;margin:24px;color:#222}}table{{border-collapse:collapse;margin:8px 0 16px}}\
         td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}th{{background:#f3f3f3}}\
         .chart{{margin:4px 0}}code{{font-size:90%}}</style></head><body>"
    );
    let exit = r.exit_text();
    let _ = write!(
        o,
        "<h1>Device memory of <code>{cmd}</code></h1><p>on {} · {:.3} s · {exit} · {} events, {} lost{}</p>",
        esc(&r.host),
        r.duration_s,
        r.events,
        r.events_lost,
        r.truncated.as_ref().map_or(String::new(), |t| format!(" · <b>truncated</b>: {}", esc(t)))
    );
    for d in &r.devices {
        device_section(&mut o, r, d);
    }
    let _ = write!(o, "<h2>Leaks ({})</h2>", r.leaks.len());
    live_table(&mut o, &r.leaks);
    o.push_str("<h2>Processes</h2><table><tr><th>pid</th><th>name</th><th>from</th><th>to</th><th>events</th><th>lost</th><th>left</th></tr>");
    for p in &r.processes {
        let _ = write!(
            o,
            "<tr><td>{}</td><td>{}</td><td>{:.3} s</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            p.pid,
            esc(&p.comm),
            p.started_at_s,
            p.ended_at_s.map_or("running".into(), |t| format!("{t:.3} s")),
            p.events,
            p.events_lost,
            human_bytes(p.leaked_bytes)
        );
    }
    o.push_str("</table></body></html>\n");
    o
}
