//! The compatibility socket's threads: one accepts, one per connection reads the
//! original protocol ([`crate::compat`]), identifies its process and passes what it
//! asks to the aggregator's loop ([`super::compat_clients`]) through a bounded queue.

use crate::compat::*;
use crate::peer::{identify_peer, peer, Peer};
use crate::shm_layout::Event;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;
/// What a connection asks of the aggregator's loop.
pub enum Msg {
    /// A client connected: its real pid and start time, and a pidfd to watch.
    Connected {
        pid: u32,
        start_time: u64,
        uid: u32,
        comm: String,
        pidfd: Option<std::os::fd::OwnedFd>,
        /// Its `TT_VISIBLE_DEVICES`, read on the connection's own thread (a read of
        /// another process's environment can stall: never on the aggregator's loop).
        visible: crate::segment::VisibleDevices,
    },
    Event {
        pid: u32,
        start_time: u64,
        ev: Event,
    },
    Query {
        msg: AllocMessage,
        reply: mpsc::Sender<[u8; MSG_SIZE]>,
    },
    Dump {
        kernels: bool,
        reply: mpsc::Sender<String>,
    },
    Disconnected {
        pid: u32,
        bad_messages: u64,
    },
}

/// Binds `path`: a stale socket (nobody answers) is replaced; a live server's is left
/// alone and reported as an error.
///
/// One server for every user on the host, like the original: any user's process may
/// report (each is attributed to its own peer pid, so none can touch another's), so the
/// socket is mode 0666, from its creation (never changed through the path, which is in
/// a directory every user can write). A stale socket is replaced only if it is this
/// user's: anything another user put there is left alone and reported.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    let bind = |p: &Path| {
        crate::aggregator::state_dir::bind_mode_0666(p, |q: &Path| UnixListener::bind(q))
    };
    match bind(path) {
        Ok(l) => Ok(l),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            if UnixStream::connect(path).is_ok() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    format!(
                        "{} belongs to a running server (an allocation_server_poc or another tt-aggregator); \
                         stop it, or use --compat-socket PATH / --no-compat-socket",
                        path.display()
                    ),
                ));
            }
            let meta = std::fs::symlink_metadata(path)?;
            use std::os::unix::fs::FileTypeExt;
            if !meta.file_type().is_socket() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    format!(
                        "{} exists and is not a socket; remove it or choose another path",
                        path.display()
                    ),
                ));
            }
            use std::os::unix::fs::MetadataExt;
            // SAFETY: geteuid has no preconditions.
            let euid = unsafe { libc::geteuid() };
            if meta.uid() != euid {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    format!(
                        "{} is a stale socket of uid {}'s, not ours: it is left alone; its owner or root can remove it, or use --compat-socket PATH",
                        path.display(),
                        meta.uid()
                    ),
                ));
            }
            std::fs::remove_file(path)?;
            bind(path)
        }
        Err(e) => Err(e),
    }
}

/// Serves the socket on threads; messages go to `tx`.
///
/// Bounded: at most `limits::MAX_COMPAT_CONNECTIONS_PER_UID` connections per uid and
/// `MAX_COMPAT_CONNECTIONS` in all (more are closed at once, with a line in the log);
/// `tx` is a bounded queue, so a client sending faster than the aggregator applies waits
/// in its own connection thread (its socket fills, its `send` blocks), holding nothing.
pub fn serve(
    listener: UnixListener,
    tx: mpsc::SyncSender<Msg>,
    proc_root: PathBuf,
    refused: impl Fn(String) + Send + 'static,
) {
    let limit = crate::aggregator::limits::ConnectionLimit::new(
        crate::aggregator::limits::MAX_COMPAT_CONNECTIONS_PER_UID,
        crate::aggregator::limits::MAX_COMPAT_CONNECTIONS,
    );
    let _ = std::thread::Builder::new()
        .name("compat".into())
        .spawn(move || {
            let mut refusals = 0u64;
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let Some((pid, uid)) = peer(&conn) else {
                    continue;
                };
                let slot = match limit.admit(uid) {
                    Ok(s) => s,
                    Err(why) => {
                        // Logged at the 1st, 2nd, 4th, 8th... refusal: a client that
                        // keeps connecting cannot fill the log.
                        refusals += 1;
                        if refusals.is_power_of_two() {
                            refused(format!(
                                "compatibility socket: connection of pid {pid} refused: {why} ({refusals} refused so far)"
                            ));
                        }
                        continue;
                    }
                };
                let (tx, root) = (tx.clone(), proc_root.clone());
                let _ = std::thread::Builder::new()
                    .name("compat-conn".into())
                    .spawn(move || {
                        connection(conn, tx, &root);
                        drop(slot);
                    });
            }
        });
}

