//! The demo workload: a stand-in for a TT-Metal model run, reporting through
//! libtttrack.so's C ABI (loaded with `dlopen`, exactly as an instrumented program
//! would link it).
//!
//! It describes an n300 (chip 0 local, chip 1 remote), loads persistent dispatch and
//! fabric kernels, loads weights into DRAM, reserves a trace region, then runs
//! "programs": circular buffers and application kernels in L1, activations in L1 and
//! L1_SMALL, program-cache re-reports of live weights, a worker thread that frees what
//! the main thread allocated, and phases (a KV cache that grows and is released) so
//! that charts move. With `leak`, it exits holding part of its memory.

use crate::shm_layout::DeviceInfo;
use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::time::Duration;

type AllocFn = unsafe extern "C" fn(i32, u64, u8, u64);
type FreeFn = unsafe extern "C" fn(i32, u64);
type CbFn = unsafe extern "C" fn(i32, u64, u64);
type KLoadFn = unsafe extern "C" fn(i32, u64, u64, u8);
type KUnloadFn = unsafe extern "C" fn(i32, u64, u64);
type InfoFn = unsafe extern "C" fn(i32, *const DeviceInfo);
type IdentityFn = unsafe extern "C" fn(i32, *const crate::shm_layout::ChipIdentity);
type DroppedFn = unsafe extern "C" fn() -> u64;
type EnabledFn = unsafe extern "C" fn() -> i32;

/// libtttrack.so, loaded at run time.
#[derive(Clone, Copy)]
pub struct Lib {
    alloc_fn: AllocFn,
    free_fn: FreeFn,
    cb_alloc_fn: CbFn,
    cb_free_fn: CbFn,
    kernel_load_fn: KLoadFn,
    kernel_unload_fn: KUnloadFn,
    device_info_fn: InfoFn,
    identity_fn: IdentityFn,
    dropped_fn: DroppedFn,
    enabled_fn: EnabledFn,
}

/// Where libtttrack.so is: `$TTTRACK_LIB`, else beside the running executable.
pub fn library_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("TTTRACK_LIB").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    // Beside the binary; in a cargo target directory `deps/` may hold a newer build;
    // installed (the Debian package), binaries in /usr/bin and the library in /usr/lib.
    [
        dir.join("libtttrack.so"),
        dir.join("deps/libtttrack.so"),
        dir.join("../lib/libtttrack.so"),
    ]
    .into_iter()
    .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
    .max_by_key(|(t, _)| *t)
    .map(|(_, p)| p)
}

// Safe calls: each function pointer is the library's exported C ABI function of that
// name (checked at load), which takes plain values (or a pointer to a value we own)
// and is safe from any thread.
impl Lib {
    pub fn alloc(&self, device: i32, size: u64, buffer_type: u8, id: u64) {
        // SAFETY: see the impl comment; plain values.
        unsafe { (self.alloc_fn)(device, size, buffer_type, id) }
    }
    pub fn free(&self, device: i32, id: u64) {
        // SAFETY: see the impl comment; plain values.
        unsafe { (self.free_fn)(device, id) }
    }
    pub fn cb_alloc(&self, device: i32, size: u64, id: u64) {
        // SAFETY: see the impl comment; plain values.
        unsafe { (self.cb_alloc_fn)(device, size, id) }
    }
    pub fn cb_free(&self, device: i32, size: u64, id: u64) {
        // SAFETY: see the impl comment; plain values.
        unsafe { (self.cb_free_fn)(device, size, id) }
    }
    pub fn kernel_load(&self, device: i32, size: u64, id: u64, kernel_type: u8) {
        // SAFETY: see the impl comment; plain values.
        unsafe { (self.kernel_load_fn)(device, size, id, kernel_type) }
    }
    pub fn kernel_unload(&self, device: i32, size: u64, id: u64) {
        // SAFETY: see the impl comment; plain values.
        unsafe { (self.kernel_unload_fn)(device, size, id) }
    }
    pub fn device_info(&self, device: i32, info: &DeviceInfo) {
        // SAFETY: see the impl comment; `info` is a valid reference for the call.
        unsafe { (self.device_info_fn)(device, info) }
    }
    pub fn device_identity(&self, device: i32, id: &crate::shm_layout::ChipIdentity) {
        // SAFETY: see the impl comment; `id` is a valid reference for the call.
        unsafe { (self.identity_fn)(device, id) }
    }
    pub fn dropped(&self) -> u64 {
        // SAFETY: see the impl comment; no arguments.
        unsafe { (self.dropped_fn)() }
    }
    pub fn enabled(&self) -> bool {
        // SAFETY: see the impl comment; no arguments.
        unsafe { (self.enabled_fn)() != 0 }
    }
}

