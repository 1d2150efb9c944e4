//! The Prometheus endpoint against a real Prometheus server (Debian's `prometheus`):
//! it scrapes the aggregator, its query API shows the known workload's figures, and a
//! process's series disappear after the process exits. Plus bad requests.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn endpoint_format_and_bad_requests() {
    let dir = TempDir::new("metrics-fmt");
    let agg = AggProc::start(dir.path(), &["--metrics-addr", "0"]);
    let addr = metrics_addr(&agg);
    assert!(
        addr.starts_with("127.0.0.1:"),
        "a bare port binds to loopback: {addr}"
    );
    let mut p = spawn_producer(dir.path(), &["hold", "30", "2"], 0);
    wait_line(&mut p, "ready");
    let pid = p.id();
    agg.wait_for(
        || {
            agg.snapshot()
                .is_some_and(|s| dev_fig(&s, 0, 0).used == 2 << 20)
        },
        "figures",
    );
    let mut s = TcpStream::connect(&addr).unwrap();
    write!(s, "GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    assert!(
        raw.contains("Content-Type: application/openmetrics-text; version=1.0.0; charset=utf-8"),
        "{raw}"
    );
    let body = raw.split_once("\r\n\r\n").unwrap().1;
    for want in [
        "tt_aggregator_up 1",
        "tt_device_memory_used_bytes{device=\"0\",type=\"dram\"} 2097152",
        "tt_device_buffers{device=\"0\",type=\"dram\"} 2",
        "tt_events_applied_total 2",
        "tt_events_lost_total 0",
        "# EOF",
    ] {
        assert!(
            body.lines().any(|l| l == want),
            "{want} missing in:\n{body}"
        );
    }
    assert!(body.contains("tt_build_info{version="), "{body}");
    assert!(
        body.contains(&format!(
            "tt_process_memory_used_bytes{{pid=\"{pid}\",comm=\"producer"
        )),
        "{body}"
    );
    assert_eq!(http_get(&addr, "/other").0, 404);
    assert_eq!(http(&addr, "POST", "/metrics").0, 405);
    // Clients that connect and say nothing do not delay others, and get 408 after 2 s.
    let mut slow: Vec<TcpStream> = (0..8).map(|_| TcpStream::connect(&addr).unwrap()).collect();
    let t = Instant::now();
    assert_eq!(http_get(&addr, "/metrics").0, 200);
    // Serving one connection at a time would take at least 16 s here (8 idle clients
    // x 2 s timeout); the bound leaves room for a loaded machine.
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    let mut answer = String::new();
    slow[0]
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = slow[0].read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let (code, _) = {
        let mut s = TcpStream::connect(&addr).unwrap();
        s.write_all(b"NOT HTTP AT ALL\r\n\r\n").unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        (
            out.split_whitespace()
                .nth(1)
                .and_then(|c| c.parse::<u16>().ok())
                .unwrap_or(0),
            out,
        )
    };
    assert_eq!(code, 400);
    let _ = p.kill();
    let _ = p.wait();
}

