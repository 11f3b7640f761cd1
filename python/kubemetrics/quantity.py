"""Kubernetes quantities (`resource.Quantity`'s text form), parsed exactly.

The one quantity parser of the project: flag values (`cli`), what the demo shows, and the
tests that check what the server (its Rust encoder) wrote. A leaf: it imports nothing of the
server, so tools and tests may use it freely.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

_QUANTITY = re.compile(r"([+-]?)((?:\d+\.?\d*|\.\d+))(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?\d+)?")
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_BINARY = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
# The form the API writes: an integer mantissa without sign or leading zeros, then a suffix.
_CANONICAL = re.compile(r"(0|[1-9][0-9]*)(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])?")


@dataclass(frozen=True, slots=True)
class Quantity:
    value: Fraction  # exact
    number: str  # the number as written, sign included (`1.5`, `-2`)
    suffix: str  # `Ki`, `m`, `e3`, or ""

    @property
    def binary(self) -> bool:
        return self.suffix in _BINARY

    @property
    def canonical(self) -> bool:
        """Written as the API server writes quantities (`250m`, `12240Ki`, `0`)."""
        return _CANONICAL.fullmatch(self.number + self.suffix) is not None


def parse_quantity(text: str) -> Quantity:
    """`512`, `1.5k`, `2Ki`, `250m`, `1e3`, `-1` → a Quantity; ValueError for anything else."""
    m = _QUANTITY.fullmatch(text.strip())
    if m is None:
        raise ValueError("expected a quantity such as 512, 1k, 2Ki, 5Mi")
    sign, number, suffix = m.group(1), m.group(2), m.group(3) or ""
    value = Fraction(number)
    if suffix in _BINARY:
        value *= 2 ** _BINARY[suffix]
    elif suffix[:1] in ("e", "E") and suffix != "E":
        value *= Fraction(10) ** int(suffix[1:])
    else:
        value *= Fraction(10) ** _DECIMAL[suffix]
    return Quantity(-value if sign == "-" else value, sign + number, suffix)
