"""A/B comparison of two agent variants from their stored benchmark scores.

Each variant's scored subjects (``ops.agent_benchmark_results.variant_id``, set
from ``ops.agent_runs.metadata.variant_id`` when a run is scored) form one
sample per category. The delta is ``mean(candidate) - mean(baseline)``; its
confidence interval is a percentile bootstrap (both samples resampled with
replacement, independently, ``resamples`` times, from a seeded generator so the
same data always gives the same interval).

The verdict refuses to claim what the data does not support: "better" or
"worse" only when the interval excludes 0 and both variants have at least
``min_runs`` subjects; otherwise "no evidence", with the reason. The composite
is the primary verdict; per-category verdicts are secondary (several intervals
at 95% each will now and then exclude 0 by chance).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ipai_ops.ci._sql import sql

COMPOSITE = "composite"
BETTER, WORSE, NO_EVIDENCE = "better", "worse", "no evidence"


@dataclass(frozen=True)
class CategoryComparison:
    category: str
    n_baseline: int
    n_candidate: int
    mean_baseline: float | None
    mean_candidate: float | None
    delta: float | None
    ci_low: float | None
    ci_high: float | None
    verdict: str
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "category": self.category,
            "n_baseline": self.n_baseline,
            "n_candidate": self.n_candidate,
            "mean_baseline": self.mean_baseline,
            "mean_candidate": self.mean_candidate,
            "delta": self.delta,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "verdict": self.verdict,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class Comparison:
    comparison_id: str
    baseline: str
    candidate: str
    benchmark_version: int
    confidence: float
    resamples: int
    seed: int
    min_runs: int
    categories: tuple[CategoryComparison, ...]

    @property
    def verdict(self) -> CategoryComparison:
        for c in self.categories:
            if c.category == COMPOSITE:
                return c
        raise LookupError("no composite comparison")

    def as_dict(self) -> dict[str, Any]:
        overall = self.verdict
        return {
            "comparison_id": self.comparison_id,
            "baseline": self.baseline,
            "candidate": self.candidate,
            "benchmark_version": self.benchmark_version,
            "confidence": self.confidence,
            "resamples": self.resamples,
            "seed": self.seed,
            "min_runs": self.min_runs,
            "verdict": overall.verdict,
            "summary": summary_line(self),
            "categories": [c.as_dict() for c in self.categories],
        }


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def _quantile(sorted_values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default 'linear' method)."""
    position = q * (len(sorted_values) - 1)
    low = int(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def bootstrap_delta_ci(
    baseline: Sequence[float],
    candidate: Sequence[float],
    *,
    resamples: int,
    confidence: float,
    rng: random.Random,
) -> tuple[float, float]:
    """Percentile-bootstrap interval of mean(candidate) - mean(baseline)."""
    n_a, n_b = len(baseline), len(candidate)
    deltas = []
    for _ in range(resamples):
        a = sum(rng.choices(baseline, k=n_a)) / n_a
        b = sum(rng.choices(candidate, k=n_b)) / n_b
        deltas.append(b - a)
    deltas.sort()
    tail = (1 - confidence) / 2
    return _quantile(deltas, tail), _quantile(deltas, 1 - tail)


def compare_category(
    category: str,
    baseline: Sequence[float],
    candidate: Sequence[float],
    *,
    resamples: int,
    confidence: float,
    seed: int,
    min_runs: int,
) -> CategoryComparison:
    n_a, n_b = len(baseline), len(candidate)
    if not n_a or not n_b:
        return CategoryComparison(
            category,
            n_a,
            n_b,
            _mean(baseline) if n_a else None,
            _mean(candidate) if n_b else None,
            None,
            None,
            None,
            NO_EVIDENCE,
            "one variant has no scores in this category",
        )
    mean_a, mean_b = _mean(baseline), _mean(candidate)
    # A generator per category, seeded by (seed, category): adding a category never
    # changes another category's interval.
    rng = random.Random(f"{seed}:{category}")
    low, high = bootstrap_delta_ci(baseline, candidate, resamples=resamples, confidence=confidence, rng=rng)
    delta = mean_b - mean_a
    level = f"{confidence:.0%}"
    if min(n_a, n_b) < min_runs:
        verdict, reason = NO_EVIDENCE, f"too few runs (baseline {n_a}, candidate {n_b}; need {min_runs} each)"
    elif low > 0:
        verdict, reason = BETTER, f"the {level} interval [{low:+.2f}, {high:+.2f}] lies above 0"
    elif high < 0:
        verdict, reason = WORSE, f"the {level} interval [{low:+.2f}, {high:+.2f}] lies below 0"
    else:
        verdict, reason = NO_EVIDENCE, f"the {level} interval [{low:+.2f}, {high:+.2f}] includes 0"
    return CategoryComparison(
        category,
        n_a,
        n_b,
        round(mean_a, 4),
        round(mean_b, 4),
        round(delta, 4),
        round(low, 4),
        round(high, 4),
        verdict,
        reason,
    )


def comparison_id(
    baseline: str,
    candidate: str,
    benchmark_version: int,
    samples: Mapping[str, Any],
    *,
    resamples: int,
    confidence: float,
    seed: int,
    min_runs: int,
) -> str:
    """Content id: the same inputs and settings give the same id (re-running stores nothing new)."""
    payload = json.dumps(
        [baseline, candidate, benchmark_version, resamples, confidence, seed, min_runs, samples],
        sort_keys=True,
        default=str,
    )
    return "ab1:" + hashlib.sha256(payload.encode()).hexdigest()[:24]


def compare(
    baseline: str,
    candidate: str,
    samples_a: Mapping[str, Mapping[str, float]],
    samples_b: Mapping[str, Mapping[str, float]],
    *,
    benchmark_version: int,
    resamples: int = 5000,
    confidence: float = 0.95,
    seed: int = 0,
    min_runs: int = 5,
) -> Comparison:
    """Compare two variants. ``samples_x``: category -> {subject: score}."""
    categories = sorted(set(samples_a) | set(samples_b), key=lambda c: (c != COMPOSITE, c))
    rows = []
    for category in categories:
        a = [float(v) for _, v in sorted(samples_a.get(category, {}).items())]
        b = [float(v) for _, v in sorted(samples_b.get(category, {}).items())]
        rows.append(
            compare_category(category, a, b, resamples=resamples, confidence=confidence, seed=seed, min_runs=min_runs)
        )
    if COMPOSITE not in categories:
        rows.insert(
            0, CategoryComparison(COMPOSITE, 0, 0, None, None, None, None, None, NO_EVIDENCE, "no scored subjects")
        )
    cid = comparison_id(
        baseline,
        candidate,
        benchmark_version,
        {"a": samples_a, "b": samples_b},
        resamples=resamples,
        confidence=confidence,
        seed=seed,
        min_runs=min_runs,
    )
    return Comparison(cid, baseline, candidate, benchmark_version, confidence, resamples, seed, min_runs, tuple(rows))


def summary_line(result: Comparison) -> str:
    overall = result.verdict
    if overall.verdict == NO_EVIDENCE:
        return f"no evidence that {result.candidate} differs from {result.baseline}: {overall.reason}"
    return (
        f"{result.candidate} is {overall.verdict} than {result.baseline}: composite "
        f"{overall.delta:+.2f} points, {overall.reason}"
    )


# --------------------------------------------------------------------------- storage


def load_samples(
    conn,
    variant: str,
    *,
    benchmark_version: int,
    agent: str | None = None,
) -> dict[str, dict[str, float]]:
    """category -> {subject: score} for one variant, plus ``composite`` per subject."""
    out: dict[str, dict[str, float]] = {}
    with conn, conn.cursor() as cur:
        cur.execute(sql("variant_scores"), {"variant": variant, "version": benchmark_version, "agent": agent})
        for subject, category, score, composite in cur:
            out.setdefault(category, {})[subject] = float(score)
            if composite is not None:
                out.setdefault(COMPOSITE, {})[subject] = float(composite)
    return out


def store_comparison(conn, result: Comparison) -> None:
    with conn, conn.cursor() as cur:
        for c in result.categories:
            cur.execute(
                sql("upsert_ab_comparison"),
                {
                    "comparison_id": result.comparison_id,
                    "baseline": result.baseline,
                    "candidate": result.candidate,
                    "version": result.benchmark_version,
                    "category": c.category,
                    "n_baseline": c.n_baseline,
                    "n_candidate": c.n_candidate,
                    "mean_baseline": c.mean_baseline,
                    "mean_candidate": c.mean_candidate,
                    "delta": c.delta,
                    "ci_low": c.ci_low,
                    "ci_high": c.ci_high,
                    "confidence": result.confidence,
                    "resamples": result.resamples,
                    "seed": result.seed,
                    "verdict": c.verdict,
                    "details": json.dumps({"reason": c.reason, "min_runs": result.min_runs}),
                },
            )
