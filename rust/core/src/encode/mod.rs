//! metrics.k8s.io response bodies from a view, streamed in bounded chunks.
//!
//! [`Served`] is what the API serves for one scrape cycle: a [`View`] plus,
//! for every served item, its formatted values ([`values::Values`]: the
//! canonical quantity, duration and timestamp text all three formats share,
//! the part that costs CPU). All of it is built once, off the request path,
//! before the cycle publishes it; a request frames the values as JSON,
//! protobuf or a Table with the names, the time and the labels.
//!
//! A request is then a [`Response`]: the selected items and the request's
//! parameters, with its exact length known up front (protobuf needs it in
//! the envelope; HTTP can send it as Content-Length). [`Response::fill`]
//! writes the next bounded piece, so a slow reader holds one chunk, not the
//! whole body; [`Body`] adds gzip on top when the client accepts it and the
//! body is large enough to be worth it.

pub mod gzip;
pub mod json;
pub mod protobuf;
pub mod table;
pub mod values;

use std::fmt;
use std::sync::Arc;

use crate::inventory::{LabelSet, Shared};
use crate::snapshot::Snapshot;
use crate::view::{Kind, Query, View, ViewError};
use crate::wire::proto::write_time_field;
use crate::wire::quantity::write_rfc3339;
use values::Values;

/// Bodies are produced and written in chunks of about this many bytes (one
/// item may overshoot it): large enough that per-chunk overhead (a write
/// call, a TLS record batch, a thread hop for gzip) is amortised, small
/// enough that a slow reader holds little. See docs/PERFORMANCE.md.
pub const CHUNK_BYTES: usize = 128 * 1024;

/// Bodies at least this large are gzipped when the client accepts it
/// (k8s.io/apiserver's `defaultGzipThresholdBytes`).
pub const GZIP_THRESHOLD: usize = 128 * 1024;

/// gzip level: kube-apiserver's choice (`defaultGzipContentEncodingLevel`),
/// confirmed by measurement on our bodies (docs/PERFORMANCE.md).
pub const GZIP_LEVEL: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiVersion {
    V1beta1,
    V1,
}

impl ApiVersion {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "v1beta1" => Some(Self::V1beta1),
            "v1" => Some(Self::V1),
            _ => None,
        }
    }

    pub fn group_version(self) -> &'static str {
        match self {
            Self::V1beta1 => "metrics.k8s.io/v1beta1",
            Self::V1 => "metrics.k8s.io/v1",
        }
    }
}

/// A Table row's `object`, as the request's `includeObject` asks
/// (kube-apiserver's `asTable`): `Metadata` (the default) a
/// `PartialObjectMetadata`, `Object` the whole item, `None` null.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowObject {
    Metadata,
    Object,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Protobuf,
    /// The server-side Table of apiVersion `meta.k8s.io/v1` (or `v1beta1`).
    Table {
        object: RowObject,
        v1beta1: bool,
    },
}

impl Format {
    /// `json`, `protobuf`, `table` (rows carry metadata), `table-object`,
    /// `table-none`; `table_version` (`v1` or `v1beta1`) applies to Tables.
    pub fn parse(s: &str, table_version: &str) -> Option<Self> {
        let v1beta1 = match table_version {
            "v1" => false,
            "v1beta1" => true,
            _ => return None,
        };
        let object = match s {
            "json" => return Some(Self::Json),
            "protobuf" => return Some(Self::Protobuf),
            "table" => RowObject::Metadata,
            "table-object" => RowObject::Object,
            "table-none" => RowObject::None,
            _ => return None,
        };
        Some(Self::Table { object, v1beta1 })
    }
}

/// What to encode besides the items themselves.
#[derive(Debug, Clone, Copy)]
pub struct Request {
    pub api_version: ApiVersion,
    pub format: Format,
    /// One object (kind `NodeMetrics`/`PodMetrics`) instead of a list.
    pub single: bool,
    /// The response time, Unix seconds: every item's `creationTimestamp`.
    pub now_s: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EncodeError {
    IndexOutOfRange {
        index: u32,
        len: usize,
    },
    NotSingle(usize),
    /// The snapshot's columns disagree; a bug in whoever built it.
    Inconsistent(&'static str),
    /// Values beyond what 32-bit offsets address (~4 GiB).
    TooLarge,
    Compress(String),
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::IndexOutOfRange { index, len } => {
                write!(f, "index {index} out of range for {len} items")
            }
            Self::NotSingle(n) => write!(f, "a single object needs exactly one item, got {n}"),
            Self::Inconsistent(what) => write!(f, "inconsistent snapshot: {what}"),
            Self::TooLarge => f.write_str("formatted values exceed 4 GiB"),
            Self::Compress(e) => write!(f, "gzip: {e}"),
        }
    }
}

