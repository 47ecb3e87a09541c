"""``ipai-ops demo``: run the instrumented sample agent and submit sample intents."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from ipai_ops import config
from ipai_ops import demo as settings
from ipai_ops.cli import EXIT_CHECK_FAILED, EXIT_UNAVAILABLE, CliError, add_dsn_argument, emit_json


def _env(name: str, default: str = "") -> str:
    return os.environ.get(name) or default


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="a sample agent that emits real OTLP errors to the bridge and submits intents to Odoo",
        description=(
            "Runs a small agent under the OpenTelemetry SDK: its failing tasks export ERROR spans with "
            "exception events and error logs over OTLP/HTTP; then reads ops.agent_errors back and reports "
            "what arrived per failure code. Then records agent runs (ipai-ops run: tests passing, tests "
            "failing, and A/B runs of two sample variants), scores the three real public PRs of "
            "tests/ci/fixtures/pull_requests/ and those runs (ipai-ops bench score) and compares the "
            "variants (ipai-ops bench compare; the variants are sample data, named sample-*), and the real "
            "PRs touching a risky path against those that do not (an ablation of 2 against 1 PR). Then "
            "submits signed intents to Odoo's Pulser API (some fail with different codes) and creates "
            "a sample resolution record linked to a demo error; skipped with a note when Odoo is not "
            "reachable. Safe to run again: nothing is recorded twice. Every flag has the environment "
            "variable named in its help."
        ),
    )
    agent = parser.add_argument_group("agent (OTLP)")
    agent.add_argument(
        "--otlp-endpoint",
        default=None,
        help=f"OTLP/HTTP base URL: the bridge or a collector (env {settings.OTEL_EXPORTER_OTLP_ENDPOINT}; "
        f"default {settings.DEFAULT_OTLP_ENDPOINT})",
    )
    agent.add_argument(
        "--bridge-token", default=None, help=f"bearer token the bridge requires (env {settings.IPAI_BRIDGE_TOKEN})"
    )
    agent.add_argument("--runs", type=int, default=3, help="times the agent runs its tasks (default 3)")
    agent.add_argument(
        "--service-name", default=settings.DEFAULT_SERVICE_NAME, help="service.name of the agent (default %(default)s)"
    )
    add_dsn_argument(agent)
    agent.add_argument("--no-check", action="store_true", help="do not read ops.agent_errors back")
    agent.add_argument("--no-agent", action="store_true", help="skip the agent and the runs (intents only)")
    agent.add_argument(
        "--no-runs",
        action="store_true",
        help="skip the recorded agent runs and the benchmarks (also skipped with --no-check)",
    )
    odoo = parser.add_argument_group("intents (Odoo)")
    odoo.add_argument(
        "--odoo-url",
        default=None,
        help=f"Odoo base URL (env {settings.IPAI_ODOO_URL}; default {settings.DEFAULT_ODOO_URL})",
    )
    odoo.add_argument("--key-id", default=None, help=f"Pulser client key id (env {settings.IPAI_PULSER_KEY_ID})")
    odoo.add_argument("--secret", default=None, help=f"that client's signing key (env {settings.IPAI_PULSER_SECRET})")
    odoo.add_argument(
        "--odoo-db",
        default=None,
        help=f"Odoo database, to create the demo's client without --key-id (env {settings.IPAI_ODOO_DB}; "
        f"default {settings.DEFAULT_ODOO_DB})",
    )
    odoo.add_argument(
        "--odoo-login", default=None, help=f"Odoo login for that (env {settings.IPAI_ODOO_LOGIN}; default admin)"
    )
    odoo.add_argument(
        "--odoo-password",
        default=None,
        help=f"its password (env {settings.IPAI_ODOO_PASSWORD}; default admin)",
    )
    odoo.add_argument(
        "--no-intents", action="store_true", help="skip the Odoo part (intents and the sample resolution)"
    )
    parser.add_argument(
        "--wait", type=float, default=30, help="seconds to wait for telemetry and intents to settle (default 30)"
    )
    parser.add_argument("--format", choices=("text", "json"), default="text", help="output format")
    parser.add_argument(
        "--content-digest",
        action="store_true",
        help="print a digest of the demo's content (its code and sample PRs) and exit; scripts/run.sh "
        "runs the demo again on a database when it changed",
    )
    parser.set_defaults(handler=cmd_demo)


class _Progress:
    """A tqdm bar on a terminal; one line of live counts per run otherwise."""

    def __init__(self, total: int, runs: int, *, quiet: bool):
        self.total = total
        self.per_run = total // max(runs, 1)
        self.quiet = quiet
        self.bar: Any = None
        if not quiet and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc="agent tasks", unit="task", file=sys.stderr, leave=False)

    def __call__(self, _task: Any, report: Any) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(failing=report.tasks_failed, refresh=False)
        elif not self.quiet and report.tasks_run % self.per_run == 0:
            print(
                f"  run {report.tasks_run // self.per_run}: {report.tasks_run}/{self.total} tasks, "
                f"{report.tasks_failed} failing",
                file=sys.stderr,
                flush=True,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def cmd_demo(args: argparse.Namespace) -> int:
    import requests

    from ipai_ops.demo import agent, intents

    if args.content_digest:
        print(settings.content_digest())
        return 0
    text = args.format == "text"
    result: dict[str, Any] = {}
    exit_code = 0
    if args.runs < 1:
        raise CliError("--runs must be >= 1")
    if not args.wait >= 0:  # NaN too: it would make every wait endless
        raise CliError("--wait must be >= 0")

    if not args.no_agent:
        endpoint = args.otlp_endpoint or _env(settings.OTEL_EXPORTER_OTLP_ENDPOINT, settings.DEFAULT_OTLP_ENDPOINT)
        token = args.bridge_token if args.bridge_token is not None else _env(settings.IPAI_BRIDGE_TOKEN)
        conn = None
        if not args.no_check:
            from ipai_ops import store

            # Before sending anything: a wrong DSN is one line, not a half-run demo.
            conn = store.connect(config.dsn(args.dsn), application_name="ipai-ops demo")
        try:
            if conn is not None:
                _agent_call(agent.check_ops_schema, conn)
            total = args.runs * len(agent.TASKS)
            if text:
                print(f"agent: {args.service_name} runs {total} tasks ({args.runs} runs) -> {endpoint}", flush=True)
            progress = _Progress(total, args.runs, quiet=not text)
            try:
                report = _agent_call(
                    agent.run_agent,
                    endpoint=endpoint,
                    runs=args.runs,
                    service_name=args.service_name,
                    token=token,
                    progress=progress,
                )
            finally:
                progress.close()
            if text:
                print(
                    f"  {report.tasks_failed} of {report.tasks_run} tasks failed; "
                    f"{report.exports.ok} OTLP export request(s) accepted",
                    flush=True,
                )
            if conn is not None:
                agent.wait_for_arrivals(conn, report, wait=args.wait)
                rows = agent.error_rows(conn, service=args.service_name, codes=sorted(report.expected))
                if text:
                    _print_arrivals(report, rows, conn.info.dbname)
                if not report.complete:
                    exit_code = EXIT_CHECK_FAILED
            result["agent"] = {
                "service": args.service_name,
                "endpoint": endpoint,
                "tasks": report.tasks_run,
                "failing": report.tasks_failed,
                "expected": dict(report.expected),
                "arrived": dict(report.arrived) if report.checked else None,
                "complete": report.complete if report.checked else None,
                "trace_ids": report.trace_ids,
            }
        finally:
            if conn is not None:
                conn.close()

    if not (args.no_agent or args.no_check or args.no_runs):
        result["runs"] = _runs_and_benchmarks(args, text)
        if not result["runs"]["ok"]:
            exit_code = EXIT_CHECK_FAILED

    if not args.no_intents:
        url = args.odoo_url or _env(settings.IPAI_ODOO_URL, settings.DEFAULT_ODOO_URL)
        if text:
            print(f"intents: Odoo at {url}", flush=True)
        try:
            ireport = intents.run_intents(
                url=url,
                key_id=args.key_id or _env(settings.IPAI_PULSER_KEY_ID) or None,
                secret=args.secret or _env(settings.IPAI_PULSER_SECRET) or None,
                db=args.odoo_db or _env(settings.IPAI_ODOO_DB, settings.DEFAULT_ODOO_DB),
                login=args.odoo_login or _env(settings.IPAI_ODOO_LOGIN, "admin"),
                password=args.odoo_password or _env(settings.IPAI_ODOO_PASSWORD, "admin"),
                wait=args.wait,
                progress=(lambda o: print(f"  submitted {o.case.name:<28} HTTP {o.http_status}", flush=True))
                if text
                else None,
                notify=(lambda note: print(f"  {note}", flush=True)) if text else None,
            )
        except intents.OdooUnavailable as exc:
            if text:
                print(f"  skipped: {exc}", flush=True)
            result["intents"] = {"skipped": str(exc)}
        except requests.RequestException as exc:  # mid-run: one line, like every other failure
            raise CliError(f"talking to Odoo at {url} failed: {exc}", code=EXIT_UNAVAILABLE) from None
        else:
            if text:
                _print_intents(ireport)
            result["intents"] = {
                "client": ireport.client_note,
                "worker": ireport.worker_note,
                "outcomes": [
                    {
                        "name": o.case.name,
                        "expect": o.case.expect,
                        "result": o.result,
                        "http_status": o.http_status,
                        "ref": o.ref,
                        "as_expected": o.as_expected,
                    }
                    for o in ireport.outcomes
                ],
            }
            if any(not o.as_expected and (o.state in intents.TERMINAL_STATES or not o.ref) for o in ireport.outcomes):
                exit_code = EXIT_CHECK_FAILED
        result["resolution"] = _resolution(args, url, text)
    if not text:
        emit_json(result)
    return exit_code


def _runs_and_benchmarks(args: argparse.Namespace, text: bool) -> dict[str, Any]:
    """Recorded runs, benchmark scores and the A/B comparison (ipai_ops.demo.samples)."""
    from ipai_ops import store
    from ipai_ops.ci.bench import BenchmarkConfigError
    from ipai_ops.demo import samples
    from ipai_ops.runs import RunSetupError

    dsn = config.dsn(args.dsn)
    report = samples.SamplesReport()
    if text:
        print(f"runs: agent {samples.RUNS_AGENT} (ipai-ops run), benchmarks (ipai-ops bench)", flush=True)
    conn = store.connect(dsn, application_name="ipai-ops demo")
    try:
        try:
            samples.record_runs(conn, dsn, report)
        except RunSetupError as exc:
            raise CliError(f"recording the demo's runs failed: {exc}") from None
        try:
            samples.score_and_compare(conn, report)
        except BenchmarkConfigError as exc:
            raise CliError(f"the benchmark configuration is invalid:\n{exc}", code=EXIT_CHECK_FAILED) from None
    finally:
        conn.close()
    if text:
        for run in report.recorded:
            error = f", error {run['error_id']}" if run["error_id"] is not None else ""
            print(f"  recorded {run['task_ref']:<32} {run['result']}{error}")
        if report.already:
            print(f"  {len(report.already)} run(s) already recorded by an earlier demo: kept")
        for problem in report.unexpected:
            print(f"  UNEXPECTED {problem}")
        real = [s for s in report.scored if s["subject"].startswith("github:")]
        for s in real:
            print(f"  scored {s['subject']:<48} composite {s['composite']:6.2f}  {s['tier']}  ({s['variant']})")
        print(f"  scored {len(report.scored) - len(real)} A/B run(s) of the sample variants")
        if report.comparison:
            print(f"  A/B (sample data): {report.comparison['summary']}")
        if report.ablation:
            print(f"  ablation (real PRs, n tiny): {report.ablation['summary']}")
        for note in report.notes:
            print(f"  {note}")
    return {
        "ok": report.ok,
        "recorded": report.recorded,
        "already": report.already,
        "unexpected": report.unexpected,
        "scored": report.scored,
        "comparison": report.comparison,
        "ablation": report.ablation,
        "notes": report.notes,
    }


def _resolution(args: argparse.Namespace, url: str, text: bool) -> dict[str, Any]:
    """The sample resolution record, through Odoo's RPC API (needs a login)."""
    import requests

    from ipai_ops.demo import intents
    from ipai_ops.demo.intents import OdooRpc, reason
    from ipai_ops.demo.resolution import ensure_resolution

    unreachable = intents.reachable(url)
    if unreachable:
        why = f"Odoo is not reachable at {url} ({unreachable})"
        if text:
            print(f"resolution: skipped: {why}", flush=True)
        return {"skipped": why}
    try:
        rpc = OdooRpc(
            url,
            args.odoo_db or _env(settings.IPAI_ODOO_DB, settings.DEFAULT_ODOO_DB),
            args.odoo_login or _env(settings.IPAI_ODOO_LOGIN, "admin"),
            args.odoo_password or _env(settings.IPAI_ODOO_PASSWORD, "admin"),
        )
        report = ensure_resolution(rpc, service=args.service_name)
    except (PermissionError, requests.RequestException, ValueError) as exc:
        why = f"Odoo at {url}: {reason(exc)}" if isinstance(exc, requests.RequestException) else str(exc)
        if text:
            print(f"resolution: skipped: {why}", flush=True)
        return {"skipped": why}
    if text:
        print(f"resolution: {report.note}", flush=True)
    return {
        "note": report.note,
        "id": report.resolution_id,
        "fingerprint": report.fingerprint,
        "created": report.created,
    }


