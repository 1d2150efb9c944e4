//! The accounting's rules, one event at a time.

use super::*;
use crate::shm_layout::{Event, EventKind};
use placement::Chip::AsReported;

fn ev(kind: EventKind, sub: u8, dev: i32, size: u64, id: u64) -> Event {
    Event {
        seq: 0,
        kind: kind as u8,
        subtype: sub,
        _reserved: 0,
        device: dev,
        size,
        id,
    }
}

#[test]
fn l1_resident_peak_is_the_high_water_mark_of_the_sum() {
    let (mut a, p, _) = acc();
    let l1 = BufferType::L1 as u8;
    a.apply(p, &ev(EventKind::Alloc, l1, 0, 1 << 20, 0x10), 0);
    a.apply(p, &ev(EventKind::CbAlloc, 0, 0, 512 << 10, 1), 0);
    a.apply(p, &ev(EventKind::Free, l1, 0, 0, 0x10), 0);
    a.apply(p, &ev(EventKind::KernelLoad, 0, 0, 100, 7), 0);
    let d = &a.devices[&AsReported(0)];
    assert_eq!(d.figures[CAT_L1].peak, 1 << 20);
    assert_eq!(d.figures[CAT_CB].peak, 512 << 10);
    assert_eq!(d.l1_resident_peak, (1 << 20) + (512 << 10), "both at once");
    // DRAM does not count.
    a.apply(
        p,
        &ev(EventKind::Alloc, BufferType::Dram as u8, 0, 1 << 30, 0x20),
        0,
    );
    assert_eq!(
        a.devices[&AsReported(0)].l1_resident_peak,
        (1 << 20) + (512 << 10)
    );
}

fn acc() -> (Accounting, ProcKey, ProcKey) {
    let mut a = Accounting::default();
    a.processes
        .insert((1, 1), ProcState::new(1, 1, 0, "a".into(), 0));
    a.processes
        .insert((2, 2), ProcState::new(2, 2, 0, "b".into(), 0));
    (a, (1, 1), (2, 2))
}

#[test]
fn refcounted_duplicates_add_once_and_leave_at_zero() {
    let (mut a, p, _) = acc();
    a.apply(p, &ev(EventKind::Alloc, 0, 0, 100, 7), 0);
    assert_eq!(
        a.apply(p, &ev(EventKind::Alloc, 0, 0, 100, 7), 0),
        Outcome::Referenced { refcount: 2 }
    );
    assert_eq!(a.devices[&AsReported(0)].figures[CAT_DRAM].used, 100);
    a.apply(p, &ev(EventKind::Free, 0, 0, 0, 7), 0);
    assert_eq!(a.devices[&AsReported(0)].figures[CAT_DRAM].used, 100);
    assert!(matches!(
        a.apply(p, &ev(EventKind::Free, 0, 0, 0, 7), 0),
        Outcome::Freed { last: true, .. }
    ));
    assert_eq!(a.devices[&AsReported(0)].figures[CAT_DRAM].used, 0);
    assert_eq!(a.devices[&AsReported(0)].figures[CAT_DRAM].peak, 100);
}

#[test]
fn unknown_frees_are_counted_never_subtracted() {
    let (mut a, p, _) = acc();
    a.apply(p, &ev(EventKind::Alloc, 1, 0, 50, 1), 0);
    assert_eq!(
        a.apply(p, &ev(EventKind::Free, 0, 0, 0, 2), 0),
        Outcome::UnknownFree
    );
    assert_eq!(
        a.apply(p, &ev(EventKind::CbFree, 0, 0, 999, 3), 0),
        Outcome::UnknownFree
    );
    assert_eq!(
        a.apply(p, &ev(EventKind::KernelUnload, 0, 0, 999, 4), 0),
        Outcome::UnknownFree
    );
    assert_eq!(a.unknown_frees, 3);
    assert_eq!(a.devices[&AsReported(0)].figures[CAT_L1].used, 50);
    assert_eq!(a.devices[&AsReported(0)].figures[CAT_CB].used, 0);
}

