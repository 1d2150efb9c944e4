//! The counters page mapped: the aggregator's writer and every reader's copy, under
//! sequence locks (see [`super`]).

use super::*;
use crate::shm_layout::COUNTERS_MAGIC;
use bytemuck::Pod;
use core::mem::size_of;
use core::sync::atomic::{fence, AtomicU64, Ordering::*};

/// A mapping of a counters page, for reading or (the aggregator) writing.
pub struct PageView {
    base: *mut u8,
}

// SAFETY: all access through a PageView goes through atomics; the mapping outlives it
// by the contract of `new`.
unsafe impl Send for PageView {}
// SAFETY: as above.
unsafe impl Sync for PageView {}

impl PageView {
    /// # Safety
    /// `base` must be 8-byte aligned and valid for [`PAGE_SIZE`] bytes (read-only
    /// mappings are fine if only the read methods are used) for the life of the view.
    pub unsafe fn new(base: *mut u8) -> Self {
        debug_assert!(!base.is_null() && (base as usize).is_multiple_of(8));
        Self { base }
    }

    pub fn header(&self) -> &PageHeader {
        // SAFETY: offset 0 within the mapping; PageHeader is all atomics.
        unsafe { &*(self.base as *const PageHeader) }
    }

    fn words(&self, offset: usize, n: usize) -> &[AtomicU64] {
        assert!(offset.is_multiple_of(8) && offset + n * 8 <= PAGE_SIZE);
        // SAFETY: the range is inside the mapping (asserted), 8-aligned; AtomicU64 is
        // valid for any bit pattern.
        unsafe { core::slice::from_raw_parts(self.base.add(offset) as *const AtomicU64, n) }
    }

    fn store<T: Pod>(&self, offset: usize, v: &T) {
        let src: &[u64] = bytemuck::cast_slice(core::slice::from_ref(v));
        for (a, w) in self.words(offset, words::<T>()).iter().zip(src) {
            a.store(*w, Relaxed);
        }
    }

    /// Stores the first `bytes` (a multiple of 8) of `v`.
    fn store_prefix<T: Pod>(&self, offset: usize, v: &T, bytes: usize) {
        let src: &[u64] = bytemuck::cast_slice(core::slice::from_ref(v));
        let n = (bytes / 8).min(src.len());
        for (a, w) in self.words(offset, n).iter().zip(&src[..n]) {
            a.store(*w, Relaxed);
        }
    }

    /// Loads the first `bytes` (a multiple of 8) of a `T`; the rest is zero.
    fn load_prefix<T: Pod>(&self, offset: usize, bytes: usize) -> T {
        let mut v = T::zeroed();
        let dst: &mut [u64] = bytemuck::cast_slice_mut(core::slice::from_mut(&mut v));
        let n = (bytes / 8).min(dst.len());
        for (d, a) in dst[..n].iter_mut().zip(self.words(offset, n)) {
            *d = a.load(Relaxed);
        }
        v
    }

    fn load<T: Pod>(&self, offset: usize) -> T {
        let mut v = T::zeroed();
        let dst: &mut [u64] = bytemuck::cast_slice_mut(core::slice::from_mut(&mut v));
        for (d, a) in dst.iter_mut().zip(self.words(offset, words::<T>())) {
            *d = a.load(Relaxed);
        }
        v
    }

    // ---- writer side (the aggregator) ----

    pub fn init(&self, pid: u32, started_unix_ns: u64) {
        let p = &self.header().presence;
        p.version.store(COUNTERS_LAYOUT_VERSION, Relaxed);
        p.aggregator_pid.store(pid, Relaxed);
        p.started_unix_ns.store(started_unix_ns, Relaxed);
        p.page_size.store(PAGE_SIZE as u64, Relaxed);
        p.heartbeat_ns.store(crate::sys::monotonic_ns(), Relaxed);
        p.magic.store(COUNTERS_MAGIC, Release);
    }

    pub fn beat(&self) {
        self.header()
            .presence
            .heartbeat_ns
            .store(crate::sys::monotonic_ns(), Release);
    }

