//! View 1, main: the device table, each device's memory bars beside their labels,
//! and the process list.

use super::theme::level_color;
use super::App;
use crate::counters_page::*;
use crate::smi::format::{
    filled_cells, heartbeat_stalled, l1_cell, memory_cell, telemetry_cells, Level,
};
use crate::sys::human_bytes;
use ratatui::layout::{Constraint, Direction, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Table};
use ratatui::Frame;

impl App {
    fn devices_table(&self) -> Table<'static> {
        let header = Row::new([
            "Dev",
            "Name",
            "Temp",
            "Power",
            "AICLK",
            "DRAM used / total",
            "L1 used / total",
        ])
        .style(self.style(Style::default().add_modifier(Modifier::BOLD)));
        let rows: Vec<Row> = self
            .model
            .devices
            .iter()
            .map(|d| {
                let (t, p, c) = telemetry_cells(d);
                let row = Row::new(vec![
                    Cell::from(format!("{}{}", d.id, if d.remote { " R" } else { "" })),
                    Cell::from(d.display_name()),
                    Cell::from(t),
                    Cell::from(p),
                    Cell::from(c),
                    Cell::from(memory_cell(d)),
                    Cell::from(l1_cell(d)),
                ]);
                if heartbeat_stalled(d) {
                    row.style(self.style(Style::default().fg(Color::Red)))
                } else {
                    row
                }
            })
            .collect();
        Table::new(
            rows,
            [
                Constraint::Length(5),
                Constraint::Length(18),
                Constraint::Length(7),
                Constraint::Length(7),
                Constraint::Length(9),
                Constraint::Length(22),
                Constraint::Length(22),
            ],
        )
        .header(header)
        .block(Block::default().borders(Borders::ALL).title(" Devices "))
    }

    pub(super) fn draw_main(&self, f: &mut Frame, r: Rect) {
        let nd = self.model.devices.len().max(1) as u16;
        let mem_h = if self.model.aggregator.is_some() {
            (nd * 3 + 2).min(r.height / 2)
        } else {
            0
        };
        // Rows the device table and memory leave: the process list first; what it does
        // not need, up to a third, shows the recent events (from 6 rows up).
        let rest = r.height.saturating_sub(nd + 3 + mem_h);
        let wanted = self
            .model
            .processes
            .iter()
            .map(|p| p.devices.len().max(1))
            .sum::<usize>() as u16
            + 3;
        let recent_h = rest.saturating_sub(wanted.max(6)).min(rest / 3);
        let recent_h = if recent_h >= 6 { recent_h } else { 0 };
        let parts = Layout::default()
            .direction(Direction::Vertical)
            .constraints([
                Constraint::Length(nd + 3),
                Constraint::Length(mem_h),
                Constraint::Min(3),
                Constraint::Length(recent_h),
            ])
            .split(r);
        if self.model.devices.is_empty() {
            f.render_widget(
                Paragraph::new("No Tenstorrent devices found (none in sysfs, none reported by a tracked process).")
                    .block(Block::default().borders(Borders::ALL).title(" Devices ")),
                parts[0],
            );
        } else {
            f.render_widget(self.devices_table(), parts[0]);
        }
        if mem_h > 0 {
            self.draw_memory(f, parts[1]);
        }
        self.draw_processes(f, parts[2]);
        if recent_h > 0 {
            self.draw_recent(f, parts[3]);
        }
    }

    /// A label and, to its right in the space left, a bar of `used / total`: the bar
    /// never runs under the text. `labels` go from fullest to shortest; the first that
    /// leaves room for a bar of at least 4 cells is used; with none, the shortest alone,
    /// cut one cell before the edge so that it never touches what is beside it.
    fn labelled_gauge(
        &self,
        f: &mut Frame,
        r: Rect,
        labels: &[String],
        used: u64,
        total: Option<u64>,
    ) {
        let fits = labels
            .iter()
            .find(|l| r.width > l.chars().count() as u16 + 1 + 4);
        let Some(label) = fits else {
            let short = labels.last().cloned().unwrap_or_default();
            let keep = r.width.saturating_sub(1) as usize;
            f.render_widget(
                Paragraph::new(short.chars().take(keep).collect::<String>()),
                r,
            );
            return;
        };
        let w = label.chars().count() as u16 + 1;
        let parts = Layout::default()
            .direction(Direction::Horizontal)
            .constraints([
                Constraint::Length(w),
                Constraint::Min(4),
                Constraint::Length(1),
            ])
            .split(r);
        f.render_widget(Paragraph::new(label.clone()), parts[0]);
        f.render_widget(self.bar(used, total, parts[1].width), parts[1]);
    }

    /// A bar of `used / total` in `width` cells: filled cells in the colour of how full
    /// it is (green, yellow from 70%, red from 90%), the rest dim.
    fn bar(&self, used: u64, total: Option<u64>, width: u16) -> Paragraph<'static> {
        let color = level_color(Level::of(used, total));
        let filled = filled_cells(used, total.unwrap_or(0), width as usize);
        Paragraph::new(Line::from(vec![
            Span::styled("█".repeat(filled), self.style(Style::default().fg(color))),
            Span::styled(
                "░".repeat(width as usize - filled),
                self.style(Style::default().fg(Color::DarkGray)),
            ),
        ]))
    }

    fn draw_memory(&self, f: &mut Frame, r: Rect) {
        let block = Block::default().borders(Borders::ALL).title(" Memory ");
        let inner = block.inner(r);
        f.render_widget(block, r);
        let n = self.model.devices.len();
        let per = (inner.height as usize / n.max(1)).clamp(1, 3) as u16;
        for (i, d) in self.model.devices.iter().enumerate() {
            let y = inner.y + i as u16 * per;
            if y + per > inner.y + inner.height {
                break;
            }
            let f0 = &d.figures;
            let halves = Layout::default()
                .direction(Direction::Horizontal)
                .constraints([Constraint::Percentage(50), Constraint::Percentage(50)])
                .split(Rect::new(inner.x, y, inner.width, 1));
            let total = |t: Option<u64>| t.map(human_bytes).unwrap_or_else(|| "?".into());
            let dram = format!(
                "dev {} DRAM {} / {}",
                d.id,
                human_bytes(f0[CAT_DRAM].used),
                total(d.dram_total)
            );
            self.labelled_gauge(
                f,
                halves[0],
                &[
                    format!("{dram} (peak {})", human_bytes(f0[CAT_DRAM].peak)),
                    dram,
                ],
                f0[CAT_DRAM].used,
                d.dram_total,
            );
            self.labelled_gauge(
                f,
                halves[1],
                &[format!(
                    "L1 {} / {}",
                    human_bytes(d.l1_resident()),
                    total(d.l1_total)
                )],
                d.l1_resident(),
                d.l1_total,
            );
            if per >= 2 {
                let parts = format!(
                    "  L1 buffers {} · L1_SMALL {} · CBs {} · kernels {} (app {}, fabric {}, dispatch {}) · TRACE {}",
                    human_bytes(f0[CAT_L1].used),
                    human_bytes(f0[CAT_L1_SMALL].used),
                    human_bytes(f0[CAT_CB].used),
                    human_bytes(f0[CAT_KERNEL].used),
                    human_bytes(f0[CAT_KERNEL_APP].used),
                    human_bytes(f0[CAT_KERNEL_FABRIC].used),
                    human_bytes(f0[CAT_KERNEL_DISPATCH].used),
                    human_bytes(f0[CAT_TRACE].used),
                );
                f.render_widget(
                    Paragraph::new(parts),
                    Rect::new(inner.x, y + 1, inner.width, 1),
                );
            }
        }
    }
}
