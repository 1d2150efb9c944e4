//! tt-aggregator's engine: finds every segment, drains every lane, applies each
//! process's events in sequence order into the exact [`Accounting`], releases what dead
//! processes held, and publishes everything in the counters page.
//!
//! One pass of the loop:
//! 1. every 50 ms, look for new segments (validated, attributed only to their owner);
//! 2. read each lane's new events into its process's pending list;
//! 3. apply each process's pending events in sequence order (a missing number is waited
//!    for up to [`GAP_TIMEOUT`], then skipped and counted lost);
//! 4. write the applied events to the journal, then move the lanes' tails past them;
//! 5. every 100 ms, release the processes whose segment lock is gone;
//! 6. publish the counters page (at most every 1 ms, at least every 100 ms).
//!
//! Between passes it naps: 50 us to 500 us while events flow, 2 ms for two seconds
//! after the last event, 10 ms when idle; a producer with a full lane or a new segment
//! wakes it at once.

pub mod state_dir;

use crate::accounting::{leak_summary, Accounting, Outcome, ProcKey, ProcState};
use crate::counters_page::*;
use crate::journal::{Journal, Record};
use crate::segment_reader::{list_segments, MappedSegment, SegmentError};
use crate::shm_layout::*;
use crate::sys;
use state_dir::StateDir;
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How long a missing sequence number is waited for before it is skipped.
pub const GAP_TIMEOUT: Duration = Duration::from_millis(250);
const DISCOVERY_INTERVAL: Duration = Duration::from_millis(50);
const LIVENESS_INTERVAL: Duration = Duration::from_millis(100);
const PUBLISH_MIN: Duration = Duration::from_millis(1);
const PUBLISH_MAX: Duration = Duration::from_millis(100);
/// Events read from one lane in one pass.
const LANE_BATCH: usize = 8192;

/// How much the aggregator prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verbosity {
    Quiet,
    Normal,
    Verbose,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub dir: PathBuf,
    pub verbosity: Verbosity,
    /// Root of `/proc` (tests may point elsewhere; normally `/proc`).
    pub proc_root: PathBuf,
    /// Root under which the driver's files are looked up (`/` normally).
    pub sysfs_root: PathBuf,
    /// How often telemetry is sampled.
    pub telemetry_interval: Duration,
}

/// A segment being drained.
struct Attached {
    seg: MappedSegment,
    key: ProcKey,
    /// Read from the lanes but not applied yet: (event, lane, position).
    pending: Vec<(Event, u8, u64)>,
    gap_since: Option<Instant>,
    /// Lane positions last published as tails.
    committed: [u64; NUM_LANES],
    /// Broke the rules (corrupt, truncated): no longer read, only watched until its
    /// process ends so that what it held is released then.
    broken: bool,
}

/// A log line's destination: stdout for information, stderr for problems.
#[derive(Clone)]
pub struct Log {
    pub verbosity: Verbosity,
}

impl Log {
    pub fn info(&self, msg: impl AsRef<str>) {
        if self.verbosity >= Verbosity::Normal {
            let mut o = std::io::stdout().lock();
            let _ = writeln!(o, "{}", msg.as_ref());
            let _ = o.flush();
        }
    }
    pub fn event(&self, msg: impl AsRef<str>) {
        if self.verbosity >= Verbosity::Verbose {
            let mut o = std::io::stdout().lock();
            let _ = writeln!(o, "{}", msg.as_ref());
        }
    }
    pub fn warn(&self, msg: impl AsRef<str>) {
        if self.verbosity >= Verbosity::Normal {
            eprintln!("warning: {}", msg.as_ref());
        }
    }
    pub fn error(&self, msg: impl AsRef<str>) {
        eprintln!("error: {}", msg.as_ref());
    }
}

/// Why the aggregator could not start.
#[derive(Debug)]
pub struct StartError(pub String);

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub struct Aggregator {
    pub cfg: Config,
    pub log: Log,
    pub acc: Accounting,
    journal: Journal,
    attached: HashMap<PathBuf, Attached>,
    rejected: HashSet<PathBuf>,
    page_map: memmap2::MmapRaw,
    page: PageView,
    page_ino: u64,
    space_warned: bool,
    _lock: std::fs::File,
    /// The private directory: lock, journal, sockets before they are published.
    state_dir: StateDir,
    /// Users at `limits::MAX_SEGMENTS_PER_UID` (told once in the log).
    uids_at_bound: HashSet<u32>,
    /// Processes told in the log to be past `limits::MAX_BUFFERS_PER_PROCESS`.
    over_limit_logged: HashSet<ProcKey>,
    /// A compatibility-socket dump waiting for its share of time, and when requests
    /// may next be answered (see `request_took`).
    held_compat: Option<crate::compat::Msg>,
    requests_quiet_until: Instant,
    pid: u32,
    started_unix_ns: u64,
    status: AggregatorStatus,
    last_discovery: Instant,
    last_liveness: Instant,
    last_publish: Instant,
    last_history: Instant,
    dirty: bool,
    last_beat_ns: u64,
    last_activity: Instant,
    last_devices: Vec<DeviceRecord>,
    gone_logged: std::collections::BTreeSet<(u32, String)>,
    /// inotify descriptor watching the directory for new segments (-1: polling only).
    inotify: i32,
    /// The bound wake socket (None: producers just wait for the next pass).
    wake: Option<std::os::unix::net::UnixDatagram>,
    buf: Vec<(Event, u64)>,
    pub requests: Option<std::sync::mpsc::Receiver<crate::control::Request>>,
    /// Latest telemetry sample, written by the sampler thread.
    telemetry: std::sync::Arc<std::sync::Mutex<crate::devices::Sample>>,
    sampler_stop: std::sync::Arc<AtomicBool>,
    /// Local devices seen so far (id, PCI address), to report arrivals and departures.
    seen_local: std::collections::BTreeSet<(u32, String)>,
    compat_rx: Option<std::sync::mpsc::Receiver<crate::compat::Msg>>,
    compat_path: Option<PathBuf>,
    /// Processes without a segment, watched through a pidfd until they end: clients of
    /// the compatibility socket, and live processes recovered from the journal.
    compat_procs: HashMap<ProcKey, Option<std::os::fd::OwnedFd>>,
}

/// Journal lane number of events that came over the compatibility socket.
pub const COMPAT_LANE: u8 = 255;

fn map_err<E: std::fmt::Display>(what: &str, path: &Path) -> impl FnOnce(E) -> StartError {
    let msg = format!("{what} {}", path.display());
    move |e| StartError(format!("{msg}: {e}"))
}

