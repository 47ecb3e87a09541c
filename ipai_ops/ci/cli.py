"""Command groups ``gate``, ``ingest``, ``bench`` and ``export`` of ``ipai-ops``.

Only argument wiring and output live here; the logic is in the sibling modules.
A failed gate exits 1 and names every problem (file:line: message); input that
cannot be read exits 2; an unreachable database exits 3 (handled by ipai_ops.cli).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

from ipai_ops import config
from ipai_ops.cli import (
    EXIT_CHECK_FAILED,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    CliError,
    add_dsn_argument,
    add_format_argument,
    duration,
    emit_json,
    float_in,
    int_at_least,
    positive_int,
    read_json,
    read_text,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    _register_gate(subparsers)
    _register_ingest(subparsers)
    _register_bench(subparsers)
    _register_export(subparsers)


# --------------------------------------------------------------------------- gate


def _register_gate(subparsers: argparse._SubParsersAction) -> None:
    gate = subparsers.add_parser("gate", help="pull-request gates (exit 1 and name every problem)")
    sub = gate.add_subparsers(dest="gate_command", metavar="GATE", required=True)

    ev = sub.add_parser(
        "evidence-block",
        help="PR body has [CONTEXT], [CHANGES], [EVIDENCE], [DIFF SUMMARY] in order, each non-empty",
    )
    ev.add_argument("body_file", help="file holding the PR body ('-' for stdin)")
    add_format_argument(ev)
    ev.set_defaults(handler=cmd_gate_evidence_block)

    rr = sub.add_parser(
        "resolution-ref",
        help="a PR that says it fixes a failure code references an existing resolution record for it",
    )
    rr.add_argument("--event", help="GitHub pull_request event JSON ($GITHUB_EVENT_PATH): title, body, branch")
    rr.add_argument("--title", help="PR title (overrides the event's)")
    rr.add_argument("--body-file", help="file holding the PR body (overrides the event's; '-' for stdin)")
    rr.add_argument("--branch", help="head branch name (overrides the event's)")
    rr.add_argument("--repo-root", default=".", help="checkout the record paths are relative to (default .)")
    rr.add_argument("--registry", default=None, help=f"failure-mode registry (env {config.IPAI_OPS_REGISTRY})")
    add_format_argument(rr)
    rr.set_defaults(handler=cmd_gate_resolution_ref)

    dns = sub.add_parser("dns-placeholders", help="no lifecycle: active DNS record holds a <...> placeholder")
    dns.add_argument("registry_file", help="DNS registry YAML (e.g. ssot/dns/registry.yaml)")
    add_format_argument(dns)
    dns.set_defaults(handler=cmd_gate_dns_placeholders)

    q = sub.add_parser(
        "quality",
        help="a pull request whose benchmark composite falls below its repository's threshold fails, with the reasons",
    )
    subjects = q.add_mutually_exclusive_group(required=True)
    subjects.add_argument("--subject-file", type=Path, nargs="+", metavar="FILE", help="PR-shaped JSON subject(s)")
    subjects.add_argument("--pr", type=positive_int, nargs="+", metavar="N", help="pull request(s) of --repo (GitHub)")
    q.add_argument(
        "--repo", default=os.environ.get(config.GITHUB_REPOSITORY), help=f"OWNER/REPO (env {config.GITHUB_REPOSITORY})"
    )
    q.add_argument("--token", default=None, help=f"GitHub token (env {config.GITHUB_TOKEN})")
    q.add_argument("--api-url", default=None, help=f"REST API base URL (env {config.GITHUB_API_URL})")
    q.add_argument("--max-wait", type=float_in(0, unit="seconds"), default=900.0, help="longest rate-limit wait, s")
    q.add_argument(
        "--threshold",
        type=float_in(0, 100),
        default=None,
        help="fail below this composite (default: quality_gate in the benchmark config, per repository; 70)",
    )
    q.add_argument("--config", default=None, help="benchmark YAML (default ssot/agents/benchmark.yaml)")
    add_format_argument(q)
    q.set_defaults(handler=cmd_gate_quality, since=None, save=None, as_variant=None)

    sec = sub.add_parser(
        "secrets",
        help="no secret-looking value added (detect-secrets, beyond .secrets.baseline), no secret name "
        "used without an entry in ssot/secrets/registry.yaml",
    )
    sec.add_argument("files", nargs="*", help="files to scan (default: every tracked file)")
    sec.add_argument("--diff", help="scan only the lines a unified diff adds (a PR's diff; '-' for stdin)")
    sec.add_argument("--repo-root", default=".", help="the checkout (default .)")
    sec.add_argument(
        "--write-baseline",
        action="store_true",
        help="after review, record every current finding (test fixtures, documented examples) in .secrets.baseline",
    )
    add_format_argument(sec)
    sec.set_defaults(handler=cmd_gate_secrets)


def _report_gate(result, fmt: str) -> int:
    if fmt == "json":
        emit_json(result.as_dict())
    elif result.ok:
        print(f"ok: {result.gate} passed ({result.subject})")
    else:
        for problem in result.problems:
            print(problem.format(), file=sys.stderr)
        print(
            f"{result.failure_code}: {len(result.problems)} problem(s) in {result.subject}",
            file=sys.stderr,
        )
    return 0 if result.ok else EXIT_CHECK_FAILED


def cmd_gate_evidence_block(args: argparse.Namespace) -> int:
    from ipai_ops.ci.gates import check_evidence_block

    text = read_text(args.body_file, what="PR body")
    source = "<stdin>" if args.body_file == "-" else args.body_file
    return _report_gate(check_evidence_block(text, source=source), args.format)


def cmd_gate_resolution_ref(args: argparse.Namespace) -> int:
    from ipai_ops.ci.gates import PullRequestText, check_resolution_ref
    from ipai_ops.registry import load_registry

    pr = PullRequestText()
    if args.event:
        event = read_json(args.event, what="event")
        if not isinstance(event, dict):
            raise CliError(f"{args.event}: the event must be a JSON object")
        pr = PullRequestText.from_event(event)
    body = read_text(args.body_file, what="PR body") if args.body_file else pr.body
    pr = PullRequestText(
        title=args.title if args.title is not None else pr.title,
        body=body,
        branch=args.branch if args.branch is not None else pr.branch,
        number=pr.number,
    )
    if not (pr.title or pr.body or pr.branch):
        raise CliError("nothing to check: give --event, or at least one of --title, --body-file, --branch")
    root = Path(args.repo_root)
    if not root.is_dir():
        raise CliError(f"--repo-root {root} is not a directory")
    registry = load_registry(args.registry)
    return _report_gate(check_resolution_ref(pr, registry=registry, repo_root=root), args.format)


def cmd_gate_dns_placeholders(args: argparse.Namespace) -> int:
    from ipai_ops.ci.gates import check_dns_placeholders

    text = read_text(args.registry_file, what="DNS registry")
    return _report_gate(check_dns_placeholders(text, source=args.registry_file), args.format)


def cmd_gate_quality(args: argparse.Namespace) -> int:
    from ipai_ops.ci import bench

    cfg = _bench_config(args.config)
    results = [bench.score(s, cfg) for s in _subjects(args)]
    return _report_gate(bench.quality_gate(results, cfg, threshold=args.threshold), args.format)


def cmd_gate_secrets(args: argparse.Namespace) -> int:
    from ipai_ops.ci.secret_scan import GateInputError, check_secrets, write_baseline

    root = Path(args.repo_root)
    if not root.is_dir():
        raise CliError(f"--repo-root {root} is not a directory")
    if args.write_baseline and (args.diff or args.files):
        raise CliError("--write-baseline records the whole checkout: give no files and no --diff")
    try:
        if args.write_baseline:
            count = write_baseline(root)
            print(f"wrote .secrets.baseline: {count} finding(s) recorded as reviewed")
            return 0
        diff = read_text(args.diff, what="diff") if args.diff else None
        result = check_secrets(root, files=args.files or None, diff_text=diff)
    except GateInputError as exc:
        raise CliError(str(exc)) from None
    return _report_gate(result, args.format)


# --------------------------------------------------------------------------- ingest


def _register_ingest(subparsers: argparse._SubParsersAction) -> None:
    # Names from config, not ipai_ops.ci.github_actions: building the parser for every
    # command must not import requests and the ingest machinery.
    ingest = subparsers.add_parser("ingest", help="bring failures from elsewhere into ops.agent_errors")
    sub = ingest.add_subparsers(dest="ingest_command", metavar="SOURCE", required=True)
    gh = sub.add_parser(
        "github-actions",
        help="failed jobs/steps of a GitHub Actions run -> ops.agent_errors (idempotent)",
        description="Online: the REST API with a token. Offline: --logs-archive (plus --jobs-json/--run-json "
        "saved from the API for exact steps). Occurrence id run:job:step:attempt; re-ingesting counts nothing twice.",
    )
    gh.add_argument(
        "--repo",
        default=os.environ.get(config.GITHUB_REPOSITORY),
        help=f"OWNER/REPO (env {config.GITHUB_REPOSITORY})",
    )
    gh.add_argument("--run-id", type=int, required=True, help="workflow run id")
    gh.add_argument(
        "--attempt",
        type=positive_int,
        default=None,
        help="run attempt (default: the run's latest; offline 1)",
    )
    gh.add_argument("--token", default=None, help=f"GitHub token (env {config.GITHUB_TOKEN})")
    gh.add_argument(
        "--api-url",
        default=None,
        help=f"REST API base URL (env {config.GITHUB_API_URL}; default {config.DEFAULT_GITHUB_API_URL})",
    )
    gh.add_argument(
        "--max-wait",
        type=float_in(0, unit="seconds"),
        default=900.0,
        help="longest rate-limit wait to sleep through, seconds (default 900)",
    )
    gh.add_argument("--logs-archive", type=Path, help="offline: the run attempt's logs zip")
    gh.add_argument("--jobs-json", type=Path, help="offline: saved jobs response (GET .../attempts/N/jobs)")
    gh.add_argument("--run-json", type=Path, help="offline: saved run response (GET .../runs/ID)")
    gh.add_argument("--workflow-name", help="offline: workflow name when no --run-json is given")
    gh.add_argument("--registry", default=None, help=f"failure-mode registry (env {config.IPAI_OPS_REGISTRY})")
    gh.add_argument("--dry-run", action="store_true", help="classify and print; write nothing")
    add_dsn_argument(gh)
    add_format_argument(gh)
    gh.set_defaults(handler=cmd_ingest_github_actions)


def _github_client(args: argparse.Namespace):
    """The REST client of ``--token``/``--api-url``/``--max-wait`` (or their environment)."""
    from ipai_ops.ci import github_actions as gha

    token = args.token or os.environ.get(config.GITHUB_TOKEN)
    if not token:
        raise CliError(
            f"no GitHub token: pass --token or set {config.GITHUB_TOKEN}",
            failure_code="GITHUB.AUTH_FAILED",
        )
    api_url = args.api_url or os.environ.get(config.GITHUB_API_URL) or config.DEFAULT_GITHUB_API_URL
    if not re.match(r"^https?://[^/\s]", api_url):
        raise CliError(f"--api-url must be an http(s) URL such as {config.DEFAULT_GITHUB_API_URL} (got {api_url!r})")
    return gha.GitHubClient(token=token, api_url=api_url, max_wait=args.max_wait)


def _github_failure(exc) -> CliError:
    transient = exc.failure_code in ("GITHUB.RATE_LIMITED", "TRANSPORT.UPSTREAM_5XX", "TRANSPORT.UPSTREAM_TIMEOUT")
    return CliError(str(exc), failure_code=exc.failure_code, code=EXIT_UNAVAILABLE if transient else EXIT_USAGE)


def cmd_ingest_github_actions(args: argparse.Namespace) -> int:
    from ipai_ops import store
    from ipai_ops.ci import github_actions as gha
    from ipai_ops.registry import load_registry

    if not args.repo or not re.fullmatch(r"[\w.-]+/[\w.-]+", args.repo):
        raise CliError(f"--repo must be OWNER/REPO (got {args.repo!r}; env GITHUB_REPOSITORY is unset)")
    registry = load_registry(args.registry)
    try:
        if args.logs_archive is not None:
            report = _ingest_offline(args, registry)
        else:
            if args.jobs_json or args.run_json:
                raise CliError("--jobs-json and --run-json go with --logs-archive (offline ingest)")
            if not (args.token or os.environ.get(config.GITHUB_TOKEN)):
                raise CliError(
                    f"no GitHub token: pass --token or set {config.GITHUB_TOKEN} "
                    "(or ingest offline with --logs-archive)",
                    failure_code="GITHUB.AUTH_FAILED",
                )
            client = _github_client(args)
            run, jobs, archive, warnings = gha.fetch_run(client, args.repo, args.run_id, attempt=args.attempt)
            report = gha.build_report(registry, run, jobs=jobs, archive=archive, warnings=warnings)
    except gha.GitHubError as exc:
        raise _github_failure(exc) from None

    if not args.dry_run and report.failures:
        conn = store.connect(args.dsn)
        try:
            result = store.write_batch(conn, [f.occurrence for f in report.failures])
        finally:
            conn.close()
        report.written = {
            "received": result.received,
            "new_occurrences": result.new_occurrences,
            "errors_touched": result.errors_touched,
        }
    if args.format == "json":
        emit_json(report.as_dict())
        return 0
    run = report.run
    for warning in report.warnings:
        print(f"warning: {warning['code']}: {warning['message']}", file=sys.stderr)
    print(
        f"run {run.repository}#{run.run_id} attempt {run.attempt} ({run.workflow}): "
        f"{report.jobs_seen} job(s), {len(report.failures)} failed step(s)"
    )
    for failure in report.failures:
        where = f"{failure.step.job_name} / {failure.step.step_name}"
        print(f"  {failure.classification.code:<28} {where:<40} {failure.message[:100]}")
    if args.dry_run:
        print("dry run: nothing written")
    elif report.written is not None:
        w = report.written
        print(
            f"wrote {w['received']} occurrence(s): {w['new_occurrences']} new, "
            f"{w['errors_touched']} error group(s) updated"
        )
    return 0


def _ingest_offline(args: argparse.Namespace, registry) -> Any:
    from ipai_ops.ci import github_actions as gha

    def run_id_of(run_json: Any) -> int | None:
        try:
            return int(run_json.get("id"))
        except (TypeError, ValueError):
            return None

    try:
        data = args.logs_archive.read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read logs archive {args.logs_archive}: {exc.strerror}") from None
    try:
        archive = gha.LogArchive.from_bytes(data)
    except ValueError as exc:
        raise CliError(f"{args.logs_archive}: {exc}") from None
    if args.run_json is not None:
        run_json = read_json(args.run_json, what="run JSON")
        if not isinstance(run_json, dict):
            raise CliError(f"{args.run_json}: expected the run response (a JSON object)")
        if run_id_of(run_json) != args.run_id:
            raise CliError(f"{args.run_json} is run {run_json.get('id')}, not --run-id {args.run_id}")
        run = gha.RunInfo.from_api(args.repo, run_json, attempt=args.attempt)
    else:
        if not args.workflow_name:
            raise CliError("offline ingest needs --workflow-name (or --run-json) to name the service")
        run = gha.RunInfo(
            repository=args.repo,
            run_id=args.run_id,
            attempt=args.attempt or 1,
            workflow=args.workflow_name,
        )
    jobs = None
    if args.jobs_json is not None:
        body = read_json(args.jobs_json, what="jobs JSON")
        jobs = body.get("jobs") if isinstance(body, dict) else body
        if not isinstance(jobs, list) or not all(isinstance(j, dict) and "id" in j and "name" in j for j in jobs):
            raise CliError(
                f'{args.jobs_json}: expected the jobs response ({{"jobs": [...]}}) or a list of jobs, '
                "each with an id and a name"
            )
    return gha.build_report(registry, run, jobs=jobs, archive=archive)


# --------------------------------------------------------------------------- bench


def _register_bench(subparsers: argparse._SubParsersAction) -> None:
    bench = subparsers.add_parser("bench", help="benchmark scoring and A/B comparison of agent changes")
    sub = bench.add_subparsers(dest="bench_command", metavar="ACTION", required=True)

    val = sub.add_parser("validate", help="check ssot/agents/benchmark.yaml (schema and cross-field rules)")
    val.add_argument("--config", default=None, help="benchmark YAML (default ssot/agents/benchmark.yaml)")
    add_format_argument(val)
    val.set_defaults(handler=cmd_bench_validate)

    sc = sub.add_parser(
        "score",
        help="score PRs (JSON files) or agent runs (metadata.pr); write ops.agent_benchmark_results",
    )
    what = sc.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--subject-file",
        type=Path,
        nargs="+",
        metavar="FILE",
        help="PR-shaped JSON: subject, body, files[], check_runs[], task{}",
    )
    what.add_argument("--run-id", nargs="+", metavar="RUN", help="ops.agent_runs run_id(s)")
    what.add_argument("--runs", action="store_true", help="every agent run with metadata.pr (see --variant)")
    what.add_argument(
        "--pr", type=positive_int, nargs="+", metavar="N", help="pull request number(s) of --repo, from GitHub's API"
    )
    what.add_argument(
        "--since", type=_since_date, metavar="DATE", help="every pull request of --repo merged since DATE (YYYY-MM-DD)"
    )
    sc.add_argument(
        "--repo", default=os.environ.get(config.GITHUB_REPOSITORY), help=f"OWNER/REPO (env {config.GITHUB_REPOSITORY})"
    )
    sc.add_argument("--token", default=None, help=f"GitHub token (env {config.GITHUB_TOKEN})")
    sc.add_argument("--api-url", default=None, help=f"REST API base URL (env {config.GITHUB_API_URL})")
    sc.add_argument(
        "--max-wait",
        type=float_in(0, unit="seconds"),
        default=900.0,
        help="longest rate-limit wait to sleep through, seconds (default 900)",
    )
    sc.add_argument(
        "--save", type=Path, metavar="DIR", help="also write each fetched PR to DIR/<owner>-<repo>-<N>.json"
    )
    sc.add_argument("--variant", help="with --runs: only this metadata.variant_id")
    sc.add_argument(
        "--as-variant",
        metavar="ID",
        help="with --subject-file/--pr/--since: record the scores under this variant id, a group "
        "'bench compare' can compare (a PR's 'variant:ID' label does the same)",
    )
    sc.add_argument("--config", default=None, help="benchmark YAML (default ssot/agents/benchmark.yaml)")
    sc.add_argument("--dry-run", action="store_true", help="score and print; write nothing")
    add_dsn_argument(sc)
    add_format_argument(sc)
    sc.set_defaults(handler=cmd_bench_score)

    cmp_ = sub.add_parser(
        "compare",
        help="A/B: per-category deltas of two variants with bootstrap CIs and a verdict",
    )
    cmp_.add_argument(
        "--variant",
        action="append",
        required=True,
        metavar="ID",
        help="give twice: the baseline first, then the candidate",
    )
    cmp_.add_argument("--agent", help="only results of this agent")
    cmp_.add_argument("--resamples", type=int_at_least(100), default=5000)
    cmp_.add_argument("--confidence", type=_confidence, default=0.95)
    cmp_.add_argument("--seed", type=int, default=0, help="bootstrap seed (fixed: same data, same interval)")
    cmp_.add_argument(
        "--min-runs",
        type=int_at_least(2),
        default=5,
        help="fewest scored subjects per variant before a verdict other than 'no evidence'",
    )
    cmp_.add_argument("--config", default=None, help="benchmark YAML (its benchmark_version is compared)")
    cmp_.add_argument("--no-store", action="store_true", help="do not write ops.agent_ab_comparisons")
    add_dsn_argument(cmp_)
    add_format_argument(cmp_)
    cmp_.set_defaults(handler=cmd_bench_compare)


_confidence = float_in(0.5, 1, high_open=True)


def _bench_config(path: str | None):
    from ipai_ops.ci.bench import BenchmarkConfigError, load_config

    try:
        return load_config(path)
    except BenchmarkConfigError as exc:
        raise CliError(f"the benchmark configuration is invalid:\n{exc}", code=EXIT_CHECK_FAILED) from None


def cmd_bench_validate(args: argparse.Namespace) -> int:
    from ipai_ops.benchmark_config import default_config_path
    from ipai_ops.ci.bench import BenchmarkConfigError, load_config

    source = args.config or str(default_config_path())
    try:
        cfg = load_config(args.config)
    except BenchmarkConfigError as exc:
        if args.format == "json":
            emit_json({"ok": False, "config": source, "problems": [p.as_dict() for p in exc.problems]})
        else:
            for problem in exc.problems:
                print(problem.format(), file=sys.stderr)
            print(f"{len(exc.problems)} problem(s) in {source}", file=sys.stderr)
        return EXIT_CHECK_FAILED
    if args.format == "json":
        emit_json(
            {
                "ok": True,
                "config": source,
                "benchmark_version": cfg.benchmark_version,
                "categories": dict(cfg.weights),
                "tiers": {t.name: t.min_score for t in cfg.tiers},
                "risky_paths": len(cfg.risky_paths),
                "problems": [],
            }
        )
    else:
        tiers = ", ".join(f"{t.name} >= {t.min_score:g}" for t in cfg.tiers)
        print(
            f"ok: benchmark v{cfg.benchmark_version}, {len(cfg.weights)} categories, tiers {tiers}, "
            f"{len(cfg.risky_paths)} risky globs ({source})"
        )
    return 0


def _since_date(text: str):
    from datetime import UTC, datetime

    try:
        return datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a date YYYY-MM-DD (got {text!r})") from None


def _fetch_pulls(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The PRs of ``--pr``/``--since`` from GitHub, saved under ``--save`` when asked."""
    from ipai_ops.ci import github_actions as gha
    from ipai_ops.ci import pulls

    if not args.repo or not re.fullmatch(r"[\w.-]+/[\w.-]+", args.repo):
        raise CliError(f"--repo must be OWNER/REPO (got {args.repo!r}; env GITHUB_REPOSITORY is unset)")
    if args.save is not None and not args.save.is_dir():
        raise CliError(f"--save {args.save} is not a directory")
    client = _github_client(args)
    try:
        numbers = args.pr or pulls.merged_since(client, args.repo, args.since)
        fetched = [pulls.fetch_pull(client, args.repo, number) for number in numbers]
    except gha.GitHubError as exc:
        raise _github_failure(exc) from None
    for data in fetched if args.save is not None else ():
        name = f"{args.repo.replace('/', '-')}-{data['source']['number']}.json"
        (args.save / name).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return fetched