def _agent_call(func: Any, *args: Any, **kwargs: Any) -> Any:
    from ipai_ops.demo.agent import DemoError

    try:
        return func(*args, **kwargs)
    except DemoError as exc:
        raise CliError(str(exc), code=EXIT_UNAVAILABLE if exc.unavailable else EXIT_CHECK_FAILED) from None


def _print_arrivals(report: Any, rows: list[tuple[str, int, str, str]], dbname: str) -> None:
    print(f"ops.agent_errors in database {dbname} (this run's occurrences, waited {report.waited_s:.1f}s):")
    print(f"  {'code':<36} {'sent':>5} {'arrived':>8}  {'row count':>9}  status")
    totals: dict[str, tuple[int, str]] = {}
    for code, count, status, _message in rows:
        prev = totals.get(code)
        totals[code] = (count + (prev[0] if prev else 0), status if not prev else prev[1])
    for code in sorted(report.expected):
        total, status = totals.get(code, (0, "-"))
        mark = "" if report.arrived[code] >= report.expected[code] else "   <- missing"
        print(f"  {code:<36} {report.expected[code]:>5} {report.arrived[code]:>8}  {total:>9}  {status}{mark}")
    sent, arrived = sum(report.expected.values()), sum(report.arrived.values())
    if report.complete:
        print(f"  all {sent} occurrences arrived")
    else:
        print(
            f"  {arrived} of {sent} occurrences arrived within the wait: is the collector forwarding "
            "error telemetry to the bridge, and is the bridge writing to this database?"
        )


def _print_intents(report: Any) -> None:
    from ipai_ops.demo.intents import TERMINAL_STATES

    print(f"  {'intent':<28} {'expected':<36} result")
    for o in report.outcomes:
        if o.as_expected:
            mark = "ok"
        elif o.ref and o.state not in TERMINAL_STATES:
            mark = "pending"
        else:
            mark = "UNEXPECTED"
        where = f" (HTTP {o.http_status})" if not o.ref else f" ({o.ref[:8]})"
        print(f"  {o.case.name:<28} {o.case.expect:<36} {o.result}{where}  {mark}")
