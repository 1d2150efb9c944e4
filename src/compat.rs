//! The original tracking server's socket protocol, so that instrumented TT-Metal builds
//! that report through `AllocationClient` over `/tmp/tt_allocation_server.sock` keep
//! working unchanged.
//!
//! - Messages are the 144-byte packed `AllocMessage`. The older 112-byte form is not
//!   accepted: a stream carries no length, and a 112-byte message cannot be told from
//!   the start of a 144-byte one, so guessing would corrupt figures.
//! - The process is the peer's real pid (`SO_PEERCRED`), never the claimed
//!   `process_id`; its memory is released when that process dies (watched with a pidfd,
//!   which PID reuse cannot fool).
//! - A message that does not parse is skipped one byte at a time (re-synchronising);
//!   ten bad messages in a row close the connection. Each connection has its own thread,
//!   so a client that stops mid-message blocks nobody.
//! - A client that sends less than one message and closes its side (as
//!   `echo "" | nc -U SOCKET` does) gets the dump of remaining buffers.

use crate::shm_layout::{Event, EventKind, MAX_DEVICES};
use std::io::{Read, Write};
use std::os::unix::io::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

pub const DEFAULT_PATH: &str = "/tmp/tt_allocation_server.sock";
pub const MSG_SIZE: usize = 144;
const MAX_BAD_IN_A_ROW: u32 = 10;
/// The original accepted sizes up to 100 GiB.
const MAX_SIZE: u64 = 100 << 30;

pub const ALLOC: u8 = 1;
pub const FREE: u8 = 2;
pub const QUERY: u8 = 3;
pub const RESPONSE: u8 = 4;
pub const DUMP_REMAINING: u8 = 5;
pub const DEVICE_INFO_QUERY: u8 = 6;
pub const DEVICE_INFO_RESPONSE: u8 = 7;
pub const CB_ALLOC: u8 = 8;
pub const CB_FREE: u8 = 9;
pub const KERNEL_LOAD: u8 = 10;
pub const KERNEL_UNLOAD: u8 = 11;
pub const DUMP_KERNELS: u8 = 12;

/// The fields of an `AllocMessage` (offsets in the reference table).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AllocMessage {
    pub kind: u8,
    pub device_id: i32,
    pub size: u64,
    pub buffer_type: u8,
    pub process_id: i32,
    pub buffer_id: u64,
    pub timestamp: u64,
    pub allocated: [u64; 6],
    pub total_dram_size: u64,
    pub total_l1_size: u64,
    pub arch_type: u32,
    pub num_dram_channels: u32,
    pub dram_size_per_channel: u32,
    pub l1_size_per_core: u32,
    pub is_available: u32,
    pub num_devices: u32,
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}

impl AllocMessage {
    pub fn decode(b: &[u8; MSG_SIZE]) -> Self {
        let mut allocated = [0u64; 6];
        for (i, a) in allocated.iter_mut().enumerate() {
            *a = u64_at(b, 40 + 8 * i);
        }
        AllocMessage {
            kind: b[0],
            device_id: u32_at(b, 4) as i32,
            size: u64_at(b, 8),
            buffer_type: b[16],
            process_id: u32_at(b, 20) as i32,
            buffer_id: u64_at(b, 24),
            timestamp: u64_at(b, 32),
            allocated,
            total_dram_size: u64_at(b, 88),
            total_l1_size: u64_at(b, 96),
            arch_type: u32_at(b, 104),
            num_dram_channels: u32_at(b, 108),
            dram_size_per_channel: u32_at(b, 112),
            l1_size_per_core: u32_at(b, 116),
            is_available: u32_at(b, 120),
            num_devices: u32_at(b, 124),
        }
    }