impl Aggregator {
    /// Takes the directory's aggregator lock, recovers the journal and creates a fresh
    /// counters page.
    pub fn start(cfg: Config) -> Result<Self, StartError> {
        let log = Log {
            verbosity: cfg.verbosity,
        };
        sys::ensure_tracking_dir(&cfg.dir).map_err(map_err("cannot create", &cfg.dir))?;
        refuse_foreign_directory(&cfg.dir)?;
        warn_about_directory(&cfg.dir, &log);
        let state_dir = StateDir::open(&cfg.dir, |w| log.warn(w)).map_err(StartError)?;
        let lock = take_lock(&state_dir, &cfg.dir)?;
        let pid = std::process::id();
        let started_unix_ns = sys::unix_ns();
        // The page first: its fresh heartbeat tells producers with full lanes that an
        // aggregator is coming while the journal is replayed.
        let (page_map, page, page_ino) = create_page(&state_dir, &cfg.dir, pid, started_unix_ns)?;
        let jdir = state_dir.path();
        let mut replayed = 0u64;
        let (journal, rec) = Journal::open(&jdir, |acc, r| {
            replay(acc, r);
            replayed += 1;
            if replayed.is_multiple_of(16384) {
                page.beat();
            }
        })
        .map_err(map_err("cannot recover the journal in", state_dir.shown()))?;
        page.beat();
        let mut status = AggregatorStatus {
            pid,
            start_unix_ns: started_unix_ns,
            ..Default::default()
        };
        if rec.replayed > 0 || rec.generation > 0 {
            status.restarts_recovered = 1;
        }
        let wake = bind_wake_socket(&state_dir);
        let agg = Self {
            log,
            acc: rec.accounting,
            journal,
            attached: HashMap::new(),
            rejected: HashSet::new(),
            page_map,
            page,
            space_warned: false,
            page_ino,
            _lock: lock,
            state_dir,
            uids_at_bound: HashSet::new(),
            over_limit_logged: HashSet::new(),
            held_compat: None,
            requests_quiet_until: Instant::now(),
            pid,
            started_unix_ns,
            status,
            last_discovery: Instant::now() - DISCOVERY_INTERVAL * 2,
            last_liveness: Instant::now(),
            last_publish: Instant::now() - PUBLISH_MAX,
            last_history: Instant::now() - Duration::from_secs(2),
            dirty: true,
            last_beat_ns: 0,
            last_activity: Instant::now(),
            last_devices: Vec::new(),
            gone_logged: Default::default(),
            inotify: watch_dir(&cfg.dir),
            wake,
            buf: Vec::with_capacity(LANE_BATCH),
            requests: None,
            telemetry: Default::default(),
            sampler_stop: Default::default(),
            seen_local: Default::default(),
            compat_rx: None,
            compat_path: None,
            compat_procs: HashMap::new(),
            cfg,
        };
        agg.log.info(format!(
            "tt-aggregator {} started (pid {pid})\n   tracking directory: {}\n   counters page: {} ({} bytes)",
            env!("CARGO_PKG_VERSION"),
            agg.cfg.dir.display(),
            agg.cfg.dir.join(COUNTERS_FILE_NAME).display(),
            PAGE_SIZE
        ));
        let first =
            crate::devices::sample(&agg.cfg.sysfs_root, &Default::default(), sys::unix_ns());
        if first.devices.is_empty() {
            agg.log.info(format!(
                "   no Tenstorrent devices under {} (no sys/class/tenstorrent): devices that processes report are still tracked",
                agg.cfg.sysfs_root.display()
            ));
        }
        let mut agg = agg;
        for (d, _, _) in &first.devices {
            let (dram, l1) = crate::devices::builtin_totals(&d.arch, &d.board);
            agg.log.info(format!(
                "   Device {}: {} {} ({} DRAM, {} L1) [Local, {}]",
                d.id,
                d.arch,
                d.board,
                dram.map(sys::human_bytes).unwrap_or_else(|| "? ".into()),
                l1.map(sys::human_bytes).unwrap_or_else(|| "? ".into()),
                if d.pci_bdf.is_empty() {
                    "no PCI link"
                } else {
                    &d.pci_bdf
                }
            ));
            agg.seen_local.insert((d.id, d.pci_bdf.clone()));
        }
        *agg.telemetry.lock().unwrap_or_else(|e| e.into_inner()) = first;
        agg.start_sampler();
        if rec.replayed > 0 || rec.generation > 0 {
            agg.log.info(format!(
                "   recovered from a previous run: {} processes, {} journaled events replayed{}",
                agg.acc.processes.len(),
                rec.replayed,
                if rec.torn {
                    " (a torn last record was ignored)"
                } else {
                    ""
                }
            ));
        }
        Ok(agg)
    }

