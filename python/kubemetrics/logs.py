"""Logging like a Kubernetes component: klog text lines or component-base JSON, `-v` levels.

Text (default, to stderr)::

    I1125 23:21:12.345678   12345 scraper.py:123] "Scrape failed" node="node-1" err="timeout"

JSON (`--logging-format=json`, to stdout)::

    {"ts":1732576872.345678,"caller":"kubemetrics/scraper.py:123","msg":"Scrape failed","v":0,...}

Verbosity: klog's `V(n)` is the Python level `INFO - n` (`vlevel(n)`), so `-v=2` lets through
everything at `vlevel(2)` and below-numbered verbosities; `logging.DEBUG` is `V(10)`.
Structured pairs go in `extra=kv(node=..., err=...)`.

One record is one line, whatever the data in it (a request path with `%0A` in it cannot forge
a log line): pair values are quoted as Go quotes them, and `%`-arguments of plain messages have
their control characters escaped. Only a traceback spans lines, each indented by a tab.
Request-derived values that may be long go through `clip()`.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import sys
import time
import traceback
from collections.abc import Iterable
from dataclasses import dataclass
from typing import IO, Any, Final

import orjson

from kubemetrics.config import LoggingConfig
from kubemetrics.gostrings import go_quote

_KV_ATTR: Final = "kv"
_HANDLER_MARK: Final = "_kubemetrics_handler"


def vlevel(n: int) -> int:
    """The Python logging level of klog's V(n): INFO for 0, one lower per step."""
    return logging.INFO - n


def kv(**pairs: object) -> dict[str, Any]:
    """Structured key/value pairs for a log call: `log.info("msg", extra=kv(node=n))`."""
    return {_KV_ATTR: pairs}


def _severity(levelno: int) -> str:
    if levelno >= logging.CRITICAL:
        return "F"
    if levelno >= logging.ERROR:
        return "E"
    if levelno >= logging.WARNING:
        return "W"
    return "I"


def _verbosity(levelno: int) -> int:
    return max(0, logging.INFO - levelno)


# Control characters (tab aside) and the Unicode line breaks, as escapes: what makes a new
# line on a terminal or for a log shipper cannot come from data.
_CONTROLS = {
    **{c: f"\\x{c:02x}" for c in range(0x20) if c != 0x09},
    0x0A: "\\n",
    0x0D: "\\r",
    0x7F: "\\x7f",
    0x85: "\\u0085",
    0x2028: "\\u2028",
    0x2029: "\\u2029",
}
CLIP = 512  # characters of a request-derived value kept in a log line


def escape_controls(text: str) -> str:
    """`text` with every character that could break a log line escaped."""
    return text.translate(_CONTROLS)


