"""Real kubectl → the simulator's kube-apiserver → its aggregator → kubemetrics, vs the truth."""

from __future__ import annotations

import pytest

from tests.helpers.e2e import (
    GROUP,
    Cluster,
    cpu_nanocores,
    duration_ms,
    eventually,
    kubectl_cpu_m,
    kubectl_mem_mi,
    kubectl_node_mismatch,
    kubectl_pod_mismatch,
    memory_bytes,
    table_rows,
)


def _nodes_problem(c: Cluster, *args: str) -> tuple[dict[str, list[str]], str | None]:
    out = c.kubectl_ok("top", "nodes", *args)
    assert out.splitlines()[0].split() == [
        "NAME",
        "CPU(cores)",
        "CPU(%)",
        "MEMORY(bytes)",
        "MEMORY(%)",
    ]
    rows = {r[0]: r for r in table_rows(out)}
    truth = c.sim.truth()["nodes"]
    problems = [
        p
        for name, r in rows.items()
        if (
            p := kubectl_node_mismatch(name, kubectl_cpu_m(r[1]), kubectl_mem_mi(r[3]), truth[name])
        )
    ]
    return rows, "\n".join(problems) or None


def test_top_nodes_lists_every_node_with_true_values(kubectl_cluster: Cluster) -> None:
    c = kubectl_cluster

    def check() -> str | None:
        rows, problem = _nodes_problem(c)
        assert set(rows) == set(c.sim.info["nodes"])
        for r in rows.values():
            # CPU% of the simulated 8-core allocatable, in kubectl's float arithmetic
            # (int64(float64(m) / float64(8000) * 100): 2320m is 28%, not 29%)
            assert r[2] == f"{int(kubectl_cpu_m(r[1]) / 8000 * 100)}%", r
        return problem

    eventually(check)


def test_top_node_by_name(kubectl_cluster: Cluster) -> None:
    c = kubectl_cluster

    def check() -> str | None:
        rows, problem = _nodes_problem(c, "node-0003")
        assert list(rows) == ["node-0003"]
        return problem

    eventually(check)


def test_top_nodes_label_selector(kubectl_cluster: Cluster) -> None:
    c = kubectl_cluster
    labels = {n: c.sim.api(f"/api/v1/nodes/{n}")["metadata"]["labels"] for n in c.sim.info["nodes"]}
    want = {n for n, lab in labels.items() if lab["topology.kubernetes.io/zone"] == "zone-a"}
    assert 0 < len(want) < len(labels)

    def check() -> str | None:
        rows, problem = _nodes_problem(c, "-l", "topology.kubernetes.io/zone=zone-a")
        assert set(rows) == want
        return problem

    eventually(check)
    r = c.kubectl("top", "nodes", "-l", "topology.kubernetes.io/zone=nowhere")
    # kubectl's own message for an empty NodeMetricsList
    assert r.returncode == 1 and "metrics not available yet" in r.stderr, r


def _pods_check(c: Cluster, args: list[str], want: set[str], namespaced_col: bool) -> str | None:
    out = c.kubectl_ok("top", "pods", *args)
    header = out.splitlines()[0].split()
    expected = ["NAME", "CPU(cores)", "MEMORY(bytes)"]
    assert header == (["NAMESPACE", *expected] if namespaced_col else expected), header
    truth = c.sim.truth()["pods"]
    got: dict[str, list[str]] = {}
    for r in table_rows(out):
        if namespaced_col:
            got[f"{r[0]}/{r[1]}"] = r[2:]
        else:
            ns = args[args.index("-n") + 1]
            got[f"{ns}/{r[0]}"] = r[1:]
    assert set(got) == want, (sorted(got), sorted(want))
    problems = [
        p
        for key, (cpu, mem) in got.items()
        if (p := kubectl_pod_mismatch(key, kubectl_cpu_m(cpu), kubectl_mem_mi(mem), truth[key]))
    ]
    return "\n".join(problems) or None


def test_top_pods_all_namespaces(kubectl_cluster: Cluster) -> None:
    c = kubectl_cluster
    want = set(c.sim.truth()["pods"])
    assert len(want) == 6 * 5
    eventually(lambda: _pods_check(c, ["-A"], want, True))