    /// Samples telemetry on its own thread, so that reading the driver's files never
    /// delays draining.
    fn start_sampler(&self) {
        let (root, every) = (self.cfg.sysfs_root.clone(), self.cfg.telemetry_interval);
        let (slot, stop) = (self.telemetry.clone(), self.sampler_stop.clone());
        let _ = std::thread::Builder::new()
            .name("telemetry".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(every);
                    let prev = slot.lock().unwrap_or_else(|e| e.into_inner()).clone();
                    let next = crate::devices::sample(&root, &prev, sys::unix_ns());
                    *slot.lock().unwrap_or_else(|e| e.into_inner()) = next;
                }
            });
    }

    /// Serves the request socket (`aggregator.sock`, every user may ask, as every user
    /// may read the counters page).
    pub fn serve_control(&mut self) -> std::io::Result<()> {
        let l = bind_published(&self.state_dir, crate::control::SOCKET_NAME, |p| {
            std::os::unix::net::UnixListener::bind(p)
        })?;
        self.requests = Some(crate::control::serve(l)?);
        Ok(())
    }

    /// Serves the original protocol at `path` (see [`crate::compat`]).
    pub fn enable_compat(&mut self, path: &Path) -> std::io::Result<()> {
        let l = crate::compat::bind(path)?;
        let (tx, rx) = std::sync::mpsc::sync_channel(crate::limits::COMPAT_QUEUE);
        let log = self.log.clone();
        crate::compat::serve(l, tx, self.cfg.proc_root.clone(), move |w| log.warn(w));
        self.compat_rx = Some(rx);
        self.compat_path = Some(path.to_path_buf());
        self.log.info(format!(
            "   compatibility socket: {} (the original AllocMessage protocol)",
            path.display()
        ));
        Ok(())
    }

    fn serve_compat(&mut self) -> usize {
        use crate::compat::*;
        let Some(rx) = self.compat_rx.take() else {
            return 0;
        };
        let mut n = 0;
        let now_s = (sys::unix_ns() / 1_000_000_000) as u32;
        let mut taken = 0;
        while taken < crate::limits::COMPAT_PER_PASS {
            let Some(m) = self.held_compat.take().or_else(|| rx.try_recv().ok()) else {
                break;
            };
            taken += 1;
            if matches!(m, Msg::Dump { .. }) && Instant::now() < self.requests_quiet_until {
                // A dump looks at every buffer: it waits for the requests' share of time.
                self.held_compat = Some(m);
                break;
            }
            match m {
                Msg::Connected {
                    pid,
                    start_time,
                    uid,
                    comm,
                    pidfd,
                } => {
                    let key = (pid, start_time);
                    self.acc.processes.entry(key).or_insert_with(|| {
                        ProcState::new(pid, start_time, uid, comm.clone(), sys::unix_ns())
                    });
                    self.compat_procs.insert(key, pidfd);
                    self.log.info(format!(
                        "+ pid {pid} ({comm}) connected to the compatibility socket"
                    ));
                    self.dirty = true;
                }
                Msg::Event {
                    pid,
                    start_time,
                    ev,
                } => {
                    let key = (pid, start_time);
                    if !self.acc.processes.contains_key(&key) {
                        continue;
                    }
                    self.journal.append(&Record::Event {
                        key,
                        lane: COMPAT_LANE,
                        pos: 0,
                        ev,
                    });
                    let out = self.acc.apply(key, &ev, now_s);
                    self.log_outcome(key, &ev, &out);
                    n += 1;
                }
                Msg::Query { msg, reply } => {
                    let _ = reply.send(self.compat_answer(&msg).encode());
                }
                Msg::Dump { kernels, reply } => {
                    let t = Instant::now();
                    let text = self.dump_text(kernels);
                    self.log.info(text.trim_end());
                    let _ = reply.send(text);
                    self.request_took(t.elapsed());
                }
                Msg::Disconnected { pid, bad_messages } => {
                    self.log.info(format!(
                        "- pid {pid} disconnected from the compatibility socket{}",
                        if bad_messages > 0 {
                            format!(" ({bad_messages} malformed messages skipped)")
                        } else {
                            String::new()
                        }
                    ));
                }
            }
        }
        self.compat_rx = Some(rx);
        if n > 0 {
            self.dirty = true;
        }
        n
    }

    fn compat_answer(&self, q: &crate::compat::AllocMessage) -> crate::compat::AllocMessage {
        use crate::compat::*;
        let mut r = AllocMessage {
            device_id: q.device_id,
            ..Default::default()
        };
        let devices = merge_devices(
            device_records(&self.acc),
            &self.telemetry.lock().unwrap_or_else(|e| e.into_inner()),
            &self.seen_local,
        );
        if q.kind == QUERY {
            r.kind = RESPONSE;
            if let Some(d) = devices.iter().find(|d| d.id as i32 == q.device_id) {
                let f = &d.figures;
                r.allocated = [
                    f[CAT_DRAM].used,
                    f[CAT_L1].used,
                    f[CAT_L1_SMALL].used,
                    f[CAT_TRACE].used,
                    f[CAT_CB].used,
                    f[CAT_KERNEL].used,
                ];
            }
            return r;
        }
        r.kind = DEVICE_INFO_RESPONSE;
        let present: Vec<&DeviceRecord> =
            devices.iter().filter(|d| d.flags & DEV_GONE == 0).collect();
        if q.device_id == -1 {
            r.num_devices = present.len() as u32;
            return r;
        }
        if let Some(d) = present.iter().find(|d| d.id as i32 == q.device_id) {
            r.is_available = 1;
            r.arch_type = match get_str(&d.arch).as_str() {
                "grayskull" => 1,
                "wormhole_b0" => 2,
                "blackhole" => 3,
                "quasar" => 4,
                _ => 0,
            };
            r.total_dram_size = d.dram_total;
            r.total_l1_size = d.l1_total;
            r.num_dram_channels = d.info.num_dram_channels;
            r.dram_size_per_channel = d.info.dram_size_per_channel.min(u32::MAX as u64) as u32;
            r.l1_size_per_core = d.info.l1_size_per_core.min(u32::MAX as u64) as u32;
        }
        r
    }

    /// The original's "dump remaining buffers" (or kernels), as text.
    pub fn dump_text(&self, kernels: bool) -> String {
        use std::fmt::Write as _;
        let mut o = String::new();
        if kernels {
            let _ = writeln!(o, "=== Loaded kernels ===");
            let now_s = sys::unix_ns() / 1_000_000_000;
            let mut lines = 0usize;
            for p in self.acc.processes.values() {
                for (&d, pd) in &p.devices {
                    for (&id, v) in &pd.kernels {
                        for &(size, kt, loaded_s) in v {
                            lines += 1;
                            if lines > crate::limits::DEFAULT_BUFFERS_ANSWER {
                                let _ = writeln!(
                                    o,
                                    "  ... (at most {} kernels are listed)",
                                    crate::limits::DEFAULT_BUFFERS_ANSWER
                                );
                                return o;
                            }
                            let kt = crate::shm_layout::KernelType::from_u8(kt)
                                .map(|k| k.name())
                                .unwrap_or("?");
                            let _ = writeln!(
                                o,
                                "  device {d}: kernel {id:#x} {kt} {} (pid {} {}), loaded {} ago",
                                sys::human_bytes(size),
                                p.pid,
                                p.comm,
                                sys::human_age(now_s.saturating_sub(loaded_s as u64))
                            );
                        }
                    }
                }
            }
            return o;
        }
        let _ = writeln!(o, "=== Remaining buffers ===");
        // Every buffer counted in its group's line; at most `limits::DEFAULT_BUFFERS_ANSWER`
        // listed (any client may ask, and it is logged too), with what was left out.
        let cap = crate::limits::DEFAULT_BUFFERS_ANSWER;
        let mut groups: std::collections::BTreeMap<
            (i32, u8),
            (u64, u64, Vec<(u64, u64, u32, u32, String)>),
        > = Default::default();
        let mut listed = 0usize;
        let mut all = 0u64;
        for p in self.acc.processes.values() {
            for (&d, pd) in &p.devices {
                for (&addr, b) in &pd.buffers {
                    let g = groups.entry((d, b.btype())).or_default();
                    g.0 += 1;
                    g.1 += b.size;
                    all += 1;
                    if listed < cap {
                        listed += 1;
                        g.2.push((addr, b.size, b.refcount(), p.pid, p.comm.clone()));
                    }
                }
            }
        }
        if groups.is_empty() {
            let _ = writeln!(o, "  (none)");
        }
        for ((d, t), (count, total, mut v)) in groups {
            v.sort();
            let tn = crate::shm_layout::BufferType::from_u8(t)
                .map(|t| t.name())
                .unwrap_or("?");
            let _ = writeln!(
                o,
                "Device {d} {tn}: {count} buffers, {}",
                sys::human_bytes(total)
            );
            for (addr, size, rc, pid, comm) in v {
                let _ = writeln!(
                    o,
                    "  {addr:#x} {} refs {rc} pid {pid} ({comm})",
                    sys::human_bytes(size)
                );
            }
        }
        if all > listed as u64 {
            let _ = writeln!(
                o,
                "  ... {} more buffers not listed (at most {cap} are; tt-smi --buffers lists the largest)",
                all - listed as u64
            );
        }
        o
    }

    /// Runs passes until `stop` is set, then shuts down cleanly.
    pub fn run(&mut self, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            let n = self.pass();
            // Let work pile up a little between drains: it keeps us off the producers'
            // cache lines (every read of a line the producer is writing moves it between
            // cores) at no cost in latency.
            if n > 0 {
                self.last_activity = Instant::now();
            }
            // Idle for a while: nap long (cheap); recently active: short naps keep
            // event-to-page latency low. A full lane wakes us at once either way.
            let nap = if n == 0 && self.last_activity.elapsed() > Duration::from_secs(2) {
                Duration::from_millis(10)
            } else if n == 0 {
                Duration::from_millis(2)
            } else if n < 4096 {
                Duration::from_micros(500)
            } else {
                Duration::from_micros(50)
            };
            self.nap(nap);
        }
        self.shutdown();
    }

    /// Sleeps up to `d`, waking early when a producer pokes the wake pipe or a new
    /// name appears in the directory.
    fn nap(&mut self, d: Duration) {
        let wfd = self.wake.as_ref().map(|w| w.as_raw_fd()).unwrap_or(-1);
        let mut fds = [
            libc::pollfd {
                fd: wfd,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: self.inotify,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // ppoll, not a plain sleep, even for the shortest naps: a producer waiting on a
        // full lane must be able to wake us at once (it watches whether we run).
        let ts = libc::timespec {
            tv_sec: d.as_secs() as libc::time_t,
            tv_nsec: d.subsec_nanos() as libc::c_long,
        };
        // SAFETY: polling two descriptors we own (a negative fd is ignored); ts lives
        // through the call; no signal mask is passed.
        unsafe { libc::ppoll(fds.as_mut_ptr(), 2, &ts, std::ptr::null()) };
        if let Some(w) = &self.wake {
            let mut buf = [0u8; 16];
            while w.recv(&mut buf).is_ok() {}
        }
    }

    /// One pass; returns the number of events read.
    pub fn pass(&mut self) -> usize {
        let now = Instant::now();
        self.page.beat();
        let interval = if self.inotify >= 0 {
            DISCOVERY_INTERVAL * 20
        } else {
            DISCOVERY_INTERVAL
        };
        if self.dir_changed() || now.duration_since(self.last_discovery) >= interval {
            self.discover();
            self.last_discovery = now;
        }
        let mut read = 0;
        let mut need_snapshot = false;
        let keys: Vec<PathBuf> = self.attached.keys().cloned().collect();
        for path in &keys {
            self.beat_if_due();
            match self.drain(path, false) {
                Ok((n, snap)) => {
                    read += n;
                    need_snapshot |= snap;
                }
                Err(e) => self.drop_corrupt(path, e),
            }
        }
        // The socket's events too, before the journal is written: nothing reaches the
        // page before it is durable (a socket cannot be read again after a crash).
        read += self.serve_compat();
        self.persist_and_commit(need_snapshot);
        if now.duration_since(self.last_liveness) >= LIVENESS_INTERVAL {
            self.last_liveness = now;
            self.reap_dead();
        }
        self.serve_requests();
        if read > 0 {
            self.dirty = true;
        }
        let since = now.duration_since(self.last_publish);
        if (self.dirty && since >= PUBLISH_MIN) || since >= PUBLISH_MAX {
            self.publish();
        }
        if now.duration_since(self.last_history) >= Duration::from_secs(1) {
            self.last_history = now;
            self.check_page();
            self.check_space();
            self.push_history();
        }
        read
    }

    /// Whether inotify reported new names in the directory since the last call.
    fn dir_changed(&self) -> bool {
        if self.inotify < 0 {
            return false;
        }
        let mut buf = [0u8; 4096];
        let mut changed = false;
        loop {
            // SAFETY: reading into a buffer we own from our non-blocking inotify fd.
            let n = unsafe {
                libc::read(
                    self.inotify,
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                )
            };
            if n <= 0 {
                return changed;
            }
            changed = true;
        }
    }

    fn discover(&mut self) {
        let paths = match list_segments(&self.cfg.dir) {
            Ok(p) => p,
            Err(e) => {
                self.log
                    .error(format!("cannot list {}: {e}", self.cfg.dir.display()));
                return;
            }
        };
        for path in paths {
            if self.attached.contains_key(&path) || self.rejected.contains(&path) {
                continue;
            }
            if !self.uid_has_room(&path) {
                continue;
            }
            match self.attach(&path) {
                Ok(()) => {}
                Err(why) => {
                    self.status.segments_rejected += 1;
                    self.log
                        .warn(format!("rejected segment {}: {why}", path.display()));
                    self.rejected.insert(path);
                }
            }
        }
        // Forget rejections of files that are gone, so a new file of the name is looked at.
        self.rejected.retain(|p| p.exists());
    }

    /// Whether the owner of the segment file at `path` has fewer than
    /// `limits::MAX_SEGMENTS_PER_UID` segments attached. One that has that many is told
    /// once in the log; its further segments wait (their producers count what they
    /// cannot deliver) until some of its processes end.
    fn uid_has_room(&mut self, path: &Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        let Ok(uid) = std::fs::symlink_metadata(path).map(|m| m.uid()) else {
            return true;
        };
        let n = self
            .attached
            .values()
            .filter(|a| a.seg.file_uid == uid)
            .count();
        if n < crate::limits::MAX_SEGMENTS_PER_UID {
            self.uids_at_bound.remove(&uid);
            return true;
        }
        if self.uids_at_bound.insert(uid) {
            self.log.warn(format!(
                "uid {uid} has {n} segments attached, the most one user may: its further processes are not tracked until some end (their events are counted undelivered)"
            ));
        }
        false
    }

    fn attach(&mut self, path: &Path) -> Result<(), String> {
        let mut seg = MappedSegment::open(path).map_err(|e| e.to_string())?;
        if seg.file_uid != seg.header_uid {
            return Err(format!(
                "file owned by uid {} but its header claims uid {}",
                seg.file_uid, seg.header_uid
            ));
        }
        let mut alive = seg.is_alive();
        let mut comm = seg.comm.clone();
        let info = if alive {
            sys::proc_info(&self.cfg.proc_root, seg.pid)
        } else {
            None
        };
        // The process may have ended between the two looks: ask the lock again.
        if alive && info.as_ref().is_none_or(|i| i.start_time != seg.start_time) && !seg.is_alive()
        {
            alive = false;
        }
        if alive {
            let Some(info) = info else {
                return Err(format!(
                    "its lock is held but pid {} does not exist here (another PID namespace?)",
                    seg.pid
                ));
            };
            if info.start_time != seg.start_time {
                return Err(format!(
                    "claims pid {} started at {}, but that process started at {}",
                    seg.pid, seg.start_time, info.start_time
                ));
            }
            if info.uid != seg.file_uid {
                return Err(format!(
                    "owned by uid {} but pid {} belongs to uid {}: a segment is attributed only to its owner's processes",
                    seg.file_uid, seg.pid, info.uid
                ));
            }
            comm = info.comm;
        }
        let key = (seg.pid, seg.start_time);
        self.check_claim(&seg, key, alive)?;
        let recovered = self.acc.processes.contains_key(&key);
        let mut committed = [0u64; NUM_LANES];
        if recovered {
            // Resume after the last journaled event of each lane.
            let p = &self.acc.processes[&key];
            let reserved: Vec<usize> = (0..NUM_LANES).filter(|&l| seg.lane_reserved(l)).collect();
            for lane in reserved {
                let applied = p.lane_applied[lane];
                let tail = seg.cursor(lane);
                let head = seg.view().lane(lane).head.load(Ordering::Acquire);
                if applied.wrapping_sub(tail) <= LANE_CAPACITY as u64
                    && head.wrapping_sub(applied) <= LANE_CAPACITY as u64
                {
                    seg.set_cursor(lane, applied);
                    seg.commit(lane, applied);
                }
                committed[lane] = seg.cursor(lane);
            }
        } else {
            let mut p = ProcState::new(
                seg.pid,
                seg.start_time,
                seg.file_uid,
                comm.clone(),
                sys::unix_ns(),
            );
            for (lane, c) in committed.iter_mut().enumerate() {
                *c = seg.cursor(lane);
                p.lane_applied[lane] = *c;
            }
            // A segment whose events were already consumed (tails > 0) by an earlier
            // aggregator whose journal is not here: those events are lost to us.
            p.gap_lost = committed.iter().fold(0u64, |a, &c| a.saturating_add(c));
            self.acc.processes.insert(key, p);
        }
        if let Some(p) = self.acc.processes.get_mut(&key) {
            p.comm = comm.clone();
        }
        seg.heartbeat(self.pid, sys::monotonic_ns());
        self.status.segments_attached += 1;
        self.log.info(format!(
            "+ pid {} ({comm}) {}{}",
            seg.pid,
            if recovered { "re-attached" } else { "attached" },
            if alive { "" } else { ", already exited" }
        ));
        self.attached.insert(
            path.to_path_buf(),
            Attached {
                seg,
                key,
                pending: Vec::new(),
                gap_since: None,
                committed,
                broken: false,
            },
        );
        self.dirty = true;
        Ok(())
    }

    /// A segment speaks only for a process of its file's owner: one that claims a
    /// process another segment already reports for, or a process of another user's
    /// (known to the accounting, a socket client or recovered from the journal, say, or
    /// in `/proc`, zombies included) is not that process's.
    fn check_claim(&self, seg: &MappedSegment, key: ProcKey, alive: bool) -> Result<(), String> {
        if self.attached.values().any(|a| a.key == key) {
            return Err(format!(
                "another segment already reports for pid {} started at {}",
                key.0, key.1
            ));
        }
        if let Some(p) = self.acc.processes.get(&key) {
            if p.uid != seg.file_uid {
                return Err(format!(
                    "claims pid {} started at {}, a process of uid {}, but the file is uid {}'s",
                    key.0, key.1, p.uid, seg.file_uid
                ));
            }
        }
        if !alive {
            // Unlocked: a process that ended (perhaps still a zombie), or a forgery of
            // a process that runs. Either way it may speak only for its owner's.
            if let Some(info) = sys::proc_info(&self.cfg.proc_root, seg.pid) {
                if info.start_time == seg.start_time && info.uid != seg.file_uid {
                    return Err(format!(
                        "claims pid {} started at {}, a process of uid {}, but the file is uid {}'s",
                        seg.pid, seg.start_time, info.uid, seg.file_uid
                    ));
                }
            }
        }
        Ok(())
    }

    /// Refreshes every attached segment's heartbeat if 200 us passed since the last
    /// time. Called from inside long stretches of work (large batches, journal writes),
    /// so producers waiting on a full lane see that the aggregator is making progress.
    fn beat_if_due(&mut self) {
        let now = sys::monotonic_ns();
        if now.saturating_sub(self.last_beat_ns) < 200_000 {
            return;
        }
        self.last_beat_ns = now;
        for a in self.attached.values() {
            a.seg.heartbeat(self.pid, now);
        }
        self.page.beat();
    }

    /// Reads a segment's lanes and applies what is in order. With `final_drain`, reads
    /// everything and skips every gap at once (the process is dead). Returns events
    /// read and whether a snapshot is needed (device information changed).
    fn drain(&mut self, path: &Path, final_drain: bool) -> Result<(usize, bool), SegmentError> {
        let Some(a) = self.attached.get_mut(path) else {
            return Ok((0, false));
        };
        if a.broken {
            return Ok((0, false));
        }
        a.seg.heartbeat(self.pid, sys::monotonic_ns());
        let mut read = 0;
        loop {
            let mut round = 0;
            for lane in 0..NUM_LANES {
                self.buf.clear();
                let n = a.seg.read_lane(lane, &mut self.buf, LANE_BATCH)?;
                round += n;
                a.pending
                    .extend(self.buf.iter().map(|&(e, pos)| (e, lane as u8, pos)));
            }
            read += round;
            if !final_drain || round == 0 {
                break;
            }
        }
        let dropped = a.seg.dropped();
        let key = a.key;
        if let Some(p) = self.acc.processes.get_mut(&key) {
            if p.producer_dropped != dropped {
                p.producer_dropped = dropped;
                self.dirty = true;
            }
        }
        if a.pending.is_empty() {
            a.gap_since = None;
            return Ok((read, false));
        }
        a.pending.sort_by_key(|(e, _, _)| e.seq);
        let now_s = (sys::unix_ns() / 1_000_000_000) as u32;
        let mut applied = 0usize;
        let mut snapshot = false;
        let mut gap_skip = final_drain || a.gap_since.is_some_and(|t| t.elapsed() >= GAP_TIMEOUT);
        let Some(p) = self.acc.processes.get_mut(&key) else {
            return Ok((read, false));
        };
        let mut next = p.next_seq;
        let mut late = 0u64;
        let mut skipped = false;
        for (ev, lane, pos) in a.pending.iter() {
            if ev.seq > next {
                if !gap_skip {
                    break;
                }
                p.gap_lost = p.gap_lost.saturating_add(ev.seq - next);
                next = ev.seq;
                gap_skip = final_drain;
                skipped = true;
            }
            if ev.seq < next {
                // A number we skipped earlier after all: apply it late.
                late += 1;
            } else {
                next = ev.seq.saturating_add(1);
            }
            applied += 1;
            let lane = *lane as usize;
            p.lane_applied[lane] = pos.wrapping_add(1);
            self.journal.append(&Record::Event {
                key,
                lane: lane as u8,
                pos: pos.wrapping_add(1),
                ev: *ev,
            });
        }
        let p_next = next;
        let batch: Vec<(Event, u8, u64)> = a.pending.drain(..applied).collect();
        // A gap still open waits its own full time: after a skip the timer restarts.
        a.gap_since = if a.pending.is_empty() {
            None
        } else if skipped {
            Some(Instant::now())
        } else {
            Some(a.gap_since.unwrap_or_else(Instant::now))
        };
        if let Some(p) = self.acc.processes.get_mut(&key) {
            p.next_seq = p_next;
            p.gap_lost = p.gap_lost.saturating_sub(late);
        }
        let seg_view = a.seg.view();
        for (k, (ev, _, _)) in batch.iter().enumerate() {
            if k % 1024 == 1023 {
                self.beat_if_due();
            }
            let out = self.acc.apply(key, ev, now_s);
            if out == Outcome::DeviceInfo {
                if let Some(info) =
                    seg_view.read_device_info(ev.device.clamp(0, MAX_DEVICES as i32 - 1) as usize)
                {
                    if self.acc.set_device_info(ev.device, info) {
                        snapshot = true;
                    } else {
                        self.log.warn(format!(
                            "pid {}: implausible description of device {} ignored",
                            key.0, ev.device
                        ));
                    }
                }
            }
            self.log_outcome(key, ev, &out);
        }
        if applied > 0 {
            self.dirty = true;
        }
        Ok((read, snapshot))
    }

    /// Makes the applied events durable, then lets producers reuse their slots.
    fn persist_and_commit(&mut self, snapshot: bool) {
        self.beat_if_due();
        let res = if snapshot || self.journal.should_compact() {
            self.journal.compact(&self.acc)
        } else {
            self.journal.flush()
        };
        if let Err(e) = res {
            // Without a durable record we must not free the slots: keep the tails
            // where they are (producers wait or drop and count), and say so.
            self.log.error(format!(
                "cannot write the journal ({e}); lanes are not advanced until it can be written"
            ));
            return;
        }
        for a in self.attached.values_mut() {
            let Some(p) = self.acc.processes.get(&a.key) else {
                continue;
            };
            for lane in 0..NUM_LANES {
                let pos = p.lane_applied[lane];
                if pos != a.committed[lane] {
                    a.seg.commit(lane, pos);
                    a.committed[lane] = pos;
                }
            }
        }
    }

    /// Releases every process whose segment lock is gone: drain to the end, release
    /// its memory, report what it held, remove its segment.
    fn reap_dead(&mut self) {
        // A file cut short under our mapping (checked here, every 100 ms: one fstat).
        let cut: Vec<PathBuf> = self
            .attached
            .iter()
            .filter(|(_, a)| !a.broken && a.seg.truncated())
            .map(|(p, _)| p.clone())
            .collect();
        for path in cut {
            self.drop_corrupt(&path, SegmentError::Truncated);
        }
        let dead: Vec<PathBuf> = self
            .attached
            .iter()
            .filter(|(_, a)| !a.seg.is_alive())
            .map(|(p, _)| p.clone())
            .collect();
        for path in dead {
            if let Err(e) = self.drain(&path, true) {
                // Release what it held all the same.
                self.drop_corrupt(&path, e);
            }
            self.persist_and_commit(false);
            let Some(a) = self.attached.remove(&path) else {
                continue;
            };
            self.journal.append(&Record::Release { key: a.key });
            if let Err(e) = self.journal.flush() {
                self.log.error(format!("cannot write the journal: {e}"));
            }
            if let Some(p) = self.acc.release(a.key) {
                self.count_leak(&p);
                let lost = p.events_lost();
                match leak_summary(&p) {
                    Some(line) => self.log.info(line),
                    None => self
                        .log
                        .info(format!("- pid {} ({}) exited", p.pid, p.comm)),
                }
                if lost > 0 {
                    self.log.warn(format!(
                        "pid {} ({}): {lost} events were lost; its figures were not exact",
                        p.pid, p.comm
                    ));
                }
            }
            if let Err(e) = std::fs::remove_file(&path) {
                self.log
                    .warn(format!("cannot remove {}: {e}", path.display()));
            }
            self.dirty = true;
        }
        // Processes of the compatibility socket whose process has ended.
        let ended: Vec<ProcKey> = self
            .compat_procs
            .iter()
            .filter(|(k, fd)| match fd {
                Some(fd) => {
                    let mut p = libc::pollfd {
                        fd: std::os::fd::AsRawFd::as_raw_fd(fd),
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // SAFETY: polling one descriptor we own, without waiting.
                    unsafe { libc::poll(&mut p, 1, 0) > 0 }
                }
                None => {
                    sys::proc_info(&self.cfg.proc_root, k.0).is_none_or(|i| i.start_time != k.1)
                }
            })
            .map(|(k, _)| *k)
            .collect();
        for key in ended {
            self.compat_procs.remove(&key);
            self.journal.append(&Record::Release { key });
            let _ = self.journal.flush();
            if let Some(p) = self.acc.release(key) {
                self.count_leak(&p);
                match leak_summary(&p) {
                    Some(line) => self.log.info(line),
                    None => self
                        .log
                        .info(format!("- pid {} ({}) exited", p.pid, p.comm)),
                }
            }
            self.dirty = true;
        }
        // Processes recovered from the journal whose segment is gone for good.
        let attached: HashSet<ProcKey> = self
            .attached
            .values()
            .map(|a| a.key)
            .chain(self.compat_procs.keys().copied())
            .collect();
        let orphans: Vec<ProcKey> = self
            .acc
            .processes
            .keys()
            .filter(|k| !attached.contains(k))
            .filter(|k| !self.cfg.dir.join(segment_file_name(k.0, k.1)).exists())
            .copied()
            .collect();
        for key in orphans {
            // Still running (a client of the compatibility socket from before a restart,
            // or a process whose segment someone deleted): its memory is still held.
            // Keep it, and release it when the process ends, not now.
            // The pidfd first, then the check: it then refers to the process checked.
            let pidfd = crate::compat::pidfd_open(key.0);
            let info = sys::proc_info(&self.cfg.proc_root, key.0);
            if let Some(info) = info.filter(|i| i.start_time == key.1) {
                let comm = match self.acc.processes.get_mut(&key) {
                    Some(p) => {
                        if p.comm.is_empty() {
                            // Recovered from the journal, which does not keep names.
                            p.comm = info.comm;
                        }
                        p.comm.clone()
                    }
                    None => String::new(),
                };
                self.log.info(format!(
                    "= pid {} ({comm}) still runs without a segment (a socket client from before a restart?): its figures are kept until it ends",
                    key.0
                ));
                self.compat_procs.insert(key, pidfd);
                continue;
            }
            self.journal.append(&Record::Release { key });
            let _ = self.journal.flush();
            if let Some(p) = self.acc.release(key) {
                self.count_leak(&p);
                if let Some(line) = leak_summary(&p) {
                    self.log.info(line);
                }
            }
            self.dirty = true;
        }
    }

    /// Logs what applying an event did: every event with -v; otherwise only frees of
    /// something never seen allocated (always counted), the first few per process.
    fn log_outcome(&mut self, key: ProcKey, ev: &Event, out: &Outcome) {
        const LOGGED: u64 = 10;
        if self.log.verbosity >= Verbosity::Verbose {
            self.log.event(describe(key.0, ev, out));
            return;
        }
        if *out == Outcome::OverLimit {
            // Once per process: the first refusal (the count is in its events lost).
            if self.over_limit_logged.insert(key) {
                let acc = &self.acc;
                self.over_limit_logged
                    .retain(|k| acc.processes.contains_key(k));
                self.log.warn(describe(key.0, ev, out));
            }
            return;
        }
        if *out != Outcome::UnknownFree {
            return;
        }
        let n = self.acc.processes.get(&key).map_or(0, |p| p.unknown_frees);
        if n <= LOGGED {
            let more = if n == LOGGED {
                " (further ones of this process are counted, not logged; -v logs every event)"
            } else {
                ""
            };
            self.log.info(format!("{}{more}", describe(key.0, ev, out)));
        }
    }

    /// Counts a released process that still held memory.
    fn count_leak(&mut self, p: &ProcState) {
        let held: u64 = p.devices.values().map(|d| device_bytes(&d.used)).sum();
        if held > 0 {
            self.status.exits_holding_memory += 1;
            self.status.leaked_bytes += held;
        }
    }

    /// A segment that broke the rules mid-life: stop reading it. Its process's
    /// figures stay as they were (it can only have hurt itself), flagged inexact, and
    /// are released when the process ends.
    fn drop_corrupt(&mut self, path: &Path, e: SegmentError) {
        self.log
            .warn(format!("stopped reading segment {}: {e}", path.display()));
        if let Some(a) = self.attached.get_mut(path) {
            a.broken = true;
            a.pending.clear();
            if let Some(p) = self.acc.processes.get_mut(&a.key) {
                p.gap_lost = p.gap_lost.saturating_add(1);
            }
        }
        self.status.segments_rejected += 1;
        self.dirty = true;
    }

    fn serve_requests(&mut self) {
        let Some(rx) = self.requests.take() else {
            return;
        };
        for _ in 0..crate::limits::REQUESTS_PER_PASS {
            if Instant::now() < self.requests_quiet_until {
                break;
            }
            let Ok(req) = rx.try_recv() else { break };
            let t = Instant::now();
            let text = crate::control::answer(&self.acc, &req.query);
            let _ = req.reply.send(text);
            self.request_took(t.elapsed());
        }
        self.requests = Some(rx);
    }

    /// Requests and dumps (which look at every buffer) get at most
    /// `limits::REQUEST_SHARE_PERCENT` of the draining thread's time: after one that took
    /// `d`, the next waits until enough draining time has passed.
    fn request_took(&mut self, d: Duration) {
        let rest =
            d * (100 - crate::limits::REQUEST_SHARE_PERCENT) / crate::limits::REQUEST_SHARE_PERCENT;
        self.requests_quiet_until = Instant::now() + rest;
    }

    /// Builds and publishes the counters page.
    pub fn publish(&mut self) {
        self.last_publish = Instant::now();
        self.dirty = false;
        let mut st = self.status;
        st.heartbeat_unix_ns = sys::unix_ns();
        st.events_applied = self.acc.events_applied;
        st.events_lost = self.acc.events_lost();
        st.unknown_frees = self.acc.unknown_frees;
        st.invalid_events = self.acc.invalid_events;
        st.processes_tracked = self.acc.processes.len() as u32;
        st.process_overflow = self.acc.processes.len().saturating_sub(MAX_PAGE_PROCESSES) as u32;
        self.status = st;
        let sample = self
            .telemetry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        self.note_device_changes(&sample);
        let devices = merge_devices(device_records(&self.acc), &sample, &self.seen_local);
        let mut processes = process_records(&self.acc);
        add_untracked(&mut processes, &sample, &self.cfg.sysfs_root, self.pid);
        self.page.publish_main(&st, &devices, &processes);
        self.last_devices = devices;
    }

    /// Warns (once, until it recovers) when the tracking directory's file system is
    /// nearly full: new processes would get no lane and drop their events.
    fn check_space(&mut self) {
        let Ok(c) = sys::cstring(&self.cfg.dir) else {
            return;
        };
        // SAFETY: statvfs is plain data; all-zero bytes are a valid value.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: c is a NUL-terminated path and st is writable for the call.
        if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
            return;
        }
        let free = st.f_bavail as u64 * st.f_frsize as u64;
        let low = free < 2 * LANE_STRIDE as u64;
        if low && !self.space_warned {
            self.log.warn(format!(
                "the file system of {} has only {} free: new processes cannot get reporting lanes and will drop (and count) their events; free some space",
                self.cfg.dir.display(),
                sys::human_bytes(free)
            ));
        }
        self.space_warned = low;
    }

    /// Recreates the counters page if someone removed or replaced it (readers would
    /// otherwise see no aggregator while this one runs).
    fn check_page(&mut self) {
        use std::os::unix::fs::MetadataExt;
        let path = self.cfg.dir.join(COUNTERS_FILE_NAME);
        let current = std::fs::symlink_metadata(&path).map(|m| m.ino()).ok();
        if current == Some(self.page_ino) {
            return;
        }
        // Our old mapping still holds the history, whatever happened to its file.
        let history = self.page.history(HISTORY_LEN).unwrap_or_default();
        match create_page(
            &self.state_dir,
            &self.cfg.dir,
            self.pid,
            self.started_unix_ns,
        ) {
            Ok((map, view, ino)) => {
                self.page_map = map;
                self.page = view;
                self.page_ino = ino;
                self.log.warn(format!(
                    "the counters page {} was removed or replaced; recreated it",
                    path.display()
                ));
                self.publish();
                for s in &history {
                    self.page.push_history(s);
                }
            }
            Err(e) => self
                .log
                .error(format!("cannot recreate the counters page: {e}")),
        }
    }

    /// Logs local devices that appeared or vanished since the last look.
    fn note_device_changes(&mut self, sample: &crate::devices::Sample) {
        let now: std::collections::BTreeSet<(u32, String)> = sample
            .devices
            .iter()
            .map(|(d, _, _)| (d.id, d.pci_bdf.clone()))
            .collect();
        for k in &now {
            if !self.seen_local.contains(k) || self.gone_logged.contains(k) {
                self.log.info(format!("device {} appeared ({})", k.0, k.1));
                self.seen_local.insert(k.clone());
            }
        }
        let present: std::collections::BTreeSet<u32> = now.iter().map(|k| k.0).collect();
        for k in self.seen_local.clone() {
            if !now.contains(&k) && !present.contains(&k.0) && self.gone_logged.insert(k.clone()) {
                self.log.warn(format!(
                    "device {} ({}) has vanished (reset, driver reload or unplug?)",
                    k.0, k.1
                ));
            }
        }
        self.gone_logged.retain(|k| !now.contains(k));
    }

    fn push_history(&mut self) {
        let mut s: HistorySample = bytemuck::Zeroable::zeroed();
        s.unix_secs = sys::unix_ns() / 1_000_000_000;
        s.temp_mc = [i32::MIN; MAX_PAGE_DEVICES];
        s.power_mw = [u32::MAX; MAX_PAGE_DEVICES];
        for d in &self.last_devices {
            let i = d.id as usize;
            if i < MAX_PAGE_DEVICES {
                if d.telemetry.valid & TEL_TEMP != 0 {
                    s.temp_mc[i] = d
                        .telemetry
                        .asic_temp_mc
                        .clamp(i32::MIN as i64 + 1, i32::MAX as i64)
                        as i32;
                }
                if d.telemetry.valid & TEL_POWER != 0 {
                    s.power_mw[i] = (d.telemetry.power_uw / 1000).min(u32::MAX as u64 - 1) as u32;
                }
            }
        }
        for (&d, dev) in &self.acc.devices {
            if !(0..MAX_PAGE_DEVICES as i32).contains(&d) {
                continue;
            }
            let f = &dev.figures;
            let u = &mut s.used[d as usize];
            u[HIST_DRAM] = f[CAT_DRAM].used;
            u[HIST_L1] = f[CAT_L1].used;
            u[HIST_L1_SMALL] = f[CAT_L1_SMALL].used;
            u[HIST_TRACE] = f[CAT_TRACE].used;
            u[HIST_CB] = f[CAT_CB].used;
            u[HIST_KERNEL] = f[CAT_KERNEL].used;
        }
        self.page.push_history(&s);
    }

    /// Final pass, snapshot, and removal of the counters page (readers then say that
    /// no aggregator is running).
    pub fn shutdown(&mut self) {
        self.sampler_stop.store(true, Ordering::Relaxed);
        self.pass();
        if let Err(e) = self.journal.compact(&self.acc) {
            self.log
                .error(format!("cannot write the final snapshot: {e}"));
        }
        for a in self.attached.values() {
            a.seg
                .view()
                .header()
                .consumer_pid
                .store(0, Ordering::Relaxed);
        }
        let ino = self.page_ino;
        state_dir::remove_own(&self.cfg.dir, COUNTERS_FILE_NAME, |m| {
            std::os::unix::fs::MetadataExt::ino(m) == ino
        });
        state_dir::remove_own_socket(&self.cfg.dir, crate::control::SOCKET_NAME);
        state_dir::remove_own_socket(&self.cfg.dir, WAKE_SOCKET_NAME);
        if let Some(p) = &self.compat_path {
            if let (Some(d), Some(n)) = (p.parent(), p.file_name()) {
                state_dir::remove_own_socket(d, &n.to_string_lossy());
            }
        }
        self.log.info(format!(
            "tt-aggregator stopped: {} events applied, {} lost, {} processes still tracked",
            self.acc.events_applied,
            self.acc.events_lost(),
            self.acc.processes.len()
        ));
    }

    pub fn page_bytes(&self) -> usize {
        self.page_map.len()
    }

    pub fn started_unix_ns(&self) -> u64 {
        self.started_unix_ns
    }
}

/// A tracking directory owned by another user (not root, not us) is refused: its owner
/// could swap it for a link at any moment and have the aggregator create its page and
/// sockets wherever that leads.
fn refuse_foreign_directory(dir: &Path) -> Result<(), StartError> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(dir).map_err(map_err("cannot inspect", dir))?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if !m.file_type().is_dir() {
        return Err(StartError(format!(
            "{} is not a directory (a link?); remove it, or give another --dir",
            dir.display()
        )));
    }
    if m.uid() != me && m.uid() != 0 {
        return Err(StartError(format!(
            "the tracking directory {} is owned by uid {}, not by root or by this user (uid {me}): that user could replace it with a link at any moment, so it is not used. Remove it (the aggregator makes a new one, mode 1777), or give a directory of root's or yours with --dir",
            dir.display(),
            m.uid()
        )));
    }
    Ok(())
}

