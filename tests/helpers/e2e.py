"""End-to-end harness: the simulator and a real `python -m kubemetrics` behind its aggregator.

`Cluster.start()` runs the simulator (fast kubelet refresh) and the server through
`kubemetrics_sim.launch` (`--secure-port=0`, the bound port read from its log), registers the
server as the aggregator's metrics.k8s.io backend (trusting the self-signed certificate the
server wrote to its --cert-dir) and waits until every node is served. Values are checked
against the simulator's truth with `node_mismatch` / `pod_mismatch`, which find the pair of
kubelet samples the server must have used (by timestamp and window) and recompute the rate
from the raw counters.
"""

from __future__ import annotations

import datetime
import json
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubemetrics.cli.pflag import parse_duration
from kubemetrics.quantity import parse_quantity
from kubemetrics_sim.launch import ServerProcess, SimProcess, server_args
from kubemetrics_sim.protowire import fields as pb_fields

KUBECTL = shutil.which("kubectl")
PROTOBUF = "application/vnd.kubernetes.protobuf"
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io"
GROUP = "/apis/metrics.k8s.io"
VERSIONS = ("v1beta1", "v1")

# Test timing: scrape every 2 s while kubelets refresh every 2-3 s, so most windows span one
# kubelet interval, values appear within seconds, and a failed node drops out after the
# 2 x resolution grace (4 s).
RESOLUTION = "2s"
REFRESH_MS = (2000, 3000)


# --- sim + server ---------------------------------------------------------------------------------


