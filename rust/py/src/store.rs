//! `Store` and `Snapshot`: the Python door to `kubemetrics_core::store`, and
//! the snapshot's served view (`kubemetrics_core::encode::Served`).
//!
//! The store lives behind a `Mutex` in a frozen pyclass: every method drops
//! the GIL before touching it, so an `ingest` parsing on one thread never
//! blocks the event loop, and concurrent callers serialise on the lock (never
//! on the GIL while holding the lock, which would deadlock).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use kubemetrics_core::encode::Served;
use kubemetrics_core::parse::Batch;
use kubemetrics_core::snapshot::Snapshot as CoreSnapshot;
use kubemetrics_core::store::Store as CoreStore;
use numpy::{Element, PyArray1};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

use crate::guarded;
use crate::inventory::Inventory;
use crate::parse::{parse_guarded, ParseError};
use crate::view::View;

/// Last/prev points of every node and container; rates per SPEC §3.
#[pyclass(module = "kubemetrics._native", name = "Store", frozen)]
pub struct Store {
    inner: Mutex<CoreStore>,
}

impl Store {
    /// A store method panicking would poison the lock; its state is still
    /// structurally sound (each ingest swaps whole tables), so keep serving.
    pub(crate) fn lock(&self) -> MutexGuard<'_, CoreStore> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The store is written not to panic; should a bug slip through, the
    /// scraper gets an ordinary exception for that node instead of a
    /// PanicException (not an `Exception`) unwinding its loop.
    pub(crate) fn store(&self, node: &str, batch: &Batch, request_time_ms: i64) -> PyResult<()> {
        catch_unwind(AssertUnwindSafe(|| {
            self.lock().ingest(node, batch, request_time_ms)
        }))
        .map_err(|_| {
            PyRuntimeError::new_err(format!(
                "internal store error storing node {node:?} (a bug, please report)"
            ))
        })
    }
}

#[pymethods]
impl Store {
    #[new]
    fn new(resolution_seconds: f64) -> PyResult<Self> {
        let ms = resolution_seconds * 1000.0;
        if !ms.is_finite() || ms < 1.0 || ms > i64::MAX as f64 / 4.0 {
            return Err(PyValueError::new_err(format!(
                "resolution_seconds must be a positive number of seconds (at least 0.001), got {resolution_seconds}"
            )));
        }
        Ok(Store {
            inner: Mutex::new(CoreStore::new(ms.round() as i64)),
        })
    }

    /// `--metric-resolution` in seconds, as given to the constructor (ms precision).
    #[getter]
    fn resolution_seconds(&self) -> f64 {
        self.lock().resolution_ms() as f64 / 1000.0
    }

    /// Parse one node's `/metrics/resource` body and store it. Raises
    /// `ParseError` (and leaves the node's data untouched) on malformed input.
    fn ingest(
        &self,
        py: Python<'_>,
        node: &str,
        data: &[u8],
        request_time_ms: i64,
    ) -> PyResult<()> {
        py.detach(|| {
            // Parse outside the lock: other nodes' ingests proceed meanwhile.
            let batch = parse_guarded(data).map_err(|e| ParseError::new_err(e.to_string()))?;
            self.store(node, &batch, request_time_ms)
        })
    }

    fn forget_node(&self, py: Python<'_>, node: &str) {
        py.detach(|| self.lock().forget_node(node));
    }

    fn forget_pod(&self, py: Python<'_>, namespace: &str, pod: &str) {
        py.detach(|| self.lock().forget_pod(namespace, pod));
    }

    /// Everything servable at `now_ms` (Unix ms), computed once.
    fn snapshot(&self, py: Python<'_>, now_ms: i64) -> Snapshot {
        let snap = py.detach(|| self.lock().snapshot(now_ms));
        Snapshot {
            inner: Arc::new(snap),
            served: Mutex::new(None),
        }
    }

    /// This replica's own points within the grace period, and `failing` (the
    /// nodes it failed to scrape), as one compressed body for its peers.
    fn export_points<'py>(
        &self,
        py: Python<'py>,
        now_ms: i64,
        failing: Vec<String>,
    ) -> PyResult<Bound<'py, pyo3::types::PyBytes>> {
        crate::exchange::export_points(self, py, now_ms, failing)
    }

    /// Merge a peer's body: `(nodes it has points for, nodes it failed)`.
    fn import_points(
        &self,
        py: Python<'_>,
        data: &[u8],
        now_ms: i64,
        max_decoded_bytes: usize,
    ) -> PyResult<(Vec<String>, Vec<String>)> {
        crate::exchange::import_points(self, py, data, now_ms, max_decoded_bytes)
    }

    /// `(node points, container points)` currently stored.
    fn points(&self, py: Python<'_>) -> (usize, usize) {
        py.detach(|| self.lock().points())
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let (resolution_ms, nodes, points) = py.detach(|| {
            let s = self.lock();
            (s.resolution_ms(), s.node_count(), s.points())
        });
        format!(
            "Store(resolution_ms={resolution_ms}, nodes={nodes}, node_points={}, container_points={})",
            points.0, points.1
        )
    }
}

/// One consistent view of every servable node and pod (immutable), and the
/// served view built from it (at most one, for one inventory).
#[pyclass(module = "kubemetrics._native", name = "Snapshot", frozen)]
pub struct Snapshot {
    /// Shared with the view, which reads it without copying.
    pub(crate) inner: Arc<CoreSnapshot>,
    /// (the inventory's id, the view built with it)
    served: Mutex<Option<(u64, Arc<Served>)>>,
}

