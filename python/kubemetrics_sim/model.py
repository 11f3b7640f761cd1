"""Nodes, pods and containers: their Kubernetes objects, usage patterns and kubelet samples.

The truth. Every node refreshes its samples on its own schedule: sample k is taken at
``T_k = phase + k * period`` (epoch ms, period 10–15 s per node, like the kubelet's housekeeping).
A container's sample k carries timestamp ``T_k - offset`` (a fixed per-container offset, so
timestamps differ within one payload, as on a real kubelet). The container's CPU rate is
*constant* over the interval between two consecutive samples, and the cumulative counter grows
by exactly ``rate * Δt``; so ``(cpu_k - cpu_{k-1}) / (ts_k - ts_{k-1})`` gives back the rate to
the nanocore. Rates are multiples of 1000 nanocores so the counter stays an exact integer.
Memory is the value at the sample. The node's rate over its interval is its own overhead plus
the sum of its containers' rates for that sample; its counter grows the same way.

Samples are computed lazily (on scrape or truth request), so idle nodes cost nothing.
"""

from __future__ import annotations

import hashlib
import math
import uuid
from collections.abc import Iterator
from typing import Any

from .gofmt import go_float, rfc3339
from .payload import ContainerSample, NodeSample, PodSample, kubelet_text

HISTORY = 4  # samples kept per container/node for the truth API
_MASK = (1 << 64) - 1


def mix(*parts: int) -> int:
    """A small deterministic 64-bit hash (splitmix64 over the parts)."""
    h = 0x9E3779B97F4A7C15
    for p in parts:
        h = (h ^ (p & _MASK)) * 0xBF58476D1CE4E5B9 & _MASK
        h ^= h >> 31
        h = h * 0x94D049BB133111EB & _MASK
        h ^= h >> 29
    return h


def shash(s: str) -> int:
    """A stable string hash (Python's own is salted per process, which breaks --seed)."""
    return int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "little")


PATTERNS = ("steady", "ramp", "wave", "spikes")


class Pattern:
    """How a container's CPU (nanocores) and memory (bytes) move from sample to sample."""

    __slots__ = ("cpu", "cpu_amp", "kind", "mem", "mem_amp", "period_ms", "spike_pct")

    def __init__(
        self,
        kind: str = "steady",
        cpu: int = 100_000_000,
        mem: int = 64 << 20,
        cpu_amp: int = 0,
        mem_amp: int = 0,
        period_ms: int = 300_000,
        spike_pct: int = 10,
    ) -> None:
        if kind not in PATTERNS:
            raise ValueError(f"unknown pattern {kind!r}, want one of {', '.join(PATTERNS)}")
        if cpu < 0 or mem < 0 or cpu_amp < 0 or mem_amp < 0 or period_ms <= 0:
            raise ValueError("pattern values must be non-negative and period_ms positive")
        self.kind = kind
        self.cpu = cpu
        self.mem = mem
        self.cpu_amp = cpu_amp
        self.mem_amp = mem_amp
        self.period_ms = period_ms
        self.spike_pct = spike_pct

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Pattern:
        return cls(
            kind=str(d.get("kind", "steady")),
            cpu=int(d.get("cpu_nanocores", 100_000_000)),
            mem=int(d.get("memory_bytes", 64 << 20)),
            cpu_amp=int(d.get("cpu_amplitude_nanocores", 0)),
            mem_amp=int(d.get("memory_amplitude_bytes", 0)),
            period_ms=int(d.get("period_ms", 300_000)),
            spike_pct=int(d.get("spike_percent", 10)),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "cpu_nanocores": self.cpu,
            "memory_bytes": self.mem,
            "cpu_amplitude_nanocores": self.cpu_amp,
            "memory_amplitude_bytes": self.mem_amp,
            "period_ms": self.period_ms,
            "spike_percent": self.spike_pct,
        }

    def _shape(self, cid: int, k: int, t_ms: int) -> float:
        """0..1: where in its swing the pattern is for sample k."""
        if self.kind == "steady":
            return 0.0
        if self.kind == "ramp":
            return (t_ms % self.period_ms) / self.period_ms
        if self.kind == "wave":
            return (1.0 + math.sin(2 * math.pi * t_ms / self.period_ms)) / 2
        return 1.0 if mix(cid, k) % 100 < self.spike_pct else 0.0

    def sample(self, cid: int, k: int, t_ms: int) -> tuple[int, int]:
        """(cpu nanocores, memory bytes) for sample k; CPU a multiple of 1000, memory of 4096."""
        s = self._shape(cid, k, t_ms)
        cpu = int(self.cpu + self.cpu_amp * s) // 1000 * 1000
        mem = int(self.mem + self.mem_amp * s) // 4096 * 4096
        return max(cpu, 1000), max(mem, 4096)


