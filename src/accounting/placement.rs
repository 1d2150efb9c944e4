//! Which physical chip each of a process's devices is.
//!
//! A process names its devices by TT-Metal's logical ids: its n-th visible chip, which
//! is a different chip in a process run with another `TT_VISIBLE_DEVICES`. Figures are
//! kept per physical chip ([`Chip`]): from what the process reported
//! (`tttrack_device_identity`), else inferred from its `TT_VISIBLE_DEVICES` and the
//! host's cards (the visible local chips are logical `0..k-1` in ascending index order;
//! without the variable every card is visible). A chip that cannot be placed is a chip
//! of that process alone, never merged with another's. On a host with no cards the ids
//! are taken as reported.

use crate::counters_page::{
    PLACED_AS_REPORTED, PLACED_INFERRED, PLACED_REPORTED, PLACED_UNPLACED, PLACEMENT_NAMES,
};
use crate::segment::VisibleDevices;
use crate::shm_layout::{ChipIdentity, CHIP_IDENTITY_V1_SIZE};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A physical chip: what a device row is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Chip {
    /// A local (PCIe) chip: its `/dev/tenstorrent` index.
    Local(u32),
    /// A remote chip known by its unique id: the same chip for every process naming it.
    Asic(u64),
    /// A remote chip (or one not placeable) of one process: its own row, never merged.
    Unplaced {
        pid: u32,
        start_time: u64,
        logical: i32,
    },
    /// A host with no cards: the id as the process reported it.
    AsReported(i32),
}

impl Chip {
    pub fn is_remote(&self) -> bool {
        matches!(self, Chip::Asic(_) | Chip::Unplaced { .. })
    }
}

/// How a process's device was placed on its chip (values: the page's `PLACED_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[repr(u8)]
pub enum Source {
    /// The host has no cards: the id as reported.
    AsReported = PLACED_AS_REPORTED,
    /// From `TT_VISIBLE_DEVICES` and the host's cards.
    Inferred = PLACED_INFERRED,
    /// The process said which chip it is.
    Reported = PLACED_REPORTED,
    /// Not placeable (a remote chip, or visibility unknown): the process's own row.
    Unplaced = PLACED_UNPLACED,
}

impl Source {
    pub fn name(self) -> &'static str {
        PLACEMENT_NAMES[self as usize]
    }
}

/// A card of this host, as the driver shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Card {
    /// `/dev/tenstorrent/N`.
    pub index: u32,
    pub pci_address: String,
    /// `tt_serial` and `tt_asic_id`, 0 if not shown.
    pub board_id: u64,
    pub asic_id: u64,
}

impl Card {
    /// The card a sysfs device is.
    pub fn of(d: &crate::devices::LocalDevice) -> Self {
        Self {
            index: d.id,
            pci_address: d.pci_bdf.clone(),
            board_id: d.board_id_number(),
            asic_id: d.asic_id_number(),
        }
    }

    /// Whether it is sysfs device `d` as it is now (compared without copying).
    pub fn is(&self, d: &crate::devices::LocalDevice) -> bool {
        self.index == d.id
            && self.pci_address == d.pci_bdf
            && self.board_id == d.board_id_number()
            && self.asic_id == d.asic_id_number()
    }
}

/// What the aggregator knows of where one process's devices are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// The process's `TT_VISIBLE_DEVICES` (from its segment or its environment);
    /// `None` when nothing is known of it (a process from an old journal).
    pub visible: Option<VisibleDevices>,
    /// What the process reported, by logical id.
    pub reported: BTreeMap<i32, ChipIdentity>,
    /// Each logical id's chip as last resolved, and how.
    pub chips: BTreeMap<i32, (Chip, Source)>,
}

/// Checks an identity read from another process's shared memory.
pub fn validate_identity(id: &ChipIdentity) -> Result<(), &'static str> {
    if id.struct_size < CHIP_IDENTITY_V1_SIZE {
        return Err("chip identity of an unknown version (struct_size too small)");
    }
    if id.is_remote > 1 {
        return Err("chip identity: is_remote is neither 0 nor 1");
    }
    let index_ok = |i: i32| (-1..1024).contains(&i);
    if !index_ok(id.pcie_index) || !index_ok(id.via_pcie_index) {
        return Err("chip identity: a /dev/tenstorrent index out of range");
    }
    let addr = crate::sys::get_str(&id.pci_address);
    if !addr.is_empty() && !crate::devices::is_pci_address(&addr) {
        return Err("chip identity: pci_address is not DDDD:BB:DD.F");
    }
    Ok(())
}

