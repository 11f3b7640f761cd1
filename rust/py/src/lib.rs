//! The PyO3 door to kubemetrics-core: conversion at the boundary, nothing else.
//!
//! `kubemetrics._native` is what the server uses; `kubemetrics._native._testing`
//! holds what only tests and benchmarks call (the parser's own door, the
//! quantity formatters, the plain-scan selection oracle).

use std::panic::{catch_unwind, AssertUnwindSafe};

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

mod exchange;
mod inventory;
mod listsplit;
mod parse;
mod store;
mod testing;
mod view;

/// Runs `f`, turning a panic (a bug: the core is written not to panic) into
/// an ordinary exception, since a PanicException must never cross into Python.
pub(crate) fn guarded<T>(what: &str, f: impl FnOnce() -> T) -> PyResult<T> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|panic| {
        let detail = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        PyRuntimeError::new_err(format!("internal error in {what} (a bug): {detail}"))
    })
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    parse::register(m)?;
    store::register(m)?;
    inventory::register(m)?;
    view::register(m)?;
    testing::register(m)?;
    listsplit::register(m)?;
    Ok(())
}
