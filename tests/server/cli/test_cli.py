"""The command line: upstream flags, pflag syntax, validation, --help, --version, --dry-run."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import ssl
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from kubemetrics import __version__
from kubemetrics.cli.build import build_config, parse, parse_args
from kubemetrics.cli.flags import FLAGS
from kubemetrics.cli.main import main
from kubemetrics.cli.pflag import UsageError, parse_duration, parse_int, scan
from kubemetrics.cli.usage import usage
from kubemetrics.config import Config, ConfigError, SNICertKey, validate
from tests.helpers.paths import SHARED_FIXTURES

UPSTREAM_MANIFEST = SHARED_FIXTURES / "upstream-components.yaml"

# Every flag of upstream metrics-server v0.7/v0.8 (its `--help`, including the generic apiserver
# and component-base families it embeds), with a valid sample value ("" = boolean flag).
# Written out here rather than read from cli.flags.FLAGS, so a flag dropped from the table fails.
UPSTREAM_FLAGS: dict[str, str] = {
    # Metrics server
    "kubeconfig": "/etc/kubeconfig",
    "metric-resolution": "30s",
    "version": "",
    # Kubelet client
    "deprecated-kubelet-completely-insecure": "",
    "kubelet-certificate-authority": "/ca.crt",
    "kubelet-certificate-authority-text": "-----BEGIN CERTIFICATE-----",
    "kubelet-client-certificate": "/c.crt",
    "kubelet-client-key": "/c.key",
    "kubelet-insecure-tls": "",
    "kubelet-port": "10255",
    "kubelet-preferred-address-types": "InternalIP,Hostname",
    "kubelet-request-timeout": "5s",
    "kubelet-use-node-status-port": "",
    "node-selector": "role=worker",
    # Secure serving
    "bind-address": "127.0.0.1",
    "cert-dir": "/tmp",
    "http2-max-streams-per-connection": "1000",
    "permit-address-sharing": "",
    "permit-port-sharing": "",
    "secure-port": "4443",
    "tls-cert-file": "/tls.crt",
    "tls-cipher-suites": "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "tls-min-version": "VersionTLS12",
    "tls-private-key-file": "/tls.key",
    "tls-sni-cert-key": "a.crt,a.key:*.example.com",
    # Authentication
    "authentication-kubeconfig": "/authn",
    "authentication-skip-lookup": "",
    "authentication-token-webhook-cache-ttl": "1m",
    "authentication-tolerate-lookup-failure": "",
    "client-ca-file": "/client-ca.crt",
    "requestheader-allowed-names": "front-proxy-client",
    "requestheader-client-ca-file": "/front-proxy-ca.crt",
    "requestheader-extra-headers-prefix": "X-Remote-Extra-",
    "requestheader-group-headers": "X-Remote-Group",
    "requestheader-uid-headers": "X-Remote-Uid",
    "requestheader-username-headers": "X-Remote-User",
    # Authorization
    "authorization-always-allow-paths": "/healthz,/metrics",
    "authorization-kubeconfig": "/authz",
    "authorization-webhook-cache-authorized-ttl": "20s",
    "authorization-webhook-cache-unauthorized-ttl": "5s",
    # Audit
    "audit-log-batch-buffer-size": "100",
    "audit-log-batch-max-size": "2",
    "audit-log-batch-max-wait": "5s",
    "audit-log-batch-throttle-burst": "3",
    "audit-log-batch-throttle-enable": "",
    "audit-log-batch-throttle-qps": "1.5",
    "audit-log-compress": "",
    "audit-log-format": "legacy",
    "audit-log-maxage": "7",
    "audit-log-maxbackup": "3",
    "audit-log-maxsize": "100",
    "audit-log-mode": "batch",
    "audit-log-path": "-",
    "audit-log-truncate-enabled": "",
    "audit-log-truncate-max-batch-size": "1024",
    "audit-log-truncate-max-event-size": "512",
    "audit-log-version": "audit.k8s.io/v1",
    "audit-policy-file": "/policy.yaml",
    "audit-webhook-batch-buffer-size": "100",
    "audit-webhook-batch-max-size": "10",
    "audit-webhook-batch-max-wait": "1s",
    "audit-webhook-batch-throttle-burst": "2",
    "audit-webhook-batch-throttle-enable": "",
    "audit-webhook-batch-throttle-qps": "3",
    "audit-webhook-config-file": "/webhook.kubeconfig",
    "audit-webhook-initial-backoff": "2s",
    "audit-webhook-mode": "blocking",
    "audit-webhook-truncate-enabled": "",
    "audit-webhook-truncate-max-batch-size": "2048",
    "audit-webhook-truncate-max-event-size": "1024",
    "audit-webhook-version": "audit.k8s.io/v1",
    # Features
    "contention-profiling": "",
    "debug-socket-path": "/tmp/debug.sock",
    "profiling": "",
    # Logging (component-base)
    "log-flush-frequency": "10s",
    "log-json-info-buffer-size": "1Mi",
    "log-json-split-stream": "",
    "log-text-info-buffer-size": "512",
    "log-text-split-stream": "",
    "logging-format": "json",
    "v": "4",
    "vmodule": "scraper=5,api*=2",
}

# Groups of `metrics-server --help`, in upstream's order.
UPSTREAM_GROUPS = [
    "Metrics server flags",
    "Kubelet client flags",
    "Apiserver secure serving flags",
    "Apiserver authentication flags",
    "Apiserver authorization flags",
    "Apiserver audit log flags",
    "Features flags",
    "Logging flags",
]

# What the flags set, as the fields they must land in.
FILE_FLAGS = {
    "kubeconfig",
    "kubelet-certificate-authority",
    "kubelet-client-certificate",
    "kubelet-client-key",
    "tls-cert-file",
    "tls-private-key-file",
    "authentication-kubeconfig",
    "client-ca-file",
    "requestheader-client-ca-file",
    "authorization-kubeconfig",
}


@pytest.fixture
def restore_root_logger() -> Iterator[None]:
    """main() installs handlers on the root logger; put it back as it was."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def deployment_args() -> list[str]:
    docs = list(yaml.safe_load_all(UPSTREAM_MANIFEST.read_text()))
    deployments = [d for d in docs if d and d.get("kind") == "Deployment"]
    assert len(deployments) == 1
    containers = deployments[0]["spec"]["template"]["spec"]["containers"]
    args = containers[0]["args"]
    assert args, "the upstream Deployment passes arguments"
    return [str(a) for a in args]


