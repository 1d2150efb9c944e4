//! The last seconds of each chip: a bounded ring of the events applied to it (by age
//! and by bytes), kept so that a snapshot taken after an out-of-memory failure
//! (`tt-track snapshot`, the Python package's `oom_snapshot`) shows what led to it.
//! This file owns the rings; the aggregator feeds them after each applied run
//! ([`Aggregator::keep_last_events`]) and answers `snapshot` from them
//! ([`Aggregator::snapshot_request`]).

use super::Aggregator;
use crate::accounting::ProcKey;
use crate::recording::Record;
use crate::shm_layout::{Event, EventKind};
use std::collections::{BTreeMap, HashSet, VecDeque};

/// The default window: 30 seconds, at most 8 MiB of events per chip.
pub const DEFAULT_SECONDS: f64 = 30.0;
pub const DEFAULT_MIB_PER_CHIP: u64 = 8;

/// One kept event: when it was applied, whose it is.
#[derive(Debug, Clone, Copy)]
pub struct Kept {
    pub t_unix_ms: u64,
    pub key: ProcKey,
    /// Its process's user (kept: a process that ended is no longer in the accounting).
    pub uid: u32,
    pub ev: Event,
}

/// Events applied together, of one process, on one chip: how they are kept (the
/// time, process and user once for the run, the events back to back).
#[derive(Debug)]
struct Run {
    t_unix_ms: u64,
    key: ProcKey,
    uid: u32,
    events: Vec<Event>,
}

/// One chip's kept runs, oldest first, and how many events they hold.
#[derive(Debug, Default)]
struct Ring {
    runs: VecDeque<Run>,
    events: usize,
}

/// The bytes one kept event takes.
pub const KEPT_BYTES: usize = std::mem::size_of::<Event>();

/// The rings, one per chip row.
#[derive(Debug)]
pub struct LastEvents {
    rows: BTreeMap<i32, Ring>,
    max_age_ms: u64,
    max_per_row: usize,
}

impl LastEvents {
    /// Rings keeping `seconds` of events, at most `mib` MiB per chip (either 0: none).
    pub fn new(seconds: f64, mib: u64) -> Self {
        LastEvents {
            rows: BTreeMap::new(),
            max_age_ms: (seconds.max(0.0) * 1000.0) as u64,
            max_per_row: ((mib << 20) as usize) / KEPT_BYTES,
        }
    }

    pub fn enabled(&self) -> bool {
        self.max_age_ms > 0 && self.max_per_row > 0
    }

    /// Keeps `events` of `key` (of user `uid`) on chip row `row`, applied at
    /// `t_unix_ms`: added to the newest run if it is the same process's at the same
    /// time. Over the bound, the oldest runs go (whole).
    pub fn push(
        &mut self,
        row: i32,
        t_unix_ms: u64,
        (key, uid): (ProcKey, u32),
        events: impl Iterator<Item = Event>,
    ) {
        let ring = self.rows.entry(row).or_default();
        let before = match ring.runs.back_mut() {
            Some(r) if r.key == key && r.t_unix_ms == t_unix_ms => {
                let n = r.events.len();
                r.events.extend(events);
                r.events.len() - n
            }
            _ => {
                let events: Vec<Event> = events.collect();
                let n = events.len();
                ring.runs.push_back(Run {
                    t_unix_ms,
                    key,
                    uid,
                    events,
                });
                n
            }
        };
        ring.events += before;
        while ring.events > self.max_per_row {
            let Some(old) = ring.runs.pop_front() else {
                break;
            };
            ring.events -= old.events.len();
        }
    }

    /// Drops what is older than the window.
    pub fn trim(&mut self, now_unix_ms: u64) {
        let oldest = now_unix_ms.saturating_sub(self.max_age_ms);
        for ring in self.rows.values_mut() {
            while ring.runs.front().is_some_and(|r| r.t_unix_ms < oldest) {
                if let Some(old) = ring.runs.pop_front() {
                    ring.events -= old.events.len();
                }
            }
        }
        // An emptied ring gives its memory back.
        self.rows.retain(|_, r| !r.runs.is_empty());
    }

