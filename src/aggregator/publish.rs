//! Publishing: the counters page built from the accounting and the latest telemetry,
//! its history ring, and the page itself kept in place.

use super::startup::map_err;
use super::state_dir::StateDir;
use super::{Aggregator, StartError};
use crate::accounting::Accounting;
use crate::counters_page::*;
use crate::shm_layout::{COUNTERS_FILE_NAME, LANE_STRIDE};
use crate::sys;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

const PUBLISH_MIN: Duration = Duration::from_millis(1);
const PUBLISH_MAX: Duration = Duration::from_millis(100);

/// The counters page as this aggregator writes it.
pub(super) struct Page {
    pub(super) map: memmap2::MmapRaw,
    pub(super) view: PageView,
    /// The page file's inode (to notice that someone replaced it).
    pub(super) ino: u64,
    /// Something changed since the last publication.
    pub(super) dirty: bool,
    last_publish: Instant,
    /// The device rows last published (the history samples them).
    last_devices: Vec<DeviceRecord>,
    space_warned: bool,
}

impl Page {
    /// Makes a fresh counters page in the private directory and publishes it in the
    /// tracking directory `dir` (a rename: whatever stands at `counters` is replaced,
    /// never followed, and nothing is created or removed under a name another user could
    /// have prepared).
    pub(super) fn create(
        state: &StateDir,
        dir: &Path,
        pid: u32,
        started_unix_ns: u64,
    ) -> Result<Self, StartError> {
        use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
        const TMP: &str = "counters.tmp";
        let tmp = state.path().join(TMP);
        // Ours, left by a crash: nobody else can write in the private directory.
        let _ = std::fs::remove_file(&tmp);
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
            .map_err(map_err("cannot create", &tmp))?;
        f.set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(map_err("cannot chmod", &tmp))?;
        f.set_len(PAGE_SIZE as u64)
            .map_err(map_err("cannot size", &tmp))?;
        // SAFETY: fd is valid; reserve the pages so that writing them cannot fault.
        if unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, PAGE_SIZE as libc::off_t) } != 0 {
            let e = std::io::Error::last_os_error();
            let _ = std::fs::remove_file(&tmp);
            return Err(StartError(format!(
                "no space for the counters page in {} ({e}); free some space in that file system",
                dir.display()
            )));
        }
        let map = memmap2::MmapOptions::new()
            .len(PAGE_SIZE)
            .map_raw(&f)
            .map_err(map_err("cannot map", &tmp))?;
        // SAFETY: the mapping is PAGE_SIZE bytes and lives as long as the returned MmapRaw,
        // which the aggregator keeps beside the view.
        let view = unsafe { PageView::new(map.as_mut_ptr()) };
        view.init(pid, started_unix_ns);
        view.publish_main(
            &AggregatorStatus {
                pid,
                start_unix_ns: started_unix_ns,
                ..Default::default()
            },
            &[],
            &[],
        );
        let ino = f.metadata().map(|m| m.ino()).unwrap_or(0);
        state
            .publish(TMP, COUNTERS_FILE_NAME)
            .map_err(map_err("cannot publish", &dir.join(COUNTERS_FILE_NAME)))?;
        Ok(Self {
            map,
            view,
            ino,
            dirty: true,
            last_publish: Instant::now() - PUBLISH_MAX,
            last_devices: Vec::new(),
            space_warned: false,
        })
    }
}

impl Aggregator {
    /// Publishes when something changed (at most every `PUBLISH_MIN`) and at least every
    /// `PUBLISH_MAX`, so the heartbeat in the page stays fresh.
    pub(super) fn publish_if_due(&mut self, now: Instant) {
        let since = now.duration_since(self.page.last_publish);
        if (self.page.dirty && since >= PUBLISH_MIN) || since >= PUBLISH_MAX {
            self.publish();
        }
    }

    /// Builds and publishes the counters page.
    pub(super) fn publish(&mut self) {
        self.page.last_publish = Instant::now();
        self.page.dirty = false;
        let mut st = self.status;
        st.heartbeat_unix_ns = sys::unix_ns();
        st.events_applied = self.acc.events_applied;
        st.events_lost = self.acc.events_lost();
        st.unknown_frees = self.acc.unknown_frees;
        st.invalid_events = self.acc.invalid_events;
        st.processes_tracked = self.acc.processes().len() as u32;
        st.process_overflow = self
            .acc
            .processes()
            .len()
            .saturating_sub(MAX_PAGE_PROCESSES) as u32;
        self.status = st;
        let sample = self.telemetry.latest();
        self.note_device_changes(&sample);
        self.place_on_cards(&sample);
        let mut devices = self.device_rows(&sample);
        let mut processes = process_records(&self.acc);
        for r in processes.iter_mut() {
            let key = (r.pid, r.start_time);
            if self.segmentless.contains_key(&key) && !self.segments.reports_for(key) {
                r.flags |= PROC_SOURCE_SOCKET;
            }
        }
        self.add_metal(&mut devices, &mut processes);
        add_untracked(&mut processes, &sample, &self.cfg.sysfs_root, self.me.pid);
        self.page.view.publish_main(&st, &devices, &processes);
        self.page.last_devices = devices;
    }