/// Says so when the tracking directory is writable by all without the sticky bit
/// (anyone could then remove others' segments).
fn warn_about_directory(dir: &Path, log: &Log) {
    use std::os::unix::fs::MetadataExt;
    let Ok(m) = std::fs::symlink_metadata(dir) else {
        return;
    };
    if m.mode() & 0o002 != 0 && m.mode() & 0o1000 == 0 {
        log.warn(format!(
            "the tracking directory {} is writable by all users without the sticky bit: anyone can remove other users' segments; chmod 1777 it",
            dir.display()
        ));
    }
}

/// Replays one journal record into an accounting (recovery).
fn replay(acc: &mut Accounting, r: &Record) {
    match r {
        Record::Event { key, lane, pos, ev } => {
            let p = acc
                .processes
                .entry(*key)
                .or_insert_with(|| ProcState::new(key.0, key.1, 0, String::new(), sys::unix_ns()));
            if *lane != COMPAT_LANE {
                let lane = (*lane as usize).min(NUM_LANES - 1);
                p.lane_applied[lane] = *pos;
                if ev.seq >= p.next_seq {
                    p.next_seq = ev.seq.saturating_add(1);
                }
            }
            acc.apply(*key, ev, (sys::unix_ns() / 1_000_000_000) as u32);
        }
        Record::Release { key } => {
            acc.release(*key);
        }
    }
}

