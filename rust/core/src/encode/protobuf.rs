//! Protobuf wire pieces for `application/vnd.kubernetes.protobuf`.
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

use crate::quantity::{ms_to_ns, ms_to_seconds, write_cpu, write_memory};
use crate::snapshot::Snapshot;

pub const MAGIC: &[u8; 4] = b"k8s\0";

const LEN: u8 = 2;
const VARINT: u8 = 0;

pub fn write_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub fn varint_len(v: u64) -> usize {
    // 1 byte per started group of 7 bits; 0 still takes one byte.
    let bits = 64 - (v | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Field key for fields < 16 (one byte), which is all this module uses.
fn key(field: u8, wire: u8) -> u8 {
    (field << 3) | wire
}

pub fn write_bytes_field(out: &mut Vec<u8>, field: u8, bytes: &[u8]) {
    out.push(key(field, LEN));
    write_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Total size of a length-delimited field with a body of `len` bytes.
pub fn field_len(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

/// One `map<string,string>` entry as field `field`.
pub fn write_string_map_entry(out: &mut Vec<u8>, field: u8, k: &str, v: &str) {
    let body = field_len(k.len()) + field_len(v.len());
    out.push(key(field, LEN));
    write_varint(out, body as u64);
    write_bytes_field(out, 1, k.as_bytes());
    write_bytes_field(out, 2, v.as_bytes());
}

/// One `map<string,Quantity>` entry: {1: key, 2: Quantity{1: text}}.
fn write_quantity_entry(out: &mut Vec<u8>, field: u8, k: &str, text: &[u8]) {
    let value = field_len(text.len());
    let body = field_len(k.len()) + field_len(value);
    out.push(key(field, LEN));
    write_varint(out, body as u64);
    write_bytes_field(out, 1, k.as_bytes());
    out.push(key(2, LEN));
    write_varint(out, value as u64);
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

/// `Time{seconds}` as field `field` (whole seconds, like the JSON form).
pub fn write_time_field(out: &mut Vec<u8>, field: u8, unix_seconds: i64) {
    let secs = unix_seconds as u64; // two's complement, as protobuf int64
    out.push(key(field, LEN));
    write_varint(out, 1 + varint_len(secs) as u64);
    out.push(key(1, VARINT));
    write_varint(out, secs);
}

pub fn time_field_len(unix_seconds: i64) -> usize {
    field_len(1 + varint_len(unix_seconds as u64))
}

fn write_duration_field(out: &mut Vec<u8>, field: u8, ns: i64) {
    let v = ns as u64;
    out.push(key(field, LEN));
    write_varint(out, 1 + varint_len(v) as u64);
    out.push(key(1, VARINT));
    write_varint(out, v);
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
    let tm = field_len(api_version.len()) + field_len(kind.len());
    out.push(key(1, LEN));
    write_varint(out, tm as u64);
    write_bytes_field(out, 1, api_version.as_bytes());
    write_bytes_field(out, 2, kind.as_bytes());
    out.push(key(2, LEN));
    write_varint(out, raw_len as u64);
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
    fn varints() {
        for (v, bytes) in [
            (0u64, vec![0u8]),
            (1, vec![1]),
            (127, vec![0x7f]),
            (128, vec![0x80, 0x01]),
            (300, vec![0xac, 0x02]),
            (u64::MAX, {
                let mut b = vec![0xff; 9];
                b.push(0x01);
                b
            }),
        ] {
            let mut out = Vec::new();
            write_varint(&mut out, v);
            assert_eq!(out, bytes, "{v}");
            assert_eq!(varint_len(v), bytes.len(), "{v}");
        }
    }

    #[test]
    fn time_and_quantity_entries() {
        let mut out = Vec::new();
        write_time_field(&mut out, 8, 1);
        assert_eq!(out, [0x42, 0x02, 0x08, 0x01]);
        assert_eq!(time_field_len(1), 4);
        assert_eq!(time_field_len(1_735_032_833), 8);
        out.clear();
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
