//! metrics.k8s.io response bodies, straight from a [`Snapshot`]'s columns.
//!
//! Per-item fragments (everything but `creationTimestamp` and labels) are
//! built lazily, 256 items at a time, once per snapshot and format, and kept
//! in a cache tied to the snapshot's identity; a response is then mostly
//! memcpy of fragments with the request time and the pre-encoded labels
//! spliced in.

pub mod json;
pub mod protobuf;
pub mod table;

use std::fmt;
use std::mem::MaybeUninit;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};

use crate::inventory::{Inventory, LabelSet, NamespacePods};
use crate::snapshot::Snapshot;
use crate::wire::proto::varint;
use crate::wire::quantity::write_rfc3339;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Protobuf,
    /// The server-side Table; what each row's `object` holds.
    Table(RowObject),
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

impl Format {
    /// `json`, `protobuf`, `table` (rows carry metadata), `table-object`,
    /// `table-none`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "json" => Some(Self::Json),
            "protobuf" => Some(Self::Protobuf),
            "table" => Some(Self::Table(RowObject::Metadata)),
            "table-object" => Some(Self::Table(RowObject::Object)),
            "table-none" => Some(Self::Table(RowObject::None)),
            _ => None,
        }
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
        index: i64,
        len: usize,
    },
    NotSingle(usize),
    /// The snapshot's columns disagree in length or container ranges; a bug
    /// in whoever built it, reported instead of panicking.
    Inconsistent(&'static str),
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::IndexOutOfRange { index, len } => {
                write!(f, "index {index} out of range for {len} items")
            }
            Self::NotSingle(n) => write!(f, "single=True needs exactly one index, got {n}"),
            Self::Inconsistent(what) => write!(f, "inconsistent snapshot: {what}"),
        }
    }
}

impl std::error::Error for EncodeError {}

/// Checks indices (e.g. from numpy) against a length.
pub fn check_indices(indices: &[i64], len: usize) -> Result<Vec<usize>, EncodeError> {
    indices
        .iter()
        .map(|&i| match usize::try_from(i) {
            Ok(u) if u < len => Ok(u),
            _ => Err(EncodeError::IndexOutOfRange { index: i, len }),
        })
        .collect()
}

/// Labels of the given snapshot nodes from the inventory (empty when unknown).
pub fn node_labels(snap: &Snapshot, inv: &Inventory, indices: &[usize]) -> Vec<Arc<LabelSet>> {
    indices
        .iter()
        .map(|&i| {
            snap.nodes
                .name
                .get(i)
                .and_then(|n| inv.node_labels(n))
                .cloned()
                .unwrap_or_else(LabelSet::empty)
        })
        .collect()
}

/// Labels of the given snapshot pods from the inventory (empty when unknown).
pub fn pod_labels(snap: &Snapshot, inv: &Inventory, indices: &[usize]) -> Vec<Arc<LabelSet>> {
    let p = &snap.pods;
    indices
        .iter()
        .map(|&i| {
            match (p.namespace.get(i), p.name.get(i)) {
                (Some(ns), Some(name)) => inv.pod_labels(ns, name).cloned(),
                _ => None,
            }
            .unwrap_or_else(LabelSet::empty)
        })
        .collect()
}

// ------------------------------------------------------------------ cache --

const CHUNK: usize = 256;

type Builder = fn(&Snapshot, usize, &mut Vec<u8>) -> usize;

struct Chunk {
    buf: Vec<u8>,
    /// Per item: (start, split, end) in `buf`.
    bounds: Vec<(usize, usize, usize)>,
}

/// Lazily built fragments of one kind of item in one format.
struct FragmentCache {
    chunks: Box<[OnceLock<Chunk>]>,
    len: usize,
    build: Builder,
}

impl FragmentCache {
    fn new(len: usize, build: Builder) -> Self {
        FragmentCache {
            chunks: (0..len.div_ceil(CHUNK)).map(|_| OnceLock::new()).collect(),
            len,
            build,
        }
    }

    /// (head, tail) of item `i`; `i < len` is checked by the caller.
    fn get<'a>(&'a self, snap: &Snapshot, i: usize) -> (&'a [u8], &'a [u8]) {
        let c = i / CHUNK;
        let chunk = self.chunks[c].get_or_init(|| {
            let lo = c * CHUNK;
            let hi = (lo + CHUNK).min(self.len);
            let mut buf = Vec::with_capacity((hi - lo) * 192);
            let mut bounds = Vec::with_capacity(hi - lo);
            for item in lo..hi {
                let start = buf.len();
                let split = (self.build)(snap, item, &mut buf);
                bounds.push((start, split, buf.len()));
            }
            Chunk { buf, bounds }
        });
        let (start, split, end) = chunk.bounds[i - c * CHUNK];
        (&chunk.buf[start..split], &chunk.buf[split..end])
    }
}

/// Labels of every snapshot item (None: unknown to the inventory), resolved
/// once per inventory version so full lists need no per-item hash lookups.
pub type Resolved = Arc<[Option<Arc<LabelSet>>]>;

