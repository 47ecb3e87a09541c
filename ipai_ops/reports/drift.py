"""Drift of the reliability baseline: which metrics of a current baseline report moved beyond
a threshold from the last committed one (``ipai-ops report drift``, ``CI.BASELINE_DRIFT``).

Rates (shares of finished intents) are compared in points: 0.02 -> 0.09 is a move of 0.07,
whatever the base, because a relative move of a small rate (0.001 -> 0.002 is +100%) is noise.
Latencies and retries per intent are compared relative to the baseline. A scope (the whole
report, or one intent type and source) is compared only when both reports finished at least
``min_count`` intents in it, and a latency only when both measured at least that many: a
nightly report of three intents must not page anyone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from ipai_ops.reports.baseline import REPORT_VERSION, InputError

FAILURE_CODE = "CI.BASELINE_DRIFT"
DEFAULT_THRESHOLD = 0.25
DEFAULT_RATE_THRESHOLD = 0.05
DEFAULT_MIN_COUNT = 20

#: (metric, True when a rise is worse): shares of finished intents, compared in points.
RATES = (
    ("completion_rate", False),
    ("error_rate", True),
    ("cancel_rate", True),
    ("dead_letter_rate", True),
)
#: Compared relative to the baseline; each with the sample size it was measured on.
RELATIVE = (
    ("duration_ms.p50", "duration_ms.n"),
    ("duration_ms.p95", "duration_ms.n"),
    ("cancel_latency_ms.p50", "cancel_latency_ms.n"),
    ("cancel_latency_ms.p95", "cancel_latency_ms.n"),
    ("retries_per_intent", "total"),
)


@dataclass(frozen=True)
class Drift:
    """One metric of one scope that moved beyond its threshold."""

    scope: str
    metric: str
    baseline: float
    current: float
    #: points for a rate, a fraction of the baseline otherwise (absolute when the baseline is 0)
    change: float
    threshold: float
    unit: str
    worse: bool

    def format(self) -> str:
        if self.unit == "points":
            moved = f"{self.baseline * 100:.1f}% -> {self.current * 100:.1f}% ({self.change * 100:+.1f} points"
            limit = f"{self.threshold * 100:.1f}"
        else:
            moved = f"{self.baseline:g} -> {self.current:g} ({self.change * 100:+.0f}%"
            limit = f"{self.threshold * 100:.0f}%"
        verdict = "worse" if self.worse else "better"
        return f"{FAILURE_CODE}: {self.scope} {self.metric} {moved}, threshold {limit}), {verdict}"


@dataclass
class DriftResult:
    drifts: list[Drift] = field(default_factory=list)
    compared: int = 0
    #: scopes in one report only, or below min_count in either
    new_scopes: list[str] = field(default_factory=list)
    gone_scopes: list[str] = field(default_factory=list)
    small_scopes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.drifts

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "failure_code": None if self.ok else FAILURE_CODE,
            "compared": self.compared,
            "drifts": [asdict(d) for d in self.drifts],
            "new_scopes": self.new_scopes,
            "gone_scopes": self.gone_scopes,
            "small_scopes": self.small_scopes,
        }


def check_report(doc: Any, name: str) -> dict[str, Any]:
    """``doc`` when it is a baseline report this code reads (``ipai-ops report baseline
    --format json``), else :class:`InputError` naming ``name``."""
    if not isinstance(doc, dict) or doc.get("report") != "baseline" or not isinstance(doc.get("overall"), dict):
        raise InputError(f"{name}: not a baseline report (ipai-ops report baseline --format json)")
    if doc.get("report_version") != REPORT_VERSION:
        raise InputError(f"{name}: report_version {doc.get('report_version')!r}, this ipai-ops reads {REPORT_VERSION}")
    return doc


def _get(summary: Mapping[str, Any], dotted: str) -> float | None:
    value: Any = summary
    for part in dotted.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _metrics(summary: Mapping[str, Any]) -> dict[str, float | None]:
    """The row's own figures plus the two derived ones (dead letters and retries as shares)."""
    finished = _get(summary, "finished") or 0
    total = _get(summary, "total") or 0
    out = {name: _get(summary, name) for name, _ in RATES if name != "dead_letter_rate"}
    out["dead_letter_rate"] = (_get(summary, "dead_letters") or 0) / finished if finished else None
    for name, _ in RELATIVE:
        out[name] = _get(summary, name)
    out["retries_per_intent"] = (_get(summary, "retries") or 0) / total if total else None
    return out