# --- the upstream manifest ----------------------------------------------------------------


def test_upstream_deployment_args_parse_to_their_meaning() -> None:
    args = deployment_args()
    config = parse_args(args)
    assert config.serving.cert_dir == "/tmp"
    assert config.serving.secure_port == 10250
    assert config.kubelet.preferred_address_types == ("InternalIP", "ExternalIP", "Hostname")
    assert config.kubelet.use_node_status_port is True
    assert config.metric_resolution == 15.0
    assert config.kubelet.request_timeout == 10.0  # under 90% of 15 s: not capped
    assert config.warnings == ()
    assert config.ignored_flags == ()


def test_upstream_deployment_args_dry_run_in_a_real_process() -> None:
    """`python -m kubemetrics --dry-run ARGS` is what the deployment tests run."""
    args = deployment_args()
    proc = subprocess.run(
        [sys.executable, "-m", "kubemetrics", "--dry-run", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["metric_resolution"] == 15.0
    assert out["serving"]["secure_port"] == 10250
    assert out["serving"]["cert_dir"] == "/tmp"
    assert out["serving"]["self_signed"] is True
    assert out["kubelet"]["preferred_address_types"] == ["InternalIP", "ExternalIP", "Hostname"]
    assert out["kubelet"]["use_node_status_port"] is True
    assert out["kubelet"]["scheme"] == "https"


# --- every upstream flag ------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(UPSTREAM_FLAGS))
def test_every_upstream_flag_is_accepted_in_both_spellings(name: str) -> None:
    value = UPSTREAM_FLAGS[name]
    spellings = [[f"--{name}"]] if value == "" else [[f"--{name}={value}"], [f"--{name}", value]]
    for argv in spellings:
        p = scan(argv, FLAGS)
        assert p.was_set(name), argv
        assert p.positionals == []
        if name != "version":
            build_config(p)  # values convert into the Config types


def test_flag_table_has_nothing_unexpected() -> None:
    """Our own additions beyond upstream's list are exactly these (so none slips in by typo)."""
    ours = {"dry-run", "help", "show-hidden-metrics-for-version", "disable-http2-serving"}
    # The listener's limits: kube-apiserver's generic flags, and Go http.Server's fixed values.
    ours |= {"max-requests-inflight", "request-timeout"}
    ours |= {"max-connections", "read-header-timeout", "idle-timeout", "max-header-bytes"}
    ours |= {
        "sharding", "shard-group", "shard-lease-duration", "shard-pod-ip", "shard-pod-name",
        "shard-pod-namespace",
    }  # fmt: skip
    klog = {
        "add-dir-header", "alsologtostderr", "log-backtrace-at", "log-dir", "log-file",
        "log-file-max-size", "logtostderr", "one-output", "skip-headers", "skip-log-headers",
        "stderrthreshold",
    }  # fmt: skip
    assert set(FLAGS) - set(UPSTREAM_FLAGS) == ours | klog


def test_flags_land_in_the_config() -> None:
    argv = [f"--{n}={v}" if v else f"--{n}" for n, v in UPSTREAM_FLAGS.items()]
    # Drop the flags that conflict with each other or would only print the version.
    conflicting = {
        "version",
        "deprecated-kubelet-completely-insecure",
        "kubelet-insecure-tls",
        "kubelet-certificate-authority-text",
    }
    argv = [a for a in argv if a[2:].split("=")[0] not in conflicting]
    c = parse_args(argv)
    assert c.kubeconfig == "/etc/kubeconfig"
    assert c.metric_resolution == 30.0
    k = c.kubelet
    assert (k.certificate_authority, k.client_certificate, k.client_key) == (
        "/ca.crt",
        "/c.crt",
        "/c.key",
    )
    assert (k.port, k.request_timeout, k.use_node_status_port) == (10255, 5.0, True)
    assert k.preferred_address_types == ("InternalIP", "Hostname")
    assert k.node_selector == "role=worker"
    s = c.serving
    assert (s.bind_address, s.secure_port, s.cert_dir) == ("127.0.0.1", 4443, "/tmp")
    assert (s.tls_cert_file, s.tls_private_key_file) == ("/tls.crt", "/tls.key")
    assert s.tls_cipher_suites == ("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",)
    assert s.tls_min_version == "VersionTLS12"
    assert s.ssl_min_version is ssl.TLSVersion.TLSv1_2
    assert s.openssl_ciphers() == "ECDHE-RSA-AES128-GCM-SHA256"
    assert s.sni_cert_keys == (SNICertKey("a.crt", "a.key", ("*.example.com",)),)
    assert s.permit_address_sharing and s.permit_port_sharing
    assert s.http2_max_streams_per_connection == 1000
    a = c.authn
    assert a.kubeconfig == "/authn" and a.skip_lookup and a.tolerate_lookup_failure
    assert a.token_webhook_cache_ttl == 60.0
    assert a.client_ca_file == "/client-ca.crt"
    assert a.requestheader_client_ca_file == "/front-proxy-ca.crt"
    assert a.requestheader_allowed_names == ("front-proxy-client",)
    assert a.requestheader_username_headers == ("X-Remote-User",)
    assert a.requestheader_group_headers == ("X-Remote-Group",)
    assert a.requestheader_uid_headers == ("X-Remote-Uid",)
    assert a.requestheader_extra_headers_prefix == ("X-Remote-Extra-",)
    z = c.authz
    assert z.kubeconfig == "/authz"
    assert z.always_allow_paths == ("/healthz", "/metrics")
    assert (z.cache_authorized_ttl, z.cache_unauthorized_ttl) == (20.0, 5.0)
    assert c.authn_kubeconfig == "/authn" and c.authz_kubeconfig == "/authz"
    f = c.features
    assert f.profiling and f.contention_profiling and f.debug_socket_path == "/tmp/debug.sock"
    lg = c.logging
    assert lg.format == "json" and lg.verbosity == 4
    assert lg.vmodule == (("scraper", 5), ("api*", 2))
    assert lg.split_stream is True and lg.info_buffer_size == 1 << 20
    assert lg.flush_frequency == 10.0
    # Everything that means nothing here is reported, once each, by upstream name.
    assert set(c.ignored_flags) == {n for n in UPSTREAM_FLAGS if n.startswith("audit-")} | {
        "contention-profiling",
        "debug-socket-path",
        "profiling",
        "http2-max-streams-per-connection",
        "log-flush-frequency",
        "log-json-info-buffer-size",
        "log-text-info-buffer-size",
    }
    assert len(c.ignored_flags) == len(set(c.ignored_flags))


def test_defaults_match_upstream() -> None:
    c = parse_args([])
    assert c == validate(Config())
    assert c.metric_resolution == 60.0
    assert c.kubeconfig is None
    assert c.kubelet.port == 10250
    assert c.kubelet.preferred_address_types == (
        "Hostname",
        "InternalDNS",
        "InternalIP",
        "ExternalDNS",
        "ExternalIP",
    )
    assert c.kubelet.request_timeout == 10.0
    assert not (c.kubelet.insecure_tls or c.kubelet.completely_insecure)
    assert c.kubelet.use_node_status_port is False
    assert c.kubelet.node_selector == ""
    assert c.kubelet.scheme == "https" and c.kubelet.verify_tls and c.kubelet.send_credentials
    assert c.serving.bind_address == "0.0.0.0"
    assert c.serving.secure_port == 443
    assert c.serving.cert_dir == "apiserver.local.config/certificates"
    assert c.serving.self_signed
    assert c.serving.openssl_ciphers() is None and c.serving.ssl_min_version is None
    assert c.authn.token_webhook_cache_ttl == 10.0
    assert c.authn.requestheader_username_headers == ("x-remote-user",)
    assert c.authn.requestheader_group_headers == ("x-remote-group",)
    assert c.authn.requestheader_extra_headers_prefix == ("x-remote-extra-",)
    assert c.authn.requestheader_uid_headers == ()
    assert c.authn.skip_lookup is False and c.authn.tolerate_lookup_failure is False
    assert c.authz.always_allow_paths == ("/healthz", "/readyz", "/livez")
    assert c.authz.always_allow_groups == ("system:masters",)
    assert (c.authz.cache_authorized_ttl, c.authz.cache_unauthorized_ttl) == (10.0, 10.0)
    assert c.features.profiling is True
    assert c.logging.format == "text" and c.logging.verbosity == 0
    assert c.logging.flush_frequency == 5.0
    assert c.ignored_flags == () and c.warnings == ()


def test_config_is_frozen() -> None:
    c = parse_args([])
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.metric_resolution = 1.0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.kubelet.port = 1  # type: ignore[misc]


# --- Go value syntax ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("15s", 15.0),
        ("1m30s", 90.0),
        ("500ms", 0.5),
        ("1h", 3600.0),
        ("2h45m", 9900.0),
        ("1.5s", 1.5),
        (".5s", 0.5),
        ("1.s", 1.0),
        ("0", 0.0),
        ("0s", 0.0),
        ("-1.5h", -5400.0),
        ("+10s", 10.0),
        ("100us", 1e-4),
        ("100µs", 1e-4),
        ("100μs", 1e-4),
        ("250ns", 2.5e-7),
        ("1h1m1s1ms", 3661.001),
    ],
)
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds, abs=1e-12)


