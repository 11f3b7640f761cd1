//! `View`, `Query`, `Body` and the selector parsers: the Python door to
//! `kubemetrics_core::{view, encode, selector}`.
//!
//! One door for requests: `view.query(...)` parses the selectors and plans
//! the selection (cheap, and it says how much work the rest is),
//! `query.respond(...)` selects and plans the response, and the `Body` it
//! returns hands out bounded chunks. Work proportional to the answer runs
//! with the GIL released; a panic never crosses into Python.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use kubemetrics_core::encode::{self, ApiVersion, Body as CoreBody, Format, Request, Served};
use kubemetrics_core::selector::{
    parse_field_terms, FieldSelector, LabelSelector, ObjectKind, Op, SelectorError as CoreError,
};
use kubemetrics_core::view::{Kind, Query as CoreQuery};
use numpy::PyArray1;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::guarded;

pyo3::create_exception!(
    kubemetrics,
    SelectorError,
    PyValueError,
    "A malformed label/field selector or an unsupported field; the message suits a 400 Status."
);

fn selector_err(e: CoreError) -> PyErr {
    SelectorError::new_err(e.0)
}

fn kind(s: &str) -> PyResult<Kind> {
    match s {
        "nodes" => Ok(Kind::Node),
        "pods" => Ok(Kind::Pod),
        other => Err(PyValueError::new_err(format!(
            "kind must be \"nodes\" or \"pods\", got {other:?}"
        ))),
    }
}

