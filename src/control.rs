//! The aggregator's request socket (`aggregator.sock` in the tracking directory): live
//! detail that does not fit the fixed counters page, served on request.
//!
//! Protocol: the client sends one line, the server answers and closes.
//! - `buffers [pid=P] [device=D] [limit=N]`: one JSON object per line for each live
//!   buffer (`pid`, `comm`, `device`, `type`, `address`, `size`, `refcount`,
//!   `first_seen_unix_s`), largest first, at most N (default
//!   [`DEFAULT_BUFFERS_ANSWER`], at most [`MAX_BUFFERS_ANSWER`]); when more are
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
//!
//! This is the client side (what tt-smi, the Python package and the tests link): the
//! protocol's types and the request functions. It imports nothing of the engine; the
//! server side is [`crate::aggregator::control_server`].

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const SOCKET_NAME: &str = "aggregator.sock";

/// Buffers a `buffers` answer lists when the request says no `limit=`.
pub const DEFAULT_BUFFERS_ANSWER: usize = 10_000;
/// The most a `buffers` answer lists (`limit=` above it is refused).
pub const MAX_BUFFERS_ANSWER: usize = 100_000;

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
    match crate::peer::peer(&s) {
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
