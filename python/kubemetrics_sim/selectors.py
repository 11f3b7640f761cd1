"""Label and field selectors with kube-apiserver's syntax and error messages."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass


class SelectorError(ValueError):
    pass


_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!"
    values: tuple[str, ...]

    def matches(self, labels: dict[str, str]) -> bool:
        v = labels.get(self.key)
        if self.op == "exists":
            return v is not None
        if self.op == "!":
            return v is None
        if self.op in ("=", "in"):
            return v is not None and v in self.values
        # != and notin match objects without the key, as in Kubernetes
        return v is None or v not in self.values


def _split_top(s: str) -> list[str]:
    parts: list[str] = []
    cur: list[str] = []
    depth = 0
    for ch in s:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


def _check_key(key: str, raw: str) -> None:
    if not _KEY.match(key) or len(key.rsplit("/", 1)[-1]) > 63:
        raise SelectorError(f"unable to parse requirement: invalid label key {key!r} in {raw!r}")


def _check_value(value: str, raw: str) -> None:
    if len(value) > 63 or not _VALUE.match(value):
        raise SelectorError(
            f"unable to parse requirement: invalid label value {value!r} in {raw!r}"
        )


_SET = re.compile(r"^\s*(\S+)\s+(in|notin)\s*\((.*)\)\s*$")


def parse_labels(s: str) -> list[Requirement]:
    s = s.strip()
    if not s:
        return []
    reqs = []
    for raw in _split_top(s):
        part = raw.strip()
        if not part:
            raise SelectorError(f"found '', expected: identifier in label selector {s!r}")
        m = _SET.match(part)
        if m:
            key, op, vals = m.group(1), m.group(2), m.group(3)
            _check_key(key, part)
            values = tuple(v.strip() for v in vals.split(",")) if vals.strip() else ()
            for v in values:
                _check_value(v, part)
            if not values:
                raise SelectorError(
                    f"for 'in', 'notin' operators, values set can't be empty: {part!r}"
                )
            reqs.append(Requirement(key, op, values))
            continue
        for op, norm in (("==", "="), ("!=", "!="), ("=", "=")):
            if op in part:
                key, _, value = part.partition(op)
                key, value = key.strip(), value.strip()
                _check_key(key, part)
                _check_value(value, part)
                reqs.append(Requirement(key, norm, (value,)))
                break
        else:
            if part.startswith("!"):
                key = part[1:].strip()
                _check_key(key, part)
                reqs.append(Requirement(key, "!", ()))
            else:
                if " " in part or "(" in part or ")" in part:
                    raise SelectorError(f"unable to parse requirement: {part!r}")
                _check_key(part, part)
                reqs.append(Requirement(part, "exists", ()))
    return reqs


def parse_fields(s: str, supported: tuple[str, ...]) -> list[tuple[str, str, str]]:
    """[(field, op, value)] with op in {"=", "!="}; unsupported fields are a 400 like upstream."""
    s = s.strip()
    if not s:
        return []
    out = []
    for raw in s.split(","):
        part = raw.strip()
        for op, norm in (("!=", "!="), ("==", "="), ("=", "=")):
            if op in part:
                field, _, value = part.partition(op)
                field = field.strip()
                if field not in supported:
                    raise SelectorError(f"field label not supported: {field}")
                out.append((field, norm, value.strip()))
                break
        else:
            raise SelectorError(f"invalid selector: '{s}'; can't understand '{part}'")
    return out


FieldGetter = Callable[[str], "str | None"]


def fields_match(reqs: list[tuple[str, str, str]], get: FieldGetter) -> bool:
    for field, op, value in reqs:
        v = get(field) or ""
        if (v == value) != (op == "="):
            return False
    return True


def labels_match(reqs: list[Requirement], labels: dict[str, str]) -> bool:
    return all(r.matches(labels) for r in reqs)