type ResolvedSlot = Mutex<Option<((u64, u64), Resolved)>>;

/// Everything cached for one snapshot.
pub struct SnapshotCache {
    shape: Result<(), EncodeError>,
    node_labels: ResolvedSlot,
    pod_labels: ResolvedSlot,
    nodes_json: FragmentCache,
    nodes_proto: FragmentCache,
    pods_json: FragmentCache,
    pods_proto: FragmentCache,
}

impl SnapshotCache {
    fn new(snap: &Snapshot) -> Self {
        let nodes = snap.nodes.len();
        let pods = snap.pods.len();
        SnapshotCache {
            shape: check_shape(snap),
            node_labels: Mutex::new(None),
            pod_labels: Mutex::new(None),
            nodes_json: FragmentCache::new(nodes, json::node_fragment),
            nodes_proto: FragmentCache::new(nodes, protobuf::node_fragment),
            pods_json: FragmentCache::new(pods, json::pod_fragment),
            pods_proto: FragmentCache::new(pods, protobuf::pod_fragment),
        }
    }
}

impl SnapshotCache {
    /// Build every fragment of `format` now (e.g. in the background right
    /// after a scrape), so the first full list does not pay for it.
    pub fn warm(&self, snap: &Snapshot, format: Format) {
        if self.shape.is_err() {
            return;
        }
        let caches = match format {
            Format::Json => [&self.nodes_json, &self.pods_json],
            Format::Protobuf => [&self.nodes_proto, &self.pods_proto],
            Format::Table(_) => return,
        };
        for c in caches {
            for i in (0..c.len).step_by(CHUNK) {
                c.get(snap, i);
            }
        }
    }

    /// Labels of every node, from `inv` (cached while `inv` is unchanged).
    pub fn resolved_node_labels(&self, snap: &Snapshot, inv: &Inventory) -> Resolved {
        resolve(&self.node_labels, inv, || {
            snap.nodes
                .name
                .iter()
                .map(|n| inv.node_labels(n).cloned())
                .collect()
        })
    }

    /// Labels of every pod, from `inv` (cached while `inv` is unchanged).
    pub fn resolved_pod_labels(&self, snap: &Snapshot, inv: &Inventory) -> Resolved {
        resolve(&self.pod_labels, inv, || {
            let p = &snap.pods;
            let mut current: Option<(&str, Option<&NamespacePods>)> = None;
            p.namespace
                .iter()
                .zip(&p.name)
                .map(|(ns, name)| {
                    let map = match current {
                        Some((cached, map)) if cached == ns.as_ref() => map,
                        _ => {
                            let map = inv.namespace(ns);
                            current = Some((ns, map));
                            map
                        }
                    };
                    map.and_then(|m| m.get(name.as_ref())).cloned()
                })
                .collect()
        })
    }
}

fn resolve(slot: &ResolvedSlot, inv: &Inventory, build: impl FnOnce() -> Resolved) -> Resolved {
    let version = inv.version();
    let mut guard = slot.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((v, r)) = guard.as_ref() {
        if *v == version {
            return r.clone();
        }
    }
    let r = build();
    *guard = Some((version, r.clone()));
    r
}

/// Every column has the right length and container ranges are in bounds,
/// so the encoders can index without checks failing.
fn check_shape(s: &Snapshot) -> Result<(), EncodeError> {
    let n = &s.nodes;
    let len = n.name.len();
    if [
        n.cpu_nanocores.len(),
        n.memory_bytes.len(),
        n.timestamp_ms.len(),
        n.window_ms.len(),
    ]
    .iter()
    .any(|&l| l != len)
    {
        return Err(EncodeError::Inconsistent("node columns differ in length"));
    }
    let p = &s.pods;
    let len = p.name.len();
    if [
        p.namespace.len(),
        p.node.len(),
        p.timestamp_ms.len(),
        p.window_ms.len(),
    ]
    .iter()
    .any(|&l| l != len)
    {
        return Err(EncodeError::Inconsistent("pod columns differ in length"));
    }
    if p.container_start.len() != len + 1 {
        return Err(EncodeError::Inconsistent(
            "container_start is not pods + 1 long",
        ));
    }
    let c = &s.containers;
    let clen = c.name.len();
    if c.cpu_nanocores.len() != clen || c.memory_bytes.len() != clen {
        return Err(EncodeError::Inconsistent(
            "container columns differ in length",
        ));
    }
    if p.container_start.windows(2).any(|w| w[0] > w[1])
        || p.container_start
            .last()
            .is_some_and(|&e| e as usize != clen)
    {
        return Err(EncodeError::Inconsistent(
            "container ranges out of order or bounds",
        ));
    }
    Ok(())
}

/// Caches of the last few snapshots, keyed by identity. A `Weak` keeps the
/// allocation (not the data) alive, so an address is never mistaken for a
/// newer snapshot's; dead entries are dropped on the next lookup.
static REGISTRY: Mutex<Vec<(Weak<Snapshot>, Arc<SnapshotCache>)>> = Mutex::new(Vec::new());
const REGISTRY_SIZE: usize = 4;