/// The cards a process sees, in its logical order; `None` if that is unknown.
pub fn visible_cards<'a>(
    visible: &Option<VisibleDevices>,
    cards: &'a [Card],
) -> Option<Vec<&'a Card>> {
    let mut v: Vec<&Card> = match visible.as_ref()? {
        VisibleDevices::Unset => cards.iter().collect(),
        VisibleDevices::Unknown => return None,
        VisibleDevices::Set(s) => {
            let mut v = Vec::new();
            for entry in s.split(',').map(str::trim) {
                if let Some(i) = crate::shm_layout::canonical_decimal::<u32>(entry) {
                    v.extend(cards.iter().filter(|c| c.index == i));
                } else if crate::devices::is_pci_address(&entry.to_ascii_lowercase()) {
                    let e = entry.to_ascii_lowercase();
                    v.extend(cards.iter().filter(|c| c.pci_address == e));
                } else {
                    return None;
                }
            }
            v
        }
    };
    v.sort_by_key(|c| c.index);
    v.dedup_by_key(|c| c.index);
    Some(v)
}

/// The chip of logical device `logical` of process `key`, and how it was placed.
pub fn resolve(cards: &[Card], key: (u32, u64), p: &Placement, logical: i32) -> (Chip, Source) {
    let unplaced = Chip::Unplaced {
        pid: key.0,
        start_time: key.1,
        logical,
    };
    if let Some(id) = p.reported.get(&logical) {
        match reported_chip(cards, id) {
            // No cards to match a local chip against: as reported, like every other
            // process's ids on such a host (a reported index would clash with them).
            Some(Chip::Local(_)) if cards.is_empty() => {}
            Some(chip) => return (chip, Source::Reported),
            None if !cards.is_empty() && id.is_remote != 0 => return (unplaced, Source::Unplaced),
            None => {}
        }
    }
    if cards.is_empty() {
        return (Chip::AsReported(logical), Source::AsReported);
    }
    match visible_cards(&p.visible, cards) {
        Some(v) => match usize::try_from(logical).ok().and_then(|l| v.get(l)) {
            Some(c) => (Chip::Local(c.index), Source::Inferred),
            // Past the local chips: remote chips, which only the process can name.
            None => (unplaced, Source::Unplaced),
        },
        None => (unplaced, Source::Unplaced),
    }
}

/// The chip an identity names, matched against the host's cards: a local chip by its
/// index, else its PCI address, else its chip id; a remote chip by its chip id (which
/// may turn out to be one of the local cards). `None` if it names none.
fn reported_chip(cards: &[Card], id: &ChipIdentity) -> Option<Chip> {
    let addr = crate::sys::get_str(&id.pci_address);
    let by_asic = || {
        (id.asic_id != 0)
            .then(|| cards.iter().find(|c| c.asic_id == id.asic_id))
            .flatten()
    };
    if id.is_remote == 0 {
        let card = cards
            .iter()
            .find(|c| id.pcie_index >= 0 && c.index == id.pcie_index as u32)
            .or_else(|| {
                cards
                    .iter()
                    .find(|c| !addr.is_empty() && c.pci_address == addr)
            })
            .or_else(by_asic);
        return match card {
            Some(c) => Some(Chip::Local(c.index)),
            None if id.pcie_index >= 0 => Some(Chip::Local(id.pcie_index as u32)),
            None if id.asic_id != 0 => Some(Chip::Asic(id.asic_id)),
            None => None,
        };
    }
    match by_asic() {
        Some(c) => Some(Chip::Local(c.index)),
        None if id.asic_id != 0 => Some(Chip::Asic(id.asic_id)),
        None => None,
    }
}

