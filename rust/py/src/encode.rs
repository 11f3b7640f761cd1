//! Selection and response encoding: the Python door to
//! `kubemetrics_core::{selector, encode, quantity}`.
//!
//! Selectors are parsed with the GIL held (short strings); selection and
//! encoding run with it released. Every call into the core is also guarded
//! against panics, which must never cross into Python.

use std::mem::MaybeUninit;
use std::panic::{catch_unwind, AssertUnwindSafe};

use kubemetrics_core::encode::{
    self as core_encode, ApiVersion, EncodeError, FillSink, Format, Request,
};
use kubemetrics_core::inventory::LabelSet;
use kubemetrics_core::selector::{self, FieldSelector, LabelSelector, ObjectKind};
use kubemetrics_core::wire::quantity;
use numpy::{PyArray1, PyReadonlyArray1};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::inventory::Inventory;
use crate::store::Snapshot;

pyo3::create_exception!(
    kubemetrics,
    SelectorError,
    PyValueError,
    "A malformed label/field selector or an unsupported field; the message suits a 400 Status."
);

fn guarded<T>(what: &str, f: impl FnOnce() -> T) -> PyResult<T> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|panic| {
        let detail = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        PyRuntimeError::new_err(format!("internal error in {what} (a bug): {detail}"))
    })
}

fn selectors(
    label_selector: &str,
    field_selector: &str,
    kind: ObjectKind,
) -> PyResult<(LabelSelector, FieldSelector)> {
    let labels = LabelSelector::parse(label_selector).map_err(|e| SelectorError::new_err(e.0))?;
    let fields =
        FieldSelector::parse(field_selector, kind).map_err(|e| SelectorError::new_err(e.0))?;
    Ok((labels, fields))
}

fn to_array(py: Python<'_>, idx: Vec<usize>) -> Bound<'_, PyArray1<i64>> {
    // Snapshot sizes are far below i64::MAX.
    let v: Vec<i64> = idx.into_iter().map(|i| i as i64).collect();
    PyArray1::from_vec(py, v)
}

/// Indices into `snapshot.nodes` of nodes in both the inventory and the
/// snapshot that match the selectors, sorted by name.
#[pyfunction]
#[pyo3(signature = (snapshot, inventory, label_selector="", field_selector=""))]
fn select_nodes<'py>(
    py: Python<'py>,
    snapshot: &Bound<'py, Snapshot>,
    inventory: &Bound<'py, Inventory>,
    label_selector: &str,
    field_selector: &str,
) -> PyResult<Bound<'py, PyArray1<i64>>> {
    let (labels, fields) = selectors(label_selector, field_selector, ObjectKind::Node)?;
    let snap = snapshot.get().inner.clone();
    let inv = inventory.get();
    let idx = py.detach(|| {
        guarded("select_nodes", || {
            let cache = core_encode::cache_for(&snap);
            selector::select_nodes_cached(&snap, &cache, &inv.read(), &labels, &fields)
        })
    })?;
    Ok(to_array(py, idx))
}

/// Indices into `snapshot.pods` of pods in both the inventory and the
/// snapshot, in `namespace` (all if None), matching the selectors, sorted
/// by (namespace, name).
#[pyfunction]
#[pyo3(signature = (snapshot, inventory, namespace=None, label_selector="", field_selector=""))]
fn select_pods<'py>(
    py: Python<'py>,
    snapshot: &Bound<'py, Snapshot>,
    inventory: &Bound<'py, Inventory>,
    namespace: Option<&str>,
    label_selector: &str,
    field_selector: &str,
) -> PyResult<Bound<'py, PyArray1<i64>>> {
    let (labels, fields) = selectors(label_selector, field_selector, ObjectKind::Pod)?;
    let snap = snapshot.get().inner.clone();
    let inv = inventory.get();
    let idx = py.detach(|| {
        guarded("select_pods", || {
            let cache = core_encode::cache_for(&snap);
            selector::select_pods_cached(&snap, &cache, &inv.read(), namespace, &labels, &fields)
        })
    })?;
    Ok(to_array(py, idx))
}

