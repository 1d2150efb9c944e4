//! Prometheus endpoint: `tt-aggregator --metrics-addr ADDR:PORT` serves `/metrics`.
//!
//! It reads the same state readers see, the counters page, on its own thread, so a
//! scrape never delays draining. Metrics are built with the official
//! `prometheus-client` crate (OpenMetrics text); requests are parsed by `httparse`. Each scrape
//! builds a fresh registry from one consistent snapshot: a process's series disappear
//! with the process.

use crate::counters_page::*;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};
use std::path::{Path, PathBuf};

pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

fn gi(v: u64) -> i64 {
    v.min(i64::MAX as u64) as i64
}

/// Encodes one snapshot straight into the registry's output: the crate's collector
/// interface, without per-series maps, so a scrape of 64 devices and 1000 processes
/// stays cheap.
#[derive(Debug)]
struct SnapshotCollector {
    /// Shared, not copied: a snapshot of 1000 processes is megabytes.
    snap: std::sync::Arc<Snapshot>,
    /// The address maps (the aggregator's `map` answer), one per chip and type.
    maps: Vec<MapFigures>,
}

/// What a scrape shows of one address map.
#[derive(Debug, Clone, PartialEq)]
pub struct MapFigures {
    pub device: String,
    pub btype: String,
    pub free_per_bank: u64,
    pub largest_free_block: u64,
    pub fragmentation: f64,
}

impl MapFigures {
    /// The figures of each map in a `map` answer (`crate::accounting::maps`).
    pub fn from_answer(text: &str) -> Vec<MapFigures> {
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|m| {
                Some(MapFigures {
                    device: m["device"].as_i64()?.to_string(),
                    btype: m["type"].as_str()?.to_ascii_lowercase(),
                    free_per_bank: m["free_bytes_per_bank"].as_u64()?,
                    largest_free_block: m["largest_free_block_bytes"].as_u64()?,
                    fragmentation: m["fragmentation"].as_f64()?,
                })
            })
            .collect()
    }
}

/// Free space of each chip's banks by type, as TT-Metal's out-of-memory message
/// gives it (per bank), from the address maps.
fn address_maps(enc: &mut Enc, maps: &[MapFigures]) -> std::fmt::Result {
    let labels = |m: &MapFigures| [("device", m.device.clone()), ("type", m.btype.clone())];
    family(
        enc,
        "device_memory_free_per_bank",
        "Free bytes of each bank (banks move in lockstep), by type, from the address map",
        Some(&Unit::Bytes),
        maps.iter().map(|m| (labels(m), gi(m.free_per_bank))),
    )?;
    family(
        enc,
        "device_memory_largest_free_block",
        "The largest free block of a bank, by type: the largest buffer footprint per bank that fits now",
        Some(&Unit::Bytes),
        maps.iter().map(|m| (labels(m), gi(m.largest_free_block))),
    )?;
    family(
        enc,
        "device_memory_fragmentation",
        "1 - largest free block / free bytes, per bank, by type",
        Some(&Unit::Ratios),
        maps.iter().map(|m| (labels(m), m.fragmentation)),
    )
}

type Enc<'a> = prometheus_client::encoding::DescriptorEncoder<'a>;

fn family<
    L: prometheus_client::encoding::EncodeLabelSet,
    V: prometheus_client::encoding::EncodeGaugeValue + std::fmt::Debug,
>(
    enc: &mut Enc,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    items: impl Iterator<Item = (L, V)>,
) -> Result<(), std::fmt::Error> {
    use prometheus_client::encoding::EncodeMetric;
    use prometheus_client::metrics::gauge::ConstGauge;
    let mut m = enc.encode_descriptor(
        name,
        help,
        unit,
        prometheus_client::metrics::MetricType::Gauge,
    )?;
    for (labels, v) in items {
        let f = m.encode_family(&labels)?;
        ConstGauge::new(v).encode(f)?;
    }
    Ok(())
}

