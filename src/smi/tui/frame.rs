//! The frame around every view: title line, key line, the help window, and the
//! view chosen.

use super::{App, View, MIN_HEIGHT, MIN_WIDTH};
use ratatui::layout::{Constraint, Direction, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Wrap};
use ratatui::Frame;

impl App {
    pub fn draw(&self, f: &mut Frame) {
        let area = f.area();
        if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
            let msg = format!(
                "Terminal too small ({}x{}): tt-smi needs at least {MIN_WIDTH}x{MIN_HEIGHT}. Enlarge it, or press q.",
                area.width, area.height
            );
            f.render_widget(Paragraph::new(msg).wrap(Wrap { trim: true }), area);
            return;
        }
        let rows = Layout::default()
            .direction(Direction::Vertical)
            .constraints([
                Constraint::Length(1),
                Constraint::Min(5),
                Constraint::Length(1),
            ])
            .split(area);
        self.draw_title(f, rows[0]);
        match self.view {
            View::Main => self.draw_main(f, rows[1]),
            View::Charts => self.draw_charts(f, rows[1]),
            View::Telemetry => self.draw_telemetry(f, rows[1]),
            View::MemoryMap => self.draw_memory_map(f, rows[1]),
        }
        let keys = "1 main 2 charts 3 telemetry 4 map  s sort  ↑↓ scroll  w window  ? help  q quit";
        f.render_widget(
            Paragraph::new(keys).style(self.style(Style::default().fg(Color::DarkGray))),
            rows[2],
        );
        if self.help {
            self.draw_help(f, area);
        }
    }

    pub(super) fn draw_title(&self, f: &mut Frame, r: Rect) {
        let when = humantime::format_rfc3339_seconds(self.model.time).to_string();
        let view = match self.view {
            View::Main => "main",
            View::Charts => "charts",
            View::Telemetry => "telemetry",
            View::MemoryMap => "memory map",
        };
        let status = match &self.model.aggregator {
            Some(a) => Span::raw(format!(
                "aggregator pid {} · {} events · {} lost",
                a.pid, a.events_applied, a.events_lost
            )),
            None => Span::styled(
                format!(
                    "memory: N/A, {}",
                    self.model.not_running.clone().unwrap_or_default()
                ),
                self.style(Style::default().fg(Color::Yellow)),
            ),
        };
        // The simulated cards are said first, so that even 80 columns show it.
        let line = Line::from(vec![
            Span::styled(
                format!("tt-smi [{view}] "),
                self.style(Style::default().add_modifier(Modifier::BOLD)),
            ),
            Span::styled(
                if self.model.simulated {
                    "simulated cards (tt-track demo) · "
                } else {
                    ""
                },
                self.style(Style::default().fg(Color::Yellow)),
            ),
            Span::raw(format!("{when}  ")),
            status,
        ]);
        f.render_widget(Paragraph::new(line), r);
    }

    pub(super) fn draw_help(&self, f: &mut Frame, area: Rect) {
        let w = 56.min(area.width);
        let h = 17.min(area.height);
        let r = Rect::new(
            area.x + (area.width - w) / 2,
            area.y + (area.height - h) / 2,
            w,
            h,
        );
        let text = vec![
            Line::from("1 2 3 4     main / charts / telemetry / memory map"),
            Line::from("s           cycle process sort (memory, pid, name)"),
            Line::from("m, p, n     sort by memory, pid, name"),
            Line::from("↑ ↓ PgUp PgDn Home End   scroll"),
            Line::from("w           chart window: 60 s, 5 min, 15 min"),
            Line::from("b           charts in braille / dots / plain ASCII"),
            Line::from("? or h      this help (Esc closes)"),
            Line::from("q, Esc, Ctrl-C   quit"),
            Line::from(""),
            Line::from("R: remote chip   *: inexact (events lost)"),
            Line::from("?: holds a device, reports nothing (untracked)"),
            Line::from("~: from TT-Metal's own region (counters only)"),
            Line::from("!: left behind in TT-Metal's region by a gone process"),
        ];
        f.render_widget(Clear, r);
        f.render_widget(
            Paragraph::new(text).block(Block::default().borders(Borders::ALL).title(" Help ")),
            r,
        );
    }
}
