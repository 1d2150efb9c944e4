//! `tttrack._native`: what the Python package reads, through the project's own readers
//! (the counters page and its JSON, the request socket), so that the page layout and the
//! JSON stay defined once, in the `tttrack` crate.

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use std::path::PathBuf;

create_exception!(_native, TttrackError, PyException, "Any error of tttrack.");
create_exception!(
    _native,
    NoAggregatorError,
    TttrackError,
    "No tt-aggregator serves the tracking directory."
);
create_exception!(
    _native,
    PageVersionError,
    TttrackError,
    "The counters page is of another layout version than this package reads."
);
create_exception!(
    _native,
    PermissionRefusedError,
    TttrackError,
    "The aggregator refused the request (not your process)."
);
create_exception!(
    _native,
    UntrustedError,
    TttrackError,
    "The counters page or the request socket belongs to a user neither root nor you: not read."
);

fn dir_of(dir: Option<String>) -> PathBuf {
    dir.map(PathBuf::from)
        .unwrap_or_else(tttrack::sys::tracking_dir_from_env)
}

/// The tracking directory in use (`dir`, else `$TTTRACK_DIR`, else the default).
#[pyfunction]
#[pyo3(signature = (dir=None))]
fn tracking_dir(dir: Option<String>) -> String {
    dir_of(dir).display().to_string()
}

/// What `tt-smi --json` prints, for `dir` (memory is null without an aggregator).
#[pyfunction]
#[pyo3(signature = (dir=None, sysfs_root=None))]
fn snapshot_json(py: Python<'_>, dir: Option<String>, sysfs_root: Option<String>) -> PyResult<String> {
    let dir = dir_of(dir);
    let root = tttrack::devices::sysfs_root(sysfs_root.map(PathBuf::from));
    py.allow_threads(|| tttrack::smi::model::Model::load_including_self(&dir, 0, &root))
        .map(|m| tttrack::smi::json::render(&m))
        .map_err(|e| {
            use tttrack::smi::model::FatalKind;
            match e.1 {
                FatalKind::Version => PageVersionError::new_err(e.0),
                FatalKind::Untrusted => UntrustedError::new_err(e.0),
                FatalKind::Other => TttrackError::new_err(e.0),
            }
        })
}

/// One request on the aggregator's request socket; its answer as text.
#[pyfunction]
#[pyo3(signature = (query, dir=None))]
fn request(py: Python<'_>, query: String, dir: Option<String>) -> PyResult<String> {
    let dir = dir_of(dir);
    let answer = py.allow_threads(|| tttrack::control::request(&dir, &query));
    use tttrack::control::RequestError;
    let sock = dir.join(tttrack::control::SOCKET_NAME);
    match answer {
        Ok(a) => Ok(a),
        Err(RequestError::NotRunning(e)) => Err(NoAggregatorError::new_err(format!(
            "no tt-aggregator answers on {} ({e}); start one with: tt-aggregator",
            sock.display()
        ))),
        Err(e @ RequestError::Untrusted { .. }) => {
            Err(UntrustedError::new_err(format!("{}: {e}", sock.display())))
        }
        Err(RequestError::Refused(m)) => Err(PermissionRefusedError::new_err(m)),
        Err(e) => Err(TttrackError::new_err(format!("{}: {e}", sock.display()))),
    }
}

/// Writes a snapshot of the last `seconds` (`tt-track snapshot`) to `path`; returns
/// (processes, events, bytes).
#[pyfunction]
#[pyo3(signature = (path, pid=None, seconds=30.0, failure=None, dir=None))]
fn take_snapshot(
    py: Python<'_>,
    path: String,
    pid: Option<u32>,
    seconds: f64,
    failure: Option<String>,
    dir: Option<String>,
) -> PyResult<(u64, u64, u64)> {
    let dir = dir_of(dir);
    let ask = tttrack::recording::snapshot::Ask {
        pid,
        seconds,
        failure,
    };
    py.allow_threads(|| tttrack::recording::snapshot::take(&dir, &ask, std::path::Path::new(&path)))
        .map(|w| (w.processes, w.events, w.bytes))
        .map_err(TttrackError::new_err)
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(tracking_dir, m)?)?;
    m.add_function(wrap_pyfunction!(snapshot_json, m)?)?;
    m.add_function(wrap_pyfunction!(request, m)?)?;
    m.add_function(wrap_pyfunction!(take_snapshot, m)?)?;
    let py = m.py();
    // The memory types' names, from the one table every view uses.
    m.add("TYPES", tttrack::counters_page::CAT_NAMES.to_vec())?;
    m.add("TttrackError", py.get_type::<TttrackError>())?;
    m.add("NoAggregatorError", py.get_type::<NoAggregatorError>())?;
    m.add("PageVersionError", py.get_type::<PageVersionError>())?;
    m.add("PermissionRefusedError", py.get_type::<PermissionRefusedError>())?;
    m.add("UntrustedError", py.get_type::<UntrustedError>())?;
    Ok(())
}
