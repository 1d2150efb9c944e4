//! tt-aggregator's engine: the loop that finds every segment, drains every lane,
//! applies each process's events in sequence order into the exact [`Accounting`],
//! releases what dead processes held, and publishes everything in the counters page.
//!
//! This file is the loop and the state it keeps; each step is a file of its own:
//!
//! | step of a pass | file |
//! |---|---|
//! | look at new segment names (those inotify reports; a sweep of the directory every second, every 50 ms without inotify, a bounded number of names a pass), validate them, attribute them only to their owner; a refused name costs nothing again | `aggregator/discovery.rs` |
//! | read each lane's new events into its process's pending list | `aggregator/drain.rs` |
//! | order them by sequence number, wait for a missing one up to [`GAP_TIMEOUT`], then skip it and count it lost | `merge.rs` (core) |
//! | apply an event to the figures | `accounting.rs` (core) |
//! | write the applied events to the journal, then release the lanes' slots | `aggregator/commit.rs` |
//! | every 100 ms, release the processes that ended | `aggregator/reaper.rs` |
//! | every 100 ms, read TT-Metal's own regions (`tt_device_<N>_memory`) | `aggregator/metal_regions.rs` |
//! | events, queries and dumps of the compatibility socket | `aggregator/compat_clients.rs` |
//! | answer the request socket, within its share of time | `aggregator/requests.rs` (its connections: `aggregator/control_server.rs`) |
//! | publish the counters page (at most every 1 ms, at least every 100 ms) and its history | `aggregator/publish.rs` |
//! | device rows: the processes' figures beside the driver's telemetry | `aggregator/device_records.rs` |
//!
//! Start-up (lock, page, sockets) is `aggregator/startup.rs`, the private directory
//! `aggregator/state_dir.rs`, log lines `aggregator/log.rs`.
//!
//! Between passes it naps: not at all in a flood, 50 us to 500 us while events flow,
//! 2 ms for two seconds after the last event, 10 ms when idle, 40 ms after ten idle
//! seconds; a producer with a full lane (through the wake socket) or a new segment
//! (through inotify) wakes it at once.

pub mod commit;
pub mod compat_clients;
pub mod compat_listener;
pub mod control_server;
pub mod device_records;
pub mod discovery;
pub mod drain;
pub mod fault_guard;
pub mod journal;
pub mod last_events;
pub mod limits;
pub mod log;
pub mod metal_regions;
pub mod metrics;
pub mod publish;
pub mod reaper;
pub mod recordings;
pub mod requests;
pub mod segment_reader;
pub mod startup;
pub mod state_dir;

use crate::accounting::{Accounting, ProcKey};
use crate::counters_page::AggregatorStatus;
use crate::shm_layout::{COUNTERS_FILE_NAME, WAKE_SOCKET_NAME};
use crate::sys;
use journal::Journal;
pub use log::{describe, Log, Verbosity};
use std::collections::HashSet;
use std::os::unix::io::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How long a missing sequence number is waited for before it is skipped.
pub const GAP_TIMEOUT: Duration = Duration::from_millis(250);
/// How often the directory is listed when inotify cannot tell us about new names.
const DISCOVERY_INTERVAL: Duration = Duration::from_millis(50);
/// How often the directory is listed anyway when inotify watches it.
const DISCOVERY_INTERVAL_WATCHED: Duration = Duration::from_secs(1);
const LIVENESS_INTERVAL: Duration = Duration::from_millis(100);
const HISTORY_INTERVAL: Duration = Duration::from_secs(1);

/// Journal lane number of events that came over the compatibility socket.
pub const COMPAT_LANE: u8 = 255;

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
    /// The directory is private to the recorder with this pid (`tt-track record` made
    /// it, 0700, for this aggregator alone): every process that reports in it belongs
    /// to that recorder's recordings, also one that ended before it was found.
    pub private_to: Option<u32>,
    /// Where TT-Metal's own regions (`tt_device_<N>_memory`) are read (`/dev/shm`
    /// normally); `None`: not read.
    pub metal_shm_dir: Option<PathBuf>,
    /// Another user's recording with no process of it for this long ends (its slot
    /// goes back).
    pub recording_idle_timeout: Duration,
    /// The last events of each chip kept for snapshots: this many seconds, at most
    /// `last_events_mib` MiB per chip (either 0: none kept).
    pub last_events_seconds: f64,
    pub last_events_mib: u64,
}

