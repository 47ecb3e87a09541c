"""The ``ipai-ops`` command.

Each command group lives in its own module with a ``register(subparsers)``
function; this module only wires them and turns expected failures into one
clear line and a non-zero exit (2 for usage/input errors, 1 for a failed check,
3 for an unreachable database). Tracebacks are for bugs only.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ipai_ops import __version__, config

#: Modules contributing command groups (``register(subparsers) -> None``).
COMMAND_MODULES = (
    "ipai_ops.commands.core",
    "ipai_ops.classify.cli",
    "ipai_ops.bridge.cli",
    "ipai_ops.ci.cli",
    "ipai_ops.reports.cli",
    "ipai_ops.demo.cli",
    "ipai_ops.runs.cli",
)

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3


class CliError(Exception):
    """An expected failure: printed as one line, exit ``code``."""

    def __init__(self, message: str, *, code: int = EXIT_USAGE, failure_code: str | None = None):
        super().__init__(message)
        self.exit_code = code
        self.failure_code = failure_code


def add_dsn_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dsn",
        default=None,
        help=f"PostgreSQL DSN of the ops database (env {config.IPAI_OPS_DSN}; default {config.DEFAULT_DSN})",
    )


def int_at_least(minimum: int) -> Callable[[str], int]:
    """argparse ``type=``: a whole number >= ``minimum``, else a one-line usage error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r} must be >= {minimum}")
        return value

    return parse


def float_in(
    low: float, high: float = math.inf, *, low_open: bool = False, high_open: bool = False, unit: str = ""
) -> Callable[[str], float]:
    """argparse ``type=``: a finite number in the interval (``*_open`` excludes that end)."""
    left, right = "(" if low_open else "[", ")" if high_open or high == math.inf else "]"
    suffix = f" {unit}" if unit else ""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number{suffix and ' of' + suffix}") from None
        too_low = value <= low if low_open else value < low
        too_high = value >= high if high_open else value > high
        if not math.isfinite(value) or too_low or too_high:
            if high == math.inf:
                wanted = f"{'>' if low_open else '>='} {low:g}{suffix}"
            else:
                wanted = f"in {left}{low:g}, {high:g}{right}{suffix}"
            raise argparse.ArgumentTypeError(f"{text!r} must be {wanted}")
        return value

    return parse


#: argparse ``type=`` for counts and sizes: a whole number >= 1.
positive_int = int_at_least(1)

_DURATION_RE = re.compile(r"^(\d+)\s*([smhdw])$")
_DURATION_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def duration(text: str) -> str:
    """argparse ``type=`` for ``--since``: ``15m``, ``24h``, ``7d`` -> a PostgreSQL interval (``7 days``)."""
    match = _DURATION_RE.match(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 15m, 24h or 7d")
    return f"{match.group(1)} {_DURATION_UNITS[match.group(2)]}"


def read_text(path: str | os.PathLike[str], *, what: str) -> str:
    """A UTF-8 input file (undecodable bytes replaced), ``-`` for stdin; else a one-line :class:`CliError`."""
    try:
        if str(path) == "-":
            return sys.stdin.read()
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise CliError(f"cannot read {what} {path}: {exc.strerror}") from None


def read_json(path: str | os.PathLike[str], *, what: str) -> Any:
    """:func:`read_text`, parsed as JSON; malformed JSON is a one-line :class:`CliError` with its position."""
    text = read_text(path, what=what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"{path}:{exc.lineno}:{exc.colno}: {what} is not JSON: {exc.msg}") from None


def add_format_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=("text", "json"), default="text", help="output format")


def emit_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, default=str, sort_keys=True)
    sys.stdout.write("\n")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ipai-ops",
        description="Reliability layer for Odoo shops running AI agents: registry, ops schema, bridge, CI tooling.",
    )
    parser.add_argument("--version", action="version", version=f"ipai-ops {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and name.startswith(exc.name):
                continue  # that command group is not part of this build
            raise
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    import psycopg2

    from ipai_ops.registry import RegistryError
    from ipai_ops.store import InvalidDsn, MigrationError, OpsDatabaseUnavailable, unavailable
    from ipai_ops.text import redacted_first_line

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except CliError as exc:
        prefix = f"{exc.failure_code}: " if exc.failure_code else ""
        print(f"ipai-ops: error: {prefix}{exc}", file=sys.stderr)
        return exc.exit_code
    except InvalidDsn as exc:
        print(f"ipai-ops: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (OpsDatabaseUnavailable, psycopg2.Error) as exc:
        # unreachable, or the connection went away mid-command: retry later (exit 3);
        # anything else the database answered (a missing table, bad data) is final (exit 1)
        down = unavailable(exc)
        if down is None:
            reason = redacted_first_line(exc, "database error")
            print(f"ipai-ops: error: database refused the request: {reason}", file=sys.stderr)
            return EXIT_CHECK_FAILED
        print(f"ipai-ops: error: {down.failure_code}: {down}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except MigrationError as exc:
        print(f"ipai-ops: error: MIGRATION.APPLY_FAILED: {exc}", file=sys.stderr)
        return EXIT_CHECK_FAILED
    except RegistryError as exc:
        print(f"ipai-ops: error: CI.SSOT_INVALID: the failure-mode registry is invalid:\n{exc}", file=sys.stderr)
        return EXIT_CHECK_FAILED
    except KeyboardInterrupt:
        print("ipai-ops: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    # Run through the package module, not this __main__ copy: command modules import
    # CliError from ipai_ops.cli, which must be the class main() catches.
    from ipai_ops.cli import main as _main

    sys.exit(_main())
