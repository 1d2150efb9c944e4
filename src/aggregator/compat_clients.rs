//! The compatibility socket as the aggregator's loop serves it: clients' events
//! applied (journaled like a lane's), queries and device-information requests
//! answered, and the original's dumps of remaining buffers and loaded kernels.

use super::compat_listener::Msg;
use super::journal::Record;
use super::{Aggregator, COMPAT_LANE};
use crate::compat::{AllocMessage, DEVICE_INFO_RESPONSE, QUERY, RESPONSE};
use crate::counters_page::*;
use crate::sys;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Receiver;
use std::time::Instant;

/// The compatibility socket's queue, when it is served.
#[derive(Default)]
pub(super) struct CompatClients {
    rx: Option<Receiver<Msg>>,
    path: Option<PathBuf>,
    /// A dump waiting for its share of time (see `Aggregator::request_took`).
    held: Option<Msg>,
}

impl CompatClients {
    /// Removes the socket at shutdown, if it is still ours.
    pub(super) fn remove_socket(&self) {
        if let Some(p) = &self.path {
            if let (Some(d), Some(n)) = (p.parent(), p.file_name()) {
                super::state_dir::remove_own_socket(d, &n.to_string_lossy());
            }
        }
    }
}

impl Aggregator {
    /// Serves the original protocol at `path` (see [`crate::compat`]).
    pub fn enable_compat(&mut self, path: &Path) -> std::io::Result<()> {
        let l = super::compat_listener::bind(path)?;
        let (tx, rx) = std::sync::mpsc::sync_channel(super::limits::COMPAT_QUEUE);
        let log = self.log.clone();
        super::compat_listener::serve(l, tx, self.cfg.proc_root.clone(), move |w| log.warn(w));
        self.compat.rx = Some(rx);
        self.compat.path = Some(path.to_path_buf());
        self.log.info(format!(
            "   compatibility socket: {} (the original AllocMessage protocol)",
            path.display()
        ));
        Ok(())
    }

    /// Takes up to `limits::COMPAT_PER_PASS` messages from the socket's queue; returns
    /// the number of events applied.
    pub(super) fn serve_compat(&mut self) -> usize {
        let Some(rx) = self.compat.rx.take() else {
            return 0;
        };
        let mut applied = 0;
        for _ in 0..super::limits::COMPAT_PER_PASS {
            let Some(m) = self.compat.held.take().or_else(|| rx.try_recv().ok()) else {
                break;
            };
            if matches!(m, Msg::Dump { .. }) && Instant::now() < self.requests.quiet_until {
                // A dump looks at every buffer: it waits for the requests' share of time.
                self.compat.held = Some(m);
                break;
            }
            applied += self.compat_message(m);
        }
        self.compat.rx = Some(rx);
        if applied > 0 {
            self.page.dirty = true;
        }
        applied
    }

    /// Handles one message; returns 1 if it was an event that was applied.
    fn compat_message(&mut self, m: Msg) -> usize {
        match m {
            Msg::Connected {
                pid,
                start_time,
                uid,
                comm,
                pidfd,
                visible,
            } => {
                let key = (pid, start_time);
                // Known from journal records alone, it takes the socket's credentials.
                self.acc.register(key, uid, &comm, sys::unix_ns());
                self.acc.set_visible(key, visible);
                self.consider_for_recordings(key);
                self.segmentless.insert(key, pidfd);
                self.log.info(format!(
                    "+ pid {pid} ({comm}) connected to the compatibility socket"
                ));
                self.page.dirty = true;
            }
            Msg::Event {
                pid,
                start_time,
                ev,
            } => {
                let key = (pid, start_time);
                if !self.acc.processes().contains_key(&key) {
                    return 0;
                }
                let (lane, pos) = (COMPAT_LANE, 0);
                self.journal.append(&Record::Event { key, lane, pos, ev });
                let now_s = (sys::unix_ns() / 1_000_000_000) as u32;
                let out = self.acc.apply(key, &ev, now_s);
                self.log_outcome(key, &ev, &out);
                self.record_events(key, &[&ev], false);
                self.keep_last_events(key, std::iter::once(&ev));
                return 1;
            }
            Msg::Query { msg, reply } => {
                let _ = reply.send(self.compat_answer(&msg).encode());
            }
            Msg::Dump { kernels, reply } => {
                let t = Instant::now();
                let text = self.dump_text(kernels);
                self.log.info(text.trim_end());
                let _ = reply.send(text);
                self.request_took(t.elapsed());
            }
            Msg::Disconnected { pid, bad_messages } => {
                let bad = if bad_messages > 0 {
                    format!(" ({bad_messages} malformed messages skipped)")
                } else {
                    String::new()
                };
                self.log.info(format!(
                    "- pid {pid} disconnected from the compatibility socket{bad}"
                ));
            }
        }
        0
    }