@pytest.mark.parametrize("text", ["", "15", "s", "1x", "1.5", "1d", "-", ".s", "1s2", "1 s", "ms"])
def test_bad_go_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)
    with pytest.raises(UsageError, match=re.escape('for "--metric-resolution" flag')):
        parse_args([f"--metric-resolution={text}"])


@pytest.mark.parametrize(
    ("text", "value"), [("10", 10), ("0x10", 16), ("010", 8), ("0o10", 8), ("+7", 7), ("1_0", 10)]
)
def test_go_integers(text: str, value: int) -> None:
    assert parse_int(text) == value


@pytest.mark.parametrize("flag", ["--kubelet-port=ten", "--kubelet-port=1.5", "--secure-port="])
def test_bad_integers(flag: str) -> None:
    with pytest.raises(UsageError, match="invalid argument"):
        parse_args([flag])


def test_booleans_take_go_spellings_and_never_the_next_argument() -> None:
    for text, value in [("true", True), ("1", True), ("T", True), ("false", False), ("0", False)]:
        assert parse_args([f"--kubelet-insecure-tls={text}"]).kubelet.insecure_tls is value
    assert parse_args(["--kubelet-insecure-tls"]).kubelet.insecure_tls is True
    with pytest.raises(UsageError, match="invalid argument"):
        parse_args(["--kubelet-insecure-tls=yes"])
    # pflag: a bare boolean does not consume "false"; it becomes a stray argument.
    with pytest.raises(UsageError, match="unexpected argument 'false'"):
        parse_args(["--kubelet-insecure-tls", "false"])
    # --profiling defaults to true and can be turned off.
    assert parse_args(["--profiling=false"]).features.profiling is False


