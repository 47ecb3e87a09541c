"""Benchmark scoring of a change (an agent run or a pull request).

Categories (weights, budgets and thresholds in ``ssot/agents/benchmark.yaml``):

* ``evidence``: 100 - 25 per problem the evidence-block gate finds in the PR body;
* ``minimality``: mean of 100*min(1, budget_lines/lines) and 100*min(1, budget_files/files);
* ``risk``: 100 - the penalty of each touched file's first matching risky glob, floored at 0;
* ``ci``: 100 * share of checks whose latest run passed (success, neutral, skipped);
* ``time_to_green``: 100 up to ``target_minutes``, 0 from ``max_minutes`` or when never
  green, linear between; measured from the first check's start to the last check's end.

A category without data (no PR body, no checks) is *not scored*: it is left out and
the composite is the weighted mean of the scored ones, so a missing input neither
passes nor fails a change silently; the result lists what was skipped and why.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ipai_ops.benchmark_config import UNRANKED, BenchmarkConfig, default_config_path, parse_config
from ipai_ops.ci._sql import sql
from ipai_ops.ci.gates import GateProblem, GateResult, check_evidence_block

CATEGORIES = ("evidence", "minimality", "risk", "ci", "time_to_green")
PASSING = frozenset({"success", "neutral", "skipped"})
EVIDENCE_PENALTY = 25.0


class BenchmarkConfigError(Exception):
    def __init__(self, problems: list[GateProblem]):
        self.problems = problems
        super().__init__("\n".join(p.format() for p in problems))


def load_config(path: str | Path | None = None) -> BenchmarkConfig:
    """The benchmark configuration for the CI commands; its problems as gate problems."""
    file = Path(path) if path else default_config_path()
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise BenchmarkConfigError([GateProblem(str(file), None, f"cannot read: {exc.strerror}")]) from None
    except UnicodeDecodeError as exc:
        reason = f"cannot read: not UTF-8 text ({exc.reason} at byte {exc.start})"
        raise BenchmarkConfigError([GateProblem(str(file), None, reason)]) from None
    cfg, problems = parse_config(text, source=str(file))
    if cfg is None:
        raise BenchmarkConfigError([GateProblem(p.file, p.line, p.message) for p in problems])
    return cfg


# --------------------------------------------------------------------------- subjects


@dataclass(frozen=True)
class FileChange:
    path: str
    additions: int
    deletions: int


@dataclass(frozen=True)
class Check:
    name: str
    conclusion: str | None
    started_at: datetime | None
    completed_at: datetime | None


def _ts(value: Any) -> datetime | None:
    if not value:
        return None
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


@dataclass(frozen=True)
class Subject:
    """What is scored: a PR or an agent run's change, in the PR-shaped form below.

    ``{"subject", "body", "files": [{"filename", "additions", "deletions"}],
    "check_runs": [{"name", "conclusion", "started_at", "completed_at"}],
    "task": {"budget_lines", "budget_files"}}`` (GitHub's field names, so a PR's
    API responses drop in). ``None`` means "no data", an empty list means "none".
    """

    subject: str
    body: str | None = None
    files: tuple[FileChange, ...] | None = None
    checks: tuple[Check, ...] | None = None
    budget_lines: int | None = None
    budget_files: int | None = None
    run_id: str | None = None
    agent: str | None = None
    variant_id: str | None = None

    @classmethod
    def from_mapping(
        cls,
        data: Mapping[str, Any],
        *,
        subject: str | None = None,
        run_id: str | None = None,
        agent: str | None = None,
        variant_id: str | None = None,
    ) -> Subject:
        name = subject or data.get("subject")
        if not name:
            raise ValueError("a subject needs a 'subject' name (e.g. github:owner/repo#123)")
        files = data.get("files")
        checks = data.get("check_runs", data.get("checks"))
        task = data.get("task") or {}
        return cls(
            subject=str(name),
            body=data.get("body"),
            files=None
            if files is None
            else tuple(
                FileChange(
                    str(f.get("filename") or f.get("path")), int(f.get("additions", 0)), int(f.get("deletions", 0))
                )
                for f in files
            ),
            checks=None
            if checks is None
            else tuple(
                Check(str(c["name"]), c.get("conclusion"), _ts(c.get("started_at")), _ts(c.get("completed_at")))
                for c in checks
            ),
            budget_lines=task.get("budget_lines"),
            budget_files=task.get("budget_files"),
            run_id=run_id,
            agent=agent or data.get("agent"),
            variant_id=variant_id or data.get("variant_id"),
        )


# --------------------------------------------------------------------------- scoring


@dataclass(frozen=True)
class CategoryScore:
    category: str
    score: float
    weight: float
    details: dict[str, Any]


@dataclass(frozen=True)
class ScoreResult:
    subject: Subject
    benchmark_version: int
    categories: tuple[CategoryScore, ...]
    composite: float
    tier: str
    skipped: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "subject": self.subject.subject,
            "run_id": self.subject.run_id,
            "agent": self.subject.agent,
            "variant_id": self.subject.variant_id,
            "benchmark_version": self.benchmark_version,
            "composite": self.composite,
            "tier": self.tier,
            "categories": {
                c.category: {"score": c.score, "weight": c.weight, "details": c.details} for c in self.categories
            },
            "not_scored": self.skipped,
        }


def _r(value: float) -> float:
    return round(value + 0.0, 2)


def score_evidence(body: str) -> tuple[float, dict[str, Any]]:
    result = check_evidence_block(body, source="body")
    problems = [p.message for p in result.problems]
    return max(0.0, 100.0 - EVIDENCE_PENALTY * len(problems)), {"problems": problems}


def score_minimality(files: Sequence[FileChange], *, budget_lines: int, budget_files: int) -> tuple[float, dict]:
    lines = sum(f.additions + f.deletions for f in files)
    count = len(files)
    line_part = 100.0 if lines <= budget_lines else 100.0 * budget_lines / lines
    file_part = 100.0 if count <= budget_files else 100.0 * budget_files / count
    return (line_part + file_part) / 2, {
        "lines": lines,
        "files": count,
        "budget_lines": budget_lines,
        "budget_files": budget_files,
        "lines_score": _r(line_part),
        "files_score": _r(file_part),
    }


def score_risk(files: Sequence[FileChange], cfg: BenchmarkConfig) -> tuple[float, dict[str, Any]]:
    touched = []
    penalty = 0.0
    for f in files:
        value, glob = cfg.risk_penalty(f.path)
        if glob:
            touched.append({"path": f.path, "glob": glob, "penalty": value})
            penalty += value
    return max(0.0, 100.0 - penalty), {"risky_files": touched}


def _latest(checks: Sequence[Check]) -> list[Check]:
    """The latest run of each check name (a re-run replaces the failed attempt)."""
    latest: dict[str, Check] = {}
    for check in checks:
        when = check.completed_at or check.started_at
        current = latest.get(check.name)
        if current is None or (when and (current.completed_at or current.started_at or when) <= when):
            latest[check.name] = check
    return [latest[name] for name in sorted(latest)]


def score_ci(checks: Sequence[Check]) -> tuple[float, dict[str, Any]]:
    latest = _latest(checks)
    failed = [c.name for c in latest if c.conclusion not in PASSING]
    passed = len(latest) - len(failed)
    return 100.0 * passed / len(latest), {"checks": len(latest), "passed": passed, "failed": failed}


def score_time_to_green(checks: Sequence[Check], *, target_minutes: float, max_minutes: float) -> tuple[float, dict]:
    latest = _latest(checks)
    if any(c.conclusion not in PASSING for c in latest):
        return 0.0, {"green": False, "minutes": None}
    starts = [c.started_at for c in checks if c.started_at]
    ends = [c.completed_at for c in latest if c.completed_at]
    if not starts or not ends:
        return 0.0, {"green": True, "minutes": None, "reason": "checks carry no timestamps"}
    minutes = max(0.0, (max(ends) - min(starts)).total_seconds() / 60)
    if minutes <= target_minutes:
        value = 100.0
    elif minutes >= max_minutes:
        value = 0.0
    else:
        value = 100.0 * (max_minutes - minutes) / (max_minutes - target_minutes)
    return value, {"green": True, "minutes": _r(minutes), "target_minutes": target_minutes, "max_minutes": max_minutes}


def score(subject: Subject, cfg: BenchmarkConfig) -> ScoreResult:
    computed: list[CategoryScore] = []
    skipped: dict[str, str] = {}
    for category in CATEGORIES:
        if category not in cfg.weights:
            continue
        params = cfg.params.get(category, {})
        value: float | None = None
        details: dict[str, Any] = {}
        if category == "evidence":
            if subject.body is None:
                skipped[category] = "no PR body"
            else:
                value, details = score_evidence(subject.body)
        elif category == "minimality":
            if subject.files is None:
                skipped[category] = "no changed-file list"
            else:
                value, details = score_minimality(
                    subject.files,
                    budget_lines=subject.budget_lines or int(params["budget_lines"]),
                    budget_files=subject.budget_files or int(params["budget_files"]),
                )
        elif category == "risk":
            if subject.files is None:
                skipped[category] = "no changed-file list"
            else:
                value, details = score_risk(subject.files, cfg)
        elif category == "ci":
            if not subject.checks:
                skipped[category] = "no check runs"
            else:
                value, details = score_ci(subject.checks)
        elif category == "time_to_green":
            if not subject.checks:
                skipped[category] = "no check runs"
            else:
                value, details = score_time_to_green(
                    subject.checks,
                    target_minutes=float(params["target_minutes"]),
                    max_minutes=float(params["max_minutes"]),
                )
        if value is not None:
            computed.append(CategoryScore(category, _r(value), cfg.weights[category], details))
    weight = sum(c.weight for c in computed)
    composite = _r(sum(c.weight * c.score for c in computed) / weight) if weight else 0.0
    tier = cfg.tier_for(composite) if computed else UNRANKED
    return ScoreResult(subject, cfg.benchmark_version, tuple(computed), composite, tier, skipped)


# --------------------------------------------------------------------------- quality gate

QUALITY_FAILURE_CODE = "CI.QUALITY_GATE_FAILED"


def describe(c: CategoryScore) -> str:
    """One line saying why a category scored what it did."""
    d = c.details
    if c.category == "evidence":
        return "; ".join(d["problems"]) or "evidence block complete"
    if c.category == "minimality":
        return f"{d['lines']} lines / {d['files']} files (budget {d['budget_lines']} / {d['budget_files']})"
    if c.category == "risk":
        return ", ".join(f"{f['path']} ({f['glob']} -{f['penalty']:g})" for f in d["risky_files"]) or "no risky path"
    if c.category == "ci":
        return f"{d['passed']}/{d['checks']} checks green" + (
            f"; failing {', '.join(d['failed'])}" if d["failed"] else ""
        )
    if c.category == "time_to_green":
        if not d["green"]:
            return "never green"
        return f"green after {d['minutes']} min" if d.get("minutes") is not None else d.get("reason", "green")
    return ""


def repository_of(subject: str) -> str | None:
    """``OWNER/NAME`` of a ``github:OWNER/NAME#N`` subject."""
    match = re.fullmatch(r"github:([\w.-]+/[\w.-]+)#\d+", subject)
    return match.group(1) if match else None