def clip(text: str, limit: int = CLIP) -> str:
    """At most `limit` characters of `text` (a request path, a header), saying how much more."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}...({len(text) - limit} more)"


class _Escaped:
    """A `%s`/`%r` argument whose text has its control characters escaped."""

    __slots__ = ("value",)

    def __init__(self, value: object) -> None:
        self.value = value

    def __str__(self) -> str:
        return escape_controls(str(self.value))

    def __repr__(self) -> str:
        return escape_controls(repr(self.value))


def _safe_arg(value: object) -> object:
    return value if isinstance(value, int | float) else _Escaped(value)


def safe_message(record: logging.LogRecord) -> str:
    """The record's message with its arguments' control characters escaped (the message
    template itself is code, and may span lines on purpose)."""
    msg = str(record.msg)
    args = record.args
    if not args:
        return msg
    try:
        if isinstance(args, dict):
            return msg % {k: _safe_arg(v) for k, v in args.items()}
        return msg % tuple(_safe_arg(a) for a in args)
    except (TypeError, ValueError):
        return escape_controls(record.getMessage())


def _pairs(record: logging.LogRecord) -> dict[str, object]:
    pairs = getattr(record, _KV_ATTR, None)
    return dict(pairs) if isinstance(pairs, dict) else {}


def _text_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if value is None:
        return "<nil>"
    if isinstance(value, list | tuple):
        return "[" + " ".join(_text_value(v) for v in value) + "]"
    return go_quote(str(value))


def _exc_text(record: logging.LogRecord) -> str | None:
    if record.exc_info and record.exc_info[1] is not None:
        exc = record.exc_info[1]
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return None


class KlogFormatter(logging.Formatter):
    """`Lmmdd hh:mm:ss.uuuuuu PID file:line] msg key=value ...` with klog's quoting."""

    def format(self, record: logging.LogRecord) -> str:
        t = time.localtime(record.created)
        micros = int((record.created % 1) * 1_000_000)
        header = (
            f"{_severity(record.levelno)}{t.tm_mon:02d}{t.tm_mday:02d} "
            f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}.{micros:06d} "
            f"{record.process or 0:7d} {record.filename}:{record.lineno}] "
        )
        pairs = _pairs(record)
        err = _exc_text(record)
        if err is not None and "err" not in pairs:
            pairs["err"] = err
        # A structured message is quoted whole below; a plain one is escaped argument-wise.
        msg = record.getMessage() if pairs else safe_message(record)
        if pairs:
            # klog quotes the message of structured (InfoS/ErrorS) calls.
            line = (
                header + go_quote(msg) + "".join(f" {k}={_text_value(v)}" for k, v in pairs.items())
            )
        else:
            line = header + msg
        if record.exc_info and record.levelno >= logging.ERROR:
            tb = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
            line += "\n" + "\n".join("\t" + part for part in tb.split("\n"))
        return line


class JsonFormatter(logging.Formatter):
    """component-base's JSON lines: ts (epoch seconds), caller, msg, v (not on errors), pairs."""

    def format(self, record: logging.LogRecord) -> str:
        path = os.path.normpath(record.pathname).split(os.sep)
        entry: dict[str, object] = {
            "ts": record.created,
            "caller": f"{'/'.join(path[-2:])}:{record.lineno}",
            "msg": record.getMessage(),
        }
        if record.levelno < logging.ERROR:
            entry["v"] = _verbosity(record.levelno)
        err = _exc_text(record)
        if err is not None:
            entry["err"] = err
        for k, v in _pairs(record).items():
            entry.setdefault(k, v)
        if record.levelno >= logging.WARNING and record.levelno < logging.ERROR:
            # klog's JSON output carries no severity; keep warnings distinguishable.
            entry.setdefault("severity", "warning")
        return orjson.dumps(entry, default=str).decode()


class VerbosityFilter(logging.Filter):
    """Applies -v and --vmodule: per-file thresholds, first matching pattern wins."""

    def __init__(self, verbosity: int, vmodule: Iterable[tuple[str, int]] = ()) -> None:
        super().__init__()
        self.threshold = vlevel(verbosity)
        self.modules = tuple((pattern, vlevel(level)) for pattern, level in vmodule)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.INFO:
            return True
        threshold = self.threshold
        for pattern, level in self.modules:
            # klog matches the file name without extension, or the full path if "/" appears.
            subject = record.pathname if "/" in pattern else os.path.splitext(record.filename)[0]
            if fnmatch.fnmatchcase(subject, pattern):
                threshold = level
                break
        return record.levelno >= threshold

    @property
    def lowest(self) -> int:
        return min([self.threshold, *(level for _, level in self.modules)])


class _MaxLevel(logging.Filter):
    def __init__(self, below: int) -> None:
        super().__init__()
        self.below = below

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < self.below