    /// Publishes status, devices and processes under the main sequence lock.
    pub fn publish_main(
        &self,
        status: &AggregatorStatus,
        devices: &[DeviceRecord],
        processes: &[ProcessRecord],
    ) {
        let seq = &self.header().main_seq;
        let s = seq.load(Relaxed);
        seq.store(s.wrapping_add(1) | 1, Relaxed);
        fence(Release);
        let mut st = *status;
        st.num_devices = devices.len().min(MAX_PAGE_DEVICES) as u32;
        st.num_processes = processes.len().min(MAX_PAGE_PROCESSES) as u32;
        self.store(STATUS_OFFSET, &st);
        for (i, d) in devices.iter().take(MAX_PAGE_DEVICES).enumerate() {
            self.store(DEVICES_OFFSET + i * size_of::<DeviceRecord>(), d);
        }
        for (i, p) in processes.iter().take(MAX_PAGE_PROCESSES).enumerate() {
            // Only the devices in use: a record has room for a Galaxy's 32 chips, most
            // processes use one or two.
            self.store_prefix(
                PROCESSES_OFFSET + i * size_of::<ProcessRecord>(),
                p,
                process_record_bytes(p.num_devices),
            );
        }
        seq.store((s | 1).wrapping_add(1), Release);
    }

    pub fn push_history(&self, sample: &HistorySample) {
        let h = self.header();
        let s = h.history_seq.load(Relaxed);
        h.history_seq.store(s.wrapping_add(1) | 1, Relaxed);
        fence(Release);
        let n = h.history_written.load(Relaxed);
        let idx = (n as usize) % HISTORY_LEN;
        self.store(HISTORY_OFFSET + idx * size_of::<HistorySample>(), sample);
        h.history_written.store(n + 1, Relaxed);
        h.history_seq.store((s | 1).wrapping_add(1), Release);
    }

    // ---- reader side ----

    /// A consistent copy of status, devices and processes; `None` if the writer kept
    /// the lock busy through every retry.
    pub fn snapshot(&self) -> Option<Snapshot> {
        let seq = &self.header().main_seq;
        for _ in 0..200 {
            let s1 = seq.load(Acquire);
            if s1 & 1 == 1 {
                std::thread::yield_now();
                continue;
            }
            let status: AggregatorStatus = self.load(STATUS_OFFSET);
            let nd = (status.num_devices as usize).min(MAX_PAGE_DEVICES);
            let np = (status.num_processes as usize).min(MAX_PAGE_PROCESSES);
            let devices = (0..nd)
                .map(|i| self.load(DEVICES_OFFSET + i * size_of::<DeviceRecord>()))
                .collect();
            let processes = (0..np)
                .map(|i| {
                    let off = PROCESSES_OFFSET + i * size_of::<ProcessRecord>();
                    let head: ProcessRecord =
                        self.load_prefix(off, offset_of!(ProcessRecord, devices));
                    // A torn count is caught by the sequence check below.
                    self.load_prefix(off, process_record_bytes(head.num_devices))
                })
                .collect();
            fence(Acquire);
            if seq.load(Relaxed) == s1 {
                return Some(Snapshot {
                    status,
                    devices,
                    processes,
                });
            }
        }
        None
    }

    /// The newest `n` history samples, oldest first.
    pub fn history(&self, n: usize) -> Option<Vec<HistorySample>> {
        let h = self.header();
        for _ in 0..200 {
            let s1 = h.history_seq.load(Acquire);
            if s1 & 1 == 1 {
                std::thread::yield_now();
                continue;
            }
            let written = h.history_written.load(Relaxed);
            let k = (n as u64).min(written).min(HISTORY_LEN as u64);
            let v = (written - k..written)
                .map(|i| {
                    self.load(
                        HISTORY_OFFSET + (i as usize % HISTORY_LEN) * size_of::<HistorySample>(),
                    )
                })
                .collect();
            fence(Acquire);
            if h.history_seq.load(Relaxed) == s1 {
                return Some(v);
            }
        }
        None
    }
}

