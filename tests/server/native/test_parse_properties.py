"""Property tests: on generated valid payloads the parser agrees with
prometheus_client's parser (decoded by SPEC §1's rules, see test_parse), and on
any bytes it either parses or raises ParseError."""

from __future__ import annotations

import math
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubemetrics import ParseError
from kubemetrics._native._testing import parse_resource_metrics
from tests.helpers.reference import reference_decode, rows_of, same

SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

USED = (
    "node_cpu_usage_seconds_total",
    "node_memory_working_set_bytes",
    "container_cpu_usage_seconds_total",
    "container_memory_working_set_bytes",
    "container_start_time_seconds",
)
OTHERS = (
    "pod_cpu_usage_seconds_total",
    "container_swap_usage_bytes",
    "resource_scrape_error",
    "scrape_error",
    "node_swap_usage_bytes",
)

metric_names = st.one_of(
    st.sampled_from(USED),  # twice: most generated series should matter
    st.sampled_from(USED),
    st.sampled_from(OTHERS),
    st.from_regex(r"[a-zA-Z_:][a-zA-Z0-9_:]{0,30}", fullmatch=True),
)
# prometheus_client reserves label names starting with "__"; Go allows them.
label_names = st.from_regex(r"[a-zA-Z][a-zA-Z0-9_]{0,15}", fullmatch=True).filter(
    lambda n: n not in ("namespace", "pod", "container")
)
label_values = st.one_of(
    st.sampled_from(["", "kube-system", "web-0", 'say "hi"', "a\\b", "two\nlines", "日本", "{,}="]),
    st.text(st.characters(codec="utf-8", exclude_characters="\r"), max_size=20),
)


def escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@st.composite
def go_floats(draw: st.DrawFn) -> str:
    """A float as text in one of the forms Go (and Python) read."""
    kind = draw(st.sampled_from(["repr", "exp", "fixed", "int", "dot", "special"]))
    if kind == "special":
        return draw(st.sampled_from(["NaN", "+Inf", "-Inf", "Inf", "-0", "+0", "nan", "inf"]))
    if kind == "int":
        return str(draw(st.integers(-(10**20), 10**20)))
    x = draw(st.floats(allow_nan=False, allow_infinity=False, min_value=-1e300, max_value=1e300))
    if kind == "repr":
        return repr(x)
    if kind == "exp":
        return f"{x:.{draw(st.integers(0, 17))}e}"
    if kind == "fixed":
        return f"{x:.{draw(st.integers(0, 9))}f}"
    # ".5" and "5." forms
    text = f"{abs(x) % 1000:.3f}"
    head, tail = text.split(".")
    sign = "-" if x < 0 else ""
    return sign + (f".{tail}" if head == "0" else f"{head}.")


blank = st.sampled_from([" ", "  ", "\t", " \t "])
space = st.sampled_from([" ", "   "])  # prometheus_client splits value/timestamp on spaces only
maybe_blank = st.sampled_from(["", "", " ", "\t"])


@dataclass
class Series:
    name: str
    labels: list[tuple[str, str]]
    value: str
    timestamp: int | None


@st.composite
def series(draw: st.DrawFn) -> Series:
    name = draw(metric_names)
    labels: list[tuple[str, str]] = []
    pools = {
        "namespace": st.sampled_from(["ns-a", "ns-b", "", 'q"ns']),
        "pod": st.sampled_from(["p1", "p2", "p\\3"]),
        "container": st.sampled_from(["c1", "c2", "c\n3"]),
    }
    for key, pool in pools.items():
        if draw(st.integers(0, 9)) > 0:  # mostly present, sometimes missing
            labels.append((key, draw(st.one_of(pool, label_values))))
    extra = draw(st.dictionaries(label_names, label_values, max_size=3))
    labels.extend(extra.items())
    labels = draw(st.permutations(labels))
    timestamp = draw(st.one_of(st.none(), st.integers(-(10**13), 10**13)))
    return Series(name, labels, draw(go_floats()), timestamp)


@st.composite
def payloads(draw: st.DrawFn) -> str:
    lines: list[str] = []
    for s in draw(st.lists(series(), max_size=25)):
        if draw(st.integers(0, 4)) == 0:
            kind = draw(st.sampled_from(["gauge", "untyped", "summary", "histogram"]))
            if s.name.endswith("_total"):  # prometheus_client renames other counters
                kind = draw(st.sampled_from([kind, "counter"]))
            lines.append(f"# HELP {s.name} Some help with \\\\ and \\n escapes")
            lines.append(f"#{draw(blank)}TYPE{draw(blank)}{s.name}{draw(blank)}{kind}")
        if draw(st.integers(0, 6)) == 0:
            lines.append(draw(st.sampled_from(["", "# a comment", "#", "   "])))
        parts = [draw(maybe_blank), s.name]
        if bool(s.labels) or draw(st.booleans()):
            pairs = [
                f'{draw(maybe_blank)}{k}="{escape(v)}"{draw(maybe_blank)}' for k, v in s.labels
            ]
            trailing = "," if bool(s.labels) and draw(st.booleans()) else ""
            parts.append(draw(st.sampled_from(["", " "])) + "{" + ",".join(pairs) + trailing + "}")
            parts.append(draw(st.sampled_from(["", " "])))
        else:
            parts.append(draw(space))
        parts.append(s.value)
        if s.timestamp is not None:
            parts.append(draw(space) + str(s.timestamp))
        parts.append(draw(st.sampled_from(["", " "])))
        lines.append("".join(parts))
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    return newline.join(lines) + draw(st.sampled_from(["", newline]))


@SETTINGS
@given(payloads())
def test_parser_agrees_with_prometheus_client(text: str) -> None:
    m = parse_resource_metrics(text.encode())
    node, rows = reference_decode(text)
    for k, want in node.items():
        assert same(m.node[k], want), (k, m.node[k], want)
    got = rows_of(m)
    assert len(got) == len(rows), (got, rows)
    for g, w in zip(got, rows, strict=True):
        assert all(same(x, y) for x, y in zip(g, w, strict=True)), (g, w)


@SETTINGS
@given(payloads(), st.data())
def test_damaged_payloads_parse_or_raise_parse_error(text: str, data: st.DataObject) -> None:
    raw = bytearray(text.encode())
    for _ in range(data.draw(st.integers(1, 4))):
        if not raw:
            break
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.sampled_from(b'"\\{}=, \t\n\r#.e+-\x00\xff'))
    try:
        m = parse_resource_metrics(bytes(raw))
    except ParseError as e:
        line = int(str(e).split(":")[0].removeprefix("line "))
        assert 1 <= line <= raw.count(b"\n") + 1
    else:
        # Whatever parsed is internally consistent.
        lengths = {len(col) for col in m.containers.values()}
        assert lengths == {len(m)}
        for k in ("cpu_seconds", "memory_bytes", "start_time_seconds"):
            assert all(math.isnan(v) or v >= 0 for v in m.containers[k])


@SETTINGS
@given(st.binary(max_size=300))
def test_arbitrary_bytes_parse_or_raise_parse_error(raw: bytes) -> None:
    try:
        parse_resource_metrics(raw)
    except ParseError as e:
        assert str(e).startswith("line ")