    pub fn encode(&self) -> [u8; MSG_SIZE] {
        let mut b = [0u8; MSG_SIZE];
        b[0] = self.kind;
        b[4..8].copy_from_slice(&self.device_id.to_le_bytes());
        b[8..16].copy_from_slice(&self.size.to_le_bytes());
        b[16] = self.buffer_type;
        b[20..24].copy_from_slice(&self.process_id.to_le_bytes());
        b[24..32].copy_from_slice(&self.buffer_id.to_le_bytes());
        b[32..40].copy_from_slice(&self.timestamp.to_le_bytes());
        for (i, a) in self.allocated.iter().enumerate() {
            b[40 + 8 * i..48 + 8 * i].copy_from_slice(&a.to_le_bytes());
        }
        b[88..96].copy_from_slice(&self.total_dram_size.to_le_bytes());
        b[96..104].copy_from_slice(&self.total_l1_size.to_le_bytes());
        b[104..108].copy_from_slice(&self.arch_type.to_le_bytes());
        b[108..112].copy_from_slice(&self.num_dram_channels.to_le_bytes());
        b[112..116].copy_from_slice(&self.dram_size_per_channel.to_le_bytes());
        b[116..120].copy_from_slice(&self.l1_size_per_core.to_le_bytes());
        b[120..124].copy_from_slice(&self.is_available.to_le_bytes());
        b[124..128].copy_from_slice(&self.num_devices.to_le_bytes());
        b
    }

    /// Whether the message is one a client may send, with plausible fields (the
    /// original's checks, with our device range).
    pub fn valid_request(&self) -> bool {
        let dev_ok = (0..MAX_DEVICES as i32).contains(&self.device_id);
        match self.kind {
            ALLOC => dev_ok && self.size > 0 && self.size <= MAX_SIZE && self.buffer_type <= 4,
            FREE => dev_ok,
            CB_ALLOC | CB_FREE => dev_ok && self.size <= MAX_SIZE,
            KERNEL_LOAD => {
                dev_ok && self.size > 0 && self.size <= MAX_SIZE && self.buffer_type <= 2
            }
            KERNEL_UNLOAD => dev_ok && self.size <= MAX_SIZE,
            QUERY => dev_ok,
            DEVICE_INFO_QUERY => self.device_id == -1 || dev_ok,
            DUMP_REMAINING | DUMP_KERNELS => true,
            _ => false,
        }
    }

    /// The tracking event this message reports, if it reports one.
    pub fn event(&self) -> Option<Event> {
        let (kind, sub) = match self.kind {
            ALLOC => (EventKind::Alloc, self.buffer_type),
            FREE => (EventKind::Free, 0),
            CB_ALLOC => (EventKind::CbAlloc, 0),
            CB_FREE => (EventKind::CbFree, 0),
            KERNEL_LOAD => (EventKind::KernelLoad, self.buffer_type),
            KERNEL_UNLOAD => (EventKind::KernelUnload, 0),
            _ => return None,
        };
        Some(Event {
            seq: 0,
            kind: kind as u8,
            subtype: sub,
            _reserved: 0,
            device: self.device_id,
            size: self.size,
            id: self.buffer_id,
        })
    }
}

/// What the parser found in a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Message(AllocMessage),
    /// Ten bad messages in a row: close the connection.
    Close,
}

/// Splits a byte stream into messages: a message that does not parse is skipped one
/// byte at a time; ten bad ones in a row ask for the connection to be closed.
#[derive(Debug, Default)]
pub struct StreamParser {
    buf: Vec<u8>,
    bad_in_a_row: u32,
    pub bad_total: u64,
    pub whole: u64,
}

impl StreamParser {
    pub fn feed(&mut self, data: &[u8]) -> Vec<Parsed> {
        self.buf.extend_from_slice(data);
        let mut out = Vec::new();
        let mut off = 0;
        while self.buf.len() - off >= MSG_SIZE {
            let mut m = [0u8; MSG_SIZE];
            m.copy_from_slice(&self.buf[off..off + MSG_SIZE]);
            let msg = AllocMessage::decode(&m);
            if !msg.valid_request() {
                self.bad_in_a_row += 1;
                self.bad_total += 1;
                if self.bad_in_a_row >= MAX_BAD_IN_A_ROW {
                    out.push(Parsed::Close);
                    self.buf.clear();
                    return out;
                }
                off += 1;
                continue;
            }
            self.bad_in_a_row = 0;
            self.whole += 1;
            off += MSG_SIZE;
            out.push(Parsed::Message(msg));
        }
        self.buf.drain(..off);
        out
    }

