"""Content negotiation for metrics.k8s.io responses: `Accept` → JSON, protobuf or Table.

Mirrors kube-apiserver's choice (`NegotiateOutputMediaType`): media ranges are tried in order of
their `q` weight (ties keep the client's order); the first one we can produce wins. `kubectl top`
and the HPA send `application/vnd.kubernetes.protobuf, */*`; `kubectl get` sends the Table
variants followed by a plain `application/json` fallback.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

JSON = "application/json"
PROTOBUF = "application/vnd.kubernetes.protobuf"

SUPPORTED_MEDIA_TYPES: tuple[str, ...] = (JSON, PROTOBUF)


class Format(enum.Enum):
    JSON = "json"
    PROTOBUF = "protobuf"
    TABLE = "table"


@dataclass(frozen=True, slots=True)
class Negotiated:
    """The chosen encoding; `table_version` is the meta.k8s.io version of a Table answer."""

    format: Format
    table_version: str = "v1"

    @property
    def content_type(self) -> str:
        return PROTOBUF if self.format is Format.PROTOBUF else JSON


NEGOTIATED_JSON = Negotiated(Format.JSON)
NEGOTIATED_PROTOBUF = Negotiated(Format.PROTOBUF)


@dataclass(frozen=True, slots=True)
class MediaRange:
    type: str
    subtype: str
    params: dict[str, str]
    q: float


def parse_accept(header: str) -> list[MediaRange]:
    """Parse an `Accept` header into media ranges, sorted by `q` (stable); drops `q=0`."""
    ranges: list[MediaRange] = []
    for part in header.split(","):
        part = part.strip()
        if not part:
            continue
        pieces = part.split(";")
        mime = pieces[0].strip().lower()
        if "/" in mime:
            type_, _, subtype = mime.partition("/")
        elif mime == "*":
            type_, subtype = "*", "*"
        else:
            continue  # not a media range; ignore like Go's goautoneg does
        params: dict[str, str] = {}
        q = 1.0
        for raw in pieces[1:]:
            key, sep, value = raw.partition("=")
            key = key.strip().lower()
            value = value.strip().strip('"')
            if not sep or not key:
                continue
            if key == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
            else:
                params[key] = value
        if q <= 0.0:
            continue
        ranges.append(MediaRange(type_.strip(), subtype.strip(), params, q))
    ranges.sort(key=lambda r: -r.q)
    return ranges


def _choose(r: MediaRange) -> Negotiated | None:
    as_ = r.params.get("as")
    if as_ is not None:
        # Only the server-side Table conversion is offered, and only as JSON.
        if (
            as_ == "Table"
            and r.params.get("g") == "meta.k8s.io"
            and r.params.get("v") in ("v1", "v1beta1")
            and r.type == "application"
            and r.subtype == "json"
        ):
            return Negotiated(Format.TABLE, r.params["v"])
        return None
    if r.params.get("stream"):
        return None  # watch streams are not served
    if r.type == "application" and r.subtype == "json":
        return NEGOTIATED_JSON
    if r.type == "application" and r.subtype == "vnd.kubernetes.protobuf":
        return NEGOTIATED_PROTOBUF
    if (r.type == "application" and r.subtype == "*") or (r.type == "*" and r.subtype == "*"):
        return NEGOTIATED_JSON
    return None


def negotiate(accept: str | None) -> Negotiated | None:
    """The encoding to answer with, or None when nothing acceptable can be produced (406)."""
    if not accept or not accept.strip():
        return NEGOTIATED_JSON
    for r in parse_accept(accept):
        chosen = _choose(r)
        if chosen is not None:
            return chosen
    return None
