//! `tt-track record`, `report`, `export`, `diff`, through the real binaries: C and
//! Python programs with known histories (a peak, leaks, a child process), a run killed
//! with SIGKILL, a run during which the aggregator is killed and restarted, truncated
//! and corrupted files, the HTML page in headless Chromium, the Perfetto JSON against
//! the trace-event format's rules, and diff's exit codes.

mod common;
use common::*;
use serde_json::Value;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

const MIB: u64 = 1 << 20;

fn tt_track() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tt-track"));
    c.env("TTTRACK_LIB", lib_path());
    c
}

/// `tt-track record -o FILE -- ARGS` with tracking directory `dir`, stdin piped.
fn record(dir: &TempDir, file: &Path, args: &[&str]) -> Child {
    tt_track()
        .arg("record")
        .arg("-o")
        .arg(file)
        .arg("--")
        .args(args)
        .env("TTTRACK_DIR", dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tt-track record")
}

fn finish(mut c: Child) -> Output {
    drop(c.stdin.take());
    c.wait_with_output().unwrap()
}

fn say(c: &mut Child, line: &str) {
    let stdin = c.stdin.as_mut().unwrap();
    writeln!(stdin, "{line}").unwrap();
    stdin.flush().unwrap();
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| wait_line(c, "ok"))).is_err() {
        let mut err = String::new();
        let _ = std::io::Read::read_to_string(c.stderr.as_mut().unwrap(), &mut err);
        panic!("no answer to {line:?}; tt-track record said:\n{err}");
    }
}

/// Ends a `producer script` (it answers nothing to that).
fn quit(c: &mut Child) {
    let stdin = c.stdin.as_mut().unwrap();
    writeln!(stdin, "quit").unwrap();
    stdin.flush().unwrap();
}

fn report_json(file: &Path) -> Value {
    let out = stdout_of_success(tt_track().arg("report").arg("--json").arg(file));
    serde_json::from_slice(&out).unwrap()
}

fn dram(r: &Value, device: u64) -> &Value {
    let d = r["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == device);
    &d.unwrap_or_else(|| panic!("no device {device}: {r}"))["types"]["dram"]
}

/// The private aggregators' directories there are now.
fn private_dirs() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("tttrack-record-"))
        .collect();
    v.sort();
    v
}

fn out_dir(tag: &str) -> TempDir {
    TempDir::new(tag)
}

/// The script run: a 1 MiB and a 2 MiB buffer (peak 3 MiB), the first freed, a
/// 512 KiB one: it ends holding 2.5 MiB in two buffers.
fn known_history(c: &mut Child) {
    say(c, &format!("alloc 0 {MIB} 4096"));
    say(c, &format!("alloc 0 {} 8192", 2 * MIB));
    say(c, "free 0 4096");
    say(c, &format!("alloc 0 {} 12288", MIB / 2));
}

