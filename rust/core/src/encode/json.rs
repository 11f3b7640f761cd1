//! JSON pieces: Go-compatible string escaping and the per-item fragments.
//!
//! A fragment is an item without its leading `{` and without the parts that
//! vary per request, split where `creationTimestamp`'s value goes:
//! `"metadata":{"name":…,"creationTimestamp":"` ‖ `},"timestamp":…}`.
//! An item is then `{` [kind/apiVersion] head NOW `"` labels tail.

use crate::quantity::write_rfc3339;
use crate::quantity::{ms_to_ns, ms_to_seconds, write_cpu, write_duration_ns, write_memory};
use crate::snapshot::Snapshot;

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Appends `s` as a JSON string the way Go's encoding/json does (which the
/// API server uses): `<`, `>`, `&`, U+2028 and U+2029 escaped too.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let escape: Option<&[u8]> = match b {
            b'"' => Some(b"\\\""),
            b'\\' => Some(b"\\\\"),
            b'\n' => Some(b"\\n"),
            b'\r' => Some(b"\\r"),
            b'\t' => Some(b"\\t"),
            0x08 => Some(b"\\b"),
            0x0c => Some(b"\\f"),
            0x00..=0x1f | b'<' | b'>' | b'&' => Some(b""),
            // U+2028 / U+2029 are E2 80 A8 / E2 80 A9.
            0xe2 if bytes.get(i + 1) == Some(&0x80)
                && matches!(bytes.get(i + 2), Some(0xa8 | 0xa9)) =>
            {
                out.extend_from_slice(&bytes[start..i]);
                out.extend_from_slice(if bytes[i + 2] == 0xa8 {
                    b"\\u2028"
                } else {
                    b"\\u2029"
                });
                i += 3;
                start = i;
                continue;
            }
            _ => None,
        };
        if let Some(esc) = escape {
            out.extend_from_slice(&bytes[start..i]);
            if esc.is_empty() {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[(b >> 4) as usize]);
                out.push(HEX[(b & 0xf) as usize]);
            } else {
                out.extend_from_slice(esc);
            }
            start = i + 1;
        }
        i += 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn esc(s: &str) -> String {
        let mut out = Vec::new();
        write_str(&mut out, s);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn escapes_like_go() {
        assert_eq!(esc("plain"), r#""plain""#);
        assert_eq!(esc("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(esc("\n\r\t\u{8}\u{c}"), r#""\n\r\t\b\f""#);
        assert_eq!(esc("\u{0}\u{1f}\u{1b}"), r#""\u0000\u001f\u001b""#);
        assert_eq!(esc("<a&b>"), r#""\u003ca\u0026b\u003e""#);
        assert_eq!(esc("x\u{2028}y\u{2029}"), r#""x\u2028y\u2029""#);
        assert_eq!(esc("héllo 😀 \u{7f}"), "\"héllo 😀 \u{7f}\"");
        // Neighbours of U+2028/9 share its first bytes but stay as they are.
        assert_eq!(esc("\u{2027}\u{202a}\u{e2}"), "\"\u{2027}\u{202a}\u{e2}\"");
    }
}