#[test]
fn cb_and_kernel_frees_use_recorded_sizes() {
    let (mut a, p, _) = acc();
    a.apply(p, &ev(EventKind::CbAlloc, 0, 0, 300, 9), 0);
    a.apply(p, &ev(EventKind::CbFree, 0, 0, 1, 9), 0);
    assert_eq!(a.devices[&AsReported(0)].figures[CAT_CB].used, 0);
    a.apply(p, &ev(EventKind::KernelLoad, 2, 0, 4000, 5), 0);
    a.apply(p, &ev(EventKind::KernelLoad, 0, 0, 1000, 6), 0);
    assert_eq!(a.devices[&AsReported(0)].figures[CAT_KERNEL].used, 5000);
    assert_eq!(
        a.devices[&AsReported(0)].figures[CAT_KERNEL_DISPATCH].used,
        4000
    );
    a.apply(p, &ev(EventKind::KernelUnload, 0, 0, 77777, 5), 0);
    assert_eq!(a.devices[&AsReported(0)].figures[CAT_KERNEL].used, 1000);
    assert_eq!(
        a.devices[&AsReported(0)].figures[CAT_KERNEL_DISPATCH].used,
        0
    );
    assert_eq!(a.devices[&AsReported(0)].figures[CAT_KERNEL_APP].used, 1000);
}

#[test]
fn implausible_device_info_is_refused() {
    let (mut a, p, _) = acc();
    let good = DeviceInfo {
        arch: 2,
        total_dram_bytes: 12 << 30,
        total_l1_bytes: 96 << 20,
        ..Default::default()
    };
    assert!(a.set_device_info(p, 0, good));
    assert!(!a.set_device_info(
        p,
        0,
        DeviceInfo {
            total_dram_bytes: u64::MAX,
            ..good
        }
    ));
    assert!(!a.set_device_info(p, 0, DeviceInfo { arch: 77, ..good }));
    assert!(!a.set_device_info(p, 64, good));
    assert_eq!(
        a.devices[&AsReported(0)].info,
        Some(good),
        "the earlier description stays"
    );
    assert_eq!(a.invalid_events, 3);
}

#[test]
fn system_memory_is_its_own_figure() {
    let (mut a, p, _) = acc();
    a.apply(p, &ev(EventKind::Alloc, 2, 0, 64, 1), 0);
    let f = &a.devices[&AsReported(0)].figures;
    assert_eq!(f[CAT_SYSTEM_MEMORY].used, 64);
    assert_eq!(f[CAT_L1_SMALL].used, 0);
    assert_eq!(f[CAT_DRAM].used, 0);
}

#[test]
fn one_process_cannot_free_anothers_buffer() {
    let (mut a, p, q) = acc();
    a.apply(p, &ev(EventKind::Alloc, 0, 0, 100, 0x1000), 0);
    assert_eq!(
        a.apply(q, &ev(EventKind::Free, 0, 0, 0, 0x1000), 0),
        Outcome::UnknownFree
    );
    assert_eq!(a.devices[&AsReported(0)].figures[CAT_DRAM].used, 100);
    assert_eq!(a.processes[&p].devices[&0].used[CAT_DRAM], 100);
}

#[test]
fn invalid_events_change_nothing() {
    let (mut a, p, _) = acc();
    for e in [
        ev(EventKind::Alloc, 9, 0, 10, 1),
        ev(EventKind::Alloc, 0, 64, 10, 1),
        ev(EventKind::Alloc, 0, -1, 10, 1),
        ev(EventKind::Alloc, 0, 0, 0, 1),
        ev(EventKind::Alloc, 0, 0, MAX_EVENT_SIZE + 1, 1),
        ev(EventKind::KernelLoad, 3, 0, 10, 1),
        Event {
            kind: 77,
            ..ev(EventKind::Alloc, 0, 0, 10, 1)
        },
    ] {
        assert!(matches!(a.apply(p, &e, 0), Outcome::Invalid(_)), "{e:?}");
    }
    assert_eq!(a.invalid_events, 7);
    assert_eq!(a.events_applied, 0);
    assert!(a
        .devices
        .values()
        .all(|d| d.figures.iter().all(|f| f.used == 0)));
}

