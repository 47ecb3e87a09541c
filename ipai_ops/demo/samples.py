"""The demo's agent runs and benchmarks, through the product's own paths.

* **Agent runs**: small real commands recorded by :class:`ipai_ops.runs.RunRecorder`
  (what ``ipai-ops run`` does): one test run that passes, one that fails with pytest's
  real-looking output (typed ``BUILD.TEST_FAILED``, filed in ``ops.agent_errors`` and
  linked from its run), and the A/B runs below.
* **Benchmarks**: the three real public pull requests of
  ``tests/ci/fixtures/pull_requests/`` scored by :func:`ipai_ops.ci.bench.score` (what
  ``ipai-ops bench score --subject-file`` does), then the A/B runs scored from their
  ``metadata.pr`` (``bench score --runs --variant``) and compared
  (:func:`ipai_ops.ci.ab.compare`, what ``ipai-ops bench compare`` does).

The A/B runs are **sample data**: each is a real command that reports, through the run's
events file (``$IPAI_RUN_EVENTS``), a made-up PR-shaped change; their variant ids say so
(:data:`BASELINE_VARIANT`, :data:`CANDIDATE_VARIANT`).

The real PRs are not sample data, and their scores are also compared: the ablation
*touches a risky path or not* (:data:`REAL_PLAIN_VARIANT` against :data:`REAL_RISKY_VARIANT`,
what ``bench score --as-variant`` then ``bench compare`` record). It is an observational
split of three PRs (2 against 1), far below ``bench compare``'s ``--min-runs``: its verdict is
"no evidence", and it shows the loop on real scores, not a finding.

Idempotent: a run is recorded once per database (found by its agent and ``task_ref``);
scores and comparisons are upserts keyed by subject and by a content hash.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ipai_ops import config

#: ``agent`` of the demo's recorded runs (not the OTLP demo agent: its errors are counted apart).
RUNS_AGENT = "demo-coder"
#: The A/B variants: sample data, and named so in every view that shows them.
BASELINE_VARIANT = "sample-baseline"
CANDIDATE_VARIANT = "sample-candidate"
AB_RUNS_PER_VARIANT = 5
#: The real PRs' groups: no file under a ``risky_paths`` glob of the benchmark, or some.
REAL_PLAIN_VARIANT = "real-prs:no-risky-path"
REAL_RISKY_VARIANT = "real-prs:risky-path"
#: ``bench compare``'s defaults (fixed seed: the same data gives the same interval).
AB_RESAMPLES = 2000
AB_SEED = 0

_PASSING_TESTS = (
    "import sys\n"
    "print('============================= test session starts ==============================')\n"
    "print('collected 12 items')\n"
    "print('tests/test_invoice.py ............                                      [100%]')\n"
    "print('============================== 12 passed in 0.41s ==============================')\n"
)
_FAILING_TESTS = (
    "import sys\n"
    "print('============================= test session starts ==============================')\n"
    "print('collected 12 items')\n"
    "print('tests/test_invoice.py ..........F.                                      [100%]')\n"
    "print('=================================== FAILURES ===================================')\n"
    "print('____________________________ test_total_with_discount ____________________________')\n"
    "print('>       assert invoice.total == Decimal(\"90.00\")')\n"
    'print(\'E       AssertionError: assert Decimal("100.00") == Decimal("90.00")\')\n'
    "print('tests/test_invoice.py:48: AssertionError')\n"
    "print('FAILED tests/test_invoice.py::test_total_with_discount - AssertionError', file=sys.stderr)\n"
    "print('========================= 1 failed, 11 passed in 0.44s =========================')\n"
    "sys.exit(1)\n"
)
#: Appends its one argument (a JSON event) to the run's events file, as an agent reports.
_REPORT_PR = (
    "import os, sys\n"
    "with open(os.environ['IPAI_RUN_EVENTS'], 'a', encoding='utf-8') as f:\n"
    "    f.write(sys.argv[1] + '\\n')\n"
    "print('patch applied; pull request opened')\n"
)


@dataclass(frozen=True)
class RunCase:
    """One recorded demo run; ``task_ref`` keys it (recorded once per database)."""

    task_ref: str
    argv: tuple[str, ...]
    kind: str | None = None
    variant_id: str | None = None
    expect: str = "succeeded"  # succeeded | a failure code


def _python(code: str, *args: str) -> tuple[str, ...]:
    return (sys.executable, "-c", code, *args)


def sample_pr(variant: str, n: int) -> dict[str, Any]:
    """A made-up PR-shaped change for the A/B sample: the candidate writes the evidence
    block and smaller diffs, and its checks go green sooner (deterministic: same data,
    same comparison id)."""
    day = f"2026-01-{n + 5:02d}"
    if variant == CANDIDATE_VARIANT:
        body = (
            "[CONTEXT]\nInvoices with a discount line total the undiscounted amount.\n\n"
            "[CHANGES]\nApply line discounts before summing.\n\n"
            "[EVIDENCE]\ntests/test_invoice.py::test_total_with_discount passes (failed before).\n\n"
            + ("" if n == 3 else f"[DIFF SUMMARY]\n{n + 1} file(s), {30 + 12 * n} lines.\n")
        )
        files = [
            {"filename": f"src/invoice/part_{i}.py", "additions": 20 + 8 * n, "deletions": 10 + 4 * n}
            for i in range(1 + n % 2)
        ]
        checks = [("lint", "success", 2), ("tests", "success", 9 + 4 * n), ("typecheck", "success", 4)]
    else:
        body = (
            "Fix invoice totals." if n % 2 else "[CONTEXT]\nInvoice totals are wrong.\n\n[CHANGES]\nRewrote totals.\n"
        )
        files = [
            {"filename": f"src/invoice/part_{i}.py", "additions": 60 + 25 * n, "deletions": 30 + 10 * n}
            for i in range(3 + n)
        ]
        if n % 2 == 0:
            files.append({"filename": "src/invoice/migrations/0007_totals.sql", "additions": 12, "deletions": 0})
        checks = [
            ("lint", "success", 3),
            ("tests", "failure" if n % 3 == 0 else "success", 35 + 20 * n),
            ("typecheck", "success", 6),
        ]
    return {
        "subject": f"sample:{variant}#{n + 1}",
        "title": f"Fix invoice totals (sample {n + 1})",
        "body": body,
        "files": files,
        "check_runs": [
            {
                "name": name,
                "conclusion": conclusion,
                "started_at": f"{day}T10:00:00Z",
                "completed_at": f"{day}T{10 + minutes // 60:02d}:{minutes % 60:02d}:00Z",
            }
            for name, conclusion, minutes in checks
        ],
        "task": {"budget_lines": 200, "budget_files": 8},
    }


def run_cases() -> tuple[RunCase, ...]:
    cases = [
        RunCase("demo:tests-pass", _python(_PASSING_TESTS), kind="test"),
        RunCase("demo:tests-fail", _python(_FAILING_TESTS), kind="test", expect="BUILD.TEST_FAILED"),
    ]
    for variant in (BASELINE_VARIANT, CANDIDATE_VARIANT):
        for n in range(AB_RUNS_PER_VARIANT):
            event = {"type": "metadata", "data": {"pr": sample_pr(variant, n)}}
            cases.append(
                RunCase(
                    f"demo:ab:{variant}:{n + 1}",
                    _python(_REPORT_PR, json.dumps(event, separators=(",", ":"))),
                    variant_id=variant,
                )
            )
    return tuple(cases)


def fixture_files() -> list[Path]:
    """The three real public PRs (tests/ci/fixtures/pull_requests/*.json); [] outside a checkout."""
    folder = config.repo_root() / "tests" / "ci" / "fixtures" / "pull_requests"
    return sorted(folder.glob("*.json")) if folder.is_dir() else []


@dataclass
class SamplesReport:
    recorded: list[dict[str, Any]] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    scored: list[dict[str, Any]] = field(default_factory=list)
    comparison: dict[str, Any] | None = None
    ablation: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.unexpected and self.comparison is not None


def _recorded_task_refs(conn: Any, refs: list[str]) -> set[str]:
    with conn.cursor() as cur:
        cur.execute("SELECT task_ref FROM ops.agent_runs WHERE agent = %s AND task_ref = ANY(%s)", (RUNS_AGENT, refs))
        found = {row[0] for row in cur.fetchall()}
    conn.rollback()
    return found


def record_runs(conn: Any, dsn: str | None, report: SamplesReport, *, artifacts_dir: str | None = None) -> None:
    """Record each :func:`run_cases` entry not yet in ``ops.agent_runs``."""
    from ipai_ops.runs import RunRecorder

    cases = run_cases()
    done = _recorded_task_refs(conn, [c.task_ref for c in cases])
    todo = [c for c in cases if c.task_ref not in done]
    report.already = sorted(done)
    if not todo:
        return
    folder = config.run_artifacts_dir(artifacts_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        # e.g. a container user without a home directory: the runs still go to the database.
        fallback = Path(tempfile.gettempdir()) / "ipai-ops-demo-runs"
        report.notes.append(f"run directories in {fallback} ({folder}: {exc.strerror})")
        folder = fallback
    # max_attempts=1: a demo failure is shown once, not retried; quiet: the demo prints its own lines.
    recorder = RunRecorder(dsn=dsn, artifacts_dir=folder, quiet=True, retry_delay_cap=0)
    for case in todo:
        result = recorder.run(
            list(case.argv),
            agent=RUNS_AGENT,
            variant_id=case.variant_id,
            task_ref=case.task_ref,
            kind=case.kind,
            max_attempts=1,
            timeout=60,
        )
        got = result.code or result.status
        report.recorded.append(
            {"task_ref": case.task_ref, "run_id": result.run_id, "result": got, "error_id": result.error_id}
        )
        if got != case.expect or result.db != "written":
            report.unexpected.append(f"{case.task_ref}: {got} (expected {case.expect}; database {result.db})")


def score_and_compare(conn: Any, report: SamplesReport) -> None:
    """Score the real PRs and the A/B runs, then compare the two sample variants."""
    from ipai_ops.ci import ab, bench

    cfg = bench.load_config()
    subjects = []
    files = fixture_files()
    if not files:
        report.notes.append("tests/ci/fixtures/pull_requests/ not found (not a checkout): real PRs not scored")
    for path in files:
        subject = bench.Subject.from_mapping(json.loads(path.read_text(encoding="utf-8")))
        subjects.append(_real_group(subject, cfg))
    for variant in (BASELINE_VARIANT, CANDIDATE_VARIANT):
        subjects.extend(bench.subjects_from_runs(conn, variant=variant))
    for subject in subjects:
        result = bench.score(subject, cfg)
        bench.store_result(conn, result)
        report.scored.append(
            {
                "subject": subject.subject,
                "variant": subject.variant_id,
                "composite": result.composite,
                "tier": result.tier,
            }
        )
    samples = {
        v: ab.load_samples(conn, v, benchmark_version=cfg.benchmark_version, agent=RUNS_AGENT)
        for v in (BASELINE_VARIANT, CANDIDATE_VARIANT)
    }
    if not all(samples.values()):
        report.notes.append("no scored A/B runs: comparison skipped")
        return
    result = ab.compare(
        BASELINE_VARIANT,
        CANDIDATE_VARIANT,
        samples[BASELINE_VARIANT],
        samples[CANDIDATE_VARIANT],
        benchmark_version=cfg.benchmark_version,
        resamples=AB_RESAMPLES,
        seed=AB_SEED,
    )
    ab.store_comparison(conn, result)
    report.comparison = {**result.as_dict(), "summary": ab.summary_line(result)}
    real = {
        v: ab.load_samples(conn, v, benchmark_version=cfg.benchmark_version)
        for v in (REAL_PLAIN_VARIANT, REAL_RISKY_VARIANT)
    }
    if not all(real.values()):
        report.notes.append("the real PRs are not in both groups: their ablation is not recorded")
        return
    ablation = ab.compare(
        REAL_PLAIN_VARIANT,
        REAL_RISKY_VARIANT,
        real[REAL_PLAIN_VARIANT],
        real[REAL_RISKY_VARIANT],
        benchmark_version=cfg.benchmark_version,
        resamples=AB_RESAMPLES,
        seed=AB_SEED,
    )
    ab.store_comparison(conn, ablation)
    report.ablation = {**ablation.as_dict(), "summary": ab.summary_line(ablation)}


def _real_group(subject: Any, cfg: Any) -> Any:
    """``subject`` in its ablation group: does any of its files match a risky glob?"""
    risky = any(cfg.risk_penalty(f.path)[1] for f in subject.files or ())
    return dataclasses.replace(subject, variant_id=REAL_RISKY_VARIANT if risky else REAL_PLAIN_VARIANT)
