//! `tt-track diff BASE NEW`: peaks and leaks of two recordings side by side, and
//! whether NEW regressed (a peak grew by more than a given percentage, or a leak
//! appeared), for CI jobs that guard memory as they guard time.

use super::analysis::Report;
use crate::sys::human_bytes;
use std::collections::BTreeMap;
use std::fmt::Write;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Row {
    pub device: u32,
    pub kind: &'static str,
    pub base_peak: u64,
    pub new_peak: u64,
    pub base_leaked: (u64, u64),
    pub new_leaked: (u64, u64),
}

impl Row {
    /// The peak's growth in percent (`None`: no base to compare with).
    pub fn growth_pct(&self) -> Option<f64> {
        (self.base_peak > 0).then(|| (self.new_peak as f64 / self.base_peak as f64 - 1.0) * 100.0)
    }
    fn failures(&self, pct: f64) -> Vec<String> {
        let mut f = Vec::new();
        let grew = match self.growth_pct() {
            Some(g) => g > pct,
            None => self.new_peak > 0,
        };
        if grew {
            f.push(format!(
                "device {} {} peak grew from {} to {} ({}, more than {pct}%)",
                self.device,
                self.kind,
                human_bytes(self.base_peak),
                human_bytes(self.new_peak),
                self.growth_pct()
                    .map_or("new".into(), |g| format!("+{g:.1}%"))
            ));
        }
        if self.new_leaked.1 > self.base_leaked.1 {
            f.push(format!(
                "device {} {} leaks {} in {} buffers (base: {} in {})",
                self.device,
                self.kind,
                human_bytes(self.new_leaked.0),
                self.new_leaked.1,
                human_bytes(self.base_leaked.0),
                self.base_leaked.1
            ));
        }
        f
    }
}

#[derive(Debug, Clone, Default)]
pub struct Diff {
    pub rows: Vec<Row>,
}

/// Every (device, type) either recording has.
pub fn compare(base: &Report, new: &Report) -> Diff {
    let mut m: BTreeMap<(u32, &'static str), Row> = BTreeMap::new();
    for (r, is_new) in [(base, false), (new, true)] {
        for d in &r.devices {
            for (&k, t) in &d.types {
                if t.peak_bytes == 0 && t.leaked_buffers == 0 {
                    continue;
                }
                let row = m.entry((d.id, k)).or_insert_with(|| Row {
                    device: d.id,
                    kind: k,
                    ..Default::default()
                });
                if is_new {
                    row.new_peak = t.peak_bytes;
                    row.new_leaked = (t.leaked_bytes, t.leaked_buffers);
                } else {
                    row.base_peak = t.peak_bytes;
                    row.base_leaked = (t.leaked_bytes, t.leaked_buffers);
                }
            }
        }
    }
    Diff {
        rows: m.into_values().collect(),
    }
}

impl Diff {
    pub fn regressed(&self, pct: f64) -> bool {
        self.rows.iter().any(|r| !r.failures(pct).is_empty())
    }

    pub fn text(&self, fail_above: Option<f64>) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "{:<8} {:<18} {:>11} {:>11} {:>9} {:>16} {:>16}",
            "device", "type", "base peak", "new peak", "change", "base leaked", "new leaked"
        );
        for r in &self.rows {
            let _ = writeln!(
                o,
                "{:<8} {:<18} {:>11} {:>11} {:>9} {:>16} {:>16}",
                r.device,
                r.kind,
                human_bytes(r.base_peak),
                human_bytes(r.new_peak),
                r.growth_pct().map_or("new".into(), |g| format!("{g:+.1}%")),
                format!("{} ({})", human_bytes(r.base_leaked.0), r.base_leaked.1),
                format!("{} ({})", human_bytes(r.new_leaked.0), r.new_leaked.1)
            );
        }
        if let Some(pct) = fail_above {
            let f: Vec<String> = self.rows.iter().flat_map(|r| r.failures(pct)).collect();
            if f.is_empty() {
                let _ = writeln!(
                    o,
                    "OK: no peak grew by more than {pct}% and no leak appeared"
                );
            }
            for line in f {
                let _ = writeln!(o, "FAIL: {line}");
            }
        }
        o
    }
}
