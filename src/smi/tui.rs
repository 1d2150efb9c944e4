//! `tt-smi -w`: the live terminal UI (ratatui). Views: 1 main, 2 charts, 3 telemetry,
//! 4 memory map;
//! `?` help; `q`, Esc or Ctrl-C quit. The process list sorts by memory, pid or name
//! (`s` cycles) and scrolls (arrows, PgUp/PgDn, Home/End).
//!
//! This file is the application's state, its keys and the terminal loop; what is
//! drawn is in `tui/`: `frame.rs` (title, key line, help), one file per view
//! (`main_view.rs`, `processes.rs`, `charts.rs`, `telemetry.rs`, `memory_map.rs`),
//! `recent.rs` (the
//! recent events in the main view's spare rows) and `theme.rs`.

mod charts;
mod frame;
mod main_view;
mod memory_map;
mod processes;
mod recent;
mod telemetry;
mod theme;

use super::model::Model;
use crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Main,
    Charts,
    Telemetry,
    MemoryMap,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    Memory,
    Pid,
    Name,
}

pub const MIN_WIDTH: u16 = 60;
pub const MIN_HEIGHT: u16 = 15;
const WINDOWS: [u64; 3] = [60, 300, 900];

pub struct App {
    pub view: View,
    pub help: bool,
    pub sort: SortKey,
    pub scroll: usize,
    pub window: usize,
    pub marker: ChartMarker,
    pub color: bool,
    pub model: Model,
    pub quit: bool,
    /// How far the view drawn last can scroll (set while drawing): the scroll keys
    /// stay within it, so Up after End moves at once.
    max_scroll: std::cell::Cell<usize>,
    /// What changed between refreshes, newest first ([`App::update`]).
    pub recent: recent::RecentLog,
    /// The address maps, while the memory-map view is shown.
    pub maps: Vec<serde_json::Value>,
}

impl App {
    pub fn new(model: Model, color: bool) -> Self {
        Self {
            view: View::Main,
            help: false,
            sort: SortKey::Memory,
            scroll: 0,
            window: 0,
            marker: ChartMarker::Braille,
            color,
            model,
            quit: false,
            max_scroll: std::cell::Cell::new(usize::MAX / 2),
            recent: Default::default(),
            maps: Vec::new(),
        }
    }

    pub fn window_s(&self) -> u64 {
        WINDOWS[self.window]
    }

    pub fn on_key(&mut self, k: KeyEvent) {
        if k.kind == KeyEventKind::Release {
            return;
        }
        match k.code {
            KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => self.quit = true,
            KeyCode::Char('q') | KeyCode::Esc => {
                if self.help && k.code == KeyCode::Esc {
                    self.help = false;
                } else {
                    self.quit = true;
                }
            }
            KeyCode::Char('1') => self.view = View::Main,
            KeyCode::Char('2') => self.view = View::Charts,
            KeyCode::Char('3') => self.view = View::Telemetry,
            KeyCode::Char('4') => self.view = View::MemoryMap,
            KeyCode::Char('?') | KeyCode::Char('h') => self.help = !self.help,
            KeyCode::Char('s') => {
                self.sort = match self.sort {
                    SortKey::Memory => SortKey::Pid,
                    SortKey::Pid => SortKey::Name,
                    SortKey::Name => SortKey::Memory,
                }
            }
            KeyCode::Char('m') => self.sort = SortKey::Memory,
            KeyCode::Char('p') => self.sort = SortKey::Pid,
            KeyCode::Char('n') => self.sort = SortKey::Name,
            KeyCode::Char('w') => self.window = (self.window + 1) % WINDOWS.len(),
            KeyCode::Char('b') => self.marker = self.marker.next(),
            KeyCode::Down | KeyCode::Char('j') => self.scroll = self.scroll.saturating_add(1),
            KeyCode::Up | KeyCode::Char('k') => self.scroll = self.scroll.saturating_sub(1),
            KeyCode::PageDown => self.scroll = self.scroll.saturating_add(10),
            KeyCode::PageUp => self.scroll = self.scroll.saturating_sub(10),
            KeyCode::Home => self.scroll = 0,
            KeyCode::End => self.scroll = self.max_scroll.get(),
            _ => {}
        }
        self.scroll = self.scroll.min(self.max_scroll.get());
    }

