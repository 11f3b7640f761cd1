"""The kubelet text parser, through its Python door: `parse_resource_metrics`.

Truth comes from three places: hand-read values of the payloads, an independent
decode of prometheus_client's parse of the same bytes (`reference_decode`), and
the error cases of SPEC §1.
"""

from __future__ import annotations

import math
import random
import sys
import threading
import time

import numpy as np
import pytest

import kubemetrics
from kubemetrics import ParseError
from kubemetrics._native._testing import (
    PARSE_MAX_LINE_BYTES,
    ResourceMetrics,
    parse_resource_metrics,
)
from tests.helpers.paths import PAYLOADS, SHARED_FIXTURES
from tests.helpers.reference import CONTAINER_COLUMNS, reference_decode, rows_of, same


def shared_fixture(name: str) -> bytes:
    return (SHARED_FIXTURES / name).read_bytes()


def payload(name: str) -> bytes:
    return (PAYLOADS / name).read_bytes()


def assert_matches_reference(data: bytes) -> ResourceMetrics:
    m = parse_resource_metrics(data)
    node, rows = reference_decode(data.decode())
    assert m.node.keys() == node.keys()
    assert all(same(m.node[k], node[k]) for k in node), (m.node, node)
    got = rows_of(m)
    assert len(got) == len(rows)
    for g, want in zip(got, rows, strict=True):
        assert all(same(x, y) for x, y in zip(g, want, strict=True)), (g, want)
    return m


# ---- the shared fixtures -------------------------------------------------------


def test_kind_capture_is_one_node_and_seventy_containers() -> None:
    m = assert_matches_reference(shared_fixture("kind-v1.21-70-pods.txt"))
    assert len(m) == 70
    assert m.node == {
        "cpu_seconds": 357.35491,
        "memory_bytes": 1616273408.0,
        "timestamp_ms": 1633253809720,
    }
    c = m.containers
    pods = set(zip(c["namespace"].tolist(), c["pod"].tolist(), strict=True))
    assert len(pods) == 70
    first = rows_of(m)[0]
    assert first[:6] == (
        "kube-system",
        "coredns-558bd4d5db-4dpjz",
        "coredns",
        4.710169,
        12533760.0,
        first[5],
    )
    assert math.isnan(first[5])  # the 1.21 kubelet sends no start times
    assert first[6] == 1633253812125
    assert not np.isnan(c["cpu_seconds"]).any()
    assert not np.isnan(c["memory_bytes"]).any()


def test_current_kubelet_format_is_four_containers_in_three_pods() -> None:
    m = assert_matches_reference(shared_fixture("kubelet-v1.30-3-pods.txt"))
    assert len(m) == 4
    rows = {r[:3]: r[3:] for r in rows_of(m)}
    assert len({k[:2] for k in rows}) == 3
    assert rows[("payments-prod", "checkout-service-7c9d8f6b5-x2k9p", "istio-proxy")] == (
        301.551842117,
        61194240.0,
        1734990010.0,
        1735032833501,
    )
    assert rows[("kube-system", "coredns-7db6d8ff4d-4xk2p", "coredns")] == (
        12.408315,
        18399232.0,
        1734946001.0,
        1735032831170,
    )
    assert m.node["timestamp_ms"] == 1735032836855


# ---- our own payloads ----------------------------------------------------------


def test_shuffled_families_and_labels_join_into_rows() -> None:
    m = assert_matches_reference(payload("kubelet-v1.33-shuffled.txt"))
    assert m.node == {
        "cpu_seconds": 81234.567891234,
        "memory_bytes": 3487920128.0,
        "timestamp_ms": 1748001336911,  # the CPU sample's, not memory's 1748001337203
    }
    rows = {r[2]: r for r in rows_of(m)}
    # First-seen order: the start-time family comes first in this payload.
    assert list(rows) == ["nginx", "log-shipper", "postgres", "migrate"]
    assert rows["log-shipper"][3:] == (12.004441, 25165824.0, 1747987211.9336228, 1748001335120)
    assert rows["postgres"][3:] == (1234.5, 268435456.0, 1747900100.0, 1748001330017)
    # A container that only has a start time is reported as such (the store drops its pod).
    migrate = rows["migrate"]
    assert math.isnan(migrate[3]) and math.isnan(migrate[4])
    assert migrate[5:] == (1748001300.0, 0)


