//! The server-side Table (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`)
//! that `kubectl get nodemetrics/podmetrics` asks for.
//!
//! Upstream (metrics-server pkg/api/table.go): columns Name, then the usage
//! names sorted (`cpu`, `memory`; pods: sums over containers), then Window;
//! each row's object is the item, which the API server reduces to a
//! `PartialObjectMetadata` under the default `includeObject=Metadata`, keeps
//! whole (with kind and apiVersion) under `includeObject=Object` (what
//! `kubectl get --sort-by` asks for, to sort on the item's fields), and
//! writes as `null` under `includeObject=None`.
//! Rare and interactive, so built directly rather than from cached fragments.

use super::json::{self, write_str};
use super::RowObject;
use crate::inventory::LabelSet;
use crate::snapshot::Snapshot;
use crate::wire::quantity::{ms_to_ns, write_cpu, write_duration_ns, write_memory};

const HEAD: &[u8] = b"{\"kind\":\"Table\",\"apiVersion\":\"meta.k8s.io/v1\",\"metadata\":{},\"columnDefinitions\":[\
{\"name\":\"Name\",\"type\":\"string\",\"format\":\"name\",\"description\":\"Name of the resource\",\"priority\":0},\
{\"name\":\"cpu\",\"type\":\"string\",\"format\":\"quantity\",\"description\":\"\",\"priority\":0},\
{\"name\":\"memory\",\"type\":\"string\",\"format\":\"quantity\",\"description\":\"\",\"priority\":0},\
{\"name\":\"Window\",\"type\":\"string\",\"format\":\"duration\",\"description\":\"\",\"priority\":0}],\"rows\":[";

/// What every row of one response shares.
pub struct Rows<'a> {
    pub object: RowObject,
    /// The item's apiVersion under `includeObject=Object`.
    pub group_version: &'a str,
    /// The response time, RFC 3339: every item's `creationTimestamp`.
    pub now: &'a [u8],
}

struct Row<'a> {
    name: &'a str,
    namespace: Option<&'a str>,
    cpu: u64,
    memory: u64,
    window_ms: i64,
    labels: &'a LabelSet,
}

/// The whole item as its JSON list entry would be, plus kind and apiVersion.
fn write_item(
    out: &mut Vec<u8>,
    kind: &str,
    rows: &Rows<'_>,
    labels: &LabelSet,
    frag: &[u8],
    split: usize,
) {
    out.extend_from_slice(b"{\"kind\":");
    write_str(out, kind);
    out.extend_from_slice(b",\"apiVersion\":");
    write_str(out, rows.group_version);
    out.push(b',');
    out.extend_from_slice(&frag[..split]);
    out.extend_from_slice(rows.now);
    out.push(b'"');
    out.extend_from_slice(labels.json());
    out.extend_from_slice(&frag[split..]);
}

/// `item` writes the row's whole item for `includeObject=Object`.
fn write_row(out: &mut Vec<u8>, row: &Row<'_>, rows: &Rows<'_>, item: impl FnOnce(&mut Vec<u8>)) {
    let now = rows.now;
    out.extend_from_slice(b"{\"cells\":[");
    write_str(out, row.name);
    out.extend_from_slice(b",\"");
    write_cpu(out, row.cpu);
    out.extend_from_slice(b"\",\"");
    write_memory(out, row.memory);
    out.extend_from_slice(b"\",\"");
    write_duration_ns(out, ms_to_ns(row.window_ms));
    match rows.object {
        RowObject::Metadata => {}
        RowObject::Object => {
            out.extend_from_slice(b"\"],\"object\":");
            item(out);
            out.push(b'}');
            return;
        }
        RowObject::None => {
            out.extend_from_slice(b"\"],\"object\":null}");
            return;
        }
    }
    out.extend_from_slice(
        b"\"],\"object\":{\"kind\":\"PartialObjectMetadata\",\"apiVersion\":\"meta.k8s.io/v1\",\"metadata\":{\"name\":",
    );
    write_str(out, row.name);
    if let Some(ns) = row.namespace {
        out.extend_from_slice(b",\"namespace\":");
        write_str(out, ns);
    }
    out.extend_from_slice(b",\"creationTimestamp\":\"");
    out.extend_from_slice(now);
    out.push(b'"');
    out.extend_from_slice(row.labels.json());
    out.extend_from_slice(b"}}}");
}

fn finish(out: &mut Vec<u8>) {
    out.extend_from_slice(b"]}\n");
}

pub fn nodes(snap: &Snapshot, indices: &[usize], labels: &[&LabelSet], rows: &Rows<'_>) -> Vec<u8> {
    let n = &snap.nodes;
    let mut out = Vec::with_capacity(HEAD.len() + indices.len() * 256 + 8);
    out.extend_from_slice(HEAD);
    for (k, (&i, l)) in indices.iter().zip(labels).enumerate() {
        if k > 0 {
            out.push(b',');
        }
        let row = Row {
            name: &n.name[i],
            namespace: None,
            cpu: n.cpu_nanocores[i],
            memory: n.memory_bytes[i],
            window_ms: n.window_ms[i],
            labels: l,
        };
        write_row(&mut out, &row, rows, |out| {
            let mut frag = Vec::new();
            let split = json::node_fragment(snap, i, &mut frag);
            write_item(out, "NodeMetrics", rows, l, &frag, split);
        });
    }
    finish(&mut out);
    out
}

pub fn pods(snap: &Snapshot, indices: &[usize], labels: &[&LabelSet], rows: &Rows<'_>) -> Vec<u8> {
    let p = &snap.pods;
    let c = &snap.containers;
    let mut out = Vec::with_capacity(HEAD.len() + indices.len() * 300 + 8);
    out.extend_from_slice(HEAD);
    for (k, (&i, l)) in indices.iter().zip(labels).enumerate() {
        if k > 0 {
            out.push(b',');
        }
        let range = p.containers_of(i);
        let cpu = c.cpu_nanocores[range.clone()]
            .iter()
            .fold(0u64, |a, &b| a.saturating_add(b));
        let memory = c.memory_bytes[range]
            .iter()
            .fold(0u64, |a, &b| a.saturating_add(b));
        let row = Row {
            name: &p.name[i],
            namespace: Some(&p.namespace[i]),
            cpu,
            memory,
            window_ms: p.window_ms[i],
            labels: l,
        };
        write_row(&mut out, &row, rows, |out| {
            let mut frag = Vec::new();
            let split = json::pod_fragment(snap, i, &mut frag);
            write_item(out, "PodMetrics", rows, l, &frag, split);
        });
    }
    finish(&mut out);
    out
}