#[test]
fn release_removes_everything_a_process_held_and_keeps_others() {
    let (mut a, p, q) = acc();
    a.apply(p, &ev(EventKind::Alloc, 0, 0, 1 << 30, 1), 0);
    a.apply(p, &ev(EventKind::Alloc, 1, 1, 3 << 20, 2), 0);
    a.apply(p, &ev(EventKind::KernelLoad, 0, 0, 100, 3), 0);
    a.apply(q, &ev(EventKind::Alloc, 0, 0, 5, 1), 0);
    let line = leak_summary(&a.processes[&p]).unwrap();
    assert_eq!(
        line,
        "pid 1 (a) exited holding 2 buffers: DRAM 1.0 GiB, L1 3.0 MiB, 1 kernel (100 B)"
    );
    a.release(p);
    assert_eq!(a.devices[&AsReported(0)].figures[CAT_DRAM].used, 5);
    assert_eq!(a.devices[&AsReported(1)].figures[CAT_L1].used, 0);
    assert_eq!(a.devices[&AsReported(0)].figures[CAT_KERNEL].used, 0);
    assert_eq!(
        a.devices[&AsReported(0)].figures[CAT_DRAM].peak,
        (1 << 30) + 5
    );
    assert!(leak_summary(&a.processes[&q]).is_some());
}

fn two_cards() -> Vec<placement::Card> {
    (0..2)
        .map(|i| placement::Card {
            index: i,
            pci_address: format!("0000:0{}:00.0", i + 1),
            board_id: 0,
            asic_id: 0xA0 + i as u64,
        })
        .collect()
}

#[test]
fn each_process_device_zero_is_its_own_card() {
    use crate::segment::VisibleDevices::*;
    use placement::Chip::*;
    let (mut a, p, q) = acc();
    a.set_cards(two_cards());
    a.set_visible(p, Set("1".into()));
    a.set_visible(q, Set("0".into()));
    let dram = BufferType::Dram as u8;
    a.apply(p, &ev(EventKind::Alloc, dram, 0, 100, 1), 0);
    a.apply(q, &ev(EventKind::Alloc, dram, 0, 7, 1), 0);
    assert_eq!(a.devices[&Local(1)].figures[CAT_DRAM].used, 100);
    assert_eq!(a.devices[&Local(0)].figures[CAT_DRAM].used, 7);
    assert_eq!((a.devices[&Local(0)].row, a.devices[&Local(1)].row), (0, 1));
    // p's device 1 is past its one visible card: a remote chip of p's alone, in a row
    // after the cards.
    a.apply(p, &ev(EventKind::Alloc, dram, 1, 5, 2), 0);
    let remote = Unplaced {
        pid: 1,
        start_time: 1,
        logical: 1,
    };
    assert_eq!(a.devices[&remote].row, 2);
    a.check_device_sums().unwrap();
    a.release(p);
    assert!(!a.devices.contains_key(&remote), "p's own chip ends with p");
    assert_eq!(a.devices[&Local(1)].figures[CAT_DRAM].used, 0);
    a.check_device_sums().unwrap();
}

