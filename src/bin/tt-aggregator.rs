//! tt-aggregator: drains every tracked process's lanes into exact accounting and
//! publishes it in the counters page that tt-smi reads.

use clap::Parser;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use tttrack::aggregator::{Aggregator, Config, Verbosity};

#[derive(Parser, Debug)]
#[command(
    name = "tt-aggregator",
    version,
    about = "Drain tttrack lanes into exact per-device, per-process memory accounting"
)]
struct Args {
    /// Tracking directory (default: $TTTRACK_DIR, else /dev/shm/tttrack).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Print only errors.
    #[arg(long, short = 'q', conflicts_with = "verbose")]
    quiet: bool,
    /// Print every event, in the original allocation server's style.
    #[arg(long, short = 'v')]
    verbose: bool,
    /// Root under which sys/class/tenstorrent, sys/bus/pci/devices and
    /// proc/driver/tenstorrent are read (default: $TTTRACK_SYSFS_ROOT, else /).
    #[arg(long)]
    sysfs_root: Option<PathBuf>,
    /// Where to serve the original allocation server's socket protocol.
    #[arg(long, default_value = tttrack::compat::DEFAULT_PATH)]
    compat_socket: PathBuf,
    /// Do not serve the original protocol.
    #[arg(long)]
    no_compat_socket: bool,
    /// Serve Prometheus metrics at http://ADDR:PORT/metrics (a bare port binds to
    /// loopback). Off unless given.
    #[arg(long)]
    metrics_addr: Option<String>,
    /// Seconds between telemetry samples.
    #[arg(long, default_value_t = 1.0)]
    telemetry_interval: f64,
    /// The directory is private to the `tt-track record` with this pid, which made it:
    /// every process reporting in it is recorded, also one that ended before it was
    /// found. Refused unless the directory is ours alone (mode 0700).
    #[arg(long, value_name = "PID")]
    private_to: Option<u32>,
    /// Where TT-Metal's own memory regions (tt_device_<N>_memory) are read (default:
    /// $TTTRACK_METAL_SHM_DIR, else /dev/shm).
    #[arg(long, value_name = "DIR", conflicts_with = "no_metal_shm")]
    metal_shm_dir: Option<PathBuf>,
    /// Do not read TT-Metal's own memory regions.
    #[arg(long)]
    no_metal_shm: bool,
    /// Seconds after which another user's recording with no process of it ends (root's
    /// never do).
    #[arg(long, value_name = "SECONDS", default_value_t = 600.0)]
    recording_idle_timeout: f64,
    /// Seconds of each chip's last events kept for `tt-track snapshot` (0: none).
    #[arg(long, value_name = "SECONDS", default_value_t = tttrack::aggregator::last_events::DEFAULT_SECONDS)]
    last_events_seconds: f64,
    /// At most this many MiB of kept events per chip.
    #[arg(long, value_name = "MIB", default_value_t = tttrack::aggregator::last_events::DEFAULT_MIB_PER_CHIP)]
    last_events_mib: u64,
}

static STOP: AtomicBool = AtomicBool::new(false);

/// `dir` is a directory of our user's that no other user can write or read (0700):
/// only our own processes (and root's) can report in it.
fn ours_alone(dir: &std::path::Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if !m.is_dir() || m.uid() != me || m.mode() & 0o077 != 0 {
        return Err(format!(
            "{} must be a directory of uid {me} with mode 0700 (it is {}, uid {}, mode {:o})",
            dir.display(),
            if m.is_dir() {
                "a directory"
            } else {
                "not a directory"
            },
            m.uid(),
            m.mode() & 0o7777
        ));
    }
    Ok(())
}

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

fn main() {
    let args = Args::parse();
    tttrack::aggregator::limits::raise_open_file_limit();
    if !(args.telemetry_interval.is_finite() && args.telemetry_interval >= 0.05) {
        eprintln!("tt-aggregator: --telemetry-interval must be a number of seconds, at least 0.05");
        std::process::exit(2);
    }
    // SAFETY: installing async-signal-safe handlers that only store to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }

    let dir = args.dir.unwrap_or_else(tttrack::sys::tracking_dir_from_env);
    let verbosity = if args.quiet {
        Verbosity::Quiet
    } else if args.verbose {
        Verbosity::Verbose
    } else {
        Verbosity::Normal
    };
    let cfg = Config {
        dir: dir.clone(),
        verbosity,
        proc_root: PathBuf::from("/proc"),
        sysfs_root: tttrack::devices::sysfs_root(args.sysfs_root.clone()),
        telemetry_interval: std::time::Duration::from_secs_f64(args.telemetry_interval.min(3600.0)),
        private_to: args.private_to,
        recording_idle_timeout: std::time::Duration::from_secs_f64(
            args.recording_idle_timeout.clamp(0.1, 86_400.0 * 365.0),
        ),
        last_events_seconds: args.last_events_seconds.clamp(0.0, 3600.0),
        last_events_mib: args.last_events_mib.min(1024),
        metal_shm_dir: (!args.no_metal_shm).then(|| {
            args.metal_shm_dir
                .clone()
                .unwrap_or_else(tttrack::metal_shm::dir_from_env)
        }),
    };
    if args.private_to.is_some() {
        if let Err(e) = ours_alone(&dir) {
            eprintln!("tt-aggregator: --private-to: {e}");
            std::process::exit(2);
        }
    }
    let mut agg = match Aggregator::start(cfg) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("tt-aggregator: {e}");
            std::process::exit(1);
        }
    };
    if !args.no_compat_socket {
        if let Err(e) = agg.enable_compat(&args.compat_socket) {
            agg.log
                .error(format!("compatibility socket not served: {e}"));
        }
    }
    if let Some(a) = &args.metrics_addr {
        match tttrack::aggregator::metrics::parse_addr(a)
            .and_then(|addr| tttrack::aggregator::metrics::serve(addr, &dir))
        {
            Ok(bound) => agg.log.info(format!("   metrics: http://{bound}/metrics")),
            Err(e) => {
                eprintln!("tt-aggregator: {e}");
                std::process::exit(1);
            }
        }
    }
    match agg.serve_control() {
        Ok(()) => {}
        Err(e) => agg.log.warn(format!(
            "cannot serve {}/{}: {e}; tt-smi --buffers will not work",
            dir.display(),
            tttrack::control::SOCKET_NAME
        )),
    }
    // Producers that fill a lane wait for us: ask for a little more CPU than they get
    // (works with CAP_SYS_NICE or as root; harmless otherwise).
    // SAFETY: setpriority on our own process has no memory-safety preconditions.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, -5) };
    agg.run(&STOP);
}