impl prometheus_client::collector::Collector for SnapshotCollector {
    fn encode(&self, mut enc: Enc) -> Result<(), std::fmt::Error> {
        let s = &self.snap;
        let devs: Vec<(String, &DeviceRecord)> =
            s.devices.iter().map(|d| (d.id.to_string(), d)).collect();
        device_memory(&mut enc, &devs)?;
        device_telemetry(&mut enc, &devs)?;
        device_identity(&mut enc, &devs)?;
        address_maps(&mut enc, &self.maps)?;
        process_memory(&mut enc, &s.processes)
    }
}

/// Each device's memory by type: used, peak, live buffers, totals.
fn device_memory(enc: &mut Enc, devs: &[(String, &DeviceRecord)]) -> std::fmt::Result {
    let per_type =
        |enc: &mut Enc, name: &str, help: &str, unit: Option<&Unit>, f: &dyn Fn(&Figure) -> u64| {
            family(
                enc,
                name,
                help,
                unit,
                devs.iter().flat_map(|(id, d)| {
                    categories().map(move |(cat, t)| {
                        (
                            [("device", id.as_str()), ("type", t)],
                            gi(f(&d.figures[cat])),
                        )
                    })
                }),
            )
        };
    per_type(
        enc,
        "device_memory_used",
        "Device memory in use, by type",
        Some(&Unit::Bytes),
        &|f| f.used,
    )?;
    per_type(
        enc,
        "device_memory_peak",
        "High-water mark of device memory in use, by type",
        Some(&Unit::Bytes),
        &|f| f.peak,
    )?;
    per_type(
        enc,
        "device_buffers",
        "Live buffers (CBs, kernels) by type",
        None,
        &|f| f.count,
    )?;
    family(
        enc,
        "device_memory_total",
        "Device memory size (dram, l1)",
        Some(&Unit::Bytes),
        devs.iter().flat_map(|(id, d)| {
            [("dram", d.dram_total), ("l1", d.l1_total)]
                .into_iter()
                .filter(|(_, v)| *v > 0)
                .map(move |(t, v)| ([("device", id.as_str()), ("type", t)], gi(v)))
        }),
    )?;
    Ok(())
}

/// Each device's telemetry, in base units.
fn device_telemetry(enc: &mut Enc, devs: &[(String, &DeviceRecord)]) -> std::fmt::Result {
    let tel = |f: fn(&Telemetry) -> Option<f64>| {
        devs.iter()
            .filter_map(move |(id, d)| Some(([("device", id.as_str())], f(&d.telemetry)?)))
    };
    family(
        enc,
        "device_temperature",
        "ASIC temperature",
        Some(&Unit::Celsius),
        tel(Telemetry::temp_c),
    )?;
    family(
        enc,
        "device_temperature_max",
        "ASIC temperature limit",
        Some(&Unit::Celsius),
        tel(Telemetry::temp_max_c),
    )?;
    let watts = Unit::Other("watts".into());
    family(
        enc,
        "device_power",
        "Chip (TDP) power",
        Some(&watts),
        tel(Telemetry::power_w),
    )?;
    family(
        enc,
        "device_power_max",
        "Chip power limit",
        Some(&watts),
        tel(Telemetry::power_max_w),
    )?;
    family(
        enc,
        "device_aiclk",
        "AI clock",
        Some(&Unit::Other("hertz".into())),
        tel(Telemetry::aiclk_hz),
    )?;
    let rate = Unit::Other("bytes_per_second".into());
    family(
        enc,
        "device_pcie_host_to_device",
        "PCIe traffic from the host to the device over the last sampling interval",
        Some(&rate),
        tel(|t| {
            t.has(TEL_PCIE_TRAFFIC)
                .then_some(t.pcie_h2d_bytes_per_s as f64)
        }),
    )?;
    family(
        enc,
        "device_pcie_device_to_host",
        "PCIe traffic from the device to the host over the last sampling interval",
        Some(&rate),
        tel(|t| {
            t.has(TEL_PCIE_TRAFFIC)
                .then_some(t.pcie_d2h_bytes_per_s as f64)
        }),
    )?;
    family(
        enc,
        "device_heartbeat_stalled",
        "1 when the firmware heartbeat stopped advancing",
        None,
        tel(|t| {
            let stalled = t.heartbeat_stalled_samples >= HEARTBEAT_STALL_SAMPLES;
            t.has(TEL_HEARTBEAT).then_some(stalled as u8 as f64)
        }),
    )?;
    Ok(())
}

