"""A small spf13/pflag: the value parsers (Go semantics), the flag record, and argv scanning.

Flag syntax follows pflag, which upstream uses: `--flag=value`, `--flag value`, booleans as
`--flag` or `--flag=false` (never `--flag false`), shorthands `-v=2`, `-v 2`, `-v2`, `-l
key=value`; string lists comma-separated (CSV quoting) and repeatable; durations in Go syntax
(`15s`, `1m30s`, `500ms`); `--` ends the flags. `_` and `-` in flag names are the same.
Knows nothing of kubemetrics' flags: `cli.flags` is the table, `cli.build` reads it.
"""

from __future__ import annotations

import csv
import ipaddress
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from kubemetrics import quantity
from kubemetrics.config import SNICertKey

Kind = Literal[
    "bool", "int", "float", "string", "strings", "duration", "ip", "level", "vmodule",
    "certkey", "quantity",
]  # fmt: skip


class UsageError(ValueError):
    """The command line itself is malformed (unknown flag, unparsable value)."""


# --- value parsers (Go semantics) -------------------------------------------------------

_BOOLS = {
    **dict.fromkeys(("1", "t", "T", "TRUE", "true", "True"), True),
    **dict.fromkeys(("0", "f", "F", "FALSE", "false", "False"), False),
}
_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,  # U+00B5 micro sign
    "μs": 1e-6,  # U+03BC Greek mu
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_DURATION_PART = re.compile(r"(\d*)(?:\.(\d*))?([^\d.]*)")


def parse_bool(text: str) -> bool:
    """Go's strconv.ParseBool."""
    try:
        return _BOOLS[text]
    except KeyError:
        raise ValueError("expected a boolean (true or false)") from None


def parse_int(text: str) -> int:
    """Go's strconv.ParseInt(text, 0, 64): decimal, 0x.., 0o.., 0b.., legacy 0-prefixed octal."""
    body = text.lstrip("+-")
    if re.fullmatch(r"0[0-7_]+", body):
        text = text.replace(body, "0o" + body[1:], 1)
    try:
        value = int(text, 0)
    except ValueError:
        raise ValueError("expected an integer") from None
    if not -(2**63) <= value < 2**63:
        raise ValueError("integer out of range")
    return value


def parse_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError("expected a number") from None
    return value


def parse_duration(text: str) -> float:
    """Go's time.ParseDuration, in float seconds: `300ms`, `-1.5h`, `2h45m`, `0`."""
    s = text
    sign = 1.0
    if s[:1] in ("+", "-"):
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return 0.0
    if not s:
        raise ValueError("invalid duration (expected e.g. 15s, 1m30s, 500ms)")
    total = 0.0
    pos = 0
    while pos < len(s):
        m = _DURATION_PART.match(s, pos)
        if m is None or m.end() == pos:
            raise ValueError("invalid duration (expected e.g. 15s, 1m30s, 500ms)")
        whole, frac, unit = m.group(1), m.group(2), m.group(3)
        if not whole and not frac:
            raise ValueError("invalid duration (expected e.g. 15s, 1m30s, 500ms)")
        if not unit:
            raise ValueError("missing unit in duration (e.g. 15s, 1m30s, 500ms)")
        if unit not in _DURATION_UNITS:
            raise ValueError(f"unknown unit {unit!r} in duration (use ns, us, ms, s, m, h)")
        total += float(f"{whole or '0'}.{frac or '0'}") * _DURATION_UNITS[unit]
        pos = m.end()
    return sign * total


def parse_strings(text: str) -> list[str]:
    """pflag's StringSlice: one CSV record (so `"a,b",c` is two items); "" is empty."""
    if text == "":
        return []
    try:
        rows = list(csv.reader([text], strict=True))
    except csv.Error as e:
        raise ValueError(f"not a comma-separated list: {e}") from None
    return rows[0] if rows else []


def parse_ip(text: str) -> str:
    stripped = text.strip()
    try:
        return str(ipaddress.ip_address(stripped))
    except ValueError:
        raise ValueError("expected an IP address") from None


def parse_level(text: str) -> int:
    """klog's Level: a non-negative 32-bit integer."""
    value = parse_int(text)
    if not 0 <= value < 2**32:
        raise ValueError("expected a non-negative integer")
    return value


def parse_vmodule(text: str) -> list[tuple[str, int]]:
    """`pattern=N,...` as klog reads it; "" is empty."""
    out: list[tuple[str, int]] = []
    for item in text.split(",") if text else []:
        pattern, eq, level = item.strip().partition("=")
        if not eq or not pattern:
            raise ValueError(f"expected pattern=N, got {item!r}")
        try:
            out.append((pattern, parse_level(level)))
        except ValueError:
            raise ValueError(f"expected pattern=N with N a whole number, got {item!r}") from None
    return out


