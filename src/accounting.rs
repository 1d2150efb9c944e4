//! Exact accounting: what each event does to the figures of its process and device.
//!
//! Semantics follow the original tracking server, minus its defects:
//! - buffers are keyed by (process, device, buffer id); an ALLOC of a live key raises a
//!   reference count without adding the size again; FREE lowers it; the size leaves the
//!   figures only when the count reaches zero;
//! - a FREE (or CB/kernel free) of an unknown key is counted, never subtracted;
//! - CB and kernel frees subtract the size recorded at allocation, never the size the
//!   message claims;
//! - SYSTEM_MEMORY is host memory: its own figure, not device memory;
//! - one process can never change another's figures (keys include the process);
//! - a device's figures are a physical chip's: each process's logical device ids are
//!   placed on chips ([`placement`]), and a later, better placement moves that
//!   process's figures, exactly.

use crate::counters_page::*;
use crate::shm_layout::{
    BankGeometry, BufferDetail, BufferType, ChipIdentity, DeviceInfo, KernelType, MAX_DEVICES,
};
use placement::{Card, Chip, Placement, Source};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Hash maps keyed by ids a producer chooses: foldhash is several times faster than
/// SipHash on u64 keys and, randomly seeded per map, still resists collision floods.
pub type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Largest size accepted for one event (the original accepted up to 100 GiB).
pub const MAX_EVENT_SIZE: u64 = 1 << 40;

/// A live buffer: 16 bytes (plus its 8-byte key in the map).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct BufRec {
    pub size: u64,
    pub first_seen_unix_s: u32,
    /// Reference count in the low 24 bits, buffer type in the high 8.
    pub rc_type: u32,
}

impl BufRec {
    pub fn refcount(&self) -> u32 {
        self.rc_type & 0x00ff_ffff
    }
    pub fn btype(&self) -> u8 {
        (self.rc_type >> 24) as u8
    }
}

/// One process's memory on one device.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct ProcDev {
    pub buffers: BufferTable,
    /// CB id -> sizes of its live allocations (a CB id may be allocated more than once).
    pub cbs: HashMap<u64, Vec<u64>>,
    /// CB id (its address) -> where it lies, for the CBs whose producer says (the graph
    /// hook does).
    #[serde(default)]
    pub cb_places: HashMap<u64, crate::shm_layout::CbPlace>,
    /// Kernel id -> (size, kernel type, load time in Unix seconds) of its live loads.
    pub kernels: HashMap<u64, Vec<(u64, u8, u32)>>,
    /// Buffer id -> where that live buffer lies in its banks, for the buffers whose
    /// producer says (the extension events; the graph hook sends them for every buffer).
    #[serde(default)]
    pub details: HashMap<u64, BufferDetail>,
    /// Buffer id -> the mesh buffer that live buffer is this chip's part of (the graph
    /// hook says, for a mesh of several chips).
    #[serde(default)]
    pub meshes: HashMap<u64, crate::shm_layout::MeshMember>,
    /// Buffer type -> the allocator's banks of that type, as the process reported them.
    #[serde(default)]
    pub banks: BTreeMap<u8, BankGeometry>,
    pub used: [u64; NUM_CATS],
    pub count: [u64; NUM_CATS],
    pub peak: [u64; NUM_CATS],
    /// The chip it is on (kept with the placement, so that applying an event looks
    /// up no placement); `None` only before its first event.
    pub chip: Option<Chip>,
}

/// The uid of a process first known from journal records after the last snapshot
/// (records do not carry it): taken from its segment's owner when it re-attaches
/// (checked against `/proc` there), or from its socket connection.
pub const UID_UNKNOWN: u32 = u32::MAX;

/// A tracked process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcState {
    pub pid: u32,
    pub start_time: u64,
    pub uid: u32,
    pub comm: String,
    pub first_seen_unix_ns: u64,
    pub devices: BTreeMap<i32, ProcDev>,
    pub events_applied: u64,
    /// Events the producer reported dropping (last value read from its segment).
    pub producer_dropped: u64,
    /// Sequence numbers skipped after waiting for them (their events never came).
    pub gap_lost: u64,
    pub unknown_frees: u64,
    pub invalid_events: u64,
    /// Next sequence number to apply.
    pub next_seq: u64,
    /// Per lane: the position after the last applied event of that lane.
    pub lane_applied: Vec<u64>,
    /// Which chip each of its devices is.
    pub placement: Placement,
    /// Live buffers on all devices (kept, not summed per event; not in the snapshot,
    /// recounted when one is read: [`Accounting::recount`]).
    #[serde(skip)]
    live: u64,
}

