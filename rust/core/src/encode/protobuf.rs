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

use super::values::Fields;
use crate::inventory::LabelSet;
use crate::snapshot::Snapshot;
use crate::view::Kind;
pub use crate::wire::proto::{field_len, time_field_len, write_time_field};
use crate::wire::proto::{
    key, varint, varint_len, write_bytes_field, write_len_prefix, LEN, VARINT,
};
use crate::wire::quantity::{ms_to_ns, ms_to_seconds};

pub const MAGIC: &[u8; 4] = b"k8s\0";

/// A length-delimited field's key and length, through `put`.
fn put_prefix<F: FnMut(&[u8])>(put: &mut F, field: u8, len: usize) {
    let (v, n) = varint(len as u64);
    let mut buf = [0u8; 11];
    buf[0] = key(field, LEN);
    buf[1..1 + n].copy_from_slice(&v[..n]);
    put(&buf[..1 + n]);
}

fn put_bytes<F: FnMut(&[u8])>(put: &mut F, field: u8, bytes: &[u8]) {
    put_prefix(put, field, bytes.len());
    put(bytes);
}

/// `{1: varint}` (Time{seconds}, Duration{duration}) as field `field`.
fn put_varint_message<F: FnMut(&[u8])>(put: &mut F, field: u8, v: u64) {
    let (b, n) = varint(v);
    let mut buf = [0u8; 13];
    buf[0] = key(field, LEN);
    buf[1] = (1 + n) as u8; // < 128
    buf[2] = key(1, VARINT);
    buf[3..3 + n].copy_from_slice(&b[..n]);
    put(&buf[..3 + n]);
}

fn varint_message_len(v: u64) -> usize {
    field_len(1 + varint_len(v))
}

/// One `map<string,Quantity>` entry: {1: key, 2: Quantity{1: text}}.
fn quantity_entry_len(k: &str, text: &[u8]) -> usize {
    field_len(field_len(k.len()) + field_len(field_len(text.len())))
}

fn put_quantity_entry<F: FnMut(&[u8])>(put: &mut F, field: u8, k: &str, text: &[u8]) {
    let value = field_len(text.len());
    let body = field_len(k.len()) + field_len(value);
    if body < 128 && k.len() + text.len() <= 48 {
        // Every length fits one varint byte: the entry in one piece (this runs
        // twice per container, 300,000 times for a full list).
        let mut buf = [0u8; 64];
        buf[0] = key(field, LEN);
        buf[1] = body as u8;
        buf[2] = key(1, LEN);
        buf[3] = k.len() as u8;
        let mut n = 4 + k.len();
        buf[4..n].copy_from_slice(k.as_bytes());
        buf[n] = key(2, LEN);
        buf[n + 1] = value as u8;
        buf[n + 2] = key(1, LEN);
        buf[n + 3] = text.len() as u8;
        n += 4;
        buf[n..n + text.len()].copy_from_slice(text);
        put(&buf[..n + text.len()]);
        return;
    }
    put_prefix(put, field, body);
    put_bytes(put, 1, k.as_bytes());
    put_prefix(put, 2, value);
    put_bytes(put, 1, text);
}

/// Up to three length prefixes in one piece.
struct Prefixes {
    buf: [u8; 33],
    len: usize,
}

impl Prefixes {
    fn new() -> Self {
        Prefixes {
            buf: [0; 33],
            len: 0,
        }
    }

    fn add(&mut self, field: u8, len: usize) -> &mut Self {
        let (v, n) = varint(len as u64);
        self.buf[self.len] = key(field, LEN);
        self.buf[self.len + 1..self.len + 1 + n].copy_from_slice(&v[..n]);
        self.len += 1 + n;
        self
    }

    fn put<F: FnMut(&[u8])>(&self, put: &mut F) {
        put(&self.buf[..self.len]);
    }
}