#[test]
fn a_late_identity_moves_exactly_that_device() {
    use crate::segment::VisibleDevices::*;
    use placement::Chip::*;
    let (mut a, p, q) = acc();
    a.set_cards(two_cards());
    a.set_visible(p, Unset);
    a.set_visible(q, Unset);
    let (dram, l1) = (BufferType::Dram as u8, BufferType::L1 as u8);
    for k in 0..10 {
        a.apply(p, &ev(EventKind::Alloc, dram, 0, 1000 + k, k), 0);
        a.apply(q, &ev(EventKind::Alloc, l1, 0, 3, k), 0);
    }
    a.apply(p, &ev(EventKind::Free, 0, 0, 0, 3), 0);
    let before = a.devices[&Local(0)].figures[CAT_DRAM];
    // p says its device 0 is card 1 after all (by chip id).
    let id = ChipIdentity {
        struct_size: crate::shm_layout::CHIP_IDENTITY_V1_SIZE,
        pcie_index: -1,
        via_pcie_index: -1,
        asic_id: 0xA1,
        ..Default::default()
    };
    a.set_identity(p, 0, id).unwrap();
    let moved = a.devices[&Local(1)].figures[CAT_DRAM];
    assert_eq!(moved.used, before.used);
    assert_eq!(moved.count, 9);
    assert_eq!(a.devices[&Local(0)].figures[CAT_DRAM].used, 0);
    assert_eq!(a.devices[&Local(0)].figures[CAT_L1].used, 30, "q's stay");
    assert_eq!(
        a.processes[&p].chip_of(0),
        Some((Local(1), placement::Source::Reported))
    );
    a.check_device_sums().unwrap();
    // Later events follow the new placement; a free finds its buffer wherever it went.
    a.apply(p, &ev(EventKind::Free, 0, 0, 0, 4), 0);
    assert_eq!(a.devices[&Local(1)].figures[CAT_DRAM].count, 8);
    // A remote chip named by its id is one row for every process that names it.
    let remote = ChipIdentity {
        is_remote: 1,
        asic_id: 0xBEEF,
        via_pcie_index: 1,
        ..id
    };
    a.set_identity(p, 1, remote).unwrap();
    a.set_identity(q, 3, remote).unwrap();
    a.apply(p, &ev(EventKind::Alloc, dram, 1, 11, 50), 0);
    a.apply(q, &ev(EventKind::Alloc, dram, 3, 22, 50), 0);
    assert_eq!(a.devices[&Asic(0xBEEF)].figures[CAT_DRAM].used, 33);
    a.check_device_sums().unwrap();
    // Refused, counted, and nothing moves.
    let invalid = a.invalid_events;
    assert!(a
        .set_identity(p, 0, ChipIdentity { is_remote: 9, ..id })
        .is_err());
    assert_eq!(a.invalid_events, invalid + 1);
    assert_eq!(a.processes[&p].chip_of(0).unwrap().0, Local(1));
}

#[test]
fn cards_found_after_events_move_figures_off_the_ids_as_reported() {
    use crate::segment::VisibleDevices::*;
    use placement::Chip::*;
    let (mut a, p, q) = acc();
    a.set_visible(p, Set("1".into()));
    a.set_visible(q, Unset);
    let dram = BufferType::Dram as u8;
    a.apply(p, &ev(EventKind::Alloc, dram, 0, 100, 1), 0);
    a.apply(q, &ev(EventKind::Alloc, dram, 0, 1, 1), 0);
    assert_eq!(a.devices[&AsReported(0)].figures[CAT_DRAM].used, 101);
    a.set_cards(two_cards());
    assert_eq!(a.devices[&Local(1)].figures[CAT_DRAM].used, 100);
    assert_eq!(a.devices[&Local(0)].figures[CAT_DRAM].used, 1);
    // The row of ids as reported names no chip once the cards are known: gone, not
    // left beside the cards' rows holding nothing.
    assert!(!a.devices.contains_key(&AsReported(0)));
    a.check_device_sums().unwrap();
    let placed = a.take_placed();
    assert!(placed
        .iter()
        .any(|x| x.key == p && x.chip == Local(1) && x.moved_from == Some(0)));
}

#[test]
fn a_remote_row_gives_way_to_a_card_that_appears() {
    use crate::segment::VisibleDevices::*;
    use placement::Chip::*;
    let (mut a, p, _) = acc();
    a.set_cards(two_cards()[..1].to_vec());
    a.set_visible(p, Unset);
    a.apply(p, &ev(EventKind::Alloc, BufferType::Dram as u8, 1, 5, 1), 0);
    let remote = Unplaced {
        pid: 1,
        start_time: 1,
        logical: 1,
    };
    assert_eq!(a.devices[&remote].row, 1);
    // A second card appears (a driver loaded late): device 1 is that card now.
    a.set_cards(two_cards());
    assert!(!a.devices.contains_key(&remote));
    assert_eq!(a.devices[&Local(1)].figures[CAT_DRAM].used, 5);
    let rows: Vec<u32> = a.devices.values().map(|d| d.row).collect();
    let mut unique = rows.clone();
    unique.dedup();
    assert_eq!(rows, unique, "no two rows share an id");
}

