//! The request socket as the loop serves it: each request answered from the
//! accounting (see [`crate::control`]), and requests and dumps together held to their
//! share of the draining thread's time.

use super::control_server::Answer;
use super::control_server::Request;
use super::Aggregator;
use crate::accounting::ProcKey;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

/// Requests waiting, and when the next may be answered.
pub(super) struct Requests {
    rx: Option<Receiver<Request>>,
    pub(super) quiet_until: Instant,
    /// `sync` requests waiting for their process's events to be applied.
    syncs: Vec<Sync>,
    /// A request changed figures that only a snapshot keeps (a peak reset).
    pub(super) snapshot_due: bool,
}

/// A `sync` request: answered once process `key` has applied every event numbered
/// below `target`, or at `deadline`.
struct Sync {
    key: ProcKey,
    target: u64,
    deadline: Instant,
    reply: std::sync::mpsc::Sender<Answer>,
}

/// How long a `sync` may wait (a gap in a process's events is waited for 250 ms).
pub const SYNC_WAIT: Duration = Duration::from_millis(500);

/// Syncs waiting at once, beyond which a new one is answered at once.
pub const MAX_SYNCS: usize = 256;

impl Default for Requests {
    fn default() -> Self {
        Self {
            rx: None,
            quiet_until: Instant::now(),
            syncs: Vec::new(),
            snapshot_due: false,
        }
    }
}

fn json_line(v: serde_json::Value) -> Answer {
    Answer::Text(format!("{v}\n"))
}

/// `pid=P` among a request's words, else the asker's pid.
fn pid_arg(args: &str, asker: u32) -> Result<u32, Answer> {
    match args.split_whitespace().find_map(|w| w.strip_prefix("pid=")) {
        None => Ok(asker),
        Some(v) => v.parse().map_err(|_| {
            json_line(serde_json::json!({ "error": format!("pid={v} is not a number") }))
        }),
    }
}

impl Aggregator {
    /// Serves the request socket (`aggregator.sock`, every user may ask, as every user
    /// may read the counters page).
    pub fn serve_control(&mut self) -> std::io::Result<()> {
        let l =
            super::startup::bind_published(&self.me.state_dir, crate::control::SOCKET_NAME, |p| {
                std::os::unix::net::UnixListener::bind(p)
            })?;
        self.requests.rx = Some(super::control_server::serve(l)?);
        Ok(())
    }

    /// Answers up to `limits::REQUESTS_PER_PASS` requests, within their share of time.
    pub(super) fn serve_requests(&mut self) {
        let Some(rx) = self.requests.rx.take() else {
            return;
        };
        for _ in 0..super::limits::REQUESTS_PER_PASS {
            if Instant::now() < self.requests.quiet_until {
                break;
            }
            let Ok(req) = rx.try_recv() else { break };
            let t = Instant::now();
            let (word, args) = req.query.split_once(' ').unwrap_or((&req.query, ""));
            let text = match word {
                "record" => self.record_request(&req, args),
                "snapshot" => self.snapshot_request(&req, args),
                "reset_peak" => self.reset_peak(&req, args),
                "sync" => match self.sync_request(&req, args) {
                    Some(a) => a,
                    None => {
                        self.request_took(t.elapsed());
                        continue;
                    }
                },
                _ => super::control_server::answer(&self.acc, &req.query),
            };
            let _ = req.reply.send(text);
            self.request_took(t.elapsed());
        }
        self.requests.rx = Some(rx);
    }

