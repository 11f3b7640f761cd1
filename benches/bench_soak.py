"""The chaos soak as a bench (`tests/helpers/soak.py` has the whole story): a real server
scraping the simulator through kubelet faults, pod churn and an API server outage, with its
figures compared within the run (RSS after warm-up against the end of warm-up, CPU in chaos
against warm-up, each node's time out of the API against its own fault).

Manual run at the issue's scale (10 minutes plus start-up; figures in docs/PERFORMANCE.md):

    .venv/bin/python -m benches.bench_soak --nodes 1000 --minutes 10

`make bench` runs a small one (nodes from $BENCH_SOAK_NODES, default 100; 4 minutes) through
pytest-benchmark, the figures in extra_info. `make soak` is the asserted 10-minute version.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from tests.helpers.soak import SoakPlan, run_soak


def small_plan(nodes: int) -> SoakPlan:
    return SoakPlan(
        nodes=nodes,
        minutes=4.0,
        warmup_s=60.0,
        quiet_s=60.0,
        outage_after_s=20.0,
        outage_s=30.0,
        fault_batch=max(1, nodes // 100),
    )


def test_bench_soak(benchmark: Any, tmp_path: Path) -> None:
    plan = small_plan(int(os.environ.get("BENCH_SOAK_NODES", "100")))
    result = benchmark.pedantic(run_soak, args=(tmp_path, plan), rounds=1, iterations=1)
    benchmark.extra_info.update(result.figures())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench_soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--nodes", type=int, default=1000)
    p.add_argument("--pods-per-node", type=int, default=30)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=120.0, help="seconds of churn only")
    p.add_argument("--outage", type=float, default=60.0, help="seconds the API server is away")
    p.add_argument("--resolution", type=int, default=15)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", type=Path, help="also write the figures here")
    a = p.parse_args(argv)
    plan = SoakPlan(
        nodes=a.nodes,
        pods_per_node=a.pods_per_node,
        minutes=a.minutes,
        warmup_s=a.warmup,
        outage_s=a.outage,
        resolution_s=a.resolution,
        fault_batch=max(1, a.nodes // 100),
        seed=a.seed,
    )
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as d:
        result = run_soak(Path(d), plan, log=lambda m: print(m, file=sys.stderr, flush=True))
    figures = result.figures()
    text = json.dumps(figures, indent=1)
    print(text)
    if a.json:
        a.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