#[test]
fn a_c_program_recorded_through_a_private_aggregator() {
    let _g = heavy();
    let (dir, out) = (TempDir::new("rec-c"), out_dir("rec-c-out"));
    let file = out.path().join("run.ttrec");
    let before = private_dirs();
    let mut c = record(
        &dir,
        &file,
        &[c_program("producer").to_str().unwrap(), "script"],
    );
    known_history(&mut c);
    assert_eq!(
        private_dirs().len(),
        before.len() + 1,
        "a private aggregator's directory"
    );
    quit(&mut c);
    let o = finish(c);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    // The summary: where, how much, the peak and the leaks.
    assert!(err.contains("4 events of 1 processes"), "{err}");
    assert!(
        err.contains("device 0 dram") && err.contains("peak    3.0 MiB"),
        "{err}"
    );
    assert!(err.contains("2 leaked buffers (2.5 MiB)"), "{err}");
    let r = report_json(&file);
    assert_eq!(r["schema"], 1);
    assert_eq!(r["complete"], true, "{r}");
    assert_eq!(r["exit"]["code"], 0);
    assert_eq!(r["events"], 4);
    let d = dram(&r, 0);
    assert_eq!(d["peak_bytes"], 3 * MIB);
    assert_eq!((&d["allocations"], &d["frees"]), (&3.into(), &1.into()));
    assert_eq!(d["allocated_bytes"], 3 * MIB + MIB / 2);
    assert_eq!(
        (&d["leaked_bytes"], &d["leaked_buffers"]),
        (&(2 * MIB + MIB / 2).into(), &2.into())
    );
    let at_peak: Vec<(u64, u64)> = d["live_at_peak"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["address"].as_u64().unwrap(), l["size"].as_u64().unwrap()))
        .collect();
    assert_eq!(at_peak, vec![(8192, 2 * MIB), (4096, MIB)], "largest first");
    let leaks: Vec<(u64, u64)> = r["leaks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["address"].as_u64().unwrap(), l["size"].as_u64().unwrap()))
        .collect();
    assert_eq!(leaks, vec![(8192, 2 * MIB), (12288, MIB / 2)]);
    assert!(
        r["leaks"][0]["allocated_at_s"].as_f64().unwrap()
            <= r["devices"][0]["types"]["dram"]["peak_at_s"]
                .as_f64()
                .unwrap()
    );
    // The text report says the same.
    let text = tt_track().arg("report").arg(&file).output().unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("Live at the dram peak (3.0 MiB"), "{text}");
    assert!(
        text.contains("Leaks (held when their process ended): 2"),
        "{text}"
    );
    // No aggregator was left behind, nor its directory.
    assert_eq!(
        private_dirs(),
        before,
        "the private aggregator's directory removed"
    );
}

#[test]
fn a_child_process_and_an_orphan_are_recorded_to_their_ends() {
    let _g = heavy();
    let (dir, out) = (TempDir::new("rec-fork"), out_dir("rec-fork-out"));
    let file = out.path().join("fork.ttrec");
    // The parent exits at once; its child (an orphan then: ours, as subreaper) ends 1 s
    // later holding its buffers on device 1.
    let c = tt_track()
        .args(["record", "-o"])
        .arg(&file)
        .arg("--")
        .arg(c_program("producer"))
        .args(["fork", "5"])
        .env("TTTRACK_DIR", dir.path())
        .env("PRODUCER_CHILD_SLEEP_S", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let o = c.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = report_json(&file);
    assert_eq!(r["processes"].as_array().unwrap().len(), 2, "{r}");
    assert_eq!(r["complete"], true, "{r}");
    assert_eq!(dram(&r, 0)["leaked_bytes"], 500);
    assert_eq!(dram(&r, 1)["leaked_bytes"], 1000);
    assert_eq!(dram(&r, 1)["leaked_buffers"], 5);
}

/// A command that reports and ends while the shared aggregator has not yet found its
/// segment (stopped here, as a busy one might be slow): it stays unreaped until the
/// aggregator has taken it in, so it is in the recording with its figures.
#[test]
fn a_command_that_ends_before_the_aggregator_finds_it_is_recorded() {
    let _g = heavy();
    let (dir, out) = (TempDir::new("rec-quick"), out_dir("rec-quick-out"));
    let agg = AggProc::start(dir.path(), &[]);
    let file = out.path().join("quick.ttrec");
    let producer = c_program("producer");
    // The shell replaces itself with the producer (same pid: the recorder's child).
    let script = format!("sleep 0.5; exec {} keep 1 3", producer.display());
    let c = record(&dir, &file, &["sh", "-c", &script]);
    agg.wait_for(
        || agg.output().contains("recording for pid"),
        "the recording",
    );
    let aggregator = agg.child.id() as i32;
    // SAFETY: signals to the aggregator this test started.
    unsafe { libc::kill(aggregator, libc::SIGSTOP) };
    std::thread::sleep(std::time::Duration::from_millis(1200));
    // SAFETY: as above.
    unsafe { libc::kill(aggregator, libc::SIGCONT) };
    let o = finish(c);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = report_json(&file);
    assert_eq!(r["processes"].as_array().unwrap().len(), 1, "{r}");
    assert_eq!(r["devices"][0]["types"]["l1"]["leaked_buffers"], 3, "{r}");
}

#[test]
fn a_python_program_recorded_through_the_shared_aggregator() {
    let _g = heavy();
    let (dir, out) = (TempDir::new("rec-py"), out_dir("rec-py-out"));
    let agg = AggProc::start(dir.path(), &[]);
    let file = out.path().join("py.ttrec");
    let script = r#"
import ctypes, os
lib = ctypes.CDLL(os.environ["TTTRACK_LIB"])
lib.tttrack_alloc.argtypes = [ctypes.c_int32, ctypes.c_uint64, ctypes.c_uint8, ctypes.c_uint64]
lib.tttrack_free.argtypes = [ctypes.c_int32, ctypes.c_uint64]
for k in range(100):
    lib.tttrack_alloc(0, 1 << 16, 1, 0x100000 + k)   # L1: 100 x 64 KiB
for k in range(100):
    lib.tttrack_free(0, 0x100000 + k)
lib.tttrack_alloc(0, 1 << 20, 0, 0x9000)             # DRAM: 1 MiB, kept
"#;
    let c = record(&dir, &file, &["python3", "-c", script]);
    let o = finish(c);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        agg.output().contains("recording for pid"),
        "{}",
        agg.output()
    );
    let r = report_json(&file);
    let l1 = &r["devices"][0]["types"]["l1"];
    assert_eq!(l1["peak_bytes"], 100 << 16);
    assert_eq!(l1["leaked_bytes"], 0);
    assert_eq!(dram(&r, 0)["leaked_bytes"], MIB);
    assert_eq!(r["processes"][0]["comm"], "python3");
    // The shared aggregator is still there for everyone else.
    assert!(agg.snapshot().is_some());
}