pub fn cache_for(snap: &Arc<Snapshot>) -> Arc<SnapshotCache> {
    let weak = Arc::downgrade(snap);
    {
        let mut reg = REGISTRY.lock().unwrap_or_else(PoisonError::into_inner);
        reg.retain(|(w, _)| w.strong_count() > 0);
        if let Some((_, c)) = reg.iter().find(|(w, _)| w.ptr_eq(&weak)) {
            return c.clone();
        }
    }
    // Built outside the lock: shape checks are O(n). A racing builder for the
    // same snapshot just loses its copy.
    let cache = Arc::new(SnapshotCache::new(snap));
    let mut reg = REGISTRY.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((_, c)) = reg.iter().find(|(w, _)| w.ptr_eq(&weak)) {
        return c.clone();
    }
    if reg.len() >= REGISTRY_SIZE {
        reg.remove(0);
    }
    reg.push((weak, cache.clone()));
    cache
}

// --------------------------------------------------------------- assembly --

/// Where a response is written: a `Vec`, or a buffer of exactly the planned
/// size (e.g. a Python `bytes` object's, so the body is written once).
pub trait Sink {
    fn put(&mut self, bytes: &[u8]);
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// Fills an uninitialised buffer front to back; never writes past its end.
pub struct FillSink<'b> {
    buf: &'b mut [MaybeUninit<u8>],
    pos: usize,
    overflow: bool,
}

impl<'b> FillSink<'b> {
    pub fn new(buf: &'b mut [MaybeUninit<u8>]) -> Self {
        FillSink {
            buf,
            pos: 0,
            overflow: false,
        }
    }

    /// True when exactly the whole buffer was written (else it must not be read).
    pub fn is_complete(&self) -> bool {
        !self.overflow && self.pos == self.buf.len()
    }
}

impl Sink for FillSink<'_> {
    fn put(&mut self, bytes: &[u8]) {
        let Some(dst) = self.buf.get_mut(self.pos..self.pos + bytes.len()) else {
            self.overflow = true;
            return;
        };
        // SAFETY: `dst` was sliced to exactly `bytes.len()` elements, and a
        // shared `&[u8]` cannot overlap the exclusively borrowed buffer.
        // (MaybeUninit::write_copy_of_slice needs a newer MSRV.)
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                dst.as_mut_ptr().cast::<u8>(),
                bytes.len(),
            );
        }
        self.pos += bytes.len();
    }
}

fn now_text(now_s: i64) -> Vec<u8> {
    let mut v = Vec::with_capacity(20);
    write_rfc3339(&mut v, now_s);
    v
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Node,
    Pod,
}

impl Kind {
    fn names(self) -> (&'static str, &'static str) {
        match self {
            Kind::Node => ("NodeMetrics", "NodeMetricsList"),
            Kind::Pod => ("PodMetrics", "PodMetricsList"),
        }
    }
}

/// One protobuf item: its cached pieces and the lengths around them.
struct ProtoPiece<'a> {
    head: &'a [u8],
    labels: &'a [u8],
    tail: &'a [u8],
    meta_len: usize,
    msg_len: usize,
}

enum Body<'a> {
    /// (head, labels, tail) per item.
    Json(Vec<(&'a [u8], &'a [u8], &'a [u8])>),
    Proto(Vec<ProtoPiece<'a>>),
    /// Built directly (tables: rare and small).
    Bytes(Vec<u8>),
}

/// A response with every piece located and its exact size known, ready to be
/// written into a sink; borrows the snapshot's fragment cache and the labels.
pub struct Plan<'a> {
    kind: Kind,
    req: Request,
    now: Vec<u8>,
    body: Body<'a>,
    len: usize,
}

pub fn plan_nodes<'a>(
    cache: &'a SnapshotCache,
    snap: &'a Snapshot,
    indices: &[usize],
    labels: &[&'a LabelSet],
    req: &Request,
) -> Result<Plan<'a>, EncodeError> {
    plan(cache, snap, Kind::Node, indices, labels, req)
}

pub fn plan_pods<'a>(
    cache: &'a SnapshotCache,
    snap: &'a Snapshot,
    indices: &[usize],
    labels: &[&'a LabelSet],
    req: &Request,
) -> Result<Plan<'a>, EncodeError> {
    plan(cache, snap, Kind::Pod, indices, labels, req)
}

/// Convenience: plan and write into a new `Vec`.
pub fn encode_nodes(
    snap: &Arc<Snapshot>,
    indices: &[usize],
    labels: &[&LabelSet],
    req: &Request,
) -> Result<Vec<u8>, EncodeError> {
    let cache = cache_for(snap);
    Ok(plan_nodes(&cache, snap, indices, labels, req)?.to_vec())
}

/// Convenience: plan and write into a new `Vec`.
pub fn encode_pods(
    snap: &Arc<Snapshot>,
    indices: &[usize],
    labels: &[&LabelSet],
    req: &Request,
) -> Result<Vec<u8>, EncodeError> {
    let cache = cache_for(snap);
    Ok(plan_pods(&cache, snap, indices, labels, req)?.to_vec())
}