def _subjects(args: argparse.Namespace) -> list:
    """The PR-shaped subjects of ``--pr``/``--since`` (from GitHub) or ``--subject-file``."""
    from ipai_ops.ci import bench

    if args.pr or args.since:
        named = [(f"{args.repo}#{data['source']['number']}", data) for data in _fetch_pulls(args)]
    else:
        named = [(str(file), read_json(file, what="subject")) for file in args.subject_file]
    subjects = []
    for name, data in named:
        if not isinstance(data, dict):
            raise CliError(f"{name}: not a PR-shaped subject: a JSON object is expected")
        try:
            subjects.append(bench.Subject.from_mapping(data, variant_id=args.as_variant))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CliError(f"{name}: not a PR-shaped subject: {exc}") from None
    return subjects


def cmd_bench_score(args: argparse.Namespace) -> int:
    from ipai_ops import store
    from ipai_ops.ci import bench

    if args.as_variant is not None and not args.as_variant.strip():
        raise CliError("--as-variant needs a variant id (got an empty one)")
    cfg = _bench_config(args.config)
    conn = None
    try:
        if args.pr or args.since or args.subject_file:
            subjects = _subjects(args)
        else:
            if args.variant and not args.runs:
                raise CliError("--variant goes with --runs")
            if args.as_variant:
                raise CliError("--as-variant goes with --subject-file, --pr or --since (a run's variant is its own)")
            conn = store.connect(args.dsn)
            try:
                subjects = bench.subjects_from_runs(
                    conn, run_ids=args.run_id or (), variant=args.variant, all_runs=args.runs
                )
            except LookupError as exc:
                raise CliError(str(exc), code=EXIT_CHECK_FAILED) from None
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise CliError(f"an agent run's metadata.pr is not PR-shaped: {exc}") from None
        results = [bench.score(s, cfg) for s in subjects]
        if not args.dry_run and results:
            conn = conn or store.connect(args.dsn)
            for result in results:
                bench.store_result(conn, result)
    finally:
        if conn is not None:
            conn.close()
    if args.format == "json":
        emit_json({"results": [r.as_dict() for r in results], "written": not args.dry_run})
        return 0
    if not results:
        print("nothing to score")
    for r in results:
        print(f"{r.subject.subject}  composite {r.composite:.2f}  tier {r.tier}")
        for c in r.categories:
            print(f"  {c.category:<14} {c.score:>6.2f}  (weight {c.weight:g})  {_describe(c)}")
        for name, why in r.skipped.items():
            print(f"  {name:<14} {'-':>6}  not scored: {why}")
    if args.dry_run:
        print("dry run: nothing written")
    elif results:
        print(f"wrote {sum(len(r.categories) for r in results)} row(s) to ops.agent_benchmark_results")
    return 0