/// Each device's identity, as labels of a series of value 1.
fn device_identity(enc: &mut Enc, devs: &[(String, &DeviceRecord)]) -> std::fmt::Result {
    let infos: Vec<[String; 4]> = devs
        .iter()
        .map(|(_, d)| {
            [
                label(&get_str(&d.arch)),
                label(&get_str(&d.board)),
                (d.flags & DEV_REMOTE != 0).to_string(),
                label(&get_str(&d.serial)),
            ]
        })
        .collect();
    family(
        enc,
        "device_info",
        "Device identity (value 1)",
        None,
        devs.iter().zip(&infos).map(|((id, _), i)| {
            (
                [
                    ("device", id.as_str()),
                    ("arch", i[0].as_str()),
                    ("board", i[1].as_str()),
                    ("remote", i[2].as_str()),
                    ("serial", i[3].as_str()),
                ],
                1i64,
            )
        }),
    )?;
    Ok(())
}

/// Each process's memory by device and type, its peaks and lost events.
fn process_memory(enc: &mut Enc, processes: &[ProcessRecord]) -> std::fmt::Result {
    let procs: Vec<(String, String, &ProcessRecord)> = processes
        .iter()
        .filter(|p| p.flags & PROC_LEFT_BEHIND == 0)
        .map(|p| (p.pid.to_string(), label(&get_str(&p.comm)), p))
        .collect();
    // Each device by its chip's row (as the device metrics are), with the process's
    // own id of it beside.
    let pdevs: Vec<(usize, String, String, &ProcessDevice)> = procs
        .iter()
        .enumerate()
        .flat_map(|(i, (_, _, p))| {
            p.devices[..(p.num_devices as usize).min(MAX_PROCESS_DEVICES)]
                .iter()
                .map(move |d| (i, d.chip.to_string(), d.device.to_string(), d))
        })
        .collect();
    family(
        enc,
        "process_memory_used",
        "Device memory a process holds, by device and type",
        Some(&Unit::Bytes),
        pdevs.iter().flat_map(|(i, dev, logical, d)| {
            let (pid, comm, p) = &procs[*i];
            let source = source_name(p.flags);
            categories().map(move |(cat, t)| {
                (
                    [
                        ("pid", pid.as_str()),
                        ("comm", comm.as_str()),
                        ("device", dev.as_str()),
                        ("logical_device", logical.as_str()),
                        ("type", t),
                        ("source", source),
                    ],
                    gi(d.used[cat]),
                )
            })
        }),
    )?;
    family(
        enc,
        "process_memory_peak",
        "High-water mark of a process's DRAM and L1",
        Some(&Unit::Bytes),
        pdevs.iter().flat_map(|(i, dev, logical, d)| {
            let (pid, comm, p) = &procs[*i];
            let source = source_name(p.flags);
            [(CAT_DRAM, "dram"), (CAT_L1, "l1")]
                .into_iter()
                .map(move |(cat, t)| {
                    (
                        [
                            ("pid", pid.as_str()),
                            ("comm", comm.as_str()),
                            ("device", dev.as_str()),
                            ("logical_device", logical.as_str()),
                            ("type", t),
                            ("source", source),
                        ],
                        gi(d.peak[cat]),
                    )
                })
        }),
    )?;
    family(
        enc,
        "process_events_lost",
        "Events of this process that were lost (its figures are inexact when > 0)",
        None,
        procs.iter().map(|(pid, comm, p)| {
            (
                [("pid", pid.as_str()), ("comm", comm.as_str())],
                gi(p.events_lost),
            )
        }),
    )?;
    // Slots of TT-Metal's regions whose process is gone: in no live figure above.
    let left: Vec<(String, String, String, &ProcessRecord)> = processes
        .iter()
        .filter(|p| p.flags & PROC_LEFT_BEHIND != 0)
        .map(|p| {
            (
                crate::metal_shm::name_of_chip(p.region_chip),
                p.pid.to_string(),
                label(&get_str(&p.comm)),
                p,
            )
        })
        .collect();
    family(
        enc,
        "tt_metal_region_left_behind",
        "Bytes TT-Metal's own region still counts for a process that is gone (not in any live figure)",
        Some(&Unit::Bytes),
        left.iter().flat_map(|(file, pid, comm, p)| {
            DEVICE_CATS.iter().enumerate().map(move |(i, &c)| {
                (
                    [
                        ("file", file.as_str()),
                        ("pid", pid.as_str()),
                        ("comm", comm.as_str()),
                        ("type", CAT_NAMES[c]),
                    ],
                    gi(p.region_used[i]),
                )
            })
        }),
    )?;
    Ok(())
}

