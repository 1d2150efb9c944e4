//! What a recording says happened: the events replayed through the aggregator's own
//! accounting (the same rules, so the same figures), per device and type: the peak and
//! when it was reached, what was live then, allocations and frees, short-lived
//! allocations, sizes, and what each process still held when it ended.
//!
//! Devices are the chips' rows. A placement that changed during the run (a late
//! report) is applied to the whole run: it was that chip all along.

use super::{Record, Recording};
use crate::accounting::placement::Chip;
use crate::accounting::{cat_of_buffer, cat_of_kernel, Accounting, Outcome};
use crate::counters_page::{CAT_CB, CAT_KERNEL, CAT_NAMES, DEVICE_CATS, NUM_CATS};
use crate::shm_layout::{BufferType, Event, KernelType};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

mod rows;
use rows::{devices, fill_live_at_peak, fill_processes};

/// Buffers listed as live at each peak (the largest).
pub const LIVE_AT_PEAK_LISTED: usize = 20;

/// A live allocation at some moment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Live {
    pub pid: u32,
    pub device: u32,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub address: u64,
    pub size: u64,
    /// Seconds since the recording began; `None` for circular buffers (the
    /// accounting keeps only their sizes).
    pub allocated_at_s: Option<f64>,
}

/// One device's figures of one type over the run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TypeReport {
    pub peak_bytes: u64,
    pub peak_at_s: f64,
    pub allocations: u64,
    pub frees: u64,
    pub allocated_bytes: u64,
    /// What processes still held when they ended.
    pub leaked_bytes: u64,
    pub leaked_buffers: u64,
    /// Allocations freed before the process allocated anything else (heaptrack's
    /// "temporary" allocations): churn that costs time and fragments memory.
    pub temporary_allocations: u64,
    pub temporary_bytes: u64,
    /// The largest of what was live when the peak was reached.
    pub live_at_peak: Vec<Live>,
    /// The address map of that type at the peak (DRAM and L1 of a process whose
    /// allocator's banks were reported: `crate::accounting::maps`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub map_at_peak: Option<serde_json::Value>,
    /// Allocations by size: `[low, count]`, `low` a power of two (sizes in
    /// `low..2*low`).
    pub size_histogram: Vec<(u64, u64)>,
    #[serde(skip)]
    peak_index: usize,
    #[serde(skip)]
    histogram: BTreeMap<u64, u64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct DeviceReport {
    pub id: u32,
    pub arch: Option<String>,
    pub board: Option<String>,
    pub remote: bool,
    pub dram_total_bytes: Option<u64>,
    pub l1_total_bytes: Option<u64>,
    /// By type name (`dram`, `l1`, `l1_small`, `trace`, `system_memory`, `cb`,
    /// `kernel`, ...), each type that saw an event.
    pub types: BTreeMap<&'static str, TypeReport>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ProcessReport {
    pub pid: u32,
    pub comm: String,
    pub started_at_s: f64,
    pub ended_at_s: Option<f64>,
    pub events: u64,
    pub events_lost: u64,
    pub leaked_bytes: u64,
    /// Known only from TT-Metal's own region: its figures were sampled (every 100 ms
    /// at most), not replayed from events; no buffers.
    pub sampled: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Exit {
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

impl Report {
    /// How the command ended, in words (`exit 0`, `killed by signal 9`).
    pub fn exit_text(&self) -> String {
        match &self.exit {
            Some(Exit {
                signal: Some(s), ..
            }) => format!("killed by signal {s}"),
            Some(e) => format!("exit {}", e.code.unwrap_or(0)),
            None => "no exit recorded".into(),
        }
    }
}

impl DeviceReport {
    /// Its architecture and board, as known (`wormhole_b0 n150`, or empty).
    pub fn name(&self) -> String {
        [self.arch.as_deref(), self.board.as_deref()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// The whole report (`tt-track report --json`, schema 1).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub schema: u32,
    pub command: Vec<String>,
    pub host: String,
    pub started_unix_ms: u64,
    pub duration_s: f64,
    /// The command's exit was recorded and every process it started ended.
    pub complete: bool,
    pub truncated: Option<String>,
    pub exit: Option<Exit>,
    pub events: u64,
    /// Events that never reached the recording (gaps in a process's sequence numbers:
    /// lost by the process or on the way; each counted once). A process's own count of
    /// what it lost is in `processes[].events_lost`.
    pub events_lost: u64,
    pub devices: Vec<DeviceReport>,
    pub leaks: Vec<Live>,
    /// What processes that had not ended when the recording did still held.
    pub live_at_end: Vec<Live>,
    /// The address maps where it ends (each chip and type whose banks were reported).
    pub maps_at_end: Vec<serde_json::Value>,
    /// A snapshot taken after a failure: that failure, explained.
    pub failure: Option<super::autopsy::Failure>,
    pub processes: Vec<ProcessReport>,
    /// Memory over time: per (device, type) the figure after each millisecond that
    /// changed it (for charts and exports; not in the JSON).
    #[serde(skip)]
    pub timeline: BTreeMap<(u32, usize), Vec<(u64, u64)>>,
    /// The same per (pid, device, type): each process's own figures.
    #[serde(skip)]
    pub process_timeline: BTreeMap<(u32, u32, usize), Vec<(u64, u64)>>,
}

impl Report {
    pub fn device(&self, id: u32) -> Option<&DeviceReport> {
        self.devices.iter().find(|d| d.id == id)
    }
}

/// Where each (pid, logical device) ended up: the last placement recorded.
fn final_rows(rec: &Recording) -> HashMap<(u32, i32), u32> {
    let mut m = HashMap::new();
    for r in &rec.records {
        if let Record::Placed {
            pid, logical, row, ..
        } = r
        {
            m.insert((*pid, *logical), *row);
        }
    }
    m
}

fn secs(t_ms: u64) -> f64 {
    t_ms as f64 / 1000.0
}

/// What looks at a replay as it runs.
trait Visit {
    fn event(&mut self, rp: &Replay, pid: u32, ev: &Event, out: &Outcome);
    fn end(&mut self, _rp: &Replay, _key: (u32, u64), _events_lost: u64) {}
    /// A sampled process's figures on `row` changed (`Record::Sampled`).
    fn sample(&mut self, _rp: &Replay, _pid: u32, _row: u32) {}
}

/// The replay: records applied in order to an accounting of their own.
struct Replay<'a> {
    rec: &'a Recording,
    rows: HashMap<(u32, i32), u32>,
    acc: Accounting,
    keys: HashMap<u32, (u32, u64)>,
    /// What each sampled process holds on each row, by category.
    sampled: HashMap<(u32, u32), [u64; NUM_CATS]>,
    /// Events applied so far (the index of the next).
    index: usize,
    t_ms: u64,
}

impl<'a> Replay<'a> {
    fn new(rec: &'a Recording) -> Self {
        Self {
            rec,
            rows: final_rows(rec),
            acc: Accounting::default(),
            keys: HashMap::new(),
            sampled: HashMap::new(),
            index: 0,
            t_ms: 0,
        }
    }

    /// Runs every record (up to the event of index `stop_after`, if given): `v` sees
    /// each applied event (its process, the event with its device as the chip's row,
    /// its outcome; the replay after it) and each process about to be released.
    fn run(&mut self, v: &mut impl Visit, stop_after: Option<usize>) {
        let rec = self.rec;
        for r in &rec.records {
            match r {
                Record::Process {
                    t_ms,
                    pid,
                    start_time,
                    uid,
                    comm,
                } => {
                    self.t_ms = self.t_ms.max(*t_ms);
                    let key = (*pid, *start_time);
                    self.keys.insert(*pid, key);
                    self.acc.register(key, *uid, comm, *t_ms);
                }
                Record::Events { t_ms, pid, events } => {
                    self.t_ms = self.t_ms.max(*t_ms);
                    let Some(&key) = self.keys.get(pid) else {
                        continue;
                    };
                    for e in events {
                        if stop_after.is_some_and(|s| self.index > s) {
                            return;
                        }
                        let mut e = *e;
                        let row = self
                            .rows
                            .get(&(*pid, e.device))
                            .copied()
                            .unwrap_or(e.device as u32);
                        e.device = row as i32;
                        let out = self.acc.apply(key, &e, *t_ms as u32);
                        v.event(self, *pid, &e, &out);
                        self.index += 1;
                    }
                }
                Record::End {
                    t_ms,
                    pid,
                    events_lost,
                } => {
                    self.t_ms = self.t_ms.max(*t_ms);
                    if let Some(key) = self.keys.remove(pid) {
                        v.end(self, key, *events_lost);
                        self.acc.release(key);
                        let rows: Vec<u32> = self
                            .sampled
                            .keys()
                            .filter(|k| k.0 == *pid)
                            .map(|k| k.1)
                            .collect();
                        for row in rows {
                            self.sampled.remove(&(*pid, row));
                            v.sample(self, *pid, row);
                        }
                    }
                }
                Record::Sampled {
                    t_ms,
                    pid,
                    row,
                    used,
                } => {
                    self.t_ms = self.t_ms.max(*t_ms);
                    if !self.keys.contains_key(pid) {
                        continue;
                    }
                    let mut u = [0u64; NUM_CATS];
                    for (i, &c) in DEVICE_CATS.iter().enumerate() {
                        u[c] = used[i];
                    }
                    self.sampled.insert((*pid, *row), u);
                    v.sample(self, *pid, *row);
                }
                _ => {}
            }
        }
    }

    /// What process `key` holds now (on `row` and of category `cat`, if given).
    fn live_of(&self, key: (u32, u64), row: Option<u32>, cat: Option<usize>) -> Vec<Live> {
        let Some(p) = self.acc.processes().get(&key) else {
            return Vec::new();
        };
        let mut v = Vec::new();
        for (&d, pd) in &p.devices {
            let d = d as u32;
            if row.is_some_and(|r| r != d) {
                continue;
            }
            for (&addr, b) in pd.buffers.iter() {
                let c = BufferType::from_u8(b.btype()).map(cat_of_buffer);
                if cat.is_none() || c == cat {
                    v.push(Live {
                        pid: p.pid,
                        device: d,
                        kind: CAT_NAMES[c.unwrap_or(0)],
                        // The buffer's address when its producer said (the graph hook's
                        // ids carry the type above it).
                        address: pd.details.get(&addr).map_or(addr, |x| u64::from(x.address)),
                        size: b.size,
                        allocated_at_s: Some(secs(b.first_seen_unix_s as u64)),
                    });
                }
            }
            if cat.is_none() || cat == Some(CAT_CB) {
                for (&id, sizes) in &pd.cbs {
                    v.extend(sizes.iter().map(|&size| Live {
                        pid: p.pid,
                        device: d,
                        kind: CAT_NAMES[CAT_CB],
                        address: id,
                        size,
                        allocated_at_s: None,
                    }));
                }
            }
            for (&id, loads) in &pd.kernels {
                for &(size, kt, at) in loads {
                    let sub = KernelType::from_u8(kt).map(cat_of_kernel);
                    if cat.is_none() || cat == Some(CAT_KERNEL) || cat == sub {
                        v.push(Live {
                            pid: p.pid,
                            device: d,
                            kind: CAT_NAMES[CAT_KERNEL],
                            address: id,
                            size,
                            allocated_at_s: Some(secs(at as u64)),
                        });
                    }
                }
            }
        }
        v.sort_by(|a, b| b.size.cmp(&a.size).then(a.address.cmp(&b.address)));
        v
    }

    /// What the chip in `row` holds: the replayed events' figures and the sampled
    /// processes' together.
    fn figures(&self, row: u32) -> Option<[u64; NUM_CATS]> {
        let d = self.acc.devices.get(&Chip::AsReported(row as i32));
        let mut used = d.map(|d| d.figures.map(|f| f.used));
        for (_, u) in self.sampled.iter().filter(|(k, _)| k.1 == row) {
            let f = used.get_or_insert([0; NUM_CATS]);
            for c in 0..NUM_CATS {
                f[c] = f[c].saturating_add(u[c]);
            }
        }
        used
    }
}

/// The power of two at or below `size` (the histogram's classes; 0 for 0).
pub fn size_class(size: u64) -> u64 {
    match size {
        0 => 0,
        s => 1 << (63 - s.leading_zeros()),
    }
}

/// The category and size an outcome allocated or freed.
fn moved(out: &Outcome) -> Option<(usize, u64, bool)> {
    Some(match *out {
        Outcome::Allocated { size, btype } => (cat_of_buffer(btype), size, true),
        Outcome::Freed {
            size,
            btype,
            last: true,
        } => (cat_of_buffer(btype), size, false),
        Outcome::CbAllocated { size } => (CAT_CB, size, true),
        Outcome::CbFreed { size } => (CAT_CB, size, false),
        Outcome::KernelLoaded { size, .. } => (CAT_KERNEL, size, true),
        Outcome::KernelUnloaded { size, .. } => (CAT_KERNEL, size, false),
        _ => return None,
    })
}

/// What the first replay gathers.
#[derive(Default)]
struct Tally {
    types: BTreeMap<(u32, usize), TypeReport>,
    procs: BTreeMap<u32, ProcessReport>,
    /// Per process: its last allocation (row, category, id), for "temporary".
    last_alloc: HashMap<u32, (u32, usize, u64)>,
    leaks: Vec<Live>,
    timeline: BTreeMap<(u32, usize), Series>,
    proc_timeline: BTreeMap<(u32, u32, usize), Series>,
}

impl Tally {
    /// Allocations, frees and temporary ones.
    fn count(&mut self, pid: u32, row: u32, id: u64, (cat, size, alloc): (usize, u64, bool)) {
        let t = self.types.entry((row, cat)).or_default();
        if alloc {
            t.allocations += 1;
            t.allocated_bytes = t.allocated_bytes.saturating_add(size);
            *t.histogram.entry(size_class(size)).or_default() += 1;
            self.last_alloc.insert(pid, (row, cat, id));
        } else {
            t.frees += 1;
            if self.last_alloc.remove(&pid) == Some((row, cat, id)) {
                t.temporary_allocations += 1;
                t.temporary_bytes = t.temporary_bytes.saturating_add(size);
            }
        }
    }
}

impl Visit for Tally {
    fn event(&mut self, rp: &Replay, pid: u32, ev: &Event, out: &Outcome) {
        let row = ev.device as u32;
        self.procs.entry(pid).or_default().events += 1;
        let Some(m) = moved(out) else { return };
        self.count(pid, row, ev.id, m);
        let pd = rp
            .keys
            .get(&pid)
            .and_then(|k| rp.acc.processes().get(k))
            .and_then(|p| p.devices.get(&(row as i32)));
        if let Some(pd) = pd {
            for c in 0..NUM_CATS {
                self.proc_timeline
                    .entry((pid, row, c))
                    .or_default()
                    .at(rp.t_ms, pd.used[c]);
            }
        }
        self.device_point(rp, row);
    }

    fn sample(&mut self, rp: &Replay, pid: u32, row: u32) {
        self.procs.entry(pid).or_default().sampled = true;
        let u = rp.sampled.get(&(pid, row)).copied().unwrap_or_default();
        for (c, &v) in u.iter().enumerate() {
            self.proc_timeline
                .entry((pid, row, c))
                .or_default()
                .at(rp.t_ms, v);
        }
        self.device_point(rp, row);
    }

    fn end(&mut self, rp: &Replay, key: (u32, u64), events_lost: u64) {
        let held = rp.live_of(key, None, None);
        let p = self.procs.entry(key.0).or_default();
        p.ended_at_s = Some(secs(rp.t_ms));
        p.events_lost = events_lost;
        p.leaked_bytes = held.iter().fold(0u64, |a, l| a.saturating_add(l.size));
        for l in &held {
            if let Some(c) = CAT_NAMES.iter().position(|n| *n == l.kind) {
                let t = self.types.entry((l.device, c)).or_default();
                t.leaked_bytes = t.leaked_bytes.saturating_add(l.size);
                t.leaked_buffers += 1;
            }
        }
        self.leaks.extend(held);
    }
}

impl Tally {
    /// The chip in `row`'s figures now, on its timeline and against its peaks.
    fn device_point(&mut self, rp: &Replay, row: u32) {
        let Some(used) = rp.figures(row) else { return };
        // Every category this event may have moved (a kernel moves its subtype too).
        for c in 0..NUM_CATS {
            self.timeline
                .entry((row, c))
                .or_default()
                .at(rp.t_ms, used[c]);
            if used[c] > 0 || self.types.contains_key(&(row, c)) {
                let t = self.types.entry((row, c)).or_default();
                if used[c] > t.peak_bytes {
                    t.peak_bytes = used[c];
                    t.peak_at_s = secs(rp.t_ms);
                    t.peak_index = rp.index;
                }
            }
        }
    }
}

/// Analyses a recording.
pub fn analyze(rec: &Recording) -> Report {
    let mut t = Tally::default();
    let mut replay = Replay::new(rec);
    replay.run(&mut t, None);
    let mut r = Report {
        schema: 1,
        command: rec.meta.command.clone(),
        host: rec.meta.host.clone(),
        started_unix_ms: rec.meta.started_unix_ms,
        truncated: rec.truncated.clone(),
        events: rec.events(),
        duration_s: secs(replay.t_ms),
        ..Default::default()
    };
    (r.maps_at_end, r.failure) = super::autopsy::autopsy(&replay.acc, rec.meta.failure.as_deref());
    let still: Vec<(u32, u64)> = replay.acc.processes().keys().copied().collect();
    for k in still {
        r.live_at_end.extend(replay.live_of(k, None, None));
    }
    fill_live_at_peak(rec, &mut t.types);
    fill_processes(rec, &mut t.procs);
    // Gaps in the processes' sequence numbers (found by the recorder) and the socket
    // clients' events the aggregator could not send: each lost event once.
    r.events_lost = rec
        .records
        .iter()
        .map(|x| match x {
            Record::Lost { count, .. } => *count,
            _ => 0,
        })
        .fold(0u64, u64::saturating_add);
    r.exit = rec.records.iter().rev().find_map(|x| match x {
        Record::Exit { code, signal, .. } => Some(Exit {
            code: *code,
            signal: *signal,
        }),
        _ => None,
    });
    r.complete = r.exit.is_some() && r.truncated.is_none() && replay.acc.processes().is_empty();
    r.devices = devices(rec, t.types);
    t.leaks
        .sort_by(|a, b| b.size.cmp(&a.size).then(a.pid.cmp(&b.pid)));
    r.leaks = t.leaks;
    r.processes = t.procs.into_values().collect();
    r.timeline = t.timeline.into_iter().map(|(k, s)| (k, s.done())).collect();
    r.process_timeline = t
        .proc_timeline
        .into_iter()
        .map(|(k, s)| (k, s.done()))
        .filter(|(_, v)| v.iter().any(|p| p.1 > 0))
        .collect();
    r
}

/// A figure over time, at most two points a millisecond: its highest in that
/// millisecond, then where it ended if lower (so neither a peak nor a fall is lost).
#[derive(Default)]
struct Series {
    points: Vec<(u64, u64)>,
    /// The millisecond being gathered: (time, highest, last).
    open: Option<(u64, u64, u64)>,
}

impl Series {
    fn at(&mut self, t: u64, v: u64) {
        match &mut self.open {
            Some((t0, hi, last)) if *t0 == t => {
                *hi = (*hi).max(v);
                *last = v;
            }
            _ => {
                self.close();
                self.open = Some((t, v, v));
            }
        }
    }
    fn close(&mut self) {
        if let Some((t, hi, last)) = self.open.take() {
            if self.points.last().map(|p| p.1) != Some(hi) || hi != last {
                self.points.push((t, hi));
            }
            if last != hi {
                self.points.push((t, last));
            }
        }
    }
    fn done(mut self) -> Vec<(u64, u64)> {
        self.close();
        self.points
    }
}