def test_edge_case_payload_decodes_per_spec() -> None:
    data = payload("kubelet-edge-cases.txt")
    assert not data.endswith(b"\n")
    m = assert_matches_reference(data)
    assert m.node == {"cpu_seconds": 5.0, "memory_bytes": 500.0, "timestamp_ms": -1000}
    rows = {r[:3]: r[3:] for r in rows_of(m)}
    assert list(rows) == [
        ("a\\b", 'say "hi"', "two\nlines"),
        ("ns", "p", "nan-cpu"),
        ("ns", "p", "negative"),
        ("ns", "p", "no-ts"),
        ("ünï", "日本-0", "c"),
    ]
    assert rows[("a\\b", 'say "hi"', "two\nlines")] == (1000.0, 1048576.0, 1.7e9, 1748001336000)
    nan_cpu = rows[("ns", "p", "nan-cpu")]
    assert all(math.isnan(v) for v in nan_cpu[:3]) and nan_cpu[3] == 17
    negative = rows[("ns", "p", "negative")]
    assert math.isnan(negative[0]) and negative[1] == 0.0 and math.copysign(1, negative[1]) == 1
    assert rows[("ns", "p", "no-ts")][3] == 0
    assert rows[("ünï", "日本-0", "c")][0] == 1e-05


def test_scrape_error_payload_has_a_node_and_no_containers() -> None:
    m = assert_matches_reference(payload("kubelet-scrape-error.txt"))
    assert len(m) == 0
    assert m.node == {
        "cpu_seconds": 120.5,
        "memory_bytes": 1073741824.0,
        "timestamp_ms": 1748001400000,
    }
    for col in m.containers.values():
        assert len(col) == 0


@pytest.mark.parametrize("name", ["kubelet-v1.33-shuffled.txt", "kubelet-edge-cases.txt"])
def test_line_endings_and_final_newline_do_not_matter(name: str) -> None:
    data = payload(name)
    want = rows_of(parse_resource_metrics(data))
    for variant in (
        data.replace(b"\n", b"\r\n"),
        data.rstrip(b"\n"),
        data + b"\n\n",
        data.rstrip(b"\n") + b"\r",
    ):
        got = rows_of(parse_resource_metrics(variant))
        assert len(got) == len(want)
        assert all(
            same(x, y) for g, w in zip(got, want, strict=True) for x, y in zip(g, w, strict=True)
        )


def test_empty_and_comment_only_payloads_are_empty() -> None:
    for data in (b"", b"\n", b"# HELP x y\n# TYPE x gauge\n", b"   \t\r\n"):
        m = parse_resource_metrics(data)
        assert len(m) == 0
        assert math.isnan(m.node["cpu_seconds"]) and math.isnan(m.node["memory_bytes"])
        assert m.node["timestamp_ms"] == 0


# ---- the Python surface ----------------------------------------------------------


def test_columns_have_the_documented_types() -> None:
    m = parse_resource_metrics(shared_fixture("kubelet-v1.30-3-pods.txt"))
    assert isinstance(m, ResourceMetrics)
    c = m.containers
    assert tuple(c) == CONTAINER_COLUMNS
    for k in ("namespace", "pod", "container"):
        assert c[k].dtype == np.dtype(object)
        assert all(type(v) is str for v in c[k])
    for k in ("cpu_seconds", "memory_bytes", "start_time_seconds"):
        assert c[k].dtype == np.float64
    assert c["timestamp_ms"].dtype == np.int64
    assert {len(v) for v in c.values()} == {4}
    assert type(m.node["timestamp_ms"]) is int
    assert type(m.node["cpu_seconds"]) is float
    assert "containers=4" in repr(m)


def test_public_names_are_exported() -> None:
    # The parser's own door is for tests and benchmarks; the server ingests through Store.
    assert not hasattr(kubemetrics, "parse_resource_metrics")
    assert issubclass(kubemetrics.ParseError, ValueError)
    assert ParseError.__module__ == "kubemetrics"


def test_only_bytes_are_accepted() -> None:
    with pytest.raises(TypeError):
        parse_resource_metrics("node_cpu_usage_seconds_total 1")  # type: ignore[arg-type]


def test_parsing_releases_the_gil() -> None:
    # With a huge switch interval no thread is ever forced off the GIL, so this
    # thread can only observe the worker *inside* a parse if the parse let the
    # GIL go. (Holding it, the worker would run all its parses back to back and
    # this thread would only wake once the worker is done.)
    big = shared_fixture("kind-v1.21-70-pods.txt") * 300  # ~10 MB, some ms a parse
    state = {"inside": False, "stop": False}

    def worker() -> None:
        for _ in range(50):
            if state["stop"]:
                return
            state["inside"] = True
            parse_resource_metrics(big)
            state["inside"] = False

    old = sys.getswitchinterval()
    sys.setswitchinterval(1000.0)
    seen = 0
    try:
        t = threading.Thread(target=worker)
        t.start()
        while t.is_alive() and seen < 3:
            time.sleep(0.0005)  # releases the GIL
            seen += state["inside"]
        state["stop"] = True
        t.join(60)
    finally:
        sys.setswitchinterval(old)
    assert not t.is_alive()
    assert seen >= 3, "never woke while the worker was parsing: the GIL was held"


# ---- malformed input ---------------------------------------------------------------

GOOD = b"node_cpu_usage_seconds_total 1 2\n"

