"""The server's configuration: frozen, typed value objects and their validation.

`kubemetrics.cli` turns upstream metrics-server flags into a `Config`; everything else reads
this module only. Durations are float seconds, file paths are `str | None` (None = not set),
lists are tuples. `validate()` is pure (no filesystem, no network); `missing_files()` is the one
check that looks at the disk, run just before the server starts.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from kubemetrics import _native

# Defaults shared with the flag table (cli.py) so `Config()` equals "no flags given".
# Code default of --kubelet-preferred-address-types (manifests: InternalIP,ExternalIP,Hostname).
DEFAULT_ADDRESS_TYPES: tuple[str, ...] = (
    "Hostname",
    "InternalDNS",
    "InternalIP",
    "ExternalDNS",
    "ExternalIP",
)
KNOWN_ADDRESS_TYPES = frozenset(DEFAULT_ADDRESS_TYPES)
DEFAULT_CERT_DIR = "apiserver.local.config/certificates"
DEFAULT_ALWAYS_ALLOW_PATHS: tuple[str, ...] = ("/healthz", "/readyz", "/livez")
# Not a flag upstream either: the generic apiserver always lets this group through.
ALWAYS_ALLOW_GROUPS: tuple[str, ...] = ("system:masters",)

MIN_RESOLUTION = 1.0  # ▲ upstream refuses anything under 10 s
RECOMMENDED_MIN_RESOLUTION = 10.0  # kubelets refresh their samples every 10–15 s
REQUEST_TIMEOUT_SHARE = 0.9  # upstream requires timeout ≤ 90 % of the resolution

# The HTTPS listener's limits (see `listener.py` and docs/DEPLOY.md, "Limits"). kube-apiserver
# fixes the first three in its Go http.Server; the next two are its generic flags' defaults.
DEFAULT_READ_HEADER_TIMEOUT = 32.0
DEFAULT_IDLE_TIMEOUT = 90.0
DEFAULT_MAX_HEADER_BYTES = 1 << 20
DEFAULT_REQUEST_TIMEOUT = 60.0
DEFAULT_MAX_REQUESTS_INFLIGHT = 400
DEFAULT_MAX_CONNECTIONS = 2048  # ours: sized in docs/DEPLOY.md

TLS_VERSIONS: Mapping[str, ssl.TLSVersion] = {
    "VersionTLS10": ssl.TLSVersion.TLSv1,
    "VersionTLS11": ssl.TLSVersion.TLSv1_1,
    "VersionTLS12": ssl.TLSVersion.TLSv1_2,
    "VersionTLS13": ssl.TLSVersion.TLSv1_3,
}

# IANA cipher-suite names Go accepts for --tls-cipher-suites, mapped to OpenSSL names.
# TLS 1.3 suites map to None: OpenSSL always enables them and Python cannot restrict them.
CIPHER_SUITES: Mapping[str, str | None] = {
    "TLS_AES_128_GCM_SHA256": None,
    "TLS_AES_256_GCM_SHA384": None,
    "TLS_CHACHA20_POLY1305_SHA256": None,
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    # Go lists these as insecure but still accepts them.
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256": "ECDHE-ECDSA-AES128-SHA256",
    "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA": "ECDHE-ECDSA-RC4-SHA",
    "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA": "ECDHE-RSA-DES-CBC3-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256": "ECDHE-RSA-AES128-SHA256",
    "TLS_ECDHE_RSA_WITH_RC4_128_SHA": "ECDHE-RSA-RC4-SHA",
    "TLS_RSA_WITH_3DES_EDE_CBC_SHA": "DES-CBC3-SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA256": "AES128-SHA256",
    "TLS_RSA_WITH_RC4_128_SHA": "RC4-SHA",
}

LogFormat = Literal["text", "json"]
ShardingMode = Literal["none", "lease"]
SHARDING_MODES: tuple[ShardingMode, ...] = ("none", "lease")
DEFAULT_SHARD_GROUP = "kubemetrics"
MIN_LEASE_DURATION = 3.0  # renewed every third: at least once a second


class ConfigError(ValueError):
    """The configuration cannot be used: flags that conflict, credentials or files that cannot
    be loaded. `errors` lists each problem, `str()` joins them on one line."""

    def __init__(self, errors: str | list[str]) -> None:
        self.errors = [errors] if isinstance(errors, str) else list(errors)
        super().__init__("; ".join(self.errors))


@dataclass(frozen=True, slots=True)
class KubeletConfig:
    """How to reach the kubelets (SPEC §2)."""

    port: int = 10250
    use_node_status_port: bool = False
    preferred_address_types: tuple[str, ...] = DEFAULT_ADDRESS_TYPES
    insecure_tls: bool = False
    certificate_authority: str | None = None  # CA file replacing the cluster CA
    certificate_authority_text: str | None = None  # the same, as PEM text (upstream v0.8)
    client_certificate: str | None = None
    client_key: str | None = None
    request_timeout: float = 10.0  # seconds; after validate(), < the metric resolution
    completely_insecure: bool = False  # plain HTTP, no credentials
    node_selector: str = ""  # label selector; "" selects every node

    @property
    def scheme(self) -> str:
        return "http" if self.completely_insecure else "https"

    @property
    def verify_tls(self) -> bool:
        """Whether the kubelet's serving certificate is verified."""
        return not (self.insecure_tls or self.completely_insecure)

    @property
    def send_credentials(self) -> bool:
        """Whether the bearer token / client certificate goes to the kubelet."""
        return not self.completely_insecure


