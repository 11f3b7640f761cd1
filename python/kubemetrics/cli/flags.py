"""The flag table: every upstream metrics-server flag (and the generic apiserver and klog
families it embeds), grouped as its --help groups them, with our help text and defaults.

Flags we accept but that have no effect here are `ignored` (logged when set); the defaults
come from `kubemetrics.config` so that `Config()` equals "no flags given".
"""

from __future__ import annotations

from collections.abc import Mapping

from kubemetrics.cli.pflag import PARSERS, Flag, Group, Kind, key
from kubemetrics.config import (
    DEFAULT_ADDRESS_TYPES,
    DEFAULT_ALWAYS_ALLOW_PATHS,
    DEFAULT_CERT_DIR,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_HEADER_BYTES,
    DEFAULT_MAX_REQUESTS_INFLIGHT,
    DEFAULT_READ_HEADER_TIMEOUT,
    DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_SHARD_GROUP,
)

_IGN = "Accepted for compatibility; no effect in kubemetrics."


def _table(text: str, *, hidden: bool = False) -> tuple[Flag, ...]:
    """Flags given one per line as `name kind default help...`, all ignored here.

    The default is written as it would be typed on the command line ("-" for empty).
    """
    flags = []
    for line in text.strip().splitlines():
        name, kind, default, *words = line.split()
        assert kind in PARSERS, kind
        k: Kind = kind  # type: ignore[assignment]
        value = PARSERS[k]("" if default == "-" else default)
        flags.append(Flag(name, k, value, " ".join(words) or _IGN, ignored=True, hidden=hidden))
    return tuple(flags)


_AUDIT_FLAGS = _table(
    """
audit-log-batch-buffer-size           int      10000     Events buffered before batching.
audit-log-batch-max-size              int      1         Largest batch (batch mode).
audit-log-batch-max-wait              duration 0s        Longest wait for a partial batch.
audit-log-batch-throttle-burst        int      0         Batches sent at once when throttling.
audit-log-batch-throttle-enable       bool     false     Throttle batches (batch mode).
audit-log-batch-throttle-qps          float    0         Average batches per second (throttled).
audit-log-compress                    bool     false     Gzip rotated audit log files.
audit-log-format                      string   json      Audit line format: legacy or json.
audit-log-maxage                      int      0         Days to keep rotated audit logs.
audit-log-maxbackup                   int      0         Rotated audit logs to keep (0: no limit).
audit-log-maxsize                     int      0         Megabytes before an audit log rotates.
audit-log-mode                        string   blocking  Sending: batch, blocking, blocking-strict.
audit-log-path                        string   -         Audit log file ('-' for stdout).
audit-log-truncate-enabled            bool     false     Truncate oversized events and batches.
audit-log-truncate-max-batch-size     int      10485760  Largest batch in bytes before splitting.
audit-log-truncate-max-event-size     int      102400    Largest event in bytes before truncating.
audit-log-version                     string   audit.k8s.io/v1  API version of written events.
audit-policy-file                     string   -         Audit policy file.
audit-webhook-batch-buffer-size       int      10000     Events buffered before batching.
audit-webhook-batch-max-size          int      400       Largest batch (batch mode).
audit-webhook-batch-max-wait          duration 30s       Longest wait for a partial batch.
audit-webhook-batch-throttle-burst    int      15        Batches sent at once when throttling.
audit-webhook-batch-throttle-enable   bool     true      Throttle batches (batch mode).
audit-webhook-batch-throttle-qps      float    10        Average batches per second (throttled).
audit-webhook-config-file             string   -         Kubeconfig-format file naming the webhook.
audit-webhook-initial-backoff         duration 10s       Wait before retrying a failed request.
audit-webhook-mode                    string   batch     Sending: batch, blocking, blocking-strict.
audit-webhook-truncate-enabled        bool     false     Truncate oversized events and batches.
audit-webhook-truncate-max-batch-size int      10485760  Largest batch in bytes before splitting.
audit-webhook-truncate-max-event-size int      102400    Largest event in bytes before truncating.
audit-webhook-version                 string   audit.k8s.io/v1  API version of sent events.
"""
)

# klog's own flags, removed from Kubernetes components in 1.26 but still found in old
# manifests (and in metrics-server up to v0.6): accepted, ignored, not listed in --help.
_KLOG_FLAGS = _table(
    """
add_dir_header     bool   false
alsologtostderr    bool   false
log_backtrace_at   string -
log_dir            string -
log_file           string -
log_file_max_size  int    1800
logtostderr        bool   true
one_output         bool   false
skip_headers       bool   false
skip_log_headers   bool   false
stderrthreshold    string 2
""",
    hidden=True,
)