/// Every kind of event, on five devices (and now and then on an invalid one, or with an
/// invalid size), ids from a small range: re-reports, frees of live and unknown ids.
fn mixed_events(n: usize) -> Vec<Event> {
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut events = Vec::new();
    for _ in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let kind = [
            EventKind::Alloc,
            EventKind::Alloc,
            EventKind::Free,
            EventKind::Free,
            EventKind::CbAlloc,
            EventKind::CbFree,
            EventKind::KernelLoad,
            EventKind::KernelUnload,
        ][(x % 8) as usize];
        let device = if x.is_multiple_of(97) {
            70
        } else {
            ((x >> 8) % 5) as i32
        };
        let size = if x.is_multiple_of(89) {
            0
        } else {
            1 + (x >> 16) % 4096
        };
        events.push(ev(
            kind,
            ((x >> 24) % 6) as u8,
            device,
            size,
            (x >> 32) % 300,
        ));
    }
    events
}

/// A run applied in passes (as the aggregator applies a drained batch) leaves exactly
/// the figures the same events leave applied one at a time: events alternating five
/// devices, two of them on one chip, with invalid events, unknown frees and
/// re-reported buffers among them.
#[test]
fn a_run_applied_at_once_equals_one_event_at_a_time() {
    use crate::segment::VisibleDevices::Unset;
    let (mut a, p, _) = acc();
    a.set_cards(two_cards());
    a.set_visible(p, Unset);
    let remote = ChipIdentity {
        struct_size: std::mem::size_of::<ChipIdentity>() as u32,
        is_remote: 1,
        asic_id: 0xBEEF,
        via_pcie_index: 0,
        ..Default::default()
    };
    a.set_identity(p, 2, remote).unwrap();
    a.set_identity(p, 3, remote).unwrap();
    let events = mixed_events(20_000);
    let mut at_once = a.clone();
    let mut i = 0;
    while i < events.len() {
        i += at_once.apply_run(p, &events[i..], |e| e, 7).0;
    }
    for e in &events {
        a.apply(p, e, 7);
    }
    at_once.check_device_sums().unwrap();
    assert!(
        a.devices.len() >= 4,
        "two cards, the remote chip, an unplaced one"
    );
    let remote_chip = at_once.processes[&p].chip_of(2).unwrap().0;
    assert_eq!(at_once.processes[&p].chip_of(3).unwrap().0, remote_chip);
    for (chip, d) in &a.devices {
        let o = &at_once.devices[chip];
        assert_eq!(
            (d.figures, d.l1_resident_peak, d.row),
            (o.figures, o.l1_resident_peak, o.row)
        );
    }
    let (pa, po) = (&a.processes[&p], &at_once.processes[&p]);
    for (dev, d) in &pa.devices {
        let o = &po.devices[dev];
        assert_eq!(
            (d.used, d.count, d.peak, d.chip),
            (o.used, o.count, o.peak, o.chip)
        );
        assert!(d.buffers == o.buffers && d.cbs == o.cbs && d.kernels == o.kernels);
    }
    assert_eq!(pa.devices.len(), po.devices.len());
    let counts = |p: &ProcState| {
        (
            p.events_applied,
            p.unknown_frees,
            p.invalid_events,
            p.live_buffers(),
        )
    };
    assert_eq!(counts(pa), counts(po));
    assert!(pa.invalid_events > 0 && pa.unknown_frees > 0 && pa.live_buffers() > 0);
    assert_eq!(
        (a.events_applied, a.unknown_frees, a.invalid_events),
        (
            at_once.events_applied,
            at_once.unknown_frees,
            at_once.invalid_events
        )
    );
}