@dataclass(frozen=True, slots=True)
class SNICertKey:
    """One --tls-sni-cert-key: a certificate/key pair and the names it serves (empty: its own)."""

    cert_file: str
    key_file: str
    names: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ServingConfig:
    """The HTTPS listener (SPEC §5)."""

    bind_address: str = "0.0.0.0"
    secure_port: int = 443  # 0: let the OS pick (tests); upstream's "off" makes no sense here
    cert_dir: str = DEFAULT_CERT_DIR
    pair_name: str = "apiserver"  # self-signed files: <cert_dir>/<pair_name>.crt/.key
    tls_cert_file: str | None = None
    tls_private_key_file: str | None = None
    tls_min_version: str | None = None  # one of TLS_VERSIONS' keys
    tls_cipher_suites: tuple[str, ...] = ()  # IANA names; empty: library defaults
    sni_cert_keys: tuple[SNICertKey, ...] = ()
    http2_max_streams_per_connection: int = 0
    permit_port_sharing: bool = False  # SO_REUSEPORT
    permit_address_sharing: bool = False  # SO_REUSEADDR
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    read_header_timeout: float = DEFAULT_READ_HEADER_TIMEOUT  # also bounds the TLS handshake
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    max_requests_inflight: int = DEFAULT_MAX_REQUESTS_INFLIGHT  # 0: no limit

    @property
    def self_signed(self) -> bool:
        """True when the serving pair must be generated into `cert_dir`."""
        return self.tls_cert_file is None

    @property
    def ssl_min_version(self) -> ssl.TLSVersion | None:
        return None if self.tls_min_version is None else TLS_VERSIONS[self.tls_min_version]

    def openssl_ciphers(self) -> str | None:
        """The TLS ≤ 1.2 suites as an OpenSSL cipher string, or None for the defaults."""
        names = [CIPHER_SUITES[s] for s in self.tls_cipher_suites]
        picked = list(dict.fromkeys(n for n in names if n is not None))
        return ":".join(picked) if picked else None


