//! tt-smi: memory and telemetry of Tenstorrent devices and the processes using them.
//!
//! Exit codes: 0 shown; 1 the counters page cannot be read (other layout version,
//! malformed); 2 bad command line; 3 `--buffers` with no aggregator running;
//! 4 `-w` without a terminal.

use clap::Parser;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;
use tttrack::smi::{json, model::Model, text, tui};

#[derive(Parser, Debug)]
#[command(
    name = "tt-smi",
    version,
    about = "Tenstorrent device memory (per buffer, per process) and telemetry"
)]
struct Args {
    /// Watch: a live terminal UI (1 main, 2 charts, 3 telemetry, ? help, q quit).
    #[arg(short = 'w', long)]
    watch: bool,
    /// Refresh period of the watch view, in milliseconds.
    #[arg(short = 'r', long = "refresh", default_value_t = 500, value_parser = clap::value_parser!(u64).range(50..=60000))]
    refresh_ms: u64,
    /// One JSON document (schema in the README) instead of the table.
    #[arg(long, conflicts_with_all = ["watch"])]
    json: bool,
    /// The live buffers, largest first (leak hunting).
    #[arg(long, conflicts_with = "watch")]
    buffers: bool,
    /// With --buffers: only this process.
    #[arg(long, requires = "buffers")]
    pid: Option<u32>,
    /// With --buffers: only this device.
    #[arg(long, requires = "buffers")]
    device: Option<i32>,
    /// Tracking directory (default: $TTTRACK_DIR, else /dev/shm/tttrack).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// No colour (also when NO_COLOR is set or the output is not a terminal).
    #[arg(long)]
    no_color: bool,
    /// Accepted for compatibility with the original tt_smi_umd (telemetry is always
    /// read from sysfs here).
    #[arg(long)]
    sysfs: bool,
    /// Where TT-Metal's own memory regions (tt_device_<N>_memory) are read when no
    /// aggregator runs (default: $TTTRACK_METAL_SHM_DIR, else /dev/shm).
    #[arg(long, value_name = "DIR")]
    metal_shm_dir: Option<PathBuf>,
    /// Root under which the driver's sysfs and proc files are read when no aggregator
    /// runs (default: $TTTRACK_SYSFS_ROOT, else /).
    #[arg(long)]
    sysfs_root: Option<PathBuf>,
    /// For scripts, as nvidia-smi --query-gpu: these device fields, one row per device
    /// (see --help-query).
    #[arg(long, value_name = "FIELDS", conflicts_with_all = ["watch", "json", "buffers"])]
    query_device: Option<String>,
    /// These process fields, one row per process and device (see --help-query).
    #[arg(long, value_name = "FIELDS", conflicts_with_all = ["watch", "json", "buffers", "query_device"])]
    query_process: Option<String>,
    /// With a query: csv[,noheader][,nounits].
    #[arg(long, default_value = "csv")]
    format: String,
    /// With a query: repeat every SECONDS until interrupted.
    #[arg(short = 'l', long = "loop", value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    loop_s: Option<u64>,
    /// With a query: repeat every MS milliseconds (written -lms, as nvidia-smi).
    #[arg(long = "lms", value_name = "MS", conflicts_with = "loop_s", value_parser = clap::value_parser!(u64).range(50..))]
    loop_ms: Option<u64>,
    /// Lists the query fields, their units and what they are.
    #[arg(long)]
    help_query: bool,
}

/// Runs a device or process query, once or every `every`.
fn query(
    dir: &std::path::Path,
    root: &std::path::Path,
    args: &Args,
    every: Option<Duration>,
) -> i32 {
    use tttrack::smi::query;
    let f = match query::parse_format(&args.format) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("tt-smi: {e}");
            return 2;
        }
    };
    let mut first = true;
    loop {
        let model = match Model::load(dir, 0, root) {
            Ok(m) => m,
            Err(e) => {
                eprintln!("tt-smi: {}", e.0);
                return 1;
            }
        };
        let out = match (&args.query_device, &args.query_process) {
            (Some(fields), _) => query::devices(&model, fields, f, first),
            (_, Some(fields)) => query::processes(&model, fields, f, first),
            _ => return 2,
        };
        match out {
            Ok(t) => {
                use std::io::Write;
                let mut so = std::io::stdout();
                if so.write_all(t.as_bytes()).and_then(|_| so.flush()).is_err() {
                    return 0; // the reader went away (a closed pipe)
                }
            }
            Err(e) => {
                eprintln!("tt-smi: {e}");
                return 2;
            }
        }
        first = false;
        match every {
            Some(d) => std::thread::sleep(d),
            None => return 0,
        }
    }
}

