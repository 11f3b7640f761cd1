//! JSON fragments: one item without its leading `{` and without the parts
//! that vary per request, split where `creationTimestamp`'s value goes:
//! `"metadata":{"name":…,"creationTimestamp":"` ‖ `},"timestamp":…}`.
//! An item is then `{` [kind/apiVersion] head NOW `"` labels tail.

use crate::snapshot::Snapshot;
use crate::wire::json::write_str;
use crate::wire::quantity::{
    ms_to_ns, ms_to_seconds, write_cpu, write_duration_ns, write_memory, write_rfc3339,
};

/// `"timestamp":"…","window":"…",` shared by nodes and pods.
fn write_time_window(out: &mut Vec<u8>, timestamp_ms: i64, window_ms: i64) {
    out.extend_from_slice(b"\"timestamp\":\"");
    write_rfc3339(out, ms_to_seconds(timestamp_ms));
    out.extend_from_slice(b"\",\"window\":\"");
    write_duration_ns(out, ms_to_ns(window_ms));
    out.extend_from_slice(b"\",");
}

fn write_usage(out: &mut Vec<u8>, cpu_nanocores: u64, memory_bytes: u64) {
    out.extend_from_slice(b"\"usage\":{\"cpu\":\"");
    write_cpu(out, cpu_nanocores);
    out.extend_from_slice(b"\",\"memory\":\"");
    write_memory(out, memory_bytes);
    out.extend_from_slice(b"\"}");
}

/// Node `i`'s fragment; returns the split offset (absolute in `out`).
pub fn node_fragment(snap: &Snapshot, i: usize, out: &mut Vec<u8>) -> usize {
    let n = &snap.nodes;
    out.extend_from_slice(b"\"metadata\":{\"name\":");
    write_str(out, &n.name[i]);
    out.extend_from_slice(b",\"creationTimestamp\":\"");
    let split = out.len();
    out.extend_from_slice(b"},");
    write_time_window(out, n.timestamp_ms[i], n.window_ms[i]);
    write_usage(out, n.cpu_nanocores[i], n.memory_bytes[i]);
    out.push(b'}');
    split
}

/// Pod `i`'s fragment; returns the split offset (absolute in `out`).
pub fn pod_fragment(snap: &Snapshot, i: usize, out: &mut Vec<u8>) -> usize {
    let p = &snap.pods;
    let c = &snap.containers;
    out.extend_from_slice(b"\"metadata\":{\"name\":");
    write_str(out, &p.name[i]);
    out.extend_from_slice(b",\"namespace\":");
    write_str(out, &p.namespace[i]);
    out.extend_from_slice(b",\"creationTimestamp\":\"");
    let split = out.len();
    out.extend_from_slice(b"},");
    write_time_window(out, p.timestamp_ms[i], p.window_ms[i]);
    out.extend_from_slice(b"\"containers\":[");
    for (k, j) in p.containers_of(i).enumerate() {
        if k > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"name\":");
        write_str(out, &c.name[j]);
        out.push(b',');
        write_usage(out, c.cpu_nanocores[j], c.memory_bytes[j]);
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
    split
}