#[test]
fn a_killed_run_is_reported_as_killed_and_its_recording_is_complete() {
    let _g = heavy();
    let (dir, out) = (TempDir::new("rec-kill"), out_dir("rec-kill-out"));
    let file = out.path().join("killed.ttrec");
    let mut c = record(
        &dir,
        &file,
        &[c_program("producer").to_str().unwrap(), "hold", "60", "4"],
    );
    wait_line(&mut c, "ready");
    let pid = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|&p| {
            tttrack::sys::parent_of(Path::new("/proc"), p) == Some(c.id())
                && tttrack::sys::proc_info(Path::new("/proc"), p)
                    .is_some_and(|i| i.comm.starts_with("producer"))
        })
        .expect("the recorded command (not the private aggregator beside it)");
    // SAFETY: kill with a pid we found as the recorder's child.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let o = finish(c);
    assert_eq!(o.status.code(), Some(128 + 9));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("was killed by signal 9 (SIGKILL)"), "{err}");
    let r = report_json(&file);
    assert_eq!(r["exit"]["signal"], 9);
    assert_eq!(r["complete"], true, "{r}");
    assert_eq!(dram(&r, 0)["leaked_bytes"], 4 * MIB);
    assert_eq!(dram(&r, 0)["peak_bytes"], 4 * MIB);
}

#[test]
fn an_aggregator_restarted_during_the_run_loses_nothing_of_the_recording() {
    let _g = heavy();
    let (dir, out) = (TempDir::new("rec-restart"), out_dir("rec-restart-out"));
    let mut agg = AggProc::start(dir.path(), &[]);
    let file = out.path().join("restart.ttrec");
    let mut c = record(
        &dir,
        &file,
        &[c_program("producer").to_str().unwrap(), "script"],
    );
    say(&mut c, &format!("alloc 0 {MIB} 1"));
    say(&mut c, &format!("alloc 0 {MIB} 2"));
    agg.wait_for(|| dev_fig_now(&agg, 0) == 2 * MIB, "both buffers applied");
    agg.kill9();
    let agg = AggProc::start(dir.path(), &[]);
    agg.wait_for(
        || agg.output().contains("recording for pid"),
        "the recorder back",
    );
    say(&mut c, &format!("alloc 0 {MIB} 3"));
    say(&mut c, "free 0 1");
    quit(&mut c);
    let o = finish(c);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("the aggregator restarted 1 times"), "{err}");
    let r = report_json(&file);
    assert_eq!(r["events"], 4, "{r}");
    assert_eq!(r["events_lost"], 0);
    assert_eq!(dram(&r, 0)["peak_bytes"], 3 * MIB);
    assert_eq!(dram(&r, 0)["leaked_bytes"], 2 * MIB);
}

