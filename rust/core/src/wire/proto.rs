//! Protobuf wire primitives: varints, keys, length-delimited fields, and the
//! `meta/v1` `Time` and `Duration` messages every metrics object carries.

pub const LEN: u8 = 2;
pub const VARINT: u8 = 0;

/// The one varint encoder: `v` as (bytes, length) in a stack buffer.
pub fn varint(v: u64) -> ([u8; 10], usize) {
    let mut buf = [0u8; 10];
    let mut n = 0;
    let mut v = v;
    while v >= 0x80 {
        buf[n] = (v as u8) | 0x80;
        v >>= 7;
        n += 1;
    }
    buf[n] = v as u8;
    (buf, n + 1)
}

pub fn write_varint(out: &mut Vec<u8>, v: u64) {
    let (buf, n) = varint(v);
    out.extend_from_slice(&buf[..n]);
}

pub fn varint_len(v: u64) -> usize {
    // 1 byte per started group of 7 bits; 0 still takes one byte.
    let bits = 64 - (v | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Field key for fields < 16 (one byte), which is all the metrics API uses.
pub fn key(field: u8, wire: u8) -> u8 {
    (field << 3) | wire
}

/// A length-delimited field's key and length prefix.
pub fn write_len_prefix(out: &mut Vec<u8>, field: u8, len: usize) {
    out.push(key(field, LEN));
    write_varint(out, len as u64);
}

pub fn write_bytes_field(out: &mut Vec<u8>, field: u8, bytes: &[u8]) {
    write_len_prefix(out, field, bytes.len());
    out.extend_from_slice(bytes);
}

/// Total size of a length-delimited field with a body of `len` bytes.
pub fn field_len(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

/// One `map<string,string>` entry as field `field`: {1: key, 2: value}.
pub fn write_string_map_entry(out: &mut Vec<u8>, field: u8, k: &str, v: &str) {
    write_len_prefix(out, field, field_len(k.len()) + field_len(v.len()));
    write_bytes_field(out, 1, k.as_bytes());
    write_bytes_field(out, 2, v.as_bytes());
}

/// A message `{1: varint}` as field `field`: `Time{seconds}` (whole seconds)
/// and `Duration{duration}` (nanoseconds) are both this shape.
fn write_varint_message(out: &mut Vec<u8>, field: u8, v: u64) {
    write_len_prefix(out, field, 1 + varint_len(v));
    out.push(key(1, VARINT));
    write_varint(out, v);
}

/// `Time{seconds}` as field `field` (whole seconds, like the JSON form).
pub fn write_time_field(out: &mut Vec<u8>, field: u8, unix_seconds: i64) {
    // two's complement, as protobuf int64
    write_varint_message(out, field, unix_seconds as u64);
}

pub fn time_field_len(unix_seconds: i64) -> usize {
    field_len(1 + varint_len(unix_seconds as u64))
}

/// `Duration{duration}` in nanoseconds as field `field`.
pub fn write_duration_field(out: &mut Vec<u8>, field: u8, ns: i64) {
    write_varint_message(out, field, ns as u64);
}

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
            let (buf, n) = varint(v);
            assert_eq!(&buf[..n], &bytes[..]);
        }
    }

    #[test]
    fn time_and_map_entries() {
        let mut out = Vec::new();
        write_time_field(&mut out, 8, 1);
        assert_eq!(out, [0x42, 0x02, 0x08, 0x01]);
        assert_eq!(time_field_len(1), 4);
        assert_eq!(time_field_len(1_735_032_833), 8);
        out.clear();
        write_string_map_entry(&mut out, 11, "a", "bc");
        assert_eq!(out, [0x5a, 0x07, 0x0a, 0x01, b'a', 0x12, 0x02, b'b', b'c']);
        out.clear();
        write_duration_field(&mut out, 3, 300);
        assert_eq!(out, [0x1a, 0x03, 0x08, 0xac, 0x02]);
    }
}
