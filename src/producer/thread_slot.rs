//! Where a thread's [`ThreadLane`] lives: a block of thread-local storage reached the
//! cheapest way the platform allows, since every event reads it first.
//!
//! On x86-64 Linux the block is a TLS symbol of our own (a `thread_local!` in a shared
//! library costs a call to `__tls_get_addr` through the PLT on every access, and stable
//! Rust offers no other model), reached through a TLS descriptor (the `gnu2` dialect):
//! - In an executable the linker turns the descriptor into a constant offset from the
//!   thread pointer.
//! - In libtttrack.so, linked or preloaded, the block is in the static TLS block, at an
//!   offset from the thread pointer that is the same in every thread: learned once
//!   from the descriptor, it is then one load and an add, the cost of the initial-exec
//!   model without its refusal to `dlopen` when static TLS is short.
//! - Opened later with `dlopen` where static TLS is short, the block is in dynamic TLS:
//!   every access then calls the descriptor's resolver, which finds it.
//!
//! Elsewhere the block is a plain `thread_local!`.
//!
//! The block starts zeroed in every thread (`.tbss`), and zeros are a valid
//! [`ThreadLane`] holding no lane.

use super::lane::ThreadLane;

/// The calling thread's [`ThreadLane`], used like a `thread_local!` key.
pub(super) struct LaneKey;

pub(super) static LANE: LaneKey = LaneKey;

