"""``ipai-ops report baseline``: completion/error/cancel rates, latencies, failure codes;
``ipai-ops report drift``: what moved beyond a threshold from the last committed baseline."""

from __future__ import annotations

import argparse
import os
import sys

import psycopg2.errors

from ipai_ops import config
from ipai_ops.cli import EXIT_CHECK_FAILED, EXIT_USAGE, CliError, emit_json, float_in, positive_int, read_json


def register(subparsers: argparse._SubParsersAction) -> None:
    report = subparsers.add_parser("report", help="reports over exported intents")
    report_sub = report.add_subparsers(dest="report_command", metavar="REPORT", required=True)
    base = report_sub.add_parser(
        "baseline",
        help="completion/error/cancel rates by intent type and source, p50/p95, top failure codes",
    )
    source = base.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--input",
        help="JSON array, {'intents': [...]} or JSON Lines of intent records ('-' for stdin)",
    )
    source.add_argument(
        "--dsn",
        help="read the intents of an Odoo database directly (ops.pulser_intents_v1; libpq DSN)",
    )
    base.add_argument("--format", choices=("markdown", "json"), default="markdown")
    base.add_argument("--output", help="write the report to this file instead of stdout")
    base.add_argument(
        "--markdown-output",
        help="also write the same report as markdown to this file (one read of the intents for both)",
    )
    base.add_argument(
        "--anonymise",
        action="store_true",
        help=f"replace client ids by stable pseudonyms keyed by ${config.IPAI_OPS_REPORT_KEY} (HMAC-SHA256), "
        "for a report that is committed or shared",
    )
    base.set_defaults(handler=cmd_baseline)

    from ipai_ops.reports import drift

    dr = report_sub.add_parser(
        "drift",
        help=f"exit 1 ({drift.FAILURE_CODE}) when a metric moved beyond a threshold from a baseline report",
    )
    dr.add_argument("--baseline", required=True, help="the last committed report (report baseline --format json)")
    dr.add_argument("--current", required=True, help="today's report, same format")
    dr.add_argument(
        "--threshold",
        type=float_in(0, low_open=True),
        default=drift.DEFAULT_THRESHOLD,
        help="relative move of a latency or of retries per intent that is drift (default %(default)s = 25%%)",
    )
    dr.add_argument(
        "--rate-threshold",
        type=float_in(0, 1, low_open=True),
        default=drift.DEFAULT_RATE_THRESHOLD,
        help="move of a rate, in points of 1, that is drift (default %(default)s = 5 points)",
    )
    dr.add_argument(
        "--min-count",
        type=positive_int,
        default=drift.DEFAULT_MIN_COUNT,
        help="finished intents (and latency samples) a scope needs in both reports (default %(default)s)",
    )
    dr.add_argument("--worse-only", action="store_true", help="flag only moves for the worse")
    dr.add_argument("--format", choices=("text", "json"), default="text")
    dr.set_defaults(handler=cmd_drift)


def cmd_baseline(args: argparse.Namespace) -> int:
    from ipai_ops.reports import baseline

    try:
        if args.dsn:
            from ipai_ops import store

            conn = store.connect(args.dsn, application_name="ipai-ops-report")
            try:
                records = baseline.load_records_from_db(conn)
            except psycopg2.errors.UndefinedTable:
                raise CliError(
                    "the database has no ops.pulser_intents_v1 view (is ipai_pulser_connector installed?)",
                    code=EXIT_USAGE,
                ) from None
            finally:
                conn.close()
        elif args.input == "-":
            records = baseline.load_records("<stdin>", text=sys.stdin.read())
        else:
            records = baseline.load_records(args.input)
    except baseline.InputError as exc:
        raise CliError(str(exc), code=EXIT_USAGE, failure_code="API.REQUEST_INVALID") from None
    report = baseline.compute(records)
    if args.anonymise:
        try:
            report = baseline.anonymise(report, os.environ.get(config.IPAI_OPS_REPORT_KEY, ""))
        except baseline.AnonymisationError as exc:
            raise CliError(f"{exc} (${config.IPAI_OPS_REPORT_KEY})", code=EXIT_USAGE) from None
    text = baseline.render_json(report) if args.format == "json" else baseline.render_markdown(report)
    if args.markdown_output:
        _write(args.markdown_output, baseline.render_markdown(report))
    if args.output:
        _write(args.output, text)
    else:
        sys.stdout.write(text)
    return 0


def _write(path: str, text: str) -> None:
    try:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror}", code=EXIT_USAGE) from None


def cmd_drift(args: argparse.Namespace) -> int:
    from ipai_ops.reports import baseline, drift

    try:
        before = drift.check_report(read_json(args.baseline, what="baseline report"), args.baseline)
        after = drift.check_report(read_json(args.current, what="current report"), args.current)
        result = drift.compare(
            before,
            after,
            threshold=args.threshold,
            rate_threshold=args.rate_threshold,
            min_count=args.min_count,
            worse_only=args.worse_only,
        )
    except baseline.InputError as exc:
        raise CliError(str(exc), code=EXIT_USAGE, failure_code="API.REQUEST_INVALID") from None
    if args.format == "json":
        emit_json(result.as_dict())
    else:
        (sys.stdout if result.ok else sys.stderr).write(drift.render_text(result, baseline_name=args.baseline))
    return 0 if result.ok else EXIT_CHECK_FAILED
