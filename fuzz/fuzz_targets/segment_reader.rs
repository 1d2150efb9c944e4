//! The aggregator's segment reader on a valid segment overwritten with any bytes
//! anywhere in its header, device slots, lane headers or first lanes' slots (the
//! input is a list of patches: 4-byte offset, 1-byte length, bytes). Opening and
//! draining never panics, never reads outside the mapping and never yields more than a
//! lane's capacity.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::OnceLock;
use tttrack::aggregator::segment_reader::MappedSegment;
use tttrack::shm_layout::*;

/// The part of the segment that patches land in.
const REGION: usize = LANES_OFFSET + 3 * LANE_STRIDE;

struct Fixture {
    path: PathBuf,
    file: std::fs::File,
    pristine: Vec<u8>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("tttrack-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(segment_file_name(777, 888));
        let _ = std::fs::remove_file(&path);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        file.set_len(SEGMENT_SIZE as u64).unwrap();
        let map = memmap2::MmapOptions::new()
            .len(SEGMENT_SIZE)
            .map_raw(&file)
            .unwrap();
        // SAFETY: the mapping is SEGMENT_SIZE bytes and outlives the view.
        let seg = unsafe { tttrack::segment::SegmentView::new(map.as_mut_ptr()) };
        tttrack::producer::write_identity(seg, 777, 0, 888, b"fuzz");
        seg.header()
            .lanes_reserved
            .store(u64::MAX, std::sync::atomic::Ordering::Release);
        for k in 0..100u64 {
            let ev = Event {
                seq: 0,
                kind: 1,
                subtype: 0,
                _reserved: 0,
                device: 0,
                size: 8,
                id: k,
            };
            tttrack::producer::publish(seg, 1, k, ev);
        }
        let mut pristine = vec![0u8; REGION];
        file.read_exact_at(&mut pristine, 0).unwrap();
        Fixture {
            path,
            file,
            pristine,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let mut patched = Vec::new();
    let mut rest = data;
    while rest.len() >= 5 {
        let off = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize % REGION;
        let len = (rest[4] as usize).min(rest.len() - 5).min(REGION - off);
        f.file.write_all_at(&rest[5..5 + len], off as u64).unwrap();
        patched.push((off, len));
        rest = &rest[5 + len..];
    }
    if let Ok(mut r) = MappedSegment::open(&f.path) {
        let mut buf = Vec::new();
        for lane in 0..NUM_LANES {
            buf.clear();
            if let Ok(n) = r.read_lane(lane, &mut buf, usize::MAX) {
                assert!(n <= LANE_CAPACITY);
                assert_eq!(n, buf.len());
            }
        }
        let _ = r.dropped();
        for d in 0..MAX_DEVICES {
            let _ = r.view().read_device_info(d);
        }
        let _ = r.is_alive();
        let _ = r.truncated();
    }
    // Back to the valid segment for the next input.
    for (off, len) in patched {
        f.file
            .write_all_at(&f.pristine[off..off + len], off as u64)
            .unwrap();
    }
});