@dataclass
class Cluster:
    sim: SimProcess
    server: ServerProcess
    root: Path

    @classmethod
    def start(
        cls,
        root: Path,
        *,
        nodes: int,
        pods_per_node: int,
        seed: int,
        server_extra: Sequence[str] = (),
    ) -> Cluster:
        sim = SimProcess(
            root / "sim", nodes=nodes, pods_per_node=pods_per_node, seed=seed, refresh_ms=REFRESH_MS
        ).start()
        server = ServerProcess(
            root / "server", server_args(sim, root / "server", *server_extra, resolution=RESOLUTION)
        )
        # Direct requests authenticate as the cluster admin (client CA = the cluster CA).
        server.client_cert = (sim.file("admin_cert"), sim.file("admin_key"))
        try:
            server.start()
            sim.set_backend(
                f"https://{server.host}:{server.port}", ca_pem=server.cert_file.read_text()
            )
            cluster = cls(sim, server, root)
            cluster.wait_served(set(sim.info["nodes"]), timeout=60)
        except BaseException:
            server.stop()
            sim.stop()
            raise
        return cluster

    def stop(self) -> None:
        self.server.stop()
        self.sim.stop()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- through the aggregator --
    def api(self, path: str, accept: str | None = None) -> tuple[int, dict[str, str], bytes]:
        return self.sim.request("GET", path, headers={"Accept": accept} if accept else None)

    def api_json(self, path: str) -> Any:
        status, _, body = self.api(path)
        assert status == 200, f"GET {path}: {status} {body[:300]!r}"
        return json.loads(body)

    def served_nodes(self) -> set[str]:
        items = self.api_json(f"{GROUP}/v1beta1/nodes")["items"]
        return {i["metadata"]["name"] for i in items}

    def served_pods(self) -> set[str]:
        items = self.api_json(f"{GROUP}/v1beta1/pods")["items"]
        return {f"{i['metadata']['namespace']}/{i['metadata']['name']}" for i in items}

    def wait_served(self, nodes: set[str], timeout: float = 30.0) -> None:
        """Until exactly `nodes` are served (and, when any, some pods)."""
        deadline = time.monotonic() + timeout
        got: set[str] = set()
        while time.monotonic() < deadline:
            status, _, body = self.api(f"{GROUP}/v1beta1/nodes")
            if status == 200:
                got = {i["metadata"]["name"] for i in json.loads(body)["items"]}
                if got == nodes and (not nodes or self.served_pods()):
                    return
            time.sleep(0.25)
        raise AssertionError(
            f"served nodes {sorted(got)} != {sorted(nodes)} after {timeout}s\n"
            f"{tail(self.server.log())}"
        )

    def kubectl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        assert KUBECTL is not None
        return subprocess.run(
            [KUBECTL, "--cache-dir", str(self.root / "kubectl-cache"), *args],
            env=self.sim.env("admin"),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def kubectl_ok(self, *args: str) -> str:
        r = self.kubectl(*args)
        assert r.returncode == 0, f"kubectl {' '.join(args)}: {r.stderr}"
        return r.stdout


def tail(text: str, n: int = 30) -> str:
    return "\n".join(text.splitlines()[-n:])


def eventually(check: Callable[[], str | None], attempts: int = 3, pause: float = 0.5) -> None:
    """Run `check` (returns None or a problem) until it passes; fail with the last problem.

    For comparisons across two processes' moving clocks (the server's last scrape vs the
    simulator's newest sample): a real mismatch fails every attempt.
    """
    problem: str | None = None
    for i in range(attempts):
        problem = check()
        if problem is None:
            return
        if i + 1 < attempts:
            time.sleep(pause)
    raise AssertionError(problem)


def table_rows(out: str) -> list[list[str]]:
    lines = [ln for ln in out.splitlines() if ln.strip()]
    return [ln.split() for ln in lines[1:]]


# --- quantities, durations, timestamps (Python parsers, independent of the Rust encoder) -------


def cpu_nanocores(text: str) -> int:
    q = parse_quantity(text)
    assert q.canonical, f"not a canonical CPU quantity: {text!r}"
    assert not q.binary, f"CPU quantity with a binary suffix: {text!r}"
    return int(q.value * 10**9)


def memory_bytes(text: str) -> int:
    q = parse_quantity(text)
    assert q.canonical, f"not a canonical memory quantity: {text!r}"
    assert q.binary or q.suffix in ("", "k", "M", "G"), f"memory quantity suffix: {text!r}"
    return int(q.value)


def duration_ms(text: str) -> int:
    return round(parse_duration(text) * 1000)  # Go's time.ParseDuration; ValueError if bad


def rfc3339_seconds(text: str) -> int:
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", text), f"bad timestamp {text!r}"
    dt = datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    return int(dt.timestamp())


# --- truth comparison --------------------------------------------------------------------------

CPU_TOLERANCE_NANOCORES = 1000  # the kubelet text carries core-seconds as floats
MIB = 1 << 20


def _rate(a: Sequence[int], b: Sequence[int]) -> int:
    """Nanocores between two history entries (ts_ms, cpu_ns, memory)."""
    return (b[1] - a[1]) * 1000 // (b[0] - a[0])


def node_mismatch(item: dict[str, Any], truth: dict[str, Any]) -> str | None:
    """None if the NodeMetrics item is what the truth's samples give; else why not."""
    name = item["metadata"]["name"]
    ts = rfc3339_seconds(item["timestamp"])
    window = duration_ms(item["window"])
    cpu = cpu_nanocores(item["usage"]["cpu"])
    mem = memory_bytes(item["usage"]["memory"])
    hist = truth["history"]
    for j in range(len(hist)):
        for i in range(j):
            a, b = hist[i], hist[j]
            if b[0] // 1000 != ts or b[0] - a[0] != window:
                continue
            if abs(cpu - _rate(a, b)) <= CPU_TOLERANCE_NANOCORES and mem == b[2]:
                return None
            return (
                f"node {name}: served cpu={cpu}n mem={mem} but samples give {_rate(a, b)}n {b[2]}"
            )
    return f"node {name}: no sample pair with timestamp {ts}s and window {window}ms in {hist}"


def _aligned_pairs(hists: Iterable[list[list[int]]]) -> list[tuple[int, int]]:
    n = min(len(h) for h in hists)
    return [(bi, bj) for bj in range(n) for bi in range(bj + 1, n)]


def pod_mismatch(item: dict[str, Any], truth: dict[str, Any]) -> str | None:
    """None if the PodMetrics item matches one aligned pair of samples of all its containers."""
    key = f"{item['metadata']['namespace']}/{item['metadata']['name']}"
    ts = rfc3339_seconds(item["timestamp"])
    window = duration_ms(item["window"])
    served = {c["name"]: c["usage"] for c in item["containers"]}
    names = [c["name"] for c in item["containers"]]
    if names != sorted(names):
        return f"pod {key}: containers not sorted by name: {names}"
    tc = truth["containers"]
    if set(served) != set(tc):
        return f"pod {key}: containers {sorted(served)} != truth {sorted(tc)}"
    hists = {n: tc[n]["history"] for n in tc}
    for bi, bj in _aligned_pairs(hists.values()):
        earliest: tuple[int, int] | None = None  # (ts of last, window) of the earliest container
        ok = True
        for n, h in hists.items():
            a, b = h[-1 - bi], h[-1 - bj]
            if abs(cpu_nanocores(served[n]["cpu"]) - _rate(a, b)) > CPU_TOLERANCE_NANOCORES:
                ok = False
            if memory_bytes(served[n]["memory"]) != b[2]:
                ok = False
            if earliest is None or b[0] < earliest[0]:
                earliest = (b[0], b[0] - a[0])
        if ok and earliest is not None and earliest[1] == window and earliest[0] // 1000 == ts:
            return None
    return f"pod {key}: served {served} at {ts}s/{window}ms matches no sample pair of {hists}"


def kubectl_node_mismatch(name: str, cpu_m: int, mem_mi: int, truth: dict[str, Any]) -> str | None:
    """kubectl top prints ceil(millicores) and floor(MiB): within 1m and 1Mi of some pair."""
    hist = truth["history"]
    for j in range(len(hist)):
        for i in range(j):
            rate, mem = _rate(hist[i], hist[j]), hist[j][2]
            if abs(cpu_m - rate / 1e6) <= 1 and abs(mem_mi - mem / MIB) <= 1:
                return None
    return f"node {name}: kubectl {cpu_m}m {mem_mi}Mi matches no sample pair of {hist}"


def kubectl_pod_mismatch(key: str, cpu_m: int, mem_mi: int, truth: dict[str, Any]) -> str | None:
    hists = [c["history"] for c in truth["containers"].values()]
    for bi, bj in _aligned_pairs(hists):
        rate = sum(_rate(h[-1 - bi], h[-1 - bj]) for h in hists)
        mem = sum(h[-1 - bj][2] for h in hists)
        if abs(cpu_m - rate / 1e6) <= 1 and abs(mem_mi - mem / MIB) <= 1:
            return None
    return f"pod {key}: kubectl {cpu_m}m {mem_mi}Mi matches no sample pair of {hists}"


def kubectl_cpu_m(text: str) -> int:
    assert text.endswith("m"), text
    return int(text[:-1])


def kubectl_mem_mi(text: str) -> int:
    assert text.endswith("Mi"), text
    return int(text[:-2])


# --- protobuf (just enough of the wire format for metrics.k8s.io) -------------------------------


def _bytes_of(fs: list[tuple[int, int | bytes]], num: int) -> list[bytes]:
    return [v for n, v in fs if n == num and isinstance(v, bytes)]


def _int_of(fs: list[tuple[int, int | bytes]], num: int) -> int:
    vals = [v for n, v in fs if n == num and isinstance(v, int)]
    return vals[0] if vals else 0


def _map(entries: list[bytes], quantity: bool) -> dict[str, str]:
    out: dict[str, str] = {}
    for e in entries:
        fs = pb_fields(e)
        key = _bytes_of(fs, 1)[0].decode()
        value = _bytes_of(fs, 2)[0] if _bytes_of(fs, 2) else b""
        # resource.Quantity is a message with one string field (1)
        out[key] = _bytes_of(pb_fields(value), 1)[0].decode() if quantity else value.decode()
    return out


def _time(b: bytes) -> str:
    seconds = _int_of(pb_fields(b), 1)
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _pb_item(b: bytes, kind: str) -> dict[str, Any]:
    fs = pb_fields(b)
    meta = pb_fields(_bytes_of(fs, 1)[0])
    md: dict[str, Any] = {"name": _bytes_of(meta, 1)[0].decode()}
    if _bytes_of(meta, 3):
        md["namespace"] = _bytes_of(meta, 3)[0].decode()
    md["creationTimestamp"] = _time(_bytes_of(meta, 8)[0])
    labels = _map(_bytes_of(meta, 11), quantity=False)
    if labels:
        md["labels"] = labels
    window_ns = _int_of(pb_fields(_bytes_of(fs, 3)[0]), 1)
    item: dict[str, Any] = {
        "metadata": md,
        "timestamp": _time(_bytes_of(fs, 2)[0]),
        "window_ms": window_ns // 1_000_000,
    }
    if kind == "nodes":
        item["usage"] = _map(_bytes_of(fs, 4), quantity=True)
    else:
        item["containers"] = [
            {
                "name": _bytes_of(pb_fields(c), 1)[0].decode(),
                "usage": _map(_bytes_of(pb_fields(c), 2), quantity=True),
            }
            for c in _bytes_of(fs, 4)
        ]
    return item


def decode_protobuf(body: bytes, kind: str, single: bool) -> dict[str, Any]:
    """A k8s protobuf body → {apiVersion, kind, items|item} in the JSON's shape."""
    assert body[:4] == b"k8s\x00", f"no k8s protobuf magic: {body[:8]!r}"
    env = pb_fields(body[4:])
    type_meta = pb_fields(_bytes_of(env, 1)[0])
    raw = _bytes_of(env, 2)[0]
    out: dict[str, Any] = {
        "apiVersion": _bytes_of(type_meta, 1)[0].decode(),
        "kind": _bytes_of(type_meta, 2)[0].decode(),
    }
    if single:
        out["item"] = _pb_item(raw, kind)
    else:
        out["items"] = [_pb_item(i, kind) for i in _bytes_of(pb_fields(raw), 2)]
    return out


def json_as_pb_shape(item: dict[str, Any]) -> dict[str, Any]:
    """A JSON item in the shape `decode_protobuf` gives (window as ms, no kind/apiVersion)."""
    out = {k: v for k, v in item.items() if k not in ("kind", "apiVersion", "window")}
    out["window_ms"] = duration_ms(item["window"])
    return out