def _describe(c) -> str:
    from ipai_ops.ci.bench import describe

    return describe(c)


def cmd_bench_compare(args: argparse.Namespace) -> int:
    from ipai_ops import store
    from ipai_ops.ci import ab

    if len(args.variant) != 2 or args.variant[0] == args.variant[1]:
        raise CliError("give --variant exactly twice, two different ids: the baseline, then the candidate")
    cfg = _bench_config(args.config)
    baseline, candidate = args.variant
    conn = store.connect(args.dsn)
    try:
        a = ab.load_samples(conn, baseline, benchmark_version=cfg.benchmark_version, agent=args.agent)
        b = ab.load_samples(conn, candidate, benchmark_version=cfg.benchmark_version, agent=args.agent)
        missing = [v for v, s in ((baseline, a), (candidate, b)) if not s]
        if missing:
            raise CliError(
                f"no benchmark results for variant(s) {', '.join(missing)} under benchmark v{cfg.benchmark_version}: "
                "score their runs first (ipai-ops bench score --runs --variant ID)",
                code=EXIT_CHECK_FAILED,
            )
        result = ab.compare(
            baseline,
            candidate,
            a,
            b,
            benchmark_version=cfg.benchmark_version,
            resamples=args.resamples,
            confidence=args.confidence,
            seed=args.seed,
            min_runs=args.min_runs,
        )
        if not args.no_store:
            ab.store_comparison(conn, result)
    finally:
        conn.close()
    if args.format == "json":
        emit_json({**result.as_dict(), "stored": not args.no_store})
        return 0
    level = f"{result.confidence:.0%}"
    print(
        f"{candidate} vs {baseline} (baseline), benchmark v{result.benchmark_version}, "
        f"{result.resamples} bootstrap resamples, seed {result.seed}"
    )
    print(f"  {'CATEGORY':<14} {'N A/B':>9} {'MEAN A':>8} {'MEAN B':>8} {'DELTA':>8}  {level + ' CI':<20} VERDICT")
    for c in result.categories:
        ci = f"[{c.ci_low:+.2f}, {c.ci_high:+.2f}]" if c.ci_low is not None else "-"
        mean_a = f"{c.mean_baseline:.2f}" if c.mean_baseline is not None else "-"
        mean_b = f"{c.mean_candidate:.2f}" if c.mean_candidate is not None else "-"
        delta = f"{c.delta:+.2f}" if c.delta is not None else "-"
        print(
            f"  {c.category:<14} {f'{c.n_baseline}/{c.n_candidate}':>9} {mean_a:>8} {mean_b:>8} {delta:>8}  "
            f"{ci:<20} {c.verdict}"
        )
    print(f"verdict: {ab.summary_line(result)}")
    if not args.no_store:
        print(f"stored as {result.comparison_id} in ops.agent_ab_comparisons")
    return 0