def parse_certkey(text: str) -> SNICertKey:
    """`cert,key` or `cert,key:name1,name2` (the generic apiserver's namedCertKey)."""
    files, colon, names = text.partition(":")
    parts = [p.strip() for p in files.split(",")]
    if len(parts) != 2 or not all(parts):
        raise ValueError("expected 'certfile,keyfile' optionally followed by ':name1,name2'")
    domains = tuple(n.strip() for n in names.split(",") if n.strip()) if colon else ()
    return SNICertKey(cert_file=parts[0], key_file=parts[1], names=domains)


def parse_quantity(text: str) -> int:
    """A Kubernetes quantity (`512`, `1k`, `2Ki`, `5Mi`, `1e3`), rounded up to an integer."""
    value = quantity.parse_quantity(text).value
    if value < 0:
        raise ValueError("must not be negative")
    return math.ceil(value)


PARSERS: Mapping[Kind, Callable[[str], Any]] = {
    "bool": parse_bool,
    "int": parse_int,
    "float": parse_float,
    "string": str,
    "strings": parse_strings,
    "duration": parse_duration,
    "ip": parse_ip,
    "level": parse_level,
    "vmodule": parse_vmodule,
    "certkey": parse_certkey,
    "quantity": parse_quantity,
}

# --- flags and argv ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Flag:
    name: str
    kind: Kind
    default: Any
    help: str
    short: str | None = None
    ignored: bool = False  # accepted for compatibility, no effect here: logged when set
    hidden: bool = False  # accepted but not listed in --help


@dataclass(frozen=True, slots=True)
class Group:
    title: str
    flags: tuple[Flag, ...]
    note: str = ""


def key(name: str) -> str:
    return name.replace("_", "-")


@dataclass
class Parsed:
    """Raw result of reading argv: values by flag key, which were set, positionals."""

    flags: Mapping[str, Flag]  # the table read against, by key
    values: dict[str, Any] = field(default_factory=dict)
    set: list[str] = field(default_factory=list)  # flag keys, in first-seen order
    positionals: list[str] = field(default_factory=list)

    def __getitem__(self, name: str) -> Any:
        k = key(name)
        return self.values[k] if k in self.values else self.flags[k].default

    def was_set(self, name: str) -> bool:
        return key(name) in self.values


def _assign(parsed: Parsed, flag: Flag, raw: str, spelled: str) -> None:
    try:
        value = PARSERS[flag.kind](raw)
    except ValueError as e:
        raise UsageError(f'invalid argument "{raw}" for "{spelled}" flag: {e}') from None
    k = key(flag.name)
    first = k not in parsed.values
    if first:
        parsed.set.append(k)
    if flag.kind == "strings" and not first:
        parsed.values[k] = [*parsed.values[k], *value]  # pflag: repeats append
    elif flag.kind == "certkey":
        parsed.values[k] = [*parsed.values.get(k, []), value]
    else:
        parsed.values[k] = value


def scan(argv: Sequence[str], flags: Mapping[str, Flag]) -> Parsed:
    """Read argv against `flags` (by key) with pflag's rules; raise UsageError for anything it
    would reject."""
    short = {f.short: f for f in flags.values() if f.short}
    parsed = Parsed(flags)
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            parsed.positionals += args[i:]
            break
        if arg.startswith("--"):
            name, eq, raw = arg[2:].partition("=")
            if not name or name.startswith("-"):
                raise UsageError(f"bad flag syntax: {arg}")
            flag = flags.get(key(name))
            if flag is None:
                raise UsageError(f"unknown flag: --{name}")
            if not eq:
                if flag.kind == "bool":
                    raw = "true"
                elif i < len(args):
                    raw, i = args[i], i + 1
                else:
                    raise UsageError(f"flag needs an argument: --{name}")
            _assign(parsed, flag, raw, f"--{name}")
        elif arg.startswith("-") and len(arg) > 1:
            # Shorthands: -v=2, -v 2, -v2, -l sel; booleans may be combined (-hv=2).
            pos = 1
            while pos < len(arg):
                ch = arg[pos]
                flag = short.get(ch)
                if flag is None:
                    raise UsageError(f"unknown shorthand flag: '{ch}' in {arg}")
                rest = arg[pos + 1 :]
                if rest.startswith("="):
                    _assign(parsed, flag, rest[1:], f"-{ch}")
                    break
                if flag.kind == "bool":
                    _assign(parsed, flag, "true", f"-{ch}")
                    pos += 1
                    continue
                if rest:
                    _assign(parsed, flag, rest, f"-{ch}")
                elif i < len(args):
                    _assign(parsed, flag, args[i], f"-{ch}")
                    i += 1
                else:
                    raise UsageError(f"flag needs an argument: '{ch}' in -{ch}")
                break
        else:
            parsed.positionals.append(arg)
    return parsed
