//! What tt-smi shows, in one data type: built from the counters page (or from nothing
//! when no aggregator runs), drawn by the snapshot, JSON and watch views, which never
//! read files themselves.

use crate::counters_page::*;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Aggregator status as shown.
#[derive(Debug, Clone, PartialEq)]
pub struct AggInfo {
    pub pid: u32,
    pub uptime_s: f64,
    pub events_applied: u64,
    pub events_lost: u64,
    pub unknown_frees: u64,
    pub invalid_events: u64,
    pub processes_tracked: u32,
    pub process_overflow: u32,
    pub segments_rejected: u64,
    /// Processes released still holding device memory, and what they held, since the
    /// aggregator started.
    pub exits_holding_memory: u64,
    pub leaked_bytes: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeviceView {
    pub id: u32,
    /// A remote chip only one process could name: that process.
    pub owner_pid: Option<u32>,
    /// A remote chip: the row of the local chip it is reached through, if known.
    pub via: Option<u32>,
    pub arch: String,
    pub board: String,
    pub remote: bool,
    pub dram_total: Option<u64>,
    pub l1_total: Option<u64>,
    pub figures: [Figure; NUM_CATS],
    pub telemetry: Telemetry,
    /// Whether memory figures come from a running aggregator.
    pub memory_known: bool,
    /// Seen in sysfs earlier, missing now.
    pub gone: bool,
    pub serial: String,
    pub pci_bdf: String,
    /// `tt_asic_id` as the driver prints it (16 hex digits); empty if not reported.
    pub asic_id: String,
    pub fw_bundle: String,
    /// High-water mark of everything L1-resident together (0 without an aggregator).
    pub l1_resident_peak: u64,
}

impl DeviceView {
    /// Everything resident in L1: L1 buffers, L1_SMALL, circular buffers, kernels.
    pub fn l1_resident(&self) -> u64 {
        L1_RESIDENT_CATS.iter().map(|&c| self.figures[c].used).sum()
    }

    /// A device row of the counters page, as the views show it.
    fn of_record(d: &DeviceRecord) -> Self {
        DeviceView {
            id: d.id,
            owner_pid: (d.owner_pid != 0).then_some(d.owner_pid),
            via: u32::try_from(d.via).ok(),
            arch: get_str(&d.arch),
            board: get_str(&d.board),
            remote: d.flags & DEV_REMOTE != 0,
            dram_total: (d.dram_total > 0).then_some(d.dram_total),
            l1_total: (d.l1_total > 0).then_some(d.l1_total),
            figures: d.figures,
            telemetry: d.telemetry,
            memory_known: true,
            gone: d.flags & DEV_GONE != 0,
            serial: get_str(&d.serial),
            pci_bdf: get_str(&d.pci_bdf),
            asic_id: if d.asic_id == 0 {
                String::new()
            } else {
                format!("{:016X}", d.asic_id)
            },
            fw_bundle: get_str(&d.fw_bundle),
            l1_resident_peak: d.l1_resident_peak,
        }
    }

    /// For a remote chip: what it is reached through and whose it is, e.g.
    /// `, via device 0, of pid 4242 only`; empty for any other.
    pub fn remote_note(&self) -> String {
        let mut n = String::new();
        if let Some(v) = self.via {
            n += &format!(", via device {v}");
        }
        if let Some(p) = self.owner_pid {
            n += &format!(", of pid {p} only");
        }
        n
    }

