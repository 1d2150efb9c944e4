//! tt-smi: not built yet (see the project's issues). Says so instead of pretending.
fn main() {
    eprintln!("tt-smi: not implemented yet in this build of tttrack; only libtttrack.so (the producer side) is available.");
    std::process::exit(2);
}
