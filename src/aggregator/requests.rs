//! The request socket as the loop serves it: each request answered from the
//! accounting (see [`crate::control`]), and requests and dumps together held to their
//! share of the draining thread's time.

use super::Aggregator;
use crate::control::Request;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

/// Requests waiting, and when the next may be answered.
pub(super) struct Requests {
    rx: Option<Receiver<Request>>,
    pub(super) quiet_until: Instant,
}

impl Default for Requests {
    fn default() -> Self {
        Self {
            rx: None,
            quiet_until: Instant::now(),
        }
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
        self.requests.rx = Some(crate::control::serve(l)?);
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
            let text = match req.query.strip_prefix("record") {
                Some(args) => self.record_request(&req, args),
                None => crate::control::answer(&self.acc, &req.query),
            };
            let _ = req.reply.send(text);
            self.request_took(t.elapsed());
        }
        self.requests.rx = Some(rx);
    }

    /// `record epoch_ms=T`: a recording for the asker.
    fn record_request(&mut self, req: &Request, args: &str) -> crate::control::Answer {
        use crate::control::Answer;
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
            Ok(rx) => Answer::Stream(rx),
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
