"""Start the simulator as a subprocess for tests, talk to its control API, always stop it.

    from kubemetrics_sim.testing import SimProcess

    with SimProcess(tmp_path / "sim", nodes=3, pods_per_node=4) as sim:
        truth = sim.truth()
        sim.fault("node-0001", "http500")

pytest: ``from kubemetrics_sim.testing import sim, sim_factory`` in a conftest gives the fixtures
``sim`` (3 nodes × 4 pods, fast 1–1.5 s sample refresh) and ``sim_factory(**kwargs)``.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

READY = "kubemetrics-sim ready"


class SimError(RuntimeError):
    pass


class ControlError(SimError):
    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"control API answered {status}: {body}")
        self.status = status
        self.body = body


class SimProcess:
    """One simulator process. Use as a context manager, or call start()/stop()."""

    def __init__(
        self,
        state_dir: Path,
        *,
        nodes: int = 3,
        pods_per_node: int = 4,
        seed: int = 1,
        refresh_ms: tuple[int, int] = (10_000, 15_000),
        extra_args: tuple[str, ...] = (),
        ready_timeout: float = 60.0,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.args = [
            sys.executable,
            "-m",
            "kubemetrics_sim",
            "--nodes",
            str(nodes),
            "--pods-per-node",
            str(pods_per_node),
            "--state-dir",
            str(self.state_dir),
            "--seed",
            str(seed),
            "--refresh-min-ms",
            str(refresh_ms[0]),
            "--refresh-max-ms",
            str(refresh_ms[1]),
            *extra_args,
        ]
        self.ready_timeout = ready_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.info: dict[str, Any] = {}
        self.ready_line = ""
        self.startup_seconds = 0.0
        self._ssl: ssl.SSLContext | None = None

    # --- lifecycle -------------------------------------------------------------------------
    def start(self) -> SimProcess:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        out = self.state_dir / "sim.stdout"
        err = self.state_dir / "sim.log"
        t0 = time.monotonic()
        with open(out, "wb") as fo, open(err, "wb") as fe:
            self.proc = subprocess.Popen(self.args, stdout=fo, stderr=fe, stdin=subprocess.DEVNULL)
        deadline = t0 + self.ready_timeout
        while True:
            text = out.read_text(errors="replace")
            for line in text.splitlines():
                if line.startswith(READY):
                    self.ready_line = line
            if self.ready_line:
                break
            if self.proc.poll() is not None:
                raise SimError(f"simulator exited with {self.proc.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise SimError(
                    f"simulator not ready after {self.ready_timeout}s:\n{self.log_tail()}"
                )
            time.sleep(0.05)
        self.startup_seconds = time.monotonic() - t0
        self.info = json.loads((self.state_dir / "cluster.json").read_text())
        return self

    def stop(self, timeout: float = 15.0) -> int | None:
        p = self.proc
        if p is None:
            return None
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        self.proc = None
        return p.returncode

    def __enter__(self) -> SimProcess:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def log_tail(self, n: int = 40) -> str:
        p = self.state_dir / "sim.log"
        if not p.exists():
            return ""
        return "\n".join(p.read_text(errors="replace").splitlines()[-n:])

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    # --- facts -----------------------------------------------------------------------------
    @property
    def api_url(self) -> str:
        return str(self.info["apiserver"]["url"])

    @property
    def api_port(self) -> int:
        return int(self.info["apiserver"]["port"])

    @property
    def ca_file(self) -> str:
        return str(self.info["files"]["ca"])

    def token(self, user: str) -> str:
        return str(self.info["users"][user]["token"])

    def kubeconfig(self, user: str = "admin") -> str:
        return str(self.info["files"][f"{user}.kubeconfig"])

    def file(self, key: str) -> str:
        return str(self.info["files"][key])

    def node_address(self, node: str) -> tuple[str, int]:
        n = self.info["nodes"][node]
        return str(n["address"]), int(n["port"])

    def ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context(cafile=self.ca_file)
        return self._ssl

    # --- control API (blocking; call from tests, not from inside an event loop) -------------
    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = None,
        host: str | None = None,
        port: int | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 30.0,
    ) -> tuple[int, dict[str, str], bytes]:
        """A raw HTTPS request (verifying the cluster CA) to the API server or a kubelet."""
        h = host or str(self.info["apiserver"]["host"])
        c = http.client.HTTPSConnection(
            h, port or self.api_port, context=self.ssl_context(), timeout=timeout
        )
        hdrs = dict(headers or {})
        tok = self.token("admin") if token is None else token
        if tok:
            hdrs["Authorization"] = f"Bearer {tok}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        try:
            c.request(method, path, body=data, headers=hdrs)
            r = c.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            c.close()

    def control(self, method: str, path: str, body: Any = None) -> Any:
        status, _, data = self.request(method, f"/_sim/{path.lstrip('/')}", body)
        parsed = json.loads(data) if data else None
        if status >= 300:
            raise ControlError(status, parsed)
        return parsed

    def api(self, path: str, token: str | None = None) -> Any:
        status, _, data = self.request("GET", path, token=token)
        if status != 200:
            raise ControlError(status, data.decode(errors="replace"))
        return json.loads(data)

    def state(self) -> dict[str, Any]:
        return dict(self.control("GET", "state"))

    def truth(self, node: str | None = None, namespace: str | None = None) -> dict[str, Any]:
        q = "&".join(f"{k}={v}" for k, v in (("node", node), ("namespace", namespace)) if v)
        return dict(self.control("GET", "truth" + (f"?{q}" if q else "")))

    def fault(self, node: str, fault: str, seconds: float = 0.0) -> None:
        self.control("POST", "faults", {"node": node, "fault": fault, "seconds": seconds})

    def heal(self, node: str) -> None:
        self.fault(node, "heal")

    def create_pod(self, **spec: Any) -> dict[str, Any]:
        return dict(self.control("POST", "pods", spec))

    def delete_pod(self, namespace: str, name: str) -> None:
        self.control("DELETE", f"pods/{namespace}/{name}")

    def restart_container(self, namespace: str, name: str, container: str | None = None) -> None:
        self.control("POST", f"pods/{namespace}/{name}/restart", {"container": container})

    def set_pattern(
        self, namespace: str, name: str, pattern: dict[str, Any], container: str | None = None
    ) -> None:
        self.control(
            "POST", f"pods/{namespace}/{name}/pattern", {"container": container, "pattern": pattern}
        )

    def add_node(self) -> dict[str, Any]:
        node = dict(self.control("POST", "nodes", {}))
        self.info["nodes"][node["name"]] = {"address": node["address"], "port": node["port"]}
        return node

    def remove_node(self, name: str) -> None:
        self.control("DELETE", f"nodes/{name}")
        self.info["nodes"].pop(name, None)

    def set_backend(self, url: str, *, ca_pem: str | None = None, insecure: bool = False) -> None:
        self.control("PUT", "aggregator", {"url": url, "ca_pem": ca_pem, "insecure": insecure})

    def clear_backend(self) -> None:
        self.control("DELETE", "aggregator")

    def reviews(self) -> dict[str, int]:
        """Reviews the API server has answered so far, by resource (`tokenreviews`, ...)."""
        return {str(k): int(v) for k, v in self.state().get("reviews", {}).items()}

    def auth_configmap(self) -> dict[str, Any]:
        """The kube-system/extension-apiserver-authentication ConfigMap."""
        return dict(self.control("GET", "auth-configmap"))

    def set_auth_configmap(self, data: dict[str, str]) -> None:
        """Replace the authentication ConfigMap's data (watchers see the change)."""
        self.control("PUT", "auth-configmap", {"data": data})

    def compact(self) -> int:
        return int(self.control("POST", "compact")["floor"])

    def churn_once(self) -> str:
        return str(self.control("POST", "churn/once")["action"])

    def kubelet_get(
        self, node: str, token: str | None = None, path: str = "/metrics/resource"
    ) -> tuple[int, bytes]:
        host, port = self.node_address(node)
        tok = self.token("metrics-server") if token is None else token
        status, _, data = self.request("GET", path, token=tok, host=host, port=port)
        return status, data

    def wait_next_sample(self, node: str, timeout: float = 30.0) -> dict[str, Any]:
        """Block until the node's kubelet publishes a new sample; return the node truth."""
        t0 = self.truth(node=node)["nodes"][node]["timestamp_ms"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(0.1)
            cur = self.truth(node=node)["nodes"][node]
            if cur["timestamp_ms"] != t0:
                return dict(cur)
        raise SimError(f"no new sample on {node} within {timeout}s")

    def env(self, user: str = "admin") -> dict[str, str]:
        """Environment for running kubectl as a user (own discovery cache dir)."""
        e = dict(os.environ)
        e["KUBECONFIG"] = self.kubeconfig(user)
        e["KUBECACHEDIR"] = str(self.state_dir / "kubectl-cache")
        e["HOME"] = str(self.state_dir)
        return e


# --- pytest fixtures ------------------------------------------------------------------------
@pytest.fixture
def sim_factory(tmp_path: Path) -> Iterator[Callable[..., SimProcess]]:
    """Start simulators with custom arguments; every one is stopped at teardown."""
    started: list[SimProcess] = []

    def make(**kwargs: Any) -> SimProcess:
        kwargs.setdefault("refresh_ms", (1000, 1500))
        s = SimProcess(tmp_path / f"sim{len(started)}", **kwargs)
        started.append(s)
        return s.start()

    try:
        yield make
    finally:
        for s in started:
            s.stop()


@pytest.fixture
def sim(sim_factory: Callable[..., SimProcess]) -> SimProcess:
    """3 nodes × 4 pods with 1–1.5 s sample refresh (so tests see new samples quickly)."""
    return sim_factory(nodes=3, pods_per_node=4)