def quality_gate(results: Sequence[ScoreResult], cfg: BenchmarkConfig, *, threshold: float | None = None) -> GateResult:
    """``gate quality``: every subject's composite at or above its repository's threshold
    (``quality_gate`` in the benchmark config, or ``threshold``); the reasons of a subject
    below it are its categories under 100, worst first."""
    problems: list[GateProblem] = []
    facts = []
    for result in results:
        name = result.subject.subject
        limit = threshold if threshold is not None else cfg.threshold_for(repository_of(name))
        facts.append({"subject": name, "composite": result.composite, "threshold": limit, "tier": result.tier})
        if not result.categories:
            problems.append(GateProblem(name, None, "quality score cannot be computed: nothing to score"))
            continue
        if result.composite >= limit:
            continue
        problems.append(
            GateProblem(
                name,
                None,
                f"quality score {result.composite:.2f} is below the threshold {limit:g} (tier {result.tier})",
            )
        )
        for c in sorted(result.categories, key=lambda c: (c.score, -c.weight)):
            if c.score < 100:
                problems.append(
                    GateProblem(name, None, f"{c.category} {c.score:.2f} (weight {c.weight:g}): {describe(c)}")
                )
        for category, why in result.skipped.items():
            problems.append(GateProblem(name, None, f"{category} not scored: {why}"))
    subject = ", ".join(r.subject.subject for r in results) or "no subject"
    return GateResult("quality", QUALITY_FAILURE_CODE, subject, problems, {"scores": facts})