/// Bytes of item `i`'s message after its metadata (timestamp, window,
/// usage or containers): the same for every request.
pub fn tail_len(snap: &Snapshot, kind: Kind, i: usize, values: Fields<'_>) -> usize {
    let (ts_ms, window_ms) = match kind {
        Kind::Node => (snap.nodes.timestamp_ms[i], snap.nodes.window_ms[i]),
        Kind::Pod => (snap.pods.timestamp_ms[i], snap.pods.window_ms[i]),
    };
    let mut len = varint_message_len(ms_to_seconds(ts_ms) as u64)
        + varint_message_len(ms_to_ns(window_ms) as u64);
    match kind {
        Kind::Node => {
            let v = values.node();
            len += quantity_entry_len("cpu", v.cpu) + quantity_entry_len("memory", v.memory);
        }
        Kind::Pod => {
            let mut v = values.pod();
            let names = &snap.containers.name;
            for j in snap.pods.containers_of(i) {
                let (cpu, memory) = v.containers.container();
                len += field_len(container_len(&names[j], cpu, memory));
            }
        }
    }
    len
}

/// Bytes of item `i`'s ObjectMeta: names, the creationTimestamp field `now`
/// and the labels.
pub fn meta_len(snap: &Snapshot, kind: Kind, i: usize, now: &[u8], labels: &LabelSet) -> usize {
    let names = match kind {
        Kind::Node => field_len(snap.nodes.name[i].len()),
        Kind::Pod => field_len(snap.pods.name[i].len()) + field_len(snap.pods.namespace[i].len()),
    };
    names + now.len() + labels.proto().len()
}

/// Item `i` as a message whose metadata is `meta_len` bytes (with `now`, a
/// protobuf Time field, and `labels`) and the rest `tail_len`; with
/// `list_item`, as field 2 of a list.
#[allow(clippy::too_many_arguments)]
pub fn item<F: FnMut(&[u8])>(
    put: &mut F,
    snap: &Snapshot,
    kind: Kind,
    i: usize,
    now: &[u8],
    labels: &LabelSet,
    values: Fields<'_>,
    list_item: bool,
    meta_len: usize,
    tail_len: usize,
) {
    let (name, namespace, ts_ms, window_ms) = match kind {
        Kind::Node => {
            let n = &snap.nodes;
            (&n.name[i], None, n.timestamp_ms[i], n.window_ms[i])
        }
        Kind::Pod => {
            let p = &snap.pods;
            (
                &p.name[i],
                Some(&p.namespace[i]),
                p.timestamp_ms[i],
                p.window_ms[i],
            )
        }
    };
    let mut head = Prefixes::new();
    if list_item {
        head.add(2, field_len(meta_len) + tail_len);
    }
    head.add(1, meta_len).add(1, name.len()).put(put);
    put(name.as_bytes());
    if let Some(ns) = namespace {
        put_bytes(put, 3, ns.as_bytes());
    }
    put(now);
    put(labels.proto());
    put_varint_message(put, 2, ms_to_seconds(ts_ms) as u64);
    put_varint_message(put, 3, ms_to_ns(window_ms) as u64);
    match kind {
        Kind::Node => {
            let v = values.node();
            put_quantity_entry(put, 4, "cpu", v.cpu);
            put_quantity_entry(put, 4, "memory", v.memory);
        }
        Kind::Pod => {
            let mut v = values.pod();
            let names = &snap.containers.name;
            for j in snap.pods.containers_of(i) {
                let (cpu, memory) = v.containers.container();
                Prefixes::new()
                    .add(4, container_len(&names[j], cpu, memory))
                    .add(1, names[j].len())
                    .put(put);
                put(names[j].as_bytes());
                put_quantity_entry(put, 2, "cpu", cpu);
                put_quantity_entry(put, 2, "memory", memory);
            }
        }
    }
}

/// ContainerMetrics {name=1, usage=2 (map)}.
fn container_len(name: &str, cpu: &[u8], memory: &[u8]) -> usize {
    field_len(name.len()) + quantity_entry_len("cpu", cpu) + quantity_entry_len("memory", memory)
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
        put_quantity_entry(&mut |b: &[u8]| out.extend_from_slice(b), 4, "cpu", b"1m");
        assert_eq!(out.len(), quantity_entry_len("cpu", b"1m"));
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
