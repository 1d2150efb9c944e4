//! The accounting's chips: each process's devices placed on a chip's row, rows
//! numbered, and a device's figures moved whole when its placement changes.

use super::placement::{self, Card, Chip, Placement};
use super::*;

impl Accounting {
    /// Records which chip process `key`'s device `device` is, as the process said, and
    /// moves that device's figures there if they were elsewhere. `Ok(false)`: the same
    /// as it said before (nothing changed); `Err` says what is wrong with an identity
    /// that is refused (and counted invalid).
    pub fn set_identity(
        &mut self,
        key: ProcKey,
        device: i32,
        id: ChipIdentity,
    ) -> Result<bool, &'static str> {
        let Some(p) = self.processes.get_mut(&key) else {
            return Err("no such process");
        };
        let checked = placement::validate_identity(&id).and_then(|()| {
            if (0..MAX_DEVICES as i32).contains(&device) {
                Ok(())
            } else {
                Err("device id out of range")
            }
        });
        if let Err(why) = checked {
            self.invalid_events += 1;
            p.invalid_events += 1;
            return Err(why);
        }
        if p.placement.reported.insert(device, id) == Some(id) {
            return Ok(false);
        }
        chip_of(&self.cards, &mut self.placed, key, &mut p.placement, device);
        self.remap(key);
        Ok(true)
    }

    /// Sets what process `key`'s `TT_VISIBLE_DEVICES` was, and places again.
    pub fn set_visible(&mut self, key: ProcKey, visible: crate::segment::VisibleDevices) {
        if let Some(p) = self.processes.get_mut(&key) {
            p.placement.visible = Some(visible);
            self.remap(key);
        }
    }

    /// The host's cards changed (or were first read): every process is placed again,
    /// and figures move where a placement changed.
    pub fn set_cards(&mut self, cards: Vec<Card>) {
        if cards == self.cards {
            return;
        }
        self.cards = cards;
        let keys: Vec<ProcKey> = self.processes.keys().copied().collect();
        for k in keys {
            self.remap(k);
        }
        renumber(&mut self.devices, &self.cards);
    }

    /// Drops the rows of remote chips that no process is placed on and that hold
    /// nothing (a chip id no longer named): rows do not pile up. With `as_reported`,
    /// also rows of ids as reported (figures moved off them when the host's cards
    /// became known: on a host with cards they name no chip).
    pub(super) fn prune_rows(&mut self, chips: &[Chip], as_reported: bool) {
        for c in chips {
            let prunable = match c {
                Chip::Asic(_) => true,
                Chip::AsReported(_) => as_reported && !self.cards.is_empty(),
                _ => false,
            };
            if !prunable {
                continue;
            }
            let used = self
                .processes
                .values()
                .any(|p| p.placement.chips.values().any(|(x, _)| x == c));
            let empty = self
                .devices
                .get(c)
                .is_some_and(|d| d.figures.iter().all(|f| f.used == 0 && f.count == 0));
            if !used && empty {
                self.devices.remove(c);
            }
        }
    }

    /// Placements made or changed since the last call.
    pub fn take_placed(&mut self) -> Vec<Placed> {
        std::mem::take(&mut self.placed)
    }

    /// Places each device of process `key` again; a device now on another chip takes
    /// its figures (used bytes and counts) from the old chip's row to the new one.
    fn remap(&mut self, key: ProcKey) {
        let Some(p) = self.processes.get_mut(&key) else {
            return;
        };
        let logicals: Vec<i32> = p.placement.chips.keys().copied().collect();
        let mut left = Vec::new();
        for l in logicals {
            let was = p.placement.chips[&l];
            let now = placement::resolve(&self.cards, key, &p.placement, l);
            if now == was {
                continue;
            }
            p.placement.chips.insert(l, now);
            let mut moved_from = None;
            if was.0 != now.0 {
                left.push(was.0);
                if let Some(pd) = p.devices.get_mut(&l) {
                    pd.chip = Some(now.0);
                }
                let pd = p.devices.get(&l);
                let mut info = None;
                if let Some(o) = self.devices.get_mut(&was.0) {
                    moved_from = Some(o.row);
                    info = o.info;
                    if let Some(pd) = pd {
                        for c in 0..NUM_CATS {
                            o.figures[c].used = o.figures[c].used.saturating_sub(pd.used[c]);
                            o.figures[c].count = o.figures[c].count.saturating_sub(pd.count[c]);
                        }
                    }
                    if matches!(was.0, Chip::Unplaced { .. }) {
                        // Nobody else's: its row goes with its only device.
                        self.devices.remove(&was.0);
                    }
                }
                let n = dev_entry(&mut self.devices, &self.cards, now.0);
                if let Some(pd) = pd {
                    for c in 0..NUM_CATS {
                        let f = &mut n.figures[c];
                        f.used += pd.used[c];
                        f.count += pd.count[c];
                        f.peak = f.peak.max(f.used);
                    }
                    let l1: u64 = L1_RESIDENT_CATS.iter().map(|&c| n.figures[c].used).sum();
                    n.l1_resident_peak = n.l1_resident_peak.max(l1);
                }
                if n.info.is_none() {
                    n.info = info;
                }
            }
            self.placed.push(Placed {
                key,
                logical: l,
                chip: now.0,
                source: now.1,
                moved_from,
            });
        }
        self.prune_rows(&left, true);
    }

    /// The row of a chip, for the views.
    pub fn row_of(&self, chip: &Chip) -> Option<u32> {
        self.devices.get(chip).map(|d| d.row)
    }

    /// The row of the chip process `p`'s device `logical` is on (the logical id itself
    /// while it has none).
    pub fn device_row(&self, p: &ProcState, logical: i32) -> i32 {
        p.chip_of(logical)
            .and_then(|(c, _)| self.row_of(&c))
            .map_or(logical, |r| r as i32)
    }
}

