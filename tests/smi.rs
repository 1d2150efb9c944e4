//! tt-smi and tt-track demo as a person uses them: views rendered from a real counters
//! page, the real binaries in a real terminal (tmux), JSON checked against known
//! workloads, and the error paths.

mod common;
use common::*;
use ratatui::backend::TestBackend;
use ratatui::Terminal;
use std::process::Command;
use tttrack::smi::model::Model;
use tttrack::smi::tui::{App, View};

fn screen(app: &App, w: u16, h: u16) -> String {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| app.draw(f)).unwrap();
    let buf = t.backend().buffer().clone();
    let mut s = String::new();
    for y in 0..h {
        for x in 0..w {
            s.push_str(buf[(x, y)].symbol());
        }
        s.push('\n');
    }
    s
}

fn key(app: &mut App, c: char) {
    use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
    app.on_key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE));
}

/// An aggregator with two processes: one describing an n300 and holding 3 MiB, one
/// that dropped events before any aggregator ran.
fn scene(tag: &str) -> (TempDir, AggProc, Vec<std::process::Child>) {
    let dir = TempDir::new(tag);
    let over = tttrack::shm_layout::LANE_CAPACITY as u64 + 10;
    let mut lossy = spawn_producer(dir.path(), &["burst", &over.to_string()], 60_000);
    wait_line(&mut lossy, "dropped");
    let agg = AggProc::start(dir.path(), &[]);
    let mut info = spawn_producer(dir.path(), &["devinfo"], 60_000);
    wait_line(&mut info, "dropped");
    let mut hold = spawn_producer(dir.path(), &["hold", "60", "3"], 0);
    wait_line(&mut hold, "ready");
    let (h, l) = (hold.id(), lossy.id());
    agg.wait_for(
        || {
            agg.snapshot().is_some_and(|s| {
                proc_dev(&s, h, 0).is_some_and(|d| d.used[0] == 3 << 20)
                    && s.processes
                        .iter()
                        .any(|p| p.pid == l && p.events_lost == 10)
                    && s.devices.len() == 2
            })
        },
        "the scene",
    );
    std::thread::sleep(std::time::Duration::from_millis(1100)); // one history sample
    (dir, agg, vec![lossy, info, hold])
}

/// A process that ends holding memory is told in the main view's recent events, with
/// what it held, as the next refresh sees it gone.
#[test]
fn the_live_view_tells_of_a_process_that_exited_holding_memory() {
    let (dir, agg, mut kids) = scene("smi-recent");
    let sysfs = std::path::Path::new("/nonexistent-sysfs");
    let mut app = App::new(Model::load(dir.path(), 0, sysfs).unwrap(), false);
    let hold = kids[2].id();
    let name = app
        .model
        .processes
        .iter()
        .find(|p| p.pid == hold)
        .map(|p| p.name.clone())
        .expect("the holder on the page");
    let _ = kids[2].kill();
    let _ = kids[2].wait();
    agg.wait_for(
        || {
            agg.snapshot()
                .is_some_and(|s| s.processes.iter().all(|p| p.pid != hold))
        },
        "the holder released",
    );
    app.update(Model::load(dir.path(), 0, sysfs).unwrap());
    let sc = screen(&app, 130, 50);
    assert!(sc.contains(" Recent "), "{sc}");
    assert!(
        sc.contains(&format!("pid {hold} ({name}) exited holding 3.0 MiB")),
        "{sc}"
    );
    // Too few rows to spare: no panel, the process list keeps them.
    let small = screen(&app, 130, 24);
    assert!(!small.contains(" Recent "), "{small}");
    for k in kids.iter_mut() {
        let _ = k.kill();
        let _ = k.wait();
    }
}