/// Indices from a numpy int64 array (no copy of a contiguous one until here)
/// or any sequence of ints.
fn indices(obj: &Bound<'_, PyAny>) -> PyResult<Vec<i64>> {
    if let Ok(arr) = obj.extract::<PyReadonlyArray1<'_, i64>>() {
        return Ok(match arr.as_slice() {
            Ok(s) => s.to_vec(),
            Err(_) => arr.as_array().iter().copied().collect(),
        });
    }
    obj.extract::<Vec<i64>>()
}

fn request(api_version: &str, fmt: &str, single: bool, now_s: f64) -> PyResult<Request> {
    let api_version = ApiVersion::parse(api_version).ok_or_else(|| {
        PyValueError::new_err(format!(
            "api_version must be \"v1beta1\" or \"v1\", got {api_version:?}"
        ))
    })?;
    let format = Format::parse(fmt).ok_or_else(|| {
        PyValueError::new_err(format!(
            "fmt must be \"json\", \"protobuf\", \"table\", \"table-object\" or \"table-none\", got {fmt:?}"
        ))
    })?;
    if !now_s.is_finite() || now_s.abs() > 1e15 {
        return Err(PyValueError::new_err(format!(
            "now_s must be finite Unix seconds, got {now_s}"
        )));
    }
    Ok(Request {
        api_version,
        format,
        single,
        now_s: now_s.floor() as i64,
    })
}

#[derive(Clone, Copy)]
enum Kind {
    Node,
    Pod,
}

/// Above this many items, labels come from the snapshot cache's resolved
/// view instead of one inventory lookup per item.
const RESOLVE_ABOVE: usize = 2048;

/// A new, uninitialised `bytes` object of `len` bytes and its buffer address.
/// The caller must fill all of it before anyone else can see the object.
fn alloc_bytes(py: Python<'_>, len: usize) -> PyResult<(Py<PyBytes>, usize)> {
    let size =
        ffi::Py_ssize_t::try_from(len).map_err(|_| PyValueError::new_err("response too large"))?;
    // SAFETY: a NULL source asks CPython for an uninitialised buffer of `size`
    // bytes; the returned new reference is owned by the Bound we build.
    unsafe {
        let ptr = ffi::PyBytes_FromStringAndSize(std::ptr::null(), size);
        if ptr.is_null() {
            return Err(PyErr::fetch(py));
        }
        let buf = ffi::PyBytes_AsString(ptr) as usize;
        let obj = Bound::from_owned_ptr(py, ptr).cast_into_unchecked::<PyBytes>();
        Ok((obj.unbind(), buf))
    }
}

#[allow(clippy::too_many_arguments)]
fn encode<'py>(
    py: Python<'py>,
    kind: Kind,
    snapshot: &Bound<'py, Snapshot>,
    inventory: &Bound<'py, Inventory>,
    idx: &Bound<'py, PyAny>,
    api_version: &str,
    fmt: &str,
    single: bool,
    now_s: f64,
) -> PyResult<Bound<'py, PyBytes>> {
    let req = request(api_version, fmt, single, now_s)?;
    let raw = indices(idx)?;
    let snap = snapshot.get().inner.clone();
    let inv = inventory.get();
    // Plan without the GIL, take it back only to allocate the `bytes`, then
    // write the body straight into it without the GIL: one copy of the data.
    let body = py.detach(|| {
        guarded("encode", || -> PyResult<Py<PyBytes>> {
            let err = |e: EncodeError| PyValueError::new_err(e.to_string());
            let len = match kind {
                Kind::Node => snap.nodes.len(),
                Kind::Pod => snap.pods.len(),
            };
            let idx = core_encode::check_indices(&raw, len).map_err(err)?;
            let cache = core_encode::cache_for(&snap);
            let resolved;
            let looked_up;
            let labels: Vec<&LabelSet> = if idx.len() > RESOLVE_ABOVE {
                resolved = {
                    let inv = inv.read();
                    match kind {
                        Kind::Node => cache.resolved_node_labels(&snap, &inv),
                        Kind::Pod => cache.resolved_pod_labels(&snap, &inv),
                    }
                };
                let empty = LabelSet::empty_ref();
                idx.iter()
                    .map(|&i| resolved.get(i).and_then(|l| l.as_deref()).unwrap_or(empty))
                    .collect()
            } else {
                looked_up = {
                    let inv = inv.read();
                    match kind {
                        Kind::Node => core_encode::node_labels(&snap, &inv, &idx),
                        Kind::Pod => core_encode::pod_labels(&snap, &inv, &idx),
                    }
                };
                looked_up.iter().map(|l| &**l).collect()
            };
            let plan = match kind {
                Kind::Node => core_encode::plan_nodes(&cache, &snap, &idx, &labels, &req),
                Kind::Pod => core_encode::plan_pods(&cache, &snap, &idx, &labels, &req),
            }
            .map_err(err)?;
            let (obj, addr) = Python::attach(|py| alloc_bytes(py, plan.len()))?;
            // SAFETY: `addr` is the buffer of the `plan.len()`-byte object just
            // created, referenced only by `obj`; MaybeUninit admits its
            // uninitialised contents and FillSink never writes past the end.
            let buf =
                unsafe { std::slice::from_raw_parts_mut(addr as *mut MaybeUninit<u8>, plan.len()) };
            let mut sink = FillSink::new(buf);
            plan.write(&mut sink);
            if !sink.is_complete() {
                return Err(PyRuntimeError::new_err(
                    "internal error in encode (a bug): planned and written sizes differ",
                ));
            }
            Ok(obj)
        })
    })??;
    Ok(body.into_bound(py))
}

