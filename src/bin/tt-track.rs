//! tt-track: run things under tracking.
//!
//! - `tt-track demo`: the whole pipeline in one command: a tt-aggregator, a synthetic
//!   TT-Metal-like workload (several processes coming and going, one of them leaking)
//!   and the live view; `q` ends all of it and removes what it created.
//! - `tt-track workload`: one process of that workload (reports through libtttrack.so).
//! - `tt-track run [--] CMD [ARGS...]`: runs CMD with libtttrack.so preloaded and
//!   tracking enabled, and passes its exit status through.
//! - `tt-track doctor`: checks this host's tracking set-up, line by line.
//! - `tt-track record`, `report`, `export`, `diff`: a run recorded, and what the
//!   recording says, on any machine.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tttrack::workload;

#[path = "tt-track/demo.rs"]
mod demo;
use demo::demo;
#[path = "tt-track/record.rs"]
mod record;
#[path = "tt-track/recorded.rs"]
mod recorded;

#[derive(Parser, Debug)]
#[command(
    name = "tt-track",
    version,
    about = "Run programs and demos under tttrack memory tracking"
)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Aggregator + synthetic workload + live view, together.
    Demo {
        /// Tracking directory for the demo (default: a fresh one under /dev/shm,
        /// removed at the end).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// No live view: run for --duration seconds, then print a snapshot.
        #[arg(long)]
        no_ui: bool,
        /// Seconds to run with --no-ui.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// Workload processes running at once.
        #[arg(long, default_value_t = 3)]
        processes: usize,
    },
    /// One process of the demo workload (a stand-in for a TT-Metal model).
    Workload {
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Program cycles (0: until killed).
        #[arg(long, default_value_t = 0)]
        cycles: u64,
        /// Milliseconds per program.
        #[arg(long, default_value_t = 50)]
        pace_ms: u64,
        /// Exit holding part of the memory.
        #[arg(long)]
        leak: bool,
        /// Process name (as shown by tt-smi).
        #[arg(long)]
        name: Option<String>,
        /// Ignored: lets a soak script find (and stop) its own workload processes.
        #[arg(long, hide = true)]
        soak_dir: Option<PathBuf>,
    },
    /// Load generator for benchmarks: THREADS threads, each PAIRS alloc/free pairs
    /// through libtttrack.so, then KEEP live buffers per thread held for HOLD_MS.
    Load {
        #[arg(long, default_value_t = 4)]
        threads: u64,
        #[arg(long, default_value_t = 1_000_000)]
        pairs: u64,
        #[arg(long, default_value_t = 0)]
        keep: u64,
        #[arg(long, default_value_t = 0)]
        hold_ms: u64,
    },
    /// Check this host's tracking set-up: each line says OK or what to do; exits 1 when
    /// something is wrong.
    Doctor {
        /// Tracking directory (default: $TTTRACK_DIR, else /dev/shm/tttrack).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Root under which the driver's files are looked up (default: / or
        /// $TTTRACK_SYSFS_ROOT).
        #[arg(long)]
        sysfs_root: Option<PathBuf>,
        /// The compatibility socket to look for.
        #[arg(long, default_value = tttrack::compat::DEFAULT_PATH)]
        compat_socket: PathBuf,
        /// A TT-Metal library (libtt_metal.so): whether LD_PRELOAD can take over its
        /// AllocationClient calls.
        #[arg(long)]
        metal_lib: Option<PathBuf>,
        /// Where TT-Metal's own memory regions are (default: $TTTRACK_METAL_SHM_DIR,
        /// else /dev/shm).
        #[arg(long, value_name = "DIR")]
        metal_shm_dir: Option<PathBuf>,
    },
    /// Run a command with libtttrack.so preloaded and tracking on.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        cmd: Vec<String>,
    },
    /// Run a command tracked and record every event of it and of the processes it
    /// starts into a file (then `tt-track report FILE`).
    Record {
        /// The recording (default: the command's name and the time, `.ttrec`).
        #[arg(short = 'o', long)]
        output: Option<PathBuf>,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        cmd: Vec<String>,
    },
    /// The last seconds the aggregator kept of each chip (every event, with what each
    /// process held when they began and the address maps at the end), as a recording
    /// (then `tt-track report FILE`): taken after an out-of-memory failure.
    Snapshot {
        /// Only this process (default: every process of your user; root: all).
        #[arg(long)]
        pid: Option<u32>,
        /// How far back, in seconds (the aggregator keeps 30 by default:
        /// tt-aggregator --last-events-seconds).
        #[arg(long, default_value_t = 30.0)]
        seconds: f64,
        /// What failed, in the words of the error (shown by the report).
        #[arg(long, value_name = "MESSAGE")]
        failure: Option<String>,
        /// The file (default: snapshot-<time>.ttrec).
        #[arg(short = 'o', long)]
        output: Option<PathBuf>,
        /// Tracking directory (default: $TTTRACK_DIR, else /dev/shm/tttrack).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Makes `tt-smi` in DIR call tttrack's tt-smi (the one beside this tt-track): for
    /// an environment where pip installed tttrack as `tttrack-smi` and no other
    /// `tt-smi` is installed. Refuses if DIR already has a `tt-smi`.
    AliasTtSmi {
        /// Where (default: `$VIRTUAL_ENV/bin`).
        dir: Option<PathBuf>,
    },
    /// What a recording says: peaks per device and type, what was live at each peak,
    /// leaks, short-lived allocations, sizes.
    Report {
        file: PathBuf,
        /// One JSON document instead of text (schema in the README).
        #[arg(long)]
        json: bool,
        /// Also write one self-contained HTML page with charts to OUT.
        #[arg(long, value_name = "OUT")]
        html: Option<PathBuf>,
    },
    /// A recording as a Perfetto (Chrome trace-event JSON) trace, or CSV.
    Export {
        file: PathBuf,
        #[arg(long, value_enum, default_value_t = recorded::Format::Perfetto)]
        format: recorded::Format,
        /// Where to write (default: standard output).
        #[arg(short = 'o', long)]
        output: Option<PathBuf>,
    },
    /// Two recordings' peaks and leaks side by side; with --fail-above, exit 1 when a
    /// peak grew by more than PCT percent or a leak appeared.
    Diff {
        base: PathBuf,
        new: PathBuf,
        #[arg(long, value_name = "PCT")]
        fail_above: Option<f64>,
    },
}