#[cfg(all(
    target_arch = "x86_64",
    target_os = "linux",
    target_pointer_width = "64"
))]
mod block {
    use super::ThreadLane;
    use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};

    /// Bytes set aside for the block (a line of its own, no false sharing with the
    /// thread's other variables).
    pub(super) const BLOCK_BYTES: usize = 128;
    const _: () = assert!(size_of::<ThreadLane>() <= BLOCK_BYTES);
    const _: () = assert!(align_of::<ThreadLane>() <= 64);

    // The block: a hidden global (each module that links this crate has its own; no
    // other module can bind to it), 128 zeroed bytes in the thread-local BSS.
    core::arch::global_asm!(
        ".pushsection .tbss.tttrack_thread_lane,\"awT\",@nobits",
        ".globl tttrack_thread_lane",
        ".hidden tttrack_thread_lane",
        ".type tttrack_thread_lane,@object",
        ".size tttrack_thread_lane,128",
        ".p2align 6",
        "tttrack_thread_lane:",
        ".zero 128",
        ".popsection",
    );

    // The block's offset from the thread pointer when it is in the static TLS block, the
    // same in every thread; 0 until learned (or if it is not). A hidden symbol of its
    // own, so that reading it is one load relative to the instruction pointer: a Rust
    // static in this crate's position-independent code is read through the GOT.
    core::arch::global_asm!(
        ".pushsection .bss.tttrack_static_offset,\"aw\",@nobits",
        ".globl tttrack_static_offset",
        ".hidden tttrack_static_offset",
        ".type tttrack_static_offset,@object",
        ".size tttrack_static_offset,8",
        ".p2align 3",
        "tttrack_static_offset:",
        ".zero 8",
        ".popsection",
    );

    #[inline(always)]
    pub(super) fn static_offset() -> &'static AtomicUsize {
        let p: *const AtomicUsize;
        // SAFETY: an address computation.
        unsafe {
            core::arch::asm!(
                "lea {}, [rip + tttrack_static_offset]",
                out(reg) p,
                options(pure, nomem, nostack, preserves_flags),
            );
        }
        // SAFETY: 8 bytes of this module's BSS, aligned, zero-initialised, touched only
        // as this atomic.
        unsafe { &*p }
    }

    /// The address of the calling thread's block.
    #[inline(always)]
    pub(super) fn address() -> *const ThreadLane {
        let offset = match learned() {
            0 => by_descriptor(),
            known => known,
        };
        thread_pointer().wrapping_add(offset) as *const ThreadLane
    }

    /// The address of the calling thread's block if its offset is learned: one load,
    /// no call (a call here would make the hot path save registers for it).
    #[inline(always)]
    pub(super) fn learned_address() -> Option<*const ThreadLane> {
        match learned() {
            0 => None,
            known => Some(thread_pointer().wrapping_add(known) as *const ThreadLane),
        }
    }

    /// The learned offset, 0 if none.
    #[inline(always)]
    fn learned() -> usize {
        let known: usize;
        // SAFETY: a load of the offset's 8 aligned bytes (an aligned load is atomic on
        // x86-64, as a relaxed load of the atomic that `learn_static_offset` stores).
        unsafe {
            core::arch::asm!(
                "mov {}, qword ptr [rip + tttrack_static_offset]",
                out(reg) known,
                options(pure, readonly, nostack, preserves_flags),
            );
        }
        known
    }

    /// The block's offset from the thread pointer, from its TLS descriptor. Out of line
    /// (only until the offset is learned, or in dynamic TLS): the resolver of a block in
    /// dynamic TLS may allocate it on a thread's first access, and some versions of it
    /// (glibc before 2.40), or a `malloc` it calls, do not keep the vector registers the
    /// descriptor convention promises; a call of the C ABI is assumed to clobber them.
    #[inline(never)]
    pub(super) fn by_descriptor() -> usize {
        let offset: usize;
        // SAFETY: the TLS descriptor sequence of the x86-64 ABI (the lea and the call
        // must be exactly these, with rax, for the linker to recognise and relax them):
        // it returns in rax the block's offset from the thread pointer. Every register
        // the C ABI lets a call clobber is declared clobbered; the call uses the stack
        // (no `nostack`); it may write memory (the resolver of dynamic TLS allocates).
        unsafe {
            core::arch::asm!(
                "lea rax, [rip + tttrack_thread_lane@TLSDESC]",
                "call qword ptr [rax + tttrack_thread_lane@TLSCALL]",
                out("rax") offset,
                clobber_abi("C"),
            );
        }
        offset
    }

    #[inline(always)]
    pub(super) fn thread_pointer() -> usize {
        let tp: usize;
        // SAFETY: fs:0 holds the thread pointer itself (the x86-64 TLS ABI); a load.
        unsafe {
            core::arch::asm!(
                "mov {}, qword ptr fs:[0]",
                out(reg) tp,
                options(pure, readonly, nostack, preserves_flags),
            );
        }
        tp
    }

    /// Learns whether the block is in the static TLS block, and if so its offset, so
    /// that [`address`] need not ask the descriptor again: one load then, as cheap as
    /// the initial-exec model, without that model's failure to `dlopen` when static
    /// TLS is short. Called on the slow path; cheap to call again.
    ///
    /// - In an executable the linker has relaxed the descriptor's `lea` to a move of
    ///   the block's offset from the thread pointer (local-exec): a negative number
    ///   (variant II: static TLS lies below the thread pointer).
    /// - In a shared library the `lea` gives the descriptor's address in the GOT (a
    ///   user-space address, positive), relocated by the dynamic linker: a resolver and
    ///   its argument. A block in static TLS has a resolver that returns the argument,
    ///   its negative offset (glibc's `_dl_tlsdesc_return`, musl's `__tlsdesc_static`);
    ///   one in dynamic TLS has an argument that points to the resolver's data (a
    ///   positive user-space address), and an offset that differs between threads.
    #[cold]
    pub(super) fn learn_static_offset() {
        if static_offset().load(Relaxed) != 0 {
            return;
        }
        let lea: usize;
        // SAFETY: the descriptor's lea alone (with rax, the form linkers relax): an
        // address computation, no access.
        unsafe {
            core::arch::asm!(
                "lea rax, [rip + tttrack_thread_lane@TLSDESC]",
                out("rax") lea,
                options(pure, nomem, nostack, preserves_flags),
            );
        }
        let offset = if (lea as isize) < 0 {
            lea
        } else {
            // SAFETY: lea is the address of this module's TLS descriptor, two words in
            // its GOT, relocated before any of the module's code ran and readable.
            let arg = unsafe { (lea as *const usize).add(1).read_volatile() };
            if (arg as isize) < 0 && by_descriptor() == arg {
                arg
            } else {
                return;
            }
        };
        static_offset().store(offset, Relaxed);
    }
}

