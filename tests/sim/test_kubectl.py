"""Real kubectl and curl against the simulator: the control plane speaks the real protocols."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubemetrics_sim.launch import SimProcess

KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"
OLD_KUBECTL = "/usr/lib/google-cloud-sdk/bin/kubectl.1.27"

pytestmark = pytest.mark.skipif(not Path(KUBECTL).exists(), reason="kubectl not installed")


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProcess]:
    with SimProcess(
        tmp_path_factory.mktemp("sim"), nodes=3, pods_per_node=4, seed=7, refresh_ms=(1000, 1500)
    ) as s:
        yield s


def kubectl(
    sim: SimProcess, *args: str, user: str = "admin", binary: str = KUBECTL, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary, "--cache-dir", str(sim.state_dir / f"kc-{user}"), *args],
        env=sim.env(user),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def table_rows(out: str) -> list[list[str]]:
    lines = [ln for ln in out.splitlines() if ln.strip()]
    return [ln.split() for ln in lines[1:]]


def test_get_nodes_prints_every_node_with_its_address(sim: SimProcess) -> None:
    r = kubectl(sim, "get", "nodes", "-o", "wide")
    assert r.returncode == 0, r.stderr
    header = r.stdout.splitlines()[0].split()
    assert header[:5] == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    rows = {row[0]: row for row in table_rows(r.stdout)}
    assert set(rows) == set(sim.info["nodes"])
    for name, row in rows.items():
        assert row[1] == "Ready"
        assert row[5] == sim.info["nodes"][name]["address"]


def test_get_pods_all_namespaces_matches_truth(sim: SimProcess) -> None:
    r = kubectl(sim, "get", "pods", "-A")
    assert r.returncode == 0, r.stderr
    got = {f"{row[0]}/{row[1]}" for row in table_rows(r.stdout)}
    assert got == set(sim.truth()["pods"])
    assert len(got) == 3 * 4


def test_old_kubectl_works_too(sim: SimProcess) -> None:
    if not Path(OLD_KUBECTL).exists():
        pytest.skip("no kubectl 1.27")
    r = kubectl(sim, "get", "pods", "-n", "kube-system", binary=OLD_KUBECTL)
    assert r.returncode == 0, r.stderr
    assert {row[0] for row in table_rows(r.stdout)} == {
        f"kube-proxy-{n}" for n in sim.info["nodes"]
    }


def test_get_pods_watch_sees_churn(sim: SimProcess) -> None:
    cmd = [
        KUBECTL,
        "--cache-dir",
        str(sim.state_dir / "kc-watch"),
        "get",
        "pods",
        "-n",
        "default",
        "-w",
        "--output-watch-events",
        "--request-timeout",
        "30s",
    ]
    out_path = sim.state_dir / "watch.out"
    with open(out_path, "w") as out:
        p = subprocess.Popen(cmd, env=sim.env(), stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while "NAME" not in out_path.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        pod = sim.create_pod(namespace="default", name="watched-pod", start_delay=0.3)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            text = out_path.read_text()
            if "MODIFIED" in text and "watched-pod" in text:
                break
            time.sleep(0.1)
        sim.delete_pod("default", pod["name"])
        deadline = time.monotonic() + 20
        while "DELETED" not in out_path.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        p.terminate()
        p.wait(10)
    events = [ln.split() for ln in out_path.read_text().splitlines() if "watched-pod" in ln]
    kinds = [e[0] for e in events]
    assert kinds[0] == "ADDED" and "MODIFIED" in kinds and kinds[-1] == "DELETED", events
    assert any(e[0] == "MODIFIED" and e[3] == "Running" for e in events), events


@pytest.mark.parametrize(
    ("user", "args", "expected"),
    [
        ("admin", ("list", "pods", "-A"), "yes"),
        ("viewer", ("list", "pods", "-n", "team-a"), "yes"),
        ("viewer", ("list", "pods", "-A"), "no"),
        ("viewer", ("get", "nodes"), "no"),
        ("metrics-server", ("get", "nodes/metrics"), "yes"),
        ("metrics-server", ("create", "tokenreviews.authentication.k8s.io"), "yes"),
        ("metrics-server", ("delete", "pods", "-n", "default"), "no"),
        ("nobody", ("list", "pods", "-n", "team-a"), "no"),
    ],
)
def test_auth_can_i_follows_rbac(
    sim: SimProcess, user: str, args: tuple[str, ...], expected: str
) -> None:
    r = kubectl(sim, "auth", "can-i", *args, user=user)
    assert r.stdout.strip() == expected, (r.stdout, r.stderr)


def test_viewer_is_scoped_to_its_namespace(sim: SimProcess) -> None:
    ok = kubectl(sim, "get", "pods", user="viewer")
    assert ok.returncode == 0, ok.stderr
    denied = kubectl(sim, "get", "pods", "-A", user="viewer")
    assert denied.returncode != 0
    assert 'User "viewer" cannot list resource "pods"' in denied.stderr


def test_curl_kubelet_with_token(sim: SimProcess) -> None:
    node = "node-0001"
    host, port = sim.node_address(node)
    url = f"https://{host}:{port}/metrics/resource"
    base = ["curl", "-sS", "--max-time", "10", "--cacert", sim.ca_file]
    ok = subprocess.run(
        [*base, "-H", f"Authorization: Bearer {sim.token('metrics-server')}", url],
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    ).stdout
    pods = {k.split("/", 1)[1] for k, v in sim.truth(node=node)["pods"].items()}
    assert pods
    for pod in pods:
        assert f'pod="{pod}"' in ok
    assert ok.endswith("resource_scrape_error 0\n")
    for token, code in (("", "401"), (sim.token("viewer"), "403"), ("bogus", "401")):
        hdr = ["-H", f"Authorization: Bearer {token}"] if token else []
        r = subprocess.run(
            [*base, "-o", "/dev/null", "-w", "%{http_code}", *hdr, url],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
        assert r.stdout == code


def test_kubectl_get_raw_node_proxy(sim: SimProcess) -> None:
    r = kubectl(sim, "get", "--raw", "/api/v1/nodes/node-0002/proxy/metrics/resource")
    assert r.returncode == 0, r.stderr
    assert "node_cpu_usage_seconds_total " in r.stdout