fn main() {
    let args = Args::parse();
    let code = match args.cmd {
        Cmd::Demo {
            dir,
            no_ui,
            duration,
            processes,
        } => demo(dir, no_ui, duration, processes),
        Cmd::Workload {
            seed,
            cycles,
            pace_ms,
            leak,
            name,
            soak_dir: _,
        } => run_workload(seed, cycles, pace_ms, leak, name),
        Cmd::Run { cmd } => run_cmd(cmd),
        Cmd::Record { output, cmd } => record::record(output, cmd),
        Cmd::Snapshot {
            pid,
            seconds,
            failure,
            output,
            dir,
        } => snapshot(pid, seconds, failure, output, dir),
        Cmd::AliasTtSmi { dir } => alias_tt_smi(dir),
        Cmd::Report { file, json, html } => recorded::report(&file, json, html.as_deref()),
        Cmd::Export {
            file,
            format,
            output,
        } => recorded::export(&file, format, output.as_deref()),
        Cmd::Diff {
            base,
            new,
            fail_above,
        } => recorded::diff(&base, &new, fail_above),
        Cmd::Load {
            threads,
            pairs,
            keep,
            hold_ms,
        } => load(threads, pairs, keep, hold_ms),
        Cmd::Doctor {
            dir,
            sysfs_root,
            compat_socket,
            metal_lib,
            metal_shm_dir,
        } => {
            let o = tttrack::doctor::Options {
                dir: dir.unwrap_or_else(tttrack::sys::tracking_dir_from_env),
                sysfs_root: tttrack::devices::sysfs_root(sysfs_root),
                compat_socket,
                metal_lib,
                metal_shm_dir: metal_shm_dir.unwrap_or_else(tttrack::metal_shm::dir_from_env),
            };
            tttrack::doctor::report(&tttrack::doctor::examine(&o))
        }
    };
    std::process::exit(code);
}

fn lib_or_exit() -> PathBuf {
    match workload::library_path() {
        Some(p) if p.exists() => p,
        Some(p) => {
            eprintln!(
                "tt-track: {} does not exist; set TTTRACK_LIB to the path of libtttrack.so",
                p.display()
            );
            std::process::exit(127);
        }
        None => {
            eprintln!(
                "tt-track: libtttrack.so not found beside this tt-track; build it with `cargo build --release` \
                 or set TTTRACK_LIB to its path"
            );
            std::process::exit(127);
        }
    }
}

extern "C" fn stop_workload(_: libc::c_int) {
    workload::STOP.store(true, Ordering::Relaxed);
}

fn run_workload(seed: u64, cycles: u64, pace_ms: u64, leak: bool, name: Option<String>) -> i32 {
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(
            libc::SIGTERM,
            stop_workload as *const () as libc::sighandler_t,
        );
        libc::signal(
            libc::SIGINT,
            stop_workload as *const () as libc::sighandler_t,
        );
    }
    if let Some(n) = name {
        if let Ok(c) = std::ffi::CString::new(n) {
            // SAFETY: PR_SET_NAME with a valid C string (truncated by the kernel to 15 bytes).
            unsafe { libc::prctl(libc::PR_SET_NAME, c.as_ptr() as libc::c_ulong, 0, 0, 0) };
        }
    }
    let lib = match workload::Lib::load(&lib_or_exit()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("tt-track: {e}");
            return 127;
        }
    };
    if !lib.enabled() {
        eprintln!("tt-track workload: tracking is off (set TT_ALLOC_TRACKING_ENABLED=1); running untracked");
    }
    let dropped = workload::run(
        &lib,
        &workload::Options {
            seed,
            cycles,
            pace: Duration::from_millis(pace_ms),
            leak,
        },
    );
    if dropped > 0 {
        eprintln!("tt-track workload: {dropped} events could not be delivered");
    }
    0
}

