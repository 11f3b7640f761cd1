"""deploy/: the kustomize overlays render, validate against the Kubernetes schemas of every
supported release, run with the real flag parser, stay a drop-in for upstream's manifest, and
grant exactly the API access the server uses.

Needs `kubectl` (kustomize is built in) on PATH; the serving-certificate script needs `openssl`.
"""

from __future__ import annotations

import base64
import copy
import functools
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import SchemaNotFoundError, all_versions

from tests.helpers.paths import ROOT, SHARED_FIXTURES

DEPLOY = ROOT / "deploy"
UPSTREAM = SHARED_FIXTURES / "upstream-components.yaml"
KUBECTL = shutil.which("kubectl")

# Every kustomization users may apply. components/ are exercised through these.
OVERLAYS = (
    "base",
    "overlays/high-availability",
    "overlays/ca-bundle",
    "overlays/ca-bundle-cert-manager",
    "overlays/high-availability-ca-bundle",
    "overlays/network-policy",
)
NAMESPACE = "kube-system"
# What the downward API gives a pod, by field path, as a sample pod would have it.
DOWNWARD = {
    "POD_NAME": "metadata.name",
    "POD_NAMESPACE": "metadata.namespace",
    "POD_IP": "status.podIP",
}
POD_FIELDS = {
    "metadata.name": "metrics-server-5d8c7b9f4-x2kqp",
    "metadata.namespace": NAMESPACE,
    "status.podIP": "10.244.1.17",
}
SA = ("ServiceAccount", NAMESPACE, "metrics-server")
SERVICE_DNS = "metrics-server.kube-system.svc"
TLS_MOUNT = "/etc/kubemetrics/tls"

# Kubernetes releases to validate against: 1.30 to 1.37, as far as kubernetes-validate ships
# schemas (its 1.37.0 release ships 1.25-1.37; test_schema_versions_cover_the_supported_range
# fails if a future release drops one we rely on).
WANTED_VERSIONS = tuple(f"1.{minor}" for minor in range(30, 38))
SHIPPED_VERSIONS = tuple(".".join(v.split(".")[:2]) for v in all_versions())
K8S_VERSIONS = tuple(v for v in WANTED_VERSIONS if v in SHIPPED_VERSIONS)
# Custom resources no Kubernetes schema covers; checked field by field in the cert-manager test.
CRD_GROUPS = frozenset({"cert-manager.io"})

needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="kubectl (with kustomize) not on PATH")

Obj = dict[str, Any]


# ---------------------------------------------------------------------------------------------
# helpers