/// A NodeMetricsList (or one NodeMetrics if `single`) for the given indices.
#[pyfunction]
#[pyo3(signature = (snapshot, inventory, indices, *, api_version, fmt, single, now_s))]
#[allow(clippy::too_many_arguments)]
fn encode_nodes<'py>(
    py: Python<'py>,
    snapshot: &Bound<'py, Snapshot>,
    inventory: &Bound<'py, Inventory>,
    indices: &Bound<'py, PyAny>,
    api_version: &str,
    fmt: &str,
    single: bool,
    now_s: f64,
) -> PyResult<Bound<'py, PyBytes>> {
    encode(
        py,
        Kind::Node,
        snapshot,
        inventory,
        indices,
        api_version,
        fmt,
        single,
        now_s,
    )
}

/// A PodMetricsList (or one PodMetrics if `single`) for the given indices.
#[pyfunction]
#[pyo3(signature = (snapshot, inventory, indices, *, api_version, fmt, single, now_s))]
#[allow(clippy::too_many_arguments)]
fn encode_pods<'py>(
    py: Python<'py>,
    snapshot: &Bound<'py, Snapshot>,
    inventory: &Bound<'py, Inventory>,
    indices: &Bound<'py, PyAny>,
    api_version: &str,
    fmt: &str,
    single: bool,
    now_s: f64,
) -> PyResult<Bound<'py, PyBytes>> {
    encode(
        py,
        Kind::Pod,
        snapshot,
        inventory,
        indices,
        api_version,
        fmt,
        single,
        now_s,
    )
}

/// Build all of a snapshot's cached response fragments for `fmt` now, with
/// the GIL released (e.g. from a worker thread right after each scrape), so
/// the first full list served from it is as fast as the next ones.
#[pyfunction]
#[pyo3(signature = (snapshot, fmt="protobuf"))]
fn warm_cache(py: Python<'_>, snapshot: &Bound<'_, Snapshot>, fmt: &str) -> PyResult<()> {
    let format = Format::parse(fmt).ok_or_else(|| {
        PyValueError::new_err(format!(
            "fmt must be \"json\", \"protobuf\", \"table\", \"table-object\" or \"table-none\", got {fmt:?}"
        ))
    })?;
    let snap = snapshot.get().inner.clone();
    py.detach(|| {
        guarded("warm_cache", || {
            core_encode::cache_for(&snap).warm(&snap, format)
        })
    })
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
    m.add("SelectorError", m.py().get_type::<SelectorError>())?;
    m.add_function(wrap_pyfunction!(select_nodes, m)?)?;
    m.add_function(wrap_pyfunction!(select_pods, m)?)?;
    m.add_function(wrap_pyfunction!(encode_nodes, m)?)?;
    m.add_function(wrap_pyfunction!(encode_pods, m)?)?;
    m.add_function(wrap_pyfunction!(warm_cache, m)?)?;
    m.add_function(wrap_pyfunction!(format_cpu, m)?)?;
    m.add_function(wrap_pyfunction!(format_memory, m)?)?;
    m.add_function(wrap_pyfunction!(format_duration, m)?)?;
    Ok(())
}
