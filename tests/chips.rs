//! Figures per physical chip on a host with two cards laid out as the kernel lays them
//! out: processes run with different `TT_VISIBLE_DEVICES`, each on its "device 0"; a
//! process with no variable; one that reports its chips (a local and a remote one); a
//! late report that moves figures, across an aggregator restart; a client of the
//! compatibility socket. Each card's totals are the sum of its own processes' buffers.

mod common;
use common::*;
use serde_json::Value;
use std::io::Write;
use std::process::{Child, Command, Stdio};

const MIB: u64 = 1 << 20;

/// Two n150 cards, `/dev/tenstorrent/0` and `/1`, with distinct chip ids.
fn two_cards() -> TempDir {
    let root = TempDir::new("chips-sysfs");
    for (i, bdf) in [(0u32, "0000:01:00.0"), (1, "0000:02:00.0")] {
        SimCard::wormhole(i, bdf, "n150")
            .class("tt_asic_id", &format!("00000ABC0000000{i}\n"))
            .class("tt_serial", &format!("000001230000000{i}\n"))
            .install(root.path())
            .unwrap();
    }
    root
}

fn start(dir: &TempDir, root: &TempDir, extra: &[&str]) -> AggProc {
    let mut args = vec![
        "--sysfs-root",
        root.path().to_str().unwrap(),
        "--telemetry-interval",
        "0.1",
    ];
    args.extend_from_slice(extra);
    AggProc::start(dir.path(), &args)
}

/// A producer driven line by line (`producer script`), with `TT_VISIBLE_DEVICES` as
/// given (`None`: not set).
struct Scripted(Child);

