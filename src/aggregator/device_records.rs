//! Device rows: the processes' figures per device beside what the driver shows of it
//! (identity, telemetry, built-in totals), sampled on a thread of its own.

use super::accounting::Accounting;
use super::Aggregator;
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
    acc.devices
        .iter()
        .filter(|(&d, _)| (0..MAX_PAGE_DEVICES as i32).contains(&d))
        .map(|(&d, dev)| {
            let mut r = DeviceRecord {
                id: d as u32,
                flags: DEV_PRESENT,
                figures: dev.figures,
                l1_resident_peak: dev.l1_resident_peak,
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
            r
        })
        .collect()
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
        } else if r.flags & DEV_HAS_INFO == 0 && !local.is_empty() {
            // Not in sysfs while the driver shows other devices: reached over Ethernet.
            // (A device a process described keeps the process's own word on this.)
            r.flags |= DEV_REMOTE;
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
