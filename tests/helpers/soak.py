"""The chaos soak: a real `python -m kubemetrics` scraping a large simulated cluster while its
kubelets fail and heal, its pods churn, and its API server goes away for a while.

    warm-up (churn only) ─▶ chaos: every `fault_every_s` a batch of nodes gets a fault that
    heals by itself after 20-90 s (down, slow, garbage, truncated, http500), and once the API
    server refuses connections for `outage_s` (forgetting its watch history, as a restarted one
    does) ─▶ quiet: faults stop, churn stops, everything must come back

Watched once a second, straight from the server (TLS, the admin's client certificate): `/readyz`
and the node list (which nodes are served); every 5 s the server's RSS and CPU time. Compared
within the run: each node's time out of the list against its own faults, RSS after warm-up
against the end of warm-up, the simulator's list counts before and after the outage, and the
pods served at the end against the simulator's truth.

Used by `tests/soak/test_soak.py` (`make soak`, 10 minutes, CI) and `benches/bench_soak.py`.
"""

from __future__ import annotations

import json
import random
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubemetrics_sim.launch import ServerProcess, SimError, SimProcess, server_args
from tests.helpers.proc import cpu_seconds, memory_kib

NODES_PATH = "/apis/metrics.k8s.io/v1beta1/nodes"
PODS_PATH = "/apis/metrics.k8s.io/v1beta1/pods"
FAULT_KINDS = ("down", "slow", "garbage", "truncated", "http500")


@dataclass(frozen=True)
class SoakPlan:
    nodes: int = 1000
    pods_per_node: int = 30
    minutes: float = 10.0  # warm-up + chaos + quiet
    resolution_s: int = 15
    warmup_s: float = 120.0
    quiet_s: float = 90.0  # at the end: no new fault, churn off
    churn_interval_s: float = 0.5
    fault_every_s: float = 15.0
    fault_batch: int = 10  # 1 % of 1,000 nodes at a time
    fault_for_s: tuple[float, float] = (20.0, 90.0)
    slow_answer_s: float = 30.0  # a slow kubelet answers after this (past the request timeout)
    outage_after_s: float = 60.0  # into the chaos
    outage_s: float = 60.0
    seed: int = 1

    @property
    def allowance_s(self) -> float:
        """How long after its fault heals a node may still be missing. A node that failed is
        served again once it has a rate, i.e. two new samples (as upstream: a failed scrape
        drops the node's point): the next tick (up to one resolution), then a tick that sees
        the kubelet's next sample (kubelets refresh every 10-15 s, so one or two more
        resolutions), plus the scrape, the publish and our one-second poll."""
        return 3.0 * self.resolution_s + 10.0


@dataclass
class Fault:
    node: str
    kind: str
    start: float  # seconds since the soak's t0 (the request was sent)
    end: float  # when the simulator heals it by itself