    pub fn display_name(&self) -> String {
        let arch = match crate::arch::by_name(&self.arch) {
            Some(a) => a.display,
            None if self.arch.is_empty() || self.arch == "unknown" => "Unknown",
            None => self.arch.as_str(),
        };
        let name = if self.board.is_empty() {
            arch.to_string()
        } else {
            format!("{arch} {}", self.board)
        };
        if self.gone {
            format!("{name} (gone)")
        } else {
            name
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProcDevView {
    /// The chip's row (`DeviceView::id`).
    pub id: i32,
    /// The process's own id of the device (-1 for a card it holds but reports nothing
    /// of).
    pub logical_id: i32,
    /// How it was placed on the chip (`counters_page::PLACEMENT_NAMES`).
    pub placement: &'static str,
    pub used: [u64; NUM_CATS],
    pub peak: [u64; NUM_CATS],
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProcessView {
    pub pid: u32,
    pub name: String,
    pub exact: bool,
    pub events_lost: u64,
    pub buffers: u64,
    pub untracked: bool,
    /// Uses more devices than a page record holds (only the first ones are listed).
    pub devices_truncated: bool,
    pub devices: Vec<ProcDevView>,
    /// Where its figures come from: `lanes`, `socket`, `tt-metal` (TT-Metal's own
    /// region: counters only), `none` (untracked).
    pub source: &'static str,
    /// A slot of TT-Metal's region whose process is gone: bytes the region still
    /// counts, in no device figure.
    pub left_behind: bool,
    /// What TT-Metal's region says of it ([`DEVICE_CATS`] order): beside the lanes'
    /// figures of a process that reports both ways, or a left-behind slot's bytes.
    pub region_used: Option<[u64; HIST_FIELDS]>,
    /// The region file of a left-behind slot.
    pub region_file: Option<String>,
}

impl ProcessView {
    /// How its devices were placed on chips, as a whole: "reported" when it said for
    /// each, "inferred" when none was reported, "mixed" otherwise; a single other
    /// placement by its name (`as_reported` on a host with no cards); "none" for no
    /// device.
    pub fn device_mapping(&self) -> &'static str {
        let all = |n: &str| self.devices.iter().all(|d| d.placement == n);
        let any = |n: &str| self.devices.iter().any(|d| d.placement == n);
        match self.devices.first() {
            None => "none",
            Some(d) if all(d.placement) => d.placement,
            _ if !any(PLACEMENT_NAMES[PLACED_REPORTED as usize]) => "inferred",
            _ => "mixed",
        }
    }

    /// Device memory held (DRAM, L1-resident, TRACE), for sorting.
    pub fn device_bytes(&self) -> u64 {
        self.devices.iter().map(|d| device_bytes(&d.used)).sum()
    }
}

#[derive(Debug, Clone)]
pub struct Model {
    pub time: SystemTime,
    pub dir: PathBuf,
    pub aggregator: Option<AggInfo>,
    /// Why memory is N/A, when it is.
    pub not_running: Option<String>,
    pub devices: Vec<DeviceView>,
    pub processes: Vec<ProcessView>,
    pub history: Vec<HistorySample>,
    /// The cards come from a simulated host's tree (`tt-track demo`), not a real one.
    pub simulated: bool,
}

/// Why tt-smi cannot read the page at all (as opposed to "no aggregator"): its kind,
/// for callers that act on it (the Python package's exceptions), and what to say.
#[derive(Debug)]
pub struct FatalPage(pub String, pub FatalKind);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FatalKind {
    /// A page of another layout version.
    Version,
    /// A page of a user neither root nor the reader.
    Untrusted,
    /// Anything else (malformed, unreadable, busy).
    Other,
}

impl Model {
    /// Reads the counters page of `dir`. A missing or stale page gives a model with
    /// memory N/A and a reason; a page of another layout version is fatal.
    /// (tt-smi never lists itself.)
    pub fn load(dir: &Path, history_samples: usize, sysfs_root: &Path) -> Result<Model, FatalPage> {
        let mut m = Self::load_including_self(dir, history_samples, sysfs_root)?;
        let me = std::process::id();
        m.processes.retain(|p| p.pid != me);
        Ok(m)
    }

    /// As [`Self::load`], the calling process listed too (a process reading its own
    /// figures: the Python package).
    pub fn load_including_self(
        dir: &Path,
        history_samples: usize,
        sysfs_root: &Path,
    ) -> Result<Model, FatalPage> {
        let mut m = Self::load_page(dir, history_samples, sysfs_root)?;
        m.simulated = crate::devices::simulated::is_simulated(sysfs_root);
        Ok(m)
    }

    fn load_page(
        dir: &Path,
        history_samples: usize,
        sysfs_root: &Path,
    ) -> Result<Model, FatalPage> {
        let now = SystemTime::now();
        let not_running = |why: String| Self::from_sysfs(dir, sysfs_root, why, now);
        let reader = match CountersReader::open(dir) {
            Ok(r) => r,
            Err(PageError::Missing) => {
                return Ok(not_running(format!(
                    "tt-aggregator is not running (no counters page in {}); start it with: tt-aggregator",
                    dir.display()
                )))
            }
            Err(e @ PageError::Version { .. }) => {
                return Err(FatalPage(e.to_string(), FatalKind::Version))
            }
            Err(e @ PageError::Untrusted { .. }) => {
                return Err(FatalPage(
                    format!("{}: {e}", dir.display()),
                    FatalKind::Untrusted,
                ))
            }
            Err(e) => {
                return Err(FatalPage(
                    format!("cannot read the counters page in {}: {e}", dir.display()),
                    FatalKind::Other,
                ))
            }
        };
        if !reader.aggregator_alive() {
            return Ok(not_running(format!(
                "tt-aggregator is not running (its counters page in {} is stale); start it with: tt-aggregator",
                dir.display()
            )));
        }
        let Some(snap) = reader.view().snapshot() else {
            return Err(FatalPage(
                "the counters page stayed busy; try again".into(),
                FatalKind::Other,
            ));
        };
        let history = if history_samples > 0 {
            reader.view().history(history_samples).unwrap_or_default()
        } else {
            Vec::new()
        };
        Ok(Self::from_snapshot(dir, &snap, history, now))
    }

    /// Without an aggregator: devices and telemetry read from sysfs directly, memory
    /// N/A, the processes holding devices listed as untracked.
    pub fn from_sysfs(dir: &Path, root: &Path, why: String, now: SystemTime) -> Model {
        let sample = crate::devices::sample(root, &Default::default(), 0);
        let me = std::process::id();
        let mut processes: Vec<ProcessView> = Vec::new();
        for (d, _, holders) in &sample.devices {
            for &pid in holders {
                if pid == me {
                    continue;
                }
                let dv = ProcDevView {
                    id: d.id as i32,
                    logical_id: -1,
                    placement: PLACEMENT_NAMES[PLACED_HOLDER as usize],
                    used: [0; NUM_CATS],
                    peak: [0; NUM_CATS],
                };
                match processes.iter_mut().find(|p| p.pid == pid) {
                    Some(p) => p.devices.push(dv),
                    None => processes.push(ProcessView {
                        pid,
                        name: crate::sys::proc_info(&root.join("proc"), pid)
                            .map(|i| i.comm)
                            .unwrap_or_else(|| "?".into()),
                        exact: true,
                        events_lost: 0,
                        buffers: 0,
                        untracked: true,
                        devices_truncated: false,
                        devices: vec![dv],
                        source: "none",
                        left_behind: false,
                        region_used: None,
                        region_file: None,
                    }),
                }
            }
        }
        let mut devices: Vec<DeviceView> = sample
            .devices
            .iter()
            .map(|(d, t, _)| {
                let (dram, l1) = crate::devices::builtin_totals(&d.arch, &d.board);
                DeviceView {
                    id: d.id,
                    owner_pid: None,
                    via: None,
                    arch: d.arch.clone(),
                    board: d.board.clone(),
                    remote: false,
                    dram_total: dram,
                    l1_total: l1,
                    figures: Default::default(),
                    telemetry: *t,
                    memory_known: false,
                    gone: false,
                    serial: d.serial.clone(),
                    pci_bdf: d.pci_bdf.clone(),
                    asic_id: d.asic_id.clone(),
                    fw_bundle: d.fw_bundle.clone(),
                    l1_resident_peak: 0,
                }
            })
            .collect();
        let mut why = why;
        let metal_dir = crate::metal_shm::dir_from_env();
        let regions =
            crate::metal_shm::reader::Reader::new(&metal_dir, Path::new("/proc"), false).look();
        why += &add_regions(&mut devices, &mut processes, &regions);
        processes.sort_by_key(|p| (p.pid, p.left_behind));
        Model {
            simulated: false,
            time: now,
            dir: dir.to_path_buf(),
            aggregator: None,
            not_running: Some(why),
            devices,
            processes,
            history: Vec::new(),
        }
    }

    pub fn from_snapshot(
        dir: &Path,
        snap: &Snapshot,
        history: Vec<HistorySample>,
        now: SystemTime,
    ) -> Model {
        let st = &snap.status;
        let now_ns = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let agg = AggInfo {
            pid: st.pid,
            uptime_s: now_ns.saturating_sub(st.start_unix_ns) as f64 / 1e9,
            events_applied: st.events_applied,
            events_lost: st.events_lost,
            unknown_frees: st.unknown_frees,
            invalid_events: st.invalid_events,
            processes_tracked: st.processes_tracked,
            process_overflow: st.process_overflow,
            segments_rejected: st.segments_rejected,
            exits_holding_memory: st.exits_holding_memory,
            leaked_bytes: st.leaked_bytes,
        };
        let devices = snap.devices.iter().map(DeviceView::of_record).collect();
        let processes = snap
            .processes
            .iter()
            .map(|p| ProcessView {
                pid: p.pid,
                name: get_str(&p.comm),
                exact: p.flags & PROC_EXACT != 0,
                events_lost: p.events_lost,
                buffers: p.buffers,
                untracked: p.flags & PROC_UNTRACKED != 0,
                devices_truncated: p.flags & PROC_DEVICE_OVERFLOW != 0,
                source: source_name(p.flags),
                left_behind: p.flags & PROC_LEFT_BEHIND != 0,
                region_used: (p.flags & (PROC_ALSO_IN_REGION | PROC_LEFT_BEHIND) != 0)
                    .then_some(p.region_used),
                region_file: (p.flags & PROC_LEFT_BEHIND != 0)
                    .then(|| crate::metal_shm::name_of_chip(p.region_chip)),
                devices: p.devices[..(p.num_devices as usize).min(MAX_PROCESS_DEVICES)]
                    .iter()
                    .map(|d| ProcDevView {
                        id: if d.chip == u16::MAX {
                            d.device
                        } else {
                            d.chip as i32
                        },
                        logical_id: d.device,
                        placement: PLACEMENT_NAMES
                            .get(d.placement as usize)
                            .copied()
                            .unwrap_or("?"),
                        used: d.used,
                        peak: d.peak,
                    })
                    .collect(),
            })
            .collect();
        Model {
            simulated: false,
            time: now,
            dir: dir.to_path_buf(),
            aggregator: Some(agg),
            not_running: None,
            devices,
            processes,
            history,
        }
    }
}

/// Without an aggregator: what TT-Metal's own regions say, read by tt-smi itself (those
/// it may read): live slots as processes (`tt-metal`) with their bytes on their chip's
/// row, slots of gone processes as left behind. Returns a sentence for the message
/// about what was and was not seen.
fn add_regions(
    devices: &mut Vec<DeviceView>,
    processes: &mut Vec<ProcessView>,
    s: &crate::metal_shm::reader::Summary,
) -> String {
    use crate::metal_shm::reader::Refusal;
    let row_of = |chip: u64, devices: &mut Vec<DeviceView>| -> usize {
        let hex = format!("{chip:016X}");
        if let Some(i) = devices
            .iter()
            .position(|d| d.asic_id.eq_ignore_ascii_case(&hex))
        {
            return i;
        }
        let id = (0..)
            .find(|r| devices.iter().all(|d| d.id != *r))
            .unwrap_or(u32::MAX);
        devices.push(DeviceView {
            id,
            owner_pid: None,
            via: None,
            arch: String::new(),
            board: String::new(),
            remote: false,
            dram_total: None,
            l1_total: None,
            figures: Default::default(),
            telemetry: Default::default(),
            memory_known: true,
            gone: false,
            serial: String::new(),
            pci_bdf: String::new(),
            asic_id: hex,
            fw_bundle: String::new(),
            l1_resident_peak: 0,
        });
        devices.len() - 1
    };
    for l in &s.live {
        let i = row_of(l.chip, devices);
        let d = &mut devices[i];
        d.memory_known = true;
        for c in 0..NUM_CATS {
            d.figures[c].used = d.figures[c].used.saturating_add(l.used[c]);
            d.figures[c].peak = d.figures[c].peak.max(d.figures[c].used);
        }
        let dv = ProcDevView {
            id: d.id as i32,
            logical_id: -1,
            placement: PLACEMENT_NAMES[PLACED_REGION as usize],
            used: l.used,
            peak: l.used,
        };
        // A holder of the card that reports through its region is no longer untracked.
        processes.retain(|p| !(p.pid == l.pid && p.untracked));
        match processes
            .iter_mut()
            .find(|p| p.pid == l.pid && p.source == "tt-metal" && !p.left_behind)
        {
            Some(p) => p.devices.push(dv),
            None => processes.push(ProcessView {
                pid: l.pid,
                name: l.comm.to_string(),
                exact: false,
                events_lost: 0,
                buffers: 0,
                untracked: false,
                devices_truncated: false,
                devices: vec![dv],
                source: "tt-metal",
                left_behind: false,
                region_used: None,
                region_file: None,
            }),
        }
    }
    for l in &s.left {
        let i = row_of(l.chip, devices);
        let id = devices[i].id as i32;
        processes.push(ProcessView {
            pid: l.pid,
            name: l.name.clone(),
            exact: false,
            events_lost: 0,
            buffers: 0,
            untracked: false,
            devices_truncated: false,
            devices: vec![ProcDevView {
                id,
                logical_id: -1,
                placement: PLACEMENT_NAMES[PLACED_REGION as usize],
                used: l.used,
                peak: l.used,
            }],
            source: "tt-metal",
            left_behind: true,
            region_used: Some(DEVICE_CATS.map(|c| l.used[c])),
            region_file: Some(l.file.clone()),
        });
    }
    let unreadable = s
        .refused
        .iter()
        .filter(|(_, r)| matches!(r, Refusal::NoPermission { .. }))
        .count();
    let mut said = String::new();
    if !s.regions.is_empty() {
        said += &format!(
            "; memory of {} process{} read from TT-Metal's own regions (counters only)",
            s.live.len(),
            if s.live.len() == 1 { "" } else { "es" }
        );
    }
    if unreadable > 0 {
        said += &format!(
            "; {unreadable} TT-Metal region{} of other users cannot be read by this user (mode 0600): run as root, or start tt-aggregator as a service",
            if unreadable == 1 { "" } else { "s" }
        );
    }
    said
}