/// What a reader gets from the page.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub status: AggregatorStatus,
    pub devices: Vec<DeviceRecord>,
    pub processes: Vec<ProcessRecord>,
}

/// A read-only mapping of the counters page in a directory.
pub struct CountersReader {
    _map: memmap2::Mmap,
    view: PageView,
}

/// Why a counters page could not be read.
#[derive(Debug)]
pub enum PageError {
    /// No page: no aggregator has run on this directory (or it was removed).
    Missing,
    Io(std::io::Error),
    Malformed(String),
    /// Another layout version: the aggregator and this reader come from different releases.
    Version {
        found: u32,
        expected: u32,
    },
    /// The page belongs to a user who is neither root nor the reader: anyone can put a
    /// file of that name in a directory all may write, so it is not read.
    Untrusted {
        uid: u32,
    },
}

impl std::fmt::Display for PageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Missing => write!(f, "no counters page"),
            Self::Io(e) => write!(f, "{e}"),
            Self::Malformed(m) => write!(f, "malformed counters page: {m}"),
            Self::Version { found, expected } => write!(
                f,
                "the counters page has layout version {found}, this tt-smi reads version {expected}: \
                 run a tt-smi from the same tttrack release as the running tt-aggregator"
            ),
            Self::Untrusted { uid } => write!(
                f,
                "the counters page belongs to uid {uid}, neither root nor you: not read (anyone may put a file there); ask who runs tt-aggregator, or start your own with TTTRACK_DIR set to a directory of yours"
            ),
        }
    }
}

impl CountersReader {
    pub fn open(dir: &std::path::Path) -> Result<Self, PageError> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = dir.join(crate::shm_layout::COUNTERS_FILE_NAME);
        let f = match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(PageError::Missing),
            Err(e) => return Err(PageError::Io(e)),
        };
        let meta = f.metadata().map_err(PageError::Io)?;
        {
            use std::os::unix::fs::MetadataExt;
            // SAFETY: geteuid has no preconditions.
            let me = unsafe { libc::geteuid() };
            if meta.uid() != 0 && meta.uid() != me {
                return Err(PageError::Untrusted { uid: meta.uid() });
            }
        }
        let len = meta.len();
        if len < size_of::<PageHeader>() as u64 {
            return Err(PageError::Malformed(format!("{len} bytes")));
        }
        let mut head = [0u8; 16];
        {
            use std::os::unix::fs::FileExt;
            f.read_exact_at(&mut head, 0).map_err(PageError::Io)?;
        }
        let magic = u64::from_le_bytes(head[0..8].try_into().unwrap_or_default());
        if magic != COUNTERS_MAGIC {
            return Err(PageError::Malformed(format!("magic {magic:#x}")));
        }
        let version = u32::from_le_bytes(head[8..12].try_into().unwrap_or_default());
        if version != COUNTERS_LAYOUT_VERSION {
            return Err(PageError::Version {
                found: version,
                expected: COUNTERS_LAYOUT_VERSION,
            });
        }
        if len != PAGE_SIZE as u64 {
            return Err(PageError::Malformed(format!(
                "{len} bytes, expected {PAGE_SIZE}"
            )));
        }
        // SAFETY: read-only shared mapping of a file we checked to be PAGE_SIZE long.
        // Only the aggregator writes it, and only through atomics.
        let map =
            unsafe { memmap2::MmapOptions::new().len(PAGE_SIZE).map(&f) }.map_err(PageError::Io)?;
        // SAFETY: the mapping is PAGE_SIZE bytes, page aligned, and lives in self.
        let view = unsafe { PageView::new(map.as_ptr() as *mut u8) };
        Ok(Self { _map: map, view })
    }

    pub fn view(&self) -> &PageView {
        &self.view
    }

    /// Whether the aggregator's heartbeat is fresh (it beats at least every 100 ms).
    pub fn aggregator_alive(&self) -> bool {
        let hb = self.view.header().presence.heartbeat_ns.load(Acquire);
        crate::sys::monotonic_ns().saturating_sub(hb) < 2_000_000_000
    }
}