fn main() {
    // nvidia-smi spells the millisecond loop `-lms`: a long option here.
    let args =
        Args::parse_from(std::env::args_os().map(|a| if a == "-lms" { "--lms".into() } else { a }));
    if args.help_query {
        print!("{}", tttrack::smi::query::help());
        return;
    }
    let _ = args.sysfs;
    if let Some(d) = &args.metal_shm_dir {
        // Read where the model looks for regions (one definition: metal_shm::dir_from_env);
        // set before any thread starts.
        std::env::set_var("TTTRACK_METAL_SHM_DIR", d);
    }
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(tttrack::sys::tracking_dir_from_env);
    let sysfs_root = tttrack::devices::sysfs_root(args.sysfs_root.clone());
    let tty = std::io::stdout().is_terminal();
    let color = tty && !args.no_color && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    if args.buffers {
        std::process::exit(buffers(&dir, args.pid, args.device, args.json));
    }
    if args.query_device.is_some() || args.query_process.is_some() {
        let every = args
            .loop_ms
            .map(Duration::from_millis)
            .or(args.loop_s.map(Duration::from_secs));
        std::process::exit(query(&dir, &sysfs_root, &args, every));
    }
    if args.watch {
        if !tty {
            eprintln!(
                "tt-smi: -w needs a terminal; use tt-smi (snapshot) or tt-smi --json in scripts"
            );
            std::process::exit(4);
        }
        let mut src = tui::DirSource { dir, sysfs_root };
        if let Err(e) = tui::run(&mut src, Duration::from_millis(args.refresh_ms), color) {
            eprintln!("tt-smi: {e}");
            std::process::exit(1);
        }
        return;
    }
    let model = match Model::load(&dir, 0, &sysfs_root) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("tt-smi: {}", e.0);
            std::process::exit(1);
        }
    };
    if args.json {
        print!("{}", json::render(&model));
    } else {
        print!("{}", text::render(&model, &text::Style { color }));
    }
}

fn buffers(dir: &std::path::Path, pid: Option<u32>, device: Option<i32>, json: bool) -> i32 {
    let mut q = String::from("buffers");
    if let Some(p) = pid {
        q.push_str(&format!(" pid={p}"));
    }
    if let Some(d) = device {
        q.push_str(&format!(" device={d}"));
    }
    use tttrack::control::RequestError;
    let text = match tttrack::control::request(dir, &q) {
        Ok(t) => t,
        Err(RequestError::NotRunning(e)) => {
            eprintln!(
                "tt-smi: cannot ask tt-aggregator for buffers ({e}): is it running on {}? start it with: tt-aggregator",
                dir.display()
            );
            return 3;
        }
        Err(e) => {
            eprintln!("tt-smi: buffers of {}: {e}", dir.display());
            return 1;
        }
    };
    if json {
        return buffers_json(&text);
    }
    let now = tttrack::sys::unix_ns() / 1_000_000_000;
    let mut n = 0;
    let mut total = 0u64;
    let mut truncated = None;
    println!(
        "{:>8}  {:<16} {:>3} {:>4}  {:<13} {:>18}  {:>10}  {:>4}  {:>8}",
        "PID", "Name", "Dev", "(as)", "Type", "Address", "Size", "Refs", "Age"
    );
    for line in text.lines() {
        let Ok(b) = serde_json::from_str::<tttrack::control::BufferLine>(line) else {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
                if v["truncated"] == true {
                    truncated = Some((v["shown"].as_u64(), v["total"].as_u64()));
                }
            }
            continue;
        };
        n += 1;
        total += b.size;
        let age = now.saturating_sub(b.first_seen_unix_s as u64);
        println!(
            "{:>8}  {:<16} {:>3} {:>4}  {:<13} {:>#18x}  {:>10}  {:>4}  {:>7}s",
            b.pid,
            b.comm,
            b.device,
            format!("({})", b.logical_device),
            b.btype,
            b.address,
            tttrack::sys::human_bytes(b.size),
            b.refcount,
            age
        );
    }
    match truncated {
        Some((Some(shown), Some(all))) => println!(
            "the {shown} largest of {all} live buffers, {} (the aggregator answers at most {} at a time; narrow with --pid or --device)",
            tttrack::sys::human_bytes(total),
            tttrack::aggregator::limits::DEFAULT_BUFFERS_ANSWER
        ),
        _ => println!("{n} live buffers, {}", tttrack::sys::human_bytes(total)),
    }
    0
}

/// `--buffers --json`: one document, a JSON object per live buffer (largest first)
/// and whether the aggregator's answer was cut. `page_size`, `size_per_bank` and
/// `layout` are null where no source reports them (the lanes carry neither yet).
fn buffers_json(text: &str) -> i32 {
    let mut list = Vec::new();
    let mut cut = serde_json::Value::Null;
    for line in text.lines() {
        match serde_json::from_str::<tttrack::control::BufferLine>(line) {
            Ok(b) => list.push(serde_json::json!({
                "pid": b.pid,
                "comm": b.comm,
                "device": b.device,
                "logical_device": b.logical_device,
                "type": b.btype,
                "address": b.address,
                "size": b.size,
                "page_size": null,
                "size_per_bank": null,
                "layout": null,
                "refcount": b.refcount,
                "first_seen_unix_s": b.first_seen_unix_s,
            })),
            Err(_) => {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
                    if v["truncated"] == true {
                        cut = serde_json::json!({ "shown": v["shown"], "total": v["total"] });
                    }
                }
            }
        }
    }
    let doc = serde_json::json!({ "schema": 1, "buffers": list, "truncated": cut });
    println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    0
}