#[test]
fn every_view_renders_from_a_real_counters_page() {
    let (dir, _agg, mut kids) = scene("smi-views");
    let model = Model::load(dir.path(), 60, std::path::Path::new("/nonexistent-sysfs")).unwrap();
    let mut app = App::new(model, true);
    let main = screen(&app, 130, 40);
    assert!(main.contains("tt-smi [main]"), "{main}");
    assert!(main.contains("1 R"), "remote chip marked R:\n{main}");
    assert!(main.contains("Wormhole"), "{main}");
    assert!(main.contains("3.0 MiB / 12.0 GiB"), "{main}");
    assert!(main.contains("Processes (3)"), "{main}");
    let lossy = kids[0].id();
    assert!(
        main.contains(&format!("{lossy} *")),
        "inexact process marked:\n{main}"
    );
    // The inexact row is drawn in yellow.
    let mut t = Terminal::new(TestBackend::new(130, 40)).unwrap();
    t.draw(|f| app.draw(f)).unwrap();
    let buf = t.backend().buffer().clone();
    let yellow = (0..40u16).any(|y| {
        let line: String = (0..130u16)
            .map(|x| buf[(x, y)].symbol().to_string())
            .collect();
        line.contains(&format!("{lossy} *")) && buf[(1, y)].fg == ratatui::style::Color::Yellow
    });
    assert!(yellow, "inexact row in yellow");
    // At every width from 80 to 250 columns, the memory bars never touch their text:
    // a bar cell is next to another bar cell, a space or the border only.
    for w in [80u16, 100, 120, 160, 250] {
        let sc = screen(&app, w, 40);
        let bar = |c: char| c == '█' || c == '░';
        for line in sc.lines().filter(|l| l.contains("DRAM") && l.contains('░')) {
            let cs: Vec<char> = line.chars().collect();
            for i in 1..cs.len() {
                let (a, b) = (cs[i - 1], cs[i]);
                let ok = |x: char| bar(x) || x == ' ' || x == '│';
                assert!(
                    (!bar(a) || ok(b)) && (!bar(b) || ok(a)),
                    "a bar runs into text at width {w}:\n{line}"
                );
            }
        }
        assert!(sc.contains("░"), "bars drawn at width {w}:\n{sc}");
    }
    key(&mut app, '2');
    assert_eq!(app.view, View::Charts);
    let charts = screen(&app, 130, 40);
    assert!(charts.contains("dev 0 DRAM (MiB), last 60s"), "{charts}");
    assert!(charts.contains("dev 1 L1 (MiB)"), "{charts}");
    // b: braille -> dots -> plain ASCII.
    key(&mut app, 'b');
    key(&mut app, 'b');
    let ascii = screen(&app, 130, 40);
    let chart_rows: Vec<&str> = ascii
        .lines()
        .skip_while(|l| !l.contains("dev 0 DRAM (MiB)"))
        .take_while(|l| !l.contains("dev 1 DRAM (MiB)"))
        .collect();
    assert!(
        chart_rows.iter().all(|l| l.is_ascii()) && chart_rows.iter().any(|l| l.contains('*')),
        "charts in plain ASCII:\n{ascii}"
    );
    key(&mut app, 'b');
    // Two devices in 16 rows: one at a time, the arrows scroll to the next.
    let small = screen(&app, 130, 16);
    assert!(
        small.contains("dev 0 DRAM (MiB), last 60s, 1-1 of 2 devices"),
        "{small}"
    );
    app.on_key(crossterm::event::KeyEvent::from(
        crossterm::event::KeyCode::Down,
    ));
    let small = screen(&app, 130, 16);
    assert!(
        small.contains("dev 1 DRAM (MiB), last 60s, 2-2 of 2 devices"),
        "{small}"
    );
    // End goes to the last device; Up then moves back at once (the offset is clamped
    // to what the view can scroll, not left far past it).
    let code = |app: &mut App, c| app.on_key(crossterm::event::KeyEvent::from(c));
    code(&mut app, crossterm::event::KeyCode::End);
    assert!(screen(&app, 130, 16).contains("2-2 of 2 devices"));
    code(&mut app, crossterm::event::KeyCode::Up);
    assert!(
        screen(&app, 130, 16).contains("1-1 of 2 devices"),
        "Up after End"
    );
    code(&mut app, crossterm::event::KeyCode::Home);
    key(&mut app, 'w');
    assert!(screen(&app, 130, 40).contains("last 300s"));
    key(&mut app, '3');
    let tel = screen(&app, 130, 40);
    assert!(tel.contains("ASIC temperature"), "{tel}");
    assert!(
        tel.contains("remote chip: telemetry N/A by design"),
        "{tel}"
    );
    assert!(
        !tel.contains("°C"),
        "no invented telemetry without sysfs:\n{tel}"
    );
    key(&mut app, '?');
    assert!(screen(&app, 130, 40).contains("Help"));
    key(&mut app, '1');
    key(&mut app, 's');
    assert!(screen(&app, 130, 40).contains("sorted by pid"));
    let small = screen(&app, 40, 10);
    assert!(small.contains("Terminal too small (40x10)"), "{small}");
    key(&mut app, 'q');
    assert!(app.quit);
    for k in kids.iter_mut() {
        let _ = k.kill();
        let _ = k.wait();
    }
}