fn dev_fig_now(agg: &AggProc, dev: u32) -> u64 {
    agg.snapshot().map_or(0, |s| {
        dev_fig(&s, dev, tttrack::counters_page::CAT_DRAM).used
    })
}

/// A finished recording of the known history (a private aggregator), and its file.
fn recorded(tag: &str, extra_peak: u64) -> (TempDir, PathBuf) {
    let (dir, out) = (TempDir::new(tag), out_dir(&format!("{tag}-out")));
    let file = out.path().join("r.ttrec");
    let mut c = record(
        &dir,
        &file,
        &[c_program("producer").to_str().unwrap(), "script"],
    );
    known_history(&mut c);
    if extra_peak > 0 {
        say(&mut c, &format!("alloc 0 {extra_peak} 65536"));
        say(&mut c, "free 0 65536");
    }
    quit(&mut c);
    assert!(finish(c).status.success());
    (out, file)
}

#[test]
fn truncated_and_corrupted_recordings_are_said_to_be_so() {
    let _g = heavy();
    let (out, file) = recorded("rec-trunc", 0);
    let bytes = std::fs::read(&file).unwrap();
    let cut = out.path().join("cut.ttrec");
    std::fs::write(&cut, &bytes[..bytes.len() - 5]).unwrap();
    let o = tt_track()
        .args(["report", "--json"])
        .arg(&cut)
        .output()
        .unwrap();
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("is truncated"));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        r["truncated"]
            .as_str()
            .unwrap()
            .contains("ends inside a block"),
        "{r}"
    );
    assert_eq!(r["complete"], false);
    let bad = out.path().join("bad.ttrec");
    std::fs::write(&bad, b"not a recording at all").unwrap();
    let o = tt_track().arg("report").arg(&bad).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a tttrack recording"));
    let o = tt_track()
        .arg("report")
        .arg(out.path().join("missing.ttrec"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot open"));
}

#[test]
fn diff_fails_on_a_grown_peak_or_a_new_leak_only() {
    let _g = heavy();
    let (_a, base) = recorded("rec-diff-a", 0);
    let (_b, grown) = recorded("rec-diff-b", 2 * MIB);
    let diff = |a: &Path, b: &Path, pct: &str| {
        tt_track()
            .arg("diff")
            .arg(a)
            .arg(b)
            .args(["--fail-above", pct])
            .output()
            .unwrap()
    };
    let same = diff(&base, &base, "5");
    assert_eq!(
        same.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&same.stdout)
    );
    assert!(String::from_utf8_lossy(&same.stdout).contains("OK: no peak grew"));
    // The new run peaks at 4.5 MiB instead of 3: +50%.
    let worse = diff(&base, &grown, "10");
    let text = String::from_utf8_lossy(&worse.stdout);
    assert_eq!(worse.status.code(), Some(1), "{text}");
    assert!(
        text.contains("FAIL: device 0 dram peak grew from 3.0 MiB to 4.5 MiB (+50.0%"),
        "{text}"
    );
    assert_eq!(diff(&base, &grown, "60").status.code(), Some(0));
    // Shrinking is fine; without --fail-above it only shows.
    assert_eq!(diff(&grown, &base, "10").status.code(), Some(0));
    let o = tt_track()
        .arg("diff")
        .arg(&base)
        .arg(&grown)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0));
    // A leak that appears fails whatever the percentage.
    let (_c, noleak) = {
        let (dir, out) = (TempDir::new("rec-diff-c"), out_dir("rec-diff-c-out"));
        let file = out.path().join("r.ttrec");
        let mut c = record(
            &dir,
            &file,
            &[c_program("producer").to_str().unwrap(), "script"],
        );
        say(&mut c, &format!("alloc 0 {} 1", 3 * MIB));
        say(&mut c, "free 0 1");
        quit(&mut c);
        assert!(finish(c).status.success());
        (out, file)
    };
    let leak = diff(&noleak, &base, "1000");
    let text = String::from_utf8_lossy(&leak.stdout);
    assert_eq!(leak.status.code(), Some(1), "{text}");
    assert!(
        text.contains("FAIL: device 0 dram leaks 2.5 MiB in 2 buffers (base: 0 B in 0)"),
        "{text}"
    );
    assert_eq!(
        tt_track()
            .arg("diff")
            .arg(&base)
            .arg("/nonexistent.ttrec")
            .output()
            .unwrap()
            .status
            .code(),
        Some(2)
    );
}