# --------------------------------------------------------------------------- export


def _register_export(subparsers: argparse._SubParsersAction) -> None:
    export = subparsers.add_parser("export", help="turn ops data into files for training and analysis")
    sub = export.add_subparsers(dest="export_command", metavar="WHAT", required=True)
    ds = sub.add_parser(
        "dataset",
        help="agent runs -> (prompt, context, patch, outcome) JSONL + preference pairs, redacted, split by hash",
    )
    where = ds.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", type=Path, help="output directory (files are overwritten)")
    where.add_argument(
        "--to",
        metavar="s3://BUCKET/PREFIX",
        help="S3-compatible bucket instead (credentials and endpoint from AWS_* environment variables)",
    )
    ds.add_argument("--agent", help="only runs of this agent")
    ds.add_argument("--variant", help="only runs with this metadata.variant_id")
    ds.add_argument("--status", choices=("queued", "running", "succeeded", "failed", "cancelled"))
    ds.add_argument("--since", type=duration, help="only runs started within, e.g. 30d")
    ds.add_argument("--limit", type=positive_int, help="at most this many runs")
    ds.add_argument("--eval-fraction", type=_fraction, default=0.1, help="share of tasks in eval (default 0.1)")
    ds.add_argument("--salt", default="ipai-ops-dataset-v1", help="split salt: change it to draw a new split")
    ds.add_argument(
        "--margin", type=float_in(0), default=5.0, help="composite points the chosen run must lead by (default 5)"
    )
    ds.add_argument("--max-pairs-per-task", type=positive_int, default=16)
    ds.add_argument("--config", default=None, help="benchmark YAML (its benchmark_version's scores are used)")
    ds.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar on stderr (default: when stderr is a terminal)",
    )
    add_dsn_argument(ds)
    add_format_argument(ds)
    ds.set_defaults(handler=cmd_export_dataset)