impl Lib {
    pub fn load(path: &Path) -> Result<Lib, String> {
        let c = CString::new(path.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
        // SAFETY: dlopen of a path; the handle is checked and never closed (the
        // functions stay valid for the life of the process).
        let h = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
        if h.is_null() {
            // SAFETY: dlerror returns a C string or null.
            let e = unsafe { libc::dlerror() };
            let msg = if e.is_null() {
                "unknown error".to_string()
            } else {
                // SAFETY: non-null C string from dlerror.
                unsafe { std::ffi::CStr::from_ptr(e) }
                    .to_string_lossy()
                    .into_owned()
            };
            return Err(format!("cannot load {}: {msg}", path.display()));
        }
        let sym = |name: &str| -> Result<*mut libc::c_void, String> {
            let n = CString::new(name).map_err(|e| e.to_string())?;
            // SAFETY: h is a valid handle, n a valid C string.
            let p = unsafe { libc::dlsym(h, n.as_ptr()) };
            if p.is_null() {
                Err(format!("{} has no symbol {name}", path.display()))
            } else {
                Ok(p)
            }
        };
        // SAFETY: each symbol is the exported C ABI function of that name, whose
        // signature is declared in cabi/tttrack.h and matches the type it is cast to.
        unsafe {
            Ok(Lib {
                alloc_fn: std::mem::transmute::<*mut libc::c_void, AllocFn>(sym("tttrack_alloc")?),
                free_fn: std::mem::transmute::<*mut libc::c_void, FreeFn>(sym("tttrack_free")?),
                cb_alloc_fn: std::mem::transmute::<*mut libc::c_void, CbFn>(sym(
                    "tttrack_cb_alloc",
                )?),
                cb_free_fn: std::mem::transmute::<*mut libc::c_void, CbFn>(sym("tttrack_cb_free")?),
                kernel_load_fn: std::mem::transmute::<*mut libc::c_void, KLoadFn>(sym(
                    "tttrack_kernel_load",
                )?),
                kernel_unload_fn: std::mem::transmute::<*mut libc::c_void, KUnloadFn>(sym(
                    "tttrack_kernel_unload",
                )?),
                device_info_fn: std::mem::transmute::<*mut libc::c_void, InfoFn>(sym(
                    "tttrack_device_info",
                )?),
                identity_fn: std::mem::transmute::<*mut libc::c_void, IdentityFn>(sym(
                    "tttrack_device_identity",
                )?),
                dropped_fn: std::mem::transmute::<*mut libc::c_void, DroppedFn>(sym(
                    "tttrack_dropped_events",
                )?),
                enabled_fn: std::mem::transmute::<*mut libc::c_void, EnabledFn>(sym(
                    "tttrack_enabled",
                )?),
            })
        }
    }
}

/// A small deterministic generator (xorshift64*).
pub struct Rng(u64);
impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    #[allow(clippy::should_implement_trait)] // a generator without end: not an Iterator
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo).max(1)
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub seed: u64,
    /// Number of program cycles (0: until killed).
    pub cycles: u64,
    /// Pause between programs.
    pub pace: Duration,
    pub leak: bool,
}

const MIB: u64 = 1 << 20;
const KIB: u64 = 1 << 10;

/// The identity of the simulated n300's remote chip: reached through card 0, known
/// by its chip id.
pub const N300_REMOTE_CHIP: crate::shm_layout::ChipIdentity = crate::shm_layout::ChipIdentity {
    struct_size: crate::shm_layout::CHIP_IDENTITY_V1_SIZE,
    is_remote: 1,
    pcie_index: -1,
    via_pcie_index: 0,
    board_id: 0x0000_0123_0000_0456,
    asic_id: 0x0000_0ABC_0000_0DF0,
    pci_address: [0; 16],
};

pub fn n300_chip(remote: bool) -> DeviceInfo {
    DeviceInfo {
        arch: 2,
        is_remote: remote as u32,
        num_tensix_cores: 64,
        num_dram_channels: 12,
        l1_size_per_core: 1_499_136,
        dram_size_per_channel: 1 << 30,
        total_dram_bytes: 12 << 30,
        total_l1_bytes: 64 * 1_499_136,
        l1_small_size: 64 * 32 * KIB,
        trace_region_size: 64 * MIB,
    }
}

/// Set (e.g. from a SIGTERM handler) to end the workload after the current program;
/// it then releases its memory as a well-behaved program would (unless `leak`).
pub static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Buffer and kernel ids, unique in this process (the seed picks the range).
struct Ids(u64);

impl Ids {
    fn next(&mut self) -> u64 {
        self.0 += 0x10_0000;
        self.0
    }
}

/// What a model keeps on the devices while it runs: persistent kernels, weights, a
/// trace buffer; each (device, id, size).
struct Resident {
    persistent: Vec<(i32, u64, u64)>,
    weights: Vec<(i32, u64, u64)>,
    trace: u64,
}

