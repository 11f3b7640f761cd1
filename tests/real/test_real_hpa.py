"""The real HPA controller scales a Deployment on kubemetrics' CPU numbers.

The simulator plays scheduler and kubelet for the Deployment's pods and spreads a workload's
total CPU evenly over its running pods (a load balancer in front of them). With a request of
`REQUEST_M` per pod and a target utilization `TARGET`, the HPA's formula
`desired = ceil(current * utilization / target)` then has one fixed point,
`ceil(total / (REQUEST_M * TARGET))`, whatever the current replica count.
"""

from __future__ import annotations

import json
import math
from typing import Any

from tests.helpers.real import RealCluster, eventually

NS = "hpa"
APP = "load"
REQUEST_M = 100
TARGET = 50  # percent
MIN, MAX = 1, 8
BUSY_M = 350  # total: ceil(350 / (100 * 0.5)) = 7 replicas
IDLE_M = 7  # total: 1m per pod at 7 pods = 1 % -> 1 replica

MANIFEST = f"""
apiVersion: v1
kind: Namespace
metadata: {{name: {NS}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {APP}, namespace: {NS}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: {APP}}}}}
  template:
    metadata: {{labels: {{app: {APP}}}}}
    spec:
      containers:
        - name: app
          image: registry.sim/load:1.0
          resources: {{requests: {{cpu: {REQUEST_M}m, memory: 32Mi}}}}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {{name: {APP}, namespace: {NS}}}
spec:
  scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: {APP}}}
  minReplicas: {MIN}
  maxReplicas: {MAX}
  metrics:
    - type: Resource
      resource: {{name: cpu, target: {{type: Utilization, averageUtilization: {TARGET}}}}}
"""


def hpa(real: RealCluster) -> dict[str, Any]:
    out = real.cp.kubectl("-n", NS, "get", "hpa", APP, "-o", "json").stdout
    return dict(json.loads(out))


def truth_desired(real: RealCluster) -> tuple[int, int, float]:
    """(running pods, desired replicas, utilization %) by the HPA's formula from the truth."""
    pods = [
        p for p in real.sim.truth(namespace=NS)["pods"].values() if p["labels"].get("app") == APP
    ]
    n = len(pods)
    if n == 0:
        return 0, MIN, 0.0
    util = 100.0 * sum(p["cpu_nanocores"] for p in pods) / (n * REQUEST_M * 1_000_000)
    ratio = util / TARGET
    desired = n if abs(ratio - 1.0) <= 0.1 else math.ceil(n * ratio)  # 10 % tolerance
    return n, max(MIN, min(MAX, desired)), util


def settled(real: RealCluster, want: int) -> str | None:
    h = hpa(real)
    st = h.get("status", {})
    n, desired, util = truth_desired(real)
    served = [
        m["resource"]["current"].get("averageUtilization")
        for m in st.get("currentMetrics") or []
        if m.get("type") == "Resource"
    ]
    if st.get("currentReplicas") != want or st.get("desiredReplicas") != want or n != want:
        return (
            f"hpa current={st.get('currentReplicas')} desired={st.get('desiredReplicas')} "
            f"running={n}, want {want} (truth: {util:.1f}% -> {desired}); {st.get('conditions')}"
        )
    if desired != want:
        return f"the formula on the truth gives {desired} at {util:.1f}%, not {want}"
    if not served or served[0] is None or abs(served[0] - util) > 2:
        return f"hpa sees {served}% utilization, the truth is {util:.1f}%"
    return None


def test_hpa_scales_up_when_busy_and_down_when_idle(real: RealCluster) -> None:
    real.cp.kubectl("apply", "-f", "-", input=MANIFEST.encode())
    eventually(lambda: None if truth_desired(real)[0] == 1 else "pod not running", timeout=60)

    real.sim.control("PUT", f"attached/workloads/{NS}/{APP}", {"cpu_nanocores": BUSY_M * 1_000_000})
    want = math.ceil(BUSY_M / (REQUEST_M * TARGET / 100))
    assert want == 7
    eventually(lambda: settled(real, want), timeout=240, pause=3)

    real.sim.control("PUT", f"attached/workloads/{NS}/{APP}", {"cpu_nanocores": IDLE_M * 1_000_000})
    eventually(lambda: settled(real, MIN), timeout=240, pause=3)
    # The simulator finished the deletions the ReplicaSet started (grace 0, as a kubelet).
    pods = json.loads(real.cp.kubectl("-n", NS, "get", "pods", "-o", "json").stdout)["items"]
    assert len(pods) == MIN, [p["metadata"]["name"] for p in pods]
