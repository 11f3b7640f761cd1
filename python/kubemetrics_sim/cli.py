"""kubemetrics-sim: run a simulated cluster until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import resource
import signal
import sys
import time
from pathlib import Path

import uvloop

from .aggregator import Aggregator
from .apiserver import ApiServer
from .attach import Attached
from .certs import Authority
from .cluster import Backend, Cluster, Config
from .control import Control
from .kubelet import Fleet

log = logging.getLogger("kubemetrics_sim")
READY = "kubemetrics-sim ready"


def parse_args(argv: list[str] | None = None) -> Config:
    p = argparse.ArgumentParser(
        prog="kubemetrics-sim",
        description="A simulated Kubernetes control plane and kubelet fleet on loopback.",
    )
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument(
        "--pods-per-node",
        type=int,
        default=5,
        help="pods per node, one of them kube-proxy (default 5)",
    )
    p.add_argument(
        "--state-dir",
        type=Path,
        required=True,
        help="where CA, kubeconfigs and cluster.json are written",
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--host", default="127.0.0.1", help="API server address (loopback only)")
    p.add_argument("--port", type=int, default=0, help="API server port (0: a free port)")
    p.add_argument(
        "--kubelet-port",
        type=int,
        default=0,
        help="port every kubelet listens on, each on its own 127.0.x.y (0: free)",
    )
    p.add_argument(
        "--refresh-min-ms",
        type=int,
        default=10_000,
        help="shortest kubelet sample refresh period (default 10000)",
    )
    p.add_argument(
        "--refresh-max-ms",
        type=int,
        default=15_000,
        help="longest kubelet sample refresh period (default 15000)",
    )
    p.add_argument(
        "--watch-window",
        type=int,
        default=10_000,
        help="events kept for watch resumption; older resourceVersions get 410",
    )
    p.add_argument("--bookmark-interval", type=float, default=10.0)
    p.add_argument(
        "--churn-interval",
        type=float,
        default=0.0,
        help="seconds between random churn actions (0: off)",
    )
    p.add_argument("--pod-start-delay", type=float, default=1.0)
    p.add_argument("--viewer-namespace", default="team-a")
    p.add_argument(
        "--metrics-backend",
        default="",
        help="https://HOST:PORT of the metrics.k8s.io backend (APIService)",
    )
    p.add_argument("--metrics-backend-ca", default="", help="CA file to verify the backend")
    p.add_argument("--metrics-backend-insecure", action="store_true")
    p.add_argument("--aggregator-timeout", type=float, default=30.0)
    p.add_argument("--log-level", default="info")
    p.add_argument(
        "--apiserver",
        default="",
        metavar="KUBECONFIG",
        help="attach to this real API server: register the nodes and pods there, adopt the "
        "pods its controllers create, and serve only the kubelets (and /_sim)",
    )
    p.add_argument("--ca-cert", default="", help="with --apiserver: the cluster CA certificate")
    p.add_argument("--ca-key", default="", help="with --apiserver: the cluster CA key (ECDSA)")
    p.add_argument(
        "--attach-timeout",
        type=float,
        default=600.0,
        help="with --apiserver: seconds allowed for registering every node and pod",
    )
    a = p.parse_args(argv)
    if a.apiserver and not (a.ca_cert and a.ca_key):
        p.error(
            "--apiserver needs --ca-cert and --ca-key (kubelet certificates must be "
            "signed by the CA the cluster's clients trust)"
        )
    if not a.host.startswith("127."):
        p.error("--host must be a loopback address (127.0.0.0/8)")
    if a.nodes < 0 or a.pods_per_node < 0:
        p.error("--nodes and --pods-per-node must be >= 0")
    if not 1 <= a.refresh_min_ms <= a.refresh_max_ms:
        p.error("need 1 <= --refresh-min-ms <= --refresh-max-ms")
    return Config(
        nodes=a.nodes,
        pods_per_node=a.pods_per_node,
        state_dir=a.state_dir,
        seed=a.seed,
        host=a.host,
        port=a.port,
        kubelet_port=a.kubelet_port,
        refresh_min_ms=a.refresh_min_ms,
        refresh_max_ms=a.refresh_max_ms,
        watch_window=a.watch_window,
        bookmark_interval=a.bookmark_interval,
        churn_interval=a.churn_interval,
        pod_start_delay=a.pod_start_delay,
        viewer_namespace=a.viewer_namespace,
        metrics_backend=a.metrics_backend,
        metrics_backend_ca=a.metrics_backend_ca,
        metrics_backend_insecure=a.metrics_backend_insecure,
        aggregator_timeout=a.aggregator_timeout,
        log_level=a.log_level,
        apiserver=a.apiserver,
        ca_cert=a.ca_cert,
        ca_key=a.ca_key,
        attach_timeout=a.attach_timeout,
    )


def _raise_fd_limit() -> None:
    # One listening socket per node plus client connections: lift the soft limit to the hard one.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _read(path: str) -> bytes:
    return Path(path).read_bytes()


async def run(cfg: Config) -> None:
    t0 = time.monotonic()
    _raise_fd_limit()
    cluster = Cluster(cfg)
    cluster_ca = Authority.load(_read(cfg.ca_cert), _read(cfg.ca_key)) if cfg.apiserver else None
    cluster.make_pki(cluster_ca)
    cluster.make_users()
    fleet = Fleet(cluster)
    api = ApiServer(cluster, fleet, Aggregator(cluster))
    control = Control(cluster, api)
    attached = Attached(cluster, Path(cfg.apiserver)) if cfg.apiserver else None
    if attached is not None:
        api.attached_to = attached.server
        control.attached = attached.control
        fleet.remote_auth = attached.auth
    cluster.api_port = await api.start(cfg.host, cfg.port)
    # Kubelets need their port before nodes are built (it is in node status).
    if cfg.nodes:
        cluster.kubelet_port = cfg.kubelet_port or fleet.choose_port("127.0.1.1")
    cluster.build()
    # Millions of long-lived objects: keep the cyclic GC from rescanning them (second-long
    # pauses at 150,000 pods would stall every kubelet at once).
    gc.collect()
    gc.freeze()
    await fleet.start()
    if cfg.metrics_backend:
        ca = _read(cfg.metrics_backend_ca) if cfg.metrics_backend_ca else None
        cluster.set_backend(Backend((cfg.metrics_backend,), ca, cfg.metrics_backend_insecure))
    cluster.write_client_files()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    attach_note = ""
    if attached is not None:
        # Registering a large fleet takes minutes: a signal meanwhile stops it cleanly.
        sync = asyncio.ensure_future(attached.start(cfg.attach_timeout))
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait((sync, stopping), return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not sync.done():
            sync.cancel()
            log.info("stopped while registering nodes and pods")
            await attached.stop()
            await fleet.stop()
            await api.stop()
            return
        sync.result()
        attach_note = f" attached={attached.server} sync={attached.t_synced:.2f}s"
    if cfg.churn_interval > 0:
        cluster.set_churn(cfg.churn_interval)
    print(
        f"{READY}: apiserver=https://{cfg.host}:{cluster.api_port} nodes={len(cluster.nodes)} "
        f"pods={len(cluster.pods)} kubelet_port={cluster.kubelet_port} "
        f"state={cfg.state_dir.resolve()} startup={time.monotonic() - t0:.2f}s{attach_note}",
        flush=True,
    )
    await stop.wait()
    log.info("shutting down")
    cluster.set_churn(0)
    for h in cluster.pending_starts:
        h.cancel()
    if attached is not None:
        await attached.stop()
    await fleet.stop()
    await api.stop()


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    logging.basicConfig(
        level=cfg.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        uvloop.run(run(cfg))
    except KeyboardInterrupt:
        pass
    except OSError as e:
        print(f"kubemetrics-sim: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
