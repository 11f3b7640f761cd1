"""The --help text: grouped like upstream's, our own words."""

from __future__ import annotations

import shutil
import textwrap
from collections.abc import Mapping

from kubemetrics.cli.flags import GROUPS
from kubemetrics.cli.pflag import Flag, Kind
from kubemetrics.config import format_go_duration

PROG = "kubemetrics"

TYPE_NAMES: Mapping[Kind, str] = {
    "bool": "",
    "int": "int",
    "float": "float32",
    "string": "string",
    "strings": "strings",
    "duration": "duration",
    "ip": "ip",
    "level": "Level",
    "vmodule": "pattern=N,...",
    "certkey": "namedCertKey",
    "quantity": "quantity",
}


def _default_text(flag: Flag) -> str:
    d = flag.default
    if flag.kind == "bool":
        return " (default true)" if d else ""
    if flag.kind == "duration":
        return f" (default {format_go_duration(d)})"
    if flag.kind in ("strings", "certkey"):
        return f" (default [{','.join(d)}])" if d or flag.kind == "certkey" else ""
    if flag.kind == "string":
        return f' (default "{d}")' if d else ""
    if flag.kind == "ip":
        return f" (default {d})"
    if flag.kind == "quantity" and d:
        return f" (default {_binary(d)})"
    return f" (default {d})" if d else ""


def _binary(n: int) -> str:
    """A byte count as the shortest exact Kubernetes binary quantity (1048576 → 1Mi)."""
    for suffix in ("Ei", "Pi", "Ti", "Gi", "Mi", "Ki"):
        unit = 1 << (10 * ("KiMiGiTiPiEi".index(suffix) // 2 + 1))
        if n % unit == 0:
            return f"{n // unit}{suffix}"
    return str(n)


def usage(width: int | None = None) -> str:
    """The --help text: grouped like upstream's, our own words."""
    cols = width or min(max(shutil.get_terminal_size((100, 24)).columns, 60), 120)
    out = [
        "kubemetrics: a drop-in replacement for the Kubernetes Metrics Server.",
        "",
        "Usage:",
        f"  {PROG} [flags]",
        f"  {PROG} demo [demo flags]    run a simulated cluster with kubemetrics (see demo --help)",
    ]
    for group in GROUPS:
        shown = sorted((f for f in group.flags if not f.hidden), key=lambda f: f.name)
        if not shown:
            continue
        out += ["", f"{group.title}:", ""]
        if group.note:
            out += [f"  {group.note}", ""]
        heads = []
        for f in shown:
            lead = f"  -{f.short}, --{f.name}" if f.short else f"      --{f.name}"
            tname = TYPE_NAMES[f.kind]
            heads.append(f"{lead} {tname}" if tname else lead)
        col = max(len(h) for h in heads) + 3
        for head, f in zip(heads, shown, strict=True):
            text = f.help + _default_text(f)
            wrapped = textwrap.wrap(
                text, width=max(cols - col, 30), break_on_hyphens=False, break_long_words=False
            ) or [""]
            out.append(head.ljust(col) + wrapped[0])
            out += [" " * col + line for line in wrapped[1:]]
    out += ["", "  -h, --help   Show this help and exit.", ""]
    return "\n".join(out)