/// The default of [`Config::recording_idle_timeout`].
pub const RECORDING_IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// Why the aggregator could not start.
#[derive(Debug)]
pub struct StartError(pub String);

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// This aggregator's own identity and the files it holds for its life.
struct Identity {
    pid: u32,
    started_unix_ns: u64,
    /// The private directory: lock, journal, sockets before they are published.
    state_dir: state_dir::StateDir,
    _lock: std::fs::File,
}

/// What wakes the loop from its nap.
struct Wakeups {
    /// inotify descriptor watching the directory for new segments (-1: polling only).
    inotify: i32,
    /// The bound wake socket (None: producers just wait for the next pass).
    wake: Option<std::os::unix::net::UnixDatagram>,
}

/// When each periodic step last ran.
struct Clock {
    discovery: Instant,
    liveness: Instant,
    history: Instant,
    /// Last refresh of every segment's heartbeat (monotonic ns).
    beat_ns: u64,
    /// Last pass that read an event.
    activity: Instant,
}

pub struct Aggregator {
    pub cfg: Config,
    pub log: Log,
    pub acc: Accounting,
    journal: Journal,
    me: Identity,
    segments: discovery::Segments,
    segmentless: reaper::Segmentless,
    page: publish::Page,
    status: AggregatorStatus,
    wakeups: Wakeups,
    telemetry: device_records::Telemetry,
    compat: compat_clients::CompatClients,
    requests: requests::Requests,
    clock: Clock,
    /// Processes told in the log to be past `limits::MAX_BUFFERS_PER_PROCESS`.
    over_limit_logged: HashSet<ProcKey>,
    recordings: recordings::Recordings,
    /// Each chip's last events, for snapshots.
    last: last_events::LastEvents,
    /// TT-Metal's own regions: the second source.
    metal: metal_regions::MetalSource,
    /// Processes told in the log that an identity of theirs was refused.
    refusals_logged: HashSet<ProcKey>,
}

