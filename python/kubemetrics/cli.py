"""The `kubemetrics` command: upstream metrics-server's flags → `Config`, nothing else.

Flag syntax follows spf13/pflag, which upstream uses: `--flag=value`, `--flag value`, booleans
as `--flag` or `--flag=false` (never `--flag false`), shorthands `-v=2`, `-v 2`, `-v2`,
`-l key=value`; string lists comma-separated (CSV quoting) and repeatable; durations in Go
syntax (`15s`, `1m30s`, `500ms`); `--` ends the flags. `_` and `-` in flag names are the same.

Exit codes: 0 ok (also --help, --version, --dry-run), 2 for a malformed command line (unknown
flag, bad value), 1 for a well-formed but invalid configuration (conflicts, missing files) or
a failed start. Each error is one line on stderr.
"""

from __future__ import annotations

import csv
import importlib
import ipaddress
import logging
import re
import shutil
import sys
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from kubemetrics.config import (
    DEFAULT_ADDRESS_TYPES,
    DEFAULT_ALWAYS_ALLOW_PATHS,
    DEFAULT_CERT_DIR,
    AuthnConfig,
    AuthzConfig,
    Config,
    ConfigError,
    FeaturesConfig,
    KubeletConfig,
    LoggingConfig,
    ServingConfig,
    SNICertKey,
    format_go_duration,
    missing_files,
    validate,
)

PROG = "kubemetrics"
log = logging.getLogger("kubemetrics.cli")

Kind = Literal[
    "bool", "int", "float", "string", "strings", "duration", "ip", "level", "vmodule",
    "certkey", "quantity",
]  # fmt: skip


class UsageError(ValueError):
    """The command line itself is malformed (unknown flag, unparsable value)."""


# --- value parsers (Go semantics) -------------------------------------------------------

_BOOLS = {
    **dict.fromkeys(("1", "t", "T", "TRUE", "true", "True"), True),
    **dict.fromkeys(("0", "f", "F", "FALSE", "false", "False"), False),
}
_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,  # U+00B5 micro sign
    "μs": 1e-6,  # U+03BC Greek mu
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_DURATION_PART = re.compile(r"(\d*)(?:\.(\d*))?([^\d.]*)")


def parse_bool(text: str) -> bool:
    """Go's strconv.ParseBool."""
    try:
        return _BOOLS[text]
    except KeyError:
        raise ValueError("expected a boolean (true or false)") from None


def parse_int(text: str) -> int:
    """Go's strconv.ParseInt(text, 0, 64): decimal, 0x.., 0o.., 0b.., legacy 0-prefixed octal."""
    body = text.lstrip("+-")
    if re.fullmatch(r"0[0-7_]+", body):
        text = text.replace(body, "0o" + body[1:], 1)
    try:
        value = int(text, 0)
    except ValueError:
        raise ValueError("expected an integer") from None
    if not -(2**63) <= value < 2**63:
        raise ValueError("integer out of range")
    return value


def parse_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError("expected a number") from None
    return value


def parse_duration(text: str) -> float:
    """Go's time.ParseDuration, in float seconds: `300ms`, `-1.5h`, `2h45m`, `0`."""
    s = text
    sign = 1.0
    if s[:1] in ("+", "-"):
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return 0.0
    if not s:
        raise ValueError("invalid duration (expected e.g. 15s, 1m30s, 500ms)")
    total = 0.0
    pos = 0
    while pos < len(s):
        m = _DURATION_PART.match(s, pos)
        if m is None or m.end() == pos:
            raise ValueError("invalid duration (expected e.g. 15s, 1m30s, 500ms)")
        whole, frac, unit = m.group(1), m.group(2), m.group(3)
        if not whole and not frac:
            raise ValueError("invalid duration (expected e.g. 15s, 1m30s, 500ms)")
        if not unit:
            raise ValueError("missing unit in duration (e.g. 15s, 1m30s, 500ms)")
        if unit not in _DURATION_UNITS:
            raise ValueError(f"unknown unit {unit!r} in duration (use ns, us, ms, s, m, h)")
        total += float(f"{whole or '0'}.{frac or '0'}") * _DURATION_UNITS[unit]
        pos = m.end()
    return sign * total


