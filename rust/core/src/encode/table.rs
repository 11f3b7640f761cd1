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

use super::json::put_str;
use super::values::Fields;
use crate::snapshot::Snapshot;
use crate::view::Kind;

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

/// A row's cells, up to where its object goes:
/// `{"cells":["web","500020u","3147264","1m0.5s"],"object":`.
pub fn cells<F: FnMut(&[u8])>(
    put: &mut F,
    snap: &Snapshot,
    kind: Kind,
    i: usize,
    values: Fields<'_>,
) {
    let (name, cpu, memory, window) = match kind {
        Kind::Node => {
            let v = values.node();
            (&snap.nodes.name[i], v.cpu, v.memory, v.window)
        }
        Kind::Pod => {
            let v = values.pod();
            (&snap.pods.name[i], v.cpu_sum, v.memory_sum, v.window)
        }
    };
    put(b"{\"cells\":[");
    put_str(put, name);
    put(b",\"");
    put(cpu);
    put(b"\",\"");
    put(memory);
    put(b"\",\"");
    put(window);
    put(b"\"],\"object\":");
}
