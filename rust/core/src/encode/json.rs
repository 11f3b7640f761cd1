//! JSON items, framed per request around the view's values.
//!
//! An item is `{` metadata rest, where metadata is
//! `"metadata":{"name":…[,"namespace":…],"creationTimestamp":"NOW"[,"labels":{…}]}`
//! and rest `,"timestamp":…,"window":…,` + usage (nodes) or containers (pods) + `}`.
//! A Table row's object reuses both pieces.

use super::values::Fields;
use crate::inventory::LabelSet;
use crate::snapshot::Snapshot;
use crate::view::Kind;
use crate::wire::json::write_str;

/// Puts `s` as a JSON string: as it is, quoted, in the usual case of a name
/// that needs no escaping (Kubernetes names never do), else escaped.
pub fn put_str<F: FnMut(&[u8])>(put: &mut F, s: &str) {
    let plain = s
        .bytes()
        .all(|b| b >= 0x20 && !matches!(b, b'"' | b'\\' | b'<' | b'>' | b'&' | 0xe2));
    if plain {
        put(b"\"");
        put(s.as_bytes());
        put(b"\"");
    } else {
        let mut out = Vec::with_capacity(s.len() + 8);
        write_str(&mut out, s);
        put(&out);
    }
}

/// `"metadata":{…}` of item `i`.
pub fn metadata<F: FnMut(&[u8])>(
    put: &mut F,
    snap: &Snapshot,
    kind: Kind,
    i: usize,
    now: &[u8],
    labels: &LabelSet,
) {
    put(b"\"metadata\":{\"name\":");
    match kind {
        Kind::Node => put_str(put, &snap.nodes.name[i]),
        Kind::Pod => {
            put_str(put, &snap.pods.name[i]);
            put(b",\"namespace\":");
            put_str(put, &snap.pods.namespace[i]);
        }
    }
    put(b",\"creationTimestamp\":\"");
    put(now);
    put(b"\"");
    put(labels.json());
    put(b"}");
}

/// Everything after the metadata of item `i`, closing brace included.
pub fn rest<F: FnMut(&[u8])>(
    put: &mut F,
    snap: &Snapshot,
    kind: Kind,
    i: usize,
    values: Fields<'_>,
) {
    match kind {
        Kind::Node => {
            let v = values.node();
            time_window(put, v.timestamp, v.window);
            put(b"\"usage\":");
            usage(put, v.cpu, v.memory);
            put(b"}");
        }
        Kind::Pod => {
            let mut v = values.pod();
            time_window(put, v.timestamp, v.window);
            put(b"\"containers\":[");
            let names = &snap.containers.name;
            for (k, j) in snap.pods.containers_of(i).enumerate() {
                let (cpu, memory) = v.containers.container();
                put(if k > 0 { b",{\"name\":" } else { b"{\"name\":" });
                put_str(put, &names[j]);
                put(b",\"usage\":");
                usage(put, cpu, memory);
                put(b"}");
            }
            put(b"]}");
        }
    }
}

fn time_window<F: FnMut(&[u8])>(put: &mut F, timestamp: &[u8], window: &[u8]) {
    put(b",\"timestamp\":\"");
    put(timestamp);
    put(b"\",\"window\":\"");
    put(window);
    put(b"\",");
}

fn usage<F: FnMut(&[u8])>(put: &mut F, cpu: &[u8], memory: &[u8]) {
    put(b"{\"cpu\":\"");
    put(cpu);
    put(b"\",\"memory\":\"");
    put(memory);
    put(b"\"}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped_only_when_needed() {
        let put_all = |s: &str| {
            let mut out = Vec::new();
            put_str(&mut |b: &[u8]| out.extend_from_slice(b), s);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(put_all("web-7c9d"), "\"web-7c9d\"");
        assert_eq!(put_all("a\"b"), r#""a\"b""#);
        assert_eq!(put_all("<x>"), r#""\u003cx\u003e""#);
        assert_eq!(put_all("x\u{2028}"), r#""x\u2028""#);
        assert_eq!(put_all("é\u{7f}"), "\"é\u{7f}\"");
    }
}
