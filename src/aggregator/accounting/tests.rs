//! The accounting's rules, one event at a time.

use super::*;

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
    let d = &a.devices[&0];
    assert_eq!(d.figures[CAT_L1].peak, 1 << 20);
    assert_eq!(d.figures[CAT_CB].peak, 512 << 10);
    assert_eq!(d.l1_resident_peak, (1 << 20) + (512 << 10), "both at once");
    // DRAM does not count.
    a.apply(
        p,
        &ev(EventKind::Alloc, BufferType::Dram as u8, 0, 1 << 30, 0x20),
        0,
    );
    assert_eq!(a.devices[&0].l1_resident_peak, (1 << 20) + (512 << 10));
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
    assert_eq!(a.devices[&0].figures[CAT_DRAM].used, 100);
    a.apply(p, &ev(EventKind::Free, 0, 0, 0, 7), 0);
    assert_eq!(a.devices[&0].figures[CAT_DRAM].used, 100);
    assert!(matches!(
        a.apply(p, &ev(EventKind::Free, 0, 0, 0, 7), 0),
        Outcome::Freed { last: true, .. }
    ));
    assert_eq!(a.devices[&0].figures[CAT_DRAM].used, 0);
    assert_eq!(a.devices[&0].figures[CAT_DRAM].peak, 100);
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
    assert_eq!(a.devices[&0].figures[CAT_L1].used, 50);
    assert_eq!(a.devices[&0].figures[CAT_CB].used, 0);
}

#[test]
fn cb_and_kernel_frees_use_recorded_sizes() {
    let (mut a, p, _) = acc();
    a.apply(p, &ev(EventKind::CbAlloc, 0, 0, 300, 9), 0);
    a.apply(p, &ev(EventKind::CbFree, 0, 0, 1, 9), 0);
    assert_eq!(a.devices[&0].figures[CAT_CB].used, 0);
    a.apply(p, &ev(EventKind::KernelLoad, 2, 0, 4000, 5), 0);
    a.apply(p, &ev(EventKind::KernelLoad, 0, 0, 1000, 6), 0);
    assert_eq!(a.devices[&0].figures[CAT_KERNEL].used, 5000);
    assert_eq!(a.devices[&0].figures[CAT_KERNEL_DISPATCH].used, 4000);
    a.apply(p, &ev(EventKind::KernelUnload, 0, 0, 77777, 5), 0);
    assert_eq!(a.devices[&0].figures[CAT_KERNEL].used, 1000);
    assert_eq!(a.devices[&0].figures[CAT_KERNEL_DISPATCH].used, 0);
    assert_eq!(a.devices[&0].figures[CAT_KERNEL_APP].used, 1000);
}

#[test]
fn implausible_device_info_is_refused() {
    let (mut a, _, _) = acc();
    let good = DeviceInfo {
        arch: 2,
        total_dram_bytes: 12 << 30,
        total_l1_bytes: 96 << 20,
        ..Default::default()
    };
    assert!(a.set_device_info(0, good));
    assert!(!a.set_device_info(
        0,
        DeviceInfo {
            total_dram_bytes: u64::MAX,
            ..good
        }
    ));
    assert!(!a.set_device_info(0, DeviceInfo { arch: 77, ..good }));
    assert!(!a.set_device_info(64, good));
    assert_eq!(
        a.devices[&0].info,
        Some(good),
        "the earlier description stays"
    );
    assert_eq!(a.invalid_events, 3);
}

#[test]
fn system_memory_is_its_own_figure() {
    let (mut a, p, _) = acc();
    a.apply(p, &ev(EventKind::Alloc, 2, 0, 64, 1), 0);
    let f = &a.devices[&0].figures;
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
    assert_eq!(a.devices[&0].figures[CAT_DRAM].used, 100);
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
    assert_eq!(a.devices[&0].figures[CAT_DRAM].used, 5);
    assert_eq!(a.devices[&1].figures[CAT_L1].used, 0);
    assert_eq!(a.devices[&0].figures[CAT_KERNEL].used, 0);
    assert_eq!(a.devices[&0].figures[CAT_DRAM].peak, (1 << 30) + 5);
    assert!(leak_summary(&a.processes[&q]).is_some());
}