def test_shorthands() -> None:
    for argv in (["-v=3"], ["-v", "3"], ["-v3"], ["--v=3"], ["--v", "3"]):
        assert parse_args(argv).logging.verbosity == 3, argv
    for argv in (["-l", "a=b,c!=d"], ["-la=b,c!=d"], ["-l=a=b,c!=d"], ["--node-selector=a=b,c!=d"]):
        assert parse_args(argv).kubelet.node_selector == "a=b,c!=d", argv
    with pytest.raises(UsageError, match="unknown shorthand flag: 'k' in -kubeconfig"):
        parse_args(["-kubeconfig=/x"])  # pflag has no single-dash long flags
    with pytest.raises(UsageError, match="flag needs an argument"):
        parse_args(["-v"])
    with pytest.raises(UsageError, match="invalid argument"):
        parse_args(["-v=-1"])


def test_string_lists_are_csv_and_repeatable() -> None:
    c = parse_args(
        [
            "--kubelet-preferred-address-types=InternalIP",
            "--kubelet-preferred-address-types=Hostname",
        ]
    )
    assert c.kubelet.preferred_address_types == ("InternalIP", "Hostname")  # repeats append
    c = parse_args(["--requestheader-allowed-names", 'a,"b,c",d'])
    assert c.authn.requestheader_allowed_names == ("a", "b,c", "d")
    c = parse_args(["--authorization-always-allow-paths="])
    assert c.authz.always_allow_paths == ()
    with pytest.raises(UsageError, match="comma-separated"):
        parse_args(['--requestheader-allowed-names=a,"b'])


