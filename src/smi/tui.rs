//! `tt-smi -w`: the live terminal UI (ratatui). Views: 1 main, 2 charts, 3 telemetry;
//! `?` help; `q`, Esc or Ctrl-C quit. The process list sorts by memory, pid or name
//! (`s` cycles) and scrolls (arrows, PgUp/PgDn, Home/End).

use super::model::{DeviceView, Model};
use super::text::{memory_cell, telemetry_cells};
use crate::counters_page::*;
use crate::sys::human_bytes;
use crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Direction, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Axis, Block, Borders, Cell, Chart, Clear, Dataset, GraphType, Paragraph, Row, Table, Wrap,
};
use ratatui::Frame;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Main,
    Charts,
    Telemetry,
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

    fn style(&self, s: Style) -> Style {
        if self.color {
            s
        } else {
            Style::default().add_modifier(s.add_modifier)
        }
    }

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
        }
        let keys = "1 main  2 charts  3 telemetry  s sort  ↑↓ scroll  w window  ? help  q quit";
        f.render_widget(
            Paragraph::new(keys).style(self.style(Style::default().fg(Color::DarkGray))),
            rows[2],
        );
        if self.help {
            self.draw_help(f, area);
        }
    }

    fn draw_title(&self, f: &mut Frame, r: Rect) {
        let when = humantime::format_rfc3339_seconds(self.model.time).to_string();
        let view = match self.view {
            View::Main => "main",
            View::Charts => "charts",
            View::Telemetry => "telemetry",
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
        let line = Line::from(vec![
            Span::styled(
                format!("tt-smi [{view}] "),
                self.style(Style::default().add_modifier(Modifier::BOLD)),
            ),
            Span::raw(format!("{when}  ")),
            status,
            Span::styled(
                if self.model.simulated {
                    "  · simulated cards (tt-track demo)"
                } else {
                    ""
                },
                self.style(Style::default().fg(Color::Yellow)),
            ),
        ]);
        f.render_widget(Paragraph::new(line), r);
    }

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
                let l1 = if d.memory_known {
                    format!(
                        "{} / {}",
                        human_bytes(d.l1_resident()),
                        d.l1_total.map(human_bytes).unwrap_or_else(|| "?".into())
                    )
                } else {
                    "N/A".into()
                };
                let stalled = d.telemetry.valid & TEL_HEARTBEAT != 0
                    && d.telemetry.heartbeat_stalled_samples >= HEARTBEAT_STALL_SAMPLES;
                let row = Row::new(vec![
                    Cell::from(format!("{}{}", d.id, if d.remote { " R" } else { "" })),
                    Cell::from(d.display_name()),
                    Cell::from(t),
                    Cell::from(p),
                    Cell::from(c),
                    Cell::from(memory_cell(d)),
                    Cell::from(l1),
                ]);
                if stalled {
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

    fn draw_main(&self, f: &mut Frame, r: Rect) {
        let nd = self.model.devices.len().max(1) as u16;
        let mem_h = if self.model.aggregator.is_some() {
            (nd * 3 + 2).min(r.height / 2)
        } else {
            0
        };
        let parts = Layout::default()
            .direction(Direction::Vertical)
            .constraints([
                Constraint::Length(nd + 3),
                Constraint::Length(mem_h),
                Constraint::Min(3),
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
            .find(|l| r.width >= l.chars().count() as u16 + 1 + 4 + 1);
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
        let ratio = total
            .filter(|&t| t > 0)
            .map(|t| (used as f64 / t as f64).min(1.0))
            .unwrap_or(0.0);
        let color = if ratio >= 0.9 {
            Color::Red
        } else if ratio >= 0.7 {
            Color::Yellow
        } else {
            Color::Green
        };
        let filled = super::text::filled_cells(used, total.unwrap_or(0), width as usize);
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

    /// Process rows in the chosen order.
    pub fn sorted_processes(&self) -> Vec<&super::model::ProcessView> {
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

    fn draw_processes(&self, f: &mut Frame, r: Rect) {
        let sort = match self.sort {
            SortKey::Memory => "memory",
            SortKey::Pid => "pid",
            SortKey::Name => "name",
        };
        let title = format!(
            " Processes ({}) · sorted by {sort} ",
            self.model.processes.len()
        );
        let header = Row::new([
            "PID",
            "Name",
            "Dev",
            "DRAM",
            "L1",
            "CB",
            "Kernel",
            "Peak DRAM",
            "Peak L1",
        ])
        .style(self.style(Style::default().add_modifier(Modifier::BOLD)));
        let mut rows: Vec<Row> = Vec::new();
        for p in self.sorted_processes() {
            let mark = if p.untracked {
                " ?"
            } else if !p.exact {
                " *"
            } else {
                ""
            };
            // Yellow means inexact figures; an untracked process has no figures at all.
            let style = if p.untracked {
                self.style(Style::default().fg(Color::DarkGray))
            } else if !p.exact {
                self.style(Style::default().fg(Color::Yellow))
            } else {
                Style::default()
            };
            if p.devices.is_empty() {
                rows.push(
                    Row::new(vec![format!("{}{mark}", p.pid), p.name.clone(), "-".into()])
                        .style(style),
                );
            }
            for (i, d) in p.devices.iter().enumerate() {
                let (pid, name) = if i == 0 {
                    (format!("{}{mark}", p.pid), p.name.clone())
                } else {
                    (String::new(), String::new())
                };
                let u = &d.used;
                rows.push(
                    Row::new(vec![
                        pid,
                        name,
                        d.id.to_string(),
                        human_bytes(u[CAT_DRAM]),
                        // L1 buffers, like Peak L1 beside it (L1_SMALL has its own
                        // line in the memory breakdown).
                        human_bytes(u[CAT_L1]),
                        human_bytes(u[CAT_CB]),
                        human_bytes(u[CAT_KERNEL]),
                        human_bytes(d.peak[CAT_DRAM]),
                        human_bytes(d.peak[CAT_L1]),
                    ])
                    .style(style),
                );
            }
        }
        let visible = r.height.saturating_sub(3) as usize;
        let skip = self.first_row(rows.len(), visible);
        let rows: Vec<Row> = rows.into_iter().skip(skip).collect();
        let t = Table::new(
            rows,
            [
                Constraint::Length(9),
                Constraint::Length(16),
                Constraint::Length(4),
                Constraint::Length(11),
                Constraint::Length(11),
                Constraint::Length(11),
                Constraint::Length(11),
                Constraint::Length(11),
                Constraint::Length(11),
            ],
        )
        .header(header)
        .block(Block::default().borders(Borders::ALL).title(title));
        f.render_widget(t, r);
    }

    fn draw_charts(&self, f: &mut Frame, r: Rect) {
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
            let dram = series(&|s| s.used[idx][HIST_DRAM]);
            let l1 = series(&|s| {
                let u = &s.used[idx];
                u[HIST_L1] + u[HIST_L1_SMALL] + u[HIST_CB] + u[HIST_KERNEL]
            });
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

    fn chart(
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

    fn draw_telemetry(&self, f: &mut Frame, r: Rect) {
        let header = Row::new(["Dev", "Field", "Value", "Limit"])
            .style(self.style(Style::default().add_modifier(Modifier::BOLD)));
        let mut rows = Vec::new();
        for d in &self.model.devices {
            let t = &d.telemetry;
            let has = |b: u64| t.valid & b != 0;
            let v = |ok: bool, s: String| if ok { s } else { "N/A".into() };
            let dev = format!("{}{}", d.id, if d.remote { " R" } else { "" });
            let fields: Vec<(&str, String, String)> = vec![
                (
                    "ASIC temperature",
                    v(
                        has(TEL_TEMP),
                        format!("{:.1} °C", t.asic_temp_mc as f64 / 1000.0),
                    ),
                    v(
                        has(TEL_TEMP_MAX),
                        format!("{:.1} °C", t.temp_max_mc as f64 / 1000.0),
                    ),
                ),
                (
                    "Power",
                    v(has(TEL_POWER), format!("{:.1} W", t.power_uw as f64 / 1e6)),
                    v(
                        has(TEL_POWER_MAX),
                        format!("{:.1} W", t.power_max_uw as f64 / 1e6),
                    ),
                ),
                (
                    "Core voltage",
                    v(has(TEL_VCORE), format!("{} mV", t.vcore_mv)),
                    v(has(TEL_VCORE_MAX), format!("{} mV", t.vcore_max_mv)),
                ),
                (
                    "Current",
                    v(
                        has(TEL_CURRENT),
                        format!("{:.1} A", t.current_ma as f64 / 1000.0),
                    ),
                    v(
                        has(TEL_CURRENT_MAX),
                        format!("{:.1} A", t.current_max_ma as f64 / 1000.0),
                    ),
                ),
                (
                    "Fan",
                    v(has(TEL_FAN), format!("{} RPM", t.fan_rpm)),
                    String::new(),
                ),
                (
                    "AICLK",
                    v(has(TEL_AICLK), format!("{} MHz", t.aiclk_mhz)),
                    String::new(),
                ),
                (
                    "AXICLK",
                    v(has(TEL_AXICLK), format!("{} MHz", t.axiclk_mhz)),
                    String::new(),
                ),
                (
                    "ARCCLK",
                    v(has(TEL_ARCCLK), format!("{} MHz", t.arcclk_mhz)),
                    String::new(),
                ),
                (
                    "Firmware heartbeat",
                    v(
                        has(TEL_HEARTBEAT),
                        format!(
                            "{}{}",
                            t.heartbeat,
                            if t.heartbeat_stalled_samples >= HEARTBEAT_STALL_SAMPLES {
                                " (STALLED)"
                            } else {
                                ""
                            }
                        ),
                    ),
                    String::new(),
                ),
                (
                    "Thermal trips",
                    v(has(TEL_THERM_TRIP), t.therm_trip_count.to_string()),
                    String::new(),
                ),
                (
                    "PCIe link",
                    v(
                        has(TEL_PCIE),
                        format!(
                            "{:.1} GT/s x{}",
                            t.pcie_link_speed_milli_gts as f64 / 1000.0,
                            t.pcie_link_width
                        ),
                    ),
                    if has(TEL_PCIE_MAX) {
                        format!(
                            "max {:.1} GT/s x{}",
                            t.pcie_max_link_speed_milli_gts as f64 / 1000.0,
                            t.pcie_max_link_width
                        )
                    } else {
                        String::new()
                    },
                ),
                (
                    "PCIe traffic",
                    v(
                        has(TEL_PCIE_TRAFFIC),
                        format!(
                            "to device {}/s, to host {}/s",
                            crate::sys::human_bytes(t.pcie_h2d_bytes_per_s),
                            crate::sys::human_bytes(t.pcie_d2h_bytes_per_s)
                        ),
                    ),
                    String::new(),
                ),
                ("Firmware", firmware_text(d), String::new()),
                (
                    "ASIC id",
                    if d.asic_id.is_empty() {
                        "N/A".into()
                    } else {
                        d.asic_id.clone()
                    },
                    String::new(),
                ),
            ];
            for (i, (name, val, lim)) in fields.into_iter().enumerate() {
                let stalled = name == "Firmware heartbeat" && val.contains("STALLED");
                let row = Row::new(vec![
                    if i == 0 { dev.clone() } else { String::new() },
                    name.to_string(),
                    val,
                    lim,
                ]);
                rows.push(if stalled {
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
        let t = Table::new(
            rows,
            [
                Constraint::Length(5),
                Constraint::Length(20),
                Constraint::Fill(1),
                Constraint::Length(18),
            ],
        )
        .header(header)
        .block(Block::default().borders(Borders::ALL).title(" Telemetry "));
        f.render_widget(t, r);
    }

    fn draw_help(&self, f: &mut Frame, area: Rect) {
        let w = 56.min(area.width);
        let h = 16.min(area.height);
        let r = Rect::new(
            area.x + (area.width - w) / 2,
            area.y + (area.height - h) / 2,
            w,
            h,
        );
        let text = vec![
            Line::from("1 / 2 / 3   main / charts / telemetry"),
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
        ];
        f.render_widget(Clear, r);
        f.render_widget(
            Paragraph::new(text).block(Block::default().borders(Borders::ALL).title(" Help ")),
            r,
        );
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
                    Ok(m) => app.model = m,
                    Err(e) => return Err(std::io::Error::other(e)),
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

/// "bundle 80.10.0.0 · arc 2.30.0.0 · eth 6.14.0 · ...", the versions the driver reports.
fn firmware_text(d: &crate::smi::model::DeviceView) -> String {
    let t = &d.telemetry;
    let mut parts = Vec::new();
    if !d.fw_bundle.is_empty() {
        parts.push(format!("bundle {}", d.fw_bundle));
    }
    for (name, v) in t.firmware() {
        if let Some(s) = version_text(v) {
            parts.push(format!("{name} {s}"));
        }
    }
    if parts.is_empty() {
        "N/A".into()
    } else {
        parts.join(" · ")
    }
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

/// Rewrites an area's line and box glyphs as ASCII: points `*`, lines `|` and `-`,
/// corners and joints `+`.
fn to_ascii(buf: &mut ratatui::buffer::Buffer, r: Rect) {
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