impl Scripted {
    fn spawn(dir: &TempDir, visible: Option<&str>) -> Self {
        let mut cmd = Command::new(c_program("producer"));
        cmd.arg("script")
            .env("TT_ALLOC_TRACKING_ENABLED", "1")
            .env("TTTRACK_DIR", dir.path())
            .env_remove("TT_VISIBLE_DEVICES")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        if let Some(v) = visible {
            cmd.env("TT_VISIBLE_DEVICES", v);
        }
        Scripted(cmd.spawn().expect("producer script"))
    }
    fn say(&mut self, line: &str) {
        let stdin = self.0.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
        wait_line(&mut self.0, "ok");
    }
    fn pid(&self) -> u32 {
        self.0.id()
    }
    /// Its name as the kernel has it (the test program's file name, cut at 15 bytes).
    fn comm(&self) -> String {
        std::fs::read_to_string(format!("/proc/{}/comm", self.pid()))
            .unwrap()
            .trim_end()
            .to_string()
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn json(dir: &TempDir, root: &TempDir) -> Value {
    smi_json(&[
        "--dir",
        dir.path().to_str().unwrap(),
        "--sysfs-root",
        root.path().to_str().unwrap(),
    ])
}

fn device(v: &Value, id: u64) -> &Value {
    v["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == id)
        .unwrap_or_else(|| panic!("no device {id} in {v}"))
}

/// Device `id`'s DRAM in use; `u64::MAX` (equal to no figure a test waits for) while
/// the page has no such row: a restarted aggregator publishes its page before the
/// journal is replayed into it, so a snapshot may come before the rows.
fn dram_used(v: &Value, id: u64) -> u64 {
    let Some(d) = v["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == id)
    else {
        return u64::MAX;
    };
    d["memory"]["dram"]["used_bytes"]
        .as_u64()
        .unwrap_or_else(|| panic!("device {id}: {d}"))
}

fn process(v: &Value, pid: u32) -> &Value {
    v["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pid"] == pid)
        .unwrap_or_else(|| panic!("no process {pid} in {v}"))
}

/// Every device's DRAM figure is the sum of what the processes placed on it hold.
fn assert_cards_sum_their_processes(v: &Value) {
    for d in v["devices"].as_array().unwrap() {
        let id = d["id"].as_u64().unwrap();
        let sum: u64 = v["processes"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|p| p["devices"].as_array().unwrap().iter())
            .filter(|pd| pd["id"] == id)
            .map(|pd| pd["dram_bytes"].as_u64().unwrap())
            .sum();
        assert_eq!(d["memory"]["dram"]["used_bytes"], sum, "device {id} in {v}");
    }
}

fn wait_json(
    agg: &AggProc,
    dir: &TempDir,
    root: &TempDir,
    what: &str,
    f: impl Fn(&Value) -> bool,
) -> Value {
    agg.wait_for(|| f(&json(dir, root)), what);
    json(dir, root)
}

#[test]
fn processes_on_device_zero_of_different_cards_are_on_their_own_cards() {
    let (dir, root) = (TempDir::new("chips-visible"), two_cards());
    let agg = start(&dir, &root, &[]);
    // What the issue describes: train on card 1, eval on card 2 (here 1 and 0), each
    // calling it "device 0"; and one process that sees both cards.
    let mut train = Scripted::spawn(&dir, Some("1"));
    let mut eval = Scripted::spawn(&dir, Some("0"));
    let mut both = Scripted::spawn(&dir, None);
    train.say(&format!("alloc 0 {} 1", 3 * MIB));
    eval.say(&format!("alloc 0 {} 1", 5 * MIB));
    both.say(&format!("alloc 0 {} 1", 7 * MIB));
    both.say(&format!("alloc 1 {} 2", 11 * MIB));
    let v = wait_json(&agg, &dir, &root, "four buffers", |v| {
        v["processes"].as_array().is_some_and(|p| p.len() == 3)
            && dram_used(v, 0) == 12 * MIB
            && dram_used(v, 1) == 14 * MIB
    });
    assert_cards_sum_their_processes(&v);
    // Each process's own name for the chip is beside the chip's row.
    let t = &process(&v, train.pid())["devices"][0];
    assert_eq!(
        (&t["id"], &t["logical_id"], &t["placement"]),
        (&1.into(), &0.into(), &"inferred".into())
    );
    assert_eq!(process(&v, train.pid())["device_mapping"], "inferred");
    let e = &process(&v, eval.pid())["devices"][0];
    assert_eq!((&e["id"], &e["logical_id"]), (&0.into(), &0.into()));
    // Card 1's row has card 1's identity beside card 1's processes' figures.
    assert_eq!(device(&v, 1)["pci_address"], "0000:02:00.0");
    assert_eq!(device(&v, 1)["asic_id"], "00000ABC00000001");
    // The text views say the same: row 1 is the train process's device 0.
    let text = smi(&[
        "--dir",
        dir.path().to_str().unwrap(),
        "--sysfs-root",
        root.path().to_str().unwrap(),
    ]);
    let row = text
        .lines()
        .find(|l| l.trim_start().starts_with(&train.pid().to_string()))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(row.contains(" 1 (0) "), "{row}\n{text}");
    // So do the queries scripts use.
    let csv = smi(&[
        "--dir",
        dir.path().to_str().unwrap(),
        "--sysfs-root",
        root.path().to_str().unwrap(),
        "--query-process=pid,device,logical_device,placement",
        "--format=csv,noheader",
    ]);
    let want = format!("{}, 1, 0, inferred", train.pid());
    assert!(csv.lines().any(|l| l == want), "{want}\n{csv}");
    // The log names the placement and how it was made.
    agg.wait_for(
        || {
            agg.output().contains(&format!(
                "pid {} ({}): its device 0 is device 1 (TT_VISIBLE_DEVICES=1)",
                train.pid(),
                train.comm()
            ))
        },
        "the placement logged",
    );
    // Prometheus: the process's figure under the chip's row, its own id beside.
    let snap = std::sync::Arc::new(agg.snapshot().unwrap());
    let metrics = tttrack::aggregator::metrics::render(Some(snap), true);
    let want = format!(
        "tt_process_memory_used_bytes{{pid=\"{}\",comm=\"{}\",device=\"1\",logical_device=\"0\",type=\"dram\",source=\"lanes\"}} {}",
        train.pid(),
        train.comm(),
        3 * MIB
    );
    assert!(metrics.contains(&want), "{want}\n{metrics}");
    // tt-smi --buffers filters by the chip's row and shows both ids.
    let bufs = smi(&[
        "--dir",
        dir.path().to_str().unwrap(),
        "--buffers",
        "--device",
        "1",
    ]);
    let lines: Vec<&str> = bufs.lines().filter(|l| l.contains("DRAM")).collect();
    assert_eq!(lines.len(), 2, "{bufs}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&train.pid().to_string()) && l.contains(" 1  (0) ")),
        "{bufs}"
    );
}

#[test]
fn the_driver_pid_lists_cross_check_an_inferred_placement() {
    let (dir, root) = (TempDir::new("chips-pids"), two_cards());
    let agg = start(&dir, &root, &[]);
    let mut p = Scripted::spawn(&dir, Some("1"));
    p.say("alloc 0 4096 1");
    // The driver says the process holds card 0, not card 1: the log says so.
    set_holders(root.path(), 0, &[p.pid()]);
    agg.wait_for(
        || {
            agg.output().contains(&format!(
                "pid {} ({}): its device 0 is placed on device 1, but the driver lists it as holding device 0 only",
                p.pid(),
                p.comm()
            ))
        },
        "the disagreement logged",
    );
}

#[test]
fn reported_chips_local_and_remote_are_placed_as_reported() {
    let (dir, root) = (TempDir::new("chips-reported"), two_cards());
    let agg = start(&dir, &root, &[]);
    // An n300-like process: its device 0 is card 1's chip (by index), its device 1 a
    // chip reached through card 1, known by its chip id.
    let mut p = Scripted::spawn(&dir, None);
    p.say("ident 0 0 1 -1 0");
    p.say("ident 1 1 -1 1 BEEF");
    p.say(&format!("alloc 0 {} 1", 2 * MIB));
    p.say(&format!("alloc 1 {} 2", 3 * MIB));
    // Another process naming the same remote chip by its id: one row for both.
    let mut q = Scripted::spawn(&dir, None);
    q.say("ident 4 1 -1 1 beef");
    q.say(&format!("alloc 4 {} 1", 5 * MIB));
    let v = wait_json(&agg, &dir, &root, "the reported chips", |v| {
        v["devices"].as_array().is_some_and(|d| d.len() == 3) && dram_used(v, 2) == 8 * MIB
    });
    assert_eq!(dram_used(&v, 1), 2 * MIB);
    assert_eq!(dram_used(&v, 0), 0);
    let r = device(&v, 2);
    assert_eq!(r["remote"], true, "{r}");
    assert_eq!(r["asic_id"], "000000000000BEEF");
    assert_eq!(r["via_device"], 1);
    assert_eq!(
        r["owner_pid"],
        Value::Null,
        "a chip known by its id is no one's alone"
    );
    assert_eq!(process(&v, p.pid())["device_mapping"], "reported");
    let pd = &process(&v, p.pid())["devices"];
    assert_eq!((&pd[1]["id"], &pd[1]["logical_id"]), (&2.into(), &1.into()));
    assert_cards_sum_their_processes(&v);
    // A remote chip nobody names: a row of that process alone, never merged.
    let mut r1 = Scripted::spawn(&dir, Some("0"));
    let mut r2 = Scripted::spawn(&dir, Some("0"));
    r1.say("alloc 1 100 1");
    r2.say("alloc 1 200 1");
    let v = wait_json(&agg, &dir, &root, "two unplaced chips", |v| {
        v["devices"].as_array().is_some_and(|d| d.len() == 5)
    });
    for (who, bytes) in [(&r1, 100), (&r2, 200)] {
        let row = process(&v, who.pid())["devices"][0]["id"].as_u64().unwrap();
        let d = device(&v, row);
        assert_eq!(
            (d["owner_pid"].as_u64(), d["via_device"].as_u64()),
            (Some(who.pid() as u64), Some(0)),
            "{d}"
        );
        assert_eq!(dram_used(&v, row), bytes);
        assert_eq!(
            process(&v, who.pid())["devices"][0]["placement"],
            "unplaced"
        );
    }
    assert_cards_sum_their_processes(&v);
    // A bad identity is refused, counted, and said why; nothing moves.
    let mut bad = Scripted::spawn(&dir, Some("0"));
    bad.say("alloc 0 64 1");
    bad.say("ident 0 0 1 -1 0 not-an-address");
    agg.wait_for(
        || agg.output().contains("pci_address is not DDDD:BB:DD.F"),
        "the refusal",
    );
    let v = json(&dir, &root);
    assert_eq!(process(&v, bad.pid())["devices"][0]["id"], 0);
}

#[test]
fn a_late_report_moves_figures_exactly_across_restarts() {
    let (dir, root) = (TempDir::new("chips-late"), two_cards());
    let mut agg = start(&dir, &root, &[]);
    let mut p = Scripted::spawn(&dir, None);
    let mut other = Scripted::spawn(&dir, Some("1"));
    for k in 0..50 {
        p.say(&format!("alloc 0 {} {k}", MIB + k));
    }
    other.say(&format!("alloc 0 {} 1", 9 * MIB));
    let held: u64 = (0..50).map(|k| MIB + k).sum();
    wait_json(&agg, &dir, &root, "card 0 has p's buffers", |v| {
        dram_used(v, 0) == held && dram_used(v, 1) == 9 * MIB
    });
    // The aggregator dies without a word; a new one recovers p on card 0.
    agg.kill9();
    let mut agg = start(&dir, &root, &[]);
    wait_json(&agg, &dir, &root, "recovered", |v| dram_used(v, 0) == held);
    // p says (late) that its device 0 is card 1 (by PCI address): every byte moves.
    p.say("ident 0 0 -1 -1 0 0000:02:00.0");
    p.say("free 0 0");
    let v = wait_json(&agg, &dir, &root, "the move", |v| {
        dram_used(v, 1) == 9 * MIB + held - MIB && dram_used(v, 0) == 0
    });
    assert_cards_sum_their_processes(&v);
    assert_eq!(process(&v, p.pid())["devices"][0]["placement"], "reported");
    agg.wait_for(
        || agg.output().contains("its figures moved from device 0"),
        "the move logged",
    );
    // Stopped cleanly and started again: the same figures, nothing counted twice.
    agg.stop();
    let agg = start(&dir, &root, &[]);
    let v = wait_json(&agg, &dir, &root, "restarted", |v| {
        dram_used(v, 1) == 9 * MIB + held - MIB
    });
    assert_eq!(dram_used(&v, 0), 0);
    assert_eq!(v["aggregator"]["events_lost"], 0);
    p.say("free 0 1");
    wait_json(
        &agg,
        &dir,
        &root,
        "later frees find the moved buffers",
        |v| dram_used(v, 1) == 9 * MIB + held - 2 * MIB - 1,
    );
}

#[test]
fn a_python_socket_client_is_placed_by_its_environment() {
    let (dir, root) = (TempDir::new("chips-compat"), two_cards());
    let sock = dir.path().join("compat.sock");
    let agg = start(&dir, &root, &["--compat-socket", sock.to_str().unwrap()]);
    agg.wait_for(
        || std::os::unix::net::UnixStream::connect(&sock).is_ok(),
        "the compatibility socket",
    );
    let script = format!(
        r#"
import socket, struct, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect({path:?})
fmt = '<BxxxiQBxxxiQQ' + 'Q'*6 + 'Q'*2 + 'I'*6 + 'I'*4
s.sendall(struct.pack(fmt, 1, 0, 1 << 20, 0, 0, 0xbeef000, 0, *([0]*6), 0, 0, *([0]*6), *([0]*4)))
# The original query of "device 1": the physical card 1's figures.
s.sendall(struct.pack(fmt, 3, 1, 0, 0, 0, 0, 0, *([0]*6), 0, 0, *([0]*6), *([0]*4)))
r = s.recv(struct.calcsize(fmt), socket.MSG_WAITALL)
print("device1_dram", struct.unpack(fmt, r)[7], flush=True)
sys.stdin.readline()
"#,
        path = sock.to_str().unwrap()
    );
    let mut py = Command::new("python3")
        .arg("-c")
        .arg(&script)
        .env("TT_VISIBLE_DEVICES", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let line = wait_line(&mut py, "device1_dram");
    assert_eq!(
        line.trim(),
        format!("device1_dram {MIB}"),
        "the answer for card 1"
    );
    let v = json(&dir, &root);
    assert_eq!(dram_used(&v, 1), MIB);
    assert_eq!(dram_used(&v, 0), 0);
    let d = &process(&v, py.id())["devices"][0];
    assert_eq!(
        (&d["id"], &d["logical_id"], &d["placement"]),
        (&1.into(), &0.into(), &"inferred".into())
    );
    let _ = py.kill();
    let _ = py.wait();
    drop(agg);
}

/// Rows converge to one per physical chip whatever the order in which the aggregator
/// learns of cards and events: events applied before the sysfs tree has its cards
/// (ids as reported, then moved to the cards when they appear), and an aggregator
/// started last, over a journal of events from a host that had no cards yet. No row
/// that holds nothing and names no card stays; a peak belongs to the chip it happened
/// on.
#[test]
fn rows_converge_whatever_the_order_cards_and_events_arrive() {
    let dir = TempDir::new("chips-order");
    let root = TempDir::new("chips-order-sysfs");
    let agg = start(&dir, &root, &[]);
    // Events first, on a host whose cards are not there yet.
    let mut train = Scripted::spawn(&dir, Some("1"));
    let mut eval = Scripted::spawn(&dir, Some("0"));
    train.say(&format!("alloc 0 {} 1", 3 * MIB));
    eval.say(&format!("alloc 0 {} 1", 5 * MIB));
    wait_json(&agg, &dir, &root, "figures as reported", |v| {
        dram_used(v, 0) == 8 * MIB
    });
    // The cards appear: the train process's device 0 is card 1.
    for (i, bdf) in [(0u32, "0000:01:00.0"), (1, "0000:02:00.0")] {
        SimCard::wormhole(i, bdf, "n150")
            .class("tt_asic_id", &format!("00000ABC0000000{i}\n"))
            .install(root.path())
            .unwrap();
    }
    let rows_are = |v: &Value, want: &[(u64, u64)]| {
        let got: Vec<(u64, u64)> = v["devices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                (
                    d["id"].as_u64().unwrap(),
                    d["memory"]["dram"]["used_bytes"].as_u64().unwrap(),
                )
            })
            .collect();
        got == want
    };
    let v = wait_json(&agg, &dir, &root, "one row per card", |v| {
        rows_are(v, &[(0, 5 * MIB), (1, 3 * MIB)])
    });
    assert_cards_sum_their_processes(&v);
    assert_eq!(device(&v, 1)["memory"]["dram"]["peak_bytes"], 3 * MIB);
    assert_eq!(
        device(&v, 0)["memory"]["dram"]["peak_bytes"],
        5 * MIB,
        "{v}"
    );
    // Started last: over the journal of a run on a host that had no cards, then cards.
    drop(agg);
    let dir2 = TempDir::new("chips-order-late");
    let bare = TempDir::new("chips-order-bare");
    let first = start(&dir2, &bare, &[]);
    let mut late = Scripted::spawn(&dir2, Some("1"));
    late.say(&format!("alloc 0 {} 1", 2 * MIB));
    wait_json(&first, &dir2, &bare, "as reported", |v| {
        dram_used(v, 0) == 2 * MIB
    });
    drop(first);
    let again = start(&dir2, &root, &[]);
    let v = wait_json(
        &again,
        &dir2,
        &root,
        "the journal's figures on card 1",
        |v| rows_are(v, &[(0, 0), (1, 2 * MIB)]),
    );
    assert_eq!(device(&v, 0)["memory"]["dram"]["peak_bytes"], 0, "{v}");
    drop(late);
}