    /// Bytes received that do not yet form a message.
    pub fn leftover(&self) -> usize {
        self.buf.len()
    }
}

/// What a connection asks of the aggregator's loop.
pub enum Msg {
    /// A client connected: its real pid and start time, and a pidfd to watch.
    Connected {
        pid: u32,
        start_time: u64,
        uid: u32,
        comm: String,
        pidfd: Option<std::os::fd::OwnedFd>,
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
    let limit = crate::limits::ConnectionLimit::new(
        crate::limits::MAX_COMPAT_CONNECTIONS_PER_UID,
        crate::limits::MAX_COMPAT_CONNECTIONS,
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

pub(crate) fn peer(conn: &UnixStream) -> Option<(u32, u32)> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cred`, a valid ucred.
    let r = unsafe {
        libc::getsockopt(
            conn.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            &mut cred as *mut libc::ucred as *mut libc::c_void,
            &mut len,
        )
    };
    (r == 0 && cred.pid > 0).then_some((cred.pid as u32, cred.uid))
}

pub(crate) fn pidfd_open(pid: u32) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open takes a pid and flags; the result is checked.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) };
    // SAFETY: a non-negative result is a new descriptor that we own.
    (fd >= 0).then(|| unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
}

/// `SO_PEERPIDFD` (Linux 6.5): a pidfd of the process that connected, taken at connect
/// time. Not in the libc crate yet; 77 is its number in the generic socket numbering
/// that these architectures use (others fall back to the pid check).
#[cfg(any(
    target_arch = "x86_64",
    target_arch = "x86",
    target_arch = "aarch64",
    target_arch = "arm",
    target_arch = "riscv64"
))]
const SO_PEERPIDFD: Option<libc::c_int> = Some(77);
#[cfg(not(any(
    target_arch = "x86_64",
    target_arch = "x86",
    target_arch = "aarch64",
    target_arch = "arm",
    target_arch = "riscv64"
)))]
const SO_PEERPIDFD: Option<libc::c_int> = None;

fn peer_pidfd(conn: &UnixStream) -> Option<std::os::fd::OwnedFd> {
    let opt = SO_PEERPIDFD?;
    use std::os::fd::FromRawFd;
    let mut fd: libc::c_int = -1;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `fd`, a valid c_int.
    let r = unsafe {
        libc::getsockopt(
            conn.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            &mut fd as *mut libc::c_int as *mut libc::c_void,
            &mut len,
        )
    };
    // SAFETY: on success fd is a new descriptor that we own.
    (r == 0 && fd >= 0).then(|| unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// The pid a pidfd refers to, as `/proc/self/fdinfo` tells it: `None` once that process
/// has ended (the kernel shows -1), so its pid can no longer name it.
fn pidfd_pid(fd: &std::os::fd::OwnedFd) -> Option<u32> {
    use std::os::fd::AsRawFd;
    let s = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).ok()?;
    let v: i64 = s
        .lines()
        .find_map(|l| l.strip_prefix("Pid:"))?
        .trim()
        .parse()
        .ok()?;
    (v > 0).then_some(v as u32)
}

/// Who is at the other end of a connection, bound to that very process.
pub struct Peer {
    pub pid: u32,
    pub uid: u32,
    pub start_time: u64,
    pub comm: String,
    /// The process's pidfd: taken at connect time where the kernel gives one
    /// (`SO_PEERPIDFD`), else opened by pid here.
    pub pidfd: Option<std::os::fd::OwnedFd>,
}

/// Identifies the client of `conn`: its pid and uid from its credentials at connect
/// time, bound to the process itself through a pidfd taken at connect time, checked
/// before and after reading its start time and name, and against its uid. `None` when
/// that process has already ended (a later process with its pid is never taken for
/// it) or its pid now belongs to another user. On kernels without `SO_PEERPIDFD` the
/// pid is checked against the credentials' uid only.
pub fn identify_peer(conn: &UnixStream, proc_root: &Path) -> Option<Peer> {
    let (pid, uid) = peer(conn)?;
    let bound = peer_pidfd(conn);
    if let Some(fd) = &bound {
        if pidfd_pid(fd) != Some(pid) {
            return None;
        }
    }
    let info = crate::sys::proc_info(proc_root, pid)?;
    if info.uid != uid {
        return None;
    }
    if let Some(fd) = &bound {
        // Still the same process after /proc was read: what was read is its own.
        if pidfd_pid(fd) != Some(pid) {
            return None;
        }
    }
    Some(Peer {
        pid,
        uid,
        start_time: info.start_time,
        comm: info.comm,
        pidfd: bound.or_else(|| pidfd_open(pid)),
    })
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
    if tx
        .send(Msg::Connected {
            pid,
            start_time,
            uid,
            comm,
            pidfd,
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
            match msg.kind {
                QUERY | DEVICE_INFO_QUERY => {
                    let (rtx, rrx) = mpsc::channel();
                    let _ = tx.send(Msg::Query { msg, reply: rtx });
                    if let Ok(r) = rrx.recv_timeout(Duration::from_secs(5)) {
                        if conn.write_all(&r).is_err() {
                            break 'read;
                        }
                    }
                }
                DUMP_REMAINING | DUMP_KERNELS => {
                    let (rtx, rrx) = mpsc::channel();
                    let _ = tx.send(Msg::Dump {
                        kernels: msg.kind == DUMP_KERNELS,
                        reply: rtx,
                    });
                    if let Ok(text) = rrx.recv_timeout(Duration::from_secs(10)) {
                        let _ = conn.write_all(text.as_bytes());
                    }
                }
                _ => {}
            }
        }
    }
    // Less than one message, then end of input: `echo "" | nc -U SOCKET`.
    if parser.whole == 0 && parser.leftover() > 0 && parser.leftover() < MSG_SIZE {
        let (rtx, rrx) = mpsc::channel();
        let _ = tx.send(Msg::Dump {
            kernels: false,
            reply: rtx,
        });
        if let Ok(text) = rrx.recv_timeout(Duration::from_secs(10)) {
            let _ = conn.write_all(text.as_bytes());
        }
    }
    let _ = tx.send(Msg::Disconnected {
        pid,
        bad_messages: parser.bad_total,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn encode_decode_round_trip_at_documented_offsets() {
        let m = AllocMessage {
            kind: ALLOC,
            device_id: 3,
            size: 4096,
            buffer_type: 1,
            process_id: 999,
            buffer_id: 0x7f8a_2c00_0000,
            timestamp: 5,
            num_devices: 7,
            arch_type: 2,
            ..Default::default()
        };
        let b = m.encode();
        assert_eq!(b[0], 1);
        assert_eq!(&b[4..8], &3i32.to_le_bytes());
        assert_eq!(&b[8..16], &4096u64.to_le_bytes());
        assert_eq!(b[16], 1);
        assert_eq!(&b[20..24], &999i32.to_le_bytes());
        assert_eq!(&b[24..32], &0x7f8a_2c00_0000u64.to_le_bytes());
        assert_eq!(&b[104..108], &2u32.to_le_bytes());
        assert_eq!(&b[124..128], &7u32.to_le_bytes());
        assert_eq!(AllocMessage::decode(&b), m);
        assert!(m.valid_request());
        assert!(!AllocMessage {
            kind: RESPONSE,
            ..m
        }
        .valid_request());
        assert!(!AllocMessage {
            buffer_type: 5,
            ..m
        }
        .valid_request());
        assert!(!AllocMessage { size: 0, ..m }.valid_request());
        assert!(!AllocMessage {
            size: (100 << 30) + 1,
            ..m
        }
        .valid_request());
        assert!(!AllocMessage { device_id: 64, ..m }.valid_request());
        assert!(AllocMessage {
            kind: DEVICE_INFO_QUERY,
            device_id: -1,
            ..m
        }
        .valid_request());
    }
}