@functools.cache
def _render_text(path: str) -> str:
    assert KUBECTL is not None
    done = subprocess.run(
        [KUBECTL, "kustomize", path], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, f"kubectl kustomize {path} failed:\n{done.stderr}"
    return done.stdout


def render(path: str | Path) -> list[Obj]:
    """`kubectl kustomize` a directory (relative to deploy/ or absolute); fresh copies each call."""
    full = Path(path) if Path(path).is_absolute() else DEPLOY / path
    return [d for d in yaml.safe_load_all(_render_text(str(full))) if d]


def upstream() -> list[Obj]:
    return [d for d in yaml.safe_load_all(UPSTREAM.read_text()) if d]


def key(obj: Obj) -> tuple[str, str, str]:
    meta = obj["metadata"]
    return (obj["kind"], meta.get("namespace", ""), meta["name"])


def by_key(objs: list[Obj]) -> dict[tuple[str, str, str], Obj]:
    out: dict[tuple[str, str, str], Obj] = {}
    for obj in objs:
        assert key(obj) not in out, f"duplicate object {key(obj)}"
        out[key(obj)] = obj
    return out


def one(objs: list[Obj], kind: str, name: str | None = None) -> Obj:
    found = [o for o in objs if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def container(objs: list[Obj]) -> Obj:
    containers = one(objs, "Deployment", "metrics-server")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    c: Obj = containers[0]
    return c


def arg_value(args: list[str], flag: str) -> str | None:
    for arg in args:
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def dry_run(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real flag parser and validation: `python -m kubemetrics --dry-run ARGS`; `env` adds
    what the pod's environment would hold (the downward API)."""
    return subprocess.run(
        [sys.executable, "-m", "kubemetrics", "--dry-run", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
        # No kubeconfig or service account here: dry-run must not need either.
        env={
            **{k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", *DOWNWARD)},
            **(env or {}),
        },
    )


def effective_config(args: list[str], env: dict[str, str] | None = None) -> Obj:
    done = dry_run(args, env)
    assert done.returncode == 0, f"--dry-run rejected {args}:\n{done.stderr}"
    config: Obj = json.loads(done.stdout)
    return config


def needs_dry_run() -> None:
    """Skip while the flag parser has not landed; once it has, the tests run it for real."""
    pytest.importorskip("kubemetrics.cli.main", reason="kubemetrics.cli (--dry-run) not available")


# ---------------------------------------------------------------------------------------------
# rendering and schema validation


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_into_kube_system_or_cluster_scope(overlay: str) -> None:
    objs = render(overlay)
    kinds = {o["kind"] for o in objs}
    assert {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "RoleBinding"} <= kinds
    assert {"Service", "Deployment", "APIService"} <= kinds
    by_key(objs)  # no duplicates
    cluster_scoped = {"ClusterRole", "ClusterRoleBinding", "APIService"}
    for obj in objs:
        ns = obj["metadata"].get("namespace")
        if obj["kind"] in cluster_scoped:
            assert ns is None, key(obj)
        else:
            assert ns == NAMESPACE, key(obj)
        assert obj["metadata"]["labels"]["k8s-app"] == "metrics-server", key(obj)


def test_schema_versions_cover_the_supported_range() -> None:
    assert K8S_VERSIONS[0] == "1.30" and K8S_VERSIONS[-1] == "1.37", SHIPPED_VERSIONS
    assert K8S_VERSIONS == WANTED_VERSIONS, f"kubernetes-validate lacks {WANTED_VERSIONS}"


def _validate_all(objs: list[Obj], version: str) -> list[str]:
    """Strict-schema problems (unknown fields included) of every object, as messages."""
    problems = []
    for obj in objs:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            problems.append(f"{key(obj)} {where}: {exc.message}")
        except SchemaNotFoundError:
            if obj["apiVersion"].split("/")[0] not in CRD_GROUPS:
                problems.append(f"{key(obj)}: no schema for {obj['apiVersion']} in {version}")
    return problems


@needs_kubectl
@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_validates_against_kubernetes_schema(overlay: str, version: str) -> None:
    assert _validate_all(render(overlay), version) == []


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_upstream_seed_manifest_validates(version: str) -> None:
    assert _validate_all(upstream(), version) == []


def test_schema_validation_catches_mistakes() -> None:
    """The validator is strict enough to matter: a typo'd field and a wrong type both fail."""
    deployment = one(upstream(), "Deployment")
    typo = copy.deepcopy(deployment)
    c = typo["spec"]["template"]["spec"]["containers"][0]
    c["securityContxt"] = c.pop("securityContext")
    wrong_type = copy.deepcopy(deployment)
    wrong_type["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsUser"] = "1000"
    for broken in (typo, wrong_type):
        assert len(_validate_all([broken], K8S_VERSIONS[-1])) == 1


# ---------------------------------------------------------------------------------------------
# drop-in for upstream


# Where our base deliberately differs from upstream's components.yaml, by object and JSON path.
# Everything else must be identical, so `kubectl apply -k deploy/base` over an upstream install
# changes only these fields.
BASE_DIFFERS_FROM_UPSTREAM = {
    ("Deployment", NAMESPACE, "metrics-server"): [
        ("spec", "template", "spec", "containers", 0, "image"),
        # Sized from kubemetrics' own per-node figures (docs/DEPLOY.md, "Sizing").
        ("spec", "template", "spec", "containers", 0, "resources"),
    ],
}
BASE_ONLY = {("APIService", "", "v1.metrics.k8s.io")}


def _drop(obj: Obj, path: tuple[str | int, ...]) -> None:
    node: Any = obj
    for step in path[:-1]:
        node = node[step]
    del node[path[-1]]


@needs_kubectl
def test_base_is_upstream_with_only_the_image_changed() -> None:
    ours, theirs = by_key(render("base")), by_key(upstream())
    assert set(ours) - set(theirs) == BASE_ONLY
    assert set(theirs) <= set(ours)
    for k, their_obj in theirs.items():
        mine, their_obj = copy.deepcopy(ours[k]), copy.deepcopy(their_obj)
        for path in BASE_DIFFERS_FROM_UPSTREAM.get(k, []):
            _drop(mine, path)
            _drop(their_obj, path)
        assert mine == their_obj, f"{k} differs from upstream beyond the image"
    v1 = ours[("APIService", "", "v1.metrics.k8s.io")]["spec"]
    v1beta1 = ours[("APIService", "", "v1beta1.metrics.k8s.io")]["spec"]
    assert v1["version"] == "v1" and v1["group"] == "metrics.k8s.io"
    assert v1["versionPriority"] > v1beta1["versionPriority"]  # clients prefer v1
    assert {k: v for k, v in v1.items() if k not in ("version", "versionPriority")} == {
        k: v for k, v in v1beta1.items() if k not in ("version", "versionPriority")
    }
    assert container(list(ours.values()))["image"] == "kubemetrics/kubemetrics:0.1.0"


# ---------------------------------------------------------------------------------------------
# the Deployment's arguments go through the real flag parser


def _check_upstream_args(config: Obj) -> None:
    """What upstream's five arguments must turn into."""
    assert config["serving"]["cert_dir"] == "/tmp"
    assert config["serving"]["secure_port"] == 10250
    assert config["kubelet"]["preferred_address_types"] == ["InternalIP", "ExternalIP", "Hostname"]
    assert config["kubelet"]["use_node_status_port"] is True
    assert config["metric_resolution"] == 15.0


def test_upstream_manifest_args_are_accepted() -> None:
    needs_dry_run()
    args = one(upstream(), "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    config = effective_config(args)
    _check_upstream_args(config)
    assert config["serving"]["self_signed"] is True


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_deployment_args_parse_with_the_real_flag_parser(overlay: str) -> None:
    needs_dry_run()
    c = container(render(overlay))
    config = effective_config(c["args"], pod_env(c))
    _check_upstream_args(config)
    serving = config["serving"]
    if "ca-bundle" in overlay:
        assert serving["tls_cert_file"] == f"{TLS_MOUNT}/tls.crt"
        assert serving["tls_private_key_file"] == f"{TLS_MOUNT}/tls.key"
        assert serving["self_signed"] is False
    else:
        assert serving["tls_cert_file"] is None and serving["self_signed"] is True


def pod_env(c: Obj) -> dict[str, str]:
    """The container's environment as the kubelet would fill it (downward API fields only)."""
    out = {}
    for e in c.get("env", []):
        field = e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
        out[e["name"]] = POD_FIELDS[field] if field else e["value"]
    return out


def test_dry_run_rejects_what_upstream_rejects() -> None:
    """The parser is not a rubber stamp: an unknown flag and a conflict both fail."""
    needs_dry_run()
    assert dry_run(["--no-such-flag=1"]).returncode != 0
    conflict = dry_run(["--kubelet-insecure-tls", "--kubelet-certificate-authority=/ca.crt"])
    assert conflict.returncode != 0
    assert "kubelet-insecure-tls" in conflict.stderr


# ---------------------------------------------------------------------------------------------
# pod security: restricted, read-only root, writable only where --cert-dir points


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_deployment_is_restricted_and_read_only(overlay: str) -> None:
    objs = render(overlay)
    pod = one(objs, "Deployment", "metrics-server")["spec"]["template"]["spec"]
    c = container(objs)
    assert c["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert pod["priorityClassName"] == "system-cluster-critical"
    assert pod["serviceAccountName"] == "metrics-server"
    assert "hostNetwork" not in pod and "hostPID" not in pod
    # Probes hit the server's health endpoints over HTTPS on the named port.
    assert c["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "https", "scheme": "HTTPS"}
    assert c["readinessProbe"]["httpGet"] == {
        "path": "/readyz",
        "port": "https",
        "scheme": "HTTPS",
    }
    assert c["ports"] == [{"name": "https", "containerPort": 10250, "protocol": "TCP"}]
    # The only writable mount is an emptyDir at --cert-dir; every other mount is read-only.
    volumes = {v["name"]: v for v in pod["volumes"]}
    writable = [m for m in c["volumeMounts"] if not m.get("readOnly", False)]
    assert len(writable) == 1
    assert writable[0]["mountPath"] == arg_value(c["args"], "--cert-dir") == "/tmp"
    assert volumes[writable[0]["name"]] == {"name": writable[0]["name"], "emptyDir": {}}
    # Requests set, and a memory limit (the worst case, docs/DEPLOY.md "Sizing"); no CPU limit:
    # throttling the metrics API stalls the HPA cluster-wide.
    assert set(c["resources"]) == {"requests", "limits"}
    assert set(c["resources"]["requests"]) == {"cpu", "memory"}
    assert set(c["resources"]["limits"]) == {"memory"}
    # The Service reaches the pod on the same named port.
    service = one(objs, "Service", "metrics-server")["spec"]
    labels = one(objs, "Deployment", "metrics-server")["spec"]["template"]["metadata"]["labels"]
    assert service["ports"] == [
        {"name": "https", "port": 443, "protocol": "TCP", "targetPort": "https"}
    ]
    assert service["selector"].items() <= labels.items()


# ---------------------------------------------------------------------------------------------
# high availability


@needs_kubectl
@pytest.mark.parametrize("overlay", [o for o in OVERLAYS if "high-availability" in o])
def test_high_availability_runs_three_sharded_replicas(overlay: str) -> None:
    objs = render(overlay)
    deployment = one(objs, "Deployment", "metrics-server")["spec"]
    pod_labels = deployment["template"]["metadata"]["labels"]
    assert deployment["replicas"] == 3
    assert deployment["strategy"] == {"rollingUpdate": {"maxUnavailable": 1}}
    terms = deployment["template"]["spec"]["affinity"]["podAntiAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]
    assert len(terms) == 1
    assert terms[0]["topologyKey"] == "kubernetes.io/hostname"
    assert terms[0]["labelSelector"]["matchLabels"].items() <= pod_labels.items()
    pdb = one(objs, "PodDisruptionBudget", "metrics-server")
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"] == {
        "maxUnavailable": 1,
        "selector": {"matchLabels": {"k8s-app": "metrics-server"}},
    }
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    # Upstream's arguments, then sharding; the identity from the downward API.
    c = container(objs)
    assert c["args"].count("--sharding=lease") == 1
    base = container(render("base"))["args"]
    assert [a for a in c["args"] if a != "--sharding=lease"][: len(base)] == base
    assert {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in c["env"]} == DOWNWARD
    sharding = effective_config(c["args"], pod_env(c))["sharding"]
    assert sharding == {
        "mode": "lease",
        "lease_duration": 15.0,
        "pod_name": POD_FIELDS["metadata.name"],
        "pod_namespace": NAMESPACE,
        "pod_ip": POD_FIELDS["status.podIP"],
        "group": "kubemetrics",
    }
    # Without the downward API the replica refuses to start, naming what is missing.
    assert "set POD_NAME" in dry_run(c["args"]).stderr
    # Lease rights: a Role in the server's own namespace, leases only, bound to its account.
    role = one(objs, "Role", "metrics-server:shard-leases")
    assert role["metadata"]["namespace"] == NAMESPACE
    assert role["rules"] == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "verbs": ["get", "list", "watch", "create", "update", "delete"],
        }
    ]
    binding = one(objs, "RoleBinding", "metrics-server:shard-leases")
    assert binding["metadata"]["namespace"] == NAMESPACE
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "metrics-server:shard-leases",
    }
    assert [(s["kind"], s["namespace"], s["name"]) for s in binding["subjects"]] == [SA]


@needs_kubectl
@pytest.mark.parametrize("overlay", [o for o in OVERLAYS if "high-availability" not in o])
def test_single_replica_overlays_keep_upstream_rollout(overlay: str) -> None:
    objs = render(overlay)
    deployment = one(objs, "Deployment", "metrics-server")["spec"]
    assert "replicas" not in deployment  # defaults to 1, and leaves room for an HPA/VPA
    assert deployment["strategy"] == {"rollingUpdate": {"maxUnavailable": 0}}
    assert not [o for o in objs if o["kind"] == "PodDisruptionBudget"]


# ---------------------------------------------------------------------------------------------
# the network paths


def _ports(rule: Obj) -> set[tuple[str, int | str]]:
    return {(p["protocol"], p["port"]) for p in rule["ports"]}


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policy_allows_exactly_the_server_s_paths(overlay: str) -> None:
    """In: the https port (kube-apiserver, probes). Out: the kubelets, kube-apiserver (the
    Service's port and the usual endpoint port), DNS. Only where the component is used."""
    objs = render(overlay)
    policies = [o for o in objs if o["kind"] == "NetworkPolicy"]
    if "network-policy" not in overlay:
        assert policies == []
        return
    (policy,) = policies
    spec = policy["spec"]
    pod = one(objs, "Deployment", "metrics-server")["spec"]["template"]
    assert spec["podSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    c = container(objs)
    (https,) = c["ports"]
    assert [_ports(r) for r in spec["ingress"]] == [{("TCP", https["name"])}]
    assert all("from" not in r for r in spec["ingress"])
    kubelet_port = int(arg_value(c["args"], "--kubelet-port") or 10250)
    egress = [_ports(r) for r in spec["egress"]]
    assert egress == [
        {("TCP", kubelet_port)},
        {("TCP", 443), ("TCP", 6443)},
        {("UDP", 53), ("TCP", 53)},
    ]
    assert all("to" not in r for r in spec["egress"])


# ---------------------------------------------------------------------------------------------
# secure serving: caBundle instead of insecureSkipTLSVerify

CA_PLACEHOLDER = "kubemetrics: REPLACE with the PEM CA bundle"


def _secret_volume(objs: list[Obj]) -> str:
    """The Secret mounted where --tls-cert-file points."""
    c = container(objs)
    pod = one(objs, "Deployment", "metrics-server")["spec"]["template"]["spec"]
    assert arg_value(c["args"], "--tls-cert-file") == f"{TLS_MOUNT}/tls.crt"
    assert arg_value(c["args"], "--tls-private-key-file") == f"{TLS_MOUNT}/tls.key"
    mount = [m for m in c["volumeMounts"] if m["mountPath"] == TLS_MOUNT]
    assert len(mount) == 1 and mount[0]["readOnly"] is True
    volume = [v for v in pod["volumes"] if v["name"] == mount[0]["name"]]
    assert len(volume) == 1
    name: str = volume[0]["secret"]["secretName"]
    return name


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_apiservices(overlay: str) -> None:
    objs = render(overlay)
    services = {o["metadata"]["name"]: o["spec"] for o in objs if o["kind"] == "APIService"}
    assert set(services) == {"v1beta1.metrics.k8s.io", "v1.metrics.k8s.io"}
    for name, spec in services.items():
        assert name == f"{spec['version']}.{spec['group']}"
        assert spec["service"] == {"name": "metrics-server", "namespace": NAMESPACE}
        if "ca-bundle" in overlay:
            assert "insecureSkipTLSVerify" not in spec
            # Unfilled, it is a placeholder that cannot verify anything (fails closed).
            assert base64.b64decode(spec["caBundle"]).decode().startswith(CA_PLACEHOLDER)
        else:
            assert spec["insecureSkipTLSVerify"] is True and "caBundle" not in spec
    if "ca-bundle" in overlay:
        assert _secret_volume(objs) == "metrics-server-tls"


@needs_kubectl
def test_cert_manager_wiring() -> None:
    """cert-manager objects (no Kubernetes schema) fit together and fill what ca-bundle opens."""
    objs = render("overlays/ca-bundle-cert-manager")
    issuers = {o["metadata"]["name"]: o for o in objs if o["kind"] == "Issuer"}
    certs = {o["metadata"]["name"]: o for o in objs if o["kind"] == "Certificate"}
    for obj in [*issuers.values(), *certs.values()]:
        assert obj["apiVersion"] == "cert-manager.io/v1"
    secret = _secret_volume(objs)
    serving = [c for c in certs.values() if c["spec"]["secretName"] == secret]
    assert len(serving) == 1
    serving_cert = serving[0]
    assert SERVICE_DNS in serving_cert["spec"]["dnsNames"]
    assert "server auth" in serving_cert["spec"]["usages"]
    assert serving_cert["spec"].get("isCA", False) is False
    # Every issuerRef resolves within the overlay, and the serving cert chains to a CA certificate.
    for cert in certs.values():
        ref = cert["spec"]["issuerRef"]
        assert ref["kind"] == "Issuer" and ref["name"] in issuers, ref
    ca_issuer = issuers[serving_cert["spec"]["issuerRef"]["name"]]["spec"]
    ca_certs = [
        c for c in certs.values() if c["spec"]["secretName"] == ca_issuer["ca"]["secretName"]
    ]
    assert len(ca_certs) == 1 and ca_certs[0]["spec"]["isCA"] is True
    # cainjector copies that Certificate's CA into both APIServices.
    expected = f"{NAMESPACE}/{serving_cert['metadata']['name']}"
    for svc in (o for o in objs if o["kind"] == "APIService"):
        assert svc["metadata"]["annotations"] == {"cert-manager.io/inject-ca-from": expected}


@needs_kubectl
@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not on PATH")
@pytest.mark.parametrize("ha", [False, True])
def test_serving_cert_script_fills_ca_bundle(tmp_path: Path, ha: bool) -> None:
    """make-serving-cert.sh: a real CA + serving pair, the Secret, and a caBundle that verifies."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID

    out = tmp_path / "tls"
    script = DEPLOY / "scripts" / "make-serving-cert.sh"
    done = subprocess.run(
        [str(script), *(["--ha"] if ha else []), "--days", "30", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert (out / "tls.key").stat().st_mode & 0o077 == 0  # the key is private
    assert not list(out.glob("*ca.key*"))  # the CA key is not kept

    objs = render(out)
    assert (len([o for o in objs if o["kind"] == "PodDisruptionBudget"]) == 1) is ha
    assert _validate_all(objs, K8S_VERSIONS[-1]) == []
    secret = one(objs, "Secret")
    # The Deployment mounts the generated (hash-suffixed) Secret.
    assert _secret_volume(objs) == secret["metadata"]["name"]
    assert secret["metadata"]["name"].startswith("metrics-server-tls-")
    assert secret["type"] == "kubernetes.io/tls"
    data = {k: base64.b64decode(v) for k, v in secret["data"].items()}
    assert data["tls.crt"] == (out / "tls.crt").read_bytes()

    ca = x509.load_pem_x509_certificate(data["ca.crt"])
    leaf = x509.load_pem_x509_certificate(data["tls.crt"])
    for svc in (o for o in objs if o["kind"] == "APIService"):
        assert "insecureSkipTLSVerify" not in svc["spec"]
        assert base64.b64decode(svc["spec"]["caBundle"]) == data["ca.crt"]
    # The aggregator verifies the chain and the Service's DNS name.
    leaf.verify_directly_issued_by(ca)
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert SERVICE_DNS in sans.get_values_for_type(x509.DNSName)
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    private = serialization.load_pem_private_key(data["tls.key"], password=None)
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    assert private.public_key().public_numbers() == leaf.public_key().public_numbers()


# ---------------------------------------------------------------------------------------------
# RBAC: exactly what the server uses


@dataclass(frozen=True)
class ApiCall:
    """One kind of request the server sends with its service account's credentials."""

    why: str
    verb: str
    group: str
    resource: str
    subresource: str = ""
    namespace: str = ""  # "" = cluster-scoped or across all namespaces
    name: str = ""


AUTH_CONFIGMAP = "extension-apiserver-authentication"

# Every API call the server makes, in one place. Reflectors list then watch; the kubelet maps
# GET /metrics/resource to `get nodes/metrics` and asks the API server (SubjectAccessReview).
SERVER_API_CALLS = (
    ApiCall("node discovery: list", "list", "", "nodes"),
    ApiCall("node discovery: watch", "watch", "", "nodes"),
    ApiCall("pod discovery (Running pods, metadata): list", "list", "", "pods"),
    ApiCall("pod discovery (Running pods, metadata): watch", "watch", "", "pods"),
    ApiCall("scrape the kubelet's /metrics/resource", "get", "", "nodes", "metrics"),
    ApiCall("authenticate a bearer token", "create", "authentication.k8s.io", "tokenreviews"),
    ApiCall("authorize a request", "create", "authorization.k8s.io", "subjectaccessreviews"),
    *(
        ApiCall(
            f"client/front-proxy CAs: {verb}", verb, "", "configmaps", "", NAMESPACE, AUTH_CONFIGMAP
        )
        for verb in ("get", "list", "watch")
    ),
)

# --sharding=lease (the high-availability overlays): the replicas' Leases, in their own namespace.
# Peers fetch each other's points as `get nodes/metrics`, already in SERVER_API_CALLS.
SHARDED_API_CALLS = tuple(
    ApiCall(f"shard membership: {verb}", verb, "coordination.k8s.io", "leases", "", NAMESPACE)
    for verb in ("get", "list", "watch", "create", "update", "delete")
)


def calls_for(overlay: str) -> tuple[ApiCall, ...]:
    sharded = "high-availability" in overlay
    return SERVER_API_CALLS + (SHARDED_API_CALLS if sharded else ())


# Granted by our own roles though no call needs it: upstream's ClusterRole has `get` on nodes and
# pods, and the issue keeps the role identical so existing audits/policies still match.
UPSTREAM_PARITY_EXTRAS = frozenset({("", "nodes", "get"), ("", "pods", "get")})

# Roles the manifests bind but Kubernetes defines (bootstrap policy), as every release has them.
BUILTIN_ROLES: dict[tuple[str, str, str], list[Obj]] = {
    ("ClusterRole", "", "system:auth-delegator"): [
        {
            "apiGroups": ["authentication.k8s.io"],
            "resources": ["tokenreviews"],
            "verbs": ["create"],
        },
        {
            "apiGroups": ["authorization.k8s.io"],
            "resources": ["subjectaccessreviews"],
            "verbs": ["create"],
        },
    ],
    ("Role", NAMESPACE, "extension-apiserver-authentication-reader"): [
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": [AUTH_CONFIGMAP],
            "verbs": ["get", "list", "watch"],
        },
    ],
}


def _rules_for_service_account(objs: list[Obj]) -> Iterator[tuple[str, Obj]]:
    """(namespace the rule applies in, "" = everywhere; rule) for every binding of our SA."""
    roles = {key(o): o.get("rules", []) for o in objs if o["kind"] in ("ClusterRole", "Role")}
    for binding in (o for o in objs if o["kind"] in ("ClusterRoleBinding", "RoleBinding")):
        subjects = binding.get("subjects", [])
        if not any((s["kind"], s.get("namespace", ""), s["name"]) == SA for s in subjects):
            continue
        ref = binding["roleRef"]
        scope = binding["metadata"].get("namespace", "")
        role_key = (ref["kind"], scope if ref["kind"] == "Role" else "", ref["name"])
        rules = roles.get(role_key, BUILTIN_ROLES.get(role_key))
        assert rules is not None, f"{key(binding)} binds unknown {role_key}"
        for rule in rules:
            yield scope, rule


def _allows(scope: str, rule: Obj, call: ApiCall) -> bool:
    resource = f"{call.resource}/{call.subresource}" if call.subresource else call.resource
    names = rule.get("resourceNames", [])
    return (
        scope in ("", call.namespace)
        and call.group in rule.get("apiGroups", [])
        and resource in rule.get("resources", [])
        and call.verb in rule.get("verbs", [])
        and (not names or call.name in names)
    )


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rbac_grants_every_call_the_server_makes(overlay: str) -> None:
    rules = list(_rules_for_service_account(render(overlay)))
    missing = [c.why for c in calls_for(overlay) if not any(_allows(s, r, c) for s, r in rules)]
    assert missing == []


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rbac_grants_nothing_more(overlay: str) -> None:
    objs = render(overlay)
    for scope, rule in _rules_for_service_account(objs):
        for field in ("apiGroups", "resources", "verbs", "resourceNames"):
            assert "*" not in rule.get(field, []), f"wildcard in {rule}"
        assert "nonResourceURLs" not in rule
        names = set(rule.get("resourceNames", []))
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    res, _, sub = resource.partition("/")
                    # Justified only by a call needing exactly this: no wider namespace scope,
                    # no missing resourceNames where the call names its object.
                    used = any(
                        (c.group, c.resource, c.subresource, c.verb) == (group, res, sub, verb)
                        and scope == c.namespace
                        and names == ({c.name} if c.name else set())
                        for c in calls_for(overlay)
                    )
                    extra = (group, resource, verb) in UPSTREAM_PARITY_EXTRAS and not scope
                    assert used or extra, f"{scope or 'cluster'}: {verb} {group}/{resource} {names}"
    # The reader role is for humans and controllers (aggregated into view/edit/admin), read-only,
    # metrics.k8s.io only, and not bound to anybody by us.
    reader = one(objs, "ClusterRole", "system:aggregated-metrics-reader")
    assert reader["rules"] == [
        {
            "apiGroups": ["metrics.k8s.io"],
            "resources": ["pods", "nodes"],
            "verbs": ["get", "list", "watch"],
        }
    ]
    for role in ("admin", "edit", "view"):
        assert (
            reader["metadata"]["labels"][f"rbac.authorization.k8s.io/aggregate-to-{role}"] == "true"
        )
    bound = {
        o["roleRef"]["name"] for o in objs if o["kind"] in ("ClusterRoleBinding", "RoleBinding")
    }
    assert bound == {
        "system:metrics-server",
        "system:auth-delegator",
        "extension-apiserver-authentication-reader",
    } | ({"metrics-server:shard-leases"} if "high-availability" in overlay else set())


def test_rbac_checker_notices_a_missing_grant() -> None:
    """The evaluator is not vacuous: without nodes/metrics the scrape call is not allowed."""
    objs = upstream()
    role = one(objs, "ClusterRole", "system:metrics-server")
    role["rules"] = [r for r in role["rules"] if "nodes/metrics" not in r["resources"]]
    rules = list(_rules_for_service_account(objs))
    scrape = next(c for c in SERVER_API_CALLS if c.subresource == "metrics")
    assert not any(_allows(s, r, scrape) for s, r in rules)
    tokens = next(c for c in SERVER_API_CALLS if c.resource == "tokenreviews")
    assert any(_allows(s, r, tokens) for s, r in rules)


# Kubernetes API paths written in the server's source, so a new call cannot slip in without a
# line in SERVER_API_CALLS (and the RBAC to match). metrics.k8s.io is what we serve, not call.
_API_PATH = re.compile(r"""["'](/apis?/[^"'\s]*)["']""")


def _path_resource(path: str) -> tuple[str, str, str] | None:
    """(group, resource, namespace) of an API path literal; None for discovery paths."""
    parts = [p for p in path.split("/") if p]
    if parts[0] == "api":
        group, rest = "", parts[2:]
    else:
        if len(parts) < 3:
            return None
        group, rest = parts[1], parts[3:]
    namespace = ""
    if len(rest) >= 2 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    if not rest:
        return None
    return group, rest[0], namespace


def test_every_api_path_in_the_server_source_is_a_listed_call() -> None:
    source = ROOT / "python" / "kubemetrics"
    listed = {(c.group, c.resource) for c in SERVER_API_CALLS + SHARDED_API_CALLS}
    unknown = []
    for file in sorted(source.rglob("*.py")):
        for match in _API_PATH.finditer(file.read_text()):
            parsed = _path_resource(match.group(1))
            if parsed is None or parsed[0] == "metrics.k8s.io" or "{" in parsed[1]:
                continue
            group, resource, namespace = parsed
            if (group, resource) not in listed:
                unknown.append(f"{file.relative_to(ROOT)}: {match.group(1)}")
            elif namespace and "{" not in namespace:
                assert any(
                    c.namespace == namespace
                    for c in SERVER_API_CALLS + SHARDED_API_CALLS
                    if c.resource == resource
                )
    assert unknown == []


# ---------------------------------------------------------------------------------------------
# the image's install steps, in a fresh virtual environment
#
# No container registry is reachable here, so `FROM python:3.11-slim-bookworm` cannot be pulled
# (docs/DEPLOY.md, "Building the image"); this runs the Containerfile's own steps instead: build
# the wheel with maturin, install it alone into a new venv (dependencies from the package index),
# and run the entrypoint the way the manifests do.

CONTAINERFILE = ROOT / "Containerfile"


def test_containerfile_runs_upstream_args_as_uid_1000() -> None:
    text = CONTAINERFILE.read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\w+))?", text, re.MULTILINE)
    assert len(stages) == 2 and stages[0][1] == "builder"
    # The last stage: non-root, our entrypoint with no baked-in args (the manifest's args go
    # straight to it), and upstream's /metrics-server path for manifests that set `command`.
    final = text.split("\nFROM ")[-1]
    assert re.search(r"^USER 1000(:1000)?$", final, re.MULTILINE)
    assert re.search(r'^ENTRYPOINT \["kubemetrics"\]$', final, re.MULTILINE)
    assert not re.search(r"^CMD ", final, re.MULTILINE)
    assert "ln -s /opt/kubemetrics/bin/kubemetrics /metrics-server" in final
    assert "PYTHONDONTWRITEBYTECODE=1" in final and "HOME=/tmp" in final
    # The Rust toolchain comes from Debian packages, not rustup or a download.
    assert "rustc-web" in text and "rustup" not in text.replace("no rustup", "")
    # buildah/podman read .containerignore, docker .dockerignore: the same context either way.
    assert (ROOT / ".containerignore").read_text() == (ROOT / ".dockerignore").read_text()


def _tree(path: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime for p in path.rglob("*") if not p.is_symlink()}


@pytest.mark.slow
def test_wheel_installs_into_a_fresh_venv_and_runs_the_manifest_args(tmp_path: Path) -> None:
    maturin = Path(sys.executable).parent / "maturin"
    if not maturin.exists():
        pytest.skip("maturin not installed next to the test interpreter")
    wheels, venv = tmp_path / "wheels", tmp_path / "venv"
    build = subprocess.run(
        [str(maturin), "build", "--release", "--locked", "--quiet", "--out", str(wheels)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert build.returncode == 0, build.stderr[-4000:]
    (wheel,) = wheels.glob("kubemetrics-*.whl")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    install = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", str(wheel)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert install.returncode == 0, install.stderr[-4000:]

    # As in the image: no bytecode writes, HOME on the emptyDir, run from the venv alone (no
    # checkout on sys.path: cwd elsewhere, no PYTHONPATH).
    home = tmp_path / "home"
    home.mkdir()
    env = {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "HOME": str(home),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    metrics_server = tmp_path / "metrics-server"
    metrics_server.symlink_to(venv / "bin" / "kubemetrics")
    before = _tree(venv)

    def run(*argv: str, pod: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            env={**env, **(pod or {})},
            cwd=home,
            timeout=120,
            check=False,
        )

    version = run("kubemetrics", "--version")
    cargo = (ROOT / "Cargo.toml").read_text()
    expected = re.search(r'^version = "([^"]+)"', cargo, re.MULTILINE)
    assert expected is not None
    assert version.returncode == 0 and version.stdout.strip() == f"v{expected.group(1)}"

    # Every module of both packages imports: no dependency missing from pyproject.toml (and
    # none needs the test extra: the launchers ship, the pytest fixtures stay in tests/).
    modules = run(
        "python",
        "-c",
        "import importlib, pkgutil, kubemetrics, kubemetrics_sim\n"
        "for pkg in (kubemetrics, kubemetrics_sim):\n"
        "    assert pkg.__file__ and '/site-packages/' in pkg.__file__, pkg.__file__\n"
        "    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
        "        importlib.import_module(m.name)\n",
    )
    assert modules.returncode == 0, modules.stderr[-4000:]

    runs = [(one(upstream(), "Deployment")["spec"]["template"]["spec"]["containers"][0], {})]
    if KUBECTL:
        ha = container(render("overlays/high-availability-ca-bundle"))
        runs.append((ha, pod_env(ha)))
    for c, pod in runs:
        for entry in ("kubemetrics", str(metrics_server)):
            done = run(entry, "--dry-run", *c["args"], pod=pod)
            assert done.returncode == 0, done.stderr
            _check_upstream_args(json.loads(done.stdout))
    # Nothing was written into the installed tree by running it (read-only root friendly).
    assert _tree(venv) == before
    assert not list(home.iterdir())


# ---------------------------------------------------------------------------------------------
# sizing: the requests follow the formula and inputs written in docs/DEPLOY.md

DEPLOY_MD = ROOT / "docs" / "DEPLOY.md"


def _sizing_inputs() -> dict[str, float]:
    text = DEPLOY_MD.read_text()
    block = text.split("<!-- sizing-inputs", 1)[1].split("```text\n", 1)[1].split("```", 1)[0]
    inputs = {}
    for line in block.splitlines():
        name, _, rest = line.partition("=")
        inputs[name.strip()] = float(rest.split("#", 1)[0])
    return inputs


def _sizing(nodes: int, hpas: int) -> tuple[float, float, float]:
    """(memory MiB, CPU millicores, memory limit MiB) per replica, as docs/DEPLOY.md writes
    the formula."""
    i = _sizing_inputs()
    per_node_kib = (
        i["mem_store_kib"]
        + i["mem_inventory_kib"]
        + 2 * i["mem_snapshot_kib"]
        + i["mem_conn_kib"]
        + i["mem_encode_kib"]
    )
    memory = i["mem_base_mib"] + i["mem_headroom"] * nodes * per_node_kib / 1024
    cpu = i["cpu_headroom"] * (
        i["cpu_idle_m"]
        + nodes * (i["cpu_scrape_ms"] + i["cpu_snapshot_ms"]) / i["resolution_s"]
        + hpas / i["hpa_sync_s"] * i["cpu_request_ms"]
    )
    held_kib = (
        i["max_connections"] * (i["mem_client_conn_kib"] + i["header_allowance_kib"])
        + i["header_pool_kib"]
        + i["full_lists"] * nodes * i["mem_list_kib"]
        + i["scrape_concurrency"] * i["body_allowance_kib"]
        + i["body_pool_kib"]
    )
    return memory, cpu, memory + held_kib / 1024


def _mib(memory: float) -> str:
    return f"{-(-memory // 64) * 64:.0f}Mi"


def _millicores(cpu: float) -> str:
    return f"{-(-cpu // 10) * 10:.0f}m"


def test_sizing_table_and_base_resources_follow_the_documented_formula() -> None:
    rows = re.findall(
        r"^\| (\d+) \| (\d+) \| ([\d.]+) MiB \| \**(\d+Mi)\**[^|]* \| ([\d.]+) MiB \| "
        r"\**(\d+Mi)\**[^|]* \| ([\d.]+)m \| \**(\d+m)\**",
        DEPLOY_MD.read_text(),
        re.MULTILINE,
    )
    assert len(rows) >= 4
    for nodes, hpas, mem_text, mem_req, lim_text, mem_lim, cpu_text, cpu_req in rows:
        memory, cpu, limit = _sizing(int(nodes), int(hpas))
        assert (float(mem_text), float(lim_text), float(cpu_text)) == (
            round(memory, 1),
            round(limit, 1),
            round(cpu, 1),
        ), nodes
        assert (mem_req, mem_lim, cpu_req) == (_mib(memory), _mib(limit), _millicores(cpu)), nodes
    # The base Deployment is sized for upstream's reference: 100 nodes x 30 pods, 100 HPAs.
    memory, cpu, limit = _sizing(100, 100)
    deployment = (DEPLOY / "base" / "deployment.yaml").read_text()
    resources = yaml.safe_load(deployment)["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert resources == {
        "requests": {"cpu": _millicores(cpu), "memory": _mib(memory)},
        "limits": {"memory": _mib(limit)},
    }


def test_the_limit_inputs_are_the_code_s_bounds() -> None:
    """The limit's inputs that are bounds in the code are the code's values."""
    from kubemetrics.config import DEFAULT_MAX_CONNECTIONS
    from kubemetrics.listener import HEADER_ALLOWANCE_BYTES, HEADER_POOL_BYTES
    from kubemetrics.scrape.scraper import (
        BODY_ALLOWANCE_BYTES,
        BODY_POOL_BYTES,
        ScrapeSettings,
    )

    i = _sizing_inputs()
    assert i["max_connections"] == DEFAULT_MAX_CONNECTIONS
    assert i["header_allowance_kib"] * 1024 == HEADER_ALLOWANCE_BYTES
    assert i["header_pool_kib"] * 1024 == HEADER_POOL_BYTES
    assert i["scrape_concurrency"] == ScrapeSettings().max_concurrency
    assert i["body_allowance_kib"] * 1024 == BODY_ALLOWANCE_BYTES
    assert i["body_pool_kib"] * 1024 == BODY_POOL_BYTES