fn plan<'a>(
    cache: &'a SnapshotCache,
    snap: &'a Snapshot,
    kind: Kind,
    indices: &[usize],
    labels: &[&'a LabelSet],
    req: &Request,
) -> Result<Plan<'a>, EncodeError> {
    cache.shape.clone()?;
    let len = match kind {
        Kind::Node => snap.nodes.len(),
        Kind::Pod => snap.pods.len(),
    };
    if let Some(&bad) = indices.iter().find(|&&i| i >= len) {
        return Err(EncodeError::IndexOutOfRange {
            index: i64::try_from(bad).unwrap_or(i64::MAX),
            len,
        });
    }
    if req.single && indices.len() != 1 {
        return Err(EncodeError::NotSingle(indices.len()));
    }
    let empty = LabelSet::empty_ref();
    let label_at = |k: usize| -> &'a LabelSet { labels.get(k).copied().unwrap_or(empty) };
    let now = now_text(req.now_s);
    let (item_kind, list_kind) = kind.names();
    let gv = req.api_version.group_version();
    let (body, len) = match req.format {
        Format::Table(object) => {
            let ls: Vec<&LabelSet> = (0..indices.len()).map(label_at).collect();
            let rows = table::Rows {
                object,
                group_version: gv,
                now: &now,
            };
            let b = match kind {
                Kind::Node => table::nodes(snap, indices, &ls, &rows),
                Kind::Pod => table::pods(snap, indices, &ls, &rows),
            };
            let n = b.len();
            (Body::Bytes(b), n)
        }
        Format::Json => {
            let frags = match kind {
                Kind::Node => &cache.nodes_json,
                Kind::Pod => &cache.pods_json,
            };
            let pieces: Vec<(&[u8], &[u8], &[u8])> = indices
                .iter()
                .enumerate()
                .map(|(k, &i)| {
                    let (head, tail) = frags.get(snap, i);
                    (head, label_at(k).json(), tail)
                })
                .collect();
            // `{` head now `"` labels tail, plus a comma between items.
            let items: usize = pieces
                .iter()
                .map(|(h, l, t)| 3 + h.len() + now.len() + l.len() + t.len())
                .sum::<usize>()
                .saturating_sub(1);
            let frame = if req.single {
                r#"{"kind":"","apiVersion":"","#.len() + item_kind.len() + gv.len() - 1
            } else {
                r#"{"kind":"","apiVersion":"","metadata":{},"items":[]}"#.len()
                    + list_kind.len()
                    + gv.len()
            };
            (Body::Json(pieces), items + frame + 1)
        }
        Format::Protobuf => {
            use protobuf::{field_len, time_field_len};
            let frags = match kind {
                Kind::Node => &cache.nodes_proto,
                Kind::Pod => &cache.pods_proto,
            };
            let ts_len = time_field_len(req.now_s);
            let pieces: Vec<ProtoPiece> = indices
                .iter()
                .enumerate()
                .map(|(k, &i)| {
                    let (head, tail) = frags.get(snap, i);
                    let labels = label_at(k).proto();
                    let meta_len = head.len() + ts_len + labels.len();
                    ProtoPiece {
                        head,
                        labels,
                        tail,
                        meta_len,
                        msg_len: field_len(meta_len) + tail.len(),
                    }
                })
                .collect();
            let raw = raw_len(&pieces, req.single);
            let type_kind = if req.single { item_kind } else { list_kind };
            let mut head = Vec::new();
            protobuf::write_envelope_head(&mut head, gv, type_kind, raw);
            (
                Body::Proto(pieces),
                head.len() + raw + protobuf::UNKNOWN_TAIL.len(),
            )
        }
    };
    Ok(Plan {
        kind,
        req: *req,
        now,
        body,
        len,
    })
}

