//! The aggregator's request socket (`aggregator.sock` in the tracking directory): live
//! detail that does not fit the fixed counters page, served on request.
//!
//! Protocol: the client sends one line, the server answers and closes.
//! - `buffers [pid=P] [device=D]`: one JSON object per line for each live buffer
//!   (`pid`, `comm`, `device`, `type`, `address`, `size`, `refcount`, `first_seen_unix_s`),
//!   largest first;
//! - `ping`: `pong`.
//!
//! Anything else gets one line `{"error": "..."}`.

use crate::accounting::Accounting;
use crate::shm_layout::BufferType;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

pub const SOCKET_NAME: &str = "aggregator.sock";

pub struct Request {
    pub query: String,
    pub reply: mpsc::Sender<String>,
}

#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct BufferLine {
    pub pid: u32,
    pub comm: String,
    pub device: i32,
    #[serde(rename = "type")]
    pub btype: String,
    pub address: u64,
    pub size: u64,
    pub refcount: u32,
    pub first_seen_unix_s: u32,
}

/// Answers one query from the accounting.
pub fn answer(acc: &Accounting, query: &str) -> String {
    let mut words = query.split_whitespace();
    match words.next() {
        Some("ping") => "pong\n".to_string(),
        Some("buffers") => {
            let mut pid: Option<u32> = None;
            let mut device: Option<i32> = None;
            for w in words {
                match w.split_once('=') {
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
            let mut lines = Vec::new();
            for p in acc.processes.values() {
                if pid.is_some_and(|x| x != p.pid) {
                    continue;
                }
                for (&d, pd) in &p.devices {
                    if device.is_some_and(|x| x != d) {
                        continue;
                    }
                    for (&addr, b) in &pd.buffers {
                        lines.push(BufferLine {
                            pid: p.pid,
                            comm: p.comm.clone(),
                            device: d,
                            btype: BufferType::from_u8(b.btype())
                                .map(|t| t.name())
                                .unwrap_or("?")
                                .to_string(),
                            address: addr,
                            size: b.size,
                            refcount: b.refcount(),
                            first_seen_unix_s: b.first_seen_unix_s,
                        });
                    }
                }
            }
            lines.sort_by(|a, b| b.size.cmp(&a.size).then(a.address.cmp(&b.address)));
            let mut out = String::with_capacity(lines.len() * 128);
            for l in &lines {
                out.push_str(&serde_json::to_string(l).unwrap_or_default());
                out.push('\n');
            }
            out
        }
        Some(other) => error(&format!("unknown request {other:?} (try: buffers, ping)")),
        None => error("empty request (try: buffers, ping)"),
    }
}

fn error(msg: &str) -> String {
    format!("{}\n", serde_json::json!({ "error": msg }))
}

/// Serves the bound socket on a thread; requests go to the returned receiver, which
/// the aggregator's loop answers between passes.
pub fn serve(listener: UnixListener) -> std::io::Result<mpsc::Receiver<Request>> {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let tx = tx.clone();
                let _ = std::thread::Builder::new()
                    .name("control-conn".into())
                    .spawn(move || handle(conn, tx));
            }
        })?;
    Ok(rx)
}

fn handle(conn: UnixStream, tx: mpsc::Sender<Request>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = conn.set_write_timeout(Some(Duration::from_secs(10)));
    let mut line = String::new();
    let mut r = BufReader::new(match conn.try_clone() {
        Ok(c) => c,
        Err(_) => return,
    });
    // One short request line; a client dribbling bytes cannot grow it without bound.
    if (&mut r).take(4096).read_line(&mut line).is_err() {
        return;
    }
    let (rtx, rrx) = mpsc::channel();
    if tx
        .send(Request {
            query: line.trim().to_string(),
            reply: rtx,
        })
        .is_err()
    {
        return;
    }
    if let Ok(text) = rrx.recv_timeout(Duration::from_secs(10)) {
        let mut w = conn;
        let _ = w.write_all(text.as_bytes());
    }
}

/// Sends one request to the aggregator of `dir` and returns the answer.
pub fn request(dir: &Path, query: &str) -> std::io::Result<String> {
    use std::io::Read;
    let path: PathBuf = dir.join(SOCKET_NAME);
    let mut s = UnixStream::connect(&path)?;
    s.set_read_timeout(Some(Duration::from_secs(15)))?;
    s.write_all(format!("{query}\n").as_bytes())?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}
