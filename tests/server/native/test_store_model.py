"""The store against a plain-Python model of SPEC §3, on seeded random scrape histories.

The model restates the rules the simplest way (dicts per node, upstream's order of checks):
prev selection, restart by start time, counter decrease skipped, the fresh-container shortcut,
pods all-or-nothing, the pod's time and window from its earliest container, node point validity,
the 2 × resolution grace, and a pod reported by several nodes served once from the newest
report (ties: the first node by name). Histories mix failed scrapes, missing and invalid values,
restarts, fresh containers, counters going backwards, unchanged and out-of-order timestamps,
duplicate series and pods forgotten by discovery.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import pytest

from kubemetrics import _native
from kubemetrics_sim.payload import ContainerSample, NodeSample, kubelet_text

RES_MS = 15_000
FRESH_MS = 10_000
T0 = 1_700_000_000_000

Key = tuple[str, str, str]  # namespace, pod, container
# namespace, pod, container, cpu s, memory B, start s, timestamp ms (None: absent)
Row = tuple[str, str, str, float | None, float | None, float | None, int | None]
# node cpu s, memory B, timestamp ms
Point = tuple[float | None, float | None, int | None]
NodeRow = tuple[str, int, int, int, int]
PodRow = tuple[str, str, str, int, int, tuple[tuple[str, int, int], ...]]


def _cpu_ns(v: float | None) -> int | None:
    if v is None or not math.isfinite(v) or v < 0:
        return None
    return int(v * 1e9) or None


def _mem(v: float | None) -> int | None:
    if v is None or not math.isfinite(v) or v < 0:
        return None
    return int(v) or None


def _rate(last: tuple[int, int], prev: tuple[int, int]) -> tuple[int, int] | None:
    """(nanocores, window) between (ts, cpu ns) points, None for a decrease or no window."""
    window = last[0] - prev[0]
    if last[1] < prev[1] or window <= 0:
        return None
    return (last[1] - prev[1]) * 1000 // window, window


@dataclass
class _Container:
    last: tuple[int, int, int]  # ts, cpu ns, memory
    prev: tuple[int, int] | None  # ts, cpu ns


@dataclass
class _Node:
    scraped: int
    last: tuple[int, int, int] | None = None
    prev: tuple[int, int, int] | None = None
    table: dict[Key, _Container] = field(default_factory=dict)


class Model:
    def __init__(self) -> None:
        self.nodes: dict[str, _Node] = {}

    def ingest(self, node: str, point: Point, rows: list[Row], req: int) -> None:
        e = self.nodes.setdefault(node, _Node(req))
        if req - e.scraped > 2 * RES_MS + RES_MS // 2:
            # Past the grace (plus slack for one failed scrape): no baseline.
            e.last = e.prev = None
            e.table = {}
        e.scraped = req
        cpu, mem = _cpu_ns(point[0]), _mem(point[1])
        if cpu and mem:
            ts = point[2] or req
            if e.last is None:
                e.prev = None
            elif ts > e.last[0]:
                e.prev = e.last
            elif not (e.prev and e.prev[0] < ts):
                e.prev = None
            e.last = (ts, cpu, mem)
        else:
            e.last = e.prev = None

        first: dict[Key, Row] = {}
        for row in rows:
            if row[3] is None and row[4] is None and row[5] is None:
                continue  # no line in the payload
            first.setdefault(row[:3], row)
        pods: dict[tuple[str, str], list[Row]] = {}
        for row in first.values():
            pods.setdefault(row[:2], []).append(row)
        new: dict[Key, _Container] = {}
        for pod_rows in pods.values():
            samples = []
            for ns, pod, name, c, m, start_s, ts in pod_rows:
                cpu_c, mem_c = _cpu_ns(c), _mem(m)
                if not cpu_c or not mem_c:
                    break  # all or nothing
                start = round(start_s * 1e3) if start_s is not None else None
                samples.append(((ns, pod, name), cpu_c, mem_c, start, ts or req))
            else:
                for key, cpu_c, mem_c, start, ts in samples:
                    old = e.table.get(key)
                    prev: tuple[int, int] | None
                    if start is not None and FRESH_MS <= ts - start < RES_MS:
                        prev = (start, 0)
                    elif old is None or (start is not None and start >= old.last[0]):
                        prev = None
                    elif ts > old.last[0]:
                        prev = (old.last[0], old.last[1])
                    else:
                        prev = old.prev if old.prev and old.prev[0] < ts else None
                    new[key] = _Container((ts, cpu_c, mem_c), prev)
        e.table = new

    def forget_pod(self, namespace: str, pod: str) -> None:
        for e in self.nodes.values():
            e.table = {k: v for k, v in e.table.items() if k[:2] != (namespace, pod)}

    def snapshot(self, now: int) -> tuple[list[NodeRow], list[PodRow]]:
        nodes: list[NodeRow] = []
        pods: dict[tuple[str, str], PodRow] = {}
        for name in sorted(self.nodes):
            e = self.nodes[name]
            if e.scraped < now - 2 * RES_MS:
                continue
            if e.last and e.prev:
                r = _rate(e.last[:2], e.prev[:2])
                if r:
                    nodes.append((name, r[0], e.last[2], e.last[0], r[1]))
            by_pod: dict[tuple[str, str], list[Key]] = {}
            for key in sorted(e.table):
                by_pod.setdefault(key[:2], []).append(key)
            for pk, keys in by_pod.items():
                containers = []
                earliest: tuple[int, int] | None = None
                for key in keys:
                    c = e.table[key]
                    r = _rate(c.last[:2], c.prev) if c.prev else None
                    if r is None:
                        break
                    containers.append((key[2], r[0], c.last[2]))
                    if earliest is None or c.last[0] < earliest[0]:
                        earliest = (c.last[0], r[1])
                else:
                    assert earliest is not None
                    cand = (pk[0], pk[1], name, earliest[0], earliest[1], tuple(containers))
                    if pk not in pods or cand[3] > pods[pk][3]:
                        pods[pk] = cand
        return nodes, [pods[k] for k in sorted(pods)]


def _payload(point: Point, rows: list[Row], rnd: random.Random) -> bytes:
    node = NodeSample(point[0], point[1], point[2] or None)
    containers = [ContainerSample(*r[:6], r[6] or None) for r in rows]
    lines = kubelet_text(node, containers, comments=False).splitlines()
    rnd.shuffle(lines)  # a parser must not depend on the order
    return b"\n".join(lines) + b"\n"


def _served(snap: _native.Snapshot) -> tuple[list[NodeRow], list[PodRow]]:
    n, p, c = snap.nodes, snap.pods, snap.containers
    nodes = [
        (str(n["name"][i]), int(n["cpu_nanocores"][i]), int(n["memory_bytes"][i]),
         int(n["timestamp_ms"][i]), int(n["window_ms"][i]))
        for i in range(len(n["name"]))
    ]  # fmt: skip
    starts = p["container_start"]
    pods = [
        (str(p["namespace"][i]), str(p["name"][i]), str(p["node"][i]),
         int(p["timestamp_ms"][i]), int(p["window_ms"][i]),
         tuple((str(c["name"][j]), int(c["cpu_nanocores"][j]), int(c["memory_bytes"][j]))
               for j in range(int(starts[i]), int(starts[i + 1]))))
        for i in range(len(p["name"]))
    ]  # fmt: skip
    return nodes, pods


@pytest.mark.parametrize("seed", range(400))
def test_store_agrees_with_a_model_of_the_spec_rules(seed: int) -> None:
    rnd = random.Random(seed)
    store = _native.Store(RES_MS / 1000)
    model = Model()
    t = T0
    counters: dict[Key, float] = {}
    starts: dict[Key, float] = {}
    last_ts: dict[Key, int] = {}
    for step in range(40):
        t += rnd.choice([0, 1, 500, 5_000, 10_000, 15_000, 31_000])
        for node in rnd.sample(["n1", "n2", "n3"], 3):
            if rnd.random() < 0.2:
                continue  # this scrape failed
            req = t + rnd.choice([0, 0, rnd.randint(1, 50)])
            # Boundaries come up often: timestamps shared between nodes, starts exactly at the
            # old last sample or exactly 10 s / one resolution before the sample.
            shared = t - 1_000
            point = (
                rnd.choice([None, 0.0, rnd.uniform(0, 1e4), rnd.randint(1, 10**4) + 0.123]),
                rnd.choice([None, 0.0, float(rnd.randint(1, 10**9))]),
                rnd.choice([None, req - rnd.randint(0, 20_000)]),
            )
            rows: list[Row] = []
            for ns in ("a", "b"):
                for pod in ("p1", "p2"):
                    if rnd.random() < 0.3:
                        continue
                    for name in ("c1", "c2"):
                        if rnd.random() < 0.15:
                            continue
                        key = (ns, pod, name)
                        ts = rnd.choice([None, req, shared] + [req - rnd.randint(0, 15_000)] * 4)
                        if key not in starts or rnd.random() < 0.08:  # (re)started
                            age = rnd.choice([5_000, FRESH_MS, 11_000, RES_MS, 60_000, 10**6])
                            begun = (ts or req) - age
                            if key in last_ts and rnd.random() < 0.3:
                                begun = last_ts[key] + rnd.choice([-1, 0, 0, 1])
                            starts[key] = begun / 1000
                            counters[key] = 0.0
                        counters[key] += rnd.choice([0, 0.5, 1.25, -0.3, 3])
                        last_ts[key] = ts or req
                        rows.append(
                            (
                                ns,
                                pod,
                                name,
                                rnd.choice([counters[key]] * 8 + [None, 0.0, math.nan]),
                                rnd.choice([float(rnd.randint(1, 10**8))] * 8 + [None, 0.0, 0.5]),
                                rnd.choice([starts[key]] * 6 + [None]),
                                ts,
                            )
                        )
            if rows and rnd.random() < 0.1:
                rows.append(rows[0])  # a repeated series
            store.ingest(node, _payload(point, rows, rnd), req)
            model.ingest(node, point, rows, req)
        if rnd.random() < 0.1:
            store.forget_pod("a", "p1")
            model.forget_pod("a", "p1")
        now = t + rnd.choice([0, 100, 20_000, 2 * RES_MS, 2 * RES_MS + 1, 31_000])
        assert _served(store.snapshot(now)) == model.snapshot(now), f"step {step}"
