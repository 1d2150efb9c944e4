//! The second source: TT-Metal's own per-chip regions (`tt_device_<N>_memory`), read
//! every 100 ms, their live slots shown as processes (`source` tt-metal), their bytes
//! added to their chip's row, and slots of processes that are gone shown as left behind,
//! in no live figure. A process that also reports through lanes is counted once, from
//! its lanes; the region's figure is kept beside it for comparison.
//!
//! This part owns the reader's state (`metal_shm::reader`), the peaks and rows of what
//! it found, and nothing of the accounting: its figures join the page at publication.

use super::Aggregator;
use crate::accounting::placement::{Card, Chip};
use crate::accounting::{Accounting, ProcKey};
use crate::counters_page::*;
use crate::metal_shm::reader::{Gone, Notice, Reader, Summary};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Instant;

/// How often the regions are read.
pub const READ_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

#[derive(Default)]
pub(super) struct MetalSource {
    reader: Option<Reader>,
    last: Summary,
    /// When each live process was first seen in a region (Unix ns).
    first_seen: HashMap<ProcKey, u64>,
    /// Each live process's high-water mark on each chip.
    peaks: HashMap<(ProcKey, u64), [u64; NUM_CATS]>,
    /// Rows of chips no card and no lane process names, by the region's N.
    rows: BTreeMap<u64, u32>,
    /// High-water marks of the rows' figures with the regions' bytes added.
    row_peaks: HashMap<u32, ([u64; NUM_CATS], u64)>,
    /// Processes told in the log to differ between their lanes and their region.
    differ_logged: std::collections::HashSet<ProcKey>,
    left_logged: std::collections::HashSet<(u64, u32)>,
    last_read: Option<Instant>,
    /// Each region's row as last published.
    published_rows: HashMap<u64, u32>,
}

impl MetalSource {
    pub(super) fn new(dir: Option<&Path>, proc_root: &Path) -> Self {
        Self {
            reader: dir.map(|d| Reader::new(d, proc_root, true)),
            ..Default::default()
        }
    }
}

impl Aggregator {
    /// Reads the regions now unless that was done in the last 5 ms (a `sync` asks: any
    /// client may, as often as it likes); whether they were read.
    pub(super) fn read_metal_soon(&mut self, now: Instant) -> bool {
        let recent = self
            .metal
            .last_read
            .is_some_and(|t| now.duration_since(t) < std::time::Duration::from_millis(5));
        if recent || self.metal.reader.is_none() {
            return false;
        }
        self.read_metal(now);
        true
    }

    /// Reads every region again; the page is published anew if anything changed.
    pub(super) fn read_metal(&mut self, now: Instant) {
        self.metal.last_read = Some(now);
        let Some(reader) = &mut self.metal.reader else {
            return;
        };
        let s = reader.tick(now);
        for n in reader.take_notices() {
            match n {
                Notice::Found { file, version, uid } => self.log.info(format!(
                    "+ TT-Metal memory region {file} (layout version {version}, uid {uid})"
                )),
                Notice::Refused { file, why } => self
                    .log
                    .warn(format!("TT-Metal memory region {file} ignored: {why}")),
                Notice::Closed { file } => self
                    .log
                    .info(format!("- TT-Metal memory region {file} is gone")),
            }
        }
        for l in &s.left {
            if self.metal.left_logged.insert((l.chip, l.pid)) {
                let why = match l.why {
                    Gone::Exited => "has exited",
                    Gone::PidReused => "is gone (its pid now names a newer process)",
                };
                self.log.warn(format!(
                    "pid {} ({}) {why} but {} still counts {} for it: left behind, not counted as live; `tt-track doctor` says how to clear it",
                    l.pid,
                    l.name,
                    l.file,
                    crate::sys::human_bytes(device_bytes(&l.used)),
                ));
            }
        }
        let m = &mut self.metal;
        m.left_logged
            .retain(|k| s.left.iter().any(|l| (l.chip, l.pid) == *k));
        let live: std::collections::HashSet<ProcKey> =
            s.live.iter().map(|l| (l.pid, l.start_time)).collect();
        m.first_seen.retain(|k, _| live.contains(k));
        m.peaks.retain(|(k, _), _| live.contains(k));
        for l in &s.live {
            let key = (l.pid, l.start_time);
            m.first_seen.entry(key).or_insert_with(crate::sys::unix_ns);
            let p = m.peaks.entry((key, l.chip)).or_default();
            for c in 0..NUM_CATS {
                p[c] = p[c].max(l.used[c]);
            }
        }
        if s != m.last {
            m.last = s;
            self.page.dirty = true;
        }
        self.sample_for_recordings();
    }