class Container:
    __slots__ = (
        "carried_ns",
        "cid",
        "cpu_ns",
        "has_sample",
        "hist",
        "mem",
        "name",
        "offset_ms",
        "pattern",
        "pending_restart_ms",
        "rate",
        "restarts",
        "start_ms",
        "start_str",
        "ts",
    )

    def __init__(self, name: str, cid: int, pattern: Pattern, offset_ms: int) -> None:
        self.name = name
        self.cid = cid
        self.pattern = pattern
        self.offset_ms = offset_ms
        self.start_ms = 0
        self.start_str = "0"
        self.has_sample = False
        self.ts = 0
        self.cpu_ns = 0  # cumulative CPU at the current sample, nanoseconds
        self.carried_ns = 0  # CPU of earlier incarnations: the pod's cgroup keeps counting it
        self.rate = 0  # nanocores over the interval ending at the current sample
        self.mem = 0
        self.hist: list[tuple[int, int, int]] = []  # (ts_ms, cpu_ns, memory) newest last
        self.restarts = 0
        self.pending_restart_ms: int | None = None

    def set_start(self, start_ms: int) -> None:
        self.start_ms = start_ms
        self.start_str = go_float(start_ms / 1000)

    def step(self, k: int, t_node_ms: int) -> bool:
        """Compute sample k; False if the container has no sample yet (not started)."""
        ts = t_node_ms - self.offset_ms
        pr = self.pending_restart_ms
        if pr is not None and pr < ts:
            # The restart becomes visible at the first sample taken after it, like the kubelet.
            self.pending_restart_ms = None
            self.set_start(pr)
            self.has_sample = False
            self.carried_ns += self.cpu_ns
            self.cpu_ns = 0
            self.hist = []
            self.restarts += 1
        if ts <= self.start_ms:
            return False
        rate, mem = self.pattern.sample(self.cid, k, ts)
        prev = self.ts if self.has_sample else self.start_ms
        self.cpu_ns += rate * (ts - prev) // 1000
        self.rate = rate
        self.mem = mem
        self.ts = ts
        self.has_sample = True
        h = self.hist
        h.append((ts, self.cpu_ns, mem))
        if len(h) > HISTORY:
            del h[0]
        return True

    def seed_sample(self, ts: int, age_ms: int) -> None:
        """Pretend the container has been running for age_ms at its pattern's base rate."""
        rate, mem = self.pattern.sample(self.cid, -1, ts)
        self.set_start(ts - age_ms)
        self.cpu_ns = rate * age_ms // 1000
        self.rate = rate
        self.mem = mem
        self.ts = ts
        self.has_sample = True
        self.hist = [(ts, self.cpu_ns, mem)]

    def truth(self) -> dict[str, Any]:
        prev = self.hist[-2][0] if len(self.hist) >= 2 else self.start_ms
        return {
            "cpu_nanocores": self.rate,
            "memory_bytes": self.mem,
            "timestamp_ms": self.ts,
            "window_ms": self.ts - prev,
            "cpu_ns_total": self.cpu_ns,
            "start_time_ms": self.start_ms,
            "restarts": self.restarts,
            "history": [list(h) for h in self.hist],
            "pattern": self.pattern.to_dict(),
        }