def parse_strings(text: str) -> list[str]:
    """pflag's StringSlice: one CSV record (so `"a,b",c` is two items); "" is empty."""
    if text == "":
        return []
    try:
        rows = list(csv.reader([text], strict=True))
    except csv.Error as e:
        raise ValueError(f"not a comma-separated list: {e}") from None
    return rows[0] if rows else []


def parse_ip(text: str) -> str:
    stripped = text.strip()
    try:
        return str(ipaddress.ip_address(stripped))
    except ValueError:
        raise ValueError("expected an IP address") from None


def parse_level(text: str) -> int:
    """klog's Level: a non-negative 32-bit integer."""
    value = parse_int(text)
    if not 0 <= value < 2**32:
        raise ValueError("expected a non-negative integer")
    return value


def parse_vmodule(text: str) -> list[tuple[str, int]]:
    """`pattern=N,...` as klog reads it; "" is empty."""
    out: list[tuple[str, int]] = []
    for item in text.split(",") if text else []:
        pattern, eq, level = item.strip().partition("=")
        if not eq or not pattern:
            raise ValueError(f"expected pattern=N, got {item!r}")
        try:
            out.append((pattern, parse_level(level)))
        except ValueError:
            raise ValueError(f"expected pattern=N with N a whole number, got {item!r}") from None
    return out


def parse_certkey(text: str) -> SNICertKey:
    """`cert,key` or `cert,key:name1,name2` (the generic apiserver's namedCertKey)."""
    files, colon, names = text.partition(":")
    parts = [p.strip() for p in files.split(",")]
    if len(parts) != 2 or not all(parts):
        raise ValueError("expected 'certfile,keyfile' optionally followed by ':name1,name2'")
    domains = tuple(n.strip() for n in names.split(",") if n.strip()) if colon else ()
    return SNICertKey(cert_file=parts[0], key_file=parts[1], names=domains)


_QUANTITY = re.compile(r"([+-]?(?:\d+\.?\d*|\.\d+))(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?\d+)?")
_QUANTITY_SCALE = {
    "": 1.0, "n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
    "P": 1e15, "E": 1e18, "Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40,
    "Pi": 2.0**50, "Ei": 2.0**60,
}  # fmt: skip