@dataclass(frozen=True, slots=True)
class AuthnConfig:
    """Delegated authentication (SPEC §5). Unset CAs come from the cluster unless skip_lookup."""

    kubeconfig: str | None = None  # None: --kubeconfig, else in-cluster
    skip_lookup: bool = False
    token_webhook_cache_ttl: float = 10.0
    tolerate_lookup_failure: bool = False
    client_ca_file: str | None = None
    requestheader_client_ca_file: str | None = None
    requestheader_allowed_names: tuple[str, ...] = ()
    requestheader_username_headers: tuple[str, ...] = ("x-remote-user",)
    requestheader_uid_headers: tuple[str, ...] = ()
    requestheader_group_headers: tuple[str, ...] = ("x-remote-group",)
    requestheader_extra_headers_prefix: tuple[str, ...] = ("x-remote-extra-",)


@dataclass(frozen=True, slots=True)
class AuthzConfig:
    """Delegated authorization (SPEC §5)."""

    kubeconfig: str | None = None  # None: --kubeconfig, else in-cluster
    always_allow_paths: tuple[str, ...] = DEFAULT_ALWAYS_ALLOW_PATHS
    always_allow_groups: tuple[str, ...] = ALWAYS_ALLOW_GROUPS
    cache_authorized_ttl: float = 10.0
    cache_unauthorized_ttl: float = 10.0


@dataclass(frozen=True, slots=True)
class FeaturesConfig:
    """Upstream's profiling switches; accepted, nothing here serves pprof."""

    profiling: bool = True
    contention_profiling: bool = False
    debug_socket_path: str | None = None


@dataclass(frozen=True, slots=True)
class ShardingConfig:
    """Active-active replicas (`--sharding=lease`): membership over Leases, one owner per node.

    `pod_name`, `pod_namespace` and `pod_ip` come from the downward API (`POD_NAME`,
    `POD_NAMESPACE`, `POD_IP`) unless the `--shard-pod-*` flags say otherwise; the Lease is
    `pod_namespace/pod_name`, and peers reach this replica at `pod_ip` on `--secure-port`.
    """

    mode: ShardingMode = "none"
    lease_duration: float = 15.0  # seconds; renewed every third of it
    pod_name: str = ""
    pod_namespace: str = ""
    pod_ip: str = ""
    group: str = DEFAULT_SHARD_GROUP  # the Leases' label value: replicas of one deployment

    @property
    def enabled(self) -> bool:
        return self.mode == "lease"


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    """Log output (component-base's flags)."""

    format: LogFormat = "text"
    verbosity: int = 0  # -v
    vmodule: tuple[tuple[str, int], ...] = ()  # (file glob, level), first match wins
    flush_frequency: float = 5.0
    split_stream: bool = False  # info → stdout, errors → stderr
    info_buffer_size: int = 0  # accepted; lines are written unbuffered


