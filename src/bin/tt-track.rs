//! tt-track: not built yet (see the project's issues). Says so instead of pretending.
fn main() {
    eprintln!("tt-track: not implemented yet in this build of tttrack.");
    std::process::exit(2);
}
