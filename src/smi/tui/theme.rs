//! The live view's look: colours only when asked for, and charts redrawn in plain ASCII
//! for terminals without braille or box glyphs.

use super::App;
use crate::smi::format::Level;
use ratatui::layout::Rect;
use ratatui::style::{Color, Style};

/// The colour of how full a memory is.
pub(super) fn level_color(l: Level) -> Color {
    match l {
        Level::Full => Color::Red,
        Level::High => Color::Yellow,
        Level::Ok => Color::Green,
    }
}

impl App {
    /// `s` when colour is on; otherwise only its modifiers (bold, dim).
    pub(super) fn style(&self, s: Style) -> Style {
        if self.color {
            s
        } else {
            Style::default().add_modifier(s.add_modifier)
        }
    }
}

/// Rewrites an area's line and box glyphs as ASCII: points `*`, lines `|` and `-`,
/// corners and joints `+`.
pub(super) fn to_ascii(buf: &mut ratatui::buffer::Buffer, r: Rect) {
    for y in r.top()..r.bottom() {
        for x in r.left()..r.right() {
            let cell = &mut buf[(x, y)];
            let ascii = match cell.symbol() {
                "•" => "*",
                "│" | "┃" | "║" => "|",
                "─" | "━" | "═" => "-",
                "┌" | "┐" | "└" | "┘" | "├" | "┤" | "┬" | "┴" | "┼" | "╭" | "╮" | "╰" | "╯" => {
                    "+"
                }
                s if s.is_ascii() => continue,
                _ => "?",
            };
            cell.set_symbol(ascii);
        }
    }
}