fn load(threads: u64, pairs: u64, keep: u64, hold_ms: u64) -> i32 {
    let lib = match workload::Lib::load(&lib_or_exit()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("tt-track: {e}");
            return 127;
        }
    };
    let t = Instant::now();
    let hs: Vec<_> = (0..threads)
        .map(|th| {
            std::thread::spawn(move || {
                let base = th << 40;
                for k in 0..pairs {
                    lib.alloc(0, 4096, 0, base + k);
                    lib.free(0, base + k);
                }
                for k in 0..keep {
                    lib.alloc(0, 64, 1, base + (1 << 39) + k);
                }
            })
        })
        .collect();
    for h in hs {
        let _ = h.join();
    }
    let secs = t.elapsed().as_secs_f64();
    let dropped = lib.dropped();
    println!(
        "events {} seconds {secs:.6} dropped {dropped}",
        threads * (2 * pairs + keep)
    );
    use std::io::Write;
    let _ = std::io::stdout().flush();
    std::thread::sleep(Duration::from_millis(hold_ms));
    0
}

/// CMD with libtttrack.so preloaded (before anything already in `LD_PRELOAD`) and
/// tracking on.
fn tracked(cmd: &[String], lib: &std::path::Path) -> Command {
    let mut preload = lib.display().to_string();
    if let Some(old) = std::env::var_os("LD_PRELOAD") {
        let old = old.to_string_lossy();
        if !old.trim().is_empty() {
            preload = format!("{preload}:{old}");
        }
    }
    let mut c = Command::new(&cmd[0]);
    c.args(&cmd[1..])
        .env("LD_PRELOAD", preload)
        .env("TT_ALLOC_TRACKING_ENABLED", "1");
    c
}

fn run_cmd(cmd: Vec<String>) -> i32 {
    use std::os::unix::process::CommandExt;
    let mut cmd = cmd;
    if cmd.first().is_some_and(|c| c == "--") {
        cmd.remove(0);
    }
    let Some((prog, _)) = cmd.split_first() else {
        eprintln!("tt-track run: no command given (usage: tt-track run [--] CMD [ARGS...])");
        return 2;
    };
    let lib = lib_or_exit();
    let err = tracked(&cmd, &lib).exec();
    eprintln!("tt-track run: cannot run {prog}: {err}");
    if err.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    }
}

/// `tt-track snapshot`.
fn snapshot(
    pid: Option<u32>,
    seconds: f64,
    failure: Option<String>,
    output: Option<PathBuf>,
    dir: Option<PathBuf>,
) -> i32 {
    let dir = dir.unwrap_or_else(tttrack::sys::tracking_dir_from_env);
    let out = output.unwrap_or_else(|| {
        PathBuf::from(format!(
            "snapshot-{}.ttrec",
            tttrack::sys::unix_ns() / 1_000_000_000
        ))
    });
    let ask = tttrack::recording::snapshot::Ask {
        pid,
        seconds,
        failure,
    };
    match tttrack::recording::snapshot::take(&dir, &ask, &out) {
        Ok(w) => {
            eprintln!(
                "tt-track: snapshot of {} processes, {} events of the last {seconds} s, in {} ({} bytes); read it with: tt-track report {}",
                w.processes,
                w.events,
                out.display(),
                w.bytes,
                out.display()
            );
            0
        }
        Err(e) => {
            eprintln!("tt-track: snapshot: {e}");
            1
        }
    }
}

/// `tt-track alias-tt-smi`.
fn alias_tt_smi(dir: Option<PathBuf>) -> i32 {
    let Some(dir) =
        dir.or_else(|| std::env::var_os("VIRTUAL_ENV").map(|v| PathBuf::from(v).join("bin")))
    else {
        eprintln!("tt-track: alias-tt-smi: no DIR given and no virtual environment active (VIRTUAL_ENV): say where, e.g. tt-track alias-tt-smi ~/.local/bin");
        return 2;
    };
    let ours = match std::env::current_exe() {
        Ok(e) => e.with_file_name("tt-smi"),
        Err(e) => {
            eprintln!("tt-track: alias-tt-smi: where is this tt-track? {e}");
            return 1;
        }
    };
    if !ours.exists() {
        eprintln!(
            "tt-track: alias-tt-smi: no tt-smi beside this tt-track ({})",
            ours.display()
        );
        return 1;
    }
    let link = dir.join("tt-smi");
    if link.symlink_metadata().is_ok() {
        eprintln!(
            "tt-track: alias-tt-smi: {} exists already (another tt-smi, such as Tenstorrent's): left as it is; tttrack's is tttrack-smi",
            link.display()
        );
        return 1;
    }
    match std::os::unix::fs::symlink(&ours, &link) {
        Ok(()) => {
            eprintln!(
                "tt-track: {} now runs tttrack's tt-smi ({})",
                link.display(),
                ours.display()
            );
            0
        }
        Err(e) => {
            eprintln!("tt-track: alias-tt-smi: {}: {e}", link.display());
            1
        }
    }
}
