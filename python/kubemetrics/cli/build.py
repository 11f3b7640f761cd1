"""Parsed flags → a validated `Config`, and what else the command line asks for."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from kubemetrics.cli.flags import FLAGS
from kubemetrics.cli.pflag import Parsed, UsageError, scan
from kubemetrics.config import (
    AuthnConfig,
    AuthzConfig,
    Config,
    FeaturesConfig,
    KubeletConfig,
    LoggingConfig,
    ServingConfig,
    ShardingConfig,
    validate,
)


def _opt(value: str) -> str | None:
    return value or None


def build_config(p: Parsed, environ: Mapping[str, str] | None = None) -> Config:
    """The (not yet validated) Config that the parsed flags describe; `environ` (default: the
    process's) supplies what the downward API puts there (POD_NAME, POD_NAMESPACE, POD_IP)."""
    env = os.environ if environ is None else environ
    log_format = p["logging-format"]
    if log_format not in ("text", "json"):
        raise UsageError(
            f'invalid argument "{log_format}" for "--logging-format" flag: '
            'unsupported log format (use "text" or "json")'
        )
    json_logs = log_format == "json"
    return Config(
        metric_resolution=p["metric-resolution"],
        kubeconfig=_opt(p["kubeconfig"]),
        kubelet=KubeletConfig(
            port=p["kubelet-port"],
            use_node_status_port=p["kubelet-use-node-status-port"],
            preferred_address_types=tuple(p["kubelet-preferred-address-types"]),
            insecure_tls=p["kubelet-insecure-tls"],
            certificate_authority=_opt(p["kubelet-certificate-authority"]),
            certificate_authority_text=_opt(p["kubelet-certificate-authority-text"]),
            client_certificate=_opt(p["kubelet-client-certificate"]),
            client_key=_opt(p["kubelet-client-key"]),
            request_timeout=p["kubelet-request-timeout"],
            completely_insecure=p["deprecated-kubelet-completely-insecure"],
            node_selector=p["node-selector"].strip(),
        ),
        serving=ServingConfig(
            bind_address=p["bind-address"],
            secure_port=p["secure-port"],
            cert_dir=p["cert-dir"],
            tls_cert_file=_opt(p["tls-cert-file"]),
            tls_private_key_file=_opt(p["tls-private-key-file"]),
            tls_min_version=_opt(p["tls-min-version"]),
            tls_cipher_suites=tuple(s.strip() for s in p["tls-cipher-suites"] if s.strip()),
            sni_cert_keys=tuple(p["tls-sni-cert-key"]),
            http2_max_streams_per_connection=p["http2-max-streams-per-connection"],
            permit_port_sharing=p["permit-port-sharing"],
            permit_address_sharing=p["permit-address-sharing"],
            max_connections=p["max-connections"],
            read_header_timeout=p["read-header-timeout"],
            idle_timeout=p["idle-timeout"],
            request_timeout=p["request-timeout"],
            max_header_bytes=p["max-header-bytes"],
            max_requests_inflight=p["max-requests-inflight"],
        ),
        authn=AuthnConfig(
            kubeconfig=_opt(p["authentication-kubeconfig"]),
            skip_lookup=p["authentication-skip-lookup"],
            token_webhook_cache_ttl=p["authentication-token-webhook-cache-ttl"],
            tolerate_lookup_failure=p["authentication-tolerate-lookup-failure"],
            client_ca_file=_opt(p["client-ca-file"]),
            requestheader_client_ca_file=_opt(p["requestheader-client-ca-file"]),
            requestheader_allowed_names=tuple(p["requestheader-allowed-names"]),
            requestheader_username_headers=tuple(p["requestheader-username-headers"]),
            requestheader_uid_headers=tuple(p["requestheader-uid-headers"]),
            requestheader_group_headers=tuple(p["requestheader-group-headers"]),
            requestheader_extra_headers_prefix=tuple(p["requestheader-extra-headers-prefix"]),
        ),
        authz=AuthzConfig(
            kubeconfig=_opt(p["authorization-kubeconfig"]),
            always_allow_paths=tuple(p["authorization-always-allow-paths"]),
            cache_authorized_ttl=p["authorization-webhook-cache-authorized-ttl"],
            cache_unauthorized_ttl=p["authorization-webhook-cache-unauthorized-ttl"],
        ),
        features=FeaturesConfig(
            profiling=p["profiling"],
            contention_profiling=p["contention-profiling"],
            debug_socket_path=_opt(p["debug-socket-path"]),
        ),
        sharding=ShardingConfig(
            mode=p["sharding"],
            lease_duration=p["shard-lease-duration"],
            pod_name=p["shard-pod-name"] or env.get("POD_NAME", ""),
            pod_namespace=p["shard-pod-namespace"] or env.get("POD_NAMESPACE", ""),
            pod_ip=p["shard-pod-ip"] or env.get("POD_IP", ""),
            group=p["shard-group"],
        ),
        logging=LoggingConfig(
            format="json" if json_logs else "text",
            verbosity=p["v"],
            vmodule=tuple(p["vmodule"]),
            flush_frequency=p["log-flush-frequency"],
            split_stream=p["log-json-split-stream" if json_logs else "log-text-split-stream"],
            info_buffer_size=p[
                "log-json-info-buffer-size" if json_logs else "log-text-info-buffer-size"
            ],
        ),
        ignored_flags=tuple(FLAGS[k].name for k in p.set if FLAGS[k].ignored),
    )


@dataclass(frozen=True, slots=True)
class Invocation:
    """What the command line asks for: the validated config and the one-shot actions."""

    config: Config
    help: bool = False
    version: bool = False
    dry_run: bool = False


def parse(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> Invocation:
    """argv (without the program name) → Invocation. Raises UsageError or ConfigError.

    Like upstream, --help and --version win over validation errors in the other flags.
    """
    p = scan(argv, FLAGS)
    if p.positionals:
        raise UsageError(
            f"unexpected argument {p.positionals[0]!r} (kubemetrics takes only flags, "
            "or the 'demo' subcommand)"
        )
    if p["help"] or p["version"]:
        return Invocation(Config(), help=p["help"], version=p["version"])
    return Invocation(validate(build_config(p, environ)), dry_run=p["dry-run"])


def parse_args(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> Config:
    """argv → validated Config (for tests and tools). Raises UsageError or ConfigError."""
    return parse(argv, environ).config