@dataclass
class SoakResult:
    plan: SoakPlan
    startup_s: float = 0.0  # simulator + server until every node is served
    faults: list[Fault] = field(default_factory=list)
    outage: tuple[float, float] = (0.0, 0.0)
    polls: int = 0
    readyz_failures: list[tuple[float, int]] = field(default_factory=list)
    poll_failures: list[tuple[float, str]] = field(default_factory=list)
    lost: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # node → intervals
    rss_mib: list[tuple[float, float]] = field(default_factory=list)
    cpu_s: list[tuple[float, float]] = field(default_factory=list)
    lists_before_outage: dict[str, int] = field(default_factory=dict)
    lists_after_outage: dict[str, int] = field(default_factory=dict)
    watches_after_outage: int = 0
    relist_lines: int = 0
    end_nodes_served: int = 0
    end_pods_missing: list[str] = field(default_factory=list)
    end_pods_extra: list[str] = field(default_factory=list)
    server_error_lines: list[str] = field(default_factory=list)

    # --- figures ----------------------------------------------------------------------------
    def rss_baseline_mib(self) -> float:
        """The median RSS over the last minute of warm-up."""
        w = self.plan.warmup_s
        return statistics.median(v for t, v in self.rss_mib if w - 60.0 <= t <= w)

    def rss_after_warmup(self) -> list[float]:
        return [v for t, v in self.rss_mib if t > self.plan.warmup_s]

    def rss_minute_medians(self) -> list[float]:
        """Median RSS of each whole minute after warm-up."""
        w, out = self.plan.warmup_s, []
        minute = 0
        while True:
            a, b = w + 60.0 * minute, w + 60.0 * (minute + 1)
            vals = [v for t, v in self.rss_mib if a < t <= b]
            if len(vals) < 6:
                return out
            out.append(statistics.median(vals))
            minute += 1

    def excess_loss(self) -> dict[str, float]:
        """For each node that went missing: the longest time it stayed missing after the faults
        covering that time had healed (negative: it came back before the fault ended); a node
        missing with no fault of its own counts the whole interval (as +inf start)."""
        out: dict[str, float] = {}
        by_node: dict[str, list[Fault]] = {}
        for f in self.faults:
            by_node.setdefault(f.node, []).append(f)
        for node, intervals in self.lost.items():
            worst = float("-inf")
            for a, b in intervals:
                # faults that began before the node was back (one may follow another)
                covering = [f for f in by_node.get(node, []) if f.start <= b]
                if not covering or min(f.start for f in covering) > a + 0.5:
                    worst = max(worst, b - a + 1e6)  # lost with no fault of its own
                    continue
                worst = max(worst, b - max(f.end for f in covering))
            out[node] = worst
        return out

    def cpu_cores(self, a: float, b: float) -> float:
        pts = [(t, c) for t, c in self.cpu_s if a <= t <= b]
        if len(pts) < 2:
            return 0.0
        return (pts[-1][1] - pts[0][1]) / (pts[-1][0] - pts[0][0])

    def figures(self) -> dict[str, Any]:
        p = self.plan
        base = self.rss_baseline_mib()
        after = self.rss_after_warmup()
        medians = self.rss_minute_medians()
        excess = self.excess_loss()
        chaos_end = p.minutes * 60.0 - p.quiet_s
        return {
            "nodes": p.nodes,
            "pods": p.nodes * p.pods_per_node,
            "minutes": p.minutes,
            "startup_s": round(self.startup_s, 1),
            "faults": len(self.faults),
            "fault_seconds_total": round(sum(f.end - f.start for f in self.faults)),
            "outage_s": round(self.outage[1] - self.outage[0], 1),
            "polls": self.polls,
            "readyz_failures": len(self.readyz_failures),
            "poll_failures": len(self.poll_failures),
            "nodes_lost": len(self.lost),
            "nodes_lost_without_fault": sorted(n for n, e in excess.items() if e > 1e5),
            "max_excess_loss_s": round(max(excess.values()), 1) if excess else None,
            "allowance_s": p.allowance_s,
            "rss_baseline_mib": round(base, 1),
            "rss_after_warmup_min_mib": round(min(after), 1),
            "rss_after_warmup_max_mib": round(max(after), 1),
            "rss_minute_medians_mib": [round(m, 1) for m in medians],
            "rss_max_deviation_pct": round(100.0 * max(abs(v - base) for v in after) / base, 1),
            "rss_median_max_deviation_pct": round(
                100.0 * max(abs(m - base) for m in medians) / base, 1
            ),
            "cpu_cores_warmup": round(self.cpu_cores(max(0.0, p.warmup_s - 60.0), p.warmup_s), 3),
            "cpu_cores_chaos": round(self.cpu_cores(p.warmup_s, chaos_end), 3),
            "lists_before_outage": self.lists_before_outage,
            "lists_after_outage": self.lists_after_outage,
            "watches_after_outage": self.watches_after_outage,
            "server_relist_lines": self.relist_lines,
            "end_nodes_served": self.end_nodes_served,
            "end_pods_missing": len(self.end_pods_missing),
            "end_pods_extra": len(self.end_pods_extra),
            "server_error_lines": len(self.server_error_lines),
        }


# --- the run ------------------------------------------------------------------------------------


def _schedule(plan: SoakPlan, node_names: list[str]) -> list[tuple[float, str, float]]:
    """(start, node, duration) of every fault, deterministic for the seed: batches every
    `fault_every_s` through the chaos window, none starting in the outage (the control API is
    down with it) nor in the quiet end, each ending before the quiet end."""
    rng = random.Random(plan.seed)
    out = []
    chaos_end = plan.minutes * 60.0 - plan.quiet_s
    outage_at = plan.warmup_s + plan.outage_after_s
    outage = (outage_at, outage_at + plan.outage_s)
    t = plan.warmup_s
    while t < chaos_end:
        if not outage[0] - 2.0 <= t <= outage[1] + 2.0:
            for node in rng.sample(node_names, plan.fault_batch):
                duration = min(rng.uniform(*plan.fault_for_s), chaos_end - t)
                if duration >= 5.0:
                    out.append((t, node, duration))
        t += plan.fault_every_s
    return out


class _Watcher(threading.Thread):
    """Polls readiness and the node list once a second, RSS and CPU every 5 s."""

    def __init__(self, server: ServerProcess, result: SoakResult, t0: float, names: set[str]):
        super().__init__(daemon=True, name="soak-watcher")
        self.server, self.result, self.t0, self.names = server, result, t0, names
        self.stopping = threading.Event()
        self.missing_since: dict[str, float] = {}

    def run(self) -> None:
        r, pid = self.result, self.server.pid
        next_sample = 0.0
        while not self.stopping.is_set():
            started = time.monotonic()
            t = started - self.t0
            if t >= next_sample:
                r.rss_mib.append((t, memory_kib(pid)["VmRSS"] / 1024.0))
                r.cpu_s.append((t, cpu_seconds(pid)))
                next_sample = t + 5.0
            try:
                status, _, _ = self.server.get("/readyz", timeout=10)
                if status != 200:
                    r.readyz_failures.append((t, status))
                status, _, body = self.server.get(NODES_PATH, timeout=30)
                if status != 200:
                    raise RuntimeError(f"node list: {status} {body[:200]!r}")
                served = {i["metadata"]["name"] for i in json.loads(body)["items"]}
            except (OSError, RuntimeError, ValueError) as e:
                r.poll_failures.append((t, str(e)[:200]))
            else:
                r.polls += 1
                self._account(t, served)
            self.stopping.wait(max(0.0, 1.0 - (time.monotonic() - started)))
        t = time.monotonic() - self.t0
        for node, since in self.missing_since.items():
            self.result.lost.setdefault(node, []).append((since, t))

    def _account(self, t: float, served: set[str]) -> None:
        for node in self.names - served:
            self.missing_since.setdefault(node, t)
        for node in list(self.missing_since):
            if node in served:
                since = self.missing_since.pop(node)
                self.result.lost.setdefault(node, []).append((since, t))


