//! The aggregator's log: information on stdout, problems on stderr, and one line per
//! event in the original server's style with `-v`.

use super::Aggregator;
use crate::accounting::{Outcome, ProcKey};
use crate::shm_layout::{Event, EventKind};
use std::io::Write;

/// How much the aggregator prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verbosity {
    Quiet,
    Normal,
    Verbose,
}

/// A log line's destination: stdout for information, stderr for problems.
#[derive(Clone)]
pub struct Log {
    pub verbosity: Verbosity,
}

impl Log {
    pub fn info(&self, msg: impl AsRef<str>) {
        if self.verbosity >= Verbosity::Normal {
            let mut o = std::io::stdout().lock();
            let _ = writeln!(o, "{}", msg.as_ref());
            let _ = o.flush();
        }
    }
    pub fn event(&self, msg: impl AsRef<str>) {
        if self.verbosity >= Verbosity::Verbose {
            let mut o = std::io::stdout().lock();
            let _ = writeln!(o, "{}", msg.as_ref());
        }
    }
    pub fn warn(&self, msg: impl AsRef<str>) {
        if self.verbosity >= Verbosity::Normal {
            eprintln!("warning: {}", msg.as_ref());
        }
    }
    pub fn error(&self, msg: impl AsRef<str>) {
        eprintln!("error: {}", msg.as_ref());
    }
}

impl Aggregator {
    /// How log lines name process `key`'s device `logical`: its chip's row, with the
    /// process's own id beside it when the two differ.
    pub(super) fn device_label(&self, key: ProcKey, logical: i32) -> String {
        let row = self
            .acc
            .processes()
            .get(&key)
            .and_then(|p| p.chip_of(logical))
            .and_then(|(c, _)| self.acc.row_of(&c));
        match row {
            Some(r) if r as i64 == logical as i64 => format!("{r}"),
            Some(r) => format!("{r} (its device {logical})"),
            None => format!("{logical}"),
        }
    }

    /// Logs what applying an event did: every event with -v; otherwise only frees of
    /// something never seen allocated (always counted), the first few per process.
    pub(super) fn log_outcome(&mut self, key: ProcKey, ev: &Event, out: &Outcome) {
        const LOGGED: u64 = 10;
        if self.log.verbosity >= Verbosity::Verbose {
            self.log
                .event(describe(key.0, &self.device_label(key, ev.device), ev, out));
            return;
        }
        if *out == Outcome::OverLimit {
            // Once per process: the first refusal (the count is in its events lost).
            if self.over_limit_logged.insert(key) {
                let acc = &self.acc;
                self.over_limit_logged
                    .retain(|k| acc.processes().contains_key(k));
                self.log
                    .warn(describe(key.0, &self.device_label(key, ev.device), ev, out));
            }
            return;
        }
        if *out != Outcome::UnknownFree {
            return;
        }
        let n = self
            .acc
            .processes()
            .get(&key)
            .map_or(0, |p| p.unknown_frees);
        if n <= LOGGED {
            let more = if n == LOGGED {
                " (further ones of this process are counted, not logged; -v logs every event)"
            } else {
                ""
            };
            self.log.info(format!(
                "{}{more}",
                describe(key.0, &self.device_label(key, ev.device), ev, out)
            ));
        }
    }
}

/// One line per event in the original server's style (`-v`).
/// `dev` names the device: its chip's row, and the process's own id if that differs.
pub fn describe(pid: u32, dev: &str, ev: &Event, out: &Outcome) -> String {
    let mb = |b: u64| b as f64 / (1024.0 * 1024.0);
    match out {
        Outcome::OverLimit => format!(
            "✗ [PID {pid}] Allocation of {} bytes on device {} (buffer_id={:#x}) not tracked: the process already has {} live buffers, the most one process may; counted lost",
            ev.size,
            dev,
            ev.id,
            crate::accounting::MAX_BUFFERS_PER_PROCESS
        ),
        Outcome::Allocated { size, btype } => format!(
            "✓ [PID {pid}] Allocated {size} bytes of {} on device {} (buffer_id={:#x})",
            btype.name(),
            dev,
            ev.id
        ),
        Outcome::Referenced { refcount } => format!(
            "✓ [PID {pid}] Re-reported buffer {:#x} on device {} (refcount {refcount})",
            ev.id, dev
        ),
        Outcome::Freed { size, last, .. } => format!(
            "✗ [PID {pid}] Freed buffer {:#x} on device {} ({size} bytes{})",
            ev.id,
            dev,
            if *last { ", FINAL" } else { "" }
        ),
        Outcome::UnknownFree => format!(
            "⚠ [PID {pid}] Free of unknown id {:#x} on device {} (allocated before tracking started?)",
            ev.id, dev
        ),
        Outcome::CbAllocated { size } => format!(
            "✓ [CB_ALLOC] [PID {pid}] Device {}: +{:.1} MB (cb_id={:#x})",
            dev,
            mb(*size),
            ev.id
        ),
        Outcome::CbFreed { size } => format!(
            "✗ [CB_FREE] [PID {pid}] Device {}: -{:.1} MB (cb_id={:#x})",
            dev,
            mb(*size),
            ev.id
        ),
        Outcome::KernelLoaded { size, ktype, total } => format!(
            "✓ [KERNEL_LOAD] {} kernel on Device {}: +{:.1} MB (Total: {:.1} MB)",
            ktype.name(),
            dev,
            mb(*size),
            mb(*total)
        ),
        Outcome::KernelUnloaded { size, ktype, total } => format!(
            "✗ [KERNEL_UNLOAD] {} kernel on Device {}: -{:.1} MB (Total: {:.1} MB)",
            ktype.name(),
            dev,
            mb(*size),
            mb(*total)
        ),
        Outcome::DeviceInfo => format!("ℹ [PID {pid}] Device {dev} described"),
        Outcome::DeviceIdentity => format!("ℹ [PID {pid}] Device {dev} identified"),
        Outcome::Described => format!(
            "ℹ [PID {pid}] {} on device {dev} (id={:#x})",
            match EventKind::from_u8(ev.kind) {
                Some(EventKind::BankGeometry) => "Banks described",
                _ => "Buffer placed",
            },
            ev.id
        ),
        Outcome::Invalid(why) => format!("⚠ [PID {pid}] Rejected event ({why}): {ev:?}"),
    }
}
