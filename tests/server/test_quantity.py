"""Canonical quantities and Go durations, as the API must print them.

Checked three ways: the literal forms from the SPEC and upstream's own tests; the defining
properties of a canonical Kubernetes quantity (it parses back to the same number, and no
larger suffix could express it); and Go's `time.Duration.String()` rules.
"""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubemetrics import quantity
from kubemetrics._native import _testing

BINARY_SUFFIX = ("Ki", "Mi", "Gi", "Ti", "Pi", "Ei")


def canonical(s: str) -> tuple[Fraction, str, int]:
    """(value, suffix, mantissa) of a quantity string in the forms the server may print."""
    q = quantity.parse_quantity(s)
    assert q.canonical, f"not a canonical-looking quantity: {s!r}"
    return q.value, q.suffix, int(q.number)


@pytest.mark.parametrize(
    ("nanocores", "text"),
    [
        (0, "0"),
        (123_456_789, "123456789n"),
        (20_000, "20u"),
        (1_500_000, "1500u"),
        (500_000_000, "500m"),
        (1_000_000_000, "1"),
        (1_500_000_000, "1500m"),
        (10_000_000_000, "10"),
        (1_000_000_000_000, "1k"),
        (1, "1n"),
        (10_000_000, "10m"),
    ],
)
def test_cpu_literals(nanocores: int, text: str) -> None:
    assert _testing.format_cpu(nanocores) == text


@pytest.mark.parametrize(
    ("nbytes", "text"),
    [
        (0, "0"),
        (512, "512"),
        (1000, "1k"),
        (1023, "1023"),
        (1024, "1Ki"),
        (1536, "1536"),
        (2000, "2000"),
        (2048, "2Ki"),
        (12_533_760, "12240Ki"),
        (3 * 1024 * 1024, "3Mi"),
        (1_234_567, "1234567"),
        (7 * 1024**3, "7Gi"),
    ],
)
def test_memory_literals(nbytes: int, text: str) -> None:
    assert _testing.format_memory(nbytes) == text


@given(st.one_of(st.integers(0, 2**64 - 1), st.integers(0, 10**6).map(lambda v: v * 10**6)))
def test_cpu_is_canonical_decimal_si(nanocores: int) -> None:
    text = _testing.format_cpu(nanocores)
    value, suffix, mantissa = canonical(text)
    assert suffix not in BINARY_SUFFIX
    assert value == Fraction(nanocores, 10**9)
    if nanocores:
        # Canonical: the largest SI exponent that keeps an integer mantissa.
        assert mantissa % 1000 != 0 or suffix == "E"
    else:
        assert text == "0"


@given(st.one_of(st.integers(0, 2**63 - 1), st.integers(0, 2**20).map(lambda v: v * 1024)))
def test_memory_is_canonical_binary_si(nbytes: int) -> None:
    text = _testing.format_memory(nbytes)
    value, suffix, mantissa = canonical(text)
    assert value == nbytes
    if nbytes < 1024:
        # Upstream prints BinarySI values below 1024 as DecimalSI.
        assert suffix in ("", "k")
        assert suffix == "" or mantissa % 1000 != 0
        assert text == ("1k" if nbytes == 1000 else str(nbytes))
    elif suffix == "":
        assert nbytes % 1024 != 0
    else:
        assert suffix in BINARY_SUFFIX
        assert mantissa % 1024 != 0 or suffix == "Ei"


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (0, "0s"),
        (1, "1ms"),
        (500, "500ms"),
        (1000, "1s"),
        (10_000, "10s"),
        (15_012, "15.012s"),
        (60_000, "1m0s"),
        (60_500, "1m0.5s"),
        (3_600_000, "1h0m0s"),
        (90_061_001, "25h1m1.001s"),
        (-1500, "-1.5s"),
    ],
)
def test_duration_literals(ms: int, text: str) -> None:
    assert _testing.format_duration(ms) == text


def go_duration_ms(ms: int) -> str:
    """Go's time.Duration(ms * 1e6).String(), written from its documented rules."""
    if ms == 0:
        return "0s"
    sign = "-" if ms < 0 else ""
    ms = abs(ms)
    if ms < 1000:
        return f"{sign}{ms}ms"
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, frac = divmod(rest, 1000)
    sec = f"{s}" + (f".{frac:03d}".rstrip("0") if frac else "")
    if h:
        return f"{sign}{h}h{m}m{sec}s"
    if m:
        return f"{sign}{m}m{sec}s"
    return f"{sign}{sec}s"


@given(st.integers(-(10**12), 10**12))
def test_duration_follows_go_rules(ms: int) -> None:
    assert _testing.format_duration(ms) == go_duration_ms(ms)


def test_out_of_range_inputs_are_python_errors() -> None:
    with pytest.raises(OverflowError):
        _testing.format_cpu(-1)
    with pytest.raises(OverflowError):
        _testing.format_memory(2**64)
    with pytest.raises(TypeError):
        _testing.format_duration("10")  # type: ignore[arg-type]
