//! Applying a process's events: the accounting's hot loop.
//!
//! A run of one process's events is applied in passes. A pass holds the entries of a
//! set of devices at once (the process's entry of each, and its chip's figures), so
//! that events alternating devices (a mesh allocates on each chip in turn) cost no
//! more than a run on one device, and so that the buffer slot of the event a few
//! places ahead can be prefetched while this one is applied: with 100,000 live
//! buffers nearly every event misses the cache, and the misses of successive events
//! then overlap. An event on a device not held ends the pass; that device is placed
//! on its chip then (at its first event, as before) and the next pass holds it too.

use super::buffer_table::BufferTable;
use super::chip_rows::{chip_of, dev_entry};
use super::kinds::{apply_kind, validate};
use super::placement::{Card, Placement};
use super::{Accounting, Chip, DevState, Outcome, Placed, ProcDev, ProcKey, ProcState};
use crate::shm_layout::{Event, EventKind, MAX_DEVICES};
use std::collections::BTreeMap;

/// How many events ahead a buffer slot is prefetched: enough for a miss to memory to
/// be covered by the work of the events between (`cargo bench --bench aggregator`).
const PREFETCH_AHEAD: usize = 8;

impl Accounting {
    /// Applies one validated-or-not event of process `key` (which must exist), and
    /// counts it: applied, invalid, a free of something unknown, or refused.
    pub fn apply(&mut self, key: ProcKey, ev: &Event, now_unix_s: u32) -> Outcome {
        let (_, out) = self.apply_until(key, std::slice::from_ref(ev), |e| e, now_unix_s, |_| true);
        out.unwrap_or(Outcome::Invalid("no such process"))
    }

    /// Applies events of process `key` in order, as [`Self::apply`] does one, until one
    /// whose outcome the caller must act on or log ([`Outcome::notable`]). Returns how
    /// many were applied (that one included) and its outcome. The process is looked up
    /// once for the whole run, its devices once for each pass.
    pub fn apply_run<T>(
        &mut self,
        key: ProcKey,
        items: &[T],
        event_of: impl Fn(&T) -> &Event,
        now_unix_s: u32,
    ) -> (usize, Option<Outcome>) {
        self.apply_until(key, items, event_of, now_unix_s, Outcome::notable)
    }

    /// Applies `items` until `stop` says so of an outcome; returns how many were
    /// applied and the outcome that stopped them. With no such process, none.
    fn apply_until<T>(
        &mut self,
        key: ProcKey,
        items: &[T],
        event_of: impl Fn(&T) -> &Event,
        now_unix_s: u32,
        stop: impl Fn(&Outcome) -> bool,
    ) -> (usize, Option<Outcome>) {
        let Some(p) = self.processes.get_mut(&key) else {
            return (0, None);
        };
        let ProcState {
            devices: proc_devices,
            placement,
            ..
        } = p;
        let mut tally = Tally {
            applied: &mut p.events_applied,
            gap_lost: &mut p.gap_lost,
            unknown_frees: &mut p.unknown_frees,
            invalid: &mut p.invalid_events,
            live: &mut p.live,
            all_applied: &mut self.events_applied,
            all_unknown_frees: &mut self.unknown_frees,
            all_invalid: &mut self.invalid_events,
        };
        // The devices held: those of the events applied so far. An event on another
        // device ends the pass; that device is placed and the pass goes on with it held.
        let mut devices = items.first().map_or(0, |t| changed_device(event_of(t)));
        let mut n = 0;
        loop {
            let w = Pass {
                items,
                from: n,
                event_of: &event_of,
                now_unix_s,
                stop: &stop,
            };
            let chips = &mut self.pass_chips;
            let chip_at = place(
                devices,
                (key, placement),
                proc_devices,
                (&self.cards, &mut self.placed),
                &mut self.devices,
                chips,
            );
            let held = Held {
                devices,
                chips,
                chip_at,
            };
            let rows = &mut self.devices;
            let end = match devices.count_ones() {
                0 => w.apply(&mut (), &mut tally),
                1 => w.apply_one(held, proc_devices, rows, &mut tally),
                _ => w.apply_many(held, proc_devices, rows, &mut self.pass_figures, &mut tally),
            };
            match end {
                End::Done => return (items.len(), None),
                End::Stopped(i, out) => return (i, Some(out)),
                // Not reached (`place` made every held device's entries), but a pass
                // must always move on: the event is counted invalid, not retried.
                End::Unheld(i, device) if devices >> device & 1 == 1 => {
                    tally.count(&Outcome::Invalid("no entries"));
                    n = i + 1;
                }
                End::Unheld(i, device) => {
                    devices |= 1 << device;
                    n = i;
                }
            }
        }
    }
}