impl ProcState {
    pub fn new(pid: u32, start_time: u64, uid: u32, comm: String, now_unix_ns: u64) -> Self {
        Self {
            pid,
            start_time,
            uid,
            comm,
            first_seen_unix_ns: now_unix_ns,
            devices: BTreeMap::new(),
            events_applied: 0,
            producer_dropped: 0,
            gap_lost: 0,
            unknown_frees: 0,
            invalid_events: 0,
            next_seq: 0,
            lane_applied: vec![0; crate::shm_layout::NUM_LANES],
            placement: Placement::default(),
            live: 0,
        }
    }
    pub fn events_lost(&self) -> u64 {
        self.producer_dropped.saturating_add(self.gap_lost)
    }
    pub fn exact(&self) -> bool {
        self.events_lost() == 0
    }
    pub fn live_buffers(&self) -> u64 {
        self.live
    }
    /// The chip its device `logical` is on, and how that was found (`None` before the
    /// device had an event).
    pub fn chip_of(&self, logical: i32) -> Option<(Chip, Source)> {
        self.placement.chips.get(&logical).copied()
    }
}

/// Totals of one device.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct DevState {
    pub figures: [Figure; NUM_CATS],
    /// High-water mark of everything L1-resident together.
    pub l1_resident_peak: u64,
    pub info: Option<DeviceInfo>,
    /// The row's id in every view: a local chip's `/dev/tenstorrent` index, an id as
    /// reported on a host with no cards, else the lowest that no card or chip has.
    pub row: u32,
}

impl DevState {
    /// A row shown nowhere (not reached: a placed device's chip always has its row).
    fn unnumbered() -> Self {
        Self {
            row: u32::MAX,
            ..Default::default()
        }
    }
}

/// A placement made or changed (for the aggregator's log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    pub key: ProcKey,
    pub logical: i32,
    pub chip: Chip,
    pub source: Source,
    /// The row the device's figures were moved from, if they were.
    pub moved_from: Option<u32>,
}

/// Key of a process: pid and start time (unique across PID reuse).
pub type ProcKey = (u32, u64);

/// What applying one event did, for the verbose log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A new buffer beyond `limits::MAX_BUFFERS_PER_PROCESS`: not tracked, counted lost.
    OverLimit,
    Allocated {
        size: u64,
        btype: BufferType,
    },
    Referenced {
        refcount: u32,
    },
    Freed {
        size: u64,
        btype: BufferType,
        last: bool,
    },
    UnknownFree,
    CbAllocated {
        size: u64,
    },
    CbFreed {
        size: u64,
    },
    KernelLoaded {
        size: u64,
        ktype: KernelType,
        total: u64,
    },
    KernelUnloaded {
        size: u64,
        ktype: KernelType,
        total: u64,
    },
    DeviceInfo,
    DeviceIdentity,
    /// A buffer's detail or a type's banks taken (or a detail of a buffer not live,
    /// left).
    Described,
    Invalid(&'static str),
}

impl Outcome {
    /// Whether the aggregator must act on this outcome (a device description to read)
    /// or may log it (a free of something unknown, a refusal) even when it does not
    /// log every event.
    pub fn notable(&self) -> bool {
        matches!(
            self,
            Outcome::DeviceInfo
                | Outcome::DeviceIdentity
                | Outcome::UnknownFree
                | Outcome::OverLimit
        )
    }
}

/// All figures.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Accounting {
    /// Changed only by this module's methods (the rules of exact accounting); everyone
    /// else reads it through [`Accounting::processes`].
    processes: BTreeMap<ProcKey, ProcState>,
    pub devices: BTreeMap<Chip, DevState>,
    /// The host's cards as last sampled (what placements are made against).
    pub cards: Vec<Card>,
    /// Placements made or changed since [`Self::take_placed`].
    #[serde(skip)]
    placed: Vec<Placed>,
    /// The chips of the events being applied, and their figures when they are worked
    /// on outside their rows ([`apply`]): kept to be reused, empty between calls.
    #[serde(skip)]
    pass_chips: Vec<Chip>,
    #[serde(skip)]
    pass_figures: Vec<DevState>,
    pub events_applied: u64,
    /// Lost events of processes already released.
    pub released_lost: u64,
    pub unknown_frees: u64,
    pub invalid_events: u64,
}

impl Accounting {
    /// Every process known, by key.
    pub fn processes(&self) -> &BTreeMap<ProcKey, ProcState> {
        &self.processes
    }