/// Binds a socket in the private directory, mode 0666 from its creation (every user's
/// producers and viewers may connect), and publishes it in the tracking directory under
/// the same name, replacing whatever is there without following it.
fn bind_published<T>(
    state: &StateDir,
    name: &str,
    bind: impl FnOnce(&Path) -> std::io::Result<T>,
) -> std::io::Result<T> {
    let private = state.path().join(name);
    // Ours, left by a crash: nobody else can write in the private directory.
    let _ = std::fs::remove_file(&private);
    let s = state_dir::bind_mode_0666(&private, bind)?;
    state.publish(name, name)?;
    Ok(s)
}

/// Binds the wake socket, writable by every user so any producer can wake us. None if
/// that fails.
fn bind_wake_socket(state: &StateDir) -> Option<std::os::unix::net::UnixDatagram> {
    let s = bind_published(state, WAKE_SOCKET_NAME, |p| {
        std::os::unix::net::UnixDatagram::bind(p)
    })
    .ok()?;
    s.set_nonblocking(true).ok()?;
    Some(s)
}

/// Watches `dir` for names created or moved in; -1 if inotify is not available.
fn watch_dir(dir: &Path) -> i32 {
    let Ok(c) = sys::cstring(dir) else { return -1 };
    // SAFETY: plain inotify calls; the fd is checked and owned by the aggregator.
    unsafe {
        let fd = libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC);
        if fd < 0 {
            return -1;
        }
        if libc::inotify_add_watch(fd, c.as_ptr(), libc::IN_MOVED_TO | libc::IN_CREATE) < 0 {
            libc::close(fd);
            return -1;
        }
        fd
    }
}