impl std::error::Error for EncodeError {}

impl From<ViewError> for EncodeError {
    fn from(e: ViewError) -> Self {
        EncodeError::Inconsistent(e.0)
    }
}

// ----------------------------------------------------------------- served --

/// One cycle's served view with every item's values formatted.
#[derive(Debug)]
pub struct Served {
    view: View,
    nodes: Values,
    pods: Values,
}

impl Served {
    /// The view of `snap` with the inventory as it is now, values formatted.
    pub fn build(snap: Arc<Snapshot>, inv: &Shared) -> Result<Served, EncodeError> {
        Self::from_view(View::build(snap, inv)?)
    }

    pub fn from_view(view: View) -> Result<Served, EncodeError> {
        let nodes = Values::build(&view, Kind::Node)?;
        let pods = Values::build(&view, Kind::Pod)?;
        Ok(Served { view, nodes, pods })
    }

    pub fn view(&self) -> &View {
        &self.view
    }

    fn values(&self, kind: Kind) -> &Values {
        match kind {
            Kind::Node => &self.nodes,
            Kind::Pod => &self.pods,
        }
    }

    /// Heap bytes of the view and its values (not the snapshot's columns).
    pub fn heap_bytes(&self) -> usize {
        self.view.heap_bytes() + self.nodes.heap_bytes() + self.pods.heap_bytes()
    }
}

// --------------------------------------------------------------- response --

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Head,
    Item(usize),
    Tail,
    Done,
}

/// One response: the selected items of a served view in one format, written
/// piece by piece. Holds the view (an `Arc`), never a copy of its data.
#[derive(Debug)]
pub struct Response {
    served: Arc<Served>,
    kind: Kind,
    ids: Vec<u32>,
    req: Request,
    /// RFC 3339 text of `now_s` (JSON, Table).
    now: Vec<u8>,
    /// ObjectMeta.creationTimestamp as protobuf field 8.
    ts: Vec<u8>,
    /// Bytes of all items (the protobuf envelope carries it).
    items_len: usize,
    len: usize,
    stage: Stage,
}

