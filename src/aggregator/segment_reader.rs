//! The consumer's side of a segment: open it without trusting it, tell whether its
//! process lives, and drain its lanes.
//!
//! Every value read from the mapping is checked before use: the header must match this
//! build's layout exactly, a lane's head may never run backwards nor more than a ring's
//! capacity ahead of the consumer. A segment that breaks a rule is reported as an error
//! and the caller stops reading it; nothing here can panic or read outside the mapping
//! because of what the file contains.

use crate::segment::SegmentView;
use crate::shm_layout::*;
use core::sync::atomic::Ordering::*;
use std::fmt;
use std::fs::File;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// Why a segment was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SegmentError {
    Io(String),
    NotRegularFile,
    WrongSize(u64),
    /// Magic still zero: the producer has not finished creating it.
    NotReady,
    BadMagic(u64),
    BadVersion(u32),
    BadGeometry(&'static str),
    NameMismatch {
        file_pid: u32,
        header_pid: u32,
    },
    /// The file was truncated while mapped (its pages now read as zeros).
    Truncated,
    /// A lane's positions broke the ring's rules.
    CorruptLane {
        lane: usize,
        head: u64,
        tail: u64,
    },
}

impl fmt::Display for SegmentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(e) => write!(f, "{e}"),
            Self::NotRegularFile => write!(f, "not a regular file"),
            Self::WrongSize(s) => write!(f, "size {s} bytes, expected {SEGMENT_SIZE}"),
            Self::NotReady => write!(f, "not initialised yet"),
            Self::BadMagic(m) => write!(f, "bad magic {m:#018x}"),
            Self::BadVersion(v) => write!(
                f,
                "layout version {v}, this build reads version {SEGMENT_LAYOUT_VERSION} \
                 (producer and aggregator come from different tttrack releases)"
            ),
            Self::BadGeometry(what) => write!(f, "header field {what} does not match this build"),
            Self::NameMismatch {
                file_pid,
                header_pid,
            } => write!(f, "file name says pid {file_pid}, header says pid {header_pid}"),
            Self::Truncated => write!(f, "the file was truncated while in use"),
            Self::CorruptLane { lane, head, tail } => write!(
                f,
                "lane {lane} is corrupt (head {head}, consumer position {tail}, capacity {LANE_CAPACITY})"
            ),
        }
    }
}

impl std::error::Error for SegmentError {}

/// A segment mapped by the consumer.
pub struct MappedSegment {
    pub path: PathBuf,
    pub pid: u32,
    pub start_time: u64,
    /// Owner of the file (the only user it may be attributed to).
    pub file_uid: u32,
    pub header_uid: u32,
    pub comm: String,
    file: File,
    /// Declared before `map`: unregistered before the range is unmapped.
    guard: crate::aggregator::fault_guard::Guard,
    map: memmap2::MmapRaw,
    /// Each lane's read position.
    read: [u64; NUM_LANES],
    /// Each lane's released position as this reader last gave it back ([`Self::release`]):
    /// a lane's head may run at most a lane's capacity ahead of it, whatever the tail
    /// word in shared memory says.
    released: [std::cell::Cell<u64>; NUM_LANES],
}

