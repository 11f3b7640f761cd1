//! The server-side Table (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`)
//! that `kubectl get nodemetrics/podmetrics` asks for.
//!
//! Upstream (metrics-server pkg/api/table.go): columns Name, then the usage
//! names sorted (`cpu`, `memory`; pods: sums over containers), then Window;
//! each row's object is the item, which the API server reduces to a
//! `PartialObjectMetadata` under the default `includeObject=Metadata`, keeps
//! whole (with kind and apiVersion) under `includeObject=Object` (what
//! `kubectl get --sort-by` asks for, to sort on the item's fields), and
//! writes as `null` under `includeObject=None`. `meta.k8s.io/v1beta1` Tables
//! are the same schema under another apiVersion (row objects included).
//!
//! A row's fragment is its cells, up to where the object goes:
//! `{"cells":["web","500020u","3147264","1m0.5s"],"object":`; the object is
//! assembled per request from the JSON fragment, the time and the labels.

use crate::snapshot::Snapshot;
use crate::wire::json::write_str;
use crate::wire::quantity::{ms_to_ns, write_cpu, write_duration_ns, write_memory};

/// Everything before the first row, for a Table of apiVersion `meta.k8s.io/<version>`.
pub fn head(version: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEAD_REST.len() + 48);
    out.extend_from_slice(b"{\"kind\":\"Table\",\"apiVersion\":\"meta.k8s.io/");
    out.extend_from_slice(version.as_bytes());
    out.extend_from_slice(HEAD_REST);
    out
}

const HEAD_REST: &[u8] = b"\",\"metadata\":{},\"columnDefinitions\":[\
{\"name\":\"Name\",\"type\":\"string\",\"format\":\"name\",\"description\":\"Name of the resource\",\"priority\":0},\
{\"name\":\"cpu\",\"type\":\"string\",\"format\":\"quantity\",\"description\":\"\",\"priority\":0},\
{\"name\":\"memory\",\"type\":\"string\",\"format\":\"quantity\",\"description\":\"\",\"priority\":0},\
{\"name\":\"Window\",\"type\":\"string\",\"format\":\"duration\",\"description\":\"\",\"priority\":0}],\"rows\":[";

pub const TAIL: &[u8] = b"]}\n";

fn write_cells(out: &mut Vec<u8>, name: &str, cpu: u64, memory: u64, window_ms: i64) {
    out.extend_from_slice(b"{\"cells\":[");
    write_str(out, name);
    out.extend_from_slice(b",\"");
    write_cpu(out, cpu);
    out.extend_from_slice(b"\",\"");
    write_memory(out, memory);
    out.extend_from_slice(b"\",\"");
    write_duration_ns(out, ms_to_ns(window_ms));
    out.extend_from_slice(b"\"],\"object\":");
}

/// Node `i`'s row cells; returns the end (no split).
pub fn node_fragment(snap: &Snapshot, i: usize, out: &mut Vec<u8>) -> usize {
    let n = &snap.nodes;
    write_cells(
        out,
        &n.name[i],
        n.cpu_nanocores[i],
        n.memory_bytes[i],
        n.window_ms[i],
    );
    out.len()
}

/// Pod `i`'s row cells (usage summed over its containers); returns the end.
pub fn pod_fragment(snap: &Snapshot, i: usize, out: &mut Vec<u8>) -> usize {
    let p = &snap.pods;
    let c = &snap.containers;
    let range = p.containers_of(i);
    let cpu = c.cpu_nanocores[range.clone()]
        .iter()
        .fold(0u64, |a, &b| a.saturating_add(b));
    let memory = c.memory_bytes[range]
        .iter()
        .fold(0u64, |a, &b| a.saturating_add(b));
    write_cells(out, &p.name[i], cpu, memory, p.window_ms[i]);
    out.len()
}