fn request(
    api_version: &str,
    fmt: &str,
    table_version: &str,
    single: bool,
    now_s: f64,
) -> PyResult<Request> {
    let api_version = ApiVersion::parse(api_version).ok_or_else(|| {
        PyValueError::new_err(format!(
            "api_version must be \"v1beta1\" or \"v1\", got {api_version:?}"
        ))
    })?;
    let format = Format::parse(fmt, table_version).ok_or_else(|| {
        PyValueError::new_err(format!(
            "fmt must be \"json\", \"protobuf\", \"table\", \"table-object\" or \"table-none\" \
             and table_version \"v1\" or \"v1beta1\", got {fmt:?}, {table_version:?}"
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

fn encode_err(e: encode::EncodeError) -> PyErr {
    PyRuntimeError::new_err(format!("internal error encoding a response (a bug): {e}"))
}

fn ids_array<'py>(py: Python<'py>, ids: &[u32]) -> Bound<'py, PyArray1<i64>> {
    PyArray1::from_vec(py, ids.iter().map(|&i| i64::from(i)).collect())
}

/// What the API serves for one scrape cycle (from `Snapshot.view`).
#[pyclass(module = "kubemetrics._native", name = "View", frozen)]
pub struct View {
    served: Arc<Served>,
}

impl View {
    pub(crate) fn new(served: Arc<Served>) -> Self {
        View { served }
    }

    pub(crate) fn served(&self) -> &Arc<Served> {
        &self.served
    }
}

/// A parsed list request against one view.
pub(crate) struct Parsed {
    kind: Kind,
    namespace: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Parsed {
    pub(crate) fn new(
        kind_name: &str,
        namespace: Option<&str>,
        label_selector: &str,
        field_selector: &str,
    ) -> PyResult<Parsed> {
        let kind = kind(kind_name)?;
        let object = match kind {
            Kind::Node => ObjectKind::Node,
            Kind::Pod => ObjectKind::Pod,
        };
        Ok(Parsed {
            kind,
            namespace: match kind {
                Kind::Pod => namespace.map(str::to_string),
                Kind::Node => None,
            },
            labels: LabelSelector::parse(label_selector).map_err(selector_err)?,
            fields: FieldSelector::parse(field_selector, object).map_err(selector_err)?,
        })
    }

    pub(crate) fn kind(&self) -> Kind {
        self.kind
    }

    pub(crate) fn query(&self) -> CoreQuery<'_> {
        CoreQuery {
            namespace: self.namespace.as_deref(),
            labels: &self.labels,
            fields: &self.fields,
        }
    }
}

#[pymethods]
impl View {
    /// A list request: `kind` "nodes" or "pods" (`namespace` for a namespaced
    /// pod list). Raises SelectorError for a bad selector.
    #[pyo3(signature = (kind, namespace=None, label_selector="", field_selector=""))]
    fn query(
        &self,
        py: Python<'_>,
        kind: &str,
        namespace: Option<&str>,
        label_selector: &str,
        field_selector: &str,
    ) -> PyResult<Query> {
        let parsed = Parsed::new(kind, namespace, label_selector, field_selector)?;
        let served = self.served.clone();
        let cost =
            py.detach(|| guarded("query", || served.view().cost(parsed.kind, &parsed.query())))?;
        Ok(Query {
            served,
            parsed,
            cost,
        })
    }

    /// One served object (`namespace` is ignored for nodes), or None when
    /// this view does not serve it.
    #[pyo3(signature = (kind, namespace, name, *, api_version, fmt, now_s, table_version="v1", gzip=false))]
    #[allow(clippy::too_many_arguments)]
    fn get(
        &self,
        py: Python<'_>,
        kind: &str,
        namespace: &str,
        name: &str,
        api_version: &str,
        fmt: &str,
        now_s: f64,
        table_version: &str,
        gzip: bool,
    ) -> PyResult<Option<Body>> {
        let kind = self::kind(kind)?;
        let req = request(api_version, fmt, table_version, true, now_s)?;
        let served = &self.served;
        let body = py.detach(|| {
            guarded("get", || {
                encode::get(served, kind, namespace, name, &req, gzip)
            })
        })?;
        Ok(body.map_err(encode_err)?.map(Body::new))
    }

    /// Bytes the view and its fragments hold (the snapshot's columns aside).
    fn heap_bytes(&self) -> usize {
        self.served.heap_bytes()
    }

    fn __repr__(&self) -> String {
        let v = self.served.view();
        format!(
            "View(nodes={}, pods={})",
            v.len(Kind::Node),
            v.len(Kind::Pod)
        )
    }
}

/// A parsed list request: `cost` says how many candidates selecting it
/// examines (small: answer inline; large: worth a worker thread).
#[pyclass(module = "kubemetrics._native", name = "Query", frozen)]
pub struct Query {
    served: Arc<Served>,
    parsed: Parsed,
    cost: usize,
}

#[pymethods]
impl Query {
    #[getter]
    fn cost(&self) -> usize {
        self.cost
    }

    /// Select and plan the response (GIL released): a list in `fmt`
    /// ("json" | "protobuf" | "table" | "table-object" | "table-none") for
    /// `api_version` ("v1beta1" | "v1"), Tables of `table_version`
    /// meta.k8s.io; creationTimestamp = floor(now_s); gzip-compressed when
    /// `gzip` (the client accepts it) and the body is large enough.
    #[pyo3(signature = (*, api_version, fmt, now_s, table_version="v1", gzip=false))]
    fn respond(
        &self,
        py: Python<'_>,
        api_version: &str,
        fmt: &str,
        now_s: f64,
        table_version: &str,
        gzip: bool,
    ) -> PyResult<Body> {
        let req = request(api_version, fmt, table_version, false, now_s)?;
        let body = py.detach(|| {
            guarded("respond", || {
                encode::list(
                    &self.served,
                    self.parsed.kind,
                    &self.parsed.query(),
                    &req,
                    gzip,
                )
            })
        })?;
        Ok(Body::new(body.map_err(encode_err)?))
    }

    /// The selected item indices (into the snapshot's columns), sorted.
    fn select<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray1<i64>>> {
        let ids = py.detach(|| {
            guarded("select", || {
                self.served
                    .view()
                    .select(self.parsed.kind, &self.parsed.query())
            })
        })?;
        Ok(ids_array(py, &ids))
    }
}

/// A response body, handed out in bounded chunks.
#[pyclass(module = "kubemetrics._native", name = "Body", frozen)]
pub struct Body {
    inner: Mutex<CoreBody>,
    length: usize,
    items: usize,
    gzip: bool,
}

impl Body {
    fn new(b: CoreBody) -> Self {
        Body {
            length: b.response().len(),
            items: b.response().ids().len(),
            gzip: b.is_gzip(),
            inner: Mutex::new(b),
        }
    }

    fn lock(&self) -> MutexGuard<'_, CoreBody> {
        // A panic mid-chunk (a bug) leaves at worst a truncated body, which
        // the caller sees as an error; the lock itself stays usable.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[pymethods]
impl Body {
    /// The exact size of the uncompressed body.
    #[getter]
    fn length(&self) -> usize {
        self.length
    }

    /// How many objects it holds.
    #[getter]
    fn items(&self) -> usize {
        self.items
    }

    /// Whether the chunks are gzip-compressed (`Content-Encoding: gzip`).
    #[getter]
    fn gzip(&self) -> bool {
        self.gzip
    }

    /// `timestamp_ms` of every object in the body (for the freshness metric).
    fn timestamps_ms<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<i64>> {
        let ts = {
            let b = self.lock();
            let r = b.response();
            r.served().view().timestamps(r.kind(), r.ids())
        };
        PyArray1::from_vec(py, ts)
    }

    /// The next chunk of about `limit` bytes (default `CHUNK_BYTES`; produced
    /// with the GIL released), or `b""` once the body is complete.
    #[pyo3(signature = (limit=encode::CHUNK_BYTES))]
    fn read<'py>(&self, py: Python<'py>, limit: usize) -> PyResult<Bound<'py, PyBytes>> {
        let chunk = py.detach(|| guarded("read", || self.lock().next_chunk_of(limit)))?;
        let chunk = chunk.map_err(encode_err)?.unwrap_or_default();
        Ok(PyBytes::new(py, &chunk))
    }

    /// Everything not read yet, in one `bytes`.
    fn read_all<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let all = py.detach(|| {
            guarded("read_all", || {
                let mut b = self.lock();
                let mut out = Vec::with_capacity(if b.is_gzip() { 0 } else { self.length });
                while let Some(c) = b.next_chunk()? {
                    out.extend_from_slice(&c);
                }
                Ok(out)
            })
        })?;
        Ok(PyBytes::new(py, &all.map_err(encode_err)?))
    }
}

fn op_name(op: Op) -> &'static str {
    // labels.Operator's strings
    match op {
        Op::In => "in",
        Op::NotIn => "notin",
        Op::Equals => "=",
        Op::NotEquals => "!=",
        Op::Exists => "exists",
        Op::DoesNotExist => "!",
        Op::GreaterThan => "gt",
        Op::LessThan => "lt",
    }
}