_fraction = float_in(0, 1)


def cmd_export_dataset(args: argparse.Namespace) -> int:
    from ipai_ops import store
    from ipai_ops.ci.dataset import (
        DatasetManifestInvalid,
        DatasetRecordInvalid,
        DatasetUploadError,
        ExportFilters,
        ExportSettings,
        S3Target,
        export_dataset,
        upload_export,
    )

    cfg = _bench_config(args.config)
    target = None
    if args.to is not None:
        try:
            target = S3Target.parse(args.to)
        except ValueError as exc:
            raise CliError(f"--to: {exc}") from None
        scratch = tempfile.TemporaryDirectory(prefix="ipai-ops-dataset-")
        args.out = Path(scratch.name)
    elif args.out.exists() and not args.out.is_dir():
        raise CliError(f"--out {args.out} exists and is not a directory")
    filters = ExportFilters(
        agent=args.agent, variant=args.variant, status=args.status, since=args.since, limit=args.limit
    )
    settings = ExportSettings(
        eval_fraction=args.eval_fraction,
        salt=args.salt,
        margin=args.margin,
        max_pairs_per_task=args.max_pairs_per_task,
        benchmark_version=cfg.benchmark_version,
    )
    conn = store.connect(args.dsn)
    try:
        manifest = export_dataset(conn, args.out, filters=filters, settings=settings, progress=args.progress)
    except DatasetRecordInvalid as exc:
        raise CliError(
            f"{exc}; nothing was written", code=EXIT_CHECK_FAILED, failure_code="AGENT.RUN_METADATA_INVALID"
        ) from None
    except DatasetManifestInvalid as exc:
        raise CliError(f"{exc}; nothing was written", code=EXIT_CHECK_FAILED) from None
    except OSError as exc:
        raise CliError(f"cannot write to {args.out}: {exc.strerror}") from None
    finally:
        conn.close()
    if target is not None:
        try:
            objects = upload_export(args.out, manifest, target)
        except DatasetUploadError as exc:
            raise CliError(str(exc), code=EXIT_UNAVAILABLE if exc.unavailable else EXIT_CHECK_FAILED) from None
        finally:
            scratch.cleanup()
        if args.format == "json":
            emit_json(manifest)
            return 0
        c = manifest["counts"]
        print(f"read {c['rows_read']} run(s), skipped {c['skipped_incomplete']} without prompt or patch")
        print(f"uploaded {len(objects)} object(s) to {target.url()}, manifest last: {objects[-1]}")
        return 0
    if args.format == "json":
        emit_json(manifest)
        return 0
    c = manifest["counts"]
    print(f"read {c['rows_read']} run(s), skipped {c['skipped_incomplete']} without prompt or patch")
    print(
        f"records: train {c['records']['train']}, eval {c['records']['eval']}; "
        f"preference pairs: train {c['pairs']['train']}, eval {c['pairs']['eval']}"
    )
    for name, info in manifest["files"].items():
        print(f"  {args.out / name}  {info['lines']} line(s)  sha256 {info['sha256'][:16]}...")
    print(f"manifest: {args.out / 'manifest.json'}")
    return 0
