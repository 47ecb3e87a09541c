"""Core commands: ``ssot``, ``db``, ``errors``, ``envelope`` (``classify`` lives in ipai_ops.classify.cli)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ipai_ops import config
from ipai_ops.cli import (
    EXIT_CHECK_FAILED,
    CliError,
    add_dsn_argument,
    add_format_argument,
    duration,
    emit_json,
    positive_int,
    read_json,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    # ssot
    ssot = subparsers.add_parser("ssot", help="the failure-mode registry (single source of truth)")
    ssot_sub = ssot.add_subparsers(dest="ssot_command", metavar="ACTION", required=True)
    check = ssot_sub.add_parser("check", help="validate the registry and every runbook; report all problems")
    check.add_argument("--registry", default=None, help=f"registry YAML (env {config.IPAI_OPS_REGISTRY})")
    check.add_argument("--repo-root", default=None, help="root that runbook paths are relative to")
    check.add_argument(
        "--strict",
        action="store_true",
        help="fail on warnings too (runbooks still holding TODO or template placeholders); CI uses it",
    )
    add_format_argument(check)
    check.set_defaults(handler=cmd_ssot_check)

    # db
    db = subparsers.add_parser("db", help="the ops schema in PostgreSQL")
    db_sub = db.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    mig = db_sub.add_parser("migrate", help="apply pending migrations (idempotent, safe to run concurrently)")
    add_dsn_argument(mig)
    mig.set_defaults(handler=cmd_db_migrate)
    st = db_sub.add_parser("status", help="applied and pending migrations")
    add_dsn_argument(st)
    add_format_argument(st)
    st.set_defaults(handler=cmd_db_status)
    ret = db_sub.add_parser(
        "retention", help="delete occurrences (and remembered webhook delivery ids) older than N days; counts stay"
    )
    add_dsn_argument(ret)
    ret.add_argument("--days", type=positive_int, required=True)
    ret.add_argument(
        "--webhook-days",
        type=positive_int,
        default=None,
        help="keep webhook delivery ids this many days instead (default: --days); a purged id is accepted again",
    )
    ret.add_argument(
        "--max-per-group",
        type=positive_int,
        default=None,
        metavar="N",
        help="also keep at most each error group's first and N most recent occurrences (storms); counts stay",
    )
    ret.add_argument(
        "--group-min-age",
        type=int,
        default=3600,
        metavar="SECONDS",
        help="with --max-per-group: only trim occurrences older than this (the senders' retry window; default 3600)",
    )
    ret.add_argument("--chunk", type=positive_int, default=10_000)
    ret.set_defaults(handler=cmd_db_retention)

    # errors
    errors = subparsers.add_parser("errors", help="read ops.agent_errors")
    err_sub = errors.add_subparsers(dest="errors_command", metavar="ACTION", required=True)
    ls = err_sub.add_parser("list", help="errors, newest first")
    add_dsn_argument(ls)
    add_format_argument(ls)
    ls.add_argument("--code")
    ls.add_argument("--status", choices=("open", "resolved", "ignored", "snoozed", "regressed", "merged"))
    ls.add_argument("--source")
    ls.add_argument("--since", type=duration, help="e.g. 1h, 24h, 7d")
    ls.add_argument("--limit", type=positive_int, default=50)
    ls.set_defaults(handler=cmd_errors_list)
    show = err_sub.add_parser("show", help="one error by id or fingerprint, with recent occurrences")
    add_dsn_argument(show)
    show.add_argument("ref")
    show.set_defaults(handler=cmd_errors_show)

    # envelope
    env = subparsers.add_parser("envelope", help="failure envelopes")
    env_sub = env.add_subparsers(dest="envelope_command", metavar="ACTION", required=True)
    val = env_sub.add_parser("validate", help="validate an envelope JSON file against the v1 schema")
    val.add_argument("file", type=Path)
    val.set_defaults(handler=cmd_envelope_validate)


# --------------------------------------------------------------------------- ssot


def cmd_ssot_check(args: argparse.Namespace) -> int:
    from ipai_ops.ssot import check

    report = check(registry_path=args.registry, repo_root=args.repo_root, strict=args.strict)
    if args.format == "json":
        emit_json(report.as_dict())
    else:
        for problem in report.problems:
            print(problem.format(), file=sys.stderr)
        if report.ok:
            checked = f"{report.codes} failure modes, {report.runbooks} runbooks and the benchmark config"
            print(f"ok: {checked} checked ({report.registry})")
        else:
            print(f"{len(report.failures)} problem(s) in {report.registry}", file=sys.stderr)
    return 0 if report.ok else EXIT_CHECK_FAILED


# --------------------------------------------------------------------------- db


def _connect(args: argparse.Namespace):
    from ipai_ops import store

    return store.connect(args.dsn)


def cmd_db_migrate(args: argparse.Namespace) -> int:
    from ipai_ops import store

    conn = _connect(args)
    try:
        applied = store.migrate(conn)
        status = store.status(conn)
    finally:
        conn.close()
    for migration in applied:
        print(f"applied {migration.version:04d}_{migration.name}")
    print(f"ops schema at version {status['head']} ({'nothing to do' if not applied else f'{len(applied)} applied'})")
    return 0


def cmd_db_status(args: argparse.Namespace) -> int:
    from ipai_ops import store

    conn = _connect(args)
    try:
        status = store.status(conn)
    finally:
        conn.close()
    if args.format == "json":
        emit_json(status)
    else:
        print(f"head {status['head']}, applied {status['applied'] or 'none'}, pending {status['pending'] or 'none'}")
    return 0 if status["at_head"] else EXIT_CHECK_FAILED


def cmd_db_retention(args: argparse.Namespace) -> int:
    from ipai_ops import store
    from ipai_ops.sdk.webhooks import purge_deliveries

    webhook_days = args.webhook_days or args.days
    if args.group_min_age < 0:
        raise CliError("--group-min-age must be >= 0 seconds")
    conn = _connect(args)
    try:
        deleted = store.purge_occurrences(conn, older_than_days=args.days, chunk=args.chunk)
        trimmed = (
            store.trim_groups(conn, keep=args.max_per_group, min_age_seconds=args.group_min_age, chunk=args.chunk)
            if args.max_per_group
            else None
        )
        forgotten = purge_deliveries(conn, older_than_days=webhook_days, chunk=args.chunk)
    finally:
        conn.close()
    print(f"deleted {deleted} occurrence(s) older than {args.days} day(s); error counts unchanged")
    if trimmed is not None:
        print(
            f"trimmed {trimmed} occurrence(s) beyond each group's first and {args.max_per_group} most recent "
            f"(older than {args.group_min_age} s); error counts unchanged"
        )
    print(f"forgot {forgotten} webhook delivery id(s) older than {webhook_days} day(s)")
    return 0


# --------------------------------------------------------------------------- errors


def _rows(cur) -> list[dict[str, Any]]:
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def cmd_errors_list(args: argparse.Namespace) -> int:
    from ipai_ops import store

    conn = _connect(args)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                store.query("list_errors"),
                {
                    "code": args.code,
                    "status": args.status,
                    "source": args.source,
                    "since": args.since,
                    "limit": args.limit,
                },
            )
            rows = _rows(cur)
    finally:
        conn.close()
    if args.format == "json":
        emit_json(rows)
        return 0
    if not rows:
        print("no errors match")
        return 0
    print(f"{'ID':>6}  {'STATUS':<9} {'COUNT':>7}  {'LAST SEEN':<20} {'CODE':<32} {'SOURCE':<14} MESSAGE")
    for r in rows:
        last = r["last_seen"].strftime("%Y-%m-%d %H:%M:%S")
        msg = (r["message"] or "").replace("\n", " ")[:60]
        print(f"{r['id']:>6}  {r['status']:<9} {r['count']:>7}  {last:<20} {r['code']:<32} {r['source']:<14} {msg}")
    return 0


def cmd_errors_show(args: argparse.Namespace) -> int:
    from ipai_ops import store

    conn = _connect(args)
    try:
        with conn, conn.cursor() as cur:
            ref_id = int(args.ref) if args.ref.isdigit() and len(args.ref) < 19 else None
            cur.execute(store.query("show_error"), {"ref": args.ref, "ref_id": ref_id})
            rows = _rows(cur)
    finally:
        conn.close()
    if not rows:
        raise CliError(f"no error with id or fingerprint {args.ref!r}", code=EXIT_CHECK_FAILED)
    emit_json(rows[0])
    return 0


# --------------------------------------------------------------------------- envelope


def cmd_envelope_validate(args: argparse.Namespace) -> int:
    from ipai_ops.envelope import envelope_errors

    data = read_json(args.file, what="envelope")
    errors = envelope_errors(data)
    for error in errors:
        print(f"{args.file}: {error}", file=sys.stderr)
    if errors:
        return EXIT_CHECK_FAILED
    print(f"{args.file}: valid failure envelope v{data.get('envelope_version')}")
    return 0
