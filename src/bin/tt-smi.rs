//! tt-smi: memory and telemetry of Tenstorrent devices and the processes using them.
//!
//! Exit codes: 0 shown; 1 the counters page cannot be read (other layout version,
//! malformed; with `--fits`: it does not fit); 2 bad command line; 3 `--buffers`,
//! `--map` or `--fits` with no aggregator running; 4 `-w` without a terminal; 5 no
//! address map of that type.

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
    /// With --buffers, --map or --fits: only this device.
    #[arg(long)]
    device: Option<i32>,
    /// The address map of each chip and buffer type: free bytes per bank, the largest
    /// free block, fragmentation, the largest gaps.
    #[arg(long, conflicts_with_all = ["watch", "buffers"])]
    map: bool,
    /// Would an interleaved buffer of SIZE bytes (in pages of PAGE bytes, default 2048)
    /// fit now, as TT-Metal's allocator would place it? Exit 0 yes, 1 no (and the
    /// buffers that split the free space), 5 no map of that type.
    #[arg(long, value_name = "SIZE[,PAGE]", requires = "btype", conflicts_with_all = ["watch", "buffers"])]
    fits: Option<String>,
    /// With --map or --fits: the buffer type (DRAM, L1, L1_SMALL, TRACE).
    #[arg(long = "type", id = "btype", value_name = "TYPE")]
    btype: Option<String>,
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
    if args.device.is_some() && !(args.buffers || args.map || args.fits.is_some()) {
        eprintln!("tt-smi: --device goes with --buffers, --map or --fits");
        std::process::exit(2);
    }
    if args.buffers {
        std::process::exit(buffers(&dir, args.pid, args.device, args.json));
    }
    if args.map || args.fits.is_some() || args.btype.is_some() {
        std::process::exit(map(&dir, &args));
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
        // The address maps, if the aggregator runs and has any (best effort: the
        // figures above stand without them).
        let maps: Vec<serde_json::Value> = match model.aggregator {
            Some(_) => tttrack::control::request(&dir, "map")
                .map(|t| {
                    t.lines()
                        .filter_map(|l| serde_json::from_str(l).ok())
                        .collect()
                })
                .unwrap_or_default(),
            None => Vec::new(),
        };
        print!("{}", json::render_with_maps(&model, &maps));
    } else {
        print!("{}", text::render(&model, &text::Style { color }));
    }
}

/// `--map` / `--fits`.
fn map(dir: &std::path::Path, args: &Args) -> i32 {
    use tttrack::accounting::maps;
    let btype = match args.btype.as_deref().map(|t| (t, maps::parse_type(t))) {
        Some((t, None)) => {
            eprintln!("tt-smi: --type {t}: not a buffer type (DRAM, L1, L1_SMALL, TRACE)");
            return 2;
        }
        Some((_, t)) => t,
        None => None,
    };
    let fits = match args.fits.as_deref().map(maps::parse_fits) {
        Some(Err(e)) => {
            eprintln!("tt-smi: --fits {e}");
            return 2;
        }
        Some(Ok(f)) => Some(f),
        None => None,
    };
    let q = maps::MapQuery {
        device: args.device,
        btype,
        fits,
        strip: None,
    };
    tttrack::smi::map::run(dir, &q, args.json)
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
        "{:>8}  {:<16} {:>3} {:>4}  {:<13} {:>18}  {:>10}  {:>10}  {:>8}  {:<16}  {:>4}  {:>8}  {:<4}",
        "PID",
        "Name",
        "Dev",
        "(as)",
        "Type",
        "Address",
        "Size",
        "Per bank",
        "Page",
        "Layout",
        "Refs",
        "Age",
        "Mesh"
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
        // What the producer did not say shows as "-".
        let (per_bank, page, layout) = match &b.detail {
            Some(d) => (
                tttrack::sys::human_bytes(d.size_per_bank),
                d.page_size.to_string(),
                if d.num_cores > 0 {
                    format!("{} ({} cores)", d.layout, d.num_cores)
                } else {
                    d.layout.clone()
                },
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        // A mesh buffer's part on this chip: the mesh's id and how many chips it spans.
        let mesh = b.mesh.map_or_else(
            || "-".to_string(),
            |m| format!("{} ({} chips)", m.mesh_id, m.chips),
        );
        println!(
            "{:>8}  {:<16} {:>3} {:>4}  {:<13} {:>#18x}  {:>10}  {:>10}  {:>8}  {:<16}  {:>4}  {:>7}s  {}",
            b.pid,
            b.comm,
            b.device,
            format!("({})", b.logical_device),
            b.btype,
            b.address,
            tttrack::sys::human_bytes(b.size),
            per_bank,
            page,
            layout,
            b.refcount,
            age,
            mesh
        );
    }
    match truncated {
        Some((Some(shown), Some(all))) => println!(
            "the {shown} largest of {all} live buffers, {} (the aggregator answers at most {} at a time; narrow with --pid or --device)",
            tttrack::sys::human_bytes(total),
            tttrack::control::DEFAULT_BUFFERS_ANSWER
        ),
        _ => println!("{n} live buffers, {}", tttrack::sys::human_bytes(total)),
    }
    0
}

/// `--buffers --json`: one document, a JSON object per live buffer (largest first)
/// and whether the aggregator's answer was cut. `page_size`, `size_per_bank`,
/// `layout` and `num_cores` are null where the producer does not say them (the graph
/// hook says them for every buffer; the C ABI's `tttrack_alloc` alone does not).
/// `mesh` is `{"id", "chips"}` for one chip's part of a buffer of a mesh of several
/// chips (the same buffer then appears once per chip), null otherwise.
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
                "page_size": b.detail.as_ref().map(|d| d.page_size),
                "size_per_bank": b.detail.as_ref().map(|d| d.size_per_bank),
                "layout": b.detail.as_ref().map(|d| d.layout.clone()),
                "num_cores": b.detail.as_ref().map(|d| d.num_cores),
                "mesh": b.mesh.map(|m| serde_json::json!({ "id": m.mesh_id, "chips": m.chips })),
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