#[cfg(not(all(
    target_arch = "x86_64",
    target_os = "linux",
    target_pointer_width = "64"
)))]
mod block {
    use super::ThreadLane;

    thread_local! {
        static BLOCK: ThreadLane = const { ThreadLane::new() };
    }

    /// The address of the calling thread's block.
    #[inline(always)]
    pub(super) fn address() -> *const ThreadLane {
        BLOCK.with(|b| b as *const ThreadLane)
    }

    #[inline(always)]
    pub(super) fn learned_address() -> Option<*const ThreadLane> {
        Some(address())
    }

    pub(super) fn learn_static_offset() {}
}

impl LaneKey {
    /// As [`Self::with`] where the thread's block is found without a call (its offset
    /// learned, see `block::learn_static_offset`); None, without calling `f`, where it
    /// is not. For the hot path.
    #[inline(always)]
    pub(super) fn with_learned<R>(&self, f: impl FnOnce(&ThreadLane) -> R) -> Option<R> {
        let p = block::learned_address()?;
        // SAFETY: as in `with`: the calling thread's own block, valid for its life.
        Some(f(unsafe { &*p }))
    }

    /// Makes later calls of [`Self::with`] cheaper where the platform allows (see
    /// `block::learn_static_offset`). For the slow path.
    pub(super) fn settle(&self) {
        block::learn_static_offset();
    }

    /// Calls `f` with the calling thread's [`ThreadLane`].
    #[inline(always)]
    pub(super) fn with<R>(&self, f: impl FnOnce(&ThreadLane) -> R) -> R {
        // SAFETY: the block is the calling thread's own, aligned for a ThreadLane and
        // large enough (asserted), valid from the thread's start to its end (after its
        // thread-local destructors, which may use it), and zero-initialised, a valid
        // ThreadLane (every field is a Cell of an integer, bool or raw pointer). Only
        // this thread reaches it, and the reference does not outlive `f`.
        let lane = unsafe { &*block::address() };
        f(lane)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_thread_has_its_own_block_and_it_starts_empty() {
        let here = LANE.with(|tl| tl as *const ThreadLane as usize);
        assert_eq!(here, LANE.with(|tl| tl as *const ThreadLane as usize));
        assert_eq!(here % align_of::<ThreadLane>(), 0);
        let (there, empty) = std::thread::spawn(|| {
            LANE.with(|tl| (tl as *const ThreadLane as usize, tl.holds_no_lane()))
        })
        .join()
        .unwrap();
        assert_ne!(here, there);
        assert!(empty, "a new thread's block must hold no lane");
    }

    /// Once the offset is learned, every thread's block is where its descriptor says.
    #[cfg(all(
        target_arch = "x86_64",
        target_os = "linux",
        target_pointer_width = "64"
    ))]
    #[test]
    fn the_learned_offset_finds_each_threads_own_block() {
        let by_descriptor = || {
            block::thread_pointer().wrapping_add(block::by_descriptor()) as *const ThreadLane
                as usize
        };
        LANE.settle();
        assert_ne!(
            block::static_offset().load(core::sync::atomic::Ordering::Relaxed),
            0
        );
        let threads: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(move || {
                    (
                        LANE.with(|tl| tl as *const ThreadLane as usize),
                        by_descriptor(),
                    )
                })
            })
            .collect();
        let mut seen = std::collections::HashSet::new();
        for (learned, described) in threads.into_iter().map(|t| t.join().unwrap()) {
            assert_eq!(learned, described);
            assert!(seen.insert(learned), "two threads given one block");
        }
        assert_eq!(
            LANE.with(|tl| tl as *const ThreadLane as usize),
            by_descriptor()
        );
    }
}