def test_top_pods_one_namespace(kubectl_cluster: Cluster) -> None:
    c = kubectl_cluster
    want = {k for k in c.sim.truth()["pods"] if k.startswith("kube-system/")}
    assert len(want) == 6
    eventually(lambda: _pods_check(c, ["-n", "kube-system"], want, False))


def test_top_pods_label_selector(kubectl_cluster: Cluster) -> None:
    c = kubectl_cluster
    pods = c.sim.truth()["pods"]
    app = sorted(p["labels"].get("app", "") for p in pods.values() if "app" in p["labels"])[0]
    want = {k for k, p in pods.items() if p["labels"].get("app") == app}
    assert want
    eventually(lambda: _pods_check(c, ["-A", "-l", f"app={app}"], want, True))
    none = c.kubectl_ok("top", "pods", "-A", "-l", "app in (no-such-app)")
    assert table_rows(none) == []


def test_top_pods_containers(kubectl_cluster: Cluster) -> None:
    c = kubectl_cluster

    def check() -> str | None:
        out = c.kubectl_ok("top", "pods", "-A", "--containers")
        assert out.splitlines()[0].split() == [
            "NAMESPACE",
            "POD",
            "NAME",
            "CPU(cores)",
            "MEMORY(bytes)",
        ]
        truth = c.sim.truth()["pods"]
        rows = table_rows(out)
        want = {(k, cn) for k, p in truth.items() for cn in p["containers"]}
        got = {(f"{r[0]}/{r[1]}", r[2]): r for r in rows}
        assert set(got) == want
        problems = []
        for (key, cname), r in got.items():
            one = {"containers": {cname: truth[key]["containers"][cname]}}
            p = kubectl_pod_mismatch(
                f"{key}:{cname}", kubectl_cpu_m(r[3]), kubectl_mem_mi(r[4]), one
            )
            if p:
                problems.append(p)
        return "\n".join(problems) or None

    eventually(check)


def test_top_pod_by_name_and_missing_pod(kubectl_cluster: Cluster) -> None:
    c = kubectl_cluster
    key = sorted(c.sim.truth()["pods"])[0]
    ns, name = key.split("/")
    want = {key}
    eventually(lambda: _pods_check(c, ["-n", ns, name], want, False))
    r = c.kubectl("top", "pod", "-n", ns, "no-such-pod")
    assert r.returncode != 0
    assert 'pods "no-such-pod" not found' in r.stderr, r.stderr


@pytest.mark.parametrize("resource", ["podmetrics", "nodemetrics"])
def test_get_metrics_as_server_side_table(kubectl_cluster: Cluster, resource: str) -> None:
    """`kubectl get podmetrics -A` / `get nodemetrics`: the server's Table, same values as JSON."""
    c = kubectl_cluster
    pods = resource == "podmetrics"

    def check() -> str | None:
        before = c.api_json(f"{GROUP}/v1/{'pods' if pods else 'nodes'}")["items"]
        out = c.kubectl_ok("get", resource, *(["-A"] if pods else []))
        after = c.api_json(f"{GROUP}/v1/{'pods' if pods else 'nodes'}")["items"]
        header = out.splitlines()[0].split()
        assert header == [*(["NAMESPACE"] if pods else []), "NAME", "CPU", "MEMORY", "WINDOW"]
        rows = {tuple(r[:-3]): r[-3:] for r in table_rows(out)}
        expected = {}
        for item in after:
            md = item["metadata"]
            key = (md["namespace"], md["name"]) if pods else (md["name"],)
            usages = [x["usage"] for x in item["containers"]] if pods else [item["usage"]]
            expected[key] = (
                sum(cpu_nanocores(u["cpu"]) for u in usages),
                sum(memory_bytes(u["memory"]) for u in usages),
                duration_ms(item["window"]),
            )
        assert set(rows) == set(expected)
        got = {
            k: (cpu_nanocores(v[0]), memory_bytes(v[1]), duration_ms(v[2])) for k, v in rows.items()
        }
        if before != after:
            return "a scrape landed in between"
        return None if got == expected else f"table {got} != json {expected}"

    eventually(check, attempts=5, pause=0.2)