MALFORMED = [
    pytest.param(b'x{a="b} 1\n', 1, "unterminated value of label a", id="unterminated-label"),
    pytest.param(GOOD + b'x{a="b', 2, "unterminated value of label a", id="unterminated-eof"),
    pytest.param(b'x{a="b\\"} 1', 1, "unterminated value of label a", id="escaped-quote-end"),
    pytest.param(b'x{a="\\t"} 1', 1, "invalid escape sequence '\\t'", id="bad-escape"),
    pytest.param(b'x{a="b" c="d"} 1', 1, "expected ',' or '}'", id="missing-comma"),
    pytest.param(GOOD * 3 + b'x{a="b",', 4, "unterminated label set", id="unterminated-set"),
    pytest.param(b"x{a=b} 1", 1, "to open the value of label a", id="unquoted-value"),
    pytest.param(b"x{a} 1", 1, "'=' after label name a", id="label-without-value"),
    pytest.param(b'x{0a="b"} 1', 1, "expected a label name", id="bad-label-name"),
    pytest.param(b'x{__name__="y"} 1', 1, "reserved", id="reserved-label"),
    pytest.param(b'x{pod="a",pod="b"} 1', 1, "duplicate label pod", id="duplicate-label"),
    pytest.param(b"x 1.2.3", 1, 'invalid value "1.2.3"', id="bad-float"),
    pytest.param(b"x 0x1p-2", 1, "invalid value", id="hex-float"),
    pytest.param(b"x 1_000", 1, "invalid value", id="underscore"),
    pytest.param(b"x -NaN", 1, "invalid value", id="signed-nan"),
    pytest.param(b"x 1e400", 1, "invalid value", id="float-overflow"),
    pytest.param(b"x 12abc", 1, "invalid value", id="float-junk"),
    pytest.param(GOOD + b"x", 2, "missing value for x", id="missing-value"),
    pytest.param(b"x 1 12.5", 1, 'invalid timestamp "12.5"', id="float-timestamp"),
    pytest.param(b"x 1 1e3", 1, "invalid timestamp", id="exp-timestamp"),
    pytest.param(b"x 1 99999999999999999999", 1, "invalid timestamp", id="timestamp-overflow"),
    pytest.param(b"x 1 2 3", 1, "after the timestamp", id="trailing-junk"),
    pytest.param(b"0x 1", 1, "expected a metric name", id="name-starts-with-digit"),
    pytest.param(b"x.y 1", 1, "a space after the metric name", id="dot-in-name"),
    pytest.param(b'{a="b"} 1', 1, "expected a metric name", id="no-name"),
    pytest.param(b"x 1\r2", 1, "a space or the end of the line", id="bare-cr"),
    pytest.param(b"# TYPE x summmary", 1, "unknown metric type", id="bad-type"),
    pytest.param(b"# TYPE x- gauge", 1, "invalid metric name in # TYPE", id="bad-type-name"),
    pytest.param(b"\x89PNG\r\n\x1a\n\x00\x00", 1, "invalid UTF-8", id="binary-png"),
    pytest.param(GOOD + b"x 1\n\xff", 3, "invalid UTF-8", id="binary-late"),
    pytest.param(b"\x00\x01\x02", 1, "expected a metric name", id="control-chars"),
]


@pytest.mark.parametrize(("data", "line", "what"), MALFORMED)
def test_malformed_input_raises_a_clear_parse_error(data: bytes, line: int, what: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_resource_metrics(data)
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert message.startswith(f"line {line}: "), message
    assert what in message, message


def test_huge_lines_are_refused_by_length() -> None:
    limit = PARSE_MAX_LINE_BYTES
    assert limit == 64 * 1024
    fits = b'x{a="' + b"v" * (limit - 10) + b'"} 1\n'
    assert len(parse_resource_metrics(GOOD + fits)) == 0
    for huge in (
        b'x{a="' + b"v" * limit + b'"} 1\n',  # valid but too long
        b'x{a="' + b"v" * (4 * limit),  # unterminated, no newline at all
        b"# " + b"c" * (limit + 1),  # even a comment
    ):
        with pytest.raises(ParseError, match=r"^line 2: line too long \(\d+ bytes; the limit is"):
            parse_resource_metrics(GOOD + huge)


def test_random_garbage_never_escapes_as_anything_but_parse_error() -> None:
    rng = random.Random(20240601)
    base = shared_fixture("kubelet-v1.30-3-pods.txt")
    for _ in range(300):
        garbage = rng.randbytes(rng.randrange(1, 400))
        try:
            parse_resource_metrics(garbage)
        except ParseError as e:
            assert str(e).startswith("line ")
        mutated = bytearray(base)
        for _ in range(rng.randrange(1, 8)):
            mutated[rng.randrange(len(mutated))] = rng.choice(b'"\\{}=, \t\n\r#\x00\xff')
        try:
            parse_resource_metrics(bytes(mutated))
        except ParseError as e:
            assert str(e).startswith("line ")
