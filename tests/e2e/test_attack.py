"""The attack tier: a real `python -m kubemetrics` against the simulator, under 1,000 idle,
slow and handshake-less connections (opened over 10 s) and a header flood (30 connections
each sending 960 KiB of a head that never ends, starting over 0.2 s after each refusal), all
from a process of their own, while an admin lists pod metrics every second over a new
connection each time, for 30 s.

Every admin request must succeed and none may be held back: the issue's goal is p99 ≤ 200 ms
(measured 8–11 ms on a quiet machine, figures in docs/DEPLOY.md), but this machine is shared, so
the test fails only at p99 > 1 s, which the attack reaches without the bounds (the admin is
refused or waits out its 10 s timeout) and load alone does not; the server's RSS may rise by
64 MiB at most; and the standing connections must be gone within the deadline. The deadlines
are short here (`--read-header-timeout=3s`), set by flag as an operator would; the memory
bounds are the production defaults. The figures are printed (`pytest -s`) and kept in
docs/DEPLOY.md.
"""

from __future__ import annotations

import math
import re
import statistics
import threading
import time
from pathlib import Path

import pytest

from kubemetrics_sim.launch import ServerProcess, SimProcess, server_args
from tests.helpers.e2e import REFRESH_MS, tail
from tests.helpers.hostile import Attack, HostileProcess, attack_args, parse_report
from tests.helpers.proc import cpu_seconds, memory_kib

PODS = "/apis/metrics.k8s.io/v1beta1/pods"
READ_HEADER_TIMEOUT = 3.0
# Far above the 200 ms goal: a latency goal is a benchmark's, and other jobs on a shared 2-core
# machine pushed p99 to 217-977 ms; an admin starved by the attack sees seconds.
P99_BOUND = 1.0
PLAN = Attack(idle=400, slow=400, raw=200, flooders=30, ramp=10.0, duration=30.0)
# Told apart: "closed by the 3 s deadline" (a loaded 2-core machine runs timers late) from
# "held": without the limits these connections stay open for as long as the attack lasts.
GONE_WITHIN = 2 * READ_HEADER_TIMEOUT + 2.0


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def _gauge(server: ServerProcess, name: str) -> float:
    status, _, body = server.get("/metrics")
    assert status == 200
    m = re.search(rf"^{name} (\S+)$", body.decode(), re.M)
    assert m, name
    return float(m.group(1))


@pytest.mark.slow
def test_the_server_holds_under_attack(tmp_path: Path) -> None:
    sim = SimProcess(tmp_path / "sim", nodes=3, pods_per_node=4, seed=3, refresh_ms=REFRESH_MS)
    sim.start()
    server = ServerProcess(
        tmp_path / "server",
        server_args(
            sim,
            tmp_path / "server",
            f"--read-header-timeout={READ_HEADER_TIMEOUT:g}s",
            "--idle-timeout=5s",
            "--request-timeout=10s",
            "--max-connections=4000",
            resolution="2s",
        ),
    )
    server.client_cert = (sim.file("admin_cert"), sim.file("admin_key"))
    try:
        server.start()
        deadline = time.monotonic() + 60
        while True:
            status, _, body = server.get(PODS)
            if status == 200 and b'"containers"' in body:
                break
            assert time.monotonic() < deadline, f"{status} {body[:300]!r}\n{tail(server.log())}"
            time.sleep(0.3)
        for _ in range(5):  # warm: the paths the admin takes, before the baseline
            server.get(PODS)
        time.sleep(1.0)
        baseline = max(memory_kib(server.pid)["VmRSS"] for _ in range(3))

        peak = [baseline]
        sampling = threading.Event()

        def sample() -> None:
            while not sampling.is_set():
                peak[0] = max(peak[0], memory_kib(server.pid)["VmRSS"])
                time.sleep(0.1)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        latencies: list[float] = []
        failures: list[str] = []
        cpu0 = cpu_seconds(server.pid)
        with HostileProcess(*attack_args(server.port, PLAN)) as attacker:
            assert attacker.readline() == "started"
            t0 = time.monotonic()
            while time.monotonic() - t0 < PLAN.duration - 1:
                start = time.monotonic()
                try:
                    status, _, body = server.get(PODS, timeout=10)
                except OSError as e:
                    failures.append(f"{type(e).__name__}: {e}")
                else:
                    latencies.append(time.monotonic() - start)
                    if status != 200 or b'"containers"' not in body:
                        failures.append(f"{status} {body[:200]!r}")
                time.sleep(max(0.0, 1.0 - (time.monotonic() - start)))
            report = parse_report(attacker.readline(timeout=120))
        ended = time.monotonic()
        cpu = (cpu_seconds(server.pid) - cpu0) / (ended - t0)
        open_after = _gauge(server, "kubemetrics_http_connections")
        while open_after > 1 and time.monotonic() - ended < GONE_WITHIN:
            time.sleep(0.2)
            open_after = _gauge(server, "kubemetrics_http_connections")
        sampling.set()
        sampler.join()

        held = [s for kind in ("idle", "slow", "raw") for s in report.held[kind]]
        rise_mib = (peak[0] - baseline) / 1024
        p50, p99 = statistics.median(latencies), _p(latencies, 0.99)
        print(
            f"\nattack tier: {len(latencies)} admin lists, p50 {p50 * 1000:.0f} ms, "
            f"p99 {p99 * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms; RSS "
            f"{baseline / 1024:.1f} -> peak {peak[0] / 1024:.1f} MiB (rise {rise_mib:.1f}); "
            f"{len(held)} standing connections held median {statistics.median(held):.2f} s, "
            f"max {max(held):.2f} s (deadline {READ_HEADER_TIMEOUT:g} s); flood answers "
            f"{report.flood_answers}; refused {report.refused}; open after {open_after:g}; "
            f"server CPU {cpu:.2f} cores"
        )
        assert failures == []
        assert len(latencies) >= PLAN.duration - 3
        assert p99 <= P99_BOUND, sorted(latencies)[-5:]
        assert rise_mib <= 64, rise_mib
        assert report.open_at_end == 0
        assert len(held) == PLAN.idle + PLAN.slow + PLAN.raw - report.refused
        assert report.refused == 0
        assert max(held) <= GONE_WITHIN, sorted(held)[-10:]
        assert open_after <= 1  # the admin's own /metrics request
        assert sum(report.flood_answers.values()) >= PLAN.flooders
    finally:
        server.stop()
        sim.stop()