    /// `sync [pid=P]`: an answer once P (the asker by default) has applied every event
    /// it had numbered when asked, or after [`SYNC_WAIT`]; `None` when it must wait.
    fn sync_request(&mut self, req: &Request, args: &str) -> Option<Answer> {
        let pid = match pid_arg(args, req.pid) {
            Ok(p) => p,
            Err(a) => return Some(a),
        };
        let find = |agg: &Aggregator| {
            agg.segments
                .attached
                .values()
                .find(|a| a.key.0 == pid && !a.broken)
                .map(|a| {
                    (
                        a.key,
                        a.seg
                            .view()
                            .header()
                            .seq
                            .load(std::sync::atomic::Ordering::Acquire),
                    )
                })
        };
        // A segment made since the last look (its process's first event): look at that
        // process's segment name now (one name: no listing of the directory).
        let found = find(self).or_else(|| {
            self.discover_pid(pid);
            let (_, snapshot) = self.drain_all();
            self.requests.snapshot_due |= snapshot;
            find(self)
        });
        let Some((key, target)) = found else {
            // A socket client's events are applied as they come; an unknown pid has none,
            // or is a process of TT-Metal's regions: those are read again (at most every
            // few milliseconds) so that the page says what they say now.
            let tracked = self.acc.processes().keys().any(|k| k.0 == pid);
            if !tracked && self.read_metal_soon(Instant::now()) {
                self.publish();
            }
            return Some(json_line(
                serde_json::json!({ "synced": true, "tracked": tracked }),
            ));
        };
        if self.requests.syncs.len() >= MAX_SYNCS {
            return Some(json_line(
                serde_json::json!({ "synced": false, "reason": "too many syncs waiting" }),
            ));
        }
        self.requests.syncs.push(Sync {
            key,
            target,
            deadline: Instant::now() + SYNC_WAIT,
            reply: req.reply.clone(),
        });
        self.answer_syncs();
        None
    }

    /// Answers the syncs whose process caught up (or whose time ran out), after
    /// publishing what they wait for.
    pub(super) fn answer_syncs(&mut self) {
        if self.requests.syncs.is_empty() {
            return;
        }
        if self.page.dirty {
            self.publish();
        }
        let now = Instant::now();
        let acc = &self.acc;
        self.requests.syncs.retain(|s| {
            let done = acc
                .processes()
                .get(&s.key)
                .is_none_or(|p| p.next_seq >= s.target);
            if done || now >= s.deadline {
                let _ = s.reply.send(json_line(serde_json::json!({
                    "synced": done,
                    "tracked": acc.processes().contains_key(&s.key),
                })));
                return false;
            }
            true
        });
    }

    /// `reset_peak [pid=P]`: P's peaks start again from its current figures; for its
    /// own user (or root) only.
    fn reset_peak(&mut self, req: &Request, args: &str) -> Answer {
        let pid = match pid_arg(args, req.pid) {
            Ok(p) => p,
            Err(a) => return a,
        };
        let theirs = self
            .acc
            .processes()
            .values()
            .find(|p| p.pid == pid && req.uid != 0 && req.uid != p.uid);
        if let Some(p) = theirs {
            return json_line(serde_json::json!({
                "error": format!("refused: pid {pid} is not yours (it is uid {}'s, you are uid {})", p.uid, req.uid)
            }));
        }
        // Kept in the next snapshot (not forced: a reset is no reason to rewrite the
        // journal; one made just before a crash may come undone).
        let found = self.acc.reset_peaks(pid);
        self.page.dirty |= found;
        json_line(serde_json::json!({ "reset": found }))
    }

    /// `record epoch_ms=T`: a recording for the asker.
    fn record_request(&mut self, req: &Request, args: &str) -> super::control_server::Answer {
        use super::control_server::Answer;
        let epoch = args
            .split_whitespace()
            .find_map(|w| w.strip_prefix("epoch_ms="))
            .and_then(|v| v.parse::<u64>().ok());
        let Some(epoch) = epoch else {
            return Answer::Text(format!(
                "{}\n",
                serde_json::json!({ "error": "record needs epoch_ms=T (Unix milliseconds of the recording's time 0)" })
            ));
        };
        match self.start_recording(req.pid, req.uid, epoch) {
            Ok(s) => Answer::Stream(s),
            Err(why) => Answer::Text(format!("{}\n", serde_json::json!({ "error": why }))),
        }
    }

    /// Requests and dumps (which look at every buffer) get at most
    /// `limits::REQUEST_SHARE_PERCENT` of the draining thread's time: after one that took
    /// `d`, the next waits until enough draining time has passed.
    pub(super) fn request_took(&mut self, d: Duration) {
        let share = super::limits::REQUEST_SHARE_PERCENT;
        self.requests.quiet_until = Instant::now() + d * (100 - share) / share;
    }
}