    /// The region-only processes' figures, by row, for the recordings.
    fn sample_for_recordings(&mut self) {
        if self.recordings.is_empty() {
            return;
        }
        let mut by: BTreeMap<ProcKey, super::recordings::SampledProcess> = BTreeMap::new();
        for l in &self.metal.last.live {
            let key = (l.pid, l.start_time);
            if self.acc.processes().contains_key(&key) {
                continue;
            }
            // A chip not published yet: sampled from the next read on.
            let Some(&row) = self.metal.published_rows.get(&l.chip) else {
                continue;
            };
            let p = by
                .entry(key)
                .or_insert_with(|| super::recordings::SampledProcess {
                    key,
                    uid: l.uid,
                    comm: l.comm.clone(),
                    rows: BTreeMap::new(),
                });
            let u = p.rows.entry(row).or_insert([0; NUM_CATS]);
            for c in 0..NUM_CATS {
                u[c] = u[c].saturating_add(l.used[c]);
            }
        }
        let live: Vec<_> = by.into_values().collect();
        self.record_sampled(&live);
    }

    /// Adds what the regions say to the page's rows: live processes of their own, the
    /// region's figures beside a lanes process that also has a slot, left-behind slots,
    /// and the live bytes on each chip's row.
    pub(super) fn add_metal(
        &mut self,
        devices: &mut Vec<DeviceRecord>,
        procs: &mut Vec<ProcessRecord>,
    ) {
        if self.metal.reader.is_none() {
            return;
        }
        let cards: Vec<Card> = self.acc.cards.clone();
        // Taken for the time of this call and put back (publication runs up to every
        // millisecond: no copy of what may be thousands of slots).
        let s = std::mem::take(&mut self.metal.last);
        let index: HashMap<ProcKey, usize> = procs
            .iter()
            .enumerate()
            .map(|(i, r)| ((r.pid, r.start_time), i))
            .collect();
        // Each region's row, once per publication.
        let mut rows: HashMap<u64, u32> = HashMap::new();
        for r in &s.regions {
            if r.live_slots + r.left_slots > 0 {
                let row = self.metal_row(r.chip, &cards, devices);
                rows.insert(r.chip, row);
            }
        }
        self.metal.published_rows = rows.clone();
        let row_of = |chip: u64| rows.get(&chip).copied().unwrap_or(u32::MAX);
        let mut own: BTreeMap<ProcKey, ProcessRecord> = BTreeMap::new();
        for l in &s.live {
            let key = (l.pid, l.start_time);
            if self.acc.processes().contains_key(&key) {
                // Counted from its lanes; the region's figure beside, for comparison.
                if let Some(r) = index.get(&key).and_then(|&i| procs.get_mut(i)) {
                    r.flags |= PROC_ALSO_IN_REGION;
                    for (i, &c) in DEVICE_CATS.iter().enumerate() {
                        r.region_used[i] = r.region_used[i].saturating_add(l.used[c]);
                    }
                }
                continue;
            }
            let row = row_of(l.chip);
            let r = own.entry(key).or_insert_with(|| ProcessRecord {
                pid: l.pid,
                flags: PROC_ALIVE | PROC_SOURCE_METAL,
                uid: l.uid,
                start_time: l.start_time,
                comm: put_str(&l.comm),
                first_seen_unix_ns: self.metal.first_seen.get(&key).copied().unwrap_or(0),
                ..Default::default()
            });
            let chip_row = row.min(u16::MAX as u32) as u16;
            let i = r.num_devices as usize;
            if let Some(d) = r.devices[..i.min(MAX_PROCESS_DEVICES)]
                .iter_mut()
                .find(|d| d.chip == chip_row)
            {
                // Two slots of one process in one region (not TT-Metal's doing): summed.
                for c in 0..NUM_CATS {
                    d.used[c] = d.used[c].saturating_add(l.used[c]);
                    d.peak[c] = d.peak[c].max(d.used[c]);
                }
            } else if i >= MAX_PROCESS_DEVICES {
                r.flags |= PROC_DEVICE_OVERFLOW;
            } else {
                r.devices[i] = ProcessDevice {
                    device: -1,
                    chip: row.min(u16::MAX as u32) as u16,
                    placement: PLACED_REGION,
                    _pad: 0,
                    used: l.used,
                    peak: self
                        .metal
                        .peaks
                        .get(&(key, l.chip))
                        .copied()
                        .unwrap_or(l.used),
                };
                r.num_devices += 1;
            }
            add_to_row(devices, row, l.chip, &l.used);
        }
        self.log_differences(procs);
        let mut left: BTreeMap<(u64, u32), crate::metal_shm::reader::LeftSlot> = BTreeMap::new();
        for l in &s.left {
            // One row per file and pid, however many slots name it.
            left.entry((l.chip, l.pid))
                .and_modify(|x| {
                    for c in 0..NUM_CATS {
                        x.used[c] = x.used[c].saturating_add(l.used[c]);
                    }
                })
                .or_insert_with(|| l.clone());
        }
        for l in left.values() {
            let row = row_of(l.chip);
            let mut r = ProcessRecord {
                pid: l.pid,
                flags: PROC_SOURCE_METAL | PROC_LEFT_BEHIND,
                uid: l.file_uid,
                comm: put_str(&l.name),
                region_chip: l.chip,
                num_devices: 1,
                ..Default::default()
            };
            for (i, &c) in DEVICE_CATS.iter().enumerate() {
                r.region_used[i] = l.used[c];
            }
            r.devices[0] = ProcessDevice {
                device: -1,
                chip: row.min(u16::MAX as u32) as u16,
                placement: PLACED_REGION,
                _pad: 0,
                used: l.used,
                peak: l.used,
            };
            // Its row exists (it is a chip with a region), with nothing live added.
            add_to_row(devices, row, l.chip, &[0; NUM_CATS]);
            procs.push(r);
        }
        procs.extend(own.into_values());
        procs.sort_by_key(|p| (p.pid, p.flags & PROC_LEFT_BEHIND));
        // Peaks of the rows with the regions' bytes in them.
        for d in devices.iter_mut() {
            let (peaks, l1peak) = self.metal.row_peaks.entry(d.id).or_default();
            for c in 0..NUM_CATS {
                peaks[c] = peaks[c].max(d.figures[c].used);
                d.figures[c].peak = d.figures[c].peak.max(peaks[c]);
            }
            let l1: u64 = L1_RESIDENT_CATS.iter().map(|&c| d.figures[c].used).sum();
            *l1peak = (*l1peak).max(l1);
            d.l1_resident_peak = d.l1_resident_peak.max(*l1peak);
        }
        devices.sort_by_key(|d| d.id);
        let rows: std::collections::HashSet<u32> = devices.iter().map(|d| d.id).collect();
        self.metal.row_peaks.retain(|r, _| rows.contains(r));
        let chips: std::collections::HashSet<u64> = s.regions.iter().map(|r| r.chip).collect();
        self.metal.rows.retain(|c, _| chips.contains(c));
        self.metal.last = s;
    }