    /// The kept events `want` takes, from `since_unix_ms` on, in the order they were
    /// applied.
    pub fn of(&self, since_unix_ms: u64, want: impl Fn(&Kept) -> bool) -> Vec<Kept> {
        let mut v: Vec<Kept> = self
            .rows
            .values()
            .flat_map(|r| r.runs.iter())
            .filter(|r| r.t_unix_ms >= since_unix_ms)
            .flat_map(|r| {
                r.events.iter().map(|ev| Kept {
                    t_unix_ms: r.t_unix_ms,
                    key: r.key,
                    uid: r.uid,
                    ev: *ev,
                })
            })
            .filter(|k| want(k))
            .collect();
        // Stable: a process's events keep their order within one time.
        v.sort_by_key(|k| k.t_unix_ms);
        v
    }

    /// Events kept in all.
    pub fn len(&self) -> usize {
        self.rows.values().map(|r| r.events).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Aggregator {
    /// Keeps the events of `key` just applied, each on its chip's ring: a run of one
    /// device (the usual case) at once, others event by event.
    pub(super) fn keep_last_events<'a, I>(&mut self, key: ProcKey, events: I)
    where
        I: Iterator<Item = &'a Event> + Clone,
    {
        if !self.last.enabled() {
            return;
        }
        let Some(p) = self.acc.processes().get(&key) else {
            return;
        };
        let mut all = events.clone();
        let Some(first) = all.next() else {
            return;
        };
        let now = crate::sys::unix_ns() / 1_000_000;
        let who = (key, p.uid);
        if all.all(|e| e.device == first.device) {
            let row = self.acc.device_row(p, first.device);
            self.last.push(row, now, who, events.copied());
        } else {
            // Each device's row once per run.
            let mut rows = [None::<i32>; crate::shm_layout::MAX_DEVICES];
            for ev in events {
                let Some(slot) = usize::try_from(ev.device)
                    .ok()
                    .and_then(|d| rows.get_mut(d))
                else {
                    continue;
                };
                let row = *slot.get_or_insert_with(|| self.acc.device_row(p, ev.device));
                self.last.push(row, now, who, std::iter::once(*ev));
            }
        }
        self.last.trim(now);
    }

    /// `snapshot epoch_ms=T [pid=P]`: the asker's processes (root: everyone's; with
    /// `pid`, that one), as records of a recording whose time 0 is T: each process, its
    /// placements, what it held at T (its live buffers then, with their detail, and its
    /// banks), then every event kept since T.
    pub(super) fn snapshot_request(
        &mut self,
        req: &super::control_server::Request,
        args: &str,
    ) -> super::control_server::Answer {
        use super::control_server::Answer;
        let mut epoch = None;
        let mut pid = None;
        for w in args.split_whitespace() {
            match w.split_once('=') {
                Some(("epoch_ms", v)) => epoch = v.parse::<u64>().ok(),
                Some(("pid", v)) => pid = v.parse::<u32>().ok(),
                _ => {}
            }
        }
        let Some(epoch) = epoch else {
            return Answer::Text(format!(
                "{}\n",
                serde_json::json!({ "error": "snapshot needs epoch_ms=T (Unix milliseconds of its time 0)" })
            ));
        };
        let mine = |key: ProcKey, uid: u32| {
            (req.uid == 0 || uid == req.uid) && pid.is_none_or(|x| x == key.0)
        };
        // The processes running, and those that ended within the window (their kept
        // events, without what they held before it).
        let mut wanted: HashSet<ProcKey> = self
            .acc
            .processes()
            .iter()
            .filter(|(k, p)| mine(**k, p.uid))
            .map(|(k, _)| *k)
            .collect();
        let kept = self.last.of(epoch, |k| mine(k.key, k.uid));
        wanted.extend(kept.iter().map(|k| k.key));
        let mut out = Vec::new();
        let t_of = |ms: u64| ms.saturating_sub(epoch);
        for key in &wanted {
            self.snapshot_start(*key, &kept, &mut out);
        }
        let mut i = 0;
        while i < kept.len() {
            // Runs of one process at one time: one record.
            let k0 = kept[i];
            let mut j = i;
            while j < kept.len() && kept[j].key == k0.key && kept[j].t_unix_ms == k0.t_unix_ms {
                j += 1;
            }
            crate::recording::encode_events(
                &mut out,
                t_of(k0.t_unix_ms),
                k0.key.0,
                kept[i..j].iter().map(|k| &k.ev),
            );
            i = j;
        }
        let (tx, chunks) = std::sync::mpsc::sync_channel(1);
        let queued = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(out.len() as u64));
        let _ = tx.send(out);
        Answer::Stream(super::control_server::Stream {
            chunks,
            queued,
            closed: Default::default(),
        })
    }

    /// A process as it stood at the snapshot's time 0: begun, placed, and holding its
    /// live buffers but those first allocated within the kept events (which replay
    /// them), with their detail, and its banks.
    fn snapshot_start(&self, key: ProcKey, kept: &[Kept], out: &mut Vec<u8>) {
        let Some(p) = self.acc.processes().get(&key) else {
            // Ended: only its kept events say what it did.
            Record::Process {
                t_ms: 0,
                pid: key.0,
                start_time: key.1,
                uid: kept.iter().find(|k| k.key == key).map_or(0, |k| k.uid),
                comm: "(ended)".into(),
            }
            .encode(out);
            return;
        };
        Record::Process {
            t_ms: 0,
            pid: key.0,
            start_time: key.1,
            uid: p.uid,
            comm: p.comm.clone(),
        }
        .encode(out);
        for (&logical, &(chip, source)) in &p.placement.chips {
            if let Some(row) = self.acc.row_of(&chip) {
                Record::Placed {
                    t_ms: 0,
                    pid: key.0,
                    logical,
                    row,
                    source: source as u8,
                }
                .encode(out);
            }
        }
        // Buffers whose first kept event is their allocation were not live at time 0.
        let mut first: HashSet<(i32, u64)> = HashSet::new();
        let mut born_later: HashSet<(i32, u64)> = HashSet::new();
        for k in kept.iter().filter(|k| k.key == key) {
            let ev = &k.ev;
            let is_alloc = ev.kind == EventKind::Alloc as u8;
            if !is_alloc && ev.kind != EventKind::Free as u8 {
                continue;
            }
            // Only a buffer's first kept event says whether it was live at time 0.
            if first.insert((ev.device, ev.id)) && is_alloc {
                born_later.insert((ev.device, ev.id));
            }
        }
        let mut state = Vec::new();
        for (&d, pd) in &p.devices {
            for (&t, g) in &pd.banks {
                if let Some(e) =
                    crate::shm_layout::BufferType::from_u8(t).and_then(|t| g.to_event(d, t))
                {
                    state.push(e);
                }
            }
            for (&id, b) in pd.buffers.iter() {
                if born_later.contains(&(d, id)) {
                    continue;
                }
                state.push(Event {
                    seq: 0,
                    kind: EventKind::Alloc as u8,
                    subtype: b.btype(),
                    _reserved: 0,
                    device: d,
                    size: b.size,
                    id,
                });
                if let Some(det) = pd.details.get(&id) {
                    state.extend(det.to_events(d, id));
                }
                if let Some(m) = pd.meshes.get(&id) {
                    state.push(m.to_event(d, id));
                }
            }
        }
        crate::recording::encode_events(out, 0, key.0, state.iter());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(t: u64, pid: u32, id: u64) -> Kept {
        Kept {
            t_unix_ms: t,
            key: (pid, 1),
            uid: 0,
            ev: Event {
                seq: id,
                kind: EventKind::Alloc as u8,
                subtype: 0,
                _reserved: 0,
                device: 0,
                size: 64,
                id,
            },
        }
    }

    #[test]
    fn rings_keep_the_window_and_the_bound() {
        let mut l = LastEvents::new(1.0, 1);
        let per_row = (1 << 20) / KEPT_BYTES;
        // Runs of 10 at one time each: the oldest go whole past the bound.
        for i in 0..(per_row as u64 / 10 + 5) {
            l.push(
                0,
                1000 + i,
                ((7, 1), 0),
                (0..10).map(|j| kept(0, 7, i * 10 + j).ev),
            );
        }
        assert!(
            l.len() <= per_row && l.len() > per_row - 10,
            "bounded by bytes"
        );
        let kept_now = l.of(0, |_| true);
        assert_eq!(
            kept_now.last().unwrap().ev.id,
            (per_row as u64 / 10 + 5) * 10 - 1
        );
        // The same process at the same time: one run.
        l.push(1, 1500, ((8, 1), 0), std::iter::once(kept(0, 8, 1).ev));
        l.push(1, 1500, ((8, 1), 0), std::iter::once(kept(0, 8, 2).ev));
        assert_eq!(l.rows[&1].runs.len(), 1);
        l.trim(1000 + per_row as u64 / 10 + 5 + 2000);
        // Row 0's events are older than a second: gone; row 1's too, at that time.
        assert_eq!(l.len(), 0);
        assert!(l.rows.is_empty());
        assert!(!LastEvents::new(0.0, 8).enabled());
    }
}