GROUPS: tuple[Group, ...] = (
    Group(
        "Metrics server flags",
        (
            Flag(
                "dry-run",
                "bool",
                False,
                "Parse and check the flags, print the effective configuration as JSON and exit "
                "(kubemetrics only).",
            ),
            Flag(
                "kubeconfig",
                "string",
                "",
                "Kubeconfig file for the Kubernetes API server; its credentials also authenticate "
                "to the kubelets. Empty: the in-cluster service account.",
            ),
            Flag(
                "metric-resolution",
                "duration",
                60.0,
                "Interval between kubelet scrapes, which is also the window rates are computed "
                "over. At least 1s; values under 10s are accepted with a warning because kubelets "
                "refresh their samples every 10-15s (upstream requires 10s).",
            ),
            Flag(
                "show-hidden-metrics-for-version",
                "string",
                "",
                f"Re-enable metrics hidden in the given release. {_IGN}",
                ignored=True,
            ),
            Flag("version", "bool", False, "Print the version and exit."),
        ),
    ),
    Group(
        "Kubelet client flags",
        (
            Flag(
                "deprecated-kubelet-completely-insecure",
                "bool",
                False,
                "DEPRECATED: talk plain HTTP to the kubelets, without TLS and without credentials. "
                "Almost never right: prefer --kubelet-certificate-authority, or "
                "--kubelet-insecure-tls in test clusters.",
            ),
            Flag(
                "kubelet-certificate-authority",
                "string",
                "",
                "CA bundle file that signs the kubelets' serving certificates, instead of the "
                "cluster CA from the kubeconfig.",
            ),
            Flag(
                "kubelet-certificate-authority-text",
                "string",
                "",
                "The same CA bundle given inline as PEM text.",
            ),
            Flag(
                "kubelet-client-certificate",
                "string",
                "",
                "Client certificate file presented to the kubelets (with --kubelet-client-key).",
            ),
            Flag(
                "kubelet-client-key",
                "string",
                "",
                "Private key file for --kubelet-client-certificate.",
            ),
            Flag(
                "kubelet-insecure-tls",
                "bool",
                False,
                "Skip verification of the kubelets' serving certificates (credentials are still "
                "sent). For test clusters only.",
            ),
            Flag("kubelet-port", "int", 10250, "Port the kubelets serve on."),
            Flag(
                "kubelet-preferred-address-types",
                "strings",
                list(DEFAULT_ADDRESS_TYPES),
                "Node address types to try, in order, when choosing the address of a kubelet.",
            ),
            Flag(
                "kubelet-request-timeout",
                "duration",
                10.0,
                "Time limit for one kubelet request (a Go duration such as 5s). Capped at 90% of "
                "--metric-resolution.",
            ),
            Flag(
                "kubelet-use-node-status-port",
                "bool",
                False,
                "Use the port the node reports in its status (daemonEndpoints) when set, instead "
                "of --kubelet-port.",
            ),
            Flag(
                "node-selector",
                "string",
                "",
                "Label selector restricting which nodes are scraped and served "
                "(e.g. -l role=worker,zone!=a).",
                short="l",
            ),
        ),
    ),
    Group(
        "Sharding flags (kubemetrics only)",
        (
            Flag(
                "sharding",
                "string",
                "none",
                'How replicas share the kubelets: "none" (each replica scrapes every node, as '
                'upstream) or "lease" (replicas hold Leases in their namespace, each node is '
                "scraped by one of them, and every replica serves all nodes and pods).",
            ),
            Flag(
                "shard-group",
                "string",
                DEFAULT_SHARD_GROUP,
                "Label value naming the replicas that shard together (their Leases carry "
                "kubemetrics.io/shard-group=VALUE).",
            ),
            Flag(
                "shard-lease-duration",
                "duration",
                15.0,
                "How long a replica's Lease lasts without renewal (renewed every third); a "
                "replica silent this long loses its nodes to the others.",
            ),
            Flag(
                "shard-pod-ip",
                "string",
                "",
                "Address peers reach this replica at (default: $POD_IP).",
            ),
            Flag(
                "shard-pod-name",
                "string",
                "",
                "This replica's name, and its Lease's (default: $POD_NAME).",
            ),
            Flag(
                "shard-pod-namespace",
                "string",
                "",
                "Namespace of the replicas' Leases (default: $POD_NAMESPACE).",
            ),
        ),
    ),
    Group(
        "Apiserver secure serving flags",
        (
            Flag(
                "bind-address",
                "ip",
                "0.0.0.0",
                "Address to listen on for --secure-port; 0.0.0.0 or :: listens on every interface.",
            ),
            Flag(
                "cert-dir",
                "string",
                DEFAULT_CERT_DIR,
                "Directory for the generated self-signed serving certificate; unused when "
                "--tls-cert-file and --tls-private-key-file are given.",
            ),
            Flag(
                "disable-http2-serving",
                "bool",
                False,
                f"Turn off HTTP/2 on the serving port. {_IGN} (HTTP/1.1 only)",
                ignored=True,
            ),
            Flag(
                "http2-max-streams-per-connection",
                "int",
                0,
                f"Limit of concurrent HTTP/2 streams per client connection. {_IGN} (HTTP/1.1 "
                "only, one request at a time per connection)",
                ignored=True,
            ),
            Flag(
                "idle-timeout",
                "duration",
                DEFAULT_IDLE_TIMEOUT,
                "How long a kept-alive client connection may go without a request before it is "
                "closed (kubemetrics only; kube-apiserver's fixed value).",
            ),
            Flag(
                "max-connections",
                "int",
                DEFAULT_MAX_CONNECTIONS,
                "Client connections open at once, TLS handshakes included; past it a new "
                "connection is reset as soon as it is accepted, and counted in /metrics "
                "(kubemetrics only).",
            ),
            Flag(
                "max-header-bytes",
                "quantity",
                DEFAULT_MAX_HEADER_BYTES,
                "Largest request head (request line and headers) a client may send; a larger "
                "one is answered 431 and its connection closed (kubemetrics only; "
                "kube-apiserver's fixed value).",
            ),
            Flag(
                "max-requests-inflight",
                "int",
                DEFAULT_MAX_REQUESTS_INFLIGHT,
                "Requests handled at once; past it the answer is 429 Too Many Requests with "
                "Retry-After, as kube-apiserver's flag. system:masters and the health probes "
                "are exempt. 0: no limit.",
            ),
            Flag(
                "permit-address-sharing",
                "bool",
                False,
                "Bind with SO_REUSEADDR, so the port can be re-bound at once and shared between "
                "wildcard and specific addresses.",
            ),
            Flag(
                "permit-port-sharing",
                "bool",
                False,
                "Bind with SO_REUSEPORT, so several processes can listen on the same address and "
                "port.",
            ),
            Flag(
                "read-header-timeout",
                "duration",
                DEFAULT_READ_HEADER_TIMEOUT,
                "Time a client has for the TLS handshake and, again, for each request head "
                "(from its first byte; for the first request, from the handshake); past it the "
                "connection is closed (kubemetrics only; kube-apiserver's fixed value).",
            ),
            Flag(
                "request-timeout",
                "duration",
                DEFAULT_REQUEST_TIMEOUT,
                "Longest a request may take, from its complete head to the end of its answer; "
                "past it the connection is closed. As kube-apiserver's flag.",
            ),
            Flag(
                "secure-port",
                "int",
                443,
                "Port to serve HTTPS on (the standard manifests use 10250). 0 lets the system "
                "pick a free port.",
            ),
            Flag(
                "tls-cert-file",
                "string",
                "",
                "Serving certificate file (PEM, intermediates appended). Without it a self-signed "
                "pair is generated into --cert-dir.",
            ),
            Flag(
                "tls-cipher-suites",
                "strings",
                [],
                "Cipher suites allowed for TLS 1.2 and below, by IANA name (e.g. "
                "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256). Empty: the library's secure defaults.",
            ),
            Flag(
                "tls-min-version",
                "string",
                "",
                "Lowest TLS version accepted: VersionTLS10, VersionTLS11, VersionTLS12 or "
                "VersionTLS13.",
            ),
            Flag(
                "tls-private-key-file",
                "string",
                "",
                "Private key file matching --tls-cert-file.",
            ),
            Flag(
                "tls-sni-cert-key",
                "certkey",
                [],
                "Extra certificate/key pair chosen by SNI: 'cert,key' or 'cert,key:name1,name2' "
                "(names may start with '*.'; without names, the certificate's own are used). "
                "Repeatable.",
            ),
        ),
    ),
    Group(
        "Apiserver authentication flags",
        (
            Flag(
                "authentication-kubeconfig",
                "string",
                "",
                "Kubeconfig for creating TokenReviews and reading the "
                "extension-apiserver-authentication ConfigMap. Empty: --kubeconfig / in-cluster.",
            ),
            Flag(
                "authentication-skip-lookup",
                "bool",
                False,
                "Do not read missing CA and request-header settings from the cluster's "
                "extension-apiserver-authentication ConfigMap.",
            ),
            Flag(
                "authentication-token-webhook-cache-ttl",
                "duration",
                10.0,
                "How long TokenReview answers are cached.",
            ),
            Flag(
                "authentication-tolerate-lookup-failure",
                "bool",
                False,
                "Start even when the authentication ConfigMap cannot be read (requests may then "
                "be treated as anonymous).",
            ),
            Flag(
                "client-ca-file",
                "string",
                "",
                "CA bundle for client certificates: a verified certificate authenticates as its "
                "CommonName, with its Organizations as groups.",
            ),
            Flag(
                "requestheader-allowed-names",
                "strings",
                [],
                "Client certificate CommonNames allowed to assert identities through request "
                "headers. Empty: any certificate that verifies against "
                "--requestheader-client-ca-file.",
            ),
            Flag(
                "requestheader-client-ca-file",
                "string",
                "",
                "CA bundle that the front proxy's client certificate must verify against before "
                "the identity headers are trusted.",
            ),
            Flag(
                "requestheader-extra-headers-prefix",
                "strings",
                ["x-remote-extra-"],
                "Header prefixes carrying the user's extra attributes.",
            ),
            Flag(
                "requestheader-group-headers",
                "strings",
                ["x-remote-group"],
                "Headers carrying the user's groups.",
            ),
            Flag(
                "requestheader-uid-headers",
                "strings",
                [],
                "Headers carrying the user's UID (e.g. X-Remote-Uid).",
            ),
            Flag(
                "requestheader-username-headers",
                "strings",
                ["x-remote-user"],
                "Headers carrying the user name.",
            ),
        ),
    ),
    Group(
        "Apiserver authorization flags",
        (
            Flag(
                "authorization-always-allow-paths",
                "strings",
                list(DEFAULT_ALWAYS_ALLOW_PATHS),
                "Paths served without asking the API server (exact match; a trailing '*' matches "
                "a prefix).",
            ),
            Flag(
                "authorization-kubeconfig",
                "string",
                "",
                "Kubeconfig for creating SubjectAccessReviews. Empty: --kubeconfig / in-cluster.",
            ),
            Flag(
                "authorization-webhook-cache-authorized-ttl",
                "duration",
                10.0,
                "How long 'allowed' SubjectAccessReview answers are cached.",
            ),
            Flag(
                "authorization-webhook-cache-unauthorized-ttl",
                "duration",
                10.0,
                "How long 'denied' SubjectAccessReview answers are cached.",
            ),
        ),
    ),
    Group(
        "Apiserver audit log flags",
        _AUDIT_FLAGS,
        note="kubemetrics writes no audit log: these flags are accepted and ignored.",
    ),
    Group(
        "Features flags",
        (
            Flag(
                "contention-profiling",
                "bool",
                False,
                f"Profile lock contention when profiling is on. {_IGN}",
                ignored=True,
            ),
            Flag(
                "debug-socket-path",
                "string",
                "",
                f"Unix socket for unauthenticated profiling. {_IGN}",
                ignored=True,
            ),
            Flag(
                "profiling",
                "bool",
                True,
                f"Serve Go's pprof profiles at /debug/pprof/. {_IGN}",
                ignored=True,
            ),
        ),
    ),
    Group(
        "Logging flags",
        (
            Flag(
                "log-flush-frequency",
                "duration",
                5.0,
                "Longest time a log line may stay buffered (kubemetrics writes lines at once).",
                ignored=True,
            ),
            Flag(
                "log-json-info-buffer-size",
                "quantity",
                0,
                f"[Alpha] Buffer for info lines with --log-json-split-stream. {_IGN}",
                ignored=True,
            ),
            Flag(
                "log-json-split-stream",
                "bool",
                False,
                "[Alpha] With --logging-format=json, write errors and warnings to stderr and "
                "everything else to stdout (default: all to stdout).",
            ),
            Flag(
                "log-text-info-buffer-size",
                "quantity",
                0,
                f"[Alpha] Buffer for info lines with --log-text-split-stream. {_IGN}",
                ignored=True,
            ),
            Flag(
                "log-text-split-stream",
                "bool",
                False,
                "[Alpha] With text logs, write errors and warnings to stderr and everything else "
                "to stdout (default: all to stderr).",
            ),
            Flag(
                "logging-format",
                "string",
                "text",
                'Log format: "text" (klog-style lines) or "json" (one JSON object per line).',
            ),
            Flag("v", "level", 0, "Log verbosity: higher numbers log more detail.", short="v"),
            Flag(
                "vmodule",
                "vmodule",
                [],
                "Per-file verbosity, e.g. scraper=4,reflector=2 (file name globs; text and json).",
            ),
            *_KLOG_FLAGS,
        ),
    ),
)

_HELP = Flag("help", "bool", False, "Show this help and exit.", short="h")


FLAGS: Mapping[str, Flag] = {key(f.name): f for g in GROUPS for f in (*g.flags, _HELP)}
