//! The PyO3 door to kubemetrics-core: conversion at the boundary, nothing else.

use pyo3::prelude::*;

mod encode;
mod inventory;
mod parse;
mod store;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    parse::register(m)?;
    store::register(m)?;
    inventory::register(m)?;
    encode::register(m)?;
    Ok(())
}