fn raw_len(pieces: &[ProtoPiece<'_>], single: bool) -> usize {
    if single {
        pieces.first().map_or(0, |p| p.msg_len)
    } else {
        protobuf::EMPTY_LIST_META.len()
            + pieces
                .iter()
                .map(|p| protobuf::field_len(p.msg_len))
                .sum::<usize>()
    }
}

impl Plan<'_> {
    /// The exact number of bytes [`Plan::write`] produces.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len);
        self.write(&mut out);
        out
    }

    pub fn write(&self, out: &mut impl Sink) {
        let (item_kind, list_kind) = self.kind.names();
        let gv = self.req.api_version.group_version().as_bytes();
        let now = &self.now[..];
        match &self.body {
            Body::Bytes(b) => out.put(b),
            Body::Json(pieces) => {
                out.put(b"{\"kind\":\"");
                if self.req.single {
                    out.put(item_kind.as_bytes());
                    out.put(b"\",\"apiVersion\":\"");
                    out.put(gv);
                    out.put(b"\",");
                } else {
                    out.put(list_kind.as_bytes());
                    out.put(b"\",\"apiVersion\":\"");
                    out.put(gv);
                    out.put(b"\",\"metadata\":{},\"items\":[");
                }
                for (k, (h, l, t)) in pieces.iter().enumerate() {
                    if !self.req.single {
                        out.put(if k > 0 { b",{" } else { b"{" });
                    }
                    out.put(h);
                    out.put(now);
                    out.put(b"\"");
                    out.put(l);
                    out.put(t);
                    if self.req.single {
                        break;
                    }
                }
                if !self.req.single {
                    out.put(b"]}");
                }
                // Go's json.Encoder ends every document with a newline.
                out.put(b"\n");
            }
            Body::Proto(pieces) => {
                let single = self.req.single;
                let type_kind = if single { item_kind } else { list_kind };
                let mut head = Vec::with_capacity(64);
                protobuf::write_envelope_head(
                    &mut head,
                    self.req.api_version.group_version(),
                    type_kind,
                    raw_len(pieces, single),
                );
                out.put(&head);
                if !single {
                    out.put(protobuf::EMPTY_LIST_META);
                }
                let mut ts = Vec::with_capacity(16);
                protobuf::write_time_field(&mut ts, 8, self.req.now_s);
                for p in pieces {
                    // items = 2 (lists), then metadata = 1: tags and lengths
                    // assembled on the stack and written in one go.
                    let mut pre = [0u8; 24];
                    let mut n = 0;
                    if !single {
                        pre[0] = 0x12;
                        let (len, k) = varint(p.msg_len as u64);
                        pre[1..1 + k].copy_from_slice(&len[..k]);
                        n = 1 + k;
                    }
                    pre[n] = 0x0a;
                    let (len, k) = varint(p.meta_len as u64);
                    pre[n + 1..n + 1 + k].copy_from_slice(&len[..k]);
                    n += 1 + k;
                    out.put(&pre[..n]);
                    out.put(p.head);
                    out.put(&ts);
                    out.put(p.labels);
                    out.put(p.tail);
                    if single {
                        break;
                    }
                }
                out.put(protobuf::UNKNOWN_TAIL);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2024-12-24T09:33:53Z
    const T: i64 = 1_735_032_833;

    fn snapshot() -> Arc<Snapshot> {
        let mut s = Snapshot::default();
        for (name, cpu, mem) in [
            ("node-a", 123_456_789u64, 12_533_760u64),
            ("node-b", 0, 1000),
        ] {
            s.nodes.name.push(Arc::from(name));
            s.nodes.cpu_nanocores.push(cpu);
            s.nodes.memory_bytes.push(mem);
            s.nodes.timestamp_ms.push(T * 1000 + 501);
            s.nodes.window_ms.push(15_012);
        }
        s.pods.container_start.push(0);
        for (ns, name, containers) in [
            (
                "default",
                "web",
                &[
                    ("app", 500_000_000u64, 3u64 << 20),
                    ("sidecar", 20_000, 1536),
                ][..],
            ),
            ("kube-system", "dns", &[("coredns", 1_500_000, 512)][..]),
        ] {
            s.pods.namespace.push(Arc::from(ns));
            s.pods.name.push(Arc::from(name));
            s.pods.node.push(Arc::from("node-a"));
            s.pods.timestamp_ms.push(T * 1000);
            s.pods.window_ms.push(60_500);
            for (c, cpu, mem) in containers {
                s.containers.name.push(Arc::from(*c));
                s.containers.cpu_nanocores.push(*cpu);
                s.containers.memory_bytes.push(*mem);
            }
            s.pods.container_start.push(s.containers.name.len() as u32);
        }
        Arc::new(s)
    }

    fn req(format: Format, single: bool) -> Request {
        Request {
            api_version: ApiVersion::V1beta1,
            format,
            single,
            now_s: T + 7,
        }
    }

    fn refs(v: &[Arc<LabelSet>]) -> Vec<&LabelSet> {
        v.iter().map(|l| &**l).collect()
    }

    #[test]
    fn planned_length_is_exact_and_fill_sink_matches_vec() {
        let s = snapshot();
        let cache = cache_for(&s);
        let l = LabelSet::new([("a", "<&>\u{2028}"), ("b", "")]);
        for format in [
            Format::Json,
            Format::Protobuf,
            Format::Table(RowObject::Metadata),
            Format::Table(RowObject::Object),
            Format::Table(RowObject::None),
        ] {
            for (idx, single) in [
                (&[][..], false),
                (&[1][..], false),
                (&[0, 1, 0][..], false),
                (&[1][..], true),
            ] {
                for labels in [vec![], vec![&l; idx.len()]] {
                    let r = req(format, single);
                    let p = plan_pods(&cache, &s, idx, &labels, &r).unwrap();
                    let v = p.to_vec();
                    assert_eq!(p.len(), v.len(), "{format:?} {idx:?} {single}");
                    let mut buf = vec![MaybeUninit::new(0xAAu8); p.len()];
                    let mut sink = FillSink::new(&mut buf);
                    p.write(&mut sink);
                    assert!(sink.is_complete());
                    let filled: Vec<u8> = buf.iter().map(|b| unsafe { b.assume_init() }).collect();
                    assert_eq!(filled, v);
                    // A too-small buffer is reported, never overrun.
                    let mut small = vec![MaybeUninit::new(0u8); p.len().saturating_sub(1)];
                    let mut sink = FillSink::new(&mut small);
                    p.write(&mut sink);
                    assert!(!sink.is_complete());
                    let n = plan_nodes(&cache, &s, idx, &labels, &r).unwrap();
                    assert_eq!(n.len(), n.to_vec().len());
                }
            }
        }
    }

    #[test]
    fn warming_builds_the_same_fragments() {
        let s = snapshot();
        let cold = encode_pods(&s, &[0, 1], &[], &req(Format::Protobuf, false)).unwrap();
        let warm_snap = Arc::new((*s).clone());
        let cache = cache_for(&warm_snap);
        cache.warm(&warm_snap, Format::Protobuf);
        cache.warm(&warm_snap, Format::Json);
        assert!(cache.pods_proto.chunks.iter().all(|c| c.get().is_some()));
        let warm = encode_pods(&warm_snap, &[0, 1], &[], &req(Format::Protobuf, false)).unwrap();
        assert_eq!(cold, warm);
    }

    #[test]
    fn resolved_labels_follow_the_inventory_version() {
        let s = snapshot();
        let cache = cache_for(&s);
        let mut inv = Inventory::new();
        inv.set_pod("default", "web", LabelSet::new([("app", "web")]));
        let r1 = cache.resolved_pod_labels(&s, &inv);
        assert_eq!(r1.len(), 2);
        assert_eq!(r1[0].as_ref().unwrap().get("app"), Some("web"));
        assert!(r1[1].is_none());
        assert!(Arc::ptr_eq(&r1, &cache.resolved_pod_labels(&s, &inv)));
        inv.set_pod("kube-system", "dns", LabelSet::new([("k", "v")]));
        let r2 = cache.resolved_pod_labels(&s, &inv);
        assert_eq!(r2[1].as_ref().unwrap().get("k"), Some("v"));
        let other = Inventory::new();
        assert!(cache
            .resolved_pod_labels(&s, &other)
            .iter()
            .all(Option::is_none));
        inv.set_node("node-b", LabelSet::new([("n", "b")]));
        let n = cache.resolved_node_labels(&s, &inv);
        assert!(n[0].is_none() && n[1].as_ref().unwrap().get("n") == Some("b"));
    }

    fn text(b: Vec<u8>) -> String {
        String::from_utf8(b).unwrap()
    }

    #[test]
    fn node_list_json_is_exact() {
        let s = snapshot();
        let labels = vec![
            Arc::new(LabelSet::new([("role", "worker")])),
            LabelSet::empty(),
        ];
        let out = encode_nodes(&s, &[0, 1], &refs(&labels), &req(Format::Json, false)).unwrap();
        assert_eq!(
            text(out),
            concat!(
                r#"{"kind":"NodeMetricsList","apiVersion":"metrics.k8s.io/v1beta1","metadata":{},"items":["#,
                r#"{"metadata":{"name":"node-a","creationTimestamp":"2024-12-24T09:34:00Z","labels":{"role":"worker"}},"#,
                r#""timestamp":"2024-12-24T09:33:53Z","window":"15.012s","usage":{"cpu":"123456789n","memory":"12240Ki"}},"#,
                r#"{"metadata":{"name":"node-b","creationTimestamp":"2024-12-24T09:34:00Z"},"#,
                r#""timestamp":"2024-12-24T09:33:53Z","window":"15.012s","usage":{"cpu":"0","memory":"1k"}}]}"#,
                "\n"
            )
        );
    }

    #[test]
    fn single_pod_json_has_kind_and_version() {
        let s = snapshot();
        let mut r = req(Format::Json, true);
        r.api_version = ApiVersion::V1;
        let out = encode_pods(&s, &[0], &[LabelSet::empty_ref()], &r).unwrap();
        assert_eq!(
            text(out),
            concat!(
                r#"{"kind":"PodMetrics","apiVersion":"metrics.k8s.io/v1","#,
                r#""metadata":{"name":"web","namespace":"default","creationTimestamp":"2024-12-24T09:34:00Z"},"#,
                r#""timestamp":"2024-12-24T09:33:53Z","window":"1m0.5s","containers":["#,
                r#"{"name":"app","usage":{"cpu":"500m","memory":"3Mi"}},"#,
                r#"{"name":"sidecar","usage":{"cpu":"20u","memory":"1536"}}]}"#,
                "\n"
            )
        );
        assert_eq!(
            encode_pods(&s, &[0, 1], &[], &r),
            Err(EncodeError::NotSingle(2))
        );
        assert_eq!(
            encode_pods(&s, &[2], &[], &req(Format::Json, false)),
            Err(EncodeError::IndexOutOfRange { index: 2, len: 2 })
        );
    }

    #[test]
    fn empty_list_and_cache_reuse() {
        let s = snapshot();
        let out = encode_pods(&s, &[], &[], &req(Format::Json, false)).unwrap();
        assert_eq!(
            text(out),
            "{\"kind\":\"PodMetricsList\",\"apiVersion\":\"metrics.k8s.io/v1beta1\",\"metadata\":{},\"items\":[]}\n"
        );
        let a = cache_for(&s);
        let b = cache_for(&s);
        assert!(Arc::ptr_eq(&a, &b));
        // A different snapshot with equal contents gets its own cache.
        let other = Arc::new((*s).clone());
        assert!(!Arc::ptr_eq(&a, &cache_for(&other)));
        // Labels are not cached with fragments: a later change shows up.
        let l1 = vec![Arc::new(LabelSet::new([("v", "1")]))];
        let l2 = vec![Arc::new(LabelSet::new([("v", "2")]))];
        let one = text(encode_pods(&s, &[1], &refs(&l1), &req(Format::Json, false)).unwrap());
        let two = text(encode_pods(&s, &[1], &refs(&l2), &req(Format::Json, false)).unwrap());
        assert!(one.contains(r#""labels":{"v":"1"}"#) && two.contains(r#""labels":{"v":"2"}"#));
    }

    #[test]
    fn inconsistent_snapshots_are_errors_not_panics() {
        let mut s = (*snapshot()).clone();
        s.pods.container_start[1] = 99;
        let s = Arc::new(s);
        assert!(matches!(
            encode_pods(&s, &[0], &[], &req(Format::Protobuf, false)),
            Err(EncodeError::Inconsistent(_))
        ));
        let mut s = (*snapshot()).clone();
        s.nodes.window_ms.pop();
        let s = Arc::new(s);
        assert!(matches!(
            encode_nodes(&s, &[0], &[], &req(Format::Json, false)),
            Err(EncodeError::Inconsistent(_))
        ));
    }

    #[test]
    fn table_sums_containers() {
        let s = snapshot();
        let labels = vec![Arc::new(LabelSet::new([("app", "web")]))];
        let out = text(
            encode_pods(
                &s,
                &[0],
                &refs(&labels),
                &req(Format::Table(RowObject::Metadata), false),
            )
            .unwrap(),
        );
        assert!(out.starts_with(r#"{"kind":"Table","apiVersion":"meta.k8s.io/v1","metadata":{},"columnDefinitions":[{"name":"Name","type":"string","format":"name","description":"Name of the resource","priority":0},"#));
        // 500m + 20u = 500020u; 3Mi + 1536 = 3147264
        assert!(out.contains(
            r#""rows":[{"cells":["web","500020u","3147264","1m0.5s"],"object":{"kind":"PartialObjectMetadata","apiVersion":"meta.k8s.io/v1","metadata":{"name":"web","namespace":"default","creationTimestamp":"2024-12-24T09:34:00Z","labels":{"app":"web"}}}}]}"#
        ), "{out}");
    }

    #[test]
    fn table_row_object_follows_include_object() {
        let s = snapshot();
        let labels = vec![Arc::new(LabelSet::new([("app", "web")]))];
        let row = |object: RowObject, kind: Kind| {
            let r = req(Format::Table(object), false);
            let out = match kind {
                Kind::Pod => encode_pods(&s, &[0], &refs(&labels), &r),
                Kind::Node => encode_nodes(&s, &[0], &refs(&labels), &r),
            };
            let out = text(out.unwrap());
            let start = out.find(r#""rows":["#).unwrap();
            out[start..].trim_end().to_string()
        };
        // Object: the whole item, as the JSON list holds it, with kind and
        // apiVersion (kubectl get --sort-by reads the item's fields).
        let item = text(encode_pods(&s, &[0], &refs(&labels), &req(Format::Json, true)).unwrap());
        assert_eq!(
            row(RowObject::Object, Kind::Pod),
            format!(
                r#""rows":[{{"cells":["web","500020u","3147264","1m0.5s"],"object":{}}}]}}"#,
                item.trim_end()
            )
        );
        assert!(item.starts_with(r#"{"kind":"PodMetrics","apiVersion":"metrics.k8s.io/v1beta1","metadata":{"name":"web","namespace":"default","creationTimestamp":"2024-12-24T09:34:00Z","labels":{"app":"web"}},"#), "{item}");
        let node = text(encode_nodes(&s, &[0], &refs(&labels), &req(Format::Json, true)).unwrap());
        assert_eq!(
            row(RowObject::Object, Kind::Node),
            format!(
                r#""rows":[{{"cells":["node-a","123456789n","12240Ki","15.012s"],"object":{}}}]}}"#,
                node.trim_end()
            )
        );
        // None: a null object.
        assert_eq!(
            row(RowObject::None, Kind::Pod),
            r#""rows":[{"cells":["web","500020u","3147264","1m0.5s"],"object":null}]}"#
        );
    }

    // A minimal protobuf reader to check the wire form independently.
    fn read_varint(b: &[u8], pos: &mut usize) -> u64 {
        let mut v = 0u64;
        let mut shift = 0;
        loop {
            let byte = b[*pos];
            *pos += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return v;
            }
            shift += 7;
        }
    }

    /// (field, wire type, varint value or bytes)
    fn fields(b: &[u8]) -> Vec<(u64, u64, u64, &[u8])> {
        let mut pos = 0;
        let mut out = Vec::new();
        while pos < b.len() {
            let key = read_varint(b, &mut pos);
            match key & 7 {
                0 => {
                    let v = read_varint(b, &mut pos);
                    out.push((key >> 3, 0, v, &b[0..0]));
                }
                2 => {
                    let l = read_varint(b, &mut pos) as usize;
                    out.push((key >> 3, 2, 0, &b[pos..pos + l]));
                    pos += l;
                }
                w => panic!("unexpected wire type {w}"),
            }
        }
        out
    }

    #[test]
    fn protobuf_list_decodes_to_the_same_values() {
        let s = snapshot();
        let labels = vec![LabelSet::empty(), Arc::new(LabelSet::new([("k", "v")]))];
        let out = encode_pods(&s, &[0, 1], &refs(&labels), &req(Format::Protobuf, false)).unwrap();
        assert_eq!(&out[..4], b"k8s\0");
        let unknown = fields(&out[4..]);
        assert_eq!(unknown.len(), 4);
        let tm = fields(unknown[0].3);
        assert_eq!(tm[0].3, b"metrics.k8s.io/v1beta1");
        assert_eq!(tm[1].3, b"PodMetricsList");
        assert_eq!((unknown[2].0, unknown[2].3), (3, &b""[..]));
        assert_eq!((unknown[3].0, unknown[3].3), (4, &b""[..]));
        let list = fields(unknown[1].3);
        assert_eq!((list[0].0, list[0].3), (1, &b""[..]));
        assert_eq!(list.len(), 3);
        let pod = fields(list[2].3);
        let meta = fields(pod[0].3);
        assert_eq!(meta[0].3, b"dns");
        assert_eq!((meta[1].0, meta[1].3), (3, &b"kube-system"[..]));
        assert_eq!(meta[2].0, 8);
        assert_eq!(fields(meta[2].3)[0].2, (T + 7) as u64);
        let entry = fields(meta[3].3);
        assert_eq!(
            (meta[3].0, entry[0].3, entry[1].3),
            (11, &b"k"[..], &b"v"[..])
        );
        assert_eq!(fields(pod[1].3)[0].2, T as u64);
        assert_eq!(fields(pod[2].3)[0].2, 60_500_000_000);
        let container = fields(pod[3].3);
        assert_eq!(container[0].3, b"coredns");
        let cpu = fields(container[1].3);
        assert_eq!(cpu[0].3, b"cpu");
        assert_eq!(fields(cpu[1].3)[0].3, b"1500u");
        let mem = fields(container[2].3);
        assert_eq!(mem[0].3, b"memory");
        assert_eq!(fields(mem[1].3)[0].3, b"512");
        // The first pod has two containers, in name order.
        let pod0 = fields(list[1].3);
        assert_eq!(pod0.len(), 5);
        assert_eq!(fields(pod0[4].3)[0].3, b"sidecar");
    }

    #[test]
    fn protobuf_single_node() {
        let s = snapshot();
        let out = encode_nodes(&s, &[1], &[], &req(Format::Protobuf, true)).unwrap();
        let unknown = fields(&out[4..]);
        assert_eq!(fields(unknown[0].3)[1].3, b"NodeMetrics");
        let node = fields(unknown[1].3);
        assert_eq!(fields(node[0].3)[0].3, b"node-b");
        assert_eq!(fields(node[2].3)[0].2, 15_012_000_000);
        assert_eq!(node[3].0, 4);
        assert_eq!(fields(fields(node[3].3)[1].3)[0].3, b"0");
        assert_eq!(fields(fields(node[4].3)[1].3)[0].3, b"1k");
    }

    #[test]
    fn many_items_span_chunks() {
        let mut s = Snapshot::default();
        s.pods.container_start.push(0);
        for i in 0..1000u32 {
            s.pods.namespace.push(Arc::from("ns"));
            s.pods.name.push(Arc::from(format!("p{i:04}").as_str()));
            s.pods.node.push(Arc::from("n"));
            s.pods.timestamp_ms.push(0);
            s.pods.window_ms.push(1000);
            s.containers.name.push(Arc::from("c"));
            s.containers.cpu_nanocores.push(u64::from(i));
            s.containers.memory_bytes.push(0);
            s.pods.container_start.push(i + 1);
        }
        let s = Arc::new(s);
        let idx: Vec<usize> = (0..1000).rev().collect();
        let out = text(encode_pods(&s, &idx, &[], &req(Format::Json, false)).unwrap());
        assert_eq!(out.matches("\"name\":\"p").count(), 1000);
        assert!(out.contains(r#"{"name":"p0999","namespace":"ns","#));
        assert!(out.contains(r#""usage":{"cpu":"999n","memory":"0"}"#));
        let first = out.find("p0999").unwrap();
        assert!(first < out.find("p0000").unwrap());
    }
}