/// A socket client's `TT_VISIBLE_DEVICES`, from the environment it started with
/// (what it set later is not there); unknown if that cannot be read, or if the pid is
/// no longer that process by the time it is.
fn visible_devices_of(root: &Path, pid: u32, start_time: u64) -> crate::segment::VisibleDevices {
    use crate::segment::VisibleDevices;
    let v = crate::sys::proc_env_var(root, pid, "TT_VISIBLE_DEVICES");
    let same = crate::sys::proc_info(root, pid).is_some_and(|i| i.start_time == start_time);
    match v {
        Ok(_) if !same => VisibleDevices::Unknown,
        Ok(None) => VisibleDevices::Unset,
        Ok(Some(v)) if v.len() <= crate::shm_layout::VISIBLE_DEVICES_BYTES => {
            VisibleDevices::Set(String::from_utf8_lossy(&v).into_owned())
        }
        _ => VisibleDevices::Unknown,
    }
}

fn connection(mut conn: UnixStream, tx: mpsc::SyncSender<Msg>, proc_root: &Path) {
    let Some(Peer {
        pid,
        uid,
        start_time,
        comm,
        pidfd,
    }) = identify_peer(&conn, proc_root)
    else {
        return;
    };
    let visible = visible_devices_of(proc_root, pid, start_time);
    if tx
        .send(Msg::Connected {
            pid,
            start_time,
            uid,
            comm,
            pidfd,
            visible,
        })
        .is_err()
    {
        return;
    }
    let _ = conn.set_write_timeout(Some(Duration::from_secs(5)));
    let mut parser = StreamParser::default();
    let mut chunk = [0u8; MSG_SIZE * 32];
    'read: loop {
        let n = match conn.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for p in parser.feed(&chunk[..n]) {
            let msg = match p {
                Parsed::Close => {
                    let _ = tx.send(Msg::Disconnected {
                        pid,
                        bad_messages: parser.bad_total,
                    });
                    return;
                }
                Parsed::Message(m) => m,
            };
            if let Some(ev) = msg.event() {
                if tx
                    .send(Msg::Event {
                        pid,
                        start_time,
                        ev,
                    })
                    .is_err()
                {
                    return;
                }
                continue;
            }
            if !answer(&mut conn, &tx, msg) {
                break 'read;
            }
        }
    }
    // Less than one message, then end of input: `echo "" | nc -U SOCKET`.
    if parser.whole == 0 && parser.leftover() > 0 && parser.leftover() < MSG_SIZE {
        dump(&mut conn, &tx, false);
    }
    let _ = tx.send(Msg::Disconnected {
        pid,
        bad_messages: parser.bad_total,
    });
}

/// Answers a query or a dump request (anything else is ignored); false when the client
/// can no longer be written to.
fn answer(conn: &mut UnixStream, tx: &mpsc::SyncSender<Msg>, msg: AllocMessage) -> bool {
    match msg.kind {
        QUERY | DEVICE_INFO_QUERY => {
            let (rtx, rrx) = mpsc::channel();
            let _ = tx.send(Msg::Query { msg, reply: rtx });
            match rrx.recv_timeout(Duration::from_secs(5)) {
                Ok(r) => conn.write_all(&r).is_ok(),
                Err(_) => true,
            }
        }
        DUMP_REMAINING | DUMP_KERNELS => {
            dump(conn, tx, msg.kind == DUMP_KERNELS);
            true
        }
        _ => true,
    }
}

/// Asks the loop for the dump of remaining buffers (or kernels) and writes it.
fn dump(conn: &mut UnixStream, tx: &mpsc::SyncSender<Msg>, kernels: bool) {
    let (rtx, rrx) = mpsc::channel();
    let _ = tx.send(Msg::Dump {
        kernels,
        reply: rtx,
    });
    if let Ok(text) = rrx.recv_timeout(Duration::from_secs(10)) {
        let _ = conn.write_all(text.as_bytes());
    }
}