/// Loads the model: dispatch and fabric kernels on both chips, 24 layers of weights
/// spread over them, a trace buffer.
fn load_model(l: &Lib, rng: &mut Rng, ids: &mut Ids) -> Resident {
    let mut persistent = Vec::new();
    for dev in 0..2 {
        for (kt, size) in [(2u8, 96 * KIB * 8), (1u8, 48 * KIB * 16)] {
            let k = ids.next();
            l.kernel_load(dev, size, k, kt);
            persistent.push((dev, k, size));
        }
    }
    let mut weights = Vec::new();
    for layer in 0..24 {
        let dev = layer % 2;
        let size = rng.range(24, 96) * MIB;
        let b = ids.next();
        l.alloc(dev, size, 0, b);
        weights.push((dev, b, size));
    }
    let trace = ids.next();
    l.alloc(0, 48 * MIB, 4, trace);
    Resident {
        persistent,
        weights,
        trace,
    }
}

/// One program on `dev`: CBs, an application kernel, activations (freed by the
/// worker thread through `tx`), a weight of the program cache reported again, and the
/// KV cache growing for 20 cycles, then released.
#[allow(clippy::too_many_arguments)]
fn one_program(
    l: &Lib,
    rng: &mut Rng,
    ids: &mut Ids,
    o: &Options,
    cycle: u64,
    weights: &[(i32, u64, u64)],
    kv: &mut Vec<(i32, u64)>,
    tx: &std::sync::mpsc::Sender<(i32, u64)>,
) {
    let dev = (cycle % 2) as i32;
    let mut cbs = Vec::new();
    for _ in 0..rng.range(2, 6) {
        let (c, size) = (ids.next(), rng.range(64, 512) * KIB);
        l.cb_alloc(dev, size, c);
        cbs.push((c, size));
    }
    let kernel = ids.next();
    let ksize = rng.range(16, 64) * KIB * 64;
    l.kernel_load(dev, ksize, kernel, 0);
    let mut acts = Vec::new();
    for _ in 0..rng.range(2, 8) {
        let b = ids.next();
        l.alloc(dev, rng.range(1, 6) * MIB, 1, b);
        acts.push(b);
    }
    let small = ids.next();
    l.alloc(dev, rng.range(8, 32) * KIB, 3, small);
    let (wd, wb, ws) = weights[(cycle as usize) % weights.len()];
    l.alloc(wd, ws, 0, wb);
    std::thread::sleep(o.pace);
    l.free(wd, wb);
    if (cycle / 20).is_multiple_of(2) {
        let b = ids.next();
        l.alloc(dev, rng.range(16, 64) * MIB, 0, b);
        kv.push((dev, b));
    } else {
        for x in kv.drain(..) {
            let _ = tx.send(x);
        }
    }
    for b in acts {
        let _ = tx.send((dev, b));
    }
    l.free(dev, small);
    for (c, size) in cbs {
        l.cb_free(dev, size, c);
    }
    l.kernel_unload(dev, ksize, kernel);
}

/// Releases what the model kept, or with `leak` leaves a third of the weights and the
/// trace buffer allocated.
fn unload_model(l: &Lib, r: &Resident, kv: Vec<(i32, u64)>, leak: bool) {
    if leak {
        for (dev, b, _) in r.weights.iter().skip(r.weights.len() / 3) {
            l.free(*dev, *b);
        }
        return;
    }
    for (dev, b) in kv {
        l.free(dev, b);
    }
    for (dev, b, _) in &r.weights {
        l.free(*dev, *b);
    }
    l.free(0, r.trace);
    for (dev, k, size) in &r.persistent {
        l.kernel_unload(*dev, *size, *k);
    }
}

/// Runs the workload. Returns the number of events this process could not deliver.
pub fn run(lib: &Lib, o: &Options) -> u64 {
    let l = *lib;
    let mut rng = Rng::new(o.seed);
    l.device_info(0, &n300_chip(false));
    l.device_info(1, &n300_chip(true));
    // Its device 1 is the n300's second chip, behind its first (as UMD would say):
    // every process of the cast names the same chip, so it is one row.
    l.device_identity(1, &N300_REMOTE_CHIP);
    let mut ids = Ids(((o.seed & 0xff) << 40) + 0x1000_0000);
    let model = load_model(&l, &mut rng, &mut ids);
    // A worker thread frees what the main thread hands it.
    let (tx, rx) = std::sync::mpsc::channel::<(i32, u64)>();
    let worker = std::thread::spawn(move || {
        for (dev, b) in rx {
            l.free(dev, b);
        }
    });
    let mut kv: Vec<(i32, u64)> = Vec::new();
    let mut cycle = 0u64;
    while (o.cycles == 0 || cycle < o.cycles) && !STOP.load(std::sync::atomic::Ordering::Relaxed) {
        one_program(
            &l,
            &mut rng,
            &mut ids,
            o,
            cycle,
            &model.weights,
            &mut kv,
            &tx,
        );
        cycle += 1;
    }
    drop(tx);
    let _ = worker.join();
    unload_model(&l, &model, kv, o.leak);
    l.dropped()
}