/// Whether an identity names a card of this host (a local chip whose index, address
/// or id is a card's): one that names none is logged.
pub fn names_a_card(cards: &[Card], id: &ChipIdentity) -> bool {
    match reported_chip(cards, id) {
        Some(Chip::Local(i)) => cards.iter().any(|c| c.index == i),
        Some(_) => id.is_remote != 0,
        None => id.is_remote != 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cards() -> Vec<Card> {
        (0..3)
            .map(|i| Card {
                index: i,
                pci_address: format!("0000:0{}:00.0", i + 1),
                board_id: 0x100 + i as u64,
                asic_id: 0xA00 + i as u64,
            })
            .collect()
    }
    fn placed(visible: Option<VisibleDevices>) -> Placement {
        Placement {
            visible,
            ..Default::default()
        }
    }
    const K: (u32, u64) = (7, 70);

    #[test]
    fn visible_devices_choose_the_cards_in_index_order() {
        let c = cards();
        let set = |s: &str| placed(Some(VisibleDevices::Set(s.into())));
        assert_eq!(
            resolve(&c, K, &set("2"), 0),
            (Chip::Local(2), Source::Inferred)
        );
        assert_eq!(resolve(&c, K, &set("2,1"), 0).0, Chip::Local(1));
        assert_eq!(resolve(&c, K, &set("2,1"), 1).0, Chip::Local(2));
        assert_eq!(resolve(&c, K, &set(" 1 , 2 "), 1).0, Chip::Local(2));
        assert_eq!(resolve(&c, K, &set("0000:03:00.0"), 0).0, Chip::Local(2));
        // Beyond the visible local chips: a remote chip of this process alone.
        let r = resolve(&c, K, &set("1"), 1);
        assert_eq!(r.1, Source::Unplaced);
        assert_eq!(
            r.0,
            Chip::Unplaced {
                pid: 7,
                start_time: 70,
                logical: 1
            }
        );
        // A card that does not exist is not visible.
        assert_eq!(resolve(&c, K, &set("9,1"), 0).0, Chip::Local(1));
        for bad in ["x", "1;2", "-1", "01", ""] {
            assert_eq!(resolve(&c, K, &set(bad), 0).1, Source::Unplaced, "{bad:?}");
        }
        let all = placed(Some(VisibleDevices::Unset));
        assert_eq!(resolve(&c, K, &all, 2).0, Chip::Local(2));
        assert_eq!(
            resolve(&c, K, &placed(Some(VisibleDevices::Unknown)), 0).1,
            Source::Unplaced
        );
        assert_eq!(resolve(&c, K, &placed(None), 0).1, Source::Unplaced);
        // No cards: as reported, whatever the variable says.
        assert_eq!(
            resolve(&[], K, &set("2"), 3),
            (Chip::AsReported(3), Source::AsReported)
        );
    }

    #[test]
    fn a_reported_identity_wins_and_is_matched_to_the_cards() {
        let c = cards();
        let mut p = placed(Some(VisibleDevices::Set("0".into())));
        let id = |remote, idx, asic, addr: &str| ChipIdentity {
            struct_size: CHIP_IDENTITY_V1_SIZE,
            is_remote: remote,
            pcie_index: idx,
            via_pcie_index: -1,
            board_id: 0,
            asic_id: asic,
            pci_address: crate::sys::put_str(addr),
        };
        p.reported.insert(0, id(0, 2, 0, ""));
        assert_eq!(resolve(&c, K, &p, 0), (Chip::Local(2), Source::Reported));
        p.reported.insert(0, id(0, -1, 0, "0000:02:00.0"));
        assert_eq!(resolve(&c, K, &p, 0).0, Chip::Local(1));
        p.reported.insert(0, id(0, -1, 0xA02, ""));
        assert_eq!(resolve(&c, K, &p, 0).0, Chip::Local(2));
        p.reported.insert(1, id(1, -1, 0xBEEF, ""));
        assert_eq!(
            resolve(&c, K, &p, 1),
            (Chip::Asic(0xBEEF), Source::Reported)
        );
        assert!(names_a_card(&c, &p.reported[&1]));
        // A remote chip reported with no id cannot be placed.
        p.reported.insert(1, id(1, -1, 0, ""));
        assert_eq!(resolve(&c, K, &p, 1).1, Source::Unplaced);
        // A local chip no card matches is logged but taken at its word.
        let stray = id(0, 7, 0, "");
        assert!(!names_a_card(&c, &stray));
        p.reported.insert(0, stray);
        assert_eq!(resolve(&c, K, &p, 0).0, Chip::Local(7));
        // With no cards at all: as reported, as every other process's ids there.
        assert_eq!(
            resolve(&[], K, &p, 0),
            (Chip::AsReported(0), Source::AsReported)
        );
        assert_eq!(resolve(&[], K, &p, 1).0, Chip::AsReported(1));
    }

    #[test]
    fn identities_from_shared_memory_are_checked() {
        let good = ChipIdentity {
            struct_size: CHIP_IDENTITY_V1_SIZE,
            pcie_index: 1,
            via_pcie_index: -1,
            ..Default::default()
        };
        assert!(validate_identity(&good).is_ok());
        for bad in [
            ChipIdentity {
                struct_size: 8,
                ..good
            },
            ChipIdentity {
                is_remote: 2,
                ..good
            },
            ChipIdentity {
                pcie_index: -2,
                ..good
            },
            ChipIdentity {
                via_pcie_index: 5000,
                ..good
            },
            ChipIdentity {
                pci_address: crate::sys::put_str("../../etc"),
                ..good
            },
        ] {
            assert!(validate_identity(&bad).is_err(), "{bad:?}");
        }
    }
}