/// Takes the directory's lock, a file in the private directory that no other user can
/// open (so none can hold it to stop a restart).
fn take_lock(state: &StateDir, dir: &Path) -> Result<std::fs::File, StartError> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = state.path().join("lock");
    let shown = state.shown().join("lock");
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
        .map_err(map_err("cannot open", &shown))?;
    // SAFETY: f is an open descriptor.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let mut other = String::new();
        let _ = std::io::Read::read_to_string(&mut std::io::Read::take(&f, 32), &mut other);
        let other = other.trim();
        return Err(StartError(format!(
            "another tt-aggregator{} is already running on {}; stop it first, or give this one another directory with --dir",
            if other.is_empty() { String::new() } else { format!(" (pid {other})") },
            dir.display()
        )));
    }
    f.set_len(0).map_err(map_err("cannot write", &shown))?;
    use std::os::unix::fs::FileExt;
    f.write_all_at(format!("{}\n", std::process::id()).as_bytes(), 0)
        .map_err(map_err("cannot write", &shown))?;
    Ok(f)
}

/// Makes a fresh counters page in the private directory and publishes it in the
/// tracking directory `dir` (a rename: whatever stands at `counters` is replaced, never
/// followed, and nothing is created or removed under a name another user could have
/// prepared). Returns the mapping, its view and the file's inode.
fn create_page(
    state: &StateDir,
    dir: &Path,
    pid: u32,
    started_unix_ns: u64,
) -> Result<(memmap2::MmapRaw, PageView, u64), StartError> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
    const TMP: &str = "counters.tmp";
    let tmp = state.path().join(TMP);
    // Ours, left by a crash: nobody else can write in the private directory.
    let _ = std::fs::remove_file(&tmp);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&tmp)
        .map_err(map_err("cannot create", &tmp))?;
    f.set_permissions(std::fs::Permissions::from_mode(0o644))
        .map_err(map_err("cannot chmod", &tmp))?;
    f.set_len(PAGE_SIZE as u64)
        .map_err(map_err("cannot size", &tmp))?;
    // SAFETY: fd is valid; reserve the pages so that writing them cannot fault.
    if unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, PAGE_SIZE as libc::off_t) } != 0 {
        let e = std::io::Error::last_os_error();
        let _ = std::fs::remove_file(&tmp);
        return Err(StartError(format!(
            "no space for the counters page in {} ({e}); free some space in that file system",
            dir.display()
        )));
    }
    let map = memmap2::MmapOptions::new()
        .len(PAGE_SIZE)
        .map_raw(&f)
        .map_err(map_err("cannot map", &tmp))?;
    // SAFETY: the mapping is PAGE_SIZE bytes and lives as long as the returned MmapRaw,
    // which the aggregator keeps beside the view.
    let view = unsafe { PageView::new(map.as_mut_ptr()) };
    view.init(pid, started_unix_ns);
    view.publish_main(
        &AggregatorStatus {
            pid,
            start_unix_ns: started_unix_ns,
            ..Default::default()
        },
        &[],
        &[],
    );
    let ino = f.metadata().map(|m| m.ino()).unwrap_or(0);
    state
        .publish(TMP, COUNTERS_FILE_NAME)
        .map_err(map_err("cannot publish", &dir.join(COUNTERS_FILE_NAME)))?;
    Ok((map, view, ino))
}

