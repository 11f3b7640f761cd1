"""Logging: klog text lines, component-base JSON, -v / --vmodule, split streams, StateLog."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
import time
from collections.abc import Iterator

import pytest

from kubemetrics.config import LoggingConfig
from kubemetrics.logs import (
    JsonFormatter,
    KlogFormatter,
    LogThrottle,
    StateLog,
    VerbosityFilter,
    kv,
    setup_logging,
    vlevel,
)

KLOG_LINE = re.compile(
    r"^(?P<sev>[IWEF])(?P<mm>\d\d)(?P<dd>\d\d) (?P<time>\d\d:\d\d:\d\d\.\d{6}) +(?P<pid>\d+) "
    r"(?P<file>[\w.]+):(?P<line>\d+)\] (?P<rest>.*)$"
)


class Streams:
    def __init__(self) -> None:
        self.out = io.StringIO()
        self.err = io.StringIO()

    def out_lines(self) -> list[str]:
        return self.out.getvalue().splitlines()

    def err_lines(self) -> list[str]:
        return self.err.getvalue().splitlines()


_counter = 0


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    """A private logger per test, so nothing touches the root logger."""
    global _counter
    _counter += 1
    log = logging.getLogger(f"kubemetrics.test.logs{_counter}")
    log.propagate = False
    yield log
    log.handlers.clear()


def configure(log: logging.Logger, **fields: object) -> Streams:
    streams = Streams()
    config = LoggingConfig(**fields)  # type: ignore[arg-type]
    setup_logging(config, stdout=streams.out, stderr=streams.err, logger=log)
    return streams


def ours(log: logging.Logger) -> list[logging.Handler]:
    """Handlers setup_logging installed (pytest attaches its own capture handlers too)."""
    return [h for h in log.handlers if getattr(h, "_kubemetrics_handler", False)]


def record(
    level: int, msg: str, *, created: float, args: tuple[object, ...] = (), **pairs: object
) -> logging.LogRecord:
    rec = logging.LogRecord(
        "kubemetrics.scraper", level, "/src/kubemetrics/scraper.py", 42, msg, args, None
    )
    rec.created = created
    rec.process = 4242
    if pairs:
        rec.kv = pairs
    return rec


# --- text ---------------------------------------------------------------------------------


def test_klog_header_and_structured_pairs() -> None:
    created = 1764112872.345678
    line = KlogFormatter().format(
        record(logging.INFO, "Scrape failed", created=created, node="node-1", pods=3, ok=False)
    )
    t = time.localtime(created)
    expected_time = time.strftime("%H:%M:%S", t)
    assert line == (
        f"I{t.tm_mon:02d}{t.tm_mday:02d} {expected_time}.345678    4242 scraper.py:42] "
        '"Scrape failed" node="node-1" pods=3 ok=false'
    )


def test_klog_plain_messages_are_not_quoted_and_severities() -> None:
    fmt = KlogFormatter()
    for level, letter in [
        (logging.DEBUG, "I"),
        (vlevel(3), "I"),
        (logging.INFO, "I"),
        (logging.WARNING, "W"),
        (logging.ERROR, "E"),
        (logging.CRITICAL, "F"),
    ]:
        line = fmt.format(record(level, "plain text", created=0.0))
        m = KLOG_LINE.match(line)
        assert m, line
        assert m["sev"] == letter and m["rest"] == "plain text"


def test_klog_quotes_values_like_go() -> None:
    line = KlogFormatter().format(
        record(logging.INFO, 'say "hi"', created=0.0, err='a "b"\nc\\d\x01', items=["x", 2])
    )
    assert line.endswith('] "say \\"hi\\"" err="a \\"b\\"\\nc\\\\d\\x01" items=["x" 2]')
    assert "\n" not in line


def test_klog_exceptions_become_err_and_a_traceback(logger: logging.Logger) -> None:
    streams = configure(logger)
    try:
        raise ConnectionRefusedError("connect failed")
    except ConnectionRefusedError:
        logger.exception("Scrape failed", extra=kv(node="n1"))
    first, *rest = streams.err_lines()
    assert first.startswith("E")
    assert first.endswith(
        '] "Scrape failed" node="n1" err="ConnectionRefusedError: connect failed"'
    )
    assert rest and all(line.startswith("\t") for line in rest)
    assert "test_logs.py" in first  # the caller, not logs.py


# --- JSON ---------------------------------------------------------------------------------


def test_json_lines_match_component_base() -> None:
    fmt = JsonFormatter()
    entry = json.loads(fmt.format(record(vlevel(2), "Scraped", created=1.5, node="n1", pods=7)))
    assert list(entry) == ["ts", "caller", "msg", "v", "node", "pods"]
    assert entry == {
        "ts": 1.5,
        "caller": "kubemetrics/scraper.py:42",
        "msg": "Scraped",
        "v": 2,
        "node": "n1",
        "pods": 7,
    }
    info = json.loads(fmt.format(record(logging.INFO, "x", created=0.0)))
    assert info["v"] == 0
    error = json.loads(fmt.format(record(logging.ERROR, "broken", created=0.0, err="boom")))
    assert "v" not in error and error["err"] == "boom"  # zap: errors carry no verbosity
    warning = json.loads(fmt.format(record(logging.WARNING, "careful", created=0.0)))
    assert warning["v"] == 0 and warning["severity"] == "warning"


def test_json_exception_and_non_json_values(logger: logging.Logger) -> None:
    streams = configure(logger, format="json")
    try:
        raise ValueError("bad payload")
    except ValueError:
        logger.error("Parse failed", exc_info=True, extra=kv(path=__import__("pathlib").Path("/x")))
    (line,) = streams.out_lines()
    entry = json.loads(line)
    assert entry["err"] == "ValueError: bad payload"
    assert entry["path"] == "/x"
    assert entry["caller"].startswith("server/test_logs.py:")
    assert streams.err.getvalue() == ""


# --- verbosity ----------------------------------------------------------------------------


def test_v_levels(logger: logging.Logger) -> None:
    streams = configure(logger, verbosity=2)
    for n in range(5):
        logger.log(vlevel(n), "at %d", n)
    logger.debug("debug is V(10)")
    assert [line.split("] ")[1] for line in streams.err_lines()] == ["at 0", "at 1", "at 2"]


def test_default_verbosity_drops_v1(logger: logging.Logger) -> None:
    streams = configure(logger)
    logger.log(vlevel(1), "hidden")
    logger.info("shown")
    logger.warning("warned")
    assert len(streams.err_lines()) == 2


def test_vmodule_raises_one_file(logger: logging.Logger) -> None:
    streams = configure(logger, verbosity=0, vmodule=(("test_lo*", 4), ("other", 9)))
    logger.log(vlevel(4), "from this file")
    logger.log(vlevel(5), "too verbose still")
    assert [line.split("] ")[1] for line in streams.err_lines()] == ["from this file"]
    f = VerbosityFilter(1, [("scraper", 6)])
    assert f.lowest == vlevel(6)
    other = record(vlevel(3), "x", created=0.0)
    other.filename, other.pathname = "api.py", "/src/kubemetrics/api.py"
    assert f.filter(record(vlevel(6), "x", created=0.0)) and not f.filter(other)


# --- streams ------------------------------------------------------------------------------


def test_text_goes_to_stderr_and_json_to_stdout(logger: logging.Logger) -> None:
    streams = configure(logger)
    logger.info("text")
    assert streams.out.getvalue() == "" and len(streams.err_lines()) == 1
    streams = configure(logger, format="json")
    logger.info("json")
    assert streams.err.getvalue() == "" and len(streams.out_lines()) == 1
    assert len(ours(logger)) == 1  # re-configuring replaces, never stacks


def test_split_stream(logger: logging.Logger) -> None:
    for fmt in ("text", "json"):
        streams = configure(logger, format=fmt, split_stream=True)
        logger.info("info line")
        logger.warning("warning line")
        logger.error("error line")
        assert len(streams.out_lines()) == 1 and "info line" in streams.out.getvalue()
        assert len(streams.err_lines()) == 2 and "info line" not in streams.err.getvalue()


def test_setup_logging_keeps_foreign_handlers(logger: logging.Logger) -> None:
    foreign = logging.StreamHandler(io.StringIO())
    logger.addHandler(foreign)
    configure(logger)
    configure(logger)
    assert foreign in logger.handlers and len(ours(logger)) == 1


def test_defaults_use_the_process_streams(logger: logging.Logger) -> None:
    setup_logging(LoggingConfig(), logger=logger)
    (handler,) = ours(logger)
    assert isinstance(handler, logging.StreamHandler) and handler.stream is sys.stderr


# --- StateLog -----------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_state_log_one_line_per_change(logger: logging.Logger) -> None:
    streams = configure(logger)
    clock = FakeClock()
    states = StateLog(logger, clock=clock)

    assert states.ok("node-1", "healthy") is False  # was never bad: silent
    assert states.bad("node-1", "unreachable", "Failed to scrape node", err="refused") is True
    for _ in range(5):
        clock.now += 15
        assert states.bad("node-1", "unreachable", "Failed to scrape node", err="refused") is False
    assert states.state("node-1") == "unreachable"
    assert states.failing() == {"node-1": "unreachable"}
    clock.now += 15
    assert states.bad("node-1", "bad-payload", "Node sent garbage", err="line 3") is True
    clock.now += 15
    assert states.ok("node-1", "Node scrapes again") is True
    assert states.ok("node-1", "Node scrapes again") is False
    assert states.state("node-1") == StateLog.OK and states.failing() == {}

    lines = streams.err_lines()
    assert len(lines) == 3
    assert lines[0].startswith("W") and 'key="node-1" state="unreachable" err="refused"' in lines[0]
    assert lines[1].startswith("W") and 'state="bad-payload"' in lines[1]
    assert lines[2].startswith("I")
    # The healing line says what it was, how many bad attempts in that state, for how long.
    assert 'was="bad-payload" failures=1 duration="105.000s"' in lines[2]
    assert "test_logs.py" in lines[0]  # caller is the user of StateLog


def test_state_log_counts_repeats_and_forgets(logger: logging.Logger) -> None:
    streams = configure(logger)
    states = StateLog(logger, clock=FakeClock())
    for _ in range(3):
        states.bad("n", "timeout", "Timed out", level=logging.ERROR)
    states.ok("n", "Back")
    assert "failures=3" in streams.err_lines()[-1]
    assert streams.err_lines()[0].startswith("E")
    states.bad("gone", "timeout", "Timed out")
    states.forget("gone")
    assert states.ok("gone", "Back") is False
    assert states.failing() == {}
    with pytest.raises(ValueError):
        states.bad("n", StateLog.OK, "not a failure")


def test_klog_arguments_cannot_break_the_line() -> None:
    """Data in a plain message's %-arguments (a path, an API server's error text) has its
    control characters escaped, so one record is one line; the message template is code and
    keeps its own line breaks."""
    forged = 'x\nI0101 00:00:00.000000       1 forged.go:1] "pwned"\r\x1b[2K\u2028'
    line = KlogFormatter().format(
        record(
            logging.WARNING, "%s: list failed: %s (%d tries)", created=0.0, args=("pods", forged, 3)
        )
    )
    assert "\n" not in line and "\r" not in line and "\x1b" not in line and "\u2028" not in line
    assert line.endswith(
        '] pods: list failed: x\\nI0101 00:00:00.000000       1 forged.go:1] "pwned"'
        "\\r\\x1b[2K\\u2028 (3 tries)"
    )
    two = KlogFormatter().format(
        record(logging.INFO, "first\nsecond %s", created=0.0, args=("a\nb",))
    )
    assert two.endswith("] first\nsecond a\\nb")


def test_log_throttle_lets_a_burst_through_then_a_line_a_second_with_the_count() -> None:
    now = [0.0]
    t = LogThrottle(rate=1.0, burst=3, clock=lambda: now[0])
    assert [t.admit() for _ in range(5)] == [0, 0, 0, None, None]
    now[0] += 0.5
    assert t.admit() is None
    now[0] += 0.5
    assert t.admit() == 3  # the three held back since the last line
    assert t.admit() is None
    now[0] += 100.0  # a long quiet spell refills only up to the burst
    assert [t.admit() for _ in range(4)] == [1, 0, 0, None]