def setup_logging(
    config: LoggingConfig,
    *,
    stdout: IO[str] | None = None,
    stderr: IO[str] | None = None,
    logger: logging.Logger | None = None,
) -> None:
    """Install kubemetrics' handler(s) on `logger` (root by default), replacing earlier ones.

    Text goes to stderr and JSON to stdout, like klog and component-base; with split_stream,
    info lines go to stdout and warnings/errors to stderr.
    """
    target = logging.getLogger() if logger is None else logger
    out = sys.stdout if stdout is None else stdout
    err = sys.stderr if stderr is None else stderr
    for handler in list(target.handlers):
        if getattr(handler, _HANDLER_MARK, False):
            target.removeHandler(handler)
    formatter: logging.Formatter = JsonFormatter() if config.format == "json" else KlogFormatter()
    verbosity = VerbosityFilter(config.verbosity, config.vmodule)

    handlers: list[logging.Handler] = []
    if config.split_stream:
        info = logging.StreamHandler(out)
        info.addFilter(_MaxLevel(logging.WARNING))
        problems = logging.StreamHandler(err)
        problems.setLevel(logging.WARNING)
        handlers += [info, problems]
    else:
        handlers.append(logging.StreamHandler(out if config.format == "json" else err))
    for handler in handlers:
        handler.setFormatter(formatter)
        handler.addFilter(verbosity)
        setattr(handler, _HANDLER_MARK, True)
        target.addHandler(handler)
    target.setLevel(verbosity.lowest)
    logging.captureWarnings(True)


class LogThrottle:
    """A token bucket for lines any client can cause at will (a refused token): `burst` let
    through at once, then `rate` a second; the rest are counted, and the next line let through
    says how many were held back (`admit()` returns that count, None to drop the line)."""

    def __init__(self, rate: float = 1.0, burst: int = 10, *, clock: Any = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._at = clock()
        self._held = 0

    def admit(self) -> int | None:
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens < 1.0:
            self._held += 1
            return None
        self._tokens -= 1.0
        held, self._held = self._held, 0
        return held


@dataclass
class _KeyState:
    state: str
    since: float
    repeats: int


class StateLog:
    """Logs a line per key only when its state changes, not on every repetition.

    A dead node logs once when it goes bad (and again only if the *kind* of failure
    changes), then once when it heals, with how long and how many attempts it was bad::

        states = StateLog(log)
        states.bad("node-1", "unreachable", "Failed to scrape node", err=str(e))
        states.ok("node-1", "Scraping node works again")
    """

    OK: Final = "ok"

    def __init__(self, logger: logging.Logger, *, clock: Any = time.monotonic) -> None:
        self._log = logger
        self._clock = clock
        self._keys: dict[str, _KeyState] = {}

    def bad(
        self, key: str, state: str, msg: str, *, level: int = logging.WARNING, **pairs: object
    ) -> bool:
        """Record a failure of kind `state`; log (and return True) if it differs from the last."""
        if state == self.OK:
            raise ValueError("use ok() for the healthy state")
        now = self._clock()
        current = self._keys.get(key)
        if current is not None and current.state == state:
            current.repeats += 1
            return False
        self._keys[key] = _KeyState(state, now if current is None else current.since, 1)
        self._log.log(level, msg, extra=kv(key=key, state=state, **pairs), stacklevel=2)
        return True

    def ok(self, key: str, msg: str, *, level: int = logging.INFO, **pairs: object) -> bool:
        """Record success; log (and return True) only if the key was failing."""
        current = self._keys.pop(key, None)
        if current is None:
            return False
        extra = kv(
            key=key,
            was=current.state,
            failures=current.repeats,
            duration=f"{self._clock() - current.since:.3f}s",
            **pairs,
        )
        self._log.log(level, msg, extra=extra, stacklevel=2)
        return True

    def forget(self, key: str) -> None:
        """Drop a key silently (e.g. the node was deleted)."""
        self._keys.pop(key, None)

    def state(self, key: str) -> str:
        current = self._keys.get(key)
        return self.OK if current is None else current.state

    def failing(self) -> dict[str, str]:
        """Keys currently in a bad state, with that state."""
        return {k: s.state for k, s in self._keys.items()}