pub fn arch_name(arch: u32) -> &'static str {
    match arch {
        1 => "grayskull",
        2 => "wormhole_b0",
        3 => "blackhole",
        4 => "quasar",
        _ => "unknown",
    }
}

fn device_records(acc: &Accounting) -> Vec<DeviceRecord> {
    acc.devices
        .iter()
        .filter(|(&d, _)| (0..MAX_PAGE_DEVICES as i32).contains(&d))
        .map(|(&d, dev)| {
            let mut r = DeviceRecord {
                id: d as u32,
                flags: DEV_PRESENT,
                figures: dev.figures,
                l1_resident_peak: dev.l1_resident_peak,
                ..Default::default()
            };
            if let Some(info) = dev.info {
                r.flags |= DEV_HAS_INFO;
                if info.is_remote != 0 {
                    r.flags |= DEV_REMOTE;
                }
                r.info = info;
                r.arch = put_str(arch_name(info.arch));
                r.dram_total = info.total_dram_bytes;
                r.l1_total = info.total_l1_bytes;
            }
            r
        })
        .collect()
}

/// Adds sysfs devices (identity, telemetry, built-in totals) to the accounting's
/// devices; a device only a process knows about is remote; one seen in sysfs before
/// and missing now is marked gone.
fn merge_devices(
    mut recs: Vec<DeviceRecord>,
    sample: &crate::devices::Sample,
    seen: &std::collections::BTreeSet<(u32, String)>,
) -> Vec<DeviceRecord> {
    for (d, t, _) in &sample.devices {
        if d.id as usize >= MAX_PAGE_DEVICES {
            continue;
        }
        match recs.iter_mut().find(|r| r.id == d.id) {
            Some(r) => crate::devices::fill_record(r, d, t),
            None => {
                let mut r = DeviceRecord {
                    id: d.id,
                    ..Default::default()
                };
                crate::devices::fill_record(&mut r, d, t);
                recs.push(r);
            }
        }
    }
    let local: std::collections::BTreeSet<u32> =
        sample.devices.iter().map(|(d, _, _)| d.id).collect();
    let was_local: std::collections::BTreeSet<u32> = seen.iter().map(|k| k.0).collect();
    for r in recs.iter_mut() {
        if local.contains(&r.id) {
            continue;
        }
        if was_local.contains(&r.id) {
            r.flags |= DEV_GONE;
            r.flags &= !DEV_PRESENT;
        } else if r.flags & DEV_HAS_INFO == 0 && !local.is_empty() {
            // Not in sysfs while the driver shows other devices: reached over Ethernet.
            // (A device a process described keeps the process's own word on this.)
            r.flags |= DEV_REMOTE;
        }
    }
    for &id in was_local.difference(&local) {
        if !recs.iter().any(|r| r.id == id) && (id as usize) < MAX_PAGE_DEVICES {
            recs.push(DeviceRecord {
                id,
                flags: DEV_GONE,
                ..Default::default()
            });
        }
    }
    recs.sort_by_key(|r| r.id);
    recs
}

