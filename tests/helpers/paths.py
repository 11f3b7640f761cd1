"""Where the tests' data lives."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository
# Real kubelet payloads and upstream's manifest, beside the repository (../shared).
SHARED_FIXTURES = Path(
    os.environ.get("KUBEMETRICS_FIXTURES", str(ROOT.parent / "shared" / "fixtures"))
)
PAYLOADS = ROOT / "tests" / "payloads"  # our own hand-made kubelet payloads
