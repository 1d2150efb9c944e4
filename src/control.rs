//! The aggregator's request socket (`aggregator.sock` in the tracking directory): live
//! detail that does not fit the fixed counters page, served on request.
//!
//! Protocol: the client sends one line, the server answers and closes.
//! - `buffers [pid=P] [device=D] [limit=N]`: one JSON object per line for each live
//!   buffer (`pid`, `comm`, `device`, `type`, `address`, `size`, `refcount`,
//!   `first_seen_unix_s`), largest first, at most N (default
//!   `limits::DEFAULT_BUFFERS_ANSWER`, at most `MAX_BUFFERS_ANSWER`); when more are
//!   live, a last line `{"truncated": true, "shown": N, "total": M}`;
//! - `ping`: `pong`;
//! - `sync [pid=P]`: answered (`{"synced": true|false, "tracked": ...}`) once process
//!   P (the asker by default) has applied every event it had numbered when asked, or
//!   after `requests::SYNC_WAIT`, so a read right after an allocation sees it;
//! - `reset_peak [pid=P]`: P's peaks start again from its current figures; refused
//!   (`{"error": "refused: ..."}`) unless P is the asker's user's (or the asker is root);
//! - `record epoch_ms=T`: the events of the asker's processes as they are applied
//!   (see [`crate::aggregator::recordings`]): a line `ok`, then frames, each a u32 LE
//!   length and that many bytes of [`crate::recording`] records, until the asker
//!   closes.
//!
//! Anything else gets one line `{"error": "..."}`.

pub mod maps;

use crate::aggregator::accounting::Accounting;
use crate::shm_layout::BufferType;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

pub const SOCKET_NAME: &str = "aggregator.sock";

pub struct Request {
    pub query: String,
    pub reply: mpsc::Sender<Answer>,
    /// Who asked (the socket's peer credentials).
    pub pid: u32,
    pub uid: u32,
}

/// What the aggregator's loop hands back: the buffers chosen (copied out, largest
/// first), written out as text by the connection's own thread, so that formatting a
/// large answer never holds up draining.
pub enum Answer {
    Text(String),
    Buffers {
        lines: Vec<BufferLine>,
        total: u64,
    },
    /// A recording's records, chunk by chunk, until the aggregator drops its end.
    Stream(Stream),
}

/// A recording's connection as the aggregator and the connection's thread share it.
pub struct Stream {
    pub chunks: mpsc::Receiver<Vec<u8>>,
    /// Bytes sent to the thread and not yet written.
    pub queued: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Set by the thread when the connection ends.
    pub closed: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// A recorder that reads nothing for this long ends its recording.
pub const STREAM_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

impl Answer {
    pub fn into_text(self) -> String {
        match self {
            Answer::Text(t) => t,
            Answer::Buffers { lines, total } => {
                let mut out = String::with_capacity(lines.len() * 160);
                for l in &lines {
                    out.push_str(&serde_json::to_string(l).unwrap_or_default());
                    out.push('\n');
                }
                if (lines.len() as u64) < total {
                    out.push_str(&format!(
                        "{}\n",
                        serde_json::json!({ "truncated": true, "shown": lines.len(), "total": total })
                    ));
                }
                out
            }
            Answer::Stream(_) => String::new(),
        }
    }
}

#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct BufferLine {
    pub pid: u32,
    pub comm: String,
    /// The chip's row (physical, as every view shows devices).
    pub device: i32,
    /// The process's own id of the device.
    #[serde(default)]
    pub logical_device: i32,
    #[serde(rename = "type")]
    pub btype: String,
    pub address: u64,
    pub size: u64,
    pub refcount: u32,
    pub first_seen_unix_s: u32,
    /// Where it lies in its banks, when its producer says (the graph hook does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<BufferLineDetail>,
    /// The mesh buffer this is one chip's part of (a buffer of a mesh of several chips
    /// is reported on each chip, with the same mesh id and address).
    #[serde(default)]
    pub mesh: Option<crate::shm_layout::MeshMember>,
}

/// A buffer's detail as the request answer gives it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct BufferLineDetail {
    pub page_size: u64,
    pub size_per_bank: u64,
    /// A [`crate::shm_layout::BufferLayout`] name, or its number if unknown.
    pub layout: String,
    pub num_cores: u32,
}