impl Response {
    pub fn new(
        served: Arc<Served>,
        kind: Kind,
        ids: Vec<u32>,
        req: &Request,
    ) -> Result<Response, EncodeError> {
        let len = served.view.len(kind);
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= len) {
            return Err(EncodeError::IndexOutOfRange { index: bad, len });
        }
        if req.single && ids.len() != 1 {
            return Err(EncodeError::NotSingle(ids.len()));
        }
        let mut now = Vec::with_capacity(20);
        write_rfc3339(&mut now, req.now_s);
        let mut ts = Vec::with_capacity(12);
        write_time_field(&mut ts, 8, req.now_s);
        let mut r = Response {
            served,
            kind,
            ids,
            req: *req,
            now,
            ts,
            items_len: 0,
            len: 0,
            stage: Stage::Head,
        };
        r.items_len = (0..r.ids.len()).map(|k| r.item_len(k)).sum();
        let mut frame = 0;
        r.head(&mut |b| frame += b.len());
        r.tail(&mut |b| frame += b.len());
        r.len = frame + r.items_len;
        Ok(r)
    }

    /// The exact number of bytes the response writes.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The selected items.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn served(&self) -> &Arc<Served> {
        &self.served
    }

    pub fn is_done(&self) -> bool {
        self.stage == Stage::Done
    }

    /// Appends the next pieces to `out` until it holds at least `limit`
    /// bytes (one item may overshoot) or the response is complete.
    pub fn fill(&mut self, out: &mut Vec<u8>, limit: usize) {
        while out.len() < limit {
            let mut put = |b: &[u8]| out.extend_from_slice(b);
            self.stage = match self.stage {
                Stage::Head => {
                    self.head(&mut put);
                    if self.ids.is_empty() {
                        Stage::Tail
                    } else {
                        Stage::Item(0)
                    }
                }
                Stage::Item(k) => {
                    self.item(k, &mut put);
                    if k + 1 < self.ids.len() {
                        Stage::Item(k + 1)
                    } else {
                        Stage::Tail
                    }
                }
                Stage::Tail => {
                    self.tail(&mut put);
                    Stage::Done
                }
                Stage::Done => return,
            };
        }
    }

    /// The whole (remaining) body.
    pub fn to_vec(mut self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len);
        self.fill(&mut out, usize::MAX);
        out
    }

    fn names(&self) -> (&'static str, &'static str) {
        match self.kind {
            Kind::Node => ("NodeMetrics", "NodeMetricsList"),
            Kind::Pod => ("PodMetrics", "PodMetricsList"),
        }
    }

    fn head<F: FnMut(&[u8])>(&self, put: &mut F) {
        let (item_kind, list_kind) = self.names();
        let gv = self.req.api_version.group_version().as_bytes();
        match self.req.format {
            Format::Json => {
                put(b"{\"kind\":\"");
                if self.req.single {
                    put(item_kind.as_bytes());
                    put(b"\",\"apiVersion\":\"");
                    put(gv);
                    put(b"\",");
                } else {
                    put(list_kind.as_bytes());
                    put(b"\",\"apiVersion\":\"");
                    put(gv);
                    put(b"\",\"metadata\":{},\"items\":[");
                }
            }
            Format::Protobuf => {
                let (kind, raw) = if self.req.single {
                    (item_kind, self.items_len)
                } else {
                    (list_kind, protobuf::EMPTY_LIST_META.len() + self.items_len)
                };
                let mut head = Vec::with_capacity(64);
                protobuf::write_envelope_head(
                    &mut head,
                    self.req.api_version.group_version(),
                    kind,
                    raw,
                );
                put(&head);
                if !self.req.single {
                    put(protobuf::EMPTY_LIST_META);
                }
            }
            Format::Table { v1beta1, .. } => {
                put(&table::head(if v1beta1 { "v1beta1" } else { "v1" }));
            }
        }
    }

    fn tail<F: FnMut(&[u8])>(&self, put: &mut F) {
        match self.req.format {
            // Go's json.Encoder ends every document with a newline.
            Format::Json if self.req.single => put(b"\n"),
            Format::Json => put(b"]}\n"),
            Format::Protobuf => put(protobuf::UNKNOWN_TAIL),
            Format::Table { .. } => put(table::TAIL),
        }
    }

    /// Bytes of the `k`-th selected item: arithmetic on the sizes the view
    /// recorded, which [`Response::item`] writes exactly (tested).
    fn item_len(&self, k: usize) -> usize {
        let i = self.ids[k] as usize;
        let kind = self.kind;
        let view = &self.served.view;
        let sizes = self.served.values(kind).sizes(i);
        let labels: &LabelSet = view.labels(kind, i);
        let json_meta = sizes.json_meta as usize + self.now.len() + labels.json().len();
        let json_rest = sizes.json_rest as usize;
        match self.req.format {
            Format::Json => {
                let open = match (self.req.single, k) {
                    (true, _) => 0,
                    (false, 0) => 1,
                    (false, _) => 2,
                };
                open + json_meta + json_rest
            }
            Format::Protobuf => {
                let meta = protobuf::meta_len(view.snapshot(), kind, i, &self.ts, labels);
                let msg = protobuf::field_len(meta) + sizes.proto_tail as usize;
                if self.req.single {
                    msg
                } else {
                    protobuf::field_len(msg)
                }
            }
            Format::Table { object, v1beta1 } => {
                let sep = usize::from(k > 0);
                let object = match object {
                    RowObject::Metadata => metadata_object_head(v1beta1).len() + json_meta + 2,
                    RowObject::Object => {
                        r#"{"kind":"","apiVersion":"","#.len()
                            + self.names().0.len()
                            + self.req.api_version.group_version().len()
                            + json_meta
                            + json_rest
                            + 1
                    }
                    RowObject::None => 5,
                };
                sep + sizes.table_cells as usize + object
            }
        }
    }

    /// The `k`-th selected item, piece by piece.
    fn item<F: FnMut(&[u8])>(&self, k: usize, put: &mut F) {
        let i = self.ids[k] as usize;
        let kind = self.kind;
        let view = &self.served.view;
        let snap = view.snapshot();
        let values = self.served.values(kind).item(i);
        let labels: &LabelSet = view.labels(kind, i);
        match self.req.format {
            Format::Json => {
                if !self.req.single {
                    put(if k > 0 { b",{" } else { b"{" });
                }
                json::metadata(put, snap, kind, i, &self.now, labels);
                json::rest(put, snap, kind, i, values);
            }
            Format::Protobuf => {
                let meta = protobuf::meta_len(snap, kind, i, &self.ts, labels);
                let tail = self.served.values(kind).sizes(i).proto_tail as usize;
                let list = !self.req.single;
                protobuf::item(
                    put, snap, kind, i, &self.ts, labels, values, list, meta, tail,
                );
            }
            Format::Table { object, v1beta1 } => {
                if k > 0 {
                    put(b",");
                }
                table::cells(put, snap, kind, i, values);
                match object {
                    RowObject::Metadata => {
                        put(metadata_object_head(v1beta1));
                        json::metadata(put, snap, kind, i, &self.now, labels);
                        put(b"}}");
                    }
                    RowObject::Object => {
                        put(b"{\"kind\":\"");
                        put(self.names().0.as_bytes());
                        put(b"\",\"apiVersion\":\"");
                        put(self.req.api_version.group_version().as_bytes());
                        put(b"\",");
                        json::metadata(put, snap, kind, i, &self.now, labels);
                        json::rest(put, snap, kind, i, values);
                        put(b"}");
                    }
                    RowObject::None => put(b"null}"),
                }
            }
        }
    }
}