/// A label selector's requirements as (key, operator, values), sorted by key;
/// raises SelectorError as the API would answer it.
#[pyfunction]
fn parse_label_selector(selector: &str) -> PyResult<Vec<(String, String, Vec<String>)>> {
    let s = LabelSelector::parse(selector).map_err(selector_err)?;
    Ok(s.requirements()
        .iter()
        .map(|r| {
            (
                r.key().to_string(),
                op_name(r.op()).to_string(),
                r.values().to_vec(),
            )
        })
        .collect())
}

/// A field selector's terms as (field, "=" or "!=", value), for any field
/// names, in the order kube-apiserver keeps them (sorted); raises
/// SelectorError on a malformed selector.
#[pyfunction]
fn parse_field_selector(selector: &str) -> PyResult<Vec<(String, String, String)>> {
    Ok(parse_field_terms(selector)
        .map_err(selector_err)?
        .into_iter()
        .map(|t| {
            (
                t.field,
                if t.equal { "=" } else { "!=" }.to_string(),
                t.value,
            )
        })
        .collect())
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("SelectorError", m.py().get_type::<SelectorError>())?;
    m.add_class::<View>()?;
    m.add_class::<Query>()?;
    m.add_class::<Body>()?;
    m.add_function(wrap_pyfunction!(parse_label_selector, m)?)?;
    m.add_function(wrap_pyfunction!(parse_field_selector, m)?)?;
    m.add("CHUNK_BYTES", encode::CHUNK_BYTES)?;
    Ok(())
}
