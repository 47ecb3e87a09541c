"""``ipai-ops report baseline``: completion/error/cancel rates, latencies, failure codes."""

from __future__ import annotations

import argparse
import sys

import psycopg2.errors

from ipai_ops.cli import EXIT_USAGE, CliError


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
    base.set_defaults(handler=cmd_baseline)


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
    text = baseline.render_json(report) if args.format == "json" else baseline.render_markdown(report)
    if args.output:
        try:
            with open(args.output, "w", encoding="utf-8") as handle:
                handle.write(text)
        except OSError as exc:
            raise CliError(f"cannot write {args.output}: {exc.strerror}", code=EXIT_USAGE) from None
    else:
        sys.stdout.write(text)
    return 0
