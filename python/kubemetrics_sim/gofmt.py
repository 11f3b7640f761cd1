"""Number and time formatting the way Go (and so the kubelet and kubectl) writes them."""

from __future__ import annotations

import datetime
import math


def go_float(v: float) -> str:
    """strconv.FormatFloat(v, 'g', -1, 64), as the kubelet's Prometheus encoder writes values:
    shortest round-trip digits, exponent form when the decimal exponent is < -4 or >= 6."""
    if v == 0:
        return "-0" if math.copysign(1.0, v) < 0 else "0"
    if 1e-4 <= v < 1e6:
        # Python's repr uses the same shortest digits and no exponent in this range.
        r = repr(v)
        return r[:-2] if r.endswith(".0") else r
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    r = repr(v)
    neg = r.startswith("-")
    if neg:
        r = r[1:]
    # Split Python's shortest representation into digits and a decimal exponent.
    if "e" in r:
        mant, e = r.split("e")
        exp10 = int(e)
        if "." in mant:
            a, b = mant.split(".")
        else:
            a, b = mant, ""
        digits = (a + b).lstrip("0")
        exp = exp10 + len(a) - 1
    else:
        a, _, b = r.partition(".")
        if b == "0":
            b = ""
        if a != "0":
            digits = a + b
            exp = len(a) - 1
        else:
            stripped = b.lstrip("0")
            exp = -(len(b) - len(stripped)) - 1
            digits = stripped
    digits = digits.rstrip("0") or "0"
    # Go: with the shortest precision, %e is used when exp < -4 or exp >= 6.
    use_e = exp < -4 or exp >= 6
    sign = "-" if neg else ""
    if use_e:
        m = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        es = "-" if exp < 0 else "+"
        return f"{sign}{m}e{es}{abs(exp):02d}"
    if exp < 0:
        return f"{sign}0.{'0' * (-exp - 1)}{digits}"
    if len(digits) <= exp + 1:
        return sign + digits + "0" * (exp + 1 - len(digits))
    return f"{sign}{digits[: exp + 1]}.{digits[exp + 1 :]}"


def rfc3339(ts: float) -> str:
    """metav1.Time: RFC 3339 in whole seconds, UTC."""
    return datetime.datetime.fromtimestamp(int(ts), datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def human_duration(seconds: float) -> str:
    """k8s.io/apimachinery/pkg/util/duration.HumanDuration, as kubectl's AGE column shows it."""
    s = int(seconds)
    if s < 0:
        return "<invalid>"
    if s < 2 * 60:
        return f"{s}s"
    m = s // 60
    if m < 10:
        rem = s % 60
        return f"{m}m{rem}s" if rem else f"{m}m"
    if m < 3 * 60:
        return f"{m}m"
    h = s // 3600
    if h < 8:
        rem = (s % 3600) // 60
        return f"{h}h{rem}m" if rem else f"{h}h"
    if h < 48:
        return f"{h}h"
    if h < 24 * 8:
        rem = h % 24
        return f"{h // 24}d{rem}h" if rem else f"{h // 24}d"
    if h < 24 * 365 * 2:
        return f"{h // 24}d"
    if h < 24 * 365 * 8:
        dy = (h // 24) % 365
        return f"{h // 24 // 365}y{dy}d" if dy else f"{h // 24 // 365}y"
    return f"{h // 24 // 365}y"


def go_int(n: int) -> str:
    """go_float for a non-negative integer value, without going through repr (hot path)."""
    if n < 1_000_000:
        return str(n)
    s = str(n)
    d = s.rstrip("0")
    exp = len(s) - 1
    if len(d) == 1:
        return f"{d}e+{exp:02d}"
    return f"{d[0]}.{d[1:]}e+{exp:02d}"