    /// The row of the chip a region is named after: the card with that ASIC id, else
    /// the row lane processes have for that chip id, else a row of its own (kept while
    /// the region is there; moved if a card or chip takes its number).
    fn metal_row(&mut self, chip: u64, cards: &[Card], devices: &[DeviceRecord]) -> u32 {
        if let Some(c) = cards.iter().find(|c| c.asic_id != 0 && c.asic_id == chip) {
            return c.index;
        }
        if let Some(r) = self.acc.row_of(&Chip::Asic(chip)) {
            return r;
        }
        let taken = |r: u32, m: &BTreeMap<u64, u32>| {
            cards.iter().any(|c| c.index == r)
                || self.acc.devices.values().any(|d| d.row == r)
                || devices.iter().any(|d| d.id == r && d.asic_id != chip)
                || m.iter().any(|(&c, &x)| x == r && c != chip)
        };
        if let Some(&r) = self.metal.rows.get(&chip) {
            if !taken(r, &self.metal.rows) {
                return r;
            }
        }
        let r = (0..MAX_PAGE_DEVICES as u32)
            .find(|&r| !taken(r, &self.metal.rows))
            .unwrap_or(u32::MAX);
        self.metal.rows.insert(chip, r);
        r
    }

    /// One log line for a process whose lanes and region disagree (once each).
    fn log_differences(&mut self, procs: &[ProcessRecord]) {
        for r in procs.iter().filter(|r| r.flags & PROC_ALSO_IN_REGION != 0) {
            let key = (r.pid, r.start_time);
            let Some(p) = self.acc.processes().get(&key) else {
                continue;
            };
            let lanes: Vec<u64> = DEVICE_CATS
                .iter()
                .map(|&c| p.devices.values().map(|d| d.used[c]).sum())
                .collect();
            let region = r.region_used.to_vec();
            // TT-Metal keeps CBs its own way (a high-water mark, written at most every
            // 100 ms): compare buffers only.
            let buffers = |v: &[u64]| v[..4].to_vec();
            if buffers(&lanes) != buffers(&region) && self.metal.differ_logged.insert(key) {
                self.log.info(format!(
                    "pid {} ({}): its lanes say DRAM {} L1 {}, TT-Metal's region DRAM {} L1 {} (counted once, from the lanes)",
                    r.pid,
                    p.comm,
                    crate::sys::human_bytes(lanes[0]),
                    crate::sys::human_bytes(lanes[1]),
                    crate::sys::human_bytes(region[0]),
                    crate::sys::human_bytes(region[1]),
                ));
            }
        }
        let acc: &Accounting = &self.acc;
        self.metal
            .differ_logged
            .retain(|k| acc.processes().contains_key(k));
    }
}

/// Adds `used` to row `row` (made if missing, named by the region's chip id).
fn add_to_row(devices: &mut Vec<DeviceRecord>, row: u32, chip: u64, used: &[u64; NUM_CATS]) {
    if row as usize >= MAX_PAGE_DEVICES {
        return;
    }
    let i = match devices.iter().position(|d| d.id == row) {
        Some(i) => i,
        None => {
            devices.push(DeviceRecord {
                id: row,
                flags: DEV_PRESENT,
                asic_id: chip,
                via: -1,
                ..Default::default()
            });
            devices.len() - 1
        }
    };
    let d = &mut devices[i];
    if d.asic_id == 0 {
        d.asic_id = chip;
    }
    for c in 0..NUM_CATS {
        d.figures[c].used = d.figures[c].used.saturating_add(used[c]);
    }
}
