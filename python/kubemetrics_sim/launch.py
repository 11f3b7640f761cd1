"""Launch the simulator and the server as processes, talk to them, always stop them (by PID).

    from kubemetrics_sim.launch import ServerProcess, SimProcess, server_args

    with SimProcess(tmp_path / "sim", nodes=3, pods_per_node=4) as sim:
        truth = sim.truth()
        sim.fault("node-0001", "http500")
        server = ServerProcess(tmp_path / "server", server_args(sim, tmp_path / "server"))
        with server:
            status, headers, body = server.get("/apis/metrics.k8s.io/v1/nodes")

The one way to start either: the demo (`kubemetrics demo`), the tests (through thin pytest
fixtures in `tests/helpers/fixtures.py`) and the benches use it. Nothing here imports pytest
or the server (`python -m kubemetrics` is a process to it), so it ships in the wheel.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

READY = "kubemetrics-sim ready"
# The server's "Serving securely" line, in the text (klog) and JSON log formats; upstream
# metrics-server (the side-by-side tests) logs `Serving securely on HOST:PORT`.
SERVING = re.compile(r'Serving securely(?:.*?"?address"?[=:]"([^"]+)"| on (\S+))')


class SimError(RuntimeError):
    """The simulator (or the server) did not start, or exited."""


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
        new_session: bool = False,
    ) -> None:
        """`new_session`: run in its own session, so a terminal's Ctrl-C reaches only us (the
        demo stops its children itself, in order)."""
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
        self.new_session = new_session
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
            proc = self.proc = subprocess.Popen(
                self.args,
                stdout=fo,
                stderr=fe,
                stdin=subprocess.DEVNULL,
                start_new_session=self.new_session,
            )
        deadline = t0 + self.ready_timeout
        while True:
            text = out.read_text(errors="replace")
            for line in text.splitlines():
                if line.startswith(READY):
                    self.ready_line = line
            if self.ready_line:
                break
            if proc.poll() is not None:
                raise SimError(f"simulator exited with {proc.returncode}:\n{self.log_tail()}")
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
        p, self.proc = self.proc, None
        return _stop(p, timeout)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

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

    def fault(self, node: str, fault: str, seconds: float = 0.0, duration: float = 0.0) -> None:
        """`duration` > 0: the simulator heals the node by itself after that many seconds."""
        self.control(
            "POST", "faults", {"node": node, "fault": fault, "seconds": seconds, "for": duration}
        )

    def outage(self, seconds: float, *, compact: bool = False) -> None:
        """The API server refuses connections for `seconds` (then, with `compact`, forgets its
        watch history, as a restarted one would)."""
        self.control("POST", "outage", {"seconds": seconds, "compact": compact})

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

    def set_backend(
        self,
        url: str | Sequence[str],
        *,
        ca_pem: str | None = None,
        insecure: bool = False,
        readiness_path: str = "",
        probe_period: float = 1.0,
        failure_threshold: int = 3,
    ) -> dict[str, Any]:
        """The metrics.k8s.io APIService's Service: one endpoint URL or several (each probed,
        published as EndpointSlices, requests spread over the ready ones)."""
        urls = [url] if isinstance(url, str) else list(url)
        return dict(
            self.control(
                "PUT",
                "aggregator",
                {
                    "endpoints": urls,
                    "ca_pem": ca_pem,
                    "insecure": insecure,
                    "readiness_path": readiness_path,
                    "probe_period": probe_period,
                    "failure_threshold": failure_threshold,
                },
            )
        )

    def aggregator(self) -> dict[str, Any] | None:
        """The backend, its endpoints' states, the ready ones and the requests each was sent."""
        got = self.control("GET", "aggregator")
        return None if got is None else dict(got)

    def add_endpoint(self, url: str) -> None:
        self.control("POST", "aggregator/endpoints", {"url": url})

    def remove_endpoint(self, url: str) -> None:
        self.control("DELETE", "aggregator/endpoints", {"url": url})

    def kubelet_requests(self) -> dict[str, dict[str, int]]:
        """node → User-Agent → metrics requests its kubelet served so far."""
        return {
            str(n): {str(a): int(c) for a, c in agents.items()}
            for n, agents in self.control("GET", "kubelet-requests")["nodes"].items()
        }

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