/// Processes that hold a device (the driver's pid lists) but report nothing.
fn add_untracked(
    procs: &mut Vec<ProcessRecord>,
    sample: &crate::devices::Sample,
    root: &Path,
    me: u32,
) {
    let mut extra: std::collections::BTreeMap<u32, Vec<i32>> = Default::default();
    for (d, _, holders) in &sample.devices {
        for &pid in holders {
            if pid == me || procs.iter().any(|p| p.pid == pid) {
                continue;
            }
            extra.entry(pid).or_default().push(d.id as i32);
        }
    }
    for (pid, devs) in extra {
        let comm = sys::proc_info(&root.join("proc"), pid)
            .map(|i| i.comm)
            .unwrap_or_else(|| "?".into());
        let mut r = ProcessRecord {
            pid,
            flags: PROC_ALIVE | PROC_UNTRACKED,
            comm: put_str(&comm),
            ..Default::default()
        };
        for (i, d) in devs.iter().take(MAX_PROCESS_DEVICES).enumerate() {
            r.devices[i].device = *d;
            r.num_devices = i as u32 + 1;
        }
        procs.push(r);
    }
    procs.sort_by_key(|p| p.pid);
}

fn process_records(acc: &Accounting) -> Vec<ProcessRecord> {
    let mut v: Vec<ProcessRecord> = acc
        .processes
        .values()
        .map(|p| {
            let mut r = ProcessRecord {
                pid: p.pid,
                flags: PROC_ALIVE | if p.exact() { PROC_EXACT } else { 0 },
                uid: p.uid,
                start_time: p.start_time,
                comm: put_str(&p.comm),
                first_seen_unix_ns: p.first_seen_unix_ns,
                events_applied: p.events_applied,
                events_lost: p.events_lost(),
                buffers: p.live_buffers(),
                ..Default::default()
            };
            for (i, (&d, pd)) in p.devices.iter().enumerate() {
                if i >= MAX_PROCESS_DEVICES {
                    r.flags |= PROC_DEVICE_OVERFLOW;
                    break;
                }
                r.devices[i] = ProcessDevice {
                    device: d,
                    _pad: 0,
                    used: pd.used,
                    peak: pd.peak,
                };
                r.num_devices = i as u32 + 1;
            }
            r
        })
        .collect();
    v.sort_by_key(|r| r.pid);
    v
}

/// One line per event in the original server's style (`-v`).
pub fn describe(pid: u32, ev: &Event, out: &Outcome) -> String {
    let mb = |b: u64| b as f64 / (1024.0 * 1024.0);
    match out {
        Outcome::OverLimit => format!(
            "✗ [PID {pid}] Allocation of {} bytes on device {} (buffer_id={:#x}) not tracked: the process already has {} live buffers, the most one process may; counted lost",
            ev.size,
            ev.device,
            ev.id,
            crate::limits::MAX_BUFFERS_PER_PROCESS
        ),
        Outcome::Allocated { size, btype } => format!(
            "✓ [PID {pid}] Allocated {size} bytes of {} on device {} (buffer_id={:#x})",
            btype.name(),
            ev.device,
            ev.id
        ),
        Outcome::Referenced { refcount } => format!(
            "✓ [PID {pid}] Re-reported buffer {:#x} on device {} (refcount {refcount})",
            ev.id, ev.device
        ),
        Outcome::Freed { size, last, .. } => format!(
            "✗ [PID {pid}] Freed buffer {:#x} on device {} ({size} bytes{})",
            ev.id,
            ev.device,
            if *last { ", FINAL" } else { "" }
        ),
        Outcome::UnknownFree => format!(
            "⚠ [PID {pid}] Free of unknown id {:#x} on device {} (allocated before tracking started?)",
            ev.id, ev.device
        ),
        Outcome::CbAllocated { size } => format!(
            "✓ [CB_ALLOC] [PID {pid}] Device {}: +{:.1} MB (cb_id={:#x})",
            ev.device,
            mb(*size),
            ev.id
        ),
        Outcome::CbFreed { size } => format!(
            "✗ [CB_FREE] [PID {pid}] Device {}: -{:.1} MB (cb_id={:#x})",
            ev.device,
            mb(*size),
            ev.id
        ),
        Outcome::KernelLoaded { size, ktype, total } => format!(
            "✓ [KERNEL_LOAD] {} kernel on Device {}: +{:.1} MB (Total: {:.1} MB)",
            ktype.name(),
            ev.device,
            mb(*size),
            mb(*total)
        ),
        Outcome::KernelUnloaded { size, ktype, total } => format!(
            "✗ [KERNEL_UNLOAD] {} kernel on Device {}: -{:.1} MB (Total: {:.1} MB)",
            ktype.name(),
            ev.device,
            mb(*size),
            mb(*total)
        ),
        Outcome::DeviceInfo => format!("ℹ [PID {pid}] Device {} described", ev.device),
        Outcome::Invalid(why) => format!("⚠ [PID {pid}] Rejected event ({why}): {ev:?}"),
    }
}