    /// The answer to a query (a device's figures) or a device-information request.
    fn compat_answer(&self, q: &AllocMessage) -> AllocMessage {
        let mut r = AllocMessage {
            device_id: q.device_id,
            ..Default::default()
        };
        let devices = self.device_rows(&self.telemetry.latest());
        if q.kind == QUERY {
            r.kind = RESPONSE;
            if let Some(d) = devices.iter().find(|d| d.id as i32 == q.device_id) {
                r.allocated = DEVICE_CATS.map(|c| d.figures[c].used);
            }
            return r;
        }
        r.kind = DEVICE_INFO_RESPONSE;
        let present: Vec<&DeviceRecord> =
            devices.iter().filter(|d| d.flags & DEV_GONE == 0).collect();
        if q.device_id == -1 {
            r.num_devices = present.len() as u32;
            return r;
        }
        if let Some(d) = present.iter().find(|d| d.id as i32 == q.device_id) {
            r.is_available = 1;
            r.arch_type = crate::arch::by_name(&get_str(&d.arch)).map_or(0, |a| a.number);
            r.total_dram_size = d.dram_total;
            r.total_l1_size = d.l1_total;
            r.num_dram_channels = d.info.num_dram_channels;
            r.dram_size_per_channel = d.info.dram_size_per_channel.min(u32::MAX as u64) as u32;
            r.l1_size_per_core = d.info.l1_size_per_core.min(u32::MAX as u64) as u32;
        }
        r
    }

    /// The original's "dump remaining buffers" (or kernels), as text.
    pub fn dump_text(&self, kernels: bool) -> String {
        if kernels {
            self.dump_kernels()
        } else {
            self.dump_buffers()
        }
    }

    /// Every loaded kernel, at most `control::DEFAULT_BUFFERS_ANSWER` of them.
    fn dump_kernels(&self) -> String {
        let cap = crate::control::DEFAULT_BUFFERS_ANSWER;
        let mut o = String::from("=== Loaded kernels ===\n");
        let now_s = sys::unix_ns() / 1_000_000_000;
        let acc = &self.acc;
        let kernels = acc.processes().values().flat_map(|p| {
            p.devices.iter().flat_map(move |(&d, pd)| {
                let d = acc.device_row(p, d);
                pd.kernels
                    .iter()
                    .flat_map(move |(&id, v)| v.iter().map(move |k| (p, d, id, *k)))
            })
        });
        for (n, (p, d, id, (size, kt, loaded_s))) in kernels.enumerate() {
            if n == cap {
                let _ = writeln!(o, "  ... (at most {cap} kernels are listed)");
                break;
            }
            let kt = crate::shm_layout::KernelType::from_u8(kt).map_or("?", |k| k.name());
            let _ = writeln!(
                o,
                "  device {d}: kernel {id:#x} {kt} {} (pid {} {}), loaded {} ago",
                sys::human_bytes(size),
                p.pid,
                p.comm,
                sys::human_age(now_s.saturating_sub(loaded_s as u64))
            );
        }
        o
    }

    /// Every live buffer, grouped by device and type: every one counted in its group's
    /// line, at most `control::DEFAULT_BUFFERS_ANSWER` listed (any client may ask, and it
    /// is logged too), with what was left out.
    fn dump_buffers(&self) -> String {
        type Listed = (u64, u64, u32, u32, String);
        let cap = crate::control::DEFAULT_BUFFERS_ANSWER;
        let mut groups: std::collections::BTreeMap<(i32, u8), (u64, u64, Vec<Listed>)> =
            Default::default();
        let (mut listed, mut all) = (0usize, 0u64);
        for p in self.acc.processes().values() {
            for (&d, pd) in &p.devices {
                let d = self.acc.device_row(p, d);
                for (&addr, b) in pd.buffers.iter() {
                    let g = groups.entry((d, b.btype())).or_default();
                    g.0 += 1;
                    g.1 += b.size;
                    all += 1;
                    if listed < cap {
                        listed += 1;
                        g.2.push((addr, b.size, b.refcount(), p.pid, p.comm.clone()));
                    }
                }
            }
        }
        let mut o = String::from("=== Remaining buffers ===\n");
        if groups.is_empty() {
            o.push_str("  (none)\n");
        }
        for ((d, t), (count, total, mut v)) in groups {
            v.sort();
            let tn = crate::shm_layout::BufferType::from_u8(t).map_or("?", |t| t.name());
            let _ = writeln!(
                o,
                "Device {d} {tn}: {count} buffers, {}",
                sys::human_bytes(total)
            );
            for (addr, size, rc, pid, comm) in v {
                let size = sys::human_bytes(size);
                let _ = writeln!(o, "  {addr:#x} {size} refs {rc} pid {pid} ({comm})");
            }
        }
        if all > listed as u64 {
            let _ = writeln!(
                o,
                "  ... {} more buffers not listed (at most {cap} are; tt-smi --buffers lists the largest)",
                all - listed as u64
            );
        }
        o
    }
}
