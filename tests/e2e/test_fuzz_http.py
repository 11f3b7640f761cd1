"""Fuzzing the HTTP surface: schemathesis against the server's own OpenAPI v3 documents (both
API versions), over real TLS, against a real `python -m kubemetrics` scraping the simulator.

Every request gets random label and field selectors (grammar-shaped, and plain random text),
random query parameters, `Accept` values (JSON, protobuf, Table, wildcards, bogus media types,
random text), `Accept-Encoding` and other headers; schemathesis supplies the operations, path
parameters and values that do not fit the document (negative mode). Beside the documented
operations, random methods on every path the server lists, and malformed request heads on raw
TLS sockets (the listener's and aiohttp's own refusals).

What must hold for every answer: no 5xx; every error (4xx) body a `Status` (kind Status,
apiVersion v1, status Failure, `code` = the HTTP code), except the probes and /metrics, whose
plain-text bodies are upstream's; a 200 from a metrics operation in the format asked for, and
valid against the document when JSON.

`make test` runs a bounded, derandomized version (the same examples every run, ~20 s).
`FUZZ_HTTP_EXAMPLES=N` (e.g. `make fuzz-http`, N=5000) runs N random examples per test instead;
hypothesis prints how to reproduce anything it finds.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.helpers.e2e import PROTOBUF, Cluster

LONG = int(os.environ.get("FUZZ_HTTP_EXAMPLES", "0") or 0)
FUZZ = settings(
    max_examples=LONG or 150,
    derandomize=not LONG,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
    print_blob=True,
)
# Paths whose bodies are upstream's plain text (probes, Prometheus text), not Status objects.
PLAIN_TEXT = re.compile(r"^/(livez|readyz|healthz|metrics)(/|$)")
HEADER_TIMEOUT = 2.0
PROTOBUF_MAGIC = b"k8s\x00"
METRICS_KINDS = {"NodeMetrics", "NodeMetricsList", "PodMetrics", "PodMetricsList", "Table"}


# --- the server under test ------------------------------------------------------------------------


class _ContextAdapter(requests.adapters.HTTPAdapter):
    def __init__(self, context: ssl.SSLContext) -> None:
        self._context = context
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["ssl_context"] = self._context
        super().init_poolmanager(*args, **kwargs)


@dataclass
class Target:
    cluster: Cluster
    session: requests.Session
    schemas: dict[str, Any]  # version → schemathesis schema
    paths: list[str]  # what "/" lists

    @property
    def url(self) -> str:
        return self.cluster.server.url

    def client_context(self) -> ssl.SSLContext:
        return self.cluster.server.ssl_context()


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    with Cluster.start(
        tmp_path_factory.mktemp("fuzz"),
        nodes=3,
        pods_per_node=4,
        seed=17,
        # heads that never end are cut (408) within the raw exchange's wait
        server_extra=[f"--read-header-timeout={HEADER_TIMEOUT:g}s"],
    ) as c:
        s = requests.Session()
        # the server's own TLS context: its CA, the admin's client certificate
        s.mount("https://", _ContextAdapter(c.server.ssl_context()))
        index = s.get(f"{c.server.url}/openapi/v3", timeout=30).json()
        schemas = {}
        for key, entry in sorted(index["paths"].items()):
            version = key.rpartition("/")[2]
            doc = s.get(c.server.url + entry["serverRelativeURL"], timeout=30).json()
            schemas[version] = schemathesis.openapi.from_dict(doc)
        assert set(schemas) == {"v1", "v1beta1"}, sorted(index["paths"])
        paths = s.get(f"{c.server.url}/", timeout=30).json()["paths"]
        try:
            yield Target(c, s, schemas, paths)
        finally:
            s.close()
            # the server must have survived all of it
            assert c.server.running, c.server.log_tail()
            status, _, _ = c.server.get("/readyz")
            assert status == 200
            # and wrote no error line for any of it (malformed requests are logged at V(2))
            errors = [ln for ln in c.server.log().splitlines() if ln.startswith("E")]
            assert not errors, "\n".join(errors[:20])


# --- what every answer must be --------------------------------------------------------------------


def check_answer(
    path: str, status: int, content_type: str, body: bytes, *, head: bool = False
) -> Any:
    """The rules every answer follows; the decoded Status for an error (or None)."""
    assert status < 500, f"{status} for {path}: {body[:500]!r}"
    if status < 400 or head or PLAIN_TEXT.match(path):
        return None
    assert content_type.split(";")[0].strip() == "application/json", (status, content_type, body)
    doc = json.loads(body)
    assert isinstance(doc, dict), body
    assert doc.get("kind") == "Status" and doc.get("apiVersion") == "v1", doc
    assert doc.get("status") == "Failure" and doc.get("code") == status, (status, doc)
    assert isinstance(doc.get("message", ""), str) and isinstance(doc.get("reason", ""), str)
    return doc


# --- random inputs --------------------------------------------------------------------------------


_PRINTABLE = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
_ANY_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40)
_LABEL_CHARS = "abcxyz09-_./!=,()\\ \t"

ACCEPTS = [
    "application/json",
    PROTOBUF,
    f"{PROTOBUF}, */*",
    "application/json;as=Table;v=v1;g=meta.k8s.io",
    "application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json",
    "application/json;as=Table;v=v1;g=meta.k8s.io;q=0.9, application/json;q=0.5",
    "application/json;as=Table;v=v2;g=meta.k8s.io",
    "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io",
    "application/vnd.kubernetes.protobuf;as=Table;v=v1;g=meta.k8s.io",
    "application/json;stream=watch",
    "application/yaml",
    "text/html",
    "text/plain;q=1, application/json;q=0.1",
    "*/*",
    "application/*",
    "*",
    "",
    "bogus",
    "application/json;q=abc",
    "application/json;q=0",
    ";;;,,,",
    'application/json;as="Table";v="v1";g="meta.k8s.io"',
]


@st.composite
def media_ranges(draw: st.DrawFn) -> str:
    """An Accept header built from pieces: types, parameters, weights, junk."""
    parts = []
    for _ in range(draw(st.integers(1, 4))):
        mime = draw(
            st.sampled_from(
                ["application/json", PROTOBUF, "*/*", "application/*", "text/*", "x/y", "json", ""]
            )
        )
        params = draw(
            st.lists(
                st.sampled_from(
                    [
                        "as=Table",
                        "v=v1",
                        "v=v1beta1",
                        "g=meta.k8s.io",
                        "g=x",
                        "stream=watch",
                        "q=0.5",
                        "q=0",
                        "q=1.5",
                        "q=-1",
                        "q=nan",
                        "charset=utf-8",
                        "=",
                        "as",
                    ]
                ),
                max_size=4,
            )
        )
        parts.append(";".join([mime, *params]))
    return ", ".join(parts)


ACCEPT = st.one_of(
    st.sampled_from(ACCEPTS), media_ranges(), st.text(_PRINTABLE, max_size=60).map(str.strip)
)


@st.composite
def label_selectors(draw: st.DrawFn) -> str:
    word = st.one_of(
        st.sampled_from(["app", "tier", "kubernetes.io/hostname", "a.b/c-d", "x" * 64, "x" * 300]),
        st.text(st.sampled_from(_LABEL_CHARS), max_size=12),
        _ANY_TEXT,
    )
    terms = []
    for _ in range(draw(st.integers(0, 4))):
        key, value = draw(word), draw(word)
        op = draw(st.sampled_from(["=", "==", "!=", " in ", " notin ", "!", "", ">", "<", " "]))
        if op in (" in ", " notin "):
            values = draw(st.lists(word, max_size=3))
            value = draw(st.sampled_from(["(", "", "(("])) + ",".join(values)
            value += draw(st.sampled_from([")", "", "))"]))
        if op == "!":
            terms.append("!" + key)
        else:
            terms.append(f"{key}{op}{value}" if op else key)
    return draw(st.sampled_from([",", ", ", ";"])).join(terms)


@st.composite
def field_selectors(draw: st.DrawFn) -> str:
    name = st.sampled_from(
        [
            "metadata.name",
            "metadata.namespace",
            "spec.nodeName",
            "status.phase",
            "bogus",
            "metadata.name\\,x",
            "",
        ]
    )
    value = st.one_of(
        st.sampled_from(["node-0001", "kube-system", "a\\,b", "a\\=b", "\\", "a\\x", "..", "a/b"]),
        _ANY_TEXT,
    )
    terms = [
        f"{draw(name)}{draw(st.sampled_from(['=', '==', '!=', '', '=!']))}{draw(value)}"
        for _ in range(draw(st.integers(0, 3)))
    ]
    return ",".join(terms)


QUERY_EXTRAS = st.dictionaries(
    st.sampled_from(
        [
            "watch",
            "includeObject",
            "limit",
            "continue",
            "resourceVersion",
            "resourceVersionMatch",
            "timeoutSeconds",
            "pretty",
            "allowWatchBookmarks",
            "sendInitialEvents",
            "hash",
        ]
    ),
    st.one_of(
        st.sampled_from(["true", "1", "false", "0", "Object", "None", "Metadata", "-1", "x", ""]),
        _ANY_TEXT,
    ),
    max_size=3,
)

HEADER_EXTRAS = st.dictionaries(
    st.sampled_from(
        [
            "Accept-Encoding",
            "If-None-Match",
            "Authorization",
            "X-Remote-User",
            "X-Remote-Group",
            "Impersonate-User",
            "Content-Type",
            "Range",
            "Connection",
            "X-Whatever",
        ]
    ),
    st.one_of(
        st.sampled_from(
            ["gzip", "identity", "br", "gzip;q=0", "*", "deflate, gzip", "Bearer junk", "close"]
        ),
        st.text(_PRINTABLE, max_size=60).map(str.strip),  # requests refuses edge whitespace
    ),
    max_size=3,
)


# --- the documented operations --------------------------------------------------------------------


def _operations(t: Target, version: str) -> list[Any]:
    ops = [r.ok() for r in t.schemas[version].get_all_operations()]
    assert len(ops) == 5, [o.label for o in ops]
    return ops


def _fuzz_operations(t: Target, version: str, data: st.DataObject) -> None:
    op = data.draw(st.sampled_from(_operations(t, version)), label="operation")
    mode = data.draw(st.sampled_from([GenerationMode.POSITIVE, GenerationMode.NEGATIVE]))
    case = data.draw(op.as_strategy(generation_mode=mode), label="case")
    listing = "{name}" not in op.path
    query = dict(case.query or {})
    if listing:
        if data.draw(st.booleans(), label="grammar label selector"):
            query["labelSelector"] = data.draw(label_selectors(), label="labelSelector")
        if data.draw(st.booleans(), label="grammar field selector"):
            query["fieldSelector"] = data.draw(field_selectors(), label="fieldSelector")
    query.update(data.draw(QUERY_EXTRAS, label="query extras"))
    case.query = query
    headers = {"Accept": data.draw(ACCEPT, label="Accept")}
    headers.update(data.draw(HEADER_EXTRAS, label="header extras"))
    resp = case.call(base_url=t.url, session=t.session, headers=headers, timeout=60)
    path = resp.request.path_url.partition("?")[0]
    ctype = (resp.headers.get("content-type") or [""])[0]  # schemathesis' Response
    check_answer(path, resp.status_code, ctype, resp.content)
    if resp.status_code != 200:
        return
    if ctype == PROTOBUF:
        assert resp.content.startswith(PROTOBUF_MAGIC), resp.content[:64]
        return
    assert ctype.startswith("application/json"), ctype
    doc = json.loads(resp.content)
    assert doc.get("kind") in METRICS_KINDS, doc
    if doc["kind"] != "Table":
        case.validate_response(resp, checks=[response_schema_conformance])


@FUZZ
@given(data=st.data())
def test_fuzz_v1beta1_operations(target: Target, data: st.DataObject) -> None:
    _fuzz_operations(target, "v1beta1", data)


@FUZZ
@given(data=st.data())
def test_fuzz_v1_operations(target: Target, data: st.DataObject) -> None:
    _fuzz_operations(target, "v1", data)


# --- every other path, any method -----------------------------------------------------------------


@FUZZ
@given(data=st.data())
def test_fuzz_every_path_and_method(target: Target, data: st.DataObject) -> None:
    t = target
    path = data.draw(st.sampled_from(t.paths), label="path")
    suffix = data.draw(
        st.one_of(
            st.just(""),
            st.sampled_from(["/", "/x", "/%2F", "/..", "/%00", "//", "/nodes/x/y", "?hash=1"]),
            st.text(_PRINTABLE, max_size=20).map(lambda s: "/" + requests.utils.quote(s)),
        ),
        label="suffix",
    )
    method = data.draw(
        st.sampled_from(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "FOO"])
    )
    headers = {"Accept": data.draw(ACCEPT, label="Accept")}
    headers.update(data.draw(HEADER_EXTRAS, label="header extras"))
    body = data.draw(st.one_of(st.none(), st.binary(max_size=2048)), label="body")
    resp = t.session.request(
        method,
        t.url + path + suffix,
        headers=headers,
        data=body,
        timeout=60,
        allow_redirects=False,
    )
    check_answer(
        path + suffix,
        resp.status_code,
        resp.headers.get("Content-Type", ""),
        resp.content,
        head=method == "HEAD",
    )


# --- malformed heads on raw TLS -------------------------------------------------------------------


def raw_exchange(t: Target, head: bytes) -> bytes:
    """`head` on a new TLS connection; all the server sends until it closes (or 10 s pass)."""
    host, port = t.cluster.server.host, t.cluster.server.port
    got = b""
    with (
        socket.create_connection((host, port), timeout=10) as raw,
        t.client_context().wrap_socket(raw, server_hostname=host) as s,
    ):
        s.settimeout(10)
        with contextlib.suppress(OSError):
            s.sendall(head)
        with contextlib.suppress(OSError):  # timeouts included
            while chunk := s.recv(65536):
                got += chunk
    return got


def parse_answer(raw: bytes) -> tuple[int, str, bytes]:
    """(status, content type, body) of the first answer in `raw`."""
    head, sep, rest = raw.partition(b"\r\n\r\n")
    assert sep, raw[:300]
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    fields = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    length = int(fields.get("content-length", len(rest)))
    return status, fields.get("content-type", ""), rest[:length]


_TOKEN = st.text(st.sampled_from("GETPOSTabc-_!@ \t/"), min_size=0, max_size=10)


@st.composite
def malformed_heads(draw: st.DrawFn) -> bytes:
    method = draw(st.one_of(st.sampled_from(["GET", "POST", "PRI", "G@T", "", "get"]), _TOKEN))
    target = draw(
        st.one_of(
            st.sampled_from(["/", "/apis", "*", "http://x/apis", "/%zz", "/a b", "", "/\x7f"]),
            st.text(_PRINTABLE, max_size=30),
        )
    )
    version = draw(
        st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/9.9", "HTTP/1", "http/1.1", "", "HTTP/2.0"])
    )
    # a head that never ends (bare CRs) waits for the deadline: rare, it costs seconds
    line_end = draw(st.sampled_from([b"\r\n"] * 6 + [b"\n", b"\r"]))
    head = f"{method} {target} {version}".encode("latin-1") + line_end
    for _ in range(draw(st.integers(0, 6))):
        name = draw(
            st.one_of(
                st.sampled_from(
                    ["Host", "Content-Length", "Transfer-Encoding", "Accept", "Bad Name", "", "X"]
                ),
                st.text(_PRINTABLE, max_size=12),
            )
        )
        value = draw(
            st.one_of(
                st.sampled_from(["x", "-1", "abc", "chunked", "gzip, chunked", "1, 2", "\x01"]),
                st.binary(max_size=20).map(lambda b: b.decode("latin-1")),
            )
        )
        head += f"{name}: {value}".encode("latin-1") + line_end
    # some heads are too long, in one line or in many
    if draw(st.integers(0, 9)) == 0:
        head += b"X-Long: " + b"a" * draw(st.sampled_from([9000, 70000, 1_100_000])) + line_end
    if draw(st.integers(0, 9)) == 0:
        head += b"X-Many: a\r\n" * draw(st.sampled_from([200, 5000]))
    return head + line_end + draw(st.binary(max_size=64))


@settings(FUZZ, max_examples=LONG or 60)
@given(head=malformed_heads())
def test_fuzz_malformed_heads(target: Target, head: bytes) -> None:
    raw = raw_exchange(target, head)
    if not raw:
        return  # closed without an answer (e.g. the head never ended before the deadline)
    status, ctype, body = parse_answer(raw)
    path = head.split(b" ")[1].decode("latin-1") if head.count(b" ") >= 2 else ""
    check_answer(path, status, ctype, body)