impl Aggregator {
    /// Runs passes until `stop` is set, then shuts down cleanly.
    pub fn run(&mut self, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            let n = self.pass();
            if n > 0 {
                self.clock.activity = Instant::now();
            }
            // Let work pile up a little between drains: it keeps us off the producers'
            // cache lines (every read of a line the producer is writing moves it between
            // cores) at no cost in latency. Idle for a while: nap long (cheap); recently
            // active: short naps keep event-to-page latency low. A full lane wakes us
            // at once either way.
            let nap = if n >= drain::LANE_BATCH {
                // A lane had at least what one pass takes: a flood. Drain on at once (a
                // nap now would only leave its producer waiting).
                Duration::ZERO
            } else if n == 0 && self.clock.activity.elapsed() > Duration::from_secs(10) {
                // Long idle: each wake-up costs more than the pass (a context switch),
                // so fewer of them; a full lane or a new segment still wakes us at once.
                Duration::from_millis(40)
            } else if n == 0 && self.clock.activity.elapsed() > Duration::from_secs(2) {
                Duration::from_millis(10)
            } else if n == 0 {
                Duration::from_millis(2)
            } else if n < 1024 {
                Duration::from_micros(500)
            } else {
                Duration::from_micros(50)
            };
            if !nap.is_zero() {
                self.nap(nap);
            }
        }
        self.shutdown();
    }

    /// Sleeps up to `d`, waking early when a producer sends to the wake socket or a new
    /// name appears in the directory.
    fn nap(&mut self, d: Duration) {
        let w = &self.wakeups;
        let wfd = w.wake.as_ref().map(|w| w.as_raw_fd()).unwrap_or(-1);
        let mut fds = [
            libc::pollfd {
                fd: wfd,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: w.inotify,
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
        if let Some(w) = &w.wake {
            let mut buf = [0u8; 16];
            while w.recv(&mut buf).is_ok() {}
        }
    }

    /// One pass; returns the number of events read.
    pub fn pass(&mut self) -> usize {
        let now = Instant::now();
        self.page.view.beat();
        let interval = if self.wakeups.inotify >= 0 {
            DISCOVERY_INTERVAL_WATCHED
        } else {
            DISCOVERY_INTERVAL
        };
        let reported = self.dir_changed();
        let due = now.duration_since(self.clock.discovery) >= interval;
        if reported || due || self.segments.has_work() {
            // Bounded work a pass: reported names first, then part of a sweep (one
            // begins every interval).
            self.discover(due);
            if due {
                self.clock.discovery = now;
            }
        }
        let (mut read, need_snapshot) = self.drain_all();
        // The socket's events too, before the journal is written: nothing reaches the
        // page before it is durable (a socket cannot be read again after a crash).
        read += self.serve_compat();
        let need_snapshot = need_snapshot | std::mem::take(&mut self.requests.snapshot_due);
        self.persist_and_release(need_snapshot);
        self.flush_recordings();
        if now.duration_since(self.clock.liveness) >= LIVENESS_INTERVAL {
            self.clock.liveness = now;
            self.reap_dead();
            self.read_metal(now);
            // Kept events past the window go even when nothing new comes.
            self.last.trim(sys::unix_ns() / 1_000_000);
        }
        self.serve_requests();
        if read > 0 {
            self.page.dirty = true;
        }
        self.publish_if_due(now);
        self.answer_syncs();
        if now.duration_since(self.clock.history) >= HISTORY_INTERVAL {
            self.clock.history = now;
            self.check_page();
            self.say_counted_refusals();
            self.check_space();
            self.check_holders();
            self.prune_recordings();
            self.push_history();
        }
        read
    }

    /// Refreshes every attached segment's heartbeat if 200 us passed since the last
    /// time. Called from inside long stretches of work (large batches, journal writes),
    /// so producers waiting on a full lane see that the aggregator is making progress.
    fn beat_if_due(&mut self) {
        let now = sys::monotonic_ns();
        if now.saturating_sub(self.clock.beat_ns) < 200_000 {
            return;
        }
        self.clock.beat_ns = now;
        for a in self.segments.attached.values() {
            a.seg.heartbeat(self.me.pid, now);
        }
        self.page.view.beat();
    }

    /// Final pass, snapshot, and removal of the counters page and sockets (readers then
    /// say that no aggregator is running).
    pub fn shutdown(&mut self) {
        self.telemetry.stop_sampler();
        self.pass();
        if let Err(e) = self.journal.compact(&self.acc) {
            self.log
                .error(format!("cannot write the final snapshot: {e}"));
        }
        for a in self.segments.attached.values() {
            a.seg
                .view()
                .header()
                .consumer_pid
                .store(0, Ordering::Relaxed);
        }
        let ino = self.page.ino;
        state_dir::remove_own(&self.cfg.dir, COUNTERS_FILE_NAME, |m| {
            std::os::unix::fs::MetadataExt::ino(m) == ino
        });
        state_dir::remove_own_socket(&self.cfg.dir, crate::control::SOCKET_NAME);
        state_dir::remove_own_socket(&self.cfg.dir, WAKE_SOCKET_NAME);
        self.compat.remove_socket();
        self.log.info(format!(
            "tt-aggregator stopped: {} events applied, {} lost, {} processes still tracked",
            self.acc.events_applied,
            self.acc.events_lost(),
            self.acc.processes().len()
        ));
    }

    pub fn page_bytes(&self) -> usize {
        self.page.map.len()
    }

    pub fn started_unix_ns(&self) -> u64 {
        self.me.started_unix_ns
    }
}