/// Answers one query from the accounting.
pub fn answer(acc: &Accounting, query: &str) -> Answer {
    let mut words = query.split_whitespace();
    match words.next() {
        Some("ping") => Answer::Text("pong\n".to_string()),
        Some("map") => match maps::MapQuery::parse(words) {
            Ok(q) => Answer::Text(maps::answer(acc, &q)),
            Err(e) => error(e.as_str()),
        },
        Some("buffers") => {
            let mut pid: Option<u32> = None;
            let mut device: Option<i32> = None;
            let mut limit = crate::aggregator::limits::DEFAULT_BUFFERS_ANSWER;
            for w in words {
                match w.split_once('=') {
                    Some(("limit", v)) => match v.parse::<usize>() {
                        Ok(v)
                            if (1..=crate::aggregator::limits::MAX_BUFFERS_ANSWER).contains(&v) =>
                        {
                            limit = v
                        }
                        _ => {
                            return error(&format!(
                                "limit={v} is not a number from 1 to {}",
                                crate::aggregator::limits::MAX_BUFFERS_ANSWER
                            ))
                        }
                    },
                    Some(("pid", v)) => match v.parse() {
                        Ok(v) => pid = Some(v),
                        Err(_) => return error(&format!("pid={v} is not a number")),
                    },
                    Some(("device", v)) => match v.parse() {
                        Ok(v) => device = Some(v),
                        Err(_) => return error(&format!("device={v} is not a number")),
                    },
                    _ => return error(&format!("unknown argument {w:?} (use pid=P or device=D)")),
                }
            }
            buffers_answer(acc, pid, device, limit)
        }
        Some(other) => error(&format!(
            "unknown request {other:?} (try: buffers, map, ping)"
        )),
        None => error("empty request (try: buffers, map, ping)"),
    }
}

/// The `limit` largest live buffers matching, largest first: chosen with a heap of
/// `limit` entries, so neither the time beyond one look at each buffer nor the memory
/// grows with how many there are.
fn buffers_answer(acc: &Accounting, pid: Option<u32>, device: Option<i32>, limit: usize) -> Answer {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    // (size, Reverse(address), process key, device): the heap's top is the smallest kept.
    type Kept = Reverse<(u64, Reverse<u64>, (u32, u64), i32)>;
    let mut heap: BinaryHeap<Kept> = BinaryHeap::with_capacity(limit + 1);
    let mut total = 0u64;
    for (key, p) in &acc.processes {
        if pid.is_some_and(|x| x != p.pid) {
            continue;
        }
        for (&d, pd) in &p.devices {
            if device.is_some_and(|x| x != acc.device_row(p, d)) {
                continue;
            }
            for (&addr, b) in pd.buffers.iter() {
                total += 1;
                let item = Reverse((b.size, Reverse(addr), *key, d));
                if heap.len() < limit {
                    heap.push(item);
                } else if heap.peek().is_some_and(|top| item < *top) {
                    heap.pop();
                    heap.push(item);
                }
            }
        }
    }
    let mut lines = Vec::with_capacity(heap.len());
    for Reverse((size, Reverse(addr), key, d)) in heap.into_sorted_vec() {
        let Some(p) = acc.processes.get(&key) else {
            continue;
        };
        let Some(pd) = p.devices.get(&d) else {
            continue;
        };
        let Some(b) = pd.buffers.get(addr) else {
            continue;
        };
        let detail = pd.details.get(&addr);
        lines.push(BufferLine {
            pid: p.pid,
            comm: p.comm.clone(),
            device: acc.device_row(p, d),
            logical_device: d,
            btype: BufferType::from_u8(b.btype())
                .map(|t| t.name())
                .unwrap_or("?")
                .to_string(),
            address: detail.map_or(addr, |x| u64::from(x.address)),
            size,
            refcount: b.refcount(),
            first_seen_unix_s: b.first_seen_unix_s,
            detail: detail.map(|x| BufferLineDetail {
                page_size: x.page_size,
                size_per_bank: x.size_per_bank,
                layout: u8::try_from(x.layout)
                    .ok()
                    .and_then(crate::shm_layout::BufferLayout::from_u8)
                    .map_or_else(|| x.layout.to_string(), |l| l.name().to_string()),
                num_cores: x.num_cores,
            }),
            mesh: pd.meshes.get(&addr).copied(),
        });
    }
    Answer::Buffers { lines, total }
}

fn error_text(msg: &str) -> String {
    format!("{}\n", serde_json::json!({ "error": msg }))
}

fn error(msg: &str) -> Answer {
    Answer::Text(error_text(msg))
}