impl MappedSegment {
    /// Opens and validates a segment. Never follows a symlink.
    pub fn open(path: &Path) -> Result<Self, SegmentError> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(path)
            .map_err(|e| SegmentError::Io(e.to_string()))?;
        let meta = file
            .metadata()
            .map_err(|e| SegmentError::Io(e.to_string()))?;
        if !meta.file_type().is_file() {
            return Err(SegmentError::NotRegularFile);
        }
        if meta.len() != SEGMENT_SIZE as u64 {
            return Err(SegmentError::WrongSize(meta.len()));
        }
        let map = memmap2::MmapOptions::new()
            .len(SEGMENT_SIZE)
            .map_raw(&file)
            .map_err(|e| SegmentError::Io(e.to_string()))?;
        let guard = crate::aggregator::fault_guard::register(map.as_ptr(), SEGMENT_SIZE);
        // SAFETY: map covers SEGMENT_SIZE bytes, page aligned, and lives in self.
        let view = unsafe { SegmentView::new(map.as_mut_ptr()) };
        let h = view.header();
        check_header(h)?;
        let header_pid = h.pid.load(Relaxed);
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let (file_pid, file_st) = parse_segment_file_name(name).unwrap_or((0, 0));
        if file_pid != header_pid || file_st != h.start_time.load(Relaxed) {
            return Err(SegmentError::NameMismatch {
                file_pid,
                header_pid,
            });
        }
        let mut read = [0u64; NUM_LANES];
        let reserved = h.lanes_reserved.load(Acquire);
        for (i, c) in read.iter_mut().enumerate() {
            if reserved & (1 << i) != 0 {
                *c = view.lane(i).tail.load(Acquire);
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            pid: header_pid,
            start_time: h.start_time.load(Relaxed),
            file_uid: meta.uid(),
            header_uid: h.uid.load(Relaxed),
            comm: view.comm(),
            file,
            guard,
            map,
            released: read.map(std::cell::Cell::new),
            read,
        })
    }

    pub fn view(&self) -> SegmentView<'_> {
        // SAFETY: the mapping is SEGMENT_SIZE bytes and lives as long as self.
        unsafe { SegmentView::new(self.map.as_mut_ptr()) }
    }

    /// True while the producing process holds its lock on the file (it is alive). A
    /// dead process's lock is released by the kernel, whatever became of its PID.
    pub fn is_alive(&self) -> bool {
        let fd = self.file.as_raw_fd();
        // SAFETY: fd is our open descriptor of the segment.
        let r = unsafe { libc::flock(fd, libc::LOCK_SH | libc::LOCK_NB) };
        if r == 0 {
            // SAFETY: as above; drop the lock we just took.
            unsafe { libc::flock(fd, libc::LOCK_UN) };
            false
        } else {
            true
        }
    }

    /// Marks the segment as drained by an aggregator (the producer's full-lane policy
    /// reads this).
    pub fn heartbeat(&self, consumer_pid: u32, now_ns: u64) {
        let view = self.view();
        let h = view.header();
        if h.consumer_pid.load(Relaxed) != consumer_pid {
            h.consumer_pid.store(consumer_pid, Relaxed);
        }
        h.consumer_heartbeat_ns.store(now_ns, Release);
    }

    /// Lane `i`'s read position.
    pub fn read_pos(&self, i: usize) -> u64 {
        self.read[i]
    }

    /// Moves lane `i`'s read position (to where the journal says it was applied).
    pub fn set_read_pos(&mut self, i: usize, pos: u64) {
        self.read[i] = pos;
    }

    /// Lane `i`'s released position, as this reader last published it.
    pub fn released(&self, i: usize) -> u64 {
        self.released[i].get()
    }

    /// Copies the events published in lane `i` beyond the read position into `out` (at
    /// most `max`), each with its lane position, and advances the read position. Does
    /// not release their slots: call [`Self::release`] once the events are applied and journaled.
    pub fn read_lane(
        &mut self,
        i: usize,
        out: &mut Vec<(Event, u64)>,
        max: usize,
    ) -> Result<usize, SegmentError> {
        let view = self.view();
        if !self.lane_reserved(i) {
            return Ok(0);
        }
        let lane = view.lane(i);
        let head = lane.head.load(Acquire);
        if self.guard.faulted() {
            return Err(SegmentError::Truncated);
        }
        let cur = self.read[i];
        let released = self.released[i].get();
        let avail = head.wrapping_sub(cur);
        // Measured from what was given back, not only from what was read: a head that
        // keeps moving a capacity ahead of the read position would otherwise make the
        // reader hold ever more events that were never given back.
        let ahead = cur.wrapping_sub(released);
        if avail > LANE_CAPACITY as u64
            || ahead > LANE_CAPACITY as u64
            || head.wrapping_sub(released) > LANE_CAPACITY as u64
        {
            return Err(SegmentError::CorruptLane {
                lane: i,
                head,
                tail: released,
            });
        }
        let n = (avail as usize).min(max);
        for k in 0..n as u64 {
            let pos = cur.wrapping_add(k);
            let s = view.slot(i, pos);
            let w = [
                s.words[0].load(Relaxed),
                s.words[1].load(Relaxed),
                s.words[2].load(Relaxed),
                s.words[3].load(Relaxed),
            ];
            out.push((Event::from_words(w), pos));
        }
        if self.guard.faulted() {
            out.truncate(out.len() - n);
            return Err(SegmentError::Truncated);
        }
        self.read[i] = cur.wrapping_add(n as u64);
        Ok(n)
    }

    /// Whether lane `i` has pages (only such lanes are ever touched).
    pub fn lane_reserved(&self, i: usize) -> bool {
        i < NUM_LANES && self.view().header().lanes_reserved.load(Acquire) & (1 << i) != 0
    }

    /// Publishes `pos` as lane `i`'s released position (its `tail` word): the producer
    /// may reuse every slot below it.
    pub fn release(&self, i: usize, pos: u64) {
        if self.lane_reserved(i) {
            self.released[i].set(pos);
            self.view().lane(i).tail.store(pos, Release);
        }
    }

    /// Whether the file was truncated under the mapping (a fault was caught, or the
    /// file no longer has its full size).
    pub fn truncated(&self) -> bool {
        self.guard.faulted()
            || self
                .file
                .metadata()
                .map(|m| m.len() != SEGMENT_SIZE as u64)
                .unwrap_or(true)
    }

    /// Events the process reported as dropped (all lanes plus lane-less events).
    pub fn dropped(&self) -> u64 {
        let v = self.view();
        let mut n = v.header().no_lane_dropped.load(Relaxed);
        for i in (0..NUM_LANES).filter(|&i| self.lane_reserved(i)) {
            n = n.saturating_add(v.lane(i).dropped.load(Relaxed));
        }
        n
    }
}