/// A label value escaped as the exposition format requires (`\\`, `\"`, `\n`): the
/// encoder writes values as given, and a process chooses its own name, so an unescaped
/// quote would break every series of the scrape.
fn label(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => o.push_str("\\\\"),
            '"' => o.push_str("\\\""),
            '\n' => o.push_str("\\n"),
            c => o.push(c),
        }
    }
    o
}

/// Renders one snapshot (`None`: no aggregator page) as OpenMetrics text.
pub fn render(snap: Option<std::sync::Arc<Snapshot>>, alive: bool) -> String {
    render_with_maps(snap, alive, Vec::new())
}

/// [`render`] with the address maps' figures.
pub fn render_with_maps(
    snap: Option<std::sync::Arc<Snapshot>>,
    alive: bool,
    maps: Vec<MapFigures>,
) -> String {
    let mut reg = Registry::with_prefix("tt");
    let up = Gauge::<i64, std::sync::atomic::AtomicI64>::default();
    reg.register(
        "aggregator_up",
        "1 when tt-aggregator is running and its counters page is fresh",
        up.clone(),
    );
    let build = Info::new(vec![("version", env!("CARGO_PKG_VERSION").to_string())]);
    reg.register("build", "tttrack build information", build);
    let Some(s) = snap else {
        up.set(0);
        return encode(&reg);
    };
    up.set(alive as i64);
    let applied = Counter::<u64>::default();
    let lost = Counter::<u64>::default();
    let unknown = Counter::<u64>::default();
    applied.inc_by(s.status.events_applied);
    lost.inc_by(s.status.events_lost);
    unknown.inc_by(s.status.unknown_frees);
    reg.register(
        "events_applied",
        "Events applied to the accounting",
        applied,
    );
    reg.register(
        "events_lost",
        "Events that never reached the accounting (dropped or skipped)",
        lost,
    );
    reg.register(
        "unknown_frees",
        "Frees of buffers, CBs or kernels never seen allocated",
        unknown,
    );
    let leaks = Counter::<u64>::default();
    leaks.inc_by(s.status.exits_holding_memory);
    reg.register(
        "processes_exited_holding_memory",
        "Processes that ended while holding device memory (leak suspected)",
        leaks,
    );
    let leaked = Counter::<u64>::default();
    leaked.inc_by(s.status.leaked_bytes);
    reg.register_with_unit(
        "leaked",
        "Device memory held by processes when they ended",
        Unit::Bytes,
        leaked,
    );
    let procs = Gauge::<i64, std::sync::atomic::AtomicI64>::default();
    procs.set(s.status.processes_tracked as i64);
    reg.register(
        "processes_tracked",
        "Processes the aggregator tracks",
        procs,
    );
    reg.register_collector(Box::new(SnapshotCollector { snap: s, maps }));
    encode(&reg)
}

fn encode(reg: &Registry) -> String {
    let mut out = String::with_capacity(256 * 1024);
    let _ = prometheus_client::encoding::text::encode(&mut out, reg);
    out
}

/// `ADDR:PORT`, or a bare port (bound on loopback).
pub fn parse_addr(s: &str) -> Result<std::net::SocketAddr, String> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    }
    s.parse().map_err(|_| {
        format!("--metrics-addr {s:?} is neither ADDR:PORT (e.g. 0.0.0.0:9464) nor a port number")
    })
}

/// Connections served at once; more get 503 at once.
const MAX_CONNECTIONS: usize = 64;

