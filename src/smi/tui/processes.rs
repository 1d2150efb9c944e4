//! The process list (in view 1): one row per process and device, in the chosen
//! order, scrolled. Its rows are the snapshot's ([`crate::smi::format::process_rows`]);
//! when the list is too narrow for every column, the L1_SMALL and TRACE columns go.

use super::{App, SortKey};
use crate::smi::format::{process_rows, ProcessColumn, PROCESS_COLUMNS};
use crate::smi::model::ProcessView;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::widgets::{Block, Borders, Row, Table};
use ratatui::Frame;

const PID_WIDTH: u16 = 9;
const NAME_WIDTH: u16 = 16;
/// Room for `12 (3)`: a chip's row and the process's own id of it.
const DEV_WIDTH: u16 = 6;
const FIGURE_WIDTH: u16 = 11;

impl App {
    /// Process rows in the chosen order.
    pub fn sorted_processes(&self) -> Vec<&ProcessView> {
        let mut v: Vec<_> = self.model.processes.iter().collect();
        match self.sort {
            SortKey::Memory => v.sort_by(|a, b| {
                b.device_bytes()
                    .cmp(&a.device_bytes())
                    .then(a.pid.cmp(&b.pid))
            }),
            SortKey::Pid => v.sort_by_key(|p| p.pid),
            SortKey::Name => v.sort_by(|a, b| a.name.cmp(&b.name).then(a.pid.cmp(&b.pid))),
        }
        v
    }

    pub(super) fn draw_processes(&self, f: &mut Frame, r: Rect) {
        let sort = match self.sort {
            SortKey::Memory => "memory",
            SortKey::Pid => "pid",
            SortKey::Name => "name",
        };
        let title = format!(
            " Processes ({}) · sorted by {sort} ",
            self.model.processes.len()
        );
        let all = PID_WIDTH + NAME_WIDTH + DEV_WIDTH + FIGURE_WIDTH * PROCESS_COLUMNS.len() as u16;
        let columns: Vec<&ProcessColumn> = PROCESS_COLUMNS
            .iter()
            .filter(|c| c.narrow || r.width >= all + 2)
            .collect();
        let mut head = vec!["PID", "Name", "Dev"];
        head.extend(columns.iter().map(|c| c.header));
        let header =
            Row::new(head).style(self.style(Style::default().add_modifier(Modifier::BOLD)));
        let rows: Vec<Row> = process_rows(&self.sorted_processes(), &columns, " ?")
            .into_iter()
            .map(|(p, cells)| {
                // Yellow means inexact figures; an untracked process has no figures at all.
                let style = if p.untracked || p.left_behind {
                    self.style(Style::default().fg(Color::DarkGray))
                } else if p.source == "tt-metal" {
                    Style::default()
                } else if !p.exact {
                    self.style(Style::default().fg(Color::Yellow))
                } else {
                    Style::default()
                };
                Row::new(cells).style(style)
            })
            .collect();
        let visible = r.height.saturating_sub(3) as usize;
        let skip = self.first_row(rows.len(), visible);
        let rows: Vec<Row> = rows.into_iter().skip(skip).collect();
        let mut widths = vec![
            Constraint::Length(PID_WIDTH),
            Constraint::Length(NAME_WIDTH),
            Constraint::Length(DEV_WIDTH),
        ];
        widths.extend(columns.iter().map(|_| Constraint::Length(FIGURE_WIDTH)));
        let t = Table::new(rows, widths)
            .header(header)
            .block(Block::default().borders(Borders::ALL).title(title));
        f.render_widget(t, r);
    }
}
