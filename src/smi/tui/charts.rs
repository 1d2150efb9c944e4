//! View 2, charts: each device's DRAM and L1 over the chosen window, from the
//! counters page's history.

use super::theme::to_ascii;
use super::{App, ChartMarker};
use crate::counters_page::*;
use crate::smi::model::DeviceView;
use ratatui::layout::{Constraint, Direction, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::symbols::Marker;
use ratatui::text::Line;
use ratatui::widgets::{Axis, Block, Borders, Chart, Dataset, GraphType, Paragraph};
use ratatui::Frame;

impl App {
    pub(super) fn draw_charts(&self, f: &mut Frame, r: Rect) {
        let devs: Vec<&DeviceView> = self.model.devices.iter().collect();
        if devs.is_empty() || self.model.history.is_empty() {
            let msg = if self.model.aggregator.is_none() {
                "No history: tt-aggregator is not running."
            } else {
                "No history yet (one sample per second)."
            };
            f.render_widget(
                Paragraph::new(msg).block(Block::default().borders(Borders::ALL).title(" Charts ")),
                r,
            );
            return;
        }
        let per_row = (r.height / 8).max(1) as usize;
        let shown = devs.len().min(per_row);
        // More devices than fit (a Galaxy): the arrows scroll through them.
        let first = self.first_row(devs.len(), shown);
        let rows = Layout::default()
            .direction(Direction::Vertical)
            .constraints(vec![Constraint::Ratio(1, shown as u32); shown])
            .split(r);
        let window = self.window_s();
        let now = self.model.history.last().map(|s| s.unix_secs).unwrap_or(0);
        let more = if shown < devs.len() {
            format!(
                ", {}-{} of {} devices",
                first + 1,
                first + shown,
                devs.len()
            )
        } else {
            String::new()
        };
        for (i, d) in devs.iter().skip(first).take(shown).enumerate() {
            let halves = Layout::default()
                .direction(Direction::Horizontal)
                .constraints([Constraint::Percentage(50), Constraint::Percentage(50)])
                .split(rows[i]);
            let idx = d.id as usize;
            if idx >= MAX_PAGE_DEVICES {
                continue;
            }
            let series = |field: &dyn Fn(&HistorySample) -> u64| -> Vec<(f64, f64)> {
                self.model
                    .history
                    .iter()
                    .filter(|s| now.saturating_sub(s.unix_secs) <= window)
                    .map(|s| {
                        (
                            -(now.saturating_sub(s.unix_secs) as f64),
                            field(s) as f64 / (1024.0 * 1024.0),
                        )
                    })
                    .collect()
            };
            let dram = series(&|s| s.used_of(idx, CAT_DRAM));
            let l1 = series(&|s| L1_RESIDENT_CATS.iter().map(|&c| s.used_of(idx, c)).sum());
            self.chart(
                f,
                halves[0],
                &format!(" dev {} DRAM (MiB), last {window}s{more} ", d.id),
                &dram,
                d.dram_total,
                Color::Cyan,
            );
            self.chart(
                f,
                halves[1],
                &format!(" dev {} L1 (MiB), last {window}s ", d.id),
                &l1,
                d.l1_total,
                Color::Magenta,
            );
        }
    }

    pub(super) fn chart(
        &self,
        f: &mut Frame,
        r: Rect,
        title: &str,
        data: &[(f64, f64)],
        total: Option<u64>,
        color: Color,
    ) {
        let max_data = data.iter().map(|p| p.1).fold(0.0, f64::max);
        let top = total
            .map(|t| t as f64 / (1024.0 * 1024.0))
            .unwrap_or(0.0)
            .max(max_data * 1.1)
            .max(1.0);
        let window = self.window_s() as f64;
        let ds = Dataset::default()
            .marker(match self.marker {
                ChartMarker::Braille => Marker::Braille,
                ChartMarker::Dots | ChartMarker::Ascii => Marker::Dot,
            })
            .graph_type(GraphType::Line)
            .style(self.style(Style::default().fg(color)))
            .data(data);
        let chart = Chart::new(vec![ds])
            .block(
                Block::default()
                    .borders(Borders::ALL)
                    .title(title.to_string()),
            )
            .x_axis(Axis::default().bounds([-window, 0.0]).labels(vec![
                Line::from(format!("-{window:.0}s")),
                Line::from("now"),
            ]))
            .y_axis(
                Axis::default()
                    .bounds([0.0, top])
                    .labels(vec![Line::from("0"), Line::from(format!("{top:.0}"))]),
            );
        f.render_widget(chart, r);
        if self.marker == ChartMarker::Ascii {
            to_ascii(f.buffer_mut(), r);
        }
    }
}
