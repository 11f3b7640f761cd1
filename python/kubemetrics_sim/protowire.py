"""Just enough of the protobuf wire format: the simulator reads the review requests kubectl
and client-go send as protobuf, and the tests read what the server sends (`fields`).

Kubernetes protobuf bodies are ``k8s\\0`` + a runtime.Unknown envelope (typeMeta=1, raw=2); raw is
the object (metadata=1, spec=2). We decode the spec into the same dict shape as the JSON form.
"""

from __future__ import annotations

from typing import Any

MAGIC = b"k8s\x00"


def _varint(b: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if i >= len(b):
            raise ValueError("truncated varint")
        c = b[i]
        i += 1
        result |= (c & 0x7F) << shift
        if not c & 0x80:
            return result, i
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def fields(b: bytes, *, skip_fixed: bool = False) -> list[tuple[int, int | bytes]]:
    """One message's (field number, value) pairs in wire order: ints for varints, bytes for
    length-delimited fields. Fixed-width fields (wire types 1 and 5) are refused (the server
    never writes them), or skipped with ``skip_fixed`` (a client's request may hold some).
    ValueError for anything truncated or any other wire type."""
    out: list[tuple[int, int | bytes]] = []
    i = 0
    while i < len(b):
        key, i = _varint(b, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = _varint(b, i)
            out.append((num, v))
        elif wt == 2:
            n, i = _varint(b, i)
            if i + n > len(b):
                raise ValueError("truncated field")
            out.append((num, b[i : i + n]))
            i += n
        elif wt in (1, 5) and skip_fixed:
            i += 8 if wt == 1 else 4
            if i > len(b):
                raise ValueError("truncated field")
        else:
            raise ValueError(f"unsupported wire type {wt}")
    return out


def _strings(b: bytes, names: dict[int, str]) -> dict[str, Any]:
    d: dict[str, Any] = {}
    for num, v in fields(b, skip_fixed=True):
        if num in names and isinstance(v, bytes):
            d[names[num]] = v.decode()
    return d


_RA = {
    1: "namespace",
    2: "verb",
    3: "group",
    4: "version",
    5: "resource",
    6: "subresource",
    7: "name",
}
_NRA = {1: "path", 2: "verb"}


def decode_review(body: bytes, resource: str) -> dict[str, Any]:
    """{kind, spec} from a protobuf TokenReview / (Self|Local)SubjectAccessReview body."""
    if not body.startswith(MAGIC):
        raise ValueError("not a Kubernetes protobuf body")
    raw = b""
    kind = ""
    for num, v in fields(body[4:], skip_fixed=True):
        if num == 1 and isinstance(v, bytes):
            kind = _strings(v, {2: "kind"}).get("kind", "")
        elif num == 2 and isinstance(v, bytes):
            raw = v
    spec_b = b""
    for num, v in fields(raw, skip_fixed=True):
        if num == 2 and isinstance(v, bytes):
            spec_b = v
    spec: dict[str, Any] = {}
    if resource == "tokenreviews":
        for num, v in fields(spec_b, skip_fixed=True):
            if num == 1 and isinstance(v, bytes):
                spec["token"] = v.decode()
            elif num == 2 and isinstance(v, bytes):
                spec.setdefault("audiences", []).append(v.decode())
    else:
        for num, v in fields(spec_b, skip_fixed=True):
            if not isinstance(v, bytes):
                continue
            if num == 1:
                spec["resourceAttributes"] = _strings(v, _RA)
            elif num == 2:
                spec["nonResourceAttributes"] = _strings(v, _NRA)
            elif num == 3:
                spec["user"] = v.decode()
            elif num == 4:
                spec.setdefault("groups", []).append(v.decode())
            elif num == 6:
                spec["uid"] = v.decode()
    return {"kind": kind, "spec": spec}
