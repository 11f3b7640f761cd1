"""The `kubemetrics` command: upstream metrics-server's flags → `Config`, then the server.

Exit codes: 0 ok (also --help, --version, --dry-run), 2 for a malformed command line (unknown
flag, bad value), 1 for a well-formed but invalid configuration (conflicts, missing files) or
a failed start. Each error is one line on stderr.
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Sequence

import orjson

from kubemetrics.cli.build import parse
from kubemetrics.cli.pflag import UsageError
from kubemetrics.cli.usage import PROG, usage
from kubemetrics.config import Config, ConfigError, missing_files

log = logging.getLogger("kubemetrics.cli")


def _version() -> str:
    from kubemetrics import __version__

    return __version__


def _as_exit_code(result: object) -> int:
    if isinstance(result, bool) or not isinstance(result, int):
        return 0
    return result


def _log_startup_notes(config: Config) -> None:
    for warning in config.warnings:
        log.warning("%s", warning)
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
    from kubemetrics import app  # the server, imported only when serving

    try:
        return _as_exit_code(app.run(config))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