def _scopes(report: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    scopes: dict[str, Mapping[str, Any]] = {"overall": report["overall"]}
    for row in report.get("by_type_source") or []:
        if isinstance(row, Mapping):
            scopes[f"{row.get('intent_type')}/{row.get('source')}"] = row
    return scopes


def compare(
    baseline: Mapping[str, Any],
    current: Mapping[str, Any],
    *,
    threshold: float = DEFAULT_THRESHOLD,
    rate_threshold: float = DEFAULT_RATE_THRESHOLD,
    min_count: int = DEFAULT_MIN_COUNT,
    worse_only: bool = False,
) -> DriftResult:
    """Every metric of ``current`` that moved beyond its threshold from ``baseline``."""
    if threshold <= 0 or rate_threshold <= 0:
        raise ValueError("thresholds must be > 0")
    if bool(baseline.get("anonymised")) != bool(current.get("anonymised")):
        raise InputError(
            "one report is anonymised and the other is not: their client ids cannot be matched "
            "(run both with --anonymise and the same key)"
        )
    result = DriftResult()
    base_scopes, cur_scopes = _scopes(baseline), _scopes(current)
    result.new_scopes = sorted(set(cur_scopes) - set(base_scopes))
    result.gone_scopes = sorted(set(base_scopes) - set(cur_scopes))
    for scope in [s for s in cur_scopes if s in base_scopes]:
        base_row, cur_row = base_scopes[scope], cur_scopes[scope]
        if min(_get(base_row, "finished") or 0, _get(cur_row, "finished") or 0) < min_count:
            result.small_scopes.append(scope)
            continue
        before, after = _metrics(base_row), _metrics(cur_row)
        for name, rise_is_worse in RATES:
            b, c = before[name], after[name]
            if b is None or c is None:
                continue
            result.compared += 1
            change = round(c - b, 6)
            if abs(change) > rate_threshold:
                result.drifts.append(
                    Drift(scope, name, b, c, change, rate_threshold, "points", (change > 0) == rise_is_worse)
                )
        for name, size in RELATIVE:
            b, c = before[name], after[name]
            if b is None or c is None:
                continue
            if min(_get(base_row, size) or 0, _get(cur_row, size) or 0) < min_count:
                continue
            result.compared += 1
            change = round((c - b) / b if b else c - b, 6)
            if abs(change) > threshold:
                result.drifts.append(Drift(scope, name, b, c, change, threshold, "relative", change > 0))
    if worse_only:
        result.drifts = [d for d in result.drifts if d.worse]
    result.small_scopes.sort()
    return result


def render_text(result: DriftResult, *, baseline_name: str) -> str:
    lines = [d.format() for d in result.drifts]
    for label, scopes in (("new", result.new_scopes), ("gone", result.gone_scopes)):
        if scopes:
            lines.append(f"note: {label} since the baseline: {', '.join(scopes)}")
    if result.small_scopes:
        lines.append(f"note: too few finished intents to compare: {', '.join(result.small_scopes)}")
    if result.ok:
        lines.append(f"ok: no drift from {baseline_name} ({result.compared} metric(s) compared)")
    else:
        lines.append(
            f"{FAILURE_CODE}: {len(result.drifts)} metric(s) moved beyond the threshold from {baseline_name} "
            f"({result.compared} compared)"
        )
    return "\n".join(lines) + "\n"