def test_scalars_last_one_wins() -> None:
    assert parse_args(["--kubelet-port=1", "--kubelet-port=2"]).kubelet.port == 2


def test_sni_cert_keys_repeat() -> None:
    c = parse_args(
        ["--tls-sni-cert-key=a.crt,a.key", "--tls-sni-cert-key", "b.crt,b.key:b.io,*.b.io"]
    )
    assert c.serving.sni_cert_keys == (
        SNICertKey("a.crt", "a.key", ()),
        SNICertKey("b.crt", "b.key", ("b.io", "*.b.io")),
    )
    with pytest.raises(UsageError, match="certfile,keyfile"):
        parse_args(["--tls-sni-cert-key=only-one-file"])


def test_vmodule_and_log_format_values() -> None:
    assert parse_args(["--vmodule=a=1,b*=3"]).logging.vmodule == (("a", 1), ("b*", 3))
    with pytest.raises(UsageError, match="pattern=N"):
        parse_args(["--vmodule=a"])
    with pytest.raises(UsageError, match="pattern=N"):
        parse_args(["--vmodule=a=x"])
    with pytest.raises(UsageError, match="unsupported log format"):
        parse_args(["--logging-format=xml"])
    # Split stream follows the chosen format's flag only.
    assert parse_args(["--log-json-split-stream"]).logging.split_stream is False
    assert parse_args(["--log-text-split-stream"]).logging.split_stream is True


def test_unknown_flags_and_positionals() -> None:
    with pytest.raises(UsageError, match="unknown flag: --no-such-flag"):
        parse_args(["--no-such-flag"])
    with pytest.raises(UsageError, match="flag needs an argument: --kubeconfig"):
        parse_args(["--kubeconfig"])
    with pytest.raises(UsageError, match="unexpected argument 'serve'"):
        parse_args(["serve"])
    with pytest.raises(UsageError, match="unexpected argument '--kubelet-port=1'"):
        parse_args(["--", "--kubelet-port=1"])
    with pytest.raises(UsageError, match="bad flag syntax"):
        parse_args(["---kubelet-port=1"])


def test_underscores_and_dashes_are_the_same() -> None:
    assert parse_args(["--kubelet_port=1234"]).kubelet.port == 1234
    c = parse_args(["--logtostderr=false", "--log-dir=/var/log", "--v=1"])
    assert c.ignored_flags == ("logtostderr", "log_dir")


def test_bad_ip() -> None:
    with pytest.raises(UsageError, match='for "--bind-address" flag'):
        parse_args(["--bind-address=not-an-ip"])
    assert parse_args(["--bind-address=::"]).serving.bind_address == "::"