# --------------------------------------------------------------------------- storage


def store_result(conn, result: ScoreResult) -> None:
    """Upsert one row per scored category; drop rows of categories no longer scored."""
    s = result.subject
    with conn, conn.cursor() as cur:
        for c in result.categories:
            cur.execute(
                sql("upsert_benchmark_result"),
                {
                    "subject": s.subject,
                    "run_id": s.run_id,
                    "agent": s.agent,
                    "variant_id": s.variant_id,
                    "benchmark_version": result.benchmark_version,
                    "category": c.category,
                    "score": c.score,
                    "weight": c.weight,
                    "composite": result.composite,
                    "tier": result.tier,
                    "details": json.dumps({**c.details, "not_scored": result.skipped}, sort_keys=True, default=str),
                },
            )
        cur.execute(
            "DELETE FROM ops.agent_benchmark_results WHERE subject = %s AND benchmark_version = %s "
            "AND NOT (category = ANY(%s))",
            (s.subject, result.benchmark_version, [c.category for c in result.categories]),
        )


def subjects_from_runs(
    conn, *, run_ids: Iterable[str] = (), variant: str | None = None, all_runs: bool = False
) -> list[Subject]:
    """Agent runs whose ``metadata.pr`` holds the PR-shaped change (see :class:`Subject`)."""
    wanted = list(run_ids)
    with conn, conn.cursor() as cur:
        cur.execute(sql("runs_to_score"), {"run_ids": wanted or None, "variant": variant, "all": all_runs})
        rows = cur.fetchall()
    found = {row[0] for row in rows}
    missing = [r for r in wanted if r not in found]
    if missing:
        raise LookupError(f"no agent run with a metadata.pr block: {', '.join(missing)}")
    subjects = []
    for run_id, agent, metadata in rows:
        subjects.append(
            Subject.from_mapping(
                metadata["pr"],
                subject=f"run:{run_id}",
                run_id=run_id,
                agent=agent,
                variant_id=metadata.get("variant_id"),
            )
        )
    return subjects