/// The start of a Table row's `PartialObjectMetadata` object.
fn metadata_object_head(v1beta1: bool) -> &'static [u8] {
    if v1beta1 {
        b"{\"kind\":\"PartialObjectMetadata\",\"apiVersion\":\"meta.k8s.io/v1beta1\","
    } else {
        b"{\"kind\":\"PartialObjectMetadata\",\"apiVersion\":\"meta.k8s.io/v1\","
    }
}

// ------------------------------------------------------------------- body --

/// A response as it goes on the wire: plain, or gzip-compressed.
#[derive(Debug)]
pub enum Body {
    Plain(Response),
    Gzip(Box<gzip::Gzip>),
}

impl Body {
    /// gzip when the client accepts it and the body is at least
    /// [`GZIP_THRESHOLD`] bytes, as kube-apiserver decides.
    pub fn new(response: Response, accepts_gzip: bool) -> Body {
        if accepts_gzip && response.len() >= GZIP_THRESHOLD {
            Body::Gzip(Box::new(gzip::Gzip::new(response, GZIP_LEVEL)))
        } else {
            Body::Plain(response)
        }
    }

    pub fn response(&self) -> &Response {
        match self {
            Body::Plain(r) => r,
            Body::Gzip(g) => g.response(),
        }
    }

    pub fn is_gzip(&self) -> bool {
        matches!(self, Body::Gzip(_))
    }

    /// The next chunk (about [`CHUNK_BYTES`]); `None` once complete.
    pub fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, EncodeError> {
        self.next_chunk_of(CHUNK_BYTES)
    }

    /// The next chunk of about `limit` bytes (at least 1).
    pub fn next_chunk_of(&mut self, limit: usize) -> Result<Option<Vec<u8>>, EncodeError> {
        let limit = limit.max(1);
        match self {
            Body::Plain(r) => {
                if r.is_done() {
                    return Ok(None);
                }
                let mut out = Vec::with_capacity(limit.min(1 << 24) + 4096);
                r.fill(&mut out, limit);
                Ok(Some(out))
            }
            Body::Gzip(g) => g.next_chunk(limit),
        }
    }
}

/// A list: the items of `kind` matching `query`, as a body.
pub fn list(
    served: &Arc<Served>,
    kind: Kind,
    query: &Query<'_>,
    req: &Request,
    accepts_gzip: bool,
) -> Result<Body, EncodeError> {
    let ids = served.view.select(kind, query);
    let response = Response::new(served.clone(), kind, ids, req)?;
    Ok(Body::new(response, accepts_gzip))
}

/// One served object (`namespace` only for pods), or `None` when this view
/// does not serve it.
pub fn get(
    served: &Arc<Served>,
    kind: Kind,
    namespace: &str,
    name: &str,
    req: &Request,
    accepts_gzip: bool,
) -> Result<Option<Body>, EncodeError> {
    let found = match kind {
        Kind::Node => served.view.node(name),
        Kind::Pod => served.view.pod(namespace, name),
    };
    let Some(i) = found else {
        return Ok(None);
    };
    let response = Response::new(served.clone(), kind, vec![i as u32], req)?;
    Ok(Some(Body::new(response, accepts_gzip)))
}

#[cfg(test)]
mod tests;