def parse_quantity(text: str) -> int:
    """A Kubernetes quantity (`512`, `1k`, `2Ki`, `5Mi`, `1e3`), rounded up to an integer."""
    m = _QUANTITY.fullmatch(text.strip())
    if m is None:
        raise ValueError("expected a quantity such as 512, 1k, 2Ki, 5Mi")
    number, suffix = m.group(1), m.group(2) or ""
    scale = 10.0 ** int(suffix[1:]) if suffix[:1] in ("e", "E") else _QUANTITY_SCALE[suffix]
    value = float(number) * scale
    if value < 0:
        raise ValueError("must not be negative")
    return int(-(-value // 1))


_PARSERS: Mapping[Kind, Callable[[str], Any]] = {
    "bool": parse_bool,
    "int": parse_int,
    "float": parse_float,
    "string": str,
    "strings": parse_strings,
    "duration": parse_duration,
    "ip": parse_ip,
    "level": parse_level,
    "vmodule": parse_vmodule,
    "certkey": parse_certkey,
    "quantity": parse_quantity,
}
_TYPE_NAMES: Mapping[Kind, str] = {
    "bool": "",
    "int": "int",
    "float": "float32",
    "string": "string",
    "strings": "strings",
    "duration": "duration",
    "ip": "ip",
    "level": "Level",
    "vmodule": "pattern=N,...",
    "certkey": "namedCertKey",
    "quantity": "quantity",
}


# --- the flag table -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Flag:
    name: str
    kind: Kind
    default: Any
    help: str
    short: str | None = None
    ignored: bool = False  # accepted for compatibility, no effect here: logged when set
    hidden: bool = False  # accepted but not listed in --help


@dataclass(frozen=True, slots=True)
class Group:
    title: str
    flags: tuple[Flag, ...]
    note: str = ""


_IGN = "Accepted for compatibility; no effect in kubemetrics."


def _table(text: str, *, hidden: bool = False) -> tuple[Flag, ...]:
    """Flags given one per line as `name kind default help...`, all ignored here.

    The default is written as it would be typed on the command line ("-" for empty).
    """
    flags = []
    for line in text.strip().splitlines():
        name, kind, default, *words = line.split()
        assert kind in _PARSERS, kind
        k: Kind = kind  # type: ignore[assignment]
        value = _PARSERS[k]("" if default == "-" else default)
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
                f"Limit of concurrent HTTP/2 streams per client connection. {_IGN} (HTTP/1.1 only)",
                ignored=True,
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


def _key(name: str) -> str:
    return name.replace("_", "-")


FLAGS: Mapping[str, Flag] = {_key(f.name): f for g in GROUPS for f in (*g.flags, _HELP)}
_SHORT: Mapping[str, Flag] = {f.short: f for f in FLAGS.values() if f.short}


# --- parsing ------------------------------------------------------------------------------


@dataclass
class Parsed:
    """Raw result of reading argv: values by flag key, which were set, positionals."""

    values: dict[str, Any] = field(default_factory=dict)
    set: list[str] = field(default_factory=list)  # flag keys, in first-seen order
    positionals: list[str] = field(default_factory=list)

    def __getitem__(self, name: str) -> Any:
        key = _key(name)
        return self.values[key] if key in self.values else FLAGS[key].default

    def was_set(self, name: str) -> bool:
        return _key(name) in self.values


def _assign(parsed: Parsed, flag: Flag, raw: str, spelled: str) -> None:
    try:
        value = _PARSERS[flag.kind](raw)
    except ValueError as e:
        raise UsageError(f'invalid argument "{raw}" for "{spelled}" flag: {e}') from None
    key = _key(flag.name)
    first = key not in parsed.values
    if first:
        parsed.set.append(key)
    if flag.kind == "strings" and not first:
        parsed.values[key] = [*parsed.values[key], *value]  # pflag: repeats append
    elif flag.kind == "certkey":
        parsed.values[key] = [*parsed.values.get(key, []), value]
    else:
        parsed.values[key] = value


def scan(argv: Sequence[str]) -> Parsed:
    """Read argv with pflag's rules; raise UsageError for anything it would reject."""
    parsed = Parsed()
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            parsed.positionals += args[i:]
            break
        if arg.startswith("--"):
            name, eq, raw = arg[2:].partition("=")
            if not name or name.startswith("-"):
                raise UsageError(f"bad flag syntax: {arg}")
            flag = FLAGS.get(_key(name))
            if flag is None:
                raise UsageError(f"unknown flag: --{name}")
            if not eq:
                if flag.kind == "bool":
                    raw = "true"
                elif i < len(args):
                    raw, i = args[i], i + 1
                else:
                    raise UsageError(f"flag needs an argument: --{name}")
            _assign(parsed, flag, raw, f"--{name}")
        elif arg.startswith("-") and len(arg) > 1:
            # Shorthands: -v=2, -v 2, -v2, -l sel; booleans may be combined (-hv=2).
            pos = 1
            while pos < len(arg):
                ch = arg[pos]
                flag = _SHORT.get(ch)
                if flag is None:
                    raise UsageError(f"unknown shorthand flag: '{ch}' in {arg}")
                rest = arg[pos + 1 :]
                if rest.startswith("="):
                    _assign(parsed, flag, rest[1:], f"-{ch}")
                    break
                if flag.kind == "bool":
                    _assign(parsed, flag, "true", f"-{ch}")
                    pos += 1
                    continue
                if rest:
                    _assign(parsed, flag, rest, f"-{ch}")
                elif i < len(args):
                    _assign(parsed, flag, args[i], f"-{ch}")
                    i += 1
                else:
                    raise UsageError(f"flag needs an argument: '{ch}' in -{ch}")
                break
        else:
            parsed.positionals.append(arg)
    return parsed


def _opt(value: str) -> str | None:
    return value or None


def build_config(p: Parsed) -> Config:
    """The (not yet validated) Config that the parsed flags describe."""
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


def parse(argv: Sequence[str]) -> Invocation:
    """argv (without the program name) → Invocation. Raises UsageError or ConfigError.

    Like upstream, --help and --version win over validation errors in the other flags.
    """
    p = scan(argv)
    if p.positionals:
        raise UsageError(
            f"unexpected argument {p.positionals[0]!r} (kubemetrics takes only flags, "
            "or the 'demo' subcommand)"
        )
    if p["help"] or p["version"]:
        return Invocation(Config(), help=p["help"], version=p["version"])
    return Invocation(validate(build_config(p)), dry_run=p["dry-run"])


def parse_args(argv: Sequence[str]) -> Config:
    """argv → validated Config (for tests and tools). Raises UsageError or ConfigError."""
    return parse(argv).config


# --- help ---------------------------------------------------------------------------------


def _default_text(flag: Flag) -> str:
    d = flag.default
    if flag.kind == "bool":
        return " (default true)" if d else ""
    if flag.kind == "duration":
        return f" (default {format_go_duration(d)})"
    if flag.kind in ("strings", "certkey"):
        return f" (default [{','.join(d)}])" if d or flag.kind == "certkey" else ""
    if flag.kind == "string":
        return f' (default "{d}")' if d else ""
    if flag.kind == "ip":
        return f" (default {d})"
    return f" (default {d})" if d else ""


def usage(width: int | None = None) -> str:
    """The --help text: grouped like upstream's, our own words."""
    cols = width or min(max(shutil.get_terminal_size((100, 24)).columns, 60), 120)
    out = [
        "kubemetrics: a drop-in replacement for the Kubernetes Metrics Server.",
        "",
        "Usage:",
        f"  {PROG} [flags]",
        f"  {PROG} demo [demo flags]    run a simulated cluster with kubemetrics (see demo --help)",
    ]
    for group in GROUPS:
        shown = sorted((f for f in group.flags if not f.hidden), key=lambda f: f.name)
        if not shown:
            continue
        out += ["", f"{group.title}:", ""]
        if group.note:
            out += [f"  {group.note}", ""]
        heads = []
        for f in shown:
            lead = f"  -{f.short}, --{f.name}" if f.short else f"      --{f.name}"
            tname = _TYPE_NAMES[f.kind]
            heads.append(f"{lead} {tname}" if tname else lead)
        col = max(len(h) for h in heads) + 3
        for head, f in zip(heads, shown, strict=True):
            text = f.help + _default_text(f)
            wrapped = textwrap.wrap(
                text, width=max(cols - col, 30), break_on_hyphens=False, break_long_words=False
            ) or [""]
            out.append(head.ljust(col) + wrapped[0])
            out += [" " * col + line for line in wrapped[1:]]
    out += ["", "  -h, --help   Show this help and exit.", ""]
    return "\n".join(out)


# --- entry point --------------------------------------------------------------------------


def _version() -> str:
    from kubemetrics import __version__

    return __version__


def _as_exit_code(result: object) -> int:
    if isinstance(result, bool) or not isinstance(result, int):
        return 0
    return result


def _log_startup_notes(config: Config) -> None:
    for warning in config.warnings:
        log.warning(warning)
    for name in config.ignored_flags:
        log.info("Flag --%s has no effect in kubemetrics; ignored", name)


def main(argv: Sequence[str] | None = None) -> int:
    """The console script: parse, set up logging, then hand the Config to the server."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["demo"]:
        # Imported lazily and by name: the demo pulls in the simulator, cli stays import-light.
        demo = importlib.import_module("kubemetrics.demo")
        return _as_exit_code(demo.main(args[1:]))
    try:
        inv = parse(args)
    except UsageError as e:
        print(f"Error: {e} (see '{PROG} --help')", file=sys.stderr)
        return 2
    except ConfigError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    if inv.help:
        print(usage())
        return 0
    if inv.version:
        print(f"v{_version()}")
        return 0
    config = inv.config
    if inv.dry_run:
        sys.stdout.write(orjson.dumps(config.to_dict(), option=orjson.OPT_INDENT_2).decode())
        sys.stdout.write("\n")
        return 0
    problems = missing_files(config)
    if problems:
        print(f"Error: {'; '.join(problems)}", file=sys.stderr)
        return 1

    from kubemetrics.logs import setup_logging

    setup_logging(config.logging)
    _log_startup_notes(config)
    try:
        app = importlib.import_module("kubemetrics.app")  # lazily: no import cycle
    except ModuleNotFoundError as e:
        if e.name != "kubemetrics.app":
            raise
        log.error("The server (kubemetrics.app) is not available in this installation")
        return 1
    try:
        return _as_exit_code(app.run(config))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