/// The header's magic, version and geometry must be this build's exactly.
fn check_header(h: &SegmentHeader) -> Result<(), SegmentError> {
    let magic = h.magic.load(Acquire);
    if magic == 0 {
        return Err(SegmentError::NotReady);
    }
    if magic != SEGMENT_MAGIC {
        return Err(SegmentError::BadMagic(magic));
    }
    let v = h.version.load(Relaxed);
    if v != SEGMENT_LAYOUT_VERSION {
        return Err(SegmentError::BadVersion(v));
    }
    let checks: [(&'static str, bool); 6] = [
        (
            "header_size",
            h.header_size.load(Relaxed) as usize == core::mem::size_of::<SegmentHeader>(),
        ),
        (
            "segment_size",
            h.segment_size.load(Relaxed) == SEGMENT_SIZE as u64,
        ),
        ("num_lanes", h.num_lanes.load(Relaxed) as usize == NUM_LANES),
        (
            "lane_capacity",
            h.lane_capacity.load(Relaxed) as usize == LANE_CAPACITY,
        ),
        (
            "lanes_offset",
            h.lanes_offset.load(Relaxed) == LANES_OFFSET as u64,
        ),
        (
            "lane_stride",
            h.lane_stride.load(Relaxed) == LANE_STRIDE as u64,
        ),
    ];
    match checks.iter().find(|(_, ok)| !ok) {
        Some((what, _)) => Err(SegmentError::BadGeometry(what)),
        None => Ok(()),
    }
}

/// Lists the segment files in a directory (names `seg.PID.START`), sorted.
pub fn list_segments(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if let Some(name) = e.file_name().to_str() {
            if parse_segment_file_name(name).is_some() {
                v.push(e.path());
            }
        }
    }
    v.sort();
    Ok(v)
}
