//! `ParseError` (raised by `Store.ingest`), and the parser's own door for
//! tests and benchmarks (`_testing.parse_resource_metrics`,
//! `_testing.ResourceMetrics`): the door to `kubemetrics_core::parse`.

use std::panic::{catch_unwind, AssertUnwindSafe};

use kubemetrics_core::parse::{parse, Batch};
use numpy::PyArray1;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

pyo3::create_exception!(
    kubemetrics,
    ParseError,
    PyValueError,
    "A kubelet payload that is not valid Prometheus text; the message reads `line N: what is wrong`."
);

/// Parses with a panic guard. The parser is written not to panic on any input
/// (and is fuzzed for it); should a bug slip through anyway, one node's payload
/// is rejected as unparseable rather than the scrape loop meeting a
/// PanicException, which is not an `Exception`.
pub(crate) fn parse_guarded(data: &[u8]) -> Result<Batch, kubemetrics_core::parse::ParseError> {
    catch_unwind(AssertUnwindSafe(|| parse(data))).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Err(kubemetrics_core::parse::ParseError {
            line: 0,
            message: format!("internal parser error (a bug, please report): {what}"),
        })
    })
}

/// One parsed kubelet payload. Holds the Rust batch so that
/// `Store.ingest_parsed` takes it without converting anything.
#[pyclass(
    module = "kubemetrics._native._testing",
    name = "ResourceMetrics",
    frozen
)]
pub struct ResourceMetrics {
    pub(crate) batch: Batch,
}

#[pymethods]
impl ResourceMetrics {
    /// `{"cpu_seconds": float, "memory_bytes": float, "timestamp_ms": int}`;
    /// NaN (timestamp 0) where absent.
    #[getter]
    fn node<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let n = &self.batch.node;
        let d = PyDict::new(py);
        d.set_item("cpu_seconds", n.cpu_seconds)?;
        d.set_item("memory_bytes", n.memory_bytes)?;
        d.set_item("timestamp_ms", n.timestamp_ms)?;
        Ok(d)
    }

    /// Equal-length numpy columns, one row per container in first-seen order:
    /// `namespace`, `pod`, `container` (object arrays of str), `cpu_seconds`,
    /// `memory_bytes`, `start_time_seconds` (float64, NaN where absent) and
    /// `timestamp_ms` (int64, the container's CPU sample time, 0 where absent).
    #[getter]
    fn containers<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let c = &self.batch.containers;
        let d = PyDict::new(py);
        d.set_item("namespace", str_column(py, &c.namespace))?;
        d.set_item("pod", str_column(py, &c.pod))?;
        d.set_item("container", str_column(py, &c.container))?;
        d.set_item("cpu_seconds", PyArray1::from_slice(py, &c.cpu_seconds))?;
        d.set_item("memory_bytes", PyArray1::from_slice(py, &c.memory_bytes))?;
        d.set_item(
            "start_time_seconds",
            PyArray1::from_slice(py, &c.start_time_seconds),
        )?;
        d.set_item("timestamp_ms", PyArray1::from_slice(py, &c.timestamp_ms))?;
        Ok(d)
    }

    /// Number of containers.
    fn __len__(&self) -> usize {
        self.batch.containers.len()
    }

    fn __repr__(&self) -> String {
        let n = &self.batch.node;
        format!(
            "ResourceMetrics(node=(cpu_seconds={}, memory_bytes={}, timestamp_ms={}), containers={})",
            n.cpu_seconds,
            n.memory_bytes,
            n.timestamp_ms,
            self.batch.containers.len()
        )
    }
}

fn str_column<'py>(py: Python<'py>, values: &[String]) -> Bound<'py, PyArray1<Py<PyAny>>> {
    let objects = values
        .iter()
        .map(|s| PyString::new(py, s).into_any().unbind())
        .collect();
    PyArray1::from_vec(py, objects)
}

/// Parses a kubelet `/metrics/resource` body (Prometheus text 0.0.4) without
/// holding the GIL. Raises `ParseError` naming the line on malformed input.
#[pyfunction]
pub fn parse_resource_metrics(py: Python<'_>, data: &[u8]) -> PyResult<ResourceMetrics> {
    match py.detach(|| parse_guarded(data)) {
        Ok(batch) => Ok(ResourceMetrics { batch }),
        Err(e) => Err(ParseError::new_err(e.to_string())),
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("ParseError", m.py().get_type::<ParseError>())?;
    Ok(())
}

/// The parser's own door, for tests and benchmarks.
pub(crate) fn register_testing(t: &Bound<'_, PyModule>) -> PyResult<()> {
    t.add_function(wrap_pyfunction!(parse_resource_metrics, t)?)?;
    t.add_class::<ResourceMetrics>()?;
    t.add(
        "PARSE_MAX_LINE_BYTES",
        kubemetrics_core::parse::MAX_LINE_BYTES,
    )?;
    Ok(())
}
