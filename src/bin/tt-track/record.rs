//! `tt-track record [-o FILE] [--] CMD [ARGS...]`: runs CMD tracked (as `tt-track run`
//! does) and records every event of it and of the processes it starts, through the
//! aggregator of the tracking directory if one runs, else a private one started for
//! the run; then prints a summary. The exit status is CMD's (128 + N when a signal N
//! killed it).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tttrack::recording::{decode, Meta, Record, Recording, Writer};

#[path = "record/children.rs"]
mod children;
use children::{orphans_running, wait_for, PRIVATE_AGGREGATOR, PRIVATE_AGGREGATOR_REAPED};

/// What the stream has said of the recorded processes.
#[derive(Default)]
struct Seen {
    started: std::collections::BTreeSet<u32>,
    ended: std::collections::BTreeSet<u32>,
    /// Per process: the last sequence number recorded (gaps are lost events).
    last_seq: std::collections::HashMap<u32, u64>,
    events: u64,
    /// The stream broke (the aggregator ended); times it was opened again.
    reconnects: u32,
}

/// An aggregator the recording goes through: the directory's, or a private one.
struct Aggregator {
    dir: PathBuf,
    private: Option<Child>,
}

impl Drop for Aggregator {
    fn drop(&mut self) {
        if let Some(mut c) = self.private.take() {
            if !PRIVATE_AGGREGATOR_REAPED.load(std::sync::atomic::Ordering::Relaxed) {
                // SAFETY: kill with a pid we spawned and have not reaped.
                unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
                let _ = c.wait();
            }
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn alive(dir: &Path) -> bool {
    tttrack::counters_page::CountersReader::open(dir).is_ok_and(|r| r.aggregator_alive())
}

/// Makes `/dev/shm/tttrack-record-XXXXXX`, ours alone.
fn private_dir() -> Result<PathBuf, String> {
    use std::os::unix::ffi::OsStrExt;
    let mut template = b"/dev/shm/tttrack-record-XXXXXX\0".to_vec();
    // SAFETY: template is a writable NUL-terminated buffer ending in six X's, which
    // mkdtemp replaces in place.
    let p = unsafe { libc::mkdtemp(template.as_mut_ptr() as *mut libc::c_char) };
    if p.is_null() {
        return Err(format!(
            "cannot make a private tracking directory in /dev/shm: {}",
            std::io::Error::last_os_error()
        ));
    }
    template.pop();
    Ok(PathBuf::from(std::ffi::OsStr::from_bytes(&template)))
}

/// The directory's aggregator if it runs, else a private one in a fresh directory.
fn aggregator(dir: PathBuf) -> Result<Aggregator, String> {
    if alive(&dir) {
        return Ok(Aggregator { dir, private: None });
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let bin = exe.with_file_name("tt-aggregator");
    // A fresh directory of our own (mkdtemp: a name nobody could have prepared in
    // the shared /dev/shm, made 0700 in one step).
    let private = private_dir()?;
    let child = Command::new(&bin)
        .arg("--dir")
        .arg(&private)
        .arg("--private-to")
        .arg(std::process::id().to_string())
        .arg("--no-compat-socket")
        .arg("--quiet")
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| {
            let _ = std::fs::remove_dir(&private);
            format!("cannot start {}: {e}", bin.display())
        })?;
    PRIVATE_AGGREGATOR.store(child.id(), std::sync::atomic::Ordering::Relaxed);
    let agg = Aggregator {
        dir: private,
        private: Some(child),
    };
    let t = Instant::now();
    while !alive(&agg.dir) {
        if t.elapsed() > Duration::from_secs(10) {
            return Err("the private tt-aggregator did not start within 10 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(agg)
}

/// Opens the recording stream: `ok`, then frames.
fn open_stream(dir: &Path, epoch_ms: u64) -> std::io::Result<UnixStream> {
    let mut s = UnixStream::connect(dir.join(tttrack::control::SOCKET_NAME))?;
    s.write_all(format!("record epoch_ms={epoch_ms}\n").as_bytes())?;
    s.set_read_timeout(Some(Duration::from_secs(15)))?;
    // Byte by byte: what follows the line is the first frame, not to be read ahead.
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while line.len() < 4096 && s.read(&mut b)? == 1 && b[0] != b'\n' {
        line.push(b[0]);
    }
    let line = String::from_utf8_lossy(&line).into_owned();
    if line.trim() != "ok" {
        return Err(std::io::Error::other(format!(
            "the aggregator refused the recording: {}",
            line.trim()
        )));
    }
    s.set_read_timeout(Some(Duration::from_millis(200)))?;
    Ok(s)
}

/// Notes what records say, and returns the events they are missing (gaps in a
/// process's sequence numbers: never applied, or never sent, as when an aggregator
/// restarted or a recorder fell behind), as `Lost` records.
fn note(seen: &mut Seen, records: &[Record], t_ms: u64) -> Vec<Record> {
    let mut lost = Vec::new();
    for r in records {
        match r {
            Record::Process { pid, .. } => {
                seen.started.insert(*pid);
            }
            Record::End { pid, .. } => {
                seen.ended.insert(*pid);
            }
            Record::Events { pid, events, .. } => {
                seen.events += events.len() as u64;
                for e in events {
                    let last = seen.last_seq.insert(*pid, e.seq);
                    let gap = last.map_or(0, |l| e.seq.saturating_sub(l).saturating_sub(1));
                    if gap > 0 {
                        lost.push(Record::Lost {
                            t_ms,
                            pid: *pid,
                            count: gap,
                        });
                    }
                }
            }
            _ => {}
        }
    }
    lost
}

/// The largest frame the aggregator sends (its queue holds 64 MiB).
const MAX_FRAME: usize = 256 << 20;

/// The next frame: `None` if none came within 200 ms; an error for a stream that
/// broke or is not frames.
fn read_frame(s: &mut UnixStream) -> std::io::Result<Option<Vec<u8>>> {
    use std::io::ErrorKind::{TimedOut, WouldBlock};
    s.set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut head = [0u8; 4];
    match s.read(&mut head[..1]) {
        Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
        Ok(_) => {}
        Err(e) if matches!(e.kind(), WouldBlock | TimedOut) => return Ok(None),
        Err(e) => return Err(e),
    }
    // A frame begun is read whole (or the stream is given up).
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.read_exact(&mut head[1..])?;
    let len = u32::from_le_bytes(head) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::other(
            "a frame larger than the aggregator sends",
        ));
    }
    let mut chunk = vec![0u8; len];
    s.read_exact(&mut chunk)?;
    Ok(Some(chunk))
}

/// Reads the stream into the file until `done` is set and nothing more comes; a
/// broken stream is opened again (an aggregator restarting). Records are written one
/// by one, so the file's blocks stay small whatever the frames.
fn pump(
    mut s: UnixStream,
    dir: PathBuf,
    epoch_ms: u64,
    w: Arc<Mutex<Writer<std::fs::File>>>,
    seen: Arc<Mutex<Seen>>,
    done: Arc<std::sync::atomic::AtomicBool>,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let mut last_flush = Instant::now();
    let now_ms = || (tttrack::sys::unix_ns() / 1_000_000).saturating_sub(epoch_ms);
    loop {
        let frame = read_frame(&mut s).and_then(|f| match f {
            Some(c) => decode(&c)
                .map(Some)
                .ok_or_else(|| std::io::Error::other("a frame that is not records")),
            None => Ok(None),
        });
        match frame {
            Ok(Some(records)) => {
                let lost = note(
                    &mut seen.lock().unwrap_or_else(|e| e.into_inner()),
                    &records,
                    now_ms(),
                );
                let mut w = w.lock().unwrap_or_else(|e| e.into_inner());
                for r in records.iter().chain(&lost) {
                    let _ = w.add_record(r);
                }
            }
            Ok(None) => {
                if done.load(Relaxed) {
                    return;
                }
            }
            Err(_) => {
                if done.load(Relaxed) {
                    return;
                }
                // The aggregator went away: wait for the next one (up to 30 s).
                let t = Instant::now();
                loop {
                    std::thread::sleep(Duration::from_millis(100));
                    if let Ok(n) = open_stream(&dir, epoch_ms) {
                        s = n;
                        seen.lock().unwrap_or_else(|e| e.into_inner()).reconnects += 1;
                        break;
                    }
                    if t.elapsed() > Duration::from_secs(30) || done.load(Relaxed) {
                        return;
                    }
                }
            }
        }
        if last_flush.elapsed() >= Duration::from_secs(1) {
            let _ = w.lock().unwrap_or_else(|e| e.into_inner()).flush();
            last_flush = Instant::now();
        }
    }
}

/// The default file name: the command's name and the time, in the current directory.
fn default_name(cmd: &[String]) -> PathBuf {
    let base = cmd
        .iter()
        .find(|a| !a.starts_with('-') && !a.ends_with("python") && !a.ends_with("python3"))
        .or(cmd.first())
        .map(|a| {
            Path::new(a)
                .file_name()
                .map_or("run".into(), |f| f.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "run".into());
    let base: String = base
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "._-".contains(*c))
        .take(40)
        .collect();
    let t = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let t: String = t.chars().filter(|c| c.is_ascii_digit()).collect();
    PathBuf::from(format!("{base}-{t}.ttrec"))
}

/// The recording file, with its header and the device rows as they are now.
fn create(
    path: &Path,
    cmd: &[String],
    epoch_ms: u64,
    agg: &Aggregator,
) -> std::io::Result<Writer<std::fs::File>> {
    let meta = Meta {
        command: cmd.to_vec(),
        host: std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap_or_default()
            .trim()
            .to_string(),
        started_unix_ms: epoch_ms,
        tttrack_version: env!("CARGO_PKG_VERSION").into(),
        aggregator: if agg.private.is_some() {
            "private"
        } else {
            "shared"
        }
        .into(),
        failure: None,
    };
    let mut w = Writer::new(std::fs::File::create(path)?, &meta)?;
    w.add_record(&Record::Devices {
        t_ms: 0,
        rows: tttrack::recording::snapshot::device_rows(&agg.dir),
    })?;
    Ok(w)
}

/// Runs CMD tracked, with the aggregator's directory, SIGINT and SIGQUIT back to
/// their defaults (the recorder ignores them: Ctrl-C reaches the command, and the
/// recorder stays to finish the recording).
fn spawn(cmd: &[String], lib: &Path, dir: &Path) -> std::io::Result<Child> {
    use std::os::unix::process::CommandExt;
    // SAFETY: SIG_IGN for SIGINT and SIGQUIT in the recorder.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGQUIT, libc::SIG_IGN);
    }
    let mut c = super::tracked(cmd, lib);
    c.env("TTTRACK_DIR", dir);
    // SAFETY: between fork and exec only async-signal-safe calls (signal).
    unsafe {
        c.pre_exec(|| {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            libc::signal(libc::SIGQUIT, libc::SIG_DFL);
            Ok(())
        });
    }
    c.spawn()
}

/// After CMD: its orphans run on (10 s at most); then every process that began is
/// released by the aggregator once it has drained it (within its liveness interval):
/// that is waited for too, 10 s at most. Records still on their way get a moment.
fn wait_for_the_rest(private: Option<u32>, dir: &Path, seen: &Mutex<Seen>) {
    let t = Instant::now();
    while orphans_running(private, dir, seen) && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    loop {
        let all = {
            let s = seen.lock().unwrap_or_else(|e| e.into_inner());
            s.started.is_subset(&s.ended)
        };
        if all || t.elapsed() > Duration::from_secs(10) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(250));
}

type Opened = (
    Aggregator,
    UnixStream,
    u64,
    Arc<Mutex<Writer<std::fs::File>>>,
);

/// The aggregator (the directory's, or a private one), the recording's stream on it,
/// its time 0 and its file.
fn open(path: &Path, cmd: &[String]) -> Result<Opened, String> {
    // Children are waited for (an ignored SIGCHLD, inherited, would have the kernel
    // reap them unseen and every wait block until the last one ends).
    // SAFETY: restoring a signal's default disposition.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_DFL) };
    let agg = aggregator(tttrack::sys::tracking_dir_from_env())?;
    // Orphans of the command become our children, so they stay our descendants.
    // SAFETY: prctl with an integer argument.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let epoch_ms = tttrack::sys::unix_ns() / 1_000_000;
    // A private aggregator publishes its request socket just after its page: a moment.
    let t = Instant::now();
    let mut stream = open_stream(&agg.dir, epoch_ms);
    while stream.is_err() && agg.private.is_some() && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
        stream = open_stream(&agg.dir, epoch_ms);
    }
    let stream = stream.map_err(|e| {
        format!(
            "cannot open a recording on the aggregator of {}: {e}",
            agg.dir.display()
        )
    })?;
    let file = create(path, cmd, epoch_ms, &agg)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok((agg, stream, epoch_ms, Arc::new(Mutex::new(file))))
}

pub fn record(out: Option<PathBuf>, cmd: Vec<String>) -> i32 {
    let mut cmd = cmd;
    if cmd.first().is_some_and(|c| c == "--") {
        cmd.remove(0);
    }
    if cmd.is_empty() {
        eprintln!("tt-track record: no command given (usage: tt-track record [-o FILE] [--] CMD [ARGS...])");
        return 2;
    }
    let lib = super::lib_or_exit();
    let path = out.unwrap_or_else(|| default_name(&cmd));
    let (agg, stream, epoch_ms, file) = match open(&path, &cmd) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("tt-track record: {e}");
            return 1;
        }
    };
    let seen = Arc::new(Mutex::new(Seen::default()));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pumper = {
        let (dir, w, seen, done) = (agg.dir.clone(), file.clone(), seen.clone(), done.clone());
        std::thread::spawn(move || pump(stream, dir, epoch_ms, w, seen, done))
    };
    let child = spawn(&cmd, &lib, &agg.dir);
    let child = match child {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tt-track record: cannot run {}: {e}", cmd[0]);
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            let _ = pumper.join();
            return if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            };
        }
    };
    let status = wait_for(&child, &agg.dir, &seen);
    let end_ms = (tttrack::sys::unix_ns() / 1_000_000).saturating_sub(epoch_ms);
    wait_for_the_rest(agg.private.as_ref().map(|c| c.id()), &agg.dir, &seen);
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = pumper.join();
    let (code, signal) = if libc::WIFSIGNALED(status) {
        (None, Some(libc::WTERMSIG(status)))
    } else {
        (Some(libc::WEXITSTATUS(status)), None)
    };
    let end = [
        Record::Devices {
            t_ms: end_ms,
            rows: tttrack::recording::snapshot::device_rows(&agg.dir),
        },
        Record::Exit {
            t_ms: end_ms,
            code,
            signal,
        },
    ];
    let mut w = file.lock().unwrap_or_else(|e| e.into_inner());
    if let Err(e) = end
        .iter()
        .try_for_each(|r| w.add_record(r))
        .and_then(|()| w.flush())
    {
        eprintln!("tt-track record: cannot write {}: {e}", path.display());
    }
    drop(w);
    drop(agg);
    summary(&path, &seen.lock().unwrap_or_else(|e| e.into_inner()));
    match (code, signal) {
        (_, Some(s)) => {
            eprintln!("tt-track record: {} was killed by signal {s} ({}); the recording is complete up to its end", cmd[0], signal_name(s));
            128 + s
        }
        (Some(c), _) => c,
        _ => 1,
    }
}

fn signal_name(s: i32) -> &'static str {
    match s {
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        _ => "a signal",
    }
}

/// The end of a recording: where it is, how big, peaks per device and type, leaks.
fn summary(path: &Path, seen: &Seen) {
    let rec = match Recording::read(path) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tt-track record: {e}");
            return;
        }
    };
    let r = tttrack::recording::analysis::analyze(&rec);
    let per_event = if r.events > 0 {
        rec.file_bytes as f64 / r.events as f64
    } else {
        0.0
    };
    eprintln!(
        "tt-track record: {} events of {} processes in {} ({}, {per_event:.1} bytes per event){}",
        r.events,
        seen.started.len(),
        path.display(),
        tttrack::sys::human_bytes(rec.file_bytes),
        if seen.reconnects > 0 {
            format!(
                "; the aggregator restarted {} times during the run",
                seen.reconnects
            )
        } else {
            String::new()
        }
    );
    eprint!("{}", tttrack::recording::text::summary_text(&r));
    eprintln!(
        "tt-track record: details with `tt-track report {}`",
        path.display()
    );
}
