//! The report's rows filled after the main replay: what was live at each peak, each
//! process's figures, and each device's.

use super::*;
use crate::shm_layout::EventKind;

/// A second replay, stopped at each peak, to list what was live then.
pub(super) fn fill_live_at_peak(rec: &Recording, types: &mut BTreeMap<(u32, usize), TypeReport>) {
    let mut at: BTreeMap<usize, Vec<(u32, usize)>> = BTreeMap::new();
    for (&k, t) in types.iter() {
        if t.peak_bytes > 0 {
            at.entry(t.peak_index).or_default().push(k);
        }
    }
    let Some(&last) = at.keys().last() else {
        return;
    };
    /// Stops at the peaks' events and lists what is live.
    /// A peak (row, category), what was live then, its address map.
    type AtPeak = ((u32, usize), Vec<Live>, Option<serde_json::Value>);
    struct AtPeaks<'a> {
        at: &'a BTreeMap<usize, Vec<(u32, usize)>>,
        found: Vec<AtPeak>,
        /// Peaks whose address map waits for the detail events that follow the
        /// allocation that made them (their indices in `found`).
        maps_due: Vec<usize>,
    }
    impl AtPeaks<'_> {
        fn draw_maps(&mut self, rp: &Replay) {
            for &i in &self.maps_due {
                let ((row, cat), _, map) = &mut self.found[i];
                *map = map_at(&rp.acc, *row, *cat);
            }
        }
    }
    impl Visit for AtPeaks<'_> {
        fn event(&mut self, rp: &Replay, _: u32, ev: &Event, _: &Outcome) {
            let detail = [
                EventKind::BufferShape,
                EventKind::BufferPlace,
                EventKind::BankGeometry,
                EventKind::MeshMember,
            ]
            .iter()
            .any(|k| *k as u8 == ev.kind);
            if detail {
                // The peak's allocation's details, as they come: its map drawn again.
                self.draw_maps(rp);
            } else {
                self.maps_due.clear();
            }
            let Some(ks) = self.at.get(&rp.index) else {
                return;
            };
            for &(row, cat) in ks {
                let keys: Vec<(u32, u64)> = rp.acc.processes().keys().copied().collect();
                let mut v: Vec<Live> = keys
                    .into_iter()
                    .flat_map(|k| rp.live_of(k, Some(row), Some(cat)))
                    .collect();
                v.sort_by(|a, b| b.size.cmp(&a.size).then(a.address.cmp(&b.address)));
                v.truncate(LIVE_AT_PEAK_LISTED);
                self.maps_due.push(self.found.len());
                self.found.push(((row, cat), v, map_at(&rp.acc, row, cat)));
            }
        }
    }
    let mut v = AtPeaks {
        at: &at,
        found: Vec::new(),
        maps_due: Vec::new(),
    };
    // A little past the last peak: the detail events of the allocation that made it.
    Replay::new(rec).run(&mut v, Some(last + DETAIL_EVENTS_AFTER));
    let found = v.found;
    for (k, v, map) in found {
        if let Some(t) = types.get_mut(&k) {
            t.live_at_peak = v;
            t.map_at_peak = map;
        }
    }
}

/// The most extension events that follow an allocation (its two detail events and
/// its allocator's banks).
const DETAIL_EVENTS_AFTER: usize = 3;

/// The address map of category `cat` on row `row` as the replay stands.
fn map_at(acc: &Accounting, row: u32, cat: usize) -> Option<serde_json::Value> {
    let btype = BufferType::ALL
        .into_iter()
        .find(|&t| t != BufferType::SystemMemory && cat_of_buffer(t) == cat)?;
    let q = crate::accounting::maps::MapQuery {
        btype: Some(btype),
        ..Default::default()
    };
    let maps: Vec<serde_json::Value> = crate::accounting::maps::answer(acc, &q)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    maps.iter()
        .find(|m| m["device"] == row)
        .or(maps.first())
        .cloned()
}

pub(super) fn fill_processes(rec: &Recording, procs: &mut BTreeMap<u32, ProcessReport>) {
    for r in &rec.records {
        if let Record::Process {
            t_ms, pid, comm, ..
        } = r
        {
            let p = procs.entry(*pid).or_default();
            p.pid = *pid;
            p.comm = comm.clone();
            p.started_at_s = secs(*t_ms);
        }
    }
}

/// The device reports: rows as the recorder last saw them, with every row that had
/// an event.
pub(super) fn devices(
    rec: &Recording,
    types: BTreeMap<(u32, usize), TypeReport>,
) -> Vec<DeviceReport> {
    let mut out: BTreeMap<u32, DeviceReport> = BTreeMap::new();
    for r in &rec.records {
        if let Record::Devices { rows, .. } = r {
            for d in rows {
                let text = |s: &str| (!s.is_empty()).then(|| s.to_string());
                out.insert(
                    d.id,
                    DeviceReport {
                        id: d.id,
                        arch: text(&d.arch),
                        board: text(&d.board),
                        remote: d.remote,
                        dram_total_bytes: (d.dram_total > 0).then_some(d.dram_total),
                        l1_total_bytes: (d.l1_total > 0).then_some(d.l1_total),
                        types: BTreeMap::new(),
                    },
                );
            }
        }
    }
    for ((row, cat), mut t) in types {
        t.size_histogram = std::mem::take(&mut t.histogram).into_iter().collect();
        let d = out.entry(row).or_insert_with(|| DeviceReport {
            id: row,
            ..Default::default()
        });
        d.types.insert(CAT_NAMES[cat], t);
    }
    out.into_values().collect()
}