# --- validation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--kubelet-certificate-authority=/ca", "--kubelet-insecure-tls"],
            "Cannot use both --kubelet-certificate-authority and --kubelet-insecure-tls",
        ),
        (
            ["--kubelet-client-key=/k"],
            "Need both --kubelet-client-key and --kubelet-client-certificate",
        ),
        (
            ["--kubelet-client-certificate=/c"],
            "Need both --kubelet-client-key and --kubelet-client-certificate",
        ),
        (
            [
                "--kubelet-client-key=/k",
                "--kubelet-client-certificate=/c",
                "--deprecated-kubelet-completely-insecure",
            ],
            "Cannot use both --kubelet-client-key and --deprecated-kubelet-completely-insecure",
        ),
        (
            [
                "--kubelet-client-key=/k",
                "--kubelet-client-certificate=/c",
                "--deprecated-kubelet-completely-insecure",
            ],
            "Cannot use both --kubelet-client-certificate and "
            "--deprecated-kubelet-completely-insecure",
        ),
        (
            ["--kubelet-insecure-tls", "--deprecated-kubelet-completely-insecure"],
            "Cannot use both --kubelet-insecure-tls and --deprecated-kubelet-completely-insecure",
        ),
        (
            ["--kubelet-certificate-authority=/ca", "--deprecated-kubelet-completely-insecure"],
            "Cannot use both --kubelet-certificate-authority and "
            "--deprecated-kubelet-completely-insecure",
        ),
        (
            ["--kubelet-certificate-authority=/ca", "--kubelet-certificate-authority-text=PEM"],
            "Cannot use both --kubelet-certificate-authority and "
            "--kubelet-certificate-authority-text",
        ),
        (
            ["--tls-cert-file=/c"],
            "--tls-cert-file and --tls-private-key-file must be given together",
        ),
        (["--tls-min-version=VersionTLS14"], "unknown TLS version"),
        (["--tls-cipher-suites=TLS_NOT_A_SUITE"], "unsupported cipher suite(s) TLS_NOT_A_SUITE"),
        (
            [
                "--tls-min-version=VersionTLS13",
                "--tls-cipher-suites=TLS_RSA_WITH_AES_128_GCM_SHA256",
            ],
            "--tls-cipher-suites cannot be used with --tls-min-version=VersionTLS13",
        ),
        (["--secure-port=70000"], "--secure-port 70000 must be between 0 and 65535"),
        (["--kubelet-port=0"], "--kubelet-port 0 must be between 1 and 65535"),
        (["--kubelet-preferred-address-types="], "must name at least one address type"),
        (["-l", "a in ("], "--node-selector=a in (: unable to parse requirement"),
        (["--node-selector=role=worker,=x"], "--node-selector=role=worker,=x: "),
        (["--metric-resolution=500ms"], "at least 1s, but value 500ms provided"),
        (["--kubelet-request-timeout=0s"], "kubelet-request-timeout should be a positive duration"),
        (["--authorization-always-allow-paths=healthz"], "must start with '/'"),
        (["--authorization-always-allow-paths=/a*b"], "only allowed at the end"),
        (["--authentication-token-webhook-cache-ttl=-1s"], "must not be negative"),
    ],
)
def test_invalid_configurations(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_args(argv)
    assert message in info.value.errors or any(message in e for e in info.value.errors), (
        info.value.errors
    )
    assert "\n" not in str(info.value)


def test_all_problems_are_reported_together() -> None:
    with pytest.raises(ConfigError) as info:
        parse_args(["--kubelet-client-key=/k", "--kubelet-port=0", "--metric-resolution=0s"])
    assert len(info.value.errors) == 3


def test_completely_insecure_alone_is_plain_http_without_credentials() -> None:
    k = parse_args(["--deprecated-kubelet-completely-insecure"]).kubelet
    assert (k.scheme, k.verify_tls, k.send_credentials) == ("http", False, False)
    k = parse_args(["--kubelet-insecure-tls"]).kubelet
    assert (k.scheme, k.verify_tls, k.send_credentials) == ("https", False, True)


def test_short_resolution_warns_and_caps_the_timeout() -> None:
    c = parse_args(["--metric-resolution=5s"])
    assert c.metric_resolution == 5.0
    assert c.kubelet.request_timeout == pytest.approx(4.5)
    assert any("under 10s" in w for w in c.warnings)
    assert any("capped to 4.5s" in w for w in c.warnings)

    c = parse_args(["--metric-resolution=1s"])
    assert c.kubelet.request_timeout == pytest.approx(0.9)

    # 10 s is fine by upstream's rule, but a 10 s timeout is above 90% of it: capped, no warning
    # about the resolution itself.
    c = parse_args(["--metric-resolution=10s"])
    assert c.kubelet.request_timeout == pytest.approx(9.0)
    assert len(c.warnings) == 1 and "capped to 9s" in c.warnings[0]

    c = parse_args(["--metric-resolution=15s", "--kubelet-request-timeout=3s"])
    assert c.kubelet.request_timeout == 3.0 and c.warnings == ()


def test_unknown_address_types_only_warn() -> None:
    c = parse_args(["--kubelet-preferred-address-types=InternalIP,Bogus"])
    assert c.kubelet.preferred_address_types == ("InternalIP", "Bogus")
    assert any("Bogus" in w for w in c.warnings)


def test_cipher_suites_map_to_openssl_names() -> None:
    c = parse_args(
        [
            "--tls-cipher-suites=TLS_AES_128_GCM_SHA256,TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,"
            "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305,TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256"
        ]
    )
    ciphers = c.serving.openssl_ciphers()
    assert ciphers == "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-CHACHA20-POLY1305"
    ssl.create_default_context().set_ciphers(ciphers)  # OpenSSL knows every name


# --- --help, --version, --dry-run, main ---------------------------------------------------


def test_help_is_grouped_like_upstream(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    positions = [text.index(f"\n{title}:\n") for title in UPSTREAM_GROUPS]
    assert positions == sorted(positions)
    for name in UPSTREAM_FLAGS:
        assert re.search(rf"--{re.escape(name)}\b", text), name
    assert "-l, --node-selector string" in text
    assert "-v, --v Level" in text
    flat = " ".join(text.split())  # help text is wrapped
    assert "(upstream requires 10s). (default 1m0s)" in flat  # --metric-resolution
    assert "(default [Hostname,InternalDNS,InternalIP,ExternalDNS,ExternalIP])" in flat
    assert "--logtostderr" not in text  # hidden klog flags
    assert main(["-h"]) == 0
    # Flags inside a group are sorted like pflag's.
    group = text.split("\nKubelet client flags:\n\n")[1].split("\n\n")[0]
    names = re.findall(r"^(?:  -\w, |      )--([\w-]+)", group, re.M)
    assert names == sorted(names) and len(names) == 11


def test_help_wins_over_bad_values(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--metric-resolution=1ms", "--help"]) == 0
    assert "Metrics server flags" in capsys.readouterr().out


def test_usage_fits_the_width() -> None:
    for line in usage(width=100).splitlines():
        # Only unbreakable words (a default list) may overflow.
        assert len(line) <= 100 or " " not in line.strip()[-40:], line


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"v{__version__}"
    assert main(["--version", "--kubelet-client-key=/x"]) == 0  # like upstream: before validation


def test_dry_run_prints_the_effective_config(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["--dry-run", "--metric-resolution=2s", "--profiling=false", "-l", "x=y"])
    assert rc == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert out["metric_resolution"] == 2.0
    assert out["kubelet"]["request_timeout"] == pytest.approx(1.8)
    assert out["kubelet"]["node_selector"] == "x=y"
    assert out["features"]["profiling"] is False
    assert out["ignored_flags"] == ["profiling"]
    assert len(out["warnings"]) == 2
    assert captured.err == ""


def test_dry_run_does_not_need_the_files(capsys: pytest.CaptureFixture[str]) -> None:
    """Deployment tests validate manifests naming files that only exist in the pod."""
    assert main(["--dry-run", "--tls-cert-file=/nope.crt", "--tls-private-key-file=/nope.key"]) == 0
    assert json.loads(capsys.readouterr().out)["serving"]["self_signed"] is False


def test_usage_errors_exit_2_on_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--no-such-flag"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("Error: unknown flag: --no-such-flag")


def test_invalid_configuration_exits_1_on_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--kubelet-insecure-tls", "--deprecated-kubelet-completely-insecure"]) == 1
    err = capsys.readouterr().err
    assert err == (
        "Error: Cannot use both --kubelet-insecure-tls and "
        "--deprecated-kubelet-completely-insecure\n"
    )


def test_missing_files_stop_the_start(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    called: list[Config] = []
    _fake_module(monkeypatch, "kubemetrics.app", run=called.append)
    ca = tmp_path / "ca.crt"
    assert main([f"--kubelet-certificate-authority={ca}", f"--kubeconfig={tmp_path}"]) == 1
    err = capsys.readouterr().err
    assert f"--kubelet-certificate-authority: {ca}: no such file" in err
    assert f"--kubeconfig: {tmp_path}: not a regular file" in err
    assert called == []


def _fake_module(monkeypatch: pytest.MonkeyPatch, name: str, **attrs: object) -> None:
    module = types.ModuleType(name)
    for key, value in attrs.items():
        setattr(module, key, value)
    monkeypatch.setitem(sys.modules, name, module)


@pytest.mark.usefixtures("restore_root_logger")
def test_main_hands_the_config_to_the_app_and_logs_notes_once(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    received: list[Config] = []

    def run(config: Config) -> int:
        received.append(config)
        logging.getLogger("kubemetrics.app").log(logging.INFO - 2, "at V(2)")
        logging.getLogger("kubemetrics.app").log(logging.INFO - 3, "at V(3)")
        return 0

    _fake_module(monkeypatch, "kubemetrics.app", run=run)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\n")
    rc = main(
        [
            f"--kubeconfig={kubeconfig}",
            "--metric-resolution=5s",
            "--audit-log-path=-",
            "--audit-log-maxage=3",
            "-v=2",
        ]
    )
    assert rc == 0
    assert len(received) == 1 and received[0].kubeconfig == str(kubeconfig)
    err = capsys.readouterr().err
    assert err.count("Flag --audit-log-path has no effect") == 1
    assert err.count("Flag --audit-log-maxage has no effect") == 1
    assert re.search(r"^W\d{4} .*main\.py:\d+\] --metric-resolution=5s is under 10s", err, re.M)
    assert "capped to 4.5s" in err
    assert "at V(2)" in err and "at V(3)" not in err


def test_main_passes_the_app_exit_code(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_module(monkeypatch, "kubemetrics.app", run=lambda config: 3)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        assert main([]) == 3
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def test_demo_subcommand_is_delegated(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []

    def demo_main(argv: list[str]) -> int:
        seen.append(argv)
        return 0

    _fake_module(monkeypatch, "kubemetrics.demo", main=demo_main)
    assert main(["demo", "--nodes=5"]) == 0
    assert seen == [["--nodes=5"]]


def test_parse_reports_the_one_shot_actions() -> None:
    assert parse(["--dry-run"]).dry_run is True
    assert parse(["--version"]).version is True
    assert parse([]).help is False


def test_listener_limit_flags() -> None:
    """The serving limits land in the config; kube-apiserver's values are the defaults."""
    default = parse_args([]).serving
    assert (default.read_header_timeout, default.idle_timeout, default.request_timeout) == (
        32.0,
        90.0,
        60.0,
    )
    assert (default.max_header_bytes, default.max_requests_inflight) == (1 << 20, 400)
    assert default.max_connections == 2048
    s = parse_args(
        [
            "--max-connections=100",
            "--read-header-timeout=2s",
            "--idle-timeout=3s",
            "--request-timeout=4s",
            "--max-header-bytes=64Ki",
            "--max-requests-inflight=0",
        ]
    ).serving
    assert (s.max_connections, s.read_header_timeout, s.idle_timeout) == (100, 2.0, 3.0)
    assert (s.request_timeout, s.max_header_bytes, s.max_requests_inflight) == (4.0, 65536, 0)
    for bad in (
        "--max-connections=0",
        "--read-header-timeout=0s",
        "--idle-timeout=-1s",
        "--request-timeout=0s",
        "--max-header-bytes=10",
        "--max-requests-inflight=-1",
    ):
        with pytest.raises(ConfigError):
            parse_args([bad])


# --- sharding -------------------------------------------------------------------------------

POD_ENV = {
    "POD_NAME": "metrics-server-7c9-abcde",
    "POD_NAMESPACE": "kube-system",
    "POD_IP": "10.1.2.3",
}


def test_sharding_is_off_by_default_and_ignores_the_pod_environment() -> None:
    c = parse_args([], POD_ENV)
    assert not c.sharding.enabled
    assert c.sharding.mode == "none" and c.sharding.lease_duration == 15.0


def test_sharding_reads_the_downward_api_and_flags_override_it() -> None:
    c = parse_args(["--sharding=lease"], POD_ENV)
    assert c.sharding.enabled
    assert (c.sharding.pod_name, c.sharding.pod_namespace, c.sharding.pod_ip) == (
        "metrics-server-7c9-abcde",
        "kube-system",
        "10.1.2.3",
    )
    assert c.sharding.group == "kubemetrics"
    c = parse_args(
        [
            "--sharding=lease",
            "--shard-pod-name=a",
            "--shard-pod-namespace=monitoring",
            "--shard-pod-ip=fd00::1",
            "--shard-lease-duration=6s",
            "--shard-group=blue",
        ],
        POD_ENV,
    )
    s = c.sharding
    assert (s.pod_name, s.pod_namespace, s.pod_ip, s.lease_duration, s.group) == (
        "a",
        "monitoring",
        "fd00::1",
        6.0,
        "blue",
    )


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--sharding=leases"], POD_ENV, "--sharding: unknown mode 'leases'"),
        (["--sharding=lease"], {}, "set POD_NAME or --shard-pod-name"),
        (["--sharding=lease"], {**POD_ENV, "POD_IP": ""}, "set POD_IP or --shard-pod-ip"),
        (["--sharding=lease"], {**POD_ENV, "POD_NAMESPACE": ""}, "set POD_NAMESPACE"),
        (["--sharding=lease", "--shard-pod-ip=10.0.0"], POD_ENV, "is not an IP address"),
        (["--sharding=lease", "--shard-pod-name=Bad_Name"], POD_ENV, "not a valid Lease name"),
        (["--sharding=lease", "--shard-pod-namespace=a.b"], POD_ENV, "not a valid namespace"),
        (["--sharding=lease", "--shard-group=a b"], POD_ENV, "not a valid label value"),
        (["--sharding=lease", "--shard-lease-duration=2s"], POD_ENV, "at least 3s"),
    ],
)
def test_invalid_sharding(argv: list[str], env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_args(argv, env)
