//! Property tests of one lane in a real shared-memory segment file: any interleaving
//! of pushes, reads and commits delivers every event exactly once, in order, across
//! wrap-around; a full ring refuses; corrupt positions are reported, never trusted.

mod common;
use common::TempDir;
use proptest::prelude::*;
use std::sync::atomic::Ordering::*;
use tttrack::aggregator::segment_reader::{MappedSegment, SegmentError};
use tttrack::producer::{publish, write_identity};
use tttrack::segment::SegmentView;
use tttrack::shm_layout::*;

/// Creates a valid segment file for a made-up process and maps it twice: once as the
/// producer does (a raw shared mapping) and once through the consumer's reader.
fn segment(dir: &std::path::Path) -> (memmap2::MmapRaw, MappedSegment) {
    let path = dir.join(segment_file_name(4242, 777));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .unwrap();
    f.set_len(SEGMENT_SIZE as u64).unwrap();
    let map = memmap2::MmapOptions::new()
        .len(SEGMENT_SIZE)
        .map_raw(&f)
        .unwrap();
    // SAFETY: the mapping is SEGMENT_SIZE bytes and outlives every use in the test.
    let seg = unsafe { SegmentView::new(map.as_mut_ptr()) };
    write_identity(seg, 4242, 0, 777, b"ringtest");
    // A test producer owns every lane's pages (sparse files on /dev/shm).
    seg.header()
        .lanes_reserved
        .store(u64::MAX, std::sync::atomic::Ordering::Release);
    let reader = MappedSegment::open(&path).unwrap();
    (map, reader)
}