    /// What a producer says it could not deliver (`dropped`, its segment's count):
    /// whether that changed what process `key` shows. None: no such process.
    pub fn set_producer_dropped(&mut self, key: ProcKey, dropped: u64) -> Option<bool> {
        let p = self.processes.get_mut(&key)?;
        let changed = p.producer_dropped != dropped;
        p.producer_dropped = dropped;
        Some(changed)
    }

    /// Orders `pending` (process `key`'s events read from its lanes, sorted by
    /// sequence number) against the sequence it expects ([`crate::merge::merge`]), and
    /// takes what the merge decided: the next sequence number, the numbers skipped
    /// (counted lost) or arriving late (taken back), each lane's position after the
    /// events now ready. None: no such process.
    pub fn order(
        &mut self,
        key: ProcKey,
        pending: &[crate::merge::Pending],
        gaps: crate::merge::Gaps,
    ) -> Option<crate::merge::Merged> {
        let p = self.processes.get_mut(&key)?;
        let m = crate::merge::merge(pending, p.next_seq, gaps);
        p.next_seq = m.next_seq;
        p.gap_lost = p.gap_lost.saturating_add(m.skipped).saturating_sub(m.late);
        for e in &pending[..m.ready] {
            p.lane_applied[e.lane as usize] = e.pos.wrapping_add(1);
        }
        Some(m)
    }

    /// `n` more of process `key`'s events that will never be applied (its segment was
    /// found broken, say).
    pub fn count_lost(&mut self, key: ProcKey, n: u64) {
        if let Some(p) = self.processes.get_mut(&key) {
            p.gap_lost = p.gap_lost.saturating_add(n);
        }
    }

    /// Process `key`'s name, set to `comm` where none was known (a process recovered
    /// from the journal, which keeps no names) or where `always`. Empty: no such process.
    pub fn name(&mut self, key: ProcKey, comm: &str, always: bool) -> String {
        match self.processes.get_mut(&key) {
            Some(p) => {
                if always || p.comm.is_empty() {
                    p.comm = comm.to_string();
                }
                p.comm.clone()
            }
            None => String::new(),
        }
    }

    /// Every process of `pid` has its peaks start again from its current figures;
    /// whether there was one.
    pub fn reset_peaks(&mut self, pid: u32) -> bool {
        let mut found = false;
        for p in self.processes.values_mut().filter(|p| p.pid == pid) {
            for pd in p.devices.values_mut() {
                pd.peak = pd.used;
            }
            found = true;
        }
        found
    }

    /// Process `key`, registered if it is new (its user, name and first-seen time); a
    /// process already known whose user was not (one recovered from journal records
    /// alone) takes `uid`. Every source of processes (segments, the compatibility
    /// socket, journal replay, a recording's replay) registers them here.
    pub fn register(
        &mut self,
        key: ProcKey,
        uid: u32,
        comm: &str,
        now_unix_ns: u64,
    ) -> &mut ProcState {
        let p = self
            .processes
            .entry(key)
            .or_insert_with(|| ProcState::new(key.0, key.1, uid, comm.to_string(), now_unix_ns));
        if p.uid == UID_UNKNOWN {
            p.uid = uid;
        }
        p
    }

    /// The invariant of exactness: every device's figure of every category is the sum
    /// over the processes on it. `Err` names the first device and category that is not
    /// (for the property tests and fuzz targets).
    pub fn check_device_sums(&self) -> Result<(), String> {
        for (chip, dev) in &self.devices {
            for c in 0..NUM_CATS {
                let sum: u64 = self
                    .processes
                    .values()
                    .flat_map(|p| {
                        p.devices
                            .iter()
                            .filter(|(&l, _)| p.chip_of(l).map(|x| x.0) == Some(*chip))
                    })
                    .map(|(_, pd)| pd.used[c])
                    .sum();
                if dev.figures[c].used != sum {
                    return Err(format!(
                        "chip {chip:?} category {c}: {} used, processes sum to {sum}",
                        dev.figures[c].used
                    ));
                }
            }
        }
        Ok(())
    }

    /// Recounts what is kept rather than stored in a snapshot (each process's live
    /// buffers); called after one is read.
    pub fn recount(&mut self) {
        for p in self.processes.values_mut() {
            p.live = p.devices.values().map(|d| d.buffers.len() as u64).sum();
        }
    }