def _until(deadline: float) -> None:
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, 1.0))


def run_soak(workdir: Path, plan: SoakPlan, log: Any = print) -> SoakResult:
    """Run the whole soak; the result holds everything observed (see `SoakResult.figures`)."""
    result = SoakResult(plan)
    t_start = time.monotonic()
    with SimProcess(
        workdir / "sim",
        nodes=plan.nodes,
        pods_per_node=plan.pods_per_node,
        seed=plan.seed,
        refresh_ms=(10_000, 15_000),  # real kubelets' housekeeping period
        ready_timeout=900,
    ) as sim:
        server = ServerProcess(
            workdir / "server",
            server_args(sim, workdir / "server", resolution=f"{plan.resolution_s}s"),
        )
        server.client_cert = (sim.file("admin_cert"), sim.file("admin_key"))
        with server:
            names = set(sim.info["nodes"])
            deadline = time.monotonic() + 10 * plan.resolution_s + 300
            while True:
                status, _, body = server.get(NODES_PATH, timeout=60)
                if status == 200 and len(json.loads(body)["items"]) == len(names):
                    break
                if time.monotonic() > deadline:
                    raise SimError(f"not every node served:\n{server.log_tail()}")
                time.sleep(1.0)
            result.startup_s = time.monotonic() - t_start
            log(f"soak: every node served after {result.startup_s:.0f}s; warming up")
            sim.control("POST", "churn", {"interval": plan.churn_interval_s})
            t0 = time.monotonic()
            watcher = _Watcher(server, result, t0, names)
            watcher.start()
            try:
                _chaos(sim, plan, result, t0, sorted(names), log)
                # churn stops a minute before the end: a pod created just before has its two
                # samples (a rate) by then
                _until(t0 + plan.minutes * 60.0 - 60.0)
                sim.control("POST", "churn", {"interval": 0})
                _until(t0 + plan.minutes * 60.0)
            finally:
                watcher.stopping.set()
                watcher.join(timeout=60)
            _final_state(sim, server, plan, result)
            lines = server.log().splitlines()
            result.relist_lines = sum(1 for ln in lines if "relisting" in ln or "again" in ln)
            result.server_error_lines = [ln for ln in lines if ln.startswith("E")]
    return result


def _chaos(
    sim: SimProcess, plan: SoakPlan, result: SoakResult, t0: float, names: list[str], log: Any
) -> None:
    rng = random.Random(plan.seed + 1)
    schedule = _schedule(plan, names)
    outage_at = plan.warmup_s + plan.outage_after_s
    outage_done = False
    for start, node, duration in schedule:
        if not outage_done and start > outage_at:
            _until(t0 + outage_at)
            result.lists_before_outage = dict(sim.state()["lists"])
            log(f"soak: API server outage for {plan.outage_s:g}s")
            a = time.monotonic() - t0
            sim.outage(plan.outage_s, compact=True)
            result.outage = (a, a + plan.outage_s)
            outage_done = True
        _until(t0 + start)
        kind = rng.choice(FAULT_KINDS)
        t = time.monotonic() - t0
        answer_after = plan.slow_answer_s if kind == "slow" else 0.0
        sim.fault(node, kind, seconds=answer_after, duration=duration)
        result.faults.append(Fault(node, kind, t, t + duration))
    log(f"soak: {len(result.faults)} faults set; waiting for the end")
    # after the outage: did the reflectors list again?
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            state = sim.state()
        except OSError:
            time.sleep(1.0)
            continue
        result.lists_after_outage = dict(state["lists"])
        result.watches_after_outage = int(state["watches"])
        break


def _final_state(
    sim: SimProcess, server: ServerProcess, plan: SoakPlan, result: SoakResult
) -> None:
    """At the end (churn stopped a minute ago, no fault for `quiet_s`): every node served,
    and the pods served are the simulator's."""
    status, _, body = server.get(NODES_PATH, timeout=60)
    result.end_nodes_served = len(json.loads(body)["items"]) if status == 200 else 0
    truth = set(sim.truth()["pods"])
    status, _, body = server.get(PODS_PATH, timeout=120)
    served = (
        {f"{i['metadata']['namespace']}/{i['metadata']['name']}" for i in json.loads(body)["items"]}
        if status == 200
        else set()
    )
    result.end_pods_missing = sorted(truth - served)
    result.end_pods_extra = sorted(served - truth)