#[test]
fn the_perfetto_export_follows_the_trace_event_format() {
    let _g = heavy();
    let (out, file) = recorded("rec-perfetto", 0);
    let json = out.path().join("trace.json");
    let o = tt_track()
        .args(["export", "--format", "perfetto", "-o"])
        .arg(&json)
        .arg(&file)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let events = v["traceEvents"].as_array().expect("traceEvents");
    let mut dram = Vec::new();
    for e in events {
        let ph = e["ph"].as_str().expect("ph");
        assert!(e["name"].is_string() && e["pid"].is_u64(), "{e}");
        match ph {
            "M" => assert!(
                e["args"]["name"].is_string() || e["args"]["sort_index"].is_u64(),
                "{e}"
            ),
            "C" => {
                assert!(e["ts"].is_u64(), "{e}");
                let args = e["args"].as_object().unwrap();
                assert!(!args.is_empty() && args.values().all(|x| x.is_u64()), "{e}");
                if e["name"] == "dram bytes"
                    && e["pid"].as_u64() >= Some(tttrack::recording::export::DEVICE_PID_BASE)
                {
                    dram.push((e["ts"].as_u64().unwrap(), args["bytes"].as_u64().unwrap()));
                }
            }
            "i" => {
                assert!(e["ts"].is_u64(), "{e}");
                assert!(["g", "p", "t"].contains(&e["s"].as_str().unwrap()), "{e}");
            }
            other => panic!("unexpected phase {other}: {e}"),
        }
    }
    assert!(
        events
            .iter()
            .any(|e| e["ph"] == "M" && e["args"]["name"] == "device 0"),
        "a named device track"
    );
    assert_eq!(dram.iter().map(|d| d.1).max(), Some(3 * MIB), "the peak");
    assert_eq!(
        dram.iter().max_by_key(|d| d.0).map(|d| d.1),
        Some(2 * MIB + MIB / 2),
        "where it ends"
    );
    assert!(events.iter().any(|e| e["ph"] == "i"
        && e["name"]
            .as_str()
            .unwrap()
            .starts_with("leaked 2.0 MiB dram")));
    // CSV: a header and the same figures.
    let o = tt_track()
        .args(["export", "--format", "csv"])
        .arg(&file)
        .output()
        .unwrap();
    let csv = String::from_utf8_lossy(&o.stdout);
    assert!(
        csv.starts_with("time_s,device,type,pid,used_bytes\n"),
        "{csv}"
    );
    assert!(
        csv.lines()
            .any(|l| l.ends_with(&format!(",0,dram,,{}", 3 * MIB))),
        "{csv}"
    );
}

#[test]
fn the_html_report_shows_its_chart_in_headless_chromium() {
    let _g = heavy();
    let (out, file) = recorded("rec-html", 0);
    let page = out.path().join("report.html");
    let o = tt_track()
        .arg("report")
        .arg(&file)
        .arg("--html")
        .arg(&page)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(
        !html.contains("src=\"http") && !html.contains("href=\"http"),
        "self-contained"
    );
    let profile = out.path().join("chromium-profile");
    let chromium = |extra: &[&str]| {
        Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
            ])
            .args([
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(extra)
            .arg(format!("file://{}", page.display()))
            .output()
            .expect("chromium (scripts/test.sh installs it)")
    };
    let dom = chromium(&["--dump-dom"]);
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(
        dom.contains("<svg") && dom.contains("device 0 dram"),
        "the chart in the loaded page"
    );
    assert!(dom.contains("Live at the dram peak"), "the tables");
    let shot = out.path().join("report.png");
    chromium(&[
        "--window-size=1000,800",
        &format!("--screenshot={}", shot.display()),
    ]);
    let png = std::fs::read(&shot).expect("a screenshot");
    assert_eq!(&png[1..4], b"PNG");
    // A blank page compresses to a few kilobytes; the chart and tables do not.
    assert!(png.len() > 20_000, "{} bytes", png.len());
}