# --- the server -----------------------------------------------------------------------------


def server_args(sim: SimProcess, workdir: Path, *extra: str, resolution: str = "15s") -> list[str]:
    """The server's flags against `sim`, as the standard manifests run it (metrics-server's
    kubeconfig for all three clients, the kubelets' node status port and the cluster CA), on a
    free port of 127.0.0.1 with a self-signed certificate in `workdir/certs`."""
    kubeconfig = sim.kubeconfig("metrics-server")
    return [
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        "--secure-port=0",
        f"--cert-dir={workdir / 'certs'}",
        f"--metric-resolution={resolution}",
        "--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname",
        "--kubelet-use-node-status-port",
        f"--kubelet-certificate-authority={sim.ca_file}",
        *extra,
    ]


class ServerProcess:
    """`python -m kubemetrics ARGS` (or `command ARGS`, e.g. upstream metrics-server) with its
    log in `workdir/NAME.log`; `start()` waits for "Serving securely" and reads the bound
    address from it; `stop()` sends SIGTERM."""

    def __init__(
        self,
        workdir: Path,
        args: Sequence[str],
        *,
        new_session: bool = False,
        command: Sequence[str] = (),
        name: str = "kubemetrics",
    ) -> None:
        self.workdir = Path(workdir)
        self.args = [*(command or (sys.executable, "-m", "kubemetrics")), *args]
        self.name = name
        self.log_path = self.workdir / f"{name}.log"
        self.new_session = new_session
        self.proc: subprocess.Popen[bytes] | None = None
        self.host = ""
        self.port = 0
        self._ssl: ssl.SSLContext | None = None
        # (cert, key) presented by get(): the server authorizes every path but the probes.
        self.client_cert: tuple[str, str] | None = None

    def start(self, timeout: float = 60.0) -> ServerProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as err:
            proc = self.proc = subprocess.Popen(
                self.args,
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=subprocess.STDOUT,
                start_new_session=self.new_session,
            )
        deadline = time.monotonic() + timeout
        while True:
            m = SERVING.search(self.log())
            if m:
                host, _, port = (m.group(1) or m.group(2)).rpartition(":")
                self.host, self.port = host.strip("[]"), int(port)
                return self
            if proc.poll() is not None:
                raise SimError(f"{self.name} exited with {proc.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise SimError(f"{self.name} not serving after {timeout}s:\n{self.log_tail()}")
            time.sleep(0.05)

    def stop(self, timeout: float = 20.0) -> int | None:
        p, self.proc = self.proc, None
        return _stop(p, timeout)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, n: int = 30) -> str:
        return "\n".join(self.log().splitlines()[-n:])

    @property
    def cert_file(self) -> Path:
        """The self-signed serving certificate (leaf, then its CA) the server wrote."""
        return self.workdir / "certs" / "apiserver.crt"

    def ssl_context(self, cafile: str | None = None) -> ssl.SSLContext:
        if cafile is not None:
            return ssl.create_default_context(cafile=cafile)
        if self._ssl is None:
            self._ssl = ssl.create_default_context(cafile=str(self.cert_file))
            if self.client_cert is not None:
                self._ssl.load_cert_chain(*self.client_cert)
        return self._ssl

    def get(
        self,
        path: str,
        accept: str | None = None,
        method: str = "GET",
        context: ssl.SSLContext | None = None,
        timeout: float = 30.0,
    ) -> tuple[int, dict[str, str], bytes]:
        """A direct HTTPS request to the server (verifying its certificate)."""
        c = http.client.HTTPSConnection(
            self.host, self.port, context=context or self.ssl_context(), timeout=timeout
        )
        try:
            c.request(method, path, headers={"Accept": accept} if accept else {})
            r = c.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            c.close()


def _stop(p: subprocess.Popen[bytes] | None, timeout: float) -> int | None:
    """SIGTERM, then SIGKILL after `timeout`; the exit code."""
    if p is None:
        return None
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)
    return p.returncode