/// Serves the bound socket on a thread; requests go to the returned receiver, which
/// the aggregator's loop answers between passes.
pub fn serve(listener: UnixListener) -> std::io::Result<mpsc::Receiver<Request>> {
    let (tx, rx) = mpsc::channel();
    let limit = crate::aggregator::limits::ConnectionLimit::new(
        crate::aggregator::limits::MAX_REQUEST_CONNECTIONS_PER_UID,
        crate::aggregator::limits::MAX_REQUEST_CONNECTIONS,
    );
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            for mut conn in listener.incoming().flatten() {
                let Some((pid, uid)) = crate::aggregator::peer::peer(&conn) else {
                    continue;
                };
                let slot = match limit.admit(uid) {
                    Ok(s) => s,
                    Err(why) => {
                        let _ = conn.set_write_timeout(Some(Duration::from_millis(100)));
                        let _ = conn.write_all(error_text(&format!("refused: {why}")).as_bytes());
                        continue;
                    }
                };
                let tx = tx.clone();
                let _ = std::thread::Builder::new()
                    .name("control-conn".into())
                    .spawn(move || {
                        handle(conn, tx, pid, uid);
                        drop(slot);
                    });
            }
        })?;
    Ok(rx)
}

fn handle(conn: UnixStream, tx: mpsc::Sender<Request>, pid: u32, uid: u32) {
    // Formatting and writing answers is background work: it yields the CPU to the
    // draining thread. (Per thread on Linux; harmless where it fails.)
    // SAFETY: setpriority on this thread's own id has no memory-safety preconditions.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 10) };
    let _ = conn.set_write_timeout(Some(Duration::from_secs(2)));
    // One short request line, whole within REQUEST_LINE_DEADLINE: a client dribbling a
    // byte at a time holds its connection (and its user's share of them) no longer.
    let Some(line) = read_request_line(&conn) else {
        return;
    };
    let (rtx, rrx) = mpsc::channel();
    if tx
        .send(Request {
            query: line.trim().to_string(),
            reply: rtx,
            pid,
            uid,
        })
        .is_err()
    {
        return;
    }
    match rrx.recv_timeout(Duration::from_secs(10)) {
        Ok(Answer::Stream(s)) => stream(conn, s),
        Ok(a) => {
            let mut w = conn;
            let _ = w.write_all(a.into_text().as_bytes());
        }
        Err(_) => {}
    }
}

/// How long a client has to send its whole request line.
pub const REQUEST_LINE_DEADLINE: Duration = Duration::from_secs(2);
/// The longest request line.
const REQUEST_LINE_MAX: usize = 4096;

