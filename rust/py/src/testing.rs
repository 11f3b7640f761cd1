//! `kubemetrics._native._testing`: what only tests and benchmarks call.
//! The server never imports it.

use std::io::Write;

use flate2::write::GzEncoder;
use flate2::Compression;
use kubemetrics_core::wire::quantity;
use numpy::PyArray1;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::guarded;
use crate::parse::{register_testing as register_parse, ResourceMetrics};
use crate::store::Store;
use crate::view::{Parsed, View};

/// The items `view.query(...)` selects, found by testing every item in turn
/// instead of through the label index: the oracle of the property tests.
#[pyfunction]
#[pyo3(signature = (view, kind, namespace=None, label_selector="", field_selector=""))]
fn select_scan<'py>(
    py: Python<'py>,
    view: &Bound<'py, View>,
    kind: &str,
    namespace: Option<&str>,
    label_selector: &str,
    field_selector: &str,
) -> PyResult<Bound<'py, PyArray1<i64>>> {
    let parsed = Parsed::new(kind, namespace, label_selector, field_selector)?;
    let served = view.get().served().clone();
    let ids = py.detach(|| {
        guarded("select_scan", || {
            served.view().select_scan(parsed.kind(), &parsed.query())
        })
    })?;
    Ok(PyArray1::from_vec(
        py,
        ids.into_iter().map(i64::from).collect(),
    ))
}

/// Store a batch already parsed by `parse_resource_metrics`.
#[pyfunction]
fn ingest_parsed(
    py: Python<'_>,
    store: &Bound<'_, Store>,
    node: &str,
    metrics: &Bound<'_, ResourceMetrics>,
    request_time_ms: i64,
) -> PyResult<()> {
    let store = store.get();
    let batch = &metrics.get().batch;
    py.detach(|| store.store(node, batch, request_time_ms))
}

/// `data` gzip-compressed at `level` (0-9) by the encoder responses use: lets a
/// benchmark weigh levels on real bodies.
#[pyfunction]
fn gzip_compress<'py>(py: Python<'py>, data: &[u8], level: u32) -> PyResult<Bound<'py, PyBytes>> {
    let out = py.detach(|| {
        guarded("gzip_compress", || {
            let mut enc = GzEncoder::new(Vec::new(), Compression::new(level.min(9)));
            enc.write_all(data)?;
            enc.finish()
        })
    })?;
    let out = out.map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
    Ok(PyBytes::new(py, &out))
}

/// Canonical CPU quantity of a rate in nanocores (`500m`, `20u`, `1`).
#[pyfunction]
fn format_cpu(nanocores: u64) -> String {
    quantity::format_cpu(nanocores)
}

/// Canonical memory quantity of a byte count (`12240Ki`, `1k`, `1536`).
#[pyfunction]
fn format_memory(bytes: u64) -> String {
    quantity::format_memory(bytes)
}

/// Go `time.Duration` string of a millisecond count (`15.012s`, `1m0.5s`).
#[pyfunction]
fn format_duration(ms: i64) -> String {
    quantity::format_duration_ms(ms)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    let t = PyModule::new(py, "_testing")?;
    register_parse(&t)?;
    t.add_function(wrap_pyfunction!(select_scan, &t)?)?;
    t.add_function(wrap_pyfunction!(ingest_parsed, &t)?)?;
    t.add_function(wrap_pyfunction!(gzip_compress, &t)?)?;
    t.add_function(wrap_pyfunction!(format_cpu, &t)?)?;
    t.add_function(wrap_pyfunction!(format_memory, &t)?)?;
    t.add_function(wrap_pyfunction!(format_duration, &t)?)?;
    m.add_submodule(&t)?;
    // `import kubemetrics._native._testing` finds it here: an extension
    // module is not a package the import system could search.
    py.import("sys")?
        .getattr("modules")?
        .set_item("kubemetrics._native._testing", &t)?;
    Ok(())
}