/// Places each of `devices` on its chip (once, with its first event: its chip is kept
/// in its entry), and lists their chips in `chips`; returns each device's place there.
fn place(
    devices: u64,
    (key, placement): (ProcKey, &mut Placement),
    proc_devices: &mut BTreeMap<i32, ProcDev>,
    (cards, placed): (&[Card], &mut Vec<Placed>),
    rows: &mut BTreeMap<Chip, DevState>,
    chips: &mut Vec<Chip>,
) -> [u8; MAX_DEVICES] {
    chips.clear();
    let mut chip_at = [0u8; MAX_DEVICES];
    for d in bits(devices) {
        let pd = proc_devices.entry(d as i32).or_default();
        let chip = *pd.chip.get_or_insert_with(|| {
            let c = chip_of(cards, placed, key, placement, d as i32);
            dev_entry(rows, cards, c);
            c
        });
        chip_at[d] = match chips.iter().position(|c| *c == chip) {
            Some(i) => i as u8,
            None => {
                chips.push(chip);
                (chips.len() - 1) as u8
            }
        };
    }
    chip_at
}

/// The device whose figures `ev` changes, as a set of one (none for a description,
/// an identity or an invalid event: those add no row to the process).
fn changed_device(ev: &Event) -> u64 {
    match validate(ev) {
        Ok(EventKind::DeviceInfo | EventKind::DeviceIdentity) | Err(_) => 0,
        Ok(_) => 1 << ev.device,
    }
}

/// How a pass over a run's events ended.
enum End {
    /// Every event applied.
    Done,
    /// Stopped after the event before this position, with its outcome.
    Stopped(usize, Outcome),
    /// The event at this position is on a device not held (not applied yet).
    Unheld(usize, usize),
}

/// The device ids whose bits are set.
fn bits(mut set: u64) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        let d = set.trailing_zeros() as usize;
        set &= set.wrapping_sub(1);
        (d < 64).then_some(d)
    })
}

/// A copy of a chip's row to work on (its figures are all that is put back).
fn figures_of(rows: &BTreeMap<Chip, DevState>, chip: &Chip) -> DevState {
    rows.get(chip).cloned().unwrap_or_else(DevState::unnumbered)
}

/// Puts the figures worked on back in their chips' rows.
fn put_back(rows: &mut BTreeMap<Chip, DevState>, chips: &[Chip], figures: &[DevState]) {
    for (chip, worked) in chips.iter().zip(figures) {
        if let Some(row) = rows.get_mut(chip) {
            row.figures = worked.figures;
            row.l1_resident_peak = worked.l1_resident_peak;
        }
    }
}

/// The entries a pass applies events to.
trait Entries {
    /// The process's entry of device `d` and its chip's figures, if the pass holds it.
    fn get(&mut self, d: usize) -> Option<(&mut ProcDev, &mut DevState)>;
    /// The live buffers of device `d`, if the pass holds it.
    fn buffers(&self, d: usize) -> Option<&BufferTable>;
}

/// No entries: before the run's first event that changes figures.
impl Entries for () {
    fn get(&mut self, _: usize) -> Option<(&mut ProcDev, &mut DevState)> {
        None
    }
    fn buffers(&self, _: usize) -> Option<&BufferTable> {
        None
    }
}

/// A pass on one device.
struct One<'a> {
    device: usize,
    pd: &'a mut ProcDev,
    dev: &'a mut DevState,
}

impl Entries for One<'_> {
    fn get(&mut self, d: usize) -> Option<(&mut ProcDev, &mut DevState)> {
        (d == self.device).then_some((&mut *self.pd, &mut *self.dev))
    }
    fn buffers(&self, d: usize) -> Option<&BufferTable> {
        (d == self.device).then_some(&self.pd.buffers)
    }
}

/// A pass on several devices: the process's entries by device id, and the figures
/// of the chips they are on.
struct Many<'a> {
    held: [Option<&'a mut ProcDev>; MAX_DEVICES],
    chip_at: [u8; MAX_DEVICES],
    figures: &'a mut [DevState],
}

impl Entries for Many<'_> {
    fn get(&mut self, d: usize) -> Option<(&mut ProcDev, &mut DevState)> {
        let pd = self.held.get_mut(d)?.as_deref_mut()?;
        Some((pd, self.figures.get_mut(self.chip_at[d] as usize)?))
    }
    fn buffers(&self, d: usize) -> Option<&BufferTable> {
        Some(&self.held.get(d)?.as_deref()?.buffers)
    }
}

/// The devices a pass holds, their chips, and each one's place among those.
struct Held<'a> {
    devices: u64,
    chips: &'a [Chip],
    chip_at: [u8; MAX_DEVICES],
}

