"""`kubemetrics demo` (what `make demo` runs), small and fast: output, Ctrl-C, nothing left over."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.helpers.e2e import KUBECTL

FAST = [
    "--nodes=4",
    "--pods-per-node=3",
    "--resolution=2s",
    "--kubelet-refresh-ms=1000,1500",
    "--churn-interval=0",
    "--timeout=60",
]


def _env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["TMPDIR"] = str(tmp)  # the demo's temporary state dir goes here
    return env


def _processes_mentioning(text: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if text.encode() in cmdline:
            pids.append(int(entry.name))
    return pids


def test_demo_once_prints_kubectl_top_and_cleans_up(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "kubemetrics", "demo", *FAST, "--once"],
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(tmp_path),
        check=False,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "kubemetrics is serving 4 nodes and 12 pods" in out
    if KUBECTL is not None:
        nodes = out.split("$ kubectl top nodes\n")[1].split("\n\n")[0].splitlines()
        assert nodes[0].split()[:2] == ["NAME", "CPU(cores)"]
        assert [ln.split()[0] for ln in nodes[1:]] == [f"node-000{i}" for i in range(1, 5)]
        assert all(ln.split()[1].endswith("m") for ln in nodes[1:])
        pods = out.split("$ kubectl top pods -A\n")[1].splitlines()
        assert pods[0].split() == ["NAMESPACE", "NAME", "CPU(cores)", "MEMORY(bytes)"]
        assert len([ln for ln in pods[1:] if ln.strip()]) == 12
    assert list(tmp_path.iterdir()) == []  # temp state dir removed
    assert _processes_mentioning(str(tmp_path)) == []


def test_demo_stops_everything_on_ctrl_c(tmp_path: Path) -> None:
    p = subprocess.Popen(
        [sys.executable, "-m", "kubemetrics", "demo", *FAST],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_env(tmp_path),
    )
    try:
        assert p.stdout is not None
        seen = []
        deadline = time.monotonic() + 90
        for line in p.stdout:
            seen.append(line)
            if "Press Ctrl-C" in line or time.monotonic() > deadline:
                break
        assert any("Press Ctrl-C" in ln for ln in seen), "".join(seen)
        assert "KUBECONFIG=" in "".join(seen)
        assert len(_processes_mentioning(str(tmp_path))) == 2  # simulator and server
        p.send_signal(signal.SIGINT)
        assert p.wait(30) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert list(tmp_path.iterdir()) == []
    assert _processes_mentioning(str(tmp_path)) == []


def test_demo_without_kubectl_prints_the_api_answer(tmp_path: Path) -> None:
    env = _env(tmp_path / "tmp")
    (tmp_path / "tmp").mkdir()
    env["PATH"] = str(tmp_path / "empty-bin")  # no kubectl anywhere
    r = subprocess.run(
        [sys.executable, "-m", "kubemetrics", "demo", *FAST, "--once"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "kubectl is not installed" in r.stdout
    nodes = r.stdout.split("$ GET /apis/metrics.k8s.io/v1beta1/nodes\n")[1].split("\n\n")[0]
    rows = [ln.split() for ln in nodes.splitlines()[1:]]
    assert [row[0] for row in rows] == [f"node-000{i}" for i in range(1, 5)]
    assert all(row[1].endswith("m") and row[2].endswith("Mi") for row in rows)
    assert list((tmp_path / "tmp").iterdir()) == []
