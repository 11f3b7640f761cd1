"""`kubemetrics demo`: a simulated cluster with kubemetrics behind its aggregator, in one command.

1. start the simulator (`python -m kubemetrics_sim`, ~100 nodes) with a temporary state dir;
2. start the server (`python -m kubemetrics`) with the simulator's metrics-server kubeconfig,
   an OS-picked port and a self-signed certificate in the temp dir;
3. point the simulator's aggregator (its APIService) at the server, trusting that certificate;
4. wait, with a progress line, until the server is ready and serves every node;
5. print `kubectl top nodes` and the first rows of `kubectl top pods -A` (the real kubectl,
   through the simulated kube-apiserver), and the `KUBECONFIG=… kubectl top …` line to explore;
6. on Ctrl-C (or SIGTERM) stop the server, then the simulator, and remove the temp dir.

Resolution: 15 s, the standard manifests' value, against kubelets that refresh every 10–15 s as
real ones do; the first values appear after two scrapes that saw different kubelet samples,
so in about 15–30 s. `--resolution` and `--kubelet-refresh-ms` make it faster (tests use that).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import shutil
import signal
import ssl
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import aiohttp
import orjson
import uvloop

from kubemetrics.quantity import parse_quantity
from kubemetrics_sim.launch import ServerProcess, SimError, SimProcess, server_args

STOP_TIMEOUT = 15.0
PROG = "kubemetrics demo"


class DemoError(Exception):
    """Something went wrong; the message (and a log tail) is shown to the user."""


@dataclass(frozen=True)
class Options:
    nodes: int
    pods_per_node: int
    resolution: str
    refresh_ms: tuple[int, int]
    churn_interval: float
    timeout: float
    once: bool
    keep: bool
    rows: int
    state_dir: str | None


def parse_args(argv: Sequence[str]) -> Options:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Run a simulated cluster (control plane, aggregator, kubelets on loopback) "
        "with kubemetrics serving metrics.k8s.io behind it, then show kubectl top.",
    )
    p.add_argument("--nodes", type=int, default=100, help="simulated nodes (default 100)")
    p.add_argument("--pods-per-node", type=int, default=10, help="pods per node (default 10)")
    p.add_argument(
        "--resolution",
        default="15s",
        help="the server's --metric-resolution (default 15s, as the standard manifests)",
    )
    p.add_argument(
        "--kubelet-refresh-ms",
        default="10000,15000",
        help="simulated kubelets refresh their samples every MIN,MAX ms (default 10000,15000)",
    )
    p.add_argument(
        "--churn-interval",
        type=float,
        default=10.0,
        help="seconds between random pod replacements / container restarts (0: off; default 10)",
    )
    p.add_argument(
        "--timeout", type=float, default=120.0, help="give up waiting for data after this long"
    )
    p.add_argument("--once", action="store_true", help="print the tables and exit (no waiting)")
    p.add_argument("--keep", action="store_true", help="keep the state directory at exit")
    p.add_argument("--rows", type=int, default=15, help="table rows to print (default 15)")
    p.add_argument(
        "--state-dir", default=None, help="use this directory instead of a temporary one"
    )
    a = p.parse_args(list(argv))
    if a.nodes < 1:
        p.error("--nodes must be at least 1")
    if a.pods_per_node < 1:
        p.error("--pods-per-node must be at least 1")
    try:
        lo, hi = (int(x) for x in a.kubelet_refresh_ms.split(","))
    except ValueError:
        p.error("--kubelet-refresh-ms must be MIN,MAX in milliseconds")
    if not 1 <= lo <= hi:
        p.error("--kubelet-refresh-ms needs 1 <= MIN <= MAX")
    return Options(
        nodes=a.nodes,
        pods_per_node=a.pods_per_node,
        resolution=a.resolution,
        refresh_ms=(lo, hi),
        churn_interval=a.churn_interval,
        timeout=a.timeout,
        once=a.once,
        keep=a.keep,
        rows=max(a.rows, 1),
        state_dir=a.state_dir,
    )


# --- terminal -------------------------------------------------------------------------------


class Progress:
    """One status line: a spinner with elapsed time on a terminal, plain lines otherwise."""

    FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        encoding = (getattr(out, "encoding", None) or "ascii").lower().replace("-", "")
        self.frames = self.FRAMES if encoding == "utf8" else "|/-\\"
        self.ok = "✔" if encoding == "utf8" else "*"
        self.t0 = time.monotonic()
        self.text = ""
        self.frame = 0
        self._task: asyncio.Task[None] | None = None

    def stage(self, text: str) -> None:
        self.text = text
        if self.tty:
            self._draw()
        else:
            print(f"[{time.monotonic() - self.t0:5.1f}s] {text}", file=self.out, flush=True)

    def _draw(self) -> None:
        elapsed = time.monotonic() - self.t0
        spin = self.frames[self.frame % len(self.frames)]
        self.out.write(f"\r\x1b[K{spin} {self.text} ({elapsed:.0f}s)")
        self.out.flush()

    async def _spin(self) -> None:
        while True:
            await asyncio.sleep(0.1)
            self.frame += 1
            self._draw()

    def start(self) -> None:
        if self.tty:
            self._task = asyncio.get_running_loop().create_task(self._spin())

    async def done(self, text: str | None = None) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.tty:
            self.out.write("\r\x1b[K")
        if text:
            print(
                f"{self.ok} {text} ({time.monotonic() - self.t0:.1f}s)", file=self.out, flush=True
            )


# --- the demo -------------------------------------------------------------------------------------


class Demo:
    def __init__(self, opts: Options, out: TextIO = sys.stdout) -> None:
        self.opts = opts
        self.out = out
        self.root = Path(opts.state_dir or tempfile.mkdtemp(prefix="kubemetrics-demo-"))
        self.own_root = opts.state_dir is None
        self.sim_dir = self.root / "sim"
        self.sim: SimProcess | None = None
        self.server: ServerProcess | None = None
        self.info: dict[str, Any] = {}
        self.server_url = ""
        self.progress = Progress(out)
        self.kubectl = shutil.which("kubectl")

    # -- set-up --
    async def start(self) -> None:
        o = self.opts
        await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)
        self.progress.start()
        self.progress.stage(f"Starting the simulated cluster ({o.nodes} nodes)")
        # Own sessions: the terminal's Ctrl-C reaches only us; we stop the children in order.
        sim = self.sim = SimProcess(
            self.sim_dir,
            nodes=o.nodes,
            pods_per_node=o.pods_per_node,
            refresh_ms=o.refresh_ms,
            extra_args=("--churn-interval", str(o.churn_interval), "--log-level", "warning"),
            ready_timeout=120.0,
            new_session=True,
        )
        await _started(sim.start)
        self.info = sim.info

        self.progress.stage("Starting kubemetrics")
        # As the standard manifests run it (the simulator's kubelets listen on their node
        # status port, with serving certificates from the cluster CA).
        server = self.server = ServerProcess(
            self.root, server_args(sim, self.root, resolution=o.resolution), new_session=True
        )
        await _started(server.start)
        self.server_url = server.url

        self.progress.stage("Registering kubemetrics with the aggregator (APIService)")
        cert = server.cert_file
        ca_pem = (await asyncio.to_thread(cert.read_bytes)).decode()
        await self._control("PUT", "aggregator", {"url": self.server_url, "ca_pem": ca_pem})

        self.progress.stage(
            f"Waiting for the first metrics (two scrapes {o.resolution} apart, kubelets refresh "
            f"every {o.refresh_ms[0] / 1000:g}-{o.refresh_ms[1] / 1000:g}s)"
        )
        await self._wait_ready(ssl.create_default_context(cafile=str(cert)))
        await self.progress.done(
            f"kubemetrics is serving {o.nodes} nodes and "
            f"{o.nodes * o.pods_per_node} pods through the simulated kube-apiserver"
        )

    def _api_ssl(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.info["files"]["ca"])

    async def _control(self, method: str, path: str, body: Any) -> Any:
        url = f"{self.info['apiserver']['url']}/_sim/{path}"
        headers = {"Authorization": f"Bearer {self.info['users']['admin']['token']}"}
        async with (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=self._api_ssl())) as s,
            s.request(
                method, url, data=orjson.dumps(body), headers=headers, timeout=_timeout(30)
            ) as r,
        ):
            data = await r.read()
            if r.status >= 300:
                raise DemoError(f"simulator control API {method} {path}: {r.status} {data!r}")
            return orjson.loads(data) if data else None

    async def _wait_ready(self, server_ssl: ssl.SSLContext) -> None:
        """Server /readyz passes and the aggregated API lists every node and some pods."""
        deadline = time.monotonic() + self.opts.timeout
        api = self.info["apiserver"]["url"]
        token = self.info["users"]["admin"]["token"]
        auth = {"Authorization": f"Bearer {token}"}
        group = "/apis/metrics.k8s.io/v1beta1"
        last = "no answer yet"
        async with (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False)) as s,
        ):
            while time.monotonic() < deadline:
                assert self.server is not None and self.sim is not None
                for name, child in (("kubemetrics", self.server), ("simulator", self.sim)):
                    if not child.running:
                        raise DemoError(f"{name} exited:\n{child.log_tail(15)}")
                try:
                    async with s.get(
                        f"{self.server_url}/readyz", ssl=server_ssl, timeout=_timeout(5)
                    ) as r:
                        ready = r.status == 200
                    if ready:
                        nodes = await _get_json(s, f"{api}{group}/nodes", auth, self._api_ssl())
                        pods = await _get_json(s, f"{api}{group}/pods", auth, self._api_ssl())
                        n, p = len(nodes.get("items", [])), len(pods.get("items", []))
                        last = f"{n} nodes and {p} pods served"
                        self.progress.text = (
                            f"Waiting for metrics of every node: {n}/{self.opts.nodes}"
                        )
                        if n >= self.opts.nodes and p > 0:
                            return
                    else:
                        last = "server not ready yet"
                except (aiohttp.ClientError, TimeoutError, ValueError) as e:
                    last = f"{type(e).__name__}: {e}"
                await asyncio.sleep(1.0)
        raise DemoError(
            f"no complete metrics after {self.opts.timeout:.0f}s ({last}); server log:\n"
            f"{self.server.log_tail(15) if self.server else ''}"
        )

    # -- show --
    def _kubectl_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["KUBECONFIG"] = self.info["files"]["admin.kubeconfig"]
        return env

    async def kubectl_out(self, *args: str) -> str:
        assert self.kubectl is not None
        proc = await asyncio.create_subprocess_exec(
            self.kubectl,
            f"--cache-dir={self.root / 'kubectl-cache'}",
            *args,
            env=self._kubectl_env(),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60.0)
        if proc.returncode != 0:
            raise DemoError(f"kubectl {' '.join(args)} failed: {err.decode(errors='replace')}")
        return out.decode(errors="replace")

    def _print_table(self, title: str, text: str) -> None:
        lines = text.rstrip("\n").splitlines()
        rows = self.opts.rows
        print(f"\n$ {title}", file=self.out)
        for line in lines[: rows + 1]:
            print(line.rstrip(), file=self.out)
        if len(lines) > rows + 1:
            print(f"... and {len(lines) - rows - 1} more", file=self.out)

    async def show(self) -> None:
        if self.kubectl is None:
            print(
                "\nkubectl is not installed, so here is the metrics API's answer instead:",
                file=self.out,
            )
            await self._show_without_kubectl()
        else:
            self._print_table("kubectl top nodes", await self.kubectl_out("top", "nodes"))
            self._print_table("kubectl top pods -A", await self.kubectl_out("top", "pods", "-A"))
        if self.opts.once:
            return
        kubeconfig = self.info["files"]["admin.kubeconfig"]
        print(
            "\nExplore the cluster (kubemetrics answers metrics.k8s.io behind its aggregator):\n"
            f"  KUBECONFIG={kubeconfig} kubectl top pods -A --sort-by=cpu\n"
            f"  KUBECONFIG={kubeconfig} kubectl top nodes -l topology.kubernetes.io/zone=zone-a\n"
            f"  KUBECONFIG={kubeconfig} kubectl get --raw /apis/metrics.k8s.io/v1/nodes\n"
            f"kubemetrics itself: {self.server_url}/metrics  "
            f"(logs: {self.root / 'kubemetrics.log'})",
            file=self.out,
            flush=True,
        )

    async def _show_without_kubectl(self) -> None:
        api = self.info["apiserver"]["url"]
        auth = {"Authorization": f"Bearer {self.info['users']['admin']['token']}"}
        async with aiohttp.ClientSession() as s:
            for res in ("nodes", "pods"):
                data = await _get_json(
                    s, f"{api}/apis/metrics.k8s.io/v1beta1/{res}", auth, self._api_ssl()
                )
                lines = [f"{'NAME':<56} {'CPU(cores)':>12} {'MEMORY(bytes)':>14}"]
                for item in data.get("items", []):
                    meta = item["metadata"]
                    name = meta["name"] if res == "nodes" else f"{meta['namespace']}/{meta['name']}"
                    if res == "nodes":
                        usages = [item["usage"]]
                    else:
                        usages = [c["usage"] for c in item["containers"]]
                    # as kubectl top prints them: millicores rounded up, whole MiB
                    millicores = math.ceil(sum(_quantity(u["cpu"]) for u in usages) * 1000 - 1e-6)
                    mib = int(sum(_quantity(u["memory"]) for u in usages)) >> 20
                    lines.append(f"{name:<56} {f'{millicores}m':>12} {f'{mib}Mi':>14}")
                self._print_table(f"GET /apis/metrics.k8s.io/v1beta1/{res}", "\n".join(lines))

    # -- tear-down --
    async def stop(self) -> None:
        await self.progress.done()
        # The server first (it reads the simulator), then the simulator.
        for child in (self.server, self.sim):
            if child is not None:
                await asyncio.to_thread(child.stop, STOP_TIMEOUT)
        if self.own_root and not self.opts.keep:
            await asyncio.to_thread(shutil.rmtree, self.root, True)
        elif self.opts.keep:
            print(f"State kept in {self.root}", file=self.out)

    async def wait_for_exit(self, stop: asyncio.Event) -> int:
        """Until Ctrl-C/SIGTERM (0) or a child dies (1)."""
        assert self.server is not None and self.sim is not None
        while not stop.is_set():
            for name, child in (("kubemetrics", self.server), ("simulator", self.sim)):
                if not child.running:
                    print(f"\n{name} exited unexpectedly:\n{child.log_tail(15)}", file=sys.stderr)
                    return 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
        return 0


def _quantity(text: str) -> float:
    """A canonical Kubernetes quantity as a plain number (`250m` → 0.25, `2Ki` → 2048)."""
    try:
        q = parse_quantity(text)
    except ValueError:
        q = None
    if q is None or not q.canonical:
        raise DemoError(f"unexpected quantity {text!r} from the metrics API")
    return float(q.value)


async def _started(start: Callable[[], object]) -> None:
    """Run a launcher's blocking start() in a thread; its failure is the demo's."""
    try:
        await asyncio.to_thread(start)
    except SimError as e:
        raise DemoError(str(e)) from None


def _timeout(seconds: float) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=seconds)


async def _get_json(
    s: aiohttp.ClientSession, url: str, headers: dict[str, str], ctx: ssl.SSLContext
) -> dict[str, Any]:
    async with s.get(url, headers=headers, ssl=ctx, timeout=_timeout(30)) as r:
        data = await r.read()
        if r.status != 200:
            raise ValueError(f"GET {url}: {r.status}")
    obj = orjson.loads(data)
    if not isinstance(obj, dict):
        raise ValueError(f"GET {url}: not an object")
    return obj


async def run(opts: Options, out: TextIO = sys.stdout) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    demo = Demo(opts, out)
    code = 0
    try:
        work = asyncio.create_task(demo.start())
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({work, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if stopper in done:
            work.cancel()
            with contextlib.suppress(asyncio.CancelledError, DemoError):
                await work
            print("\nInterrupted; stopping.", file=out)
            return 130
        stopper.cancel()
        work.result()
        await demo.show()
        if not opts.once:
            print("\nPress Ctrl-C to stop the demo.", file=out, flush=True)
            code = await demo.wait_for_exit(stop)
            print("\nStopping kubemetrics and the simulator...", file=out, flush=True)
    except DemoError as e:
        await demo.progress.done()
        print(f"\n{PROG}: {e}", file=sys.stderr)
        code = 1
    finally:
        await demo.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(sys.argv[1:] if argv is None else argv)
    return uvloop.run(run(opts))