/// One pass over a run's events.
struct Pass<'a, T, F, S> {
    items: &'a [T],
    /// Where the pass starts.
    from: usize,
    event_of: &'a F,
    now_unix_s: u32,
    stop: &'a S,
}

impl<T, F: Fn(&T) -> &Event, S: Fn(&Outcome) -> bool> Pass<'_, T, F, S> {
    /// Applies the events with one device held: its entry
    /// and its chip's row worked on in place.
    fn apply_one(
        &self,
        held: Held,
        proc_devices: &mut BTreeMap<i32, ProcDev>,
        rows: &mut BTreeMap<Chip, DevState>,
        tally: &mut Tally,
    ) -> End {
        let device = held.devices.trailing_zeros() as usize;
        match (
            proc_devices.get_mut(&(device as i32)),
            rows.get_mut(&held.chips[0]),
        ) {
            (Some(pd), Some(dev)) => self.apply(&mut One { device, pd, dev }, tally),
            // Not reached: both were made by `place`.
            _ => self.apply(&mut (), tally),
        }
    }

    /// Applies the events with several devices held at once, each chip's figures taken
    /// out of its row (two devices of a process may be on one chip) and put back.
    fn apply_many(
        &self,
        held: Held,
        proc_devices: &mut BTreeMap<i32, ProcDev>,
        rows: &mut BTreeMap<Chip, DevState>,
        figures: &mut Vec<DevState>,
        tally: &mut Tally,
    ) -> End {
        figures.clear();
        figures.extend(held.chips.iter().map(|c| figures_of(rows, c)));
        let mut many = Many {
            held: [const { None }; MAX_DEVICES],
            chip_at: held.chip_at,
            figures,
        };
        for (&d, pd) in proc_devices.iter_mut() {
            if held.devices >> d & 1 == 1 {
                many.held[d as usize] = Some(pd);
            }
        }
        let end = self.apply(&mut many, tally);
        put_back(rows, held.chips, many.figures);
        end
    }

    /// Applies the events from `from` on; returns where the run stopped and why.
    fn apply(&self, entries: &mut impl Entries, tally: &mut Tally) -> End {
        let event_of = self.event_of;
        for i in self.from..self.items.len() {
            if let Some(ahead) = self.items.get(i + PREFETCH_AHEAD) {
                let e = event_of(ahead);
                if e.kind == EventKind::Alloc as u8 || e.kind == EventKind::Free as u8 {
                    if let Some(b) = entries.buffers(e.device as usize) {
                        b.prefetch(e.id);
                    }
                }
            }
            let ev = event_of(&self.items[i]);
            let out = match validate(ev) {
                Err(why) => Outcome::Invalid(why),
                // Notable: the run ends here; the aggregator reads the slot.
                Ok(EventKind::DeviceInfo) => Outcome::DeviceInfo,
                Ok(EventKind::DeviceIdentity) => Outcome::DeviceIdentity,
                Ok(kind) => match entries.get(ev.device as usize) {
                    Some((pd, dev)) => apply_kind(kind, pd, dev, ev, *tally.live, self.now_unix_s),
                    None => return End::Unheld(i, ev.device as usize),
                },
            };
            tally.count(&out);
            if (self.stop)(&out) {
                return End::Stopped(i + 1, out);
            }
        }
        End::Done
    }
}

/// Counters an outcome moves: the process's, and the accounting's.
struct Tally<'a> {
    applied: &'a mut u64,
    gap_lost: &'a mut u64,
    unknown_frees: &'a mut u64,
    invalid: &'a mut u64,
    live: &'a mut u64,
    all_applied: &'a mut u64,
    all_unknown_frees: &'a mut u64,
    all_invalid: &'a mut u64,
}

impl Tally<'_> {
    /// Counts an outcome: applied, invalid, a free of something unknown, or refused
    /// (lost for the process alone: it is inexact now).
    fn count(&mut self, out: &Outcome) {
        match out {
            Outcome::Invalid(_) => {
                *self.invalid += 1;
                *self.all_invalid += 1;
            }
            Outcome::OverLimit => *self.gap_lost = self.gap_lost.saturating_add(1),
            _ => {
                match out {
                    Outcome::UnknownFree => {
                        *self.unknown_frees += 1;
                        *self.all_unknown_frees += 1;
                    }
                    Outcome::Allocated { .. } => *self.live += 1,
                    Outcome::Freed { last: true, .. } => *self.live = self.live.saturating_sub(1),
                    _ => {}
                }
                *self.applied += 1;
                *self.all_applied += 1;
            }
        }
    }
}
