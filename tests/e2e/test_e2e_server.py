"""The server process itself: probes, /metrics, TLS, start-up errors, --help, SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509

from kubemetrics_sim.launch import ServerProcess, server_args
from tests.helpers.e2e import RESOLUTION, Cluster


def test_probes_pass_verbose_with_every_named_check(cluster: Cluster) -> None:
    s = cluster.server
    status, headers, body = s.get("/readyz?verbose")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    assert body.decode().splitlines() == [
        "[+]ping ok",
        "[+]log ok",
        "[+]informer-sync ok",
        "[+]metric-storage-ready ok",
        "[+]shutdown ok",
        "readyz check passed",
    ]
    status, _, body = s.get("/livez?verbose")
    assert status == 200
    assert "[+]metric-collection-timely ok" in body.decode()
    for path in ("/livez", "/healthz", "/readyz", "/readyz/shutdown", "/livez/ping"):
        assert s.get(path)[:3:2] == (200, b"ok"), path


_SAMPLE = re.compile(r"^([a-z_]+)(\{[^}]*\})? (\S+)$")


def _metrics(cluster: Cluster) -> dict[str, float]:
    status, headers, body = cluster.server.get("/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    out: dict[str, float] = {}
    for line in body.decode().splitlines():
        if line.startswith("#") or not line:
            continue
        m = _SAMPLE.match(line)
        assert m, f"not a Prometheus sample line: {line!r}"
        out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def test_self_metrics_describe_the_cluster(cluster: Cluster) -> None:
    c = cluster
    # at least one API response has been served, for the freshness histogram
    c.api_json("/apis/metrics.k8s.io/v1beta1/pods")
    m = _metrics(c)
    nodes = sorted(c.sim.info["nodes"])
    truth = c.sim.truth()
    containers = sum(len(p["containers"]) for p in truth["pods"].values())
    assert m['metrics_server_storage_points{type="node"}'] == len(nodes)
    assert m['metrics_server_storage_points{type="container"}'] == containers
    assert m['metrics_server_kubelet_request_total{success="true"}'] >= 2 * len(nodes)
    assert 'metrics_server_kubelet_request_total{success="false"}' not in m
    now = time.time()
    for n in nodes:
        assert now - m[f'metrics_server_kubelet_last_request_time_seconds{{node="{n}"}}'] < 30
        count = m[f'metrics_server_kubelet_request_duration_seconds_count{{node="{n}"}}']
        assert count >= 2
    assert m["metrics_server_manager_tick_duration_seconds_count"] >= 2
    assert m["metrics_server_api_metric_freshness_seconds_count"] >= len(truth["pods"])
    assert m["process_resident_memory_bytes"] > 0


def test_help_smoke() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "kubemetrics", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 0
    for flag in ("--metric-resolution", "--kubelet-insecure-tls", "--secure-port", "--cert-dir"):
        assert flag in r.stdout


def _start_fails(args: list[str], env: dict[str, str] | None = None) -> tuple[int, str]:
    r = subprocess.run(
        [sys.executable, "-m", "kubemetrics", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    return r.returncode, r.stderr


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (
            ["--metric-resolution=500ms"],
            1,
            "metric-resolution should be a time duration at least 1s",
        ),
        (["--no-such-flag"], 2, "unknown flag: --no-such-flag"),
        (["--metric-resolution=fast"], 2, "invalid duration"),
        (
            ["--kubelet-insecure-tls", "--kubelet-certificate-authority=/etc/hosts"],
            1,
            "Cannot use both --kubelet-certificate-authority and --kubelet-insecure-tls",
        ),
        (
            ["--kubeconfig=/no/such/kubeconfig"],
            1,
            "--kubeconfig: /no/such/kubeconfig: no such file",
        ),
        (["--tls-min-version=VersionTLS99"], 1, "unknown TLS version"),
    ],
)
def test_invalid_flags_stop_start_up(args: list[str], code: int, message: str) -> None:
    rc, err = _start_fails(args)
    assert rc == code, err
    assert message in err


def test_no_kubeconfig_outside_a_cluster_is_a_clear_error(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
    rc, err = _start_fails([f"--cert-dir={tmp_path}", "--secure-port=0"], env)
    assert rc == 1
    assert "not running in a cluster" in err


def test_busy_port_and_bad_serving_pair_fail_start_up(cluster: Cluster, tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        args = [
            a
            for a in server_args(cluster.sim, tmp_path, resolution=RESOLUTION)
            if not a.startswith("--secure-port")
        ]
        rc, err = _start_fails([*args, f"--secure-port={port}"])
        assert rc == 1 and f"cannot listen on 127.0.0.1:{port}" in err, err
    bad = tmp_path / "bad.crt"
    bad.write_text("not a certificate\n")
    rc, err = _start_fails(
        [
            *server_args(cluster.sim, tmp_path, resolution=RESOLUTION),
            f"--tls-cert-file={bad}",
            f"--tls-private-key-file={bad}",
        ]
    )
    assert rc == 1 and "cannot load the serving certificate" in err, err


def test_self_signed_pair_is_written_like_upstream(cluster: Cluster) -> None:
    crt = cluster.server.cert_file
    key = crt.with_suffix(".key")
    chain = x509.load_pem_x509_certificates(crt.read_bytes())
    assert len(chain) == 2  # leaf, then the CA that signed it (the APIService's caBundle)
    leaf, ca = chain
    assert leaf.issuer == ca.subject
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert key.stat().st_mode & 0o777 == 0o600
    assert "spec.caBundle" in cluster.server.log()


def test_own_serving_pair_and_tls_min_version(cluster: Cluster, tmp_path: Path) -> None:
    """--tls-cert-file/--tls-private-key-file (the simulator's 127.0.0.1 certificate) with TLS 1.3
    only: a TLS 1.2 client is refused, a TLS 1.3 client verifying against the cluster CA works."""
    sim = cluster.sim
    server = ServerProcess(
        tmp_path,
        server_args(
            sim,
            tmp_path,
            f"--tls-cert-file={sim.file('apiserver_cert')}",
            f"--tls-private-key-file={sim.file('apiserver_key')}",
            "--tls-min-version=VersionTLS13",
            resolution=RESOLUTION,
        ),
    ).start()
    try:
        ctx = server.ssl_context(cafile=sim.ca_file)
        assert server.get("/livez", context=ctx)[0] == 200
        old = ssl.create_default_context(cafile=sim.ca_file)
        old.maximum_version = ssl.TLSVersion.TLSv1_2
        with pytest.raises(ssl.SSLError):
            server.get("/livez", context=old)
        assert not (tmp_path / "certs").exists()  # nothing self-signed was generated
    finally:
        assert server.stop() == 0


def test_sigterm_stops_everything_and_exits_zero(cluster: Cluster, tmp_path: Path) -> None:
    server = ServerProcess(
        tmp_path, server_args(cluster.sim, tmp_path, resolution=RESOLUTION)
    ).start()
    deadline = time.monotonic() + 30
    while server.get("/readyz")[0] != 200:
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.2)
    assert server.proc is not None
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(20) == 0
    log = server.log()
    assert log.index("Shutting down") < log.index("Stopped")
    assert "Traceback" not in log
