//! View 4, memory map: each chip's banks of each type drawn as a strip of their address
//! range, lowest address left (occupied cells solid, free cells dots, the largest free
//! block marked), with free bytes per bank, the largest free block and fragmentation
//! (the aggregator's `map` answer: [`crate::accounting::maps`]).

use super::App;
use crate::sys::human_bytes;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph};
use ratatui::Frame;

/// A cell of the strip by how much of it is occupied (eighths).
fn glyph(eighths: u8, ascii: bool) -> char {
    match (eighths, ascii) {
        (0, _) => '.',
        (8, false) => '█',
        (8, true) => '#',
        (_, false) => '▒',
        (_, true) => '+',
    }
}

impl App {
    pub(super) fn draw_memory_map(&self, f: &mut Frame, r: Rect) {
        let block = Block::default()
            .borders(Borders::ALL)
            .title(" Memory map (each bank's addresses, low to high) ");
        if self.maps.is_empty() {
            let msg = if self.model.aggregator.is_none() {
                "No map: tt-aggregator is not running."
            } else {
                "No map: no process reported its allocator's banks (TT-Metal's graph hook does: run the program under tt-track run)."
            };
            f.render_widget(Paragraph::new(msg).block(block), r);
            return;
        }
        let ascii = self.marker == super::ChartMarker::Ascii;
        let mut lines = Vec::new();
        for m in &self.maps {
            let n = |k: &str| m[k].as_u64().unwrap_or(0);
            lines.push(Line::from(vec![
                Span::styled(
                    format!(
                        "device {} {} ",
                        m["device"],
                        m["type"].as_str().unwrap_or("?")
                    ),
                    self.style(Style::default().add_modifier(Modifier::BOLD)),
                ),
                Span::raw(format!(
                    "{} banks · free {} per bank · largest block {}{} · fragmentation {:.0}%",
                    n("num_banks"),
                    human_bytes(n("free_bytes_per_bank")),
                    human_bytes(n("largest_free_block_bytes")),
                    m["largest_free_block_address"]
                        .as_u64()
                        .map(|a| format!(" at {a:#x}"))
                        .unwrap_or_default(),
                    m["fragmentation"].as_f64().unwrap_or(0.0) * 100.0
                )),
            ]));
            let strip = m["strip"].as_str().unwrap_or("");
            let largest = m["largest_free_block_cells"]
                .as_array()
                .and_then(|c| Some(c.first()?.as_u64()? as usize..c.get(1)?.as_u64()? as usize))
                .unwrap_or(0..0);
            let spans: Vec<Span> = strip
                .bytes()
                .enumerate()
                .map(|(i, b)| {
                    let e = b.saturating_sub(b'0');
                    let (ch, color) = if e > 0 {
                        (glyph(e, ascii), Color::Yellow)
                    } else if largest.contains(&i) {
                        (if ascii { '=' } else { '━' }, Color::Green)
                    } else {
                        (glyph(0, ascii), Color::DarkGray)
                    };
                    Span::styled(ch.to_string(), self.style(Style::default().fg(color)))
                })
                .collect();
            lines.push(Line::from(spans));
            lines.push(Line::from(""));
        }
        lines.push(Line::from(Span::styled(
            if ascii {
                "# occupied  + partly  . free  = the largest free block"
            } else {
                "█ occupied  ▒ partly  . free  ━ the largest free block"
            },
            self.style(Style::default().fg(Color::DarkGray)),
        )));
        let visible = r.height.saturating_sub(2) as usize;
        let skip = self.first_row(lines.len(), visible);
        let lines: Vec<Line> = lines.into_iter().skip(skip).collect();
        f.render_widget(Paragraph::new(lines).block(block), r);
    }
}