@dataclass(frozen=True, slots=True)
class Config:
    """Everything the server needs, as parsed from the command line and validated."""

    metric_resolution: float = 60.0
    kubeconfig: str | None = None  # None: in-cluster
    kubelet: KubeletConfig = field(default_factory=KubeletConfig)
    serving: ServingConfig = field(default_factory=ServingConfig)
    authn: AuthnConfig = field(default_factory=AuthnConfig)
    authz: AuthzConfig = field(default_factory=AuthzConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    sharding: ShardingConfig = field(default_factory=ShardingConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    # Flags that were set but mean nothing in kubemetrics (audit, profiling, …), by name.
    ignored_flags: tuple[str, ...] = ()
    # Adjustments and advice from validate(), to be logged once at start-up.
    warnings: tuple[str, ...] = ()

    @property
    def authn_kubeconfig(self) -> str | None:
        """Kubeconfig for TokenReviews and the authentication ConfigMap."""
        return self.authn.kubeconfig or self.kubeconfig

    @property
    def authz_kubeconfig(self) -> str | None:
        """Kubeconfig for SubjectAccessReviews."""
        return self.authz.kubeconfig or self.kubeconfig

    def to_dict(self) -> dict[str, Any]:
        """Plain data (for --dry-run's JSON), with derived values spelled out."""
        out = dataclasses.asdict(self)
        out["kubelet"]["scheme"] = self.kubelet.scheme
        out["serving"]["self_signed"] = self.serving.self_signed
        return out


def format_go_duration(seconds: float) -> str:
    """Seconds as Go prints a time.Duration: `1m0s`, `10s`, `1.5s`, `500ms`, `0s`."""
    ns = round(seconds * 1e9)
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    ns = abs(ns)
    if ns < 1_000_000_000:
        for unit, size in (("ms", 1_000_000), ("µs", 1_000), ("ns", 1)):
            if ns >= size:
                return sign + _trim(ns, size) + unit
    hours, rest = divmod(ns, 3600 * 10**9)
    minutes, rest = divmod(rest, 60 * 10**9)
    text = _trim(rest, 10**9) + "s"
    if hours or minutes:
        text = f"{minutes}m{text}"
    if hours:
        text = f"{hours}h{text}"
    return sign + text


def _trim(value: int, unit: int) -> str:
    whole, frac = divmod(value, unit)
    if not frac:
        return str(whole)
    digits = len(str(unit)) - 1
    return f"{whole}.{frac:0{digits}d}".rstrip("0")


def validate(config: Config) -> Config:
    """Check a parsed Config; return it with adjustments applied and `warnings` filled in.

    Raises ConfigError listing every problem. Conflict messages follow upstream's wording.
    """
    errors: list[str] = []
    warnings: list[str] = list(config.warnings)
    kubelet = config.kubelet
    errors += _kubelet_conflicts(kubelet)

    res = config.metric_resolution
    if res < MIN_RESOLUTION:
        errors.append(
            "metric-resolution should be a time duration at least "
            f"{format_go_duration(MIN_RESOLUTION)}, but value {format_go_duration(res)} provided"
        )
    elif res < RECOMMENDED_MIN_RESOLUTION:
        warnings.append(
            f"--metric-resolution={format_go_duration(res)} is under "
            f"{format_go_duration(RECOMMENDED_MIN_RESOLUTION)}: kubelets refresh their samples "
            "only every 10-15s, so many scrapes will return unchanged values"
        )
    if kubelet.request_timeout <= 0:
        errors.append(
            "kubelet-request-timeout should be a positive duration, but value "
            f"{format_go_duration(kubelet.request_timeout)} provided"
        )
    elif res >= MIN_RESOLUTION and kubelet.request_timeout > res * REQUEST_TIMEOUT_SHARE:
        # ▲ upstream refuses to start; a slow kubelet must never make ticks overlap, so cap.
        capped = res * REQUEST_TIMEOUT_SHARE
        warnings.append(
            f"--kubelet-request-timeout={format_go_duration(kubelet.request_timeout)} capped to "
            f"{format_go_duration(capped)} (90% of --metric-resolution={format_go_duration(res)})"
        )
        kubelet = dataclasses.replace(kubelet, request_timeout=capped)

    if not 1 <= kubelet.port <= 65535:
        errors.append(f"--kubelet-port {kubelet.port} must be between 1 and 65535, inclusive")
    if not kubelet.preferred_address_types:
        errors.append("--kubelet-preferred-address-types must name at least one address type")
    if kubelet.node_selector:
        problem = _label_selector_error(kubelet.node_selector)
        if problem is not None:
            errors.append(f"--node-selector={kubelet.node_selector}: {problem}")
    unknown = [t for t in kubelet.preferred_address_types if t not in KNOWN_ADDRESS_TYPES]
    if unknown:
        warnings.append(
            f"--kubelet-preferred-address-types: unknown type(s) {', '.join(unknown)} will never "
            f"match (known: {', '.join(DEFAULT_ADDRESS_TYPES)})"
        )

    errors += _serving_errors(config.serving)
    errors += _auth_errors(config)
    errors += _sharding_errors(config.sharding)
    if config.logging.verbosity < 0:
        errors.append("-v must be a non-negative integer")

    if errors:
        raise ConfigError(errors)
    return dataclasses.replace(config, kubelet=kubelet, warnings=tuple(warnings))


def _label_selector_error(selector: str) -> str | None:
    """Why `selector` is not a valid label selector, or None.

    A malformed --node-selector must stop the start: passed on to the API server's node
    list+watch it would be refused on every attempt, leaving a server that never becomes ready.
    The parser is the one that answers `labelSelector` queries.
    """
    try:
        _native.parse_label_selector(selector)
    except _native.SelectorError as e:
        return str(e)
    return None


def _kubelet_conflicts(k: KubeletConfig) -> list[str]:
    errors: list[str] = []
    ca_file, ca_text = bool(k.certificate_authority), bool(k.certificate_authority_text)
    cert, key = bool(k.client_certificate), bool(k.client_key)
    if ca_file and ca_text:
        errors.append(
            "Cannot use both --kubelet-certificate-authority and "
            "--kubelet-certificate-authority-text"
        )
    if ca_file and k.insecure_tls:
        errors.append("Cannot use both --kubelet-certificate-authority and --kubelet-insecure-tls")
    if ca_text and k.insecure_tls:
        errors.append(
            "Cannot use both --kubelet-certificate-authority-text and --kubelet-insecure-tls"
        )
    if key != cert:
        errors.append("Need both --kubelet-client-key and --kubelet-client-certificate")
    if k.completely_insecure:
        for flag, is_set in (
            ("--kubelet-client-key", key),
            ("--kubelet-client-certificate", cert),
            ("--kubelet-insecure-tls", k.insecure_tls),
            ("--kubelet-certificate-authority", ca_file),
            ("--kubelet-certificate-authority-text", ca_text),
        ):
            if is_set:
                errors.append(
                    f"Cannot use both {flag} and --deprecated-kubelet-completely-insecure"
                )
    return errors


def _serving_errors(s: ServingConfig) -> list[str]:
    errors: list[str] = []
    if not 0 <= s.secure_port <= 65535:
        errors.append(f"--secure-port {s.secure_port} must be between 0 and 65535, inclusive")
    try:
        ipaddress.ip_address(s.bind_address)
    except ValueError:
        errors.append(f"--bind-address: {s.bind_address!r} is not an IP address")
    if (s.tls_cert_file is None) != (s.tls_private_key_file is None):
        errors.append("--tls-cert-file and --tls-private-key-file must be given together")
    if s.tls_cert_file is None and not s.cert_dir:
        errors.append("--cert-dir must not be empty when no --tls-cert-file is given")
    if s.tls_min_version is not None and s.tls_min_version not in TLS_VERSIONS:
        errors.append(
            f"--tls-min-version: unknown TLS version {s.tls_min_version!r} "
            f"(one of {', '.join(TLS_VERSIONS)})"
        )
    bad = [c for c in s.tls_cipher_suites if c not in CIPHER_SUITES]
    if bad:
        errors.append(f"--tls-cipher-suites: unsupported cipher suite(s) {', '.join(bad)}")
    if s.tls_min_version == "VersionTLS13" and s.tls_cipher_suites:
        # Same rule as the generic apiserver: TLS 1.3 suites are not configurable.
        errors.append("--tls-cipher-suites cannot be used with --tls-min-version=VersionTLS13")
    if s.http2_max_streams_per_connection < 0:
        errors.append("--http2-max-streams-per-connection must not be negative")
    if s.max_connections < 1:
        errors.append("--max-connections must be at least 1")
    if s.max_requests_inflight < 0:
        errors.append("--max-requests-inflight must not be negative")
    if s.max_header_bytes < 1024:
        errors.append("--max-header-bytes must be at least 1Ki")
    for flag, seconds in (
        ("--read-header-timeout", s.read_header_timeout),
        ("--idle-timeout", s.idle_timeout),
        ("--request-timeout", s.request_timeout),
    ):
        if seconds <= 0:
            errors.append(
                f"{flag} should be a positive duration, but value "
                f"{format_go_duration(seconds)} provided"
            )
    return errors


def _auth_errors(config: Config) -> list[str]:
    errors: list[str] = []
    for name, ttl in (
        ("--authentication-token-webhook-cache-ttl", config.authn.token_webhook_cache_ttl),
        ("--authorization-webhook-cache-authorized-ttl", config.authz.cache_authorized_ttl),
        ("--authorization-webhook-cache-unauthorized-ttl", config.authz.cache_unauthorized_ttl),
    ):
        if ttl < 0:
            errors.append(f"{name} must not be negative")
    for path in config.authz.always_allow_paths:
        if not path.startswith("/"):
            errors.append(f"--authorization-always-allow-paths: {path!r} must start with '/'")
        elif "*" in path[:-1]:
            errors.append(
                f"--authorization-always-allow-paths: {path!r}: '*' is only allowed at the end"
            )
    return errors


# RFC 1123 subdomain (a Lease name) and label (a namespace); a label value (the group).
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?")


def _sharding_errors(s: ShardingConfig) -> list[str]:
    if s.mode not in SHARDING_MODES:
        return [f"--sharding: unknown mode {s.mode!r} (one of {', '.join(SHARDING_MODES)})"]
    if not s.enabled:
        return []
    errors: list[str] = []
    if s.lease_duration < MIN_LEASE_DURATION:
        errors.append(
            f"--shard-lease-duration must be at least {format_go_duration(MIN_LEASE_DURATION)}, "
            f"but value {format_go_duration(s.lease_duration)} provided"
        )
    if not s.pod_name:
        errors.append("--sharding=lease needs the pod name: set POD_NAME or --shard-pod-name")
    elif len(s.pod_name) > 253 or not _DNS_SUBDOMAIN.fullmatch(s.pod_name):
        errors.append(f"--shard-pod-name {s.pod_name!r} is not a valid Lease name")
    if not s.pod_namespace:
        errors.append(
            "--sharding=lease needs the pod namespace: set POD_NAMESPACE or --shard-pod-namespace"
        )
    elif len(s.pod_namespace) > 63 or not _DNS_LABEL.fullmatch(s.pod_namespace):
        errors.append(f"--shard-pod-namespace {s.pod_namespace!r} is not a valid namespace")
    if not s.pod_ip:
        errors.append("--sharding=lease needs the pod IP: set POD_IP or --shard-pod-ip")
    else:
        try:
            ipaddress.ip_address(s.pod_ip)
        except ValueError:
            errors.append(f"--shard-pod-ip: {s.pod_ip!r} is not an IP address")
    if not s.group or len(s.group) > 63 or not _LABEL_VALUE.fullmatch(s.group):
        errors.append(f"--shard-group {s.group!r} is not a valid label value")
    return errors


def missing_files(config: Config) -> list[str]:
    """Files named by flags that cannot be read, as `--flag: path: reason` messages."""
    named: list[tuple[str, str | None]] = [
        ("--kubeconfig", config.kubeconfig),
        ("--kubelet-certificate-authority", config.kubelet.certificate_authority),
        ("--kubelet-client-certificate", config.kubelet.client_certificate),
        ("--kubelet-client-key", config.kubelet.client_key),
        ("--tls-cert-file", config.serving.tls_cert_file),
        ("--tls-private-key-file", config.serving.tls_private_key_file),
        ("--authentication-kubeconfig", config.authn.kubeconfig),
        ("--client-ca-file", config.authn.client_ca_file),
        ("--requestheader-client-ca-file", config.authn.requestheader_client_ca_file),
        ("--authorization-kubeconfig", config.authz.kubeconfig),
    ]
    for sni in config.serving.sni_cert_keys:
        named += [("--tls-sni-cert-key", sni.cert_file), ("--tls-sni-cert-key", sni.key_file)]
    problems: list[str] = []
    for flag, path in named:
        if path is None:
            continue
        if not os.path.isfile(path):
            reason = "no such file" if not os.path.exists(path) else "not a regular file"
            problems.append(f"{flag}: {path}: {reason}")
        elif not os.access(path, os.R_OK):
            problems.append(f"{flag}: {path}: not readable")
    return problems
