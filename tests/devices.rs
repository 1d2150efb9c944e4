//! Devices and telemetry from sysfs fixture trees laid out as tt-kmd does: discovery,
//! exact unit conversions, missing and malformed files, remote chips, cards that
//! vanish, stalled heartbeats, processes holding a device, through the real binaries.

mod common;
use common::*;
use std::process::Command;
use tttrack::counters_page::*;
use tttrack::devices;

#[test]
fn n150_telemetry_converted_exactly_without_an_aggregator() {
    let root = TempDir::new("sysfs-n150");
    SimCard::wormhole(0, "0000:01:00.0", "n150")
        .install(root.path())
        .unwrap();
    let found = devices::discover(root.path());
    assert_eq!(found.len(), 1);
    let d = &found[0];
    assert_eq!(
        (d.id, d.arch.as_str(), d.board.as_str()),
        (0, "wormhole_b0", "n150")
    );
    assert_eq!(d.pci_bdf, "0000:01:00.0");
    let t = devices::read_telemetry(d, None, 0);
    assert_eq!(t.asic_temp_mc, 45_250);
    assert_eq!(t.power_uw, 25_000_000);
    assert_eq!(t.current_ma, 21_000);
    assert_eq!(t.valid & TEL_FAN, 0, "no fan file on Wormhole");
    let empty = TempDir::new("smi-empty");
    let v = smi_json(&[
        "--dir",
        empty.path().to_str().unwrap(),
        "--sysfs-root",
        root.path().to_str().unwrap(),
    ]);
    assert_eq!(v["aggregator"]["running"], false);
    let d0 = &v["devices"][0];
    assert_eq!(d0["arch"], "wormhole_b0");
    assert_eq!(d0["board"], "n150");
    assert_eq!(d0["serial"], "0000012300000456");
    assert_eq!(d0["pci_address"], "0000:01:00.0");
    assert_eq!(d0["asic_id"], "00000ABC00000DEF");
    assert_eq!(d0["firmware_bundle"], "18.2.0.0");
    let t = &d0["telemetry"];
    assert_eq!(
        t["firmware"],
        serde_json::json!({"arc": "2.30.0.0", "eth": "6.14.0", "m3bl": "5.11.0.0",
                           "m3app": "5.11.1.0", "ttflash": "3.0.0.0"})
    );
    assert_eq!(t["asic_temp_c"], 45.25);
    assert_eq!(t["asic_temp_max_c"], 75.0);
    assert_eq!(t["power_w"], 25.0);
    assert_eq!(t["power_max_w"], 150.0);
    assert_eq!(t["vcore_mv"], 850);
    assert_eq!(t["current_a"], 21.0);
    assert_eq!(t["aiclk_mhz"], 1000);
    assert_eq!(t["axiclk_mhz"], 900);
    assert_eq!(t["arcclk_mhz"], 540);
    assert_eq!(t["pcie_link_speed_gts"], 16.0);
    assert_eq!(t["pcie_link_width"], 16);
    assert!(t["fan_rpm"].is_null());
    // Built-in totals until a process reports exact ones; memory itself unknown.
    assert_eq!(d0["memory"]["dram"]["total_bytes"], 12u64 << 30);
    assert_eq!(d0["memory"]["l1"]["total_bytes"], 72 * 1_499_136u64);
    assert!(d0["memory"]["dram"]["used_bytes"].is_null());
    // The plain snapshot lists the device and its telemetry with no aggregator.
    let out = Command::new(env!("CARGO_BIN_EXE_tt-smi"))
        .args([
            "--dir",
            empty.path().to_str().unwrap(),
            "--sysfs-root",
            root.path().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Wormhole n150")
            && text.contains("45°C")
            && text.contains("25 W")
            && text.contains("1000 MHz"),
        "{text}"
    );
    assert!(
        text.contains("memory: N/A, tt-aggregator is not running"),
        "{text}"
    );
}

/// A host as the kernel lays it out: class devices, PCI functions and hwmon reached
/// only through symlinks into `sys/devices/`, relative `device` links, a root-port
/// level, two cards of different architectures whose hwmon numbers run the other way
/// round from their indices, each with its own readings.
#[test]
fn a_real_hosts_layout_gives_each_card_its_own_identity_totals_and_telemetry() {
    let root = TempDir::new("sysfs-real");
    let mut wh = SimCard::wormhole(0, "0000:01:00.0", "n300")
        .hwmon("temp1_input", "48125\n")
        .hwmon("power1_input", "31000000\n");
    wh.hwmon_index = 7;
    wh.install(root.path()).unwrap();
    let mut bh = SimCard::blackhole(1, "0000:41:00.0", "p150a");
    bh.hwmon_index = 2;
    bh.install(root.path()).unwrap();
    // The class entries are links, and their `device` links are relative: resolved
    // against the path they were reached by, they would name sys/0000:01:00.0.
    let class0 = root.path().join("sys/class/tenstorrent/tenstorrent!0");
    assert!(std::fs::symlink_metadata(&class0)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(
        std::fs::read_link(wh.class_dir(root.path()).join("device")).unwrap(),
        std::path::Path::new("../../../0000:01:00.0")
    );
    assert!(!root.path().join("sys/0000:01:00.0").exists());

    let found = devices::discover(root.path());
    assert_eq!(found.len(), 2);
    assert_eq!(
        (found[0].arch.as_str(), found[0].pci_bdf.as_str()),
        ("wormhole_b0", "0000:01:00.0")
    );
    assert_eq!(
        (found[1].arch.as_str(), found[1].pci_bdf.as_str()),
        ("blackhole", "0000:41:00.0")
    );
    assert_eq!(found[0].hwmon_dir, Some(wh.hwmon_dir(root.path())));
    assert_eq!(found[1].hwmon_dir, Some(bh.hwmon_dir(root.path())));

    let empty = TempDir::new("smi-real");
    let v = smi_json(&[
        "--dir",
        empty.path().to_str().unwrap(),
        "--sysfs-root",
        root.path().to_str().unwrap(),
    ]);
    let devs = v["devices"].as_array().unwrap();
    assert_eq!(devs.len(), 2, "{v}");
    let (d0, d1) = (&devs[0], &devs[1]);
    use serde_json::json;
    expect(
        d0,
        &[
            ("id", json!(0)),
            ("arch", json!("wormhole_b0")),
            ("pci_address", json!("0000:01:00.0")),
        ],
    );
    expect(
        &d0["memory"],
        &[
            ("dram", json!(12u64 << 30)),
            ("l1", json!(64 * 1_499_136u64)),
        ]
        .map(|(k, v)| (k, json!({ "total_bytes": v }))),
    );
    expect(
        &d0["telemetry"],
        &[
            ("asic_temp_c", json!(48.125)),
            ("asic_temp_max_c", json!(75.0)),
            ("power_w", json!(31.0)),
            ("power_max_w", json!(150.0)),
            ("vcore_mv", json!(850)),
            ("vcore_max_mv", json!(950)),
            ("current_a", json!(21.0)),
            ("current_max_a", json!(170.0)),
            ("fan_rpm", json!(null)),
            ("pcie_link_speed_gts", json!(16.0)),
            ("pcie_link_width", json!(16)),
            ("pcie_max_link_speed_gts", json!(16.0)),
        ],
    );
    expect(
        d1,
        &[
            ("id", json!(1)),
            ("arch", json!("blackhole")),
            ("board", json!("p150a")),
            ("pci_address", json!("0000:41:00.0")),
        ],
    );
    expect(
        &d1["memory"],
        &[
            ("dram", json!(32u64 << 30)),
            ("l1", json!(120 * 1_572_864u64)),
        ]
        .map(|(k, v)| (k, json!({ "total_bytes": v }))),
    );
    expect(
        &d1["telemetry"],
        &[
            ("asic_temp_c", json!(61.0)),
            ("asic_temp_max_c", json!(90.0)),
            ("power_w", json!(120.0)),
            ("power_max_w", json!(300.0)),
            ("vcore_mv", json!(780)),
            ("current_a", json!(60.0)),
            ("fan_rpm", json!(2400)),
            ("thermal_trip_count", json!(2)),
            ("pcie_link_speed_gts", json!(32.0)),
        ],
    );
    assert_eq!(d1["serial"], "100001BC00000777");
    assert_eq!(d1["asic_id"], "0000077700000888");
}

/// Hostile or broken trees: a class link that climbs out of the root, an absolute
/// `device` link, a link loop, a `device` link to something that is not a PCI
/// function, an hwmon of another driver beside the card's own, non-canonical names.
#[test]
fn links_that_leave_the_root_or_loop_lead_nowhere() {
    let root = TempDir::new("sysfs-hostile");
    let mut wh = SimCard::wormhole(0, "0000:01:00.0", "n150");
    wh.hwmon_index = 4;
    wh.install(root.path()).unwrap();
    // Another driver's hwmon on the same PCI function, numbered first.
    let other = root.path().join(wh.pci_path()).join("hwmon/hwmon1");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("name"), "nvme\n").unwrap();
    std::fs::write(other.join("temp1_input"), "99000\n").unwrap();
    let class = root.path().join("sys/class/tenstorrent");
    let up = "../".repeat(40) + "etc";
    std::os::unix::fs::symlink(&up, class.join("tenstorrent!1")).unwrap();
    std::os::unix::fs::symlink("/etc", class.join("tenstorrent!2")).unwrap();
    std::os::unix::fs::symlink("tenstorrent!3", class.join("tenstorrent!3")).unwrap();
    // A class device whose `device` link points at the root port, not a function.
    let odd = root
        .path()
        .join("sys/devices/virtual/tenstorrent/tenstorrent!4");
    std::fs::create_dir_all(&odd).unwrap();
    std::fs::write(odd.join("tt_card_type"), "n150\n").unwrap();
    std::os::unix::fs::symlink("../../../pci0000:00/0000:00:01.1", odd.join("device")).unwrap();
    std::os::unix::fs::symlink(
        "../../devices/virtual/tenstorrent/tenstorrent!4",
        class.join("tenstorrent!4"),
    )
    .unwrap();
    std::os::unix::fs::symlink(
        "../../devices/virtual/tenstorrent/tenstorrent!4",
        class.join("tenstorrent!04"),
    )
    .unwrap();
    let found = devices::discover(root.path());
    let ids: Vec<u32> = found.iter().map(|d| d.id).collect();
    // 1 and 2 resolve inside the root (to its own etc, which does not exist here).
    assert_eq!(ids, vec![0, 4], "{found:?}");
    assert_eq!(found[0].hwmon_dir, Some(wh.hwmon_dir(root.path())));
    let t = devices::read_telemetry(&found[0], None, 0);
    assert_eq!(t.asic_temp_mc, 45_250, "the card's own hwmon, not nvme's");
    assert_eq!(
        found[1].pci_bdf, "",
        "a root port is not the card's PCI function"
    );
    assert_eq!(found[1].arch, "");
    assert!(found.iter().all(|d| d.class_dir.starts_with(root.path())));
}

/// The driver lists a pid once per open file descriptor: a process with three open
/// descriptors is one holder.
#[test]
fn a_pid_listed_once_per_open_file_is_one_holder() {
    let root = TempDir::new("sysfs-pids");
    SimCard::wormhole(0, "0000:01:00.0", "n150")
        .install(root.path())
        .unwrap();
    set_holders(root.path(), 0, &[4242, 4242, 17, 4242]);
    assert_eq!(devices::holders(root.path(), 0), vec![17, 4242]);
}

/// The PCIe performance counters (32-byte flits, 32-bit, wrapping) become bytes each
/// way and a rate.
#[test]
fn pcie_counters_become_bytes_each_way_across_a_wrap() {
    let root = TempDir::new("sysfs-pcie");
    let card = SimCard::wormhole(0, "0000:01:00.0", "n150");
    card.install(root.path()).unwrap();
    let perf = card.class_dir(root.path()).join("pcie_perf_counters");
    std::fs::write(perf.join("mst_posted_wr_data_word_sent0"), "4294967290\n").unwrap();
    std::fs::write(perf.join("slv_posted_wr_data_word_received1"), "100\n").unwrap();
    let first = devices::sample(root.path(), &Default::default(), 1_000_000_000);
    assert_eq!(
        first.devices[0].1.valid & TEL_PCIE_TRAFFIC,
        TEL_PCIE_TRAFFIC
    );
    // Host wrote 10 flits (the counter wrapped), the device wrote 50 into host memory.
    std::fs::write(perf.join("mst_posted_wr_data_word_sent0"), "4\n").unwrap();
    std::fs::write(perf.join("slv_posted_wr_data_word_received1"), "150\n").unwrap();
    let second = devices::sample(root.path(), &first, 3_000_000_000);
    let t = &second.devices[0].1;
    assert_eq!(t.pcie_h2d_bytes, 10 * 32);
    assert_eq!(t.pcie_d2h_bytes, 50 * 32);
    assert_eq!(t.pcie_h2d_bytes_per_s, 10 * 32 / 2);
    assert_eq!(t.pcie_d2h_bytes_per_s, 50 * 32 / 2);
}

#[test]
fn no_devices_is_one_clear_line() {
    let root = TempDir::new("sysfs-none");
    let empty = TempDir::new("smi-none2");
    let out = Command::new(env!("CARGO_BIN_EXE_tt-smi"))
        .args([
            "--dir",
            empty.path().to_str().unwrap(),
            "--sysfs-root",
            root.path().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("No Tenstorrent devices found"), "{text}");
}

#[test]
fn n300_local_chip_with_remote_chip_seen_only_through_a_process() {
    let root = TempDir::new("sysfs-n300");
    SimCard::wormhole(0, "0000:02:00.0", "n300")
        .install(root.path())
        .unwrap();
    let dir = TempDir::new("n300");
    let agg = start_sampling(&dir, &root);
    let mut p = spawn_producer(dir.path(), &["devinfo"], 30_000);
    wait_line(&mut p, "dropped");
    agg.wait_for(
        || {
            agg.snapshot().is_some_and(|s| {
                s.devices.len() == 2
                    && dev_fig(&s, 0, CAT_DRAM).used == 111
                    && dev_fig(&s, 1, CAT_DRAM).used == 222
            })
        },
        "two devices and their allocations",
    );
    let v = smi_json(&["--dir", dir.path().to_str().unwrap()]);
    let (d0, d1) = (&v["devices"][0], &v["devices"][1]);
    assert_eq!(d0["remote"], false);
    assert_eq!(d0["board"], "n300");
    assert_eq!(
        d0["telemetry"]["asic_temp_c"], 45.25,
        "local chip: telemetry from the aggregator's samples"
    );
    assert_eq!(d1["remote"], true);
    assert!(
        d1["telemetry"]["asic_temp_c"].is_null(),
        "remote chip: telemetry N/A by design"
    );
    assert_eq!(
        d1["memory"]["dram"]["used_bytes"], 222,
        "remote chip memory tracked"
    );
    // The process's exact figures win over the built-in table.
    assert_eq!(d0["memory"]["l1"]["total_bytes"], 64 * 1_499_136u64);
    assert!(
        agg.output().contains("Device 0: wormhole_b0 n300"),
        "{}",
        agg.output()
    );
    let _ = p.kill();
    let _ = p.wait();
}

#[test]
fn p150a_and_two_cards_at_once() {
    let root = TempDir::new("sysfs-two");
    SimCard::blackhole(0, "0000:03:00.0", "p150a")
        .install(root.path())
        .unwrap();
    SimCard::wormhole(1, "0000:04:00.0", "n150")
        .install(root.path())
        .unwrap();
    let empty = TempDir::new("smi-two");
    let v = smi_json(&[
        "--dir",
        empty.path().to_str().unwrap(),
        "--sysfs-root",
        root.path().to_str().unwrap(),
    ]);
    let devs = v["devices"].as_array().unwrap();
    assert_eq!(devs.len(), 2);
    assert_eq!(devs[0]["arch"], "blackhole");
    assert_eq!(devs[0]["board"], "p150a");
    assert_eq!(devs[0]["memory"]["dram"]["total_bytes"], 32u64 << 30);
    assert_eq!(devs[0]["memory"]["l1"]["total_bytes"], 120 * 1_572_864u64);
    assert_eq!(devs[0]["telemetry"]["fan_rpm"], 2400);
    assert_eq!(devs[0]["telemetry"]["thermal_trip_count"], 2);
    assert_eq!(devs[0]["telemetry"]["power_w"], 120.0);
    assert_eq!(devs[1]["arch"], "wormhole_b0");
    assert_ne!(devs[0]["serial"], devs[1]["serial"]);
}

#[test]
fn missing_and_malformed_files_make_only_their_field_unknown() {
    let root = TempDir::new("sysfs-bad");
    let mut c = SimCard::wormhole(0, "0000:05:00.0", "n150");
    c.hwmon_files = vec![
        ("temp1_input".into(), "garbage\n".into()),
        ("in0_input".into(), "".into()),
        ("curr1_input".into(), "12000\n".into()),
    ];
    c = c
        .class("tt_aiclk", "\n")
        .class("tt_axiclk", "-5\n")
        .class("tt_arcclk", "540\n");
    c.install(root.path()).unwrap();
    // A class directory whose device link is absolute (must not escape the root), and
    // a directory that is not a device at all.
    let odd = root.path().join("sys/class/tenstorrent/tenstorrent!7");
    std::fs::create_dir_all(&odd).unwrap();
    std::os::unix::fs::symlink("/sys/bus/pci/devices/0000:00:00.0", odd.join("device")).unwrap();
    std::fs::create_dir_all(root.path().join("sys/class/tenstorrent/not-a-device")).unwrap();
    let empty = TempDir::new("smi-bad");
    let v = smi_json(&[
        "--dir",
        empty.path().to_str().unwrap(),
        "--sysfs-root",
        root.path().to_str().unwrap(),
    ]);
    let t = &v["devices"][0]["telemetry"];
    assert!(t["asic_temp_c"].is_null());
    assert!(t["vcore_mv"].is_null());
    assert!(t["aiclk_mhz"].is_null());
    assert!(t["axiclk_mhz"].is_null(), "a negative clock is malformed");
    assert!(t["power_w"].is_null(), "missing file");
    assert_eq!(t["current_a"], 12.0);
    assert_eq!(t["arcclk_mhz"], 540);
    let d7 = v["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == 7)
        .unwrap();
    assert!(d7["arch"].is_null() && d7["pci_address"].is_null(), "{d7}");
}

#[test]
fn a_card_that_vanishes_and_returns_mid_run() {
    let root = TempDir::new("sysfs-vanish");
    SimCard::wormhole(0, "0000:06:00.0", "n150")
        .install(root.path())
        .unwrap();
    SimCard::wormhole(1, "0000:07:00.0", "n150")
        .install(root.path())
        .unwrap();
    let dir = TempDir::new("vanish");
    let agg = start_sampling(&dir, &root);
    agg.wait_for(
        || agg.snapshot().is_some_and(|s| s.devices.len() == 2),
        "two devices",
    );
    let card1 = SimCard::wormhole(1, "0000:07:00.0", "n150");
    card1.remove(root.path()).unwrap();
    agg.wait_for(
        || {
            agg.snapshot().is_some_and(|s| {
                s.devices
                    .iter()
                    .any(|d| d.id == 1 && d.flags & DEV_GONE != 0)
            })
        },
        "device 1 marked gone",
    );
    assert!(
        agg.output()
            .contains("device 1 (0000:07:00.0) has vanished"),
        "{}",
        agg.output()
    );
    let v = smi_json(&["--dir", dir.path().to_str().unwrap()]);
    assert_eq!(v["devices"][1]["gone"], true);
    SimCard::wormhole(1, "0000:07:00.0", "n150")
        .install(root.path())
        .unwrap();
    agg.wait_for(
        || {
            agg.snapshot().is_some_and(|s| {
                s.devices
                    .iter()
                    .any(|d| d.id == 1 && d.flags & DEV_GONE == 0 && d.flags & DEV_LOCAL != 0)
            })
        },
        "device 1 back",
    );
    assert!(
        agg.output().contains("device 1 appeared"),
        "{}",
        agg.output()
    );
}

#[test]
fn a_stalled_heartbeat_is_flagged_and_clears_when_it_moves() {
    let root = TempDir::new("sysfs-hb");
    SimCard::wormhole(0, "0000:08:00.0", "n150")
        .install(root.path())
        .unwrap();
    let dir = TempDir::new("hb");
    let agg = start_sampling(&dir, &root);
    agg.wait_for(
        || {
            agg.snapshot().is_some_and(|s| {
                s.devices.first().is_some_and(|d| {
                    d.telemetry.heartbeat_stalled_samples >= HEARTBEAT_STALL_SAMPLES
                })
            })
        },
        "stalled heartbeat",
    );
    let v = smi_json(&["--dir", dir.path().to_str().unwrap()]);
    assert_eq!(v["devices"][0]["telemetry"]["heartbeat_stalled"], true);
    // The firmware comes back: its heartbeat advances (at every poll here, so that a
    // slow test thread cannot miss the short window between two samples).
    let hb = SimCard::wormhole(0, "0000:08:00.0", "n150")
        .class_dir(root.path())
        .join("tt_heartbeat");
    let mut beat = 1000u64;
    agg.wait_for(
        || {
            beat += 1;
            std::fs::write(&hb, format!("{beat}\n")).unwrap();
            agg.snapshot().is_some_and(|s| {
                s.devices.first().is_some_and(|d| {
                    d.telemetry.heartbeat > 1000 && d.telemetry.heartbeat_stalled_samples == 0
                })
            })
        },
        "heartbeat moving again",
    );
}

#[test]
fn processes_holding_a_device_without_reporting_are_listed_untracked() {
    let root = TempDir::new("sysfs-holders");
    SimCard::wormhole(0, "0000:09:00.0", "n150")
        .install(root.path())
        .unwrap();
    // A real process, listed by the "driver" as holding device 0, that reports nothing;
    // and tt-smi's own pid, which must never be listed.
    let mut holder = Command::new("sleep").arg("30").spawn().unwrap();
    let hp = holder.id();
    std::fs::create_dir_all(root.path().join("proc")).unwrap();
    std::os::unix::fs::symlink(
        format!("/proc/{hp}"),
        root.path().join(format!("proc/{hp}")),
    )
    .unwrap();
    set_holders(root.path(), 0, &[hp]);
    let dir = TempDir::new("holders");
    let agg = start_sampling(&dir, &root);
    agg.wait_for(
        || {
            agg.snapshot().is_some_and(|s| {
                s.processes
                    .iter()
                    .any(|p| p.pid == hp && p.flags & PROC_UNTRACKED != 0)
            })
        },
        "the untracked holder",
    );
    let v = smi_json(&["--dir", dir.path().to_str().unwrap()]);
    let p = v["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pid"] == hp)
        .unwrap();
    assert_eq!(p["untracked"], true);
    // In the live view it is marked `?` and not drawn in the inexact colour (yellow):
    // it has no figures at all, rather than inexact ones.
    let model =
        tttrack::smi::model::Model::load(dir.path(), 0, std::path::Path::new("/nonexistent"))
            .unwrap();
    let app = tttrack::smi::tui::App::new(model, true);
    let mut t = ratatui::Terminal::new(ratatui::backend::TestBackend::new(130, 40)).unwrap();
    t.draw(|f| app.draw(f)).unwrap();
    let buf = t.backend().buffer().clone();
    let row = (0..40u16)
        .find(|&y| {
            let line: String = (0..130u16)
                .map(|x| buf[(x, y)].symbol().to_string())
                .collect();
            line.contains(&format!("{hp} ?"))
        })
        .expect("the untracked row in the live view");
    assert_ne!(buf[(1, row)].fg, ratatui::style::Color::Yellow);
    assert_eq!(p["name"], "sleep");
    assert_eq!(p["devices"][0]["id"], 0);
    let out = Command::new(env!("CARGO_BIN_EXE_tt-smi"))
        .args(["--dir", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("{hp} (untracked)")), "{text}");
    // Without an aggregator the plain snapshot still says who holds the card.
    let empty = TempDir::new("holders-noagg");
    let out = Command::new(env!("CARGO_BIN_EXE_tt-smi"))
        .args(["--dir", empty.path().to_str().unwrap()])
        .args(["--sysfs-root", root.path().to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains(&hp.to_string()))
        .unwrap_or_else(|| panic!("holder not listed:\n{text}"));
    assert!(
        text.contains("Processes holding a device (memory N/A)")
            && line.contains("sleep")
            && line.ends_with("device 0"),
        "{text}"
    );
    let _ = holder.kill();
    let _ = holder.wait();
}

#[test]
fn watch_view_shows_telemetry_in_a_real_terminal() {
    let root = TempDir::new("sysfs-tmux");
    SimCard::blackhole(0, "0000:0a:00.0", "p150a")
        .install(root.path())
        .unwrap();
    // A second card of the other architecture, hwmon numbered before the first's.
    let mut wh = SimCard::wormhole(1, "0000:0b:00.0", "n150").hwmon("temp1_input", "48125\n");
    wh.hwmon_index = 0;
    wh.install(root.path()).unwrap();
    let dir = TempDir::new("tel-tmux");
    let _agg = start_sampling(&dir, &root);
    let session = format!("tel{}", std::process::id());
    let cmd = format!(
        "{} -w -r 200 --dir {}",
        env!("CARGO_BIN_EXE_tt-smi"),
        dir.path().display()
    );
    Command::new("tmux")
        .args([
            "new-session",
            "-d",
            "-s",
            &session,
            "-x",
            "120",
            "-y",
            "40",
            &cmd,
        ])
        .status()
        .unwrap();
    let screen = || {
        String::from_utf8_lossy(
            &Command::new("tmux")
                .args(["capture-pane", "-p", "-t", &session])
                .output()
                .unwrap()
                .stdout,
        )
        .into_owned()
    };
    let t = std::time::Instant::now();
    while !screen().contains("Blackhole p150a") {
        assert!(t.elapsed().as_secs() < 20, "{}", screen());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(screen().contains("61°C"), "{}", screen());
    Command::new("tmux")
        .args(["send-keys", "-t", &session, "3"])
        .status()
        .unwrap();
    let t = std::time::Instant::now();
    while !screen().contains("2400 RPM") {
        assert!(t.elapsed().as_secs() < 20, "{}", screen());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let s = screen();
    assert!(
        s.contains("61.0 °C")
            && s.contains("120.0 W")
            && s.contains("32.0 GT/s x16")
            && s.contains("max 32.0 GT/s x16")
            && s.contains("to device 0 B/s, to host 0 B/s"),
        "{s}"
    );
    assert!(
        s.contains("bundle 80.15.0.0 · m3app 5.9.0.0"),
        "firmware versions in the telemetry view:\n{s}"
    );
    // Each card's own readings: card 1 (Wormhole) below card 0 in the same view.
    let t = std::time::Instant::now();
    while !screen().contains("48.1 °C") {
        assert!(
            t.elapsed().as_secs() < 20,
            "card 1's temperature:\n{}",
            screen()
        );
        Command::new("tmux")
            .args(["send-keys", "-t", &session, "Down"])
            .status()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let s = screen();
    assert!(s.contains("25.0 W") && s.contains("16.0 GT/s x16"), "{s}");
    Command::new("tmux")
        .args(["kill-session", "-t", &session])
        .status()
        .unwrap();
}

/// Checks that `v` has each (field, value); an object value is checked field by field
/// in turn (so `{"total_bytes": N}` checks only that field).
fn expect(v: &serde_json::Value, fields: &[(&str, serde_json::Value)]) {
    for (k, want) in fields {
        match want {
            serde_json::Value::Object(m) => {
                let sub: Vec<(&str, serde_json::Value)> =
                    m.iter().map(|(a, b)| (a.as_str(), b.clone())).collect();
                expect(&v[*k], &sub);
            }
            _ => assert_eq!(&v[*k], want, "{k} in {v}"),
        }
    }
}

/// An aggregator over `dir` reading the fixture tree `root`, sampling every 100 ms.
fn start_sampling(dir: &TempDir, root: &TempDir) -> AggProc {
    AggProc::start(
        dir.path(),
        &[
            "--sysfs-root",
            root.path().to_str().unwrap(),
            "--telemetry-interval",
            "0.1",
        ],
    )
}

/// `tt-smi --query-device` / `--query-process` with `--format=csv`, as nvidia-smi
/// users script it, parsed by Python's csv module; `-lms` repeats.
#[test]
fn queries_give_csv_that_python_parses() {
    let root = TempDir::new("sysfs-query");
    SimCard::wormhole(0, "0000:01:00.0", "n150")
        .install(root.path())
        .unwrap();
    SimCard::blackhole(1, "0000:41:00.0", "p150a")
        .install(root.path())
        .unwrap();
    let dir = TempDir::new("query");
    let agg = start_sampling(&dir, &root);
    let mut p = spawn_producer(dir.path(), &["hold", "60", "5"], 0);
    wait_line(&mut p, "ready");
    let pid = p.id();
    // The figures, and both cards described and sampled (the telemetry thread publishes
    // on its own schedule: device 1 may come a sample after device 0's figures).
    agg.wait_for(
        || {
            agg.snapshot().is_some_and(|s| {
                dev_fig(&s, 0, CAT_DRAM).used == 5 << 20
                    && s.devices.len() == 2
                    && s.devices
                        .iter()
                        .all(|d| d.board[0] != 0 && d.telemetry.valid != 0)
            })
        },
        "5 MiB on device 0, both cards described and sampled",
    );
    let smi = |args: &[&str]| {
        let mut all = vec!["--dir", dir.path().to_str().unwrap()];
        all.extend_from_slice(args);
        smi(&all)
    };
    let parse = |csv: &str| -> serde_json::Value {
        let mut py = Command::new("python3")
            .args([
                "-c",
                "import csv, json, sys; print(json.dumps(list(csv.reader(sys.stdin, skipinitialspace=True))))",
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        py.stdin.take().unwrap().write_all(csv.as_bytes()).unwrap();
        let out = py.wait_with_output().unwrap();
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let v = parse(&smi(&[
        "--query-device=index,name,pci.bus_id,memory.used,memory.total,temperature.gpu,power.draw,fan.rpm",
        "--format=csv",
    ]));
    assert_eq!(
        v[0],
        serde_json::json!([
            "index",
            "name",
            "pci.bus_id",
            "memory.used [MiB]",
            "memory.total [MiB]",
            "temperature.gpu [C]",
            "power.draw [W]",
            "fan.rpm [RPM]"
        ])
    );
    assert_eq!(
        v[1],
        serde_json::json!([
            "0",
            "Wormhole n150",
            "0000:01:00.0",
            "5 MiB",
            "12288 MiB",
            "45.2 C",
            "25.0 W",
            "N/A"
        ])
    );
    assert_eq!(v[2][1], "Blackhole p150a");
    assert_eq!(v[2][7], "2400 RPM");
    let v = parse(&smi(&[
        "--query-device=index,memory.used,temperature.gpu",
        "--format=csv,noheader,nounits",
    ]));
    assert_eq!(
        v,
        serde_json::json!([["0", "5", "45.2"], ["1", "0", "61.0"]])
    );
    let v = parse(&smi(&[
        "--query-process=pid,process_name,device,used_memory",
        "--format=csv,noheader",
    ]));
    let mine: Vec<&serde_json::Value> = v
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r[0] == *pid.to_string())
        .collect();
    assert_eq!(mine.len(), 1, "{v}");
    assert_eq!(mine[0][2], "0");
    assert_eq!(mine[0][3], "5 MiB");
    // -lms 100: repeats, the header once.
    let mut l = Command::new(env!("CARGO_BIN_EXE_tt-smi"))
        .args(["--dir", dir.path().to_str().unwrap()])
        .args(["--query-device=index", "--format=csv", "-lms", "100"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    let _ = l.kill();
    let out = l.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.matches("index").count(), 1, "{text}");
    assert!(text.matches("\n0\n").count() >= 3, "{text}");
    // Unknown fields and formats say what is wrong.
    let bad = Command::new(env!("CARGO_BIN_EXE_tt-smi"))
        .args([
            "--dir",
            dir.path().to_str().unwrap(),
            "--query-device=index,speed",
        ])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown device field \"speed\""));
    let _ = p.kill();
    let _ = p.wait();
}