/// The request line of `conn`: up to its newline, at most [`REQUEST_LINE_MAX`] bytes,
/// all within [`REQUEST_LINE_DEADLINE`]; `None` if it did not come whole in time.
fn read_request_line(conn: &UnixStream) -> Option<String> {
    let deadline = std::time::Instant::now() + REQUEST_LINE_DEADLINE;
    let mut line = Vec::new();
    let mut b = [0u8; 512];
    let mut r = conn;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return None;
        }
        conn.set_read_timeout(Some(left)).ok()?;
        match r.read(&mut b) {
            Ok(0) => break,
            Ok(n) => {
                line.extend_from_slice(&b[..n]);
                if let Some(i) = line.iter().position(|&c| c == b'\n') {
                    line.truncate(i);
                    break;
                }
                if line.len() >= REQUEST_LINE_MAX {
                    line.truncate(REQUEST_LINE_MAX);
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    Some(String::from_utf8_lossy(&line).into_owned())
}

/// Writes a recording's chunks as frames until the asker closes (noticed when a
/// write fails, or by a look every second while nothing is sent), stops reading for
/// [`STREAM_WRITE_TIMEOUT`], or the aggregator ends the stream; then says so.
fn stream(conn: UnixStream, s: Stream) {
    write_frames(conn, &s);
    s.closed.store(true, std::sync::atomic::Ordering::Release);
}

fn write_frames(mut conn: UnixStream, s: &Stream) {
    use std::sync::atomic::Ordering::AcqRel;
    // A recorder that stops reading blocks only this thread; the aggregator's queue
    // then fills and loses (and counts) what does not fit.
    let _ = conn.set_write_timeout(Some(STREAM_WRITE_TIMEOUT));
    if conn.write_all(b"ok\n").is_err() {
        return;
    }
    loop {
        match s.chunks.recv_timeout(Duration::from_secs(1)) {
            Ok(c) => {
                let len = (c.len() as u32).to_le_bytes();
                let ok = conn.write_all(&len).is_ok() && conn.write_all(&c).is_ok();
                s.queued.fetch_sub(c.len() as u64, AcqRel);
                if !ok {
                    return;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if peer_closed(&conn) {
                    return;
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Whether the other end of `conn` has closed (a read that finds end of file).
fn peer_closed(conn: &UnixStream) -> bool {
    let mut b = [0u8; 1];
    // SAFETY: b is a writable buffer of 1 byte for the call; MSG_PEEK | MSG_DONTWAIT
    // neither consumes data nor blocks.
    let n = unsafe {
        libc::recv(
            std::os::unix::io::AsRawFd::as_raw_fd(conn),
            b.as_mut_ptr() as *mut libc::c_void,
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n == 0
}

/// The most of an answer a client reads (100,000 buffers take about 20 MB).
pub const MAX_ANSWER_BYTES: usize = 64 << 20;
/// How long a client waits for a whole answer.
pub const ANSWER_DEADLINE: Duration = Duration::from_secs(15);

/// Why a request has no answer to use, by kind: callers act on the kind, never on
/// the answer's text.
#[derive(Debug)]
pub enum RequestError {
    /// Nothing answers on the socket: no aggregator runs there.
    NotRunning(std::io::Error),
    /// What answers is a process of a user who is neither root nor the caller:
    /// anyone may put a socket in a directory all may write.
    Untrusted { uid: u32 },
    /// The aggregator refused (not the caller's process, a bound reached).
    Refused(String),
    /// The aggregator answered with another error.
    Failed(String),
    /// The answer was longer than [`MAX_ANSWER_BYTES`].
    TooLong,
    /// No whole answer within [`ANSWER_DEADLINE`].
    Timeout,
    /// The connection broke.
    Io(std::io::Error),
}

impl std::fmt::Display for RequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotRunning(e) => write!(f, "no tt-aggregator answers ({e}); start one with: tt-aggregator"),
            Self::Untrusted { uid } => write!(
                f,
                "the request socket is served by uid {uid}, neither root nor you: not trusted (anyone may put a socket there); ask who runs tt-aggregator, or start your own with TTTRACK_DIR set to a directory of yours"
            ),
            Self::Refused(m) | Self::Failed(m) => f.write_str(m),
            Self::TooLong => write!(f, "the answer passed {MAX_ANSWER_BYTES} bytes: not read further"),
            Self::Timeout => write!(f, "no whole answer within {} s", ANSWER_DEADLINE.as_secs()),
            Self::Io(e) => write!(f, "the connection broke: {e}"),
        }
    }
}

impl std::error::Error for RequestError {}

/// Sends one request to the aggregator of `dir` and returns its answer. Only an
/// aggregator of root or of the caller's own user is asked (the peer's credentials
/// say); at most [`MAX_ANSWER_BYTES`] are read, within [`ANSWER_DEADLINE`] in all; an
/// answer that is an error (a line that is a JSON object with an `error` key) is
/// returned as one.
pub fn request(dir: &Path, query: &str) -> Result<String, RequestError> {
    request_within(dir, query, ANSWER_DEADLINE, MAX_ANSWER_BYTES)
}

/// [`request`] with its deadline and its bound on the answer's size given.
pub fn request_within(
    dir: &Path,
    query: &str,
    deadline_after: Duration,
    max_bytes: usize,
) -> Result<String, RequestError> {
    let out = request_bytes(dir, query, deadline_after, max_bytes)?;
    let text = String::from_utf8_lossy(&out).into_owned();
    if let Some(err) = error_of(&text) {
        return Err(if err.starts_with("refused") {
            RequestError::Refused(err)
        } else {
            RequestError::Failed(err)
        });
    }
    Ok(text)
}

/// The answer's bytes as they came (a stream's `ok` line and frames), under the same
/// trust, deadline and bound as [`request_within`].
pub fn request_bytes(
    dir: &Path,
    query: &str,
    deadline_after: Duration,
    max_bytes: usize,
) -> Result<Vec<u8>, RequestError> {
    use std::io::Read;
    let path: PathBuf = dir.join(SOCKET_NAME);
    let mut s = UnixStream::connect(&path).map_err(RequestError::NotRunning)?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    match crate::aggregator::peer::peer(&s) {
        Some((_, uid)) if uid == 0 || uid == me => {}
        Some((_, uid)) => return Err(RequestError::Untrusted { uid }),
        None => return Err(RequestError::Untrusted { uid: u32::MAX }),
    }
    let deadline = std::time::Instant::now() + deadline_after;
    s.set_write_timeout(Some(Duration::from_secs(2)))
        .map_err(RequestError::Io)?;
    s.write_all(format!("{query}\n").as_bytes())
        .map_err(RequestError::Io)?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(RequestError::Timeout);
        }
        s.set_read_timeout(Some(left)).map_err(RequestError::Io)?;
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if out.len() + n > max_bytes {
                    return Err(RequestError::TooLong);
                }
                out.extend_from_slice(&buf[..n]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(RequestError::Timeout)
            }
            Err(e) => return Err(RequestError::Io(e)),
        }
    }
    Ok(out)
}

/// The error an answer is, if it is one: its first line is a JSON object with a
/// string `error` (never guessed from text: a buffer of a process named "error" is a
/// buffer).
pub fn error_of(answer: &str) -> Option<String> {
    let first = answer.lines().next()?;
    let v: serde_json::Value = serde_json::from_str(first).ok()?;
    v.get("error")?.as_str().map(str::to_string)
}