    /// Records a device description process `key` gave of its device `device`, on
    /// the chip that device is, if it is plausible (it was read from shared memory: an
    /// absurd one would mislead every reader of that chip). Returns whether it was taken.
    pub fn set_device_info(&mut self, key: ProcKey, device: i32, info: DeviceInfo) -> bool {
        const TIB: u64 = 1 << 40;
        let plausible = info.arch <= 4
            && info.is_remote <= 1
            && info.num_tensix_cores <= 4096
            && info.num_dram_channels <= 64
            && info.total_dram_bytes <= TIB
            && info.total_l1_bytes <= TIB
            && info.l1_size_per_core <= TIB
            && info.dram_size_per_channel <= TIB
            && info.l1_small_size <= TIB
            && info.trace_region_size <= TIB;
        let Some(p) = self.processes.get_mut(&key) else {
            return false;
        };
        if !plausible || !(0..MAX_DEVICES as i32).contains(&device) {
            self.invalid_events += 1;
            p.invalid_events += 1;
            return false;
        }
        let chip = chip_of(&self.cards, &mut self.placed, key, &mut p.placement, device);
        dev_entry(&mut self.devices, &self.cards, chip).info = Some(info);
        true
    }

    /// Removes a process and everything it still holds from every figure. Returns the
    /// released process (for the leak report).
    pub fn release(&mut self, key: ProcKey) -> Option<ProcState> {
        let p = self.processes.remove(&key)?;
        for (&d, pd) in &p.devices {
            let Some((chip, _)) = p.chip_of(d) else {
                continue;
            };
            if let Some(dev) = self.devices.get_mut(&chip) {
                for cat in 0..NUM_CATS {
                    let f = &mut dev.figures[cat];
                    f.used = f.used.saturating_sub(pd.used[cat]);
                    f.count = f.count.saturating_sub(pd.count[cat]);
                }
            }
        }
        // Chips only this process could name end with it; those it named by id, when
        // nobody else is on them and they hold nothing.
        self.devices.retain(|c, _| {
            !matches!(c, Chip::Unplaced { pid, start_time, .. } if (*pid, *start_time) == key)
        });
        let named: Vec<Chip> = p.placement.chips.values().map(|(c, _)| *c).collect();
        self.prune(&named);
        self.released_lost = self.released_lost.saturating_add(p.events_lost());
        Some(p)
    }

    pub fn events_lost(&self) -> u64 {
        self.processes
            .values()
            .fold(self.released_lost, |a, p| a.saturating_add(p.events_lost()))
    }
}

/// One line on what a process held when it ended, or `None` if it held nothing.
pub fn leak_summary(p: &ProcState) -> Option<String> {
    use crate::sys::human_bytes;
    let mut used = [0u64; NUM_CATS];
    let mut bufs = 0u64;
    let mut kernels = 0u64;
    let mut cbs = 0u64;
    for pd in p.devices.values() {
        for c in 0..NUM_CATS {
            used[c] += pd.used[c];
        }
        bufs += pd.buffers.len() as u64;
        kernels += pd.kernels.values().map(|v| v.len() as u64).sum::<u64>();
        cbs += pd.cbs.values().map(|v| v.len() as u64).sum::<u64>();
    }
    if bufs == 0 && kernels == 0 && cbs == 0 {
        return None;
    }
    let mut parts = Vec::new();
    for cat in [CAT_DRAM, CAT_L1, CAT_L1_SMALL, CAT_TRACE, CAT_SYSTEM_MEMORY] {
        let name = CAT_DISPLAY[cat];
        if used[cat] > 0 {
            parts.push(format!("{name} {}", human_bytes(used[cat])));
        }
    }
    if cbs > 0 {
        parts.push(format!(
            "{cbs} CB{} ({})",
            if cbs == 1 { "" } else { "s" },
            human_bytes(used[CAT_CB])
        ));
    }
    if kernels > 0 {
        parts.push(format!(
            "{kernels} kernel{} ({})",
            if kernels == 1 { "" } else { "s" },
            human_bytes(used[CAT_KERNEL])
        ));
    }
    Some(format!(
        "pid {} ({}) exited holding {bufs} buffer{}: {}",
        p.pid,
        p.comm,
        if bufs == 1 { "" } else { "s" },
        parts.join(", ")
    ))
}

/// Live buffers one process may have tracked (about 55 bytes each in the aggregator);
/// allocations beyond are counted lost for that process.
pub const MAX_BUFFERS_PER_PROCESS: usize = 1_000_000;

mod apply;
pub mod buffer_table;
mod chip_rows;
pub(crate) mod kinds;
pub mod maps;
pub mod placement;
pub use buffer_table::BufferTable;
use chip_rows::{chip_of, dev_entry};
pub use kinds::{cat_of_buffer, cat_of_kernel};

#[cfg(test)]
mod tests;
