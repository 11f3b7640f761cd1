"""The chaos soak (`tests/helpers/soak.py`): `make soak` runs it for 10 minutes at 1,000 nodes x
30 pods, as CI does (`.ci/run`); like tests/real it is collected only when named, so `make test`
(whose budget is 15 minutes) does not run it.
`SOAK_MINUTES`, `SOAK_NODES` change the size; `SOAK_REPORT=FILE` keeps the figures as JSON.

What must hold: readiness never fails; no node is missing from the API for longer than its own
fault plus three resolutions and 10 s (after a failure a node needs two new samples for a rate,
as upstream's does: `SoakPlan.allowance_s`), and no node without a fault ever is; the server's
RSS stays within ±10 % of the end of warm-up (each minute's median, and the last); after the
API server's outage both reflectors list again; at the end every node and exactly the
simulator's pods are served.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.helpers.soak import SoakPlan, run_soak

MINUTES = float(os.environ.get("SOAK_MINUTES", "10") or 10)
NODES = int(os.environ.get("SOAK_NODES", "1000") or 1000)


@pytest.mark.slow
def test_chaos_soak(tmp_path: Path) -> None:
    plan = SoakPlan(nodes=NODES, minutes=MINUTES, fault_batch=max(1, NODES // 100))
    result = run_soak(tmp_path, plan)
    f = result.figures()
    print(json.dumps(f, indent=1))
    if os.environ.get("SOAK_REPORT"):
        Path(os.environ["SOAK_REPORT"]).write_text(json.dumps(f, indent=1) + "\n")
    assert f["faults"] > 0 and f["outage_s"] == plan.outage_s
    assert not result.readyz_failures, result.readyz_failures[:10]
    assert not result.poll_failures, result.poll_failures[:10]
    assert f["nodes_lost_without_fault"] == [], f
    assert f["max_excess_loss_s"] is not None and f["max_excess_loss_s"] <= plan.allowance_s, f
    assert f["rss_median_max_deviation_pct"] <= 10.0, f
    medians = f["rss_minute_medians_mib"]
    assert medians and abs(medians[-1] - f["rss_baseline_mib"]) <= 0.1 * f["rss_baseline_mib"]
    before, after = f["lists_before_outage"], f["lists_after_outage"]
    assert after["nodes"] > before["nodes"] and after["pods"] > before["pods"], f
    assert f["end_nodes_served"] == plan.nodes, f
    assert (result.end_pods_missing, result.end_pods_extra) == ([], []), (
        result.end_pods_missing[:20],
        result.end_pods_extra[:20],
    )