/// `--private-to` (every process in the directory is the recorder's) only on a
/// directory nobody else can report in.
#[test]
fn an_aggregator_private_to_a_recorder_refuses_a_directory_others_can_reach() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("rec-private-mode");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_tt-aggregator"))
        .arg("--dir")
        .arg(dir.path())
        .args(["--private-to", "1", "--no-compat-socket"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("mode 0700") && err.contains("755"), "{err}");
    assert!(
        !dir.path().join("counters").exists(),
        "it must not have started"
    );
}

/// A recording another person made, written to be a bomb (hostile round two, attacks
/// 7 and 8): millions of identical events in a file of kilobytes, and escape codes in
/// its command and host. `report` and `diff` refuse it with a message (no abort, no
/// gigabytes); a recording with escape codes is shown with them replaced.
#[test]
fn recording_bombs_and_escape_codes_from_another_user() {
    use std::os::unix::fs::PermissionsExt;
    use tttrack::recording::Record;
    let out = out_dir("bomb");
    std::fs::set_permissions(out.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let mut w = hostile_writer();
    let ev = alloc_event(0, 4096, 0x1000);
    for _ in 0..1000 {
        w.add_record(&Record::Events {
            t_ms: 1,
            pid: 7,
            events: vec![ev; 4096],
        })
        .unwrap();
    }
    let bytes = w.into_inner().unwrap();
    eprintln!("bomb: {} bytes holding 4,096,000 events", bytes.len());
    let bomb = out.path().join("bomb.ttrec");
    // Written by uid 65534, as a recording someone shared would be.
    let staged = out.path().join("staged");
    std::fs::write(&staged, &bytes).unwrap();
    let status = Command::new("sh")
        .args(["-c", &format!("cp {} {}", staged.display(), bomb.display())])
        .uid(65534)
        .gid(65534)
        .status()
        .unwrap();
    assert!(status.success());
    for args in [
        vec!["report".to_string(), bomb.display().to_string()],
        vec![
            "diff".to_string(),
            bomb.display().to_string(),
            bomb.display().to_string(),
        ],
    ] {
        let t = std::time::Instant::now();
        let o = tt_track().args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        // The exit status of a file that is not a recording it reads (not an abort).
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("a recording bomb?"), "{err}");
        assert!(err.contains("TTTRACK_MAX_RECORDING_EVENTS"), "{err}");
        assert!(t.elapsed() < std::time::Duration::from_secs(10));
    }
    // A small recording with the same escape codes: read, shown without them.
    let mut w = hostile_writer();
    w.add_record(&Record::Events {
        t_ms: 1,
        pid: 7,
        events: vec![ev],
    })
    .unwrap();
    let small = out.path().join("small.ttrec");
    std::fs::write(&small, w.into_inner().unwrap()).unwrap();
    for args in [vec!["report"], vec!["report", "--json"]] {
        let o = tt_track().args(&args).arg(&small).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(
            !o.stdout.contains(&0x1b),
            "{}",
            String::from_utf8_lossy(&o.stdout)
        );
        assert!(!o.stdout.contains(&0x07));
        assert!(String::from_utf8_lossy(&o.stdout).contains("model"));
    }
}

/// A recording writer whose header and first process carry escape codes (as another
/// person's recording could).
fn hostile_writer() -> tttrack::recording::Writer<Vec<u8>> {
    use tttrack::recording::{Meta, Record, Writer};
    let mut w = Writer::new(
        Vec::new(),
        &Meta {
            command: vec!["\x1b]0;pwned\x07\x1b[2Jmodel".into()],
            host: "\x1b[31mhost".into(),
            ..Default::default()
        },
    )
    .unwrap();
    w.add_record(&Record::Process {
        t_ms: 0,
        pid: 7,
        start_time: 1,
        uid: 0,
        comm: "\x1b[5mx".into(),
    })
    .unwrap();
    w
}