/// Serves `/metrics`; returns the address actually bound. Requests are parsed with
/// `httparse`; each connection has its own thread with a 2 s read timeout (a client
/// that stalls gets 408 and is dropped) and at most 64 are served at once (503 past
/// that), so slow or many clients cannot hold the endpoint, let alone the aggregator.
pub fn serve(addr: std::net::SocketAddr, dir: &Path) -> Result<std::net::SocketAddr, String> {
    let listener =
        std::net::TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    let dir: PathBuf = dir.to_path_buf();
    let active = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                if active.load(std::sync::atomic::Ordering::Acquire) >= MAX_CONNECTIONS {
                    let _ = conn.set_write_timeout(Some(std::time::Duration::from_secs(1)));
                    let _ = reply(
                        &mut conn,
                        503,
                        "text/plain; charset=utf-8",
                        b"too many connections\n",
                        false,
                    );
                    continue;
                }
                active.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                let (dir, mine) = (dir.clone(), active.clone());
                let spawned = std::thread::Builder::new()
                    .name("metrics-conn".into())
                    .spawn(move || {
                        handle(conn, &dir);
                        mine.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
                    });
                if spawned.is_err() {
                    // The closure (and its decrement) never ran.
                    active.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
                }
            }
        })
        .map_err(|e| e.to_string())?;
    Ok(bound)
}

fn reply(
    conn: &mut std::net::TcpStream,
    code: u16,
    ctype: &str,
    body: &[u8],
    head: bool,
) -> std::io::Result<()> {
    use std::io::Write;
    let reason = match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let allow = if code == 405 {
        "Allow: GET, HEAD\r\n"
    } else {
        ""
    };
    let header = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(header.as_bytes())?;
    if !head {
        conn.write_all(body)?;
    }
    conn.flush()
}

fn handle(mut conn: std::net::TcpStream, dir: &Path) {
    use std::io::Read;
    let _ = conn.set_read_timeout(Some(std::time::Duration::from_secs(2)));
    let _ = conn.set_write_timeout(Some(std::time::Duration::from_secs(5)));
    let text = "text/plain; charset=utf-8";
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let (method, path) = loop {
        match conn.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => {
                let _ = reply(
                    &mut conn,
                    408,
                    text,
                    b"request not received in time\n",
                    false,
                );
                return;
            }
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(_)) => {
                break (
                    req.method.unwrap_or("").to_string(),
                    req.path.unwrap_or("").to_string(),
                );
            }
            Ok(httparse::Status::Partial) if buf.len() < 8192 => continue,
            Ok(httparse::Status::Partial) => {
                let _ = reply(&mut conn, 431, text, b"request headers too large\n", false);
                return;
            }
            Err(_) => {
                let _ = reply(&mut conn, 400, text, b"malformed HTTP request\n", false);
                return;
            }
        }
    };
    let path = path.split('?').next().unwrap_or("").to_string();
    let head = method == "HEAD";
    let _ = match (method.as_str(), path.as_str()) {
        ("GET" | "HEAD", "/metrics") => {
            let page = CountersReader::open(dir).ok();
            let snap = page.as_ref().and_then(|p| p.view().snapshot());
            let alive = page.as_ref().is_some_and(|p| p.aggregator_alive());
            // The address maps, asked of the aggregator (bounded: a scrape never waits
            // long for them, and shows the rest without).
            let maps = if alive {
                crate::control::request_within(
                    dir,
                    "map",
                    std::time::Duration::from_secs(2),
                    16 << 20,
                )
                .map(|t| MapFigures::from_answer(&t))
                .unwrap_or_default()
            } else {
                Vec::new()
            };
            let body = render_with_maps(snap.map(std::sync::Arc::new), alive, maps);
            reply(&mut conn, 200, CONTENT_TYPE, body.as_bytes(), head)
        }
        ("GET" | "HEAD", "/") => reply(
            &mut conn,
            200,
            text,
            b"tt-aggregator metrics: see /metrics\n",
            head,
        ),
        ("GET" | "HEAD", _) => reply(
            &mut conn,
            404,
            text,
            b"not found: the metrics are at /metrics\n",
            head,
        ),
        _ => reply(
            &mut conn,
            405,
            text,
            b"method not allowed: use GET /metrics\n",
            false,
        ),
    };
}
