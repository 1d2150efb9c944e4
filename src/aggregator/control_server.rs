//! The server side of the request socket ([`crate::control`] has the protocol): the
//! connections' threads (one short request line each, the answer written by the
//! connection's own thread) and the answers the aggregator's loop computes from the
//! accounting.

use crate::accounting::maps;
use crate::accounting::Accounting;
use crate::control::{BufferLine, BufferLineDetail, DEFAULT_BUFFERS_ANSWER, MAX_BUFFERS_ANSWER};
use crate::shm_layout::BufferType;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::mpsc;
use std::time::Duration;

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
            let mut limit = DEFAULT_BUFFERS_ANSWER;
            for w in words {
                match w.split_once('=') {
                    Some(("limit", v)) => match v.parse::<usize>() {
                        Ok(v) if (1..=MAX_BUFFERS_ANSWER).contains(&v) => limit = v,
                        _ => {
                            return error(&format!(
                                "limit={v} is not a number from 1 to {}",
                                MAX_BUFFERS_ANSWER
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
    for (key, p) in acc.processes() {
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
        let Some(p) = acc.processes().get(&key) else {
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
                let Some((pid, uid)) = crate::peer::peer(&conn) else {
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
