//! Bounds on what one user can make the aggregator hold, in one place. What is over a
//! bound is refused and counted for the one who asked (its process marked inexact, or
//! its connection closed with a reason); nobody else pays for it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Live buffers one process may have tracked: [`crate::accounting::MAX_BUFFERS_PER_PROCESS`]
/// (the accounting enforces it).
pub use crate::accounting::MAX_BUFFERS_PER_PROCESS;

/// Segments attached at once for one uid; more are left unattached (their processes'
/// events are counted undelivered by their producers) and logged once.
pub const MAX_SEGMENTS_PER_UID: usize = 512;

/// Compatibility-socket connections at once: per uid, and in all.
pub const MAX_COMPAT_CONNECTIONS_PER_UID: usize = 128;
pub const MAX_COMPAT_CONNECTIONS: usize = 1024;

/// Request-socket connections at once: per uid, and in all.
pub const MAX_REQUEST_CONNECTIONS_PER_UID: usize = 8;
pub const MAX_REQUEST_CONNECTIONS: usize = 64;

/// Compatibility-socket messages queued for the aggregator's loop (a client sending
/// faster than this drains waits in its own connection thread), and applied per pass.
pub const COMPAT_QUEUE: usize = 65_536;
pub const COMPAT_PER_PASS: usize = 65_536;

/// Requests answered per pass of the aggregator's loop (the others wait a pass).
pub const REQUESTS_PER_PASS: usize = 1;

/// The share of the draining thread's time that requests and compatibility-socket
/// dumps (each a look at every buffer) may take, in percent: after one that took `d`,
/// the next waits `d * (100 - share) / share`.
pub const REQUEST_SHARE_PERCENT: u32 = 10;

/// Counts connections per uid under a total; a slot is given back when its guard drops.
#[derive(Clone)]
pub struct ConnectionLimit {
    inner: Arc<Mutex<(usize, HashMap<u32, usize>)>>,
    per_uid: usize,
    total: usize,
}

/// One connection's place under a [`ConnectionLimit`].
pub struct ConnectionSlot {
    limit: ConnectionLimit,
    uid: u32,
}

impl ConnectionLimit {
    pub fn new(per_uid: usize, total: usize) -> Self {
        Self {
            inner: Default::default(),
            per_uid,
            total,
        }
    }

    /// A slot for a connection of `uid`, or why there is none. Root (and the
    /// aggregator's own user) is bound per uid only: however many other users hold
    /// connections, it always has a way in.
    pub fn admit(&self, uid: u32) -> Result<ConnectionSlot, String> {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (all, by_uid) = &mut *g;
        let mine = by_uid.get(&uid).copied().unwrap_or(0);
        if mine >= self.per_uid {
            return Err(format!(
                "uid {uid} already has {mine} connections open (at most {})",
                self.per_uid
            ));
        }
        let kept = is_kept_for(uid);
        if !kept && *all >= self.total {
            return Err(format!("{all} connections open (at most {})", self.total));
        }
        // Only uids with a connection open have an entry; the total counts others'.
        *by_uid.entry(uid).or_default() += 1;
        if !kept {
            *all += 1;
        }
        Ok(ConnectionSlot {
            limit: self.clone(),
            uid,
        })
    }
}

/// Whether `uid` has room kept for it beyond the totals: root, and the user the
/// aggregator runs as.
pub fn is_kept_for(uid: u32) -> bool {
    // SAFETY: geteuid has no preconditions.
    uid == 0 || uid == unsafe { libc::geteuid() }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut g = self.limit.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (all, by_uid) = &mut *g;
        if !is_kept_for(self.uid) {
            *all = all.saturating_sub(1);
        }
        if let Some(n) = by_uid.get_mut(&self.uid) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                by_uid.remove(&self.uid);
            }
        }
    }
}

/// Raises this process's soft limit on open files to its hard limit, so that the
/// bounds above, not the default of 1024 descriptors, decide who is refused.
pub fn raise_open_file_limit() {
    // SAFETY: a zeroed rlimit is a valid out-parameter; getrlimit/setrlimit on our
    // own process have no other preconditions.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_counted_per_uid_and_in_all_and_given_back() {
        let l = ConnectionLimit::new(2, 3);
        let a = l.admit(1).unwrap();
        let _b = l.admit(1).unwrap();
        assert!(l.admit(1).is_err(), "per uid");
        let _c = l.admit(2).unwrap();
        assert!(l.admit(3).is_err(), "in all");
        let r = l.admit(0).expect("root always has a way in");
        assert!(
            l.admit(3).is_err(),
            "root's connection counts against no one"
        );
        drop(r);
        drop(a);
        assert!(l.admit(1).is_ok());
    }
}