    /// The first row to show of `rows` in `visible` lines, remembering how far this
    /// view can scroll.
    fn first_row(&self, rows: usize, visible: usize) -> usize {
        let max = rows.saturating_sub(visible);
        self.max_scroll.set(max);
        self.scroll.min(max)
    }
}

/// Restores the terminal: raw mode off, main screen back, cursor shown.
pub fn restore_terminal() {
    let _ = crossterm::terminal::disable_raw_mode();
    let _ = crossterm::execute!(
        std::io::stdout(),
        crossterm::terminal::LeaveAlternateScreen,
        crossterm::cursor::Show
    );
}

/// Source of the models the UI shows.
pub trait ModelSource {
    fn load(&mut self, history_samples: usize) -> Result<Model, String>;
    /// The address maps with a strip of `cells` cells each (none by default).
    fn maps(&mut self, _cells: usize) -> Vec<serde_json::Value> {
        Vec::new()
    }
}

/// The counters page of a directory.
pub struct DirSource {
    pub dir: PathBuf,
    pub sysfs_root: PathBuf,
}

impl ModelSource for DirSource {
    fn load(&mut self, history_samples: usize) -> Result<Model, String> {
        Model::load(&self.dir, history_samples, &self.sysfs_root).map_err(|e| e.0)
    }
    fn maps(&mut self, cells: usize) -> Vec<serde_json::Value> {
        let q = crate::accounting::maps::MapQuery {
            strip: Some(cells.clamp(1, crate::accounting::maps::MAX_STRIP_CELLS)),
            ..Default::default()
        };
        crate::control::request_within(&self.dir, &q.request(), Duration::from_secs(1), 4 << 20)
            .map(|t| {
                t.lines()
                    .filter_map(|l| serde_json::from_str(l).ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Runs the UI until the user quits. The terminal is restored on every exit path,
/// panics included.
pub fn run(source: &mut dyn ModelSource, refresh: Duration, color: bool) -> std::io::Result<()> {
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore_terminal();
        prev(info);
    }));
    crossterm::terminal::enable_raw_mode()?;
    crossterm::execute!(
        std::io::stdout(),
        crossterm::terminal::EnterAlternateScreen,
        crossterm::cursor::Hide
    )?;
    let result = (|| -> std::io::Result<()> {
        let mut term =
            ratatui::Terminal::new(ratatui::backend::CrosstermBackend::new(std::io::stdout()))?;
        let first = source.load(0).map_err(std::io::Error::other)?;
        let mut app = App::new(first, color);
        let mut next = Instant::now();
        loop {
            if Instant::now() >= next {
                let samples = if app.view == View::Charts {
                    app.window_s() as usize + 1
                } else {
                    0
                };
                match source.load(samples) {
                    Ok(m) => app.update(m),
                    Err(e) => return Err(std::io::Error::other(e)),
                }
                if app.view == View::MemoryMap {
                    let width = term.size()?.width.saturating_sub(2) as usize;
                    app.maps = source.maps(width);
                }
                term.draw(|f| app.draw(f))?;
                next = Instant::now() + refresh;
            }
            let timeout = next.saturating_duration_since(Instant::now());
            if event::poll(timeout)? {
                match event::read()? {
                    Event::Key(k) => {
                        app.on_key(k);
                        if app.quit {
                            return Ok(());
                        }
                        next = Instant::now();
                    }
                    Event::Resize(_, _) => {
                        term.autoresize()?;
                        next = Instant::now();
                    }
                    _ => {}
                }
            }
        }
    })();
    restore_terminal();
    result
}

/// How charts draw their lines: braille (finest), dots, or plain ASCII for terminals
/// and fonts without those glyphs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChartMarker {
    Braille,
    Dots,
    Ascii,
}

impl ChartMarker {
    fn next(self) -> Self {
        match self {
            Self::Braille => Self::Dots,
            Self::Dots => Self::Ascii,
            Self::Ascii => Self::Braille,
        }
    }
}