#[test]
fn json_matches_the_known_workload() {
    let (dir, _agg, mut kids) = scene("smi-json");
    let out = Command::new(env!("CARGO_BIN_EXE_tt-smi"))
        .args(["--json", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["schema"], 1);
    assert!(v["time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(v["aggregator"]["running"], true);
    assert_eq!(v["aggregator"]["events_lost"], 10);
    let d0 = &v["devices"][0];
    assert_eq!(d0["id"], 0);
    assert_eq!(d0["arch"], "wormhole_b0");
    assert_eq!(d0["remote"], false);
    assert_eq!(v["devices"][1]["remote"], true);
    // 3 MiB held by `hold`, 111 bytes by `devinfo`.
    assert_eq!(d0["memory"]["dram"]["used_bytes"], (3u64 << 20) + 111);
    assert_eq!(d0["memory"]["dram"]["total_bytes"], 12u64 << 30);
    assert_eq!(d0["memory"]["dram"]["buffers"], 4);
    assert_eq!(v["devices"][1]["memory"]["dram"]["used_bytes"], 222);
    assert_eq!(d0["memory"]["l1"]["total_bytes"], 64 * 1_499_136u64);
    assert_eq!(d0["memory"]["kernel"]["application_bytes"], 0);
    assert!(d0["telemetry"]["asic_temp_c"].is_null());
    let hold = kids[2].id();
    let p = v["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pid"] == hold)
        .unwrap();
    assert_eq!(p["exact"], true);
    assert_eq!(p["devices"][0]["dram_bytes"], 3u64 << 20);
    let lossy = kids[0].id();
    let p = v["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pid"] == lossy)
        .unwrap();
    assert_eq!(p["exact"], false);
    assert_eq!(p["events_lost"], 10);
    // The plain snapshot to a pipe has no escape codes.
    let out = Command::new(env!("CARGO_BIN_EXE_tt-smi"))
        .arg("--dir")
        .arg(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(!text.contains('\x1b'), "{text}");
    assert!(
        text.contains("Memory breakdown")
            && text.contains("DRAM")
            && text.contains("3.0 MiB / 12.0 GiB"),
        "{text}"
    );
    // --buffers, largest first, for one process.
    let out = Command::new(env!("CARGO_BIN_EXE_tt-smi"))
        .args(["--buffers", "--pid", &hold.to_string(), "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("3 live buffers, 3.0 MiB"), "{text}");
    assert!(text.contains("0x10000") && text.contains("DRAM"), "{text}");
    for k in kids.iter_mut() {
        let _ = k.kill();
        let _ = k.wait();
    }
}

#[test]
fn snapshot_without_aggregator_and_with_a_foreign_page_version() {
    let dir = TempDir::new("smi-none");
    let out = Command::new(env!("CARGO_BIN_EXE_tt-smi"))
        .arg("--dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "memory: N/A, tt-aggregator is not running (no counters page in {}); start it with: tt-aggregator",
            dir.path().display()
        )),
        "{text}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_tt-smi"))
        .args(["--json", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["aggregator"]["running"], false);
    let out = Command::new(env!("CARGO_BIN_EXE_tt-smi"))
        .args(["--buffers", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    // A page from another layout version.
    let mut page = vec![0u8; 4096];
    page[0..8].copy_from_slice(&tttrack::shm_layout::COUNTERS_MAGIC.to_le_bytes());
    page[8..12].copy_from_slice(&99u32.to_le_bytes());
    std::fs::write(dir.path().join("counters"), &page).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tt-smi"))
        .arg("--dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("layout version 99")
            && err.contains(&format!(
                "reads version {}",
                tttrack::counters_page::COUNTERS_LAYOUT_VERSION
            )),
        "{err}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_tt-smi"))
        .arg("-w")
        .arg("--dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "-w without a terminal");
}

#[test]
fn watch_view_in_a_real_terminal() {
    let (dir, _agg, mut kids) = scene("smi-tmux");
    let session = format!("smi{}", std::process::id());
    let cmd = format!(
        "{} -w -r 200 --dir {}",
        env!("CARGO_BIN_EXE_tt-smi"),
        dir.path().display()
    );
    tmux_session(&session, 120, 40, &cmd);
    let s = wait_screen(&session, "tt-smi [main]");
    assert!(s.contains("1 R"), "{s}");
    tmux(&["send-keys", "-t", &session, "2"]);
    wait_screen(&session, "tt-smi [charts]");
    tmux(&["send-keys", "-t", &session, "3"]);
    wait_screen(&session, "ASIC temperature");
    tmux(&["resize-window", "-t", &session, "-x", "50", "-y", "12"]);
    wait_screen(&session, "Terminal too small");
    tmux(&["resize-window", "-t", &session, "-x", "120", "-y", "40"]);
    tmux(&["send-keys", "-t", &session, "1"]);
    wait_screen(&session, "tt-smi [main]");
    tmux(&["send-keys", "-t", &session, "q"]);
    let t = std::time::Instant::now();
    while Command::new("tmux")
        .args(["has-session", "-t", &session])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
    {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(10),
            "tt-smi did not quit on q"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    for k in kids.iter_mut() {
        let _ = k.kill();
        let _ = k.wait();
    }
}

#[test]
fn demo_runs_in_a_terminal_and_q_ends_everything() {
    let _h = heavy();
    let session = format!("demo{}", std::process::id());
    let exe = env!("CARGO_BIN_EXE_tt-track");
    let demo_dirs = || -> std::collections::HashSet<String> {
        std::fs::read_dir("/dev/shm")
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("tttrack-demo-"))
            .collect()
    };
    let before = demo_dirs();
    tmux_session(&session, 130, 40, &format!("{exe} demo; sleep 30"));
    let s = wait_screen(&session, "llama-70b");
    assert!(s.contains("tt-smi [main]") && s.contains("1 R"), "{s}");
    // Simulated cards laid out as the kernel does: the views are alive and say so.
    assert!(
        s.contains("simulated cards")
            && s.contains("Wormhole n300")
            && s.contains("Blackhole p150a"),
        "{s}"
    );
    assert!(
        s.contains("°C") && s.contains(" W "),
        "live telemetry on the main view:\n{s}"
    );
    tmux(&["send-keys", "-t", &session, "3"]);
    let s = wait_screen(&session, "RPM");
    assert!(
        s.contains("bundle 18.2.0.0") && s.contains("PCIe traffic") && s.contains("MHz"),
        "{s}"
    );
    tmux(&["send-keys", "-t", &session, "2"]);
    wait_screen(&session, "dev 0 DRAM (MiB)");
    tmux(&["send-keys", "-t", &session, "q"]);
    let s = wait_screen(&session, "full aggregator log:");
    assert!(s.contains("tt-track demo: done."), "{s}");
    // Everything it created is gone (removed before that last line is printed).
    let left: Vec<_> = demo_dirs().difference(&before).cloned().collect();
    assert!(left.is_empty(), "demo directory removed: {left:?}");
    tmux(&["kill-session", "-t", &session]);
}

/// A bar cell stands beside another bar cell, a space or a border only.
fn bars_touch_no_text(screen: &str) -> Result<(), String> {
    let bar = |c: char| c == '█' || c == '░';
    let ok = |x: char| bar(x) || x == ' ' || x == '│';
    for line in screen.lines() {
        let cs: Vec<char> = line.chars().collect();
        for i in 1..cs.len() {
            let (a, b) = (cs[i - 1], cs[i]);
            if (bar(a) && !ok(b)) || (bar(b) && !ok(a)) {
                return Err(line.to_string());
            }
        }
    }
    Ok(())
}

/// The demo in a real terminal at 80x24, 120x40 and 250x60: at each size the memory
/// bars touch no text, the telemetry is live and the cards are said to be simulated;
/// at 250x60 the spare rows tell recent events (the demo's processes come and go).
#[test]
fn demo_fits_80x24_120x40_and_250x60() {
    let _h = heavy();
    let session = format!("demosz{}", std::process::id());
    let exe = env!("CARGO_BIN_EXE_tt-track");
    tmux_session(&session, 80, 24, &format!("{exe} demo; sleep 30"));
    wait_screen(&session, "°C");
    for (w, h) in [(80, 24), (120, 40), (250, 60)] {
        tmux(&[
            "resize-window",
            "-t",
            &session,
            "-x",
            &w.to_string(),
            "-y",
            &h.to_string(),
        ]);
        // Two refreshes at the new size.
        std::thread::sleep(std::time::Duration::from_millis(1200));
        let s = wait_screen(&session, "░");
        let rows = s.lines().count();
        assert!(
            rows >= h as usize - 1,
            "{w}x{h}: {rows} rows captured:\n{s}"
        );
        assert!(
            s.lines().all(|l| l.chars().count() <= w as usize),
            "{w}x{h}: a line wider than the terminal:\n{s}"
        );
        if let Err(line) = bars_touch_no_text(&s) {
            panic!("{w}x{h}: a bar runs into text:\n{line}\n\n{s}");
        }
        assert!(
            s.contains("°C") && s.contains(" W "),
            "{w}x{h}: live telemetry:\n{s}"
        );
        assert!(
            s.contains("simulated cards"),
            "{w}x{h}: says simulated:\n{s}"
        );
    }
    let s = wait_screen(&session, " Recent ");
    assert!(s.contains("started reporting"), "{s}");
    let s = wait_screen(&session, "exited");
    assert!(bars_touch_no_text(&s).is_ok(), "{s}");
    tmux(&["send-keys", "-t", &session, "q"]);
    wait_screen(&session, "full aggregator log:");
    tmux(&["kill-session", "-t", &session]);
}

#[test]
fn demo_without_a_terminal_prints_a_snapshot_and_cleans_up() {
    let _h = heavy();
    let out = Command::new(env!("CARGO_BIN_EXE_tt-track"))
        .args(["demo", "--no-ui", "--duration", "3"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("llama-70b") && text.contains("Memory breakdown"),
        "{text}"
    );
    assert!(text.contains("tt-track demo: done."), "{text}");
}

/// A process on a Galaxy's 32 chips has every chip listed; one on more is marked
/// truncated, with exact device totals either way.
#[test]
fn a_process_on_many_devices_is_listed_in_full_or_marked_truncated() {
    let dir = TempDir::new("smi-galaxy");
    let agg = AggProc::start(dir.path(), &[]);
    let run = |ndev: u32| {
        let script = format!(
            r#"
import ctypes, sys
lib = ctypes.CDLL(None)
lib.tttrack_alloc.argtypes = [ctypes.c_int32, ctypes.c_uint64, ctypes.c_uint8, ctypes.c_uint64]
for d in range({ndev}):
    lib.tttrack_alloc(d, (d + 1) << 20, 0, 0x1000)
print("ok", flush=True)
sys.stdin.readline()
"#
        );
        let mut p = tracked_python(dir.path(), &script);
        wait_line(&mut p, "ok");
        p
    };
    let mut galaxy = run(32);
    let mut more = run(40);
    let (g, m) = (galaxy.id(), more.id());
    agg.wait_for(
        || {
            agg.snapshot().is_some_and(|s| {
                s.processes
                    .iter()
                    .filter(|p| (p.pid == g || p.pid == m) && p.events_applied >= 32)
                    .count()
                    == 2
                    && s.status.events_applied >= 72
            })
        },
        "both processes applied",
    );
    let v = smi_json(&["--dir", dir.path().to_str().unwrap()]);
    let proc_of = |pid: u32| {
        v["processes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["pid"] == pid)
            .unwrap()
            .clone()
    };
    let pg = proc_of(g);
    assert_eq!(pg["devices_truncated"], false);
    let devs = pg["devices"].as_array().unwrap();
    assert_eq!(devs.len(), 32);
    assert_eq!(devs[31]["id"], 31);
    assert_eq!(devs[31]["dram_bytes"], 32u64 << 20);
    let pm = proc_of(m);
    assert_eq!(pm["devices_truncated"], true);
    assert_eq!(pm["devices"].as_array().unwrap().len(), 32);
    // Device 39 exists only in the second process: its total is exact.
    let d39 = v["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == 39)
        .unwrap();
    assert_eq!(d39["memory"]["dram"]["used_bytes"], 40u64 << 20);
    for p in [&mut galaxy, &mut more] {
        drop(p.stdin.take());
        let _ = p.wait();
    }
}

/// The counters page deleted while tt-smi -w watches: the aggregator recreates it and
/// the live view follows the new page (a process started afterwards shows up).
#[test]
fn the_live_view_follows_a_counters_page_deleted_and_recreated() {
    let dir = TempDir::new("smi-pagedel");
    let agg = AggProc::start(dir.path(), &[]);
    let mut first = spawn_producer(dir.path(), &["hold", "60", "3"], 0);
    wait_line(&mut first, "ready");
    let session = format!("pagedel{}", std::process::id());
    let cmd = format!(
        "{} -w -r 200 --dir {}",
        env!("CARGO_BIN_EXE_tt-smi"),
        dir.path().display()
    );
    tmux_session(&session, 120, 40, &cmd);
    let row = |pid: u32| format!("{pid}  ");
    wait_screen(&session, &row(first.id()));
    std::fs::remove_file(dir.path().join("counters")).unwrap();
    agg.wait_for(
        || {
            agg.output()
                .contains("was removed or replaced; recreated it")
        },
        "the page recreated",
    );
    let mut second = spawn_producer(dir.path(), &["hold", "60", "5"], 0);
    wait_line(&mut second, "ready");
    let s = wait_screen(&session, &row(second.id()));
    let shown = |pid: u32| {
        s.lines()
            .any(|l| l.contains(&row(pid)) && l.contains("producer"))
    };
    assert!(shown(first.id()) && shown(second.id()), "{s}");
    assert!(s.contains("tt-smi [main]"), "still running:\n{s}");
    tmux(&["kill-session", "-t", &session]);
    for p in [&mut first, &mut second] {
        let _ = p.kill();
        let _ = p.wait();
    }
}
