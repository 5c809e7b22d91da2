//! ferrogate: one Rust program that serves a Python ASGI application in
//! production. See docs/architecture.md for the process model.
//!
//! This crate is a Python extension module. `main` is the console script: it
//! becomes the master process. `_worker_main` is what each worker runs.

pub mod asgi;
pub mod bridge;
pub mod codec;
pub mod commands;
pub mod config;
pub mod control;
pub mod http;
pub mod io_tasks;
pub mod ipc;
#[macro_use]
pub mod log;
pub mod master;
pub mod proctitle;
pub mod tls;
pub mod worker;

use pyo3::prelude::*;

/// Rust's allocations (not Python's objects, which keep CPython's allocator): see the
/// comment on `mimalloc` in Cargo.toml for why, and what it measured.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The `ferrogate` command.
#[pyfunction]
fn main(py: Python<'_>) -> PyResult<i32> {
    let argv: Vec<String> = py.import("sys")?.getattr("argv")?.extract()?;
    let python: std::path::PathBuf = py.import("sys")?.getattr("executable")?.extract()?;
    if let Some(code) = py.detach(|| commands::run(&argv, std::env::vars_os().collect())) {
        return Ok(code);
    }
    // The environment is read once, here, and passed in: configuration never reads or
    // changes the process environment itself.
    let sources = match config::gather_sources(argv.into_iter().map(Into::into).collect(), std::env::vars_os().collect(), std::process::id(), true) {
        Ok(sources) => sources,
        Err(e) => {
            // --help and --version land here too, as clap "errors" that exit 0.
            let _ = e.print();
            return Ok(e.exit_code());
        }
    };
    for warning in sources.layer().warnings() {
        eprintln!("warning: {warning}");
    }
    // Errors name the file and line when the value came from ferrogate.toml.
    let config = match sources.into_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(2);
        }
    };
    // Python's own SIGINT handler would raise KeyboardInterrupt once we return;
    // the master handles Ctrl-C itself (tokio installs its handler next).
    let signal = py.import("signal")?;
    signal.call_method1("signal", (signal.getattr("SIGINT")?, signal.getattr("SIG_IGN")?))?;
    // The master holds no Python state: release the interpreter for good.
    Ok(py.detach(|| master::run(config, python)))
}

/// The entry point of a worker process (started by the master, never by hand).
#[pyfunction]
fn _worker_main(py: Python<'_>) -> PyResult<i32> {
    worker::run(py)
}

#[pymodule]
fn _ferrogate(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(main, m)?)?;
    m.add_function(wrap_pyfunction!(_worker_main, m)?)?;
    m.add("ClientDisconnected", m.py().get_type::<asgi::http::ClientDisconnected>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    asgi::init_types(m.py());
    Ok(())
}