class Pod:
    """A pod: compact state; its Kubernetes JSON is built on demand."""

    __slots__ = (
        "containers",
        "created",
        "image",
        "ip",
        "labels",
        "name",
        "namespace",
        "node",
        "offset_ms",
        "owner",
        "phase",
        "rv",
        "started",
        "uid",
    )

    resource = "pods"

    def __init__(
        self,
        namespace: str,
        name: str,
        node: str,
        labels: dict[str, str],
        containers: list[Container],
        created: float,
        ip: str,
        owner: str = "",
        phase: str = "Running",
        offset_ms: int = 0,
    ) -> None:
        self.namespace = namespace
        self.name = name
        self.node = node
        self.labels = labels
        self.containers = containers
        self.created = created
        self.started = created
        self.ip = ip
        self.owner = owner
        self.phase = phase
        self.uid = str(uuid.UUID(int=mix(shash(namespace), shash(name), int(created * 1000)) << 64))
        self.rv = 0
        self.offset_ms = offset_ms

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    def field(self, name: str) -> str | None:
        if name == "metadata.name":
            return self.name
        if name == "metadata.namespace":
            return self.namespace
        if name == "spec.nodeName":
            return self.node
        if name == "status.phase":
            return self.phase
        return None

    def metadata(self) -> dict[str, Any]:
        m: dict[str, Any] = {
            "name": self.name,
            "namespace": self.namespace,
            "uid": self.uid,
            "resourceVersion": str(self.rv),
            "creationTimestamp": rfc3339(self.created),
        }
        if self.labels:
            m["labels"] = self.labels
        if self.owner:
            kind, _, oname = self.owner.partition("/")
            m["ownerReferences"] = [
                {
                    "apiVersion": "apps/v1" if kind != "Node" else "v1",
                    "kind": kind,
                    "name": oname,
                    "uid": str(uuid.UUID(int=mix(shash(self.owner)) << 64)),
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ]
        return m

    def to_dict(self) -> dict[str, Any]:
        running = self.phase == "Running"
        started = rfc3339(self.started)
        statuses = []
        for c in self.containers:
            st: dict[str, Any] = {
                "name": c.name,
                "image": f"registry.sim/{c.name}:1.0",
                "imageID": f"registry.sim/{c.name}@sha256:{mix(c.cid):016x}",
                "ready": running,
                "restartCount": c.restarts,
                "started": running,
            }
            if running:
                st["state"] = {"running": {"startedAt": rfc3339(c.start_ms / 1000)}}
                st["containerID"] = f"containerd://{mix(c.cid, c.restarts):016x}"
            else:
                st["state"] = {"waiting": {"reason": "ContainerCreating"}}
            statuses.append(st)
        cond = "True" if running else "False"
        return {
            "kind": "Pod",
            "apiVersion": "v1",
            "metadata": self.metadata(),
            "spec": {
                "nodeName": self.node,
                "containers": [
                    {
                        "name": c.name,
                        "image": f"registry.sim/{c.name}:1.0",
                        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
                    }
                    for c in self.containers
                ],
                "restartPolicy": "Always",
                "schedulerName": "default-scheduler",
                "serviceAccountName": "default",
            },
            "status": {
                "phase": self.phase,
                "conditions": [
                    {"type": "Initialized", "status": "True"},
                    {"type": "Ready", "status": cond},
                    {"type": "ContainersReady", "status": cond},
                    {"type": "PodScheduled", "status": "True"},
                ],
                "hostIP": "",
                "podIP": self.ip,
                "podIPs": [{"ip": self.ip}],
                "startTime": started,
                "containerStatuses": statuses,
                "qosClass": "Burstable",
            },
        }


class Node:
    __slots__ = (
        "body",
        "body_key",
        "cpu_ns",
        "created",
        "fault",
        "fault_seconds",
        "gen",
        "hist",
        "index",
        "ip",
        "k",
        "labels",
        "mem",
        "name",
        "overhead_cpu",
        "overhead_mem",
        "period_ms",
        "phase_ms",
        "pods",
        "port",
        "rate",
        "rv",
        "sorted_cache",
        "ts",
        "uid",
    )

    resource = "nodes"
    namespace = ""

    def __init__(
        self,
        name: str,
        ip: str,
        port: int,
        labels: dict[str, str],
        created: float,
        period_ms: int,
        phase_ms: int,
        overhead_cpu: int,
        overhead_mem: int,
    ) -> None:
        self.name = name
        self.ip = ip
        self.port = port
        self.labels = labels
        self.created = created
        self.uid = str(uuid.UUID(int=mix(shash(name), int(created * 1000)) << 64))
        self.rv = 0
        self.period_ms = period_ms
        self.phase_ms = phase_ms
        self.overhead_cpu = overhead_cpu
        self.overhead_mem = overhead_mem
        self.pods: dict[tuple[str, str], Pod] = {}
        self.k = -(1 << 62)
        self.ts = 0
        self.cpu_ns = 0
        self.rate = 0
        self.mem = 0
        self.hist: list[tuple[int, int, int]] = []
        self.gen = 0  # bumps when the payload must be re-rendered at the same sample
        self.body = b""
        self.body_key: tuple[int, int] = (0, -1)
        self.sorted_cache: list[tuple[Container, Pod]] | None = None
        self.fault = ""
        self.fault_seconds = 0.0
        self.index = -1  # position in the 127.0.x.y address plan

    @property
    def key(self) -> tuple[str, str]:
        return ("", self.name)

    def field(self, name: str) -> str | None:
        if name == "metadata.name":
            return self.name
        return None

    def sample_index(self, now_ms: int) -> int:
        return (now_ms - self.phase_ms) // self.period_ms

    def sample_time(self, k: int) -> int:
        return self.phase_ms + k * self.period_ms

    def running(self) -> Iterator[tuple[Container, Pod]]:
        for p in self.pods.values():
            if p.phase == "Running":
                for c in p.containers:
                    yield c, p

    def seed(self, now_ms: int, uptime_ms: int) -> None:
        """Start with one sample already taken, as if the node had been up for uptime_ms."""
        k = self.sample_index(now_ms) - 1
        t = self.sample_time(k)
        self.k = k
        self.ts = t
        rate = self.overhead_cpu
        mem = self.overhead_mem
        for c, _ in self.running():
            if c.has_sample:
                rate += c.rate
                mem += c.mem
        self.rate = rate
        self.mem = mem
        self.cpu_ns = rate * uptime_ms // 1000
        self.hist = [(t, self.cpu_ns, mem)]

    def advance(self, now_ms: int) -> None:
        """Bring samples up to date; intervals nobody could have seen are collapsed into one."""
        k_now = self.sample_index(now_ms)
        if k_now <= self.k:
            return
        first = max(self.k + 1, k_now - HISTORY)
        for k in range(first, k_now + 1):
            t = self.sample_time(k)
            rate = self.overhead_cpu
            mem = self.overhead_mem
            for c, _ in self.running():
                if c.step(k, t):
                    rate += c.rate
                    mem += c.mem
            self.cpu_ns += rate * (t - self.ts) // 1000
            self.rate = rate
            self.mem = mem
            self.ts = t
            self.hist.append((t, self.cpu_ns, mem))
            if len(self.hist) > HISTORY:
                del self.hist[0]
        self.k = k_now

    def invalidate(self) -> None:
        self.gen += 1
        self.sorted_cache = None

    def sorted_containers(self) -> list[tuple[Container, Pod]]:
        if self.sorted_cache is None:
            # Prometheus orders series by label values: container, namespace, pod.
            self.sorted_cache = sorted(
                self.running(), key=lambda cp: (cp[0].name, cp[1].namespace, cp[1].name)
            )
        return self.sorted_cache

    def payload(self, now_ms: int, scrape_error: bool = False) -> bytes:
        """The /metrics/resource body for the current sample, rendered once per sample."""
        self.advance(now_ms)
        key = (self.k, self.gen * 2 + int(scrape_error))
        if self.body_key != key:
            self.body = render(self, scrape_error)
            self.body_key = key
        return self.body

    def truth(self) -> dict[str, Any]:
        prev = self.hist[-2][0] if len(self.hist) >= 2 else self.ts
        return {
            "cpu_nanocores": self.rate,
            "memory_bytes": self.mem,
            "timestamp_ms": self.ts,
            "window_ms": self.ts - prev,
            "cpu_ns_total": self.cpu_ns,
            "history": [list(h) for h in self.hist],
            "address": self.ip,
            "port": self.port,
            "fault": self.fault or None,
        }

    def metadata(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "uid": self.uid,
            "resourceVersion": str(self.rv),
            "creationTimestamp": rfc3339(self.created),
            "labels": self.labels,
            "annotations": {"node.alpha.kubernetes.io/ttl": "0"},
        }

    def to_dict(self) -> dict[str, Any]:
        created = rfc3339(self.created)
        return {
            "kind": "Node",
            "apiVersion": "v1",
            "metadata": self.metadata(),
            "spec": {"podCIDR": "10.244.0.0/24"},
            "status": {
                "capacity": {"cpu": "8", "memory": "32827396Ki", "pods": "110"},
                "allocatable": {"cpu": "8", "memory": "32725000Ki", "pods": "110"},
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "KubeletReady",
                        "message": "kubelet is posting ready status",
                        "lastHeartbeatTime": created,
                        "lastTransitionTime": created,
                    }
                ],
                "addresses": [
                    {"type": "InternalIP", "address": self.ip},
                    {"type": "Hostname", "address": self.name},
                ],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": self.port}},
                "nodeInfo": {
                    "machineID": f"{mix(shash(self.name)):032x}"[:32],
                    "systemUUID": self.uid,
                    "bootID": self.uid,
                    "kernelVersion": "6.1.0-sim",
                    "osImage": "kubemetrics-sim Linux",
                    "containerRuntimeVersion": "containerd://1.7.0",
                    "kubeletVersion": "v1.32.0",
                    "kubeProxyVersion": "v1.32.0",
                    "operatingSystem": "linux",
                    "architecture": "amd64",
                },
            },
        }


def render(node: Node, scrape_error: bool = False) -> bytes:
    """The kubelet's /metrics/resource text for the node's current sample."""
    containers: list[ContainerSample] = []
    pods: list[PodSample] = []
    if not scrape_error:
        containers = [
            ContainerSample(p.namespace, p.name, c.name, c.cpu_ns / 1e9, c.mem, c.start_str, c.ts)
            for c, p in node.sorted_containers()
            if c.has_sample
        ]
        for p in sorted(node.pods.values(), key=lambda p: (p.namespace, p.name)):
            cpu = 0
            mem = 0
            seen = False
            for c in p.containers:
                if c.has_sample and p.phase == "Running":
                    cpu += c.cpu_ns + c.carried_ns
                    mem += c.mem
                    seen = True
            if seen:
                pods.append(PodSample(p.namespace, p.name, cpu / 1e9, mem, node.ts - p.offset_ms))
    return kubelet_text(
        NodeSample(node.cpu_ns / 1e9, node.mem, node.ts),
        containers,
        pods=pods,
        swap=True,
        scrape_error=scrape_error,
    )