    /// Warns (once, until it recovers) when the tracking directory's file system is
    /// nearly full: new processes would get no lane and drop their events.
    pub(super) fn check_space(&mut self) {
        let Ok(c) = sys::cstring(&self.cfg.dir) else {
            return;
        };
        // SAFETY: statvfs is plain data; all-zero bytes are a valid value.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: c is a NUL-terminated path and st is writable for the call.
        if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
            return;
        }
        let free = st.f_bavail as u64 * st.f_frsize as u64;
        let low = free < 2 * LANE_STRIDE as u64;
        if low && !self.page.space_warned {
            self.log.warn(format!(
                "the file system of {} has only {} free: new processes cannot get reporting lanes and will drop (and count) their events; free some space",
                self.cfg.dir.display(),
                sys::human_bytes(free)
            ));
        }
        self.page.space_warned = low;
    }

    /// Recreates the counters page if someone removed or replaced it (readers would
    /// otherwise see no aggregator while this one runs).
    pub(super) fn check_page(&mut self) {
        use std::os::unix::fs::MetadataExt;
        let path = self.cfg.dir.join(COUNTERS_FILE_NAME);
        let current = std::fs::symlink_metadata(&path).map(|m| m.ino()).ok();
        if current == Some(self.page.ino) {
            return;
        }
        // Our old mapping still holds the history, whatever happened to its file.
        let history = self.page.view.history(HISTORY_LEN).unwrap_or_default();
        let me = &self.me;
        match Page::create(&me.state_dir, &self.cfg.dir, me.pid, me.started_unix_ns) {
            Ok(page) => {
                self.page = page;
                self.log.warn(format!(
                    "the counters page {} was removed or replaced; recreated it",
                    path.display()
                ));
                self.publish();
                for s in &history {
                    self.page.view.push_history(s);
                }
            }
            Err(e) => self
                .log
                .error(format!("cannot recreate the counters page: {e}")),
        }
    }

    /// Adds a sample to the history ring: each device's memory by type, temperature
    /// and power.
    pub(super) fn push_history(&mut self) {
        let mut s: HistorySample = bytemuck::Zeroable::zeroed();
        s.unix_secs = sys::unix_ns() / 1_000_000_000;
        s.temp_mc = [i32::MIN; MAX_PAGE_DEVICES];
        s.power_mw = [u32::MAX; MAX_PAGE_DEVICES];
        for d in &self.page.last_devices {
            let i = d.id as usize;
            if i < MAX_PAGE_DEVICES {
                if d.telemetry.valid & TEL_TEMP != 0 {
                    s.temp_mc[i] = d
                        .telemetry
                        .asic_temp_mc
                        .clamp(i32::MIN as i64 + 1, i32::MAX as i64)
                        as i32;
                }
                if d.telemetry.valid & TEL_POWER != 0 {
                    s.power_mw[i] = (d.telemetry.power_uw / 1000).min(u32::MAX as u64 - 1) as u32;
                }
            }
        }
        for dev in self.acc.devices.values() {
            if let Some(u) = s.used.get_mut(dev.row as usize) {
                *u = DEVICE_CATS.map(|c| dev.figures[c].used);
            }
        }
        self.page.view.push_history(&s);
    }
}

/// Processes that hold a device (the driver's pid lists) but report nothing.
fn add_untracked(
    procs: &mut Vec<ProcessRecord>,
    sample: &crate::devices::Sample,
    root: &Path,
    me: u32,
) {
    let mut extra: std::collections::BTreeMap<u32, Vec<i32>> = Default::default();
    for (d, _, holders) in &sample.devices {
        for &pid in holders {
            if pid == me || procs.iter().any(|p| p.pid == pid) {
                continue;
            }
            extra.entry(pid).or_default().push(d.id as i32);
        }
    }
    for (pid, devs) in extra {
        let comm = sys::proc_info(&root.join("proc"), pid)
            .map(|i| i.comm)
            .unwrap_or_else(|| "?".into());
        let mut r = ProcessRecord {
            pid,
            flags: PROC_ALIVE | PROC_UNTRACKED,
            comm: put_str(&comm),
            ..Default::default()
        };
        for (i, d) in devs.iter().take(MAX_PROCESS_DEVICES).enumerate() {
            // Seen in the driver's list of the card: the card itself, no logical id.
            r.devices[i].device = -1;
            r.devices[i].chip = *d as u16;
            r.num_devices = i as u32 + 1;
        }
        procs.push(r);
    }
    procs.sort_by_key(|p| p.pid);
}

pub(super) fn process_records(acc: &Accounting) -> Vec<ProcessRecord> {
    let mut v: Vec<ProcessRecord> = acc
        .processes()
        .values()
        .map(|p| {
            let mut r = ProcessRecord {
                pid: p.pid,
                flags: PROC_ALIVE | if p.exact() { PROC_EXACT } else { 0 },
                uid: p.uid,
                start_time: p.start_time,
                comm: put_str(&p.comm),
                first_seen_unix_ns: p.first_seen_unix_ns,
                events_applied: p.events_applied,
                events_lost: p.events_lost(),
                buffers: p.live_buffers(),
                ..Default::default()
            };
            for (i, (&d, pd)) in p.devices.iter().enumerate() {
                if i >= MAX_PROCESS_DEVICES {
                    r.flags |= PROC_DEVICE_OVERFLOW;
                    break;
                }
                let (chip, source) =
                    p.chip_of(d)
                        .map_or((u16::MAX, PLACED_AS_REPORTED), |(c, s)| {
                            let row = acc.row_of(&c).unwrap_or(u32::MAX);
                            (row.min(u16::MAX as u32) as u16, s as u8)
                        });
                r.devices[i] = ProcessDevice {
                    device: d,
                    chip,
                    placement: source,
                    _pad: 0,
                    used: pd.used,
                    peak: pd.peak,
                };
                r.num_devices = i as u32 + 1;
            }
            r
        })
        .collect();
    v.sort_by_key(|r| r.pid);
    v
}
