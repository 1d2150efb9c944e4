//! Recent events in the live view: what changed between two refreshes, said as it
//! happens ("pid 4711 (python3) exited holding 1.5 GiB"), newest first, drawn in the
//! main view's spare rows.

use super::App;
use crate::smi::format::heartbeat_stalled;
use crate::smi::model::{Model, ProcessView};
use crate::sys::human_bytes;
use ratatui::layout::Rect;
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph};
use ratatui::Frame;
use std::collections::HashMap;
use std::collections::VecDeque;

/// Events kept (the panel shows what fits).
const KEPT: usize = 200;

/// One event.
#[derive(Debug, Clone)]
pub struct Recent {
    /// HH:MM:SS (UTC) of the refresh that saw it.
    pub at: String,
    pub text: String,
    /// Drawn as a warning.
    pub warn: bool,
}

/// What changed from `old` to `new`, as events.
pub fn changes(old: &Model, new: &Model) -> Vec<Recent> {
    let at = humantime::format_rfc3339_seconds(new.time).to_string();
    let at = at.get(11..19).unwrap_or("").to_string();
    let mut said = Vec::new();
    aggregator_changes(old, new, &mut said);
    process_exits(old, new, &mut said);
    process_changes(old, new, &mut said);
    device_changes(old, new, &mut said);
    said.into_iter()
        .map(|(text, warn)| Recent {
            at: at.clone(),
            text,
            warn,
        })
        .collect()
}

type Said = Vec<(String, bool)>;

/// A model's processes by pid (a refresh compares up to a thousand of them).
fn by_pid(m: &Model) -> HashMap<u32, &ProcessView> {
    m.processes.iter().map(|p| (p.pid, p)).collect()
}

fn aggregator_changes(old: &Model, new: &Model, said: &mut Said) {
    match (&old.aggregator, &new.aggregator) {
        (Some(a), None) => said.push((
            format!("aggregator pid {} stopped: memory N/A", a.pid),
            true,
        )),
        (None, Some(a)) => said.push((format!("aggregator pid {} running", a.pid), false)),
        (Some(a), Some(b)) if a.pid != b.pid => said.push((
            format!("aggregator restarted (pid {} -> {})", a.pid, b.pid),
            true,
        )),
        _ => {}
    }
}

/// The processes that ended, with what they held when the aggregator released them:
/// its counters of exits holding memory and of the bytes they held (what this view saw
/// last may have been freed just before the end).
fn process_exits(old: &Model, new: &Model, said: &mut Said) {
    let now = by_pid(new);
    let gone: Vec<_> = old
        .processes
        .iter()
        .filter(|p| !p.untracked && !now.contains_key(&p.pid))
        .collect();
    let (leaks, leaked) = match (&old.aggregator, &new.aggregator) {
        (Some(a), Some(b)) if a.pid == b.pid => (
            b.exits_holding_memory
                .saturating_sub(a.exits_holding_memory),
            b.leaked_bytes.saturating_sub(a.leaked_bytes),
        ),
        _ => (0, 0),
    };
    let one = leaks == 1 && gone.len() == 1;
    for p in &gone {
        if one {
            said.push((
                format!(
                    "pid {} ({}) exited holding {}",
                    p.pid,
                    p.name,
                    human_bytes(leaked)
                ),
                true,
            ));
        } else {
            said.push((format!("pid {} ({}) exited", p.pid, p.name), false));
        }
    }
    if leaks > 0 && !one {
        said.push((
            format!(
                "{leaks} of the processes that ended held {} then",
                human_bytes(leaked)
            ),
            true,
        ));
    }
}

fn process_changes(old: &Model, new: &Model, said: &mut Said) {
    let before = by_pid(old);
    for p in &new.processes {
        match before.get(&p.pid) {
            None if p.untracked => said.push((
                format!(
                    "pid {} ({}) opened a card but reports nothing",
                    p.pid, p.name
                ),
                true,
            )),
            None => said.push((
                format!("pid {} ({}) started reporting", p.pid, p.name),
                false,
            )),
            Some(q) if q.exact && !p.exact => said.push((
                format!(
                    "pid {} ({}) lost events: its figures are inexact",
                    p.pid, p.name
                ),
                true,
            )),
            _ => {}
        }
    }
}

fn device_changes(old: &Model, new: &Model, said: &mut Said) {
    for d in &new.devices {
        let before = old.devices.iter().find(|e| e.id == d.id);
        if heartbeat_stalled(d) && !before.is_some_and(heartbeat_stalled) {
            said.push((format!("device {}: firmware heartbeat stalled", d.id), true));
        }
        if d.gone && !before.is_some_and(|e| e.gone) {
            said.push((
                format!("device {} is gone (reset or unplugged?)", d.id),
                true,
            ));
        }
    }
}

impl App {
    /// Takes a new model, noting what changed since the last one.
    pub fn update(&mut self, model: Model) {
        for r in changes(&self.model, &model) {
            self.recent.push_front(r);
        }
        self.recent.truncate(KEPT);
        self.model = model;
    }

    /// The recent events, newest first, as many as fit.
    pub(super) fn draw_recent(&self, f: &mut Frame, r: Rect) {
        let shown = r.height.saturating_sub(2) as usize;
        let lines: Vec<Line> = if self.recent.is_empty() {
            vec![Line::from(
                "nothing yet: processes starting and ending are told here",
            )]
        } else {
            self.recent
                .iter()
                .take(shown)
                .map(|e| {
                    let style = if e.warn {
                        self.style(Style::default().fg(Color::Yellow))
                    } else {
                        Style::default()
                    };
                    Line::from(vec![
                        Span::styled(
                            format!("{} ", e.at),
                            self.style(Style::default().fg(Color::DarkGray)),
                        ),
                        Span::styled(e.text.clone(), style),
                    ])
                })
                .collect()
        };
        let block = Block::default().borders(Borders::ALL).title(" Recent ");
        f.render_widget(Paragraph::new(lines).block(block), r);
    }
}

/// Recent events of a running view.
pub type RecentLog = VecDeque<Recent>;