#[test]
fn a_real_prometheus_scrapes_the_figures_and_drops_ended_processes() {
    let prom = ["/usr/bin/prometheus", "/usr/local/bin/prometheus"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("the prometheus server is required for this test (apt-get install prometheus)");
    let dir = TempDir::new("metrics-prom");
    let agg = AggProc::start(dir.path(), &["--metrics-addr", "127.0.0.1:0"]);
    let target = metrics_addr(&agg);
    let mut p = spawn_producer(dir.path(), &["hold", "120", "3"], 0);
    wait_line(&mut p, "ready");
    let pid = p.id();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let prom_addr = format!("127.0.0.1:{port}");
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: tttrack\n    static_configs:\n      - targets: ['{target}']\n"),
    )
    .unwrap();
    let mut server = Command::new(prom)
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address={prom_addr}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
        .spawn()
        .expect("start prometheus");
    let prom_log = dir.path().join("prometheus.log");
    let query = |q: &str| -> serde_json::Value {
        let (code, body) = http_get(&prom_addr, &format!("/api/v1/query?query={}", urlencode(q)));
        if code != 200 {
            return serde_json::Value::Null;
        }
        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null)
    };
    let value = |v: &serde_json::Value| -> Option<String> {
        v["data"]["result"][0]["value"][1]
            .as_str()
            .map(String::from)
    };
    let t = Instant::now();
    loop {
        let v = query("tt_device_memory_used_bytes{device=\"0\",type=\"dram\"}");
        if value(&v).as_deref() == Some("3145728") {
            break;
        }
        if let Some(st) = server.try_wait().unwrap() {
            panic!(
                "prometheus exited ({st}):\n{}",
                std::fs::read_to_string(&prom_log).unwrap_or_default()
            );
        }
        assert!(
            t.elapsed() < Duration::from_secs(90),
            "prometheus never showed 3 MiB: {v}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let pq = format!("tt_process_memory_used_bytes{{pid=\"{pid}\",type=\"dram\"}}");
    assert_eq!(value(&query(&pq)).as_deref(), Some("3145728"));
    assert_eq!(value(&query("tt_aggregator_up")).as_deref(), Some("1"));
    let _ = p.kill();
    let _ = p.wait();
    let t = Instant::now();
    loop {
        let v = query(&pq);
        if v["status"] == "success" && v["data"]["result"].as_array().is_some_and(|a| a.is_empty())
        {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the ended process's series stayed: {v}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(
        value(&query(
            "tt_device_memory_used_bytes{device=\"0\",type=\"dram\"}"
        ))
        .as_deref(),
        Some("0")
    );
    let _ = server.kill();
    let _ = server.wait();
}

/// Every `tt_*` name the contrib rules and dashboard use is one the endpoint exports,
/// and promtool accepts the configuration and the rules.
#[test]
fn contrib_rules_and_dashboard_match_the_exported_names() {
    let contrib = repo_dir().join("contrib");
    let promtool = ["/usr/bin/promtool", "/usr/local/bin/promtool"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("promtool is required for this test (apt-get install prometheus)");
    let out = Command::new(promtool)
        .args(["check", "config", "prometheus.yml"])
        .current_dir(contrib.join("prometheus"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // A snapshot with every kind of series present.
    let mut d = tttrack::counters_page::DeviceRecord {
        id: 0,
        dram_total: 1,
        l1_total: 1,
        ..Default::default()
    };
    d.telemetry.valid = u64::MAX;
    let mut p = tttrack::counters_page::ProcessRecord {
        pid: 1,
        num_devices: 1,
        ..Default::default()
    };
    p.devices[0].device = 0;
    // A process names itself: quotes and backslashes are escaped, not passed through.
    p.comm = tttrack::counters_page::put_str("a\"b\\c");
    let snap = tttrack::counters_page::Snapshot {
        status: Default::default(),
        devices: vec![d],
        processes: vec![p],
    };
    let exported = tttrack::aggregator::metrics::render(Some(std::sync::Arc::new(snap)), true);
    assert!(
        exported.contains(r#"comm="a\"b\\c""#),
        "label values escaped:\n{exported}"
    );
    let dash = std::fs::read_to_string(contrib.join("grafana/tttrack-dashboard.json")).unwrap();
    let _: serde_json::Value = serde_json::from_str(&dash).expect("the dashboard is valid JSON");
    let rules = std::fs::read_to_string(contrib.join("prometheus/alerts.yml")).unwrap();
    for text in [&dash, &rules] {
        let mut rest = text.as_str();
        while let Some(i) = rest.find("tt_") {
            let name: String = rest[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            assert!(
                exported
                    .lines()
                    .any(|l| l.starts_with(&format!("{name}{{"))
                        || l.starts_with(&format!("{name} "))),
                "{name} is used in contrib/ but not exported"
            );
            rest = &rest[i + name.len()..];
        }
    }
}
