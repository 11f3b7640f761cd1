"""Just enough of the protobuf wire format to read what the server sends (test helper)."""

from __future__ import annotations


def read_varint(b: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = b[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def fields(b: bytes) -> list[tuple[int, int | bytes]]:
    """One message's (field number, value) pairs in wire order: ints for varints, bytes for
    length-delimited fields. Any other wire type, or a field running past the end, fails."""
    out: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(b):
        key, pos = read_varint(b, pos)
        num, wire = key >> 3, key & 7
        if wire == 0:
            v, pos = read_varint(b, pos)
            out.append((num, v))
        elif wire == 2:
            n, pos = read_varint(b, pos)
            assert pos + n <= len(b), "truncated length-delimited field"
            out.append((num, b[pos : pos + n]))
            pos += n
        else:
            raise AssertionError(f"unexpected wire type {wire}")
    assert pos == len(b), "message overran its length"
    return out
