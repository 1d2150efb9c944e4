//! Survives a shared file being truncated while it is mapped.
//!
//! Reading a page of a `MAP_SHARED` mapping beyond the end of its file raises SIGBUS.
//! A tracked process (or anyone with write access to its segment) could truncate its
//! segment while the aggregator drains it; that must not kill the aggregator. Mapped
//! ranges are registered here; a SIGBUS inside a registered range replaces the whole
//! range with zero-filled anonymous memory (so the faulting read, and every later one,
//! reads zeros, which the segment validation then rejects) and marks it faulted. A
//! SIGBUS anywhere else gets the default action, as before.

use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering::*};

const MAX_REGIONS: usize = 4096;

struct Region {
    start: AtomicUsize,
    len: AtomicUsize,
    faulted: AtomicBool,
}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: Region = Region {
    start: AtomicUsize::new(0),
    len: AtomicUsize::new(0),
    faulted: AtomicBool::new(false),
};
static REGIONS: [Region; MAX_REGIONS] = [EMPTY; MAX_REGIONS];
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// A registered range; unregisters itself when dropped (before the range is unmapped).
pub struct Guard {
    slot: Option<usize>,
}

impl Guard {
    /// Whether a SIGBUS hit this range (its contents are now zeros).
    pub fn faulted(&self) -> bool {
        self.slot.is_some_and(|i| REGIONS[i].faulted.load(Acquire))
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(i) = self.slot {
            REGIONS[i].len.store(0, Release);
            REGIONS[i].faulted.store(false, Release);
            REGIONS[i].start.store(0, Release);
        }
    }
}

/// Registers `[start, start + len)`. With no free slot the range is unguarded (a
/// truncation then kills the process as it would without this module).
pub fn register(start: *const u8, len: usize) -> Guard {
    install();
    let s = start as usize;
    for (i, r) in REGIONS.iter().enumerate() {
        if r.start.load(Relaxed) == 0
            && r.start
                .compare_exchange(0, usize::MAX, AcqRel, Relaxed)
                .is_ok()
        {
            r.faulted.store(false, Relaxed);
            r.len.store(len, Relaxed);
            r.start.store(s, Release);
            return Guard { slot: Some(i) };
        }
    }
    Guard { slot: None }
}

extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo_t to an SA_SIGINFO handler.
    let addr = unsafe { (*info).si_addr() } as usize;
    for r in REGIONS.iter() {
        let start = r.start.load(Acquire);
        let len = r.len.load(Acquire);
        if start != 0 && start != usize::MAX && addr >= start && addr < start + len {
            // SAFETY: replaces exactly the registered range (which this process mapped
            // and still owns) with private zero pages; mmap is async-signal-safe.
            let p = unsafe {
                libc::mmap(
                    start as *mut libc::c_void,
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                    -1,
                    0,
                )
            };
            if p != libc::MAP_FAILED {
                r.faulted.store(true, Release);
                return;
            }
        }
    }
    // Not ours: default action (the fault repeats when the handler returns).
    // SAFETY: resetting a signal disposition is async-signal-safe.
    unsafe { libc::signal(sig, libc::SIG_DFL) };
}

fn install() {
    if INSTALLED.swap(true, AcqRel) {
        return;
    }
    // SAFETY: installs an SA_SIGINFO handler for SIGBUS; the sigaction struct is fully
    // initialised (zeroed, then set).
    unsafe {
        let mut sa: libc::sigaction = core::mem::zeroed();
        sa.sa_sigaction = on_sigbus as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_NODEFER;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGBUS, &sa, core::ptr::null_mut());
    }
}
