//! Device rows: the processes' figures per device beside what the driver shows of it
//! (identity, telemetry, built-in totals), sampled on a thread of its own.

use super::Aggregator;
use crate::accounting::placement::Card;
use crate::accounting::placement::{self, Chip};
use crate::accounting::{Accounting, ProcKey};
use crate::counters_page::*;
use crate::devices::Sample;
use crate::sys;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// The driver's view of the devices, as the sampler thread last read it.
#[derive(Default)]
pub(super) struct Telemetry {
    latest: Arc<Mutex<Sample>>,
    stop: Arc<AtomicBool>,
    /// Local devices seen so far (id, PCI address), to report arrivals and departures.
    seen_local: BTreeSet<(u32, String)>,
    /// Local devices reported gone (and not back since).
    gone_logged: BTreeSet<(u32, String)>,
    /// Every card seen, by index, as last seen (a card that vanished stays: its
    /// processes' figures stay on it).
    cards: std::collections::BTreeMap<u32, Card>,
    /// (process, card) pairs already logged as not in the card's driver list.
    disagreed: BTreeSet<(ProcKey, u32)>,
}

impl Telemetry {
    pub(super) fn latest(&self) -> Sample {
        self.latest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(super) fn stop_sampler(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Aggregator {
    /// Takes a first sample (logging each device found), then samples on a thread of
    /// its own, so that reading the driver's files never delays draining.
    pub(super) fn start_telemetry(&mut self) {
        let first =
            crate::devices::sample(&self.cfg.sysfs_root, &Default::default(), sys::unix_ns());
        if first.devices.is_empty() {
            self.log.info(format!(
                "   no Tenstorrent devices under {} (no sys/class/tenstorrent): devices that processes report are still tracked",
                self.cfg.sysfs_root.display()
            ));
        }
        for (d, _, _) in &first.devices {
            let (dram, l1) = crate::devices::builtin_totals(&d.arch, &d.board);
            let known = |b: Option<u64>| b.map(sys::human_bytes).unwrap_or_else(|| "? ".into());
            let link = if d.pci_bdf.is_empty() {
                "no PCI link"
            } else {
                &d.pci_bdf
            };
            self.log.info(format!(
                "   Device {}: {} {} ({} DRAM, {} L1) [Local, {link}]",
                d.id,
                d.arch,
                d.board,
                known(dram),
                known(l1),
            ));
            self.telemetry.seen_local.insert((d.id, d.pci_bdf.clone()));
        }
        self.place_on_cards(&first);
        *self
            .telemetry
            .latest
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = first;
        let (root, every) = (self.cfg.sysfs_root.clone(), self.cfg.telemetry_interval);
        let (slot, stop) = (self.telemetry.latest.clone(), self.telemetry.stop.clone());
        let _ = std::thread::Builder::new()
            .name("telemetry".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(every);
                    let prev = slot.lock().unwrap_or_else(|e| e.into_inner()).clone();
                    let next = crate::devices::sample(&root, &prev, sys::unix_ns());
                    *slot.lock().unwrap_or_else(|e| e.into_inner()) = next;
                }
            });
    }

    /// Every device row: the accounting's devices merged with the driver's.
    pub(super) fn device_rows(&self, sample: &Sample) -> Vec<DeviceRecord> {
        merge_devices(
            device_records(&self.acc),
            sample,
            &self.telemetry.seen_local,
        )
    }

    /// Gives the accounting the host's cards (every card seen: one that vanished keeps
    /// its processes' figures), then logs what was placed or moved.
    pub(super) fn place_on_cards(&mut self, sample: &Sample) {
        let t = &mut self.telemetry;
        let mut changed = false;
        // Every publication looks; a card is copied only when it is new or changed.
        for (d, _, _) in &sample.devices {
            if !t.cards.get(&d.id).is_some_and(|c| c.is(d)) {
                t.cards.insert(d.id, Card::of(d));
                changed = true;
            }
        }
        if changed || self.acc.cards.len() != t.cards.len() {
            self.acc.set_cards(t.cards.values().cloned().collect());
        }
        self.log_placements();
    }

    /// One line for each device of a process placed on a chip (on a host with cards)
    /// or moved to another.
    pub(super) fn log_placements(&mut self) {
        use crate::accounting::placement::Source;
        for p in self.acc.take_placed() {
            self.record_placed(&p);
            let Some(proc_) = self.acc.processes().get(&p.key) else {
                continue;
            };
            if p.source == Source::AsReported && p.moved_from.is_none() {
                continue;
            }
            let row = self
                .acc
                .row_of(&p.chip)
                .map_or("?".to_string(), |r| r.to_string());
            let how = match p.source {
                Source::AsReported => "no cards on this host: as reported".to_string(),
                Source::Inferred => match &proc_.placement.visible {
                    Some(crate::segment::VisibleDevices::Set(v)) => {
                        format!("TT_VISIBLE_DEVICES={v}")
                    }
                    _ => "TT_VISIBLE_DEVICES not set: every card visible".to_string(),
                },
                Source::Reported => "reported by the process".to_string(),
                Source::Unplaced => "a remote chip, or visibility unknown: its own row".to_string(),
            };
            let moved = p
                .moved_from
                .map(|r| format!("; its figures moved from device {r}"))
                .unwrap_or_default();
            self.log.info(format!(
                "   pid {} ({}): its device {} is device {row} ({how}){moved}",
                p.key.0, proc_.comm, p.logical
            ));
        }
    }

    /// Cross-checks placements against the driver's lists of who holds each card: a
    /// process placed on a card whose list leaves it out while another card's list has
    /// it is logged (once).
    pub(super) fn check_holders(&mut self) {
        let sample = self.telemetry.latest();
        use crate::accounting::placement::Chip;
        let t = &mut self.telemetry;
        for (key, p) in self.acc.processes() {
            let holds: Vec<u32> = sample
                .devices
                .iter()
                .filter(|(_, _, h)| h.contains(&key.0))
                .map(|(d, _, _)| d.id)
                .collect();
            if holds.is_empty() {
                continue;
            }
            for (&l, (chip, _)) in &p.placement.chips {
                let Chip::Local(i) = *chip else { continue };
                let listed = sample.devices.iter().any(|(d, _, _)| d.id == i);
                if listed && !holds.contains(&i) && t.disagreed.insert((*key, i)) {
                    self.log.warn(format!(
                        "pid {} ({}): its device {l} is placed on device {i}, but the driver lists it as holding device{} {} only",
                        key.0,
                        p.comm,
                        if holds.len() == 1 { "" } else { "s" },
                        holds.iter().map(|h| h.to_string()).collect::<Vec<_>>().join(", ")
                    ));
                }
            }
        }
        let acc = &self.acc;
        t.disagreed.retain(|(k, _)| acc.processes().contains_key(k));
    }

    /// Logs local devices that appeared or vanished since the last look.
    pub(super) fn note_device_changes(&mut self, sample: &Sample) {
        let t = &mut self.telemetry;
        let now: BTreeSet<(u32, String)> = sample
            .devices
            .iter()
            .map(|(d, _, _)| (d.id, d.pci_bdf.clone()))
            .collect();
        for k in &now {
            if !t.seen_local.contains(k) || t.gone_logged.contains(k) {
                self.log.info(format!("device {} appeared ({})", k.0, k.1));
                t.seen_local.insert(k.clone());
            }
        }
        let present: BTreeSet<u32> = now.iter().map(|k| k.0).collect();
        for k in &t.seen_local {
            if !now.contains(k) && !present.contains(&k.0) && t.gone_logged.insert(k.clone()) {
                self.log.warn(format!(
                    "device {} ({}) has vanished (reset, driver reload or unplug?)",
                    k.0, k.1
                ));
            }
        }
        t.gone_logged.retain(|k| !now.contains(k));
    }
}

fn device_records(acc: &Accounting) -> Vec<DeviceRecord> {
    let via = reported_via(acc);
    acc.devices
        .iter()
        .filter(|(_, dev)| (dev.row as usize) < MAX_PAGE_DEVICES)
        .map(|(chip, dev)| {
            let mut r = DeviceRecord {
                id: dev.row,
                flags: DEV_PRESENT,
                figures: dev.figures,
                l1_resident_peak: dev.l1_resident_peak,
                via: -1,
                ..Default::default()
            };
            if let Some(info) = dev.info {
                r.flags |= DEV_HAS_INFO;
                if info.is_remote != 0 {
                    r.flags |= DEV_REMOTE;
                }
                r.info = info;
                r.arch = put_str(crate::arch::name_of(info.arch));
                r.dram_total = info.total_dram_bytes;
                r.l1_total = info.total_l1_bytes;
            }
            if chip.is_remote() {
                r.flags |= DEV_REMOTE;
                r.via = via
                    .get(chip)
                    .copied()
                    .unwrap_or_else(|| sole_card(acc, chip));
            }
            match *chip {
                Chip::Asic(id) => r.asic_id = id,
                Chip::Unplaced { pid, .. } => r.owner_pid = pid,
                _ => {}
            }
            r
        })
        .collect()
}

/// For each remote chip a process reported the local chip it is reached through of:
/// that chip's row.
fn reported_via(acc: &Accounting) -> std::collections::HashMap<Chip, i32> {
    let mut via = std::collections::HashMap::new();
    if !acc.devices.keys().any(Chip::is_remote) {
        return via;
    }
    for p in acc.processes().values() {
        for (&l, id) in &p.placement.reported {
            if let (Some((chip, _)), true) = (p.chip_of(l), id.via_pcie_index >= 0) {
                via.entry(chip).or_insert(id.via_pcie_index);
            }
        }
    }
    via
}

/// A chip of one process that sees one card only: reached through that card, else
/// unknown (-1).
fn sole_card(acc: &Accounting, chip: &Chip) -> i32 {
    if let Chip::Unplaced {
        pid, start_time, ..
    } = *chip
    {
        if let Some(p) = acc.processes().get(&(pid, start_time)) {
            if let Some([one]) =
                placement::visible_cards(&p.placement.visible, &acc.cards).as_deref()
            {
                return one.index as i32;
            }
        }
    }
    -1
}

/// Adds sysfs devices (identity, telemetry, built-in totals) to the accounting's
/// devices; a device only a process knows about is remote; one seen in sysfs before
/// and missing now is marked gone.
fn merge_devices(
    mut recs: Vec<DeviceRecord>,
    sample: &Sample,
    seen: &BTreeSet<(u32, String)>,
) -> Vec<DeviceRecord> {
    for (d, t, _) in &sample.devices {
        if d.id as usize >= MAX_PAGE_DEVICES {
            continue;
        }
        match recs.iter_mut().find(|r| r.id == d.id) {
            Some(r) => crate::devices::fill_record(r, d, t),
            None => {
                let mut r = DeviceRecord {
                    id: d.id,
                    ..Default::default()
                };
                crate::devices::fill_record(&mut r, d, t);
                recs.push(r);
            }
        }
    }
    let local: BTreeSet<u32> = sample.devices.iter().map(|(d, _, _)| d.id).collect();
    let was_local: BTreeSet<u32> = seen.iter().map(|k| k.0).collect();
    for r in recs.iter_mut() {
        if local.contains(&r.id) {
            continue;
        }
        if was_local.contains(&r.id) {
            r.flags |= DEV_GONE;
            r.flags &= !DEV_PRESENT;
        }
    }
    for &id in was_local.difference(&local) {
        if !recs.iter().any(|r| r.id == id) && (id as usize) < MAX_PAGE_DEVICES {
            recs.push(DeviceRecord {
                id,
                flags: DEV_GONE,
                ..Default::default()
            });
        }
    }
    recs.sort_by_key(|r| r.id);
    recs
}
