//! Protobuf pieces for `application/vnd.kubernetes.protobuf`.
//!
//! Field numbers, from the upstream .proto files:
//! - runtime.Unknown: typeMeta=1 {apiVersion=1, kind=2}, raw=2,
//!   contentEncoding=3, contentType=4; the body is prefixed by `k8s\0`.
//! - metrics v1beta1 (v1 is the same schema): NodeMetrics {metadata=1,
//!   timestamp=2, window=3, usage=4 (map)}; PodMetrics {metadata=1,
//!   timestamp=2, window=3, containers=4}; ContainerMetrics {name=1,
//!   usage=2}; *List {metadata=1 (ListMeta), items=2}.
//! - meta/v1: ObjectMeta {name=1, namespace=3, creationTimestamp=8,
//!   labels=11}; Time {seconds=1, nanos=2}; Duration {duration=1 (ns)}.
//! - resource.Quantity {string=1}. Maps are repeated {key=1, value=2}
//!   entries, sorted by key as the generated Go marshalers emit them.
//!
//! A fragment holds ObjectMeta's name/namespace fields (head) and the
//! message's fields after metadata (tail); metadata's length, which depends
//! on the request time and the labels, is computed when a list is assembled.

use crate::snapshot::Snapshot;
use crate::wire::proto::{
    field_len, write_bytes_field, write_duration_field, write_len_prefix, write_time_field,
};
use crate::wire::quantity::{ms_to_ns, ms_to_seconds, write_cpu, write_memory};

pub const MAGIC: &[u8; 4] = b"k8s\0";

/// One `map<string,Quantity>` entry: {1: key, 2: Quantity{1: text}}.
fn write_quantity_entry(out: &mut Vec<u8>, field: u8, k: &str, text: &[u8]) {
    let value = field_len(text.len());
    write_len_prefix(out, field, field_len(k.len()) + field_len(value));
    write_bytes_field(out, 1, k.as_bytes());
    write_len_prefix(out, 2, value);
    write_bytes_field(out, 1, text);
}

fn write_usage(out: &mut Vec<u8>, field: u8, cpu_nanocores: u64, memory_bytes: u64) {
    let mut q = Vec::with_capacity(24);
    write_cpu(&mut q, cpu_nanocores);
    write_quantity_entry(out, field, "cpu", &q);
    q.clear();
    write_memory(&mut q, memory_bytes);
    write_quantity_entry(out, field, "memory", &q);
}

/// Node `i`'s fragment; returns the split offset (absolute in `out`).
pub fn node_fragment(snap: &Snapshot, i: usize, out: &mut Vec<u8>) -> usize {
    let n = &snap.nodes;
    write_bytes_field(out, 1, n.name[i].as_bytes());
    let split = out.len();
    write_time_field(out, 2, ms_to_seconds(n.timestamp_ms[i]));
    write_duration_field(out, 3, ms_to_ns(n.window_ms[i]));
    write_usage(out, 4, n.cpu_nanocores[i], n.memory_bytes[i]);
    split
}

/// Pod `i`'s fragment; returns the split offset (absolute in `out`).
pub fn pod_fragment(snap: &Snapshot, i: usize, out: &mut Vec<u8>) -> usize {
    let p = &snap.pods;
    let c = &snap.containers;
    write_bytes_field(out, 1, p.name[i].as_bytes());
    write_bytes_field(out, 3, p.namespace[i].as_bytes());
    let split = out.len();
    write_time_field(out, 2, ms_to_seconds(p.timestamp_ms[i]));
    write_duration_field(out, 3, ms_to_ns(p.window_ms[i]));
    let mut body = Vec::with_capacity(96);
    for j in p.containers_of(i) {
        body.clear();
        write_bytes_field(&mut body, 1, c.name[j].as_bytes());
        write_usage(&mut body, 2, c.cpu_nanocores[j], c.memory_bytes[j]);
        write_bytes_field(out, 4, &body);
    }
    split
}

/// `k8s\0` + Unknown{typeMeta, raw: <raw_len bytes follow>}: everything up to
/// the raw bytes. The caller appends the raw message and then [`UNKNOWN_TAIL`].
pub fn write_envelope_head(out: &mut Vec<u8>, api_version: &str, kind: &str, raw_len: usize) {
    out.extend_from_slice(MAGIC);
    write_len_prefix(out, 1, field_len(api_version.len()) + field_len(kind.len()));
    write_bytes_field(out, 1, api_version.as_bytes());
    write_bytes_field(out, 2, kind.as_bytes());
    write_len_prefix(out, 2, raw_len);
}

/// Unknown's empty contentEncoding (3) and contentType (4), which Go's
/// marshaler always writes.
pub const UNKNOWN_TAIL: &[u8] = &[0x1a, 0x00, 0x22, 0x00];

/// An empty ListMeta as field 1 of a list message.
pub const EMPTY_LIST_META: &[u8] = &[0x0a, 0x00];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantity_entries_and_envelope() {
        let mut out = Vec::new();
        write_quantity_entry(&mut out, 4, "cpu", b"1m");
        // {1:"cpu", 2:{1:"1m"}}
        assert_eq!(
            out,
            [0x22, 0x0b, 0x0a, 0x03, b'c', b'p', b'u', 0x12, 0x04, 0x0a, 0x02, b'1', b'm']
        );
        out.clear();
        write_envelope_head(&mut out, "v", "K", 3);
        assert_eq!(
            out,
            [b'k', b'8', b's', 0, 0x0a, 0x06, 0x0a, 0x01, b'v', 0x12, 0x01, b'K', 0x12, 0x03]
        );
    }
}
