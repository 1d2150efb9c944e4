//! View 3, telemetry: every reading of every device, with its limit (the rows are
//! [`crate::smi::format::telemetry_rows`]).

use super::App;
use crate::smi::format::telemetry_rows;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::widgets::{Block, Borders, Row, Table};
use ratatui::Frame;

impl App {
    pub(super) fn draw_telemetry(&self, f: &mut Frame, r: Rect) {
        let header = Row::new(["Dev", "Field", "Value", "Limit"])
            .style(self.style(Style::default().add_modifier(Modifier::BOLD)));
        let mut rows = Vec::new();
        for d in &self.model.devices {
            let dev = format!("{}{}", d.id, if d.remote { " R" } else { "" });
            for (i, t) in telemetry_rows(d).into_iter().enumerate() {
                let first = if i == 0 { dev.clone() } else { String::new() };
                let row = Row::new(vec![first, t.field.to_string(), t.value, t.limit]);
                rows.push(if t.alarm {
                    row.style(self.style(Style::default().fg(Color::Red)))
                } else {
                    row
                });
            }
            if d.remote {
                rows.push(Row::new(vec![
                    String::new(),
                    String::new(),
                    "(remote chip: telemetry N/A by design)".into(),
                    String::new(),
                ]));
            }
        }
        let visible = r.height.saturating_sub(3) as usize;
        let skip = self.first_row(rows.len(), visible);
        let rows: Vec<Row> = rows.into_iter().skip(skip).collect();
        let widths = [
            Constraint::Length(5),
            Constraint::Length(20),
            Constraint::Fill(1),
            Constraint::Length(18),
        ];
        let t = Table::new(rows, widths)
            .header(header)
            .block(Block::default().borders(Borders::ALL).title(" Telemetry "));
        f.render_widget(t, r);
    }
}
