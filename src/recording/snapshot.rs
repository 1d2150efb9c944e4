//! Snapshots: the last seconds the aggregator kept of each chip (its rings of applied
//! events), with what each process held when they began, written as a recording, so
//! that `tt-track report`, `export` and the HTML page read it as any other. Taken by
//! `tt-track snapshot` and by the Python package when TT-Metal runs out of memory.

use super::{DeviceRow, Meta, Record, Writer};
use crate::control::{request_bytes, RequestError};
use std::path::Path;
use std::time::Duration;

/// What a snapshot asks for.
#[derive(Debug, Clone, Default)]
pub struct Ask {
    /// Only this process (else every process of the caller's user; root's: all).
    pub pid: Option<u32>,
    /// How far back (the aggregator keeps 30 s by default).
    pub seconds: f64,
    /// What failed, if it is taken after a failure.
    pub failure: Option<String>,
}

/// What was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub processes: u64,
    pub events: u64,
    pub bytes: u64,
}

/// The device rows as the counters page shows them now.
pub fn device_rows(dir: &Path) -> Vec<DeviceRow> {
    let Ok(r) = crate::counters_page::CountersReader::open(dir) else {
        return Vec::new();
    };
    let Some(s) = r.view().snapshot() else {
        return Vec::new();
    };
    s.devices
        .iter()
        .map(|d| DeviceRow {
            id: d.id,
            arch: crate::sys::get_str(&d.arch),
            board: crate::sys::get_str(&d.board),
            remote: d.flags & crate::counters_page::DEV_REMOTE != 0,
            dram_total: d.dram_total,
            l1_total: d.l1_total,
        })
        .collect()
}

/// Asks the aggregator of `dir` for a snapshot and writes it to `out` (made anew).
pub fn take(dir: &Path, ask: &Ask, out: &Path) -> Result<Written, String> {
    let now_ms = crate::sys::unix_ns() / 1_000_000;
    let epoch = now_ms.saturating_sub((ask.seconds.max(0.0) * 1000.0) as u64);
    let mut q = format!("snapshot epoch_ms={epoch}");
    if let Some(p) = ask.pid {
        q += &format!(" pid={p}");
    }
    let answer =
        request_bytes(dir, &q, Duration::from_secs(15), 256 << 20).map_err(|e| match e {
            RequestError::NotRunning(e) => format!(
                "cannot ask tt-aggregator ({e}): is it running on {}? start it with: tt-aggregator",
                dir.display()
            ),
            e => format!("snapshot from {}: {e}", dir.display()),
        })?;
    let body = answer.strip_prefix(b"ok\n").ok_or_else(|| {
        let text = String::from_utf8_lossy(&answer);
        crate::control::error_of(&text).map_or_else(
            || "the aggregator's answer is not a snapshot (an older tt-aggregator?)".to_string(),
            |e| format!("the aggregator refused: {e}"),
        )
    })?;
    // Frames: a u32 LE length, then that many bytes of records.
    let mut records = Vec::new();
    let mut rest = body;
    while rest.len() >= 4 {
        let n = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let frame = rest.get(4..4 + n).ok_or("the snapshot was cut short")?;
        records.extend_from_slice(frame);
        rest = &rest[4 + n..];
    }
    let decoded = super::decode(&records).ok_or("the snapshot's records are malformed")?;
    let mut written = Written {
        processes: 0,
        events: 0,
        bytes: 0,
    };
    for r in &decoded {
        match r {
            Record::Process { .. } => written.processes += 1,
            Record::Events { events, .. } => written.events += events.len() as u64,
            _ => {}
        }
    }
    let mut command = vec!["tt-track".to_string(), "snapshot".to_string()];
    if let Some(p) = ask.pid {
        command.push(format!("--pid={p}"));
    }
    let meta = Meta {
        command,
        host: std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap_or_default()
            .trim()
            .to_string(),
        started_unix_ms: epoch,
        tttrack_version: env!("CARGO_PKG_VERSION").into(),
        aggregator: "shared".into(),
        failure: ask.failure.clone(),
    };
    let io = |e: std::io::Error| format!("{}: {e}", out.display());
    let mut w = Writer::new(std::fs::File::create(out).map_err(io)?, &meta).map_err(io)?;
    let rows = device_rows(dir);
    w.add_record(&Record::Devices {
        t_ms: 0,
        rows: rows.clone(),
    })
    .map_err(io)?;
    w.add(&records).map_err(io)?;
    w.add_record(&Record::Devices {
        t_ms: now_ms.saturating_sub(epoch),
        rows,
    })
    .map_err(io)?;
    w.flush().map_err(io)?;
    written.bytes = w.bytes;
    Ok(written)
}