/// Names as a numpy object array of `str`. Consecutive equal names (a sorted
/// namespace column) share one Python string.
fn str_column<'py>(py: Python<'py>, names: &[Arc<str>]) -> Bound<'py, PyArray1<Py<PyAny>>> {
    let mut out: Vec<Py<PyAny>> = Vec::with_capacity(names.len());
    let mut prev: Option<(&Arc<str>, Py<PyAny>)> = None;
    for name in names {
        let obj = match &prev {
            Some((p, obj)) if Arc::ptr_eq(p, name) => obj.clone_ref(py),
            _ => PyString::new(py, name).into_any().unbind(),
        };
        prev = Some((name, obj.clone_ref(py)));
        out.push(obj);
    }
    PyArray1::from_vec(py, out)
}

fn num_column<'py, T: Element>(py: Python<'py>, values: &[T]) -> Bound<'py, PyArray1<T>> {
    PyArray1::from_slice(py, values)
}

#[pymethods]
impl Snapshot {
    /// Node columns: `name`, `cpu_nanocores` (uint64), `memory_bytes` (uint64),
    /// `timestamp_ms` (int64), `window_ms` (int64); sorted by name.
    #[getter]
    fn nodes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let n = &self.inner.nodes;
        let d = PyDict::new(py);
        d.set_item("name", str_column(py, &n.name))?;
        d.set_item("cpu_nanocores", num_column(py, &n.cpu_nanocores))?;
        d.set_item("memory_bytes", num_column(py, &n.memory_bytes))?;
        d.set_item("timestamp_ms", num_column(py, &n.timestamp_ms))?;
        d.set_item("window_ms", num_column(py, &n.window_ms))?;
        Ok(d)
    }

    /// Pod columns: `namespace`, `name`, `node`, `timestamp_ms`, `window_ms`,
    /// `container_start` (uint32, length pods + 1); sorted by (namespace, name).
    #[getter]
    fn pods<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let p = &self.inner.pods;
        let d = PyDict::new(py);
        d.set_item("namespace", str_column(py, &p.namespace))?;
        d.set_item("name", str_column(py, &p.name))?;
        d.set_item("node", str_column(py, &p.node))?;
        d.set_item("timestamp_ms", num_column(py, &p.timestamp_ms))?;
        d.set_item("window_ms", num_column(py, &p.window_ms))?;
        d.set_item("container_start", num_column(py, &p.container_start))?;
        Ok(d)
    }

    /// Container columns: `name`, `cpu_nanocores`, `memory_bytes`; pod `i`
    /// owns rows `container_start[i]:container_start[i + 1]`, sorted by name.
    #[getter]
    fn containers<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let c = &self.inner.containers;
        let d = PyDict::new(py);
        d.set_item("name", str_column(py, &c.name))?;
        d.set_item("cpu_nanocores", num_column(py, &c.cpu_nanocores))?;
        d.set_item("memory_bytes", num_column(py, &c.memory_bytes))?;
        Ok(d)
    }

    /// The `timestamp_ms` column of `"nodes"` or `"pods"` alone: what the API's freshness
    /// histogram needs, without building the name columns (three Python strings per pod).
    fn timestamps_ms<'py>(
        &self,
        py: Python<'py>,
        kind: &str,
    ) -> PyResult<Bound<'py, PyArray1<i64>>> {
        match kind {
            "nodes" => Ok(num_column(py, &self.inner.nodes.timestamp_ms)),
            "pods" => Ok(num_column(py, &self.inner.pods.timestamp_ms)),
            other => Err(PyValueError::new_err(format!(
                "unknown kind {other:?}: expected \"nodes\" or \"pods\""
            ))),
        }
    }

    /// The served view of this snapshot with `inventory`'s members and labels:
    /// built on first use (GIL released; the scrape cycle does it in a worker
    /// thread before publishing the snapshot), then the same object's data.
    fn view(&self, py: Python<'_>, inventory: &Bound<'_, Inventory>) -> PyResult<View> {
        let shared = &inventory.get().shared;
        let snap = self.inner.clone();
        let served = py
            .detach(|| {
                guarded("view", || {
                    let mut slot = self.served.lock().unwrap_or_else(PoisonError::into_inner);
                    if let Some((id, s)) = slot.as_ref() {
                        if *id == shared.id() {
                            return Ok(s.clone());
                        }
                    }
                    let s = Arc::new(Served::build(snap, shared)?);
                    *slot = Some((shared.id(), s.clone()));
                    Ok(s)
                })
            })?
            .map_err(|e: kubemetrics_core::encode::EncodeError| {
                PyRuntimeError::new_err(format!("internal error building the view (a bug): {e}"))
            })?;
        Ok(View::new(served))
    }

    /// At least one node and one pod servable.
    #[getter]
    fn ready(&self) -> bool {
        self.inner.is_ready()
    }

    fn node_index(&self, name: &str) -> Option<usize> {
        self.inner.node_index(name)
    }

    fn pod_index(&self, namespace: &str, name: &str) -> Option<usize> {
        self.inner.pod_index(namespace, name)
    }

    fn __repr__(&self) -> String {
        format!(
            "Snapshot(nodes={}, pods={}, containers={})",
            self.inner.nodes.len(),
            self.inner.pods.len(),
            self.inner.containers.name.len()
        )
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Store>()?;
    m.add_class::<Snapshot>()?;
    Ok(())
}