#[derive(Debug, Clone)]
enum Op {
    Push(usize),
    Read(usize),
    Commit,
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(
        prop_oneof![
            (1usize..20_000).prop_map(Op::Push),
            (1usize..20_000).prop_map(Op::Read),
            Just(Op::Commit),
        ],
        1..60,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn every_event_exactly_once_in_order(ops in ops(), lane in 0usize..NUM_LANES) {
        let dir = TempDir::new("ring");
        let (map, mut reader) = segment(dir.path());
        // SAFETY: as in segment().
        let seg = unsafe { SegmentView::new(map.as_mut_ptr()) };
        let mut head = 0u64;
        let mut pushed = 0u64;
        let mut refused = 0u64;
        let mut got: Vec<Event> = Vec::new();
        let mut buf = Vec::new();
        for op in ops {
            match op {
                Op::Push(n) => for _ in 0..n {
                    let tail = seg.lane(lane).tail.load(Acquire);
                    if head - tail >= LANE_CAPACITY as u64 { refused += 1; continue; }
                    let ev = Event { seq: 0, kind: 1, subtype: 0, _reserved: 0, device: 0, size: pushed, id: pushed };
                    publish(seg, lane, head, ev);
                    head += 1;
                    pushed += 1;
                },
                Op::Read(max) => {
                    buf.clear();
                    reader.read_lane(lane, &mut buf, max).unwrap();
                    got.extend(buf.iter().map(|(e, _)| *e));
                }
                Op::Commit => reader.release(lane, reader.read_pos(lane)),
            }
        }
        loop {
            buf.clear();
            if reader.read_lane(lane, &mut buf, usize::MAX).unwrap() == 0 { break; }
            got.extend(buf.iter().map(|(e, _)| *e));
        }
        prop_assert_eq!(got.len() as u64, pushed);
        for (k, e) in got.iter().enumerate() {
            prop_assert_eq!(e.id, k as u64);
            prop_assert_eq!(e.seq, k as u64);
        }
        // A refusal only ever happened with a full ring (uncommitted reads keep slots).
        prop_assert!(refused == 0 || pushed >= LANE_CAPACITY as u64);
    }

    #[test]
    fn corrupt_positions_are_reported_not_trusted(head in any::<u64>(), tail in any::<u64>()) {
        let dir = TempDir::new("corrupt");
        let (map, _) = segment(dir.path());
        // SAFETY: as in segment().
        let seg = unsafe { SegmentView::new(map.as_mut_ptr()) };
        seg.lane(3).head.store(head, Relaxed);
        seg.lane(3).tail.store(tail, Relaxed);
        let mut reader = MappedSegment::open(&dir.path().join(segment_file_name(4242, 777))).unwrap();
        let mut buf = Vec::new();
        match reader.read_lane(3, &mut buf, usize::MAX) {
            Ok(n) => {
                prop_assert!(head.wrapping_sub(tail) <= LANE_CAPACITY as u64);
                prop_assert_eq!(n as u64, head.wrapping_sub(tail));
            }
            Err(SegmentError::CorruptLane { lane, .. }) => {
                prop_assert_eq!(lane, 3);
                prop_assert!(head.wrapping_sub(tail) > LANE_CAPACITY as u64);
            }
            Err(e) => prop_assert!(false, "unexpected error {e}"),
        }
    }
}

#[test]
fn wrap_around_many_times() {
    let dir = TempDir::new("wrap");
    let (map, mut reader) = segment(dir.path());
    // SAFETY: as in segment().
    let seg = unsafe { SegmentView::new(map.as_mut_ptr()) };
    let total = 10 * LANE_CAPACITY as u64 + 123;
    let mut head = 0u64;
    let mut next = 0u64;
    let mut buf = Vec::new();
    while next < total {
        while head < total && head - seg.lane(0).tail.load(Acquire) < LANE_CAPACITY as u64 {
            let ev = Event {
                seq: 0,
                kind: 2,
                subtype: 0,
                _reserved: 0,
                device: 1,
                size: 0,
                id: head,
            };
            publish(seg, 0, head, ev);
            head += 1;
        }
        buf.clear();
        reader.read_lane(0, &mut buf, 5000).unwrap();
        for (e, pos) in &buf {
            assert_eq!(e.id, next);
            assert_eq!(*pos, next);
            next += 1;
        }
        reader.release(0, reader.read_pos(0));
    }
    assert_eq!(seg.lane(0).tail.load(Acquire), total);
}

#[test]
fn wrong_magic_version_size_and_name_are_rejected() {
    let dir = TempDir::new("reject");
    let (map, _) = segment(dir.path());
    let path = dir.path().join(segment_file_name(4242, 777));
    // SAFETY: as in segment().
    let seg = unsafe { SegmentView::new(map.as_mut_ptr()) };
    seg.header().version.store(99, Relaxed);
    assert!(matches!(
        MappedSegment::open(&path),
        Err(SegmentError::BadVersion(99))
    ));
    seg.header().version.store(SEGMENT_LAYOUT_VERSION, Relaxed);
    seg.header().magic.store(0xdead, Relaxed);
    assert!(matches!(
        MappedSegment::open(&path),
        Err(SegmentError::BadMagic(0xdead))
    ));
    seg.header().magic.store(SEGMENT_MAGIC, Relaxed);
    seg.header().lane_capacity.store(7, Relaxed);
    assert!(matches!(
        MappedSegment::open(&path),
        Err(SegmentError::BadGeometry("lane_capacity"))
    ));
    seg.header()
        .lane_capacity
        .store(LANE_CAPACITY as u32, Relaxed);
    let other = dir.path().join(segment_file_name(4243, 777));
    std::fs::hard_link(&path, &other).unwrap();
    assert!(matches!(
        MappedSegment::open(&other),
        Err(SegmentError::NameMismatch { .. })
    ));
    let short = dir.path().join(segment_file_name(9, 9));
    std::fs::write(&short, b"short").unwrap();
    assert!(matches!(
        MappedSegment::open(&short),
        Err(SegmentError::WrongSize(5))
    ));
    let link = dir.path().join(segment_file_name(10, 10));
    std::os::unix::fs::symlink(&path, &link).unwrap();
    assert!(
        matches!(MappedSegment::open(&link), Err(SegmentError::Io(_))),
        "symlinks are never followed"
    );
    assert!(MappedSegment::open(&path).is_ok());
}