/// The chip of a process's device `logical`: as placed before, else placed now (and
/// noted in `placed`).
pub(super) fn chip_of(
    cards: &[Card],
    placed: &mut Vec<Placed>,
    key: ProcKey,
    placement: &mut Placement,
    logical: i32,
) -> Chip {
    if let Some(&(c, _)) = placement.chips.get(&logical) {
        return c;
    }
    let (chip, source) = placement::resolve(cards, key, placement, logical);
    placement.chips.insert(logical, (chip, source));
    placed.push(Placed {
        key,
        logical,
        chip,
        source,
        moved_from: None,
    });
    chip
}

/// A chip's row, made if it has none yet.
pub(super) fn dev_entry<'a>(
    devices: &'a mut BTreeMap<Chip, DevState>,
    cards: &[Card],
    chip: Chip,
) -> &'a mut DevState {
    if !devices.contains_key(&chip) {
        let fixed = match chip {
            Chip::Local(i) => Some(i),
            Chip::AsReported(d) => Some(d as u32),
            _ => None,
        };
        let row = fixed.unwrap_or_else(|| free_row(devices, cards));
        devices.insert(
            chip,
            DevState {
                row,
                ..Default::default()
            },
        );
        if fixed.is_some() {
            renumber(devices, cards);
        }
    }
    devices.entry(chip).or_default()
}

/// Rows handed out to remote chips before the rest are kept unnumbered (accounted,
/// not shown): what many processes naming many chips can cost the aggregator is bounded.
const MAX_ROWS: usize = 4096;

/// The lowest row that no card and no chip has (`u32::MAX`, shown nowhere, past
/// [`MAX_ROWS`]): a remote chip fills a gap between the cards' indices (the second chip
/// of an n300 at card 0 is row 1 when there is no card 1), and moves if such a card
/// appears.
fn free_row(devices: &BTreeMap<Chip, DevState>, cards: &[Card]) -> u32 {
    if devices.len() >= MAX_ROWS {
        return u32::MAX;
    }
    let taken: std::collections::BTreeSet<u32> = devices
        .values()
        .map(|d| d.row)
        .chain(cards.iter().map(|c| c.index))
        .collect();
    (0..u32::MAX)
        .find(|r| !taken.contains(r))
        .unwrap_or(u32::MAX)
}

/// Gives a remote chip whose row a card or a local chip now has another row.
fn renumber(devices: &mut BTreeMap<Chip, DevState>, cards: &[Card]) {
    let fixed: std::collections::BTreeSet<u32> = devices
        .iter()
        .filter(|(c, _)| !c.is_remote())
        .map(|(_, d)| d.row)
        .chain(cards.iter().map(|c| c.index))
        .collect();
    let clashing: Vec<Chip> = devices
        .iter()
        .filter(|(c, d)| c.is_remote() && fixed.contains(&d.row))
        .map(|(c, _)| *c)
        .collect();
    for c in clashing {
        // Out of the way first, so that the free row found is not its own.
        if let Some(d) = devices.get_mut(&c) {
            d.row = u32::MAX;
        }
        let row = free_row(devices, cards);
        if let Some(d) = devices.get_mut(&c) {
            d.row = row;
        }
    }
}

impl Accounting {
    /// [`Accounting::prune_rows`] of remote chips only.
    pub(super) fn prune(&mut self, chips: &[Chip]) {
        self.prune_rows(chips, false);
    }
}
