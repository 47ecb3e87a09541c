"""The committed baseline's pseudonyms (``report baseline --anonymise``) and the drift check
(``report drift``, ``CI.BASELINE_DRIFT``)."""

from __future__ import annotations

import copy
import json

import pytest

from ipai_ops.classify import classify
from ipai_ops.reports import baseline, drift

KEY = "k" * 32  # pragma: allowlist secret


def rec(state, *, type_="odoo.healthcheck", source="pk_live_acme", duration=None, attempts=1, code=None):
    out = {"type": type_, "source": source, "state": state, "attempts": attempts}
    if duration is not None:
        out["duration_ms"] = duration
    if code:
        out["failure_code"] = code
    return out


def records(*, failed=2, succeeded=38, duration=100, dead=0, source="pk_live_acme", type_="odoo.healthcheck"):
    out = [rec("succeeded", duration=duration, source=source, type_=type_) for _ in range(succeeded)]
    out += [rec("failed", duration=duration, code="INTENT.TIMEOUT", source=source, type_=type_) for _ in range(failed)]
    out += [rec("dead", duration=duration, attempts=3, source=source, type_=type_) for _ in range(dead)]
    return out


def report_of(recs, *, key=KEY):
    return baseline.anonymise(baseline.compute(recs), key) if key else baseline.compute(recs)


# --------------------------------------------------------------------------- anonymise


def test_client_ids_are_pseudonyms_stable_under_one_key_and_only_under_it():
    recs = records() + records(source="pk_live_globex", type_="odoo.config.snapshot")
    clear = baseline.compute(recs)
    once, again = report_of(recs), report_of(list(reversed(recs)))
    assert baseline.render_json(once) == baseline.render_json(again)
    other = report_of(recs, key="x" * 32)
    for doc in (once, other):
        text = baseline.render_json(doc) + baseline.render_markdown(doc)
        assert "pk_live_acme" not in text and "pk_live_globex" not in text
        assert doc["anonymised"] == {"fields": ["source"], "method": "hmac-sha256"}
    assert {r["source"] for r in once["by_type_source"]} == {
        baseline.pseudonym("pk_live_acme", KEY.encode()),
        baseline.pseudonym("pk_live_globex", KEY.encode()),
    }
    assert {r["source"] for r in once["by_type_source"]}.isdisjoint(r["source"] for r in other["by_type_source"])
    # only the ids change: every figure is the clear report's
    strip = [{k: v for k, v in r.items() if k != "source"} for r in clear["by_type_source"]]
    assert [{k: v for k, v in r.items() if k != "source"} for r in once["by_type_source"]] == strip
    assert once["overall"] == clear["overall"] and once["top_failure_codes"] == clear["top_failure_codes"]
    assert "Client ids are pseudonyms" in baseline.render_markdown(once)
    assert "Client ids are pseudonyms" not in baseline.render_markdown(clear)


def test_a_short_key_is_refused():
    with pytest.raises(baseline.AnonymisationError, match="at least 16 bytes, it has 5"):
        baseline.anonymise(baseline.compute(records()), "short")


def test_cli_anonymises_with_the_key_from_the_environment(tmp_path, run_cli, monkeypatch):
    path = tmp_path / "intents.json"
    path.write_text(json.dumps(records()))
    md = tmp_path / "report.md"
    monkeypatch.delenv("IPAI_OPS_REPORT_KEY", raising=False)
    result = run_cli("report", "baseline", "--input", str(path), "--anonymise")
    assert result.code == 2 and "$IPAI_OPS_REPORT_KEY" in result.err
    monkeypatch.setenv("IPAI_OPS_REPORT_KEY", KEY)
    result = run_cli(
        "report", "baseline", "--input", str(path), "--anonymise", "--format", "json", "--markdown-output", str(md)
    )
    assert result.code == 0, result.err
    assert "pk_live_acme" not in result.out and "pk_live_acme" not in md.read_text()
    assert json.loads(result.out) == report_of(records())
    assert md.read_text() == baseline.render_markdown(report_of(records()))


# --------------------------------------------------------------------------- drift


def test_the_same_report_does_not_drift():
    result = drift.compare(report_of(records()), report_of(records()))
    assert result.ok and result.compared == 2 * 7  # overall and the one scope, 4 rates + p50/p95 + retries
    assert result.as_dict()["failure_code"] is None


def test_an_error_rate_jump_drifts_for_the_worse_in_points():
    before, after = report_of(records(failed=2, succeeded=38)), report_of(records(failed=8, succeeded=32))
    result = drift.compare(before, after)
    rates = [(d.scope, d.metric, d.unit, d.worse) for d in result.drifts]
    scope = f"odoo.healthcheck/{baseline.pseudonym('pk_live_acme', KEY.encode())}"
    assert ("overall", "error_rate", "points", True) in rates
    assert ("overall", "completion_rate", "points", True) in rates
    assert (scope, "error_rate", "points", True) in rates
    # 5% -> 20% is +15 points; 6 points under a 0.2 threshold would not be
    error = next(d for d in result.drifts if d.scope == "overall" and d.metric == "error_rate")
    assert (error.baseline, error.current, error.change) == (0.05, 0.2, 0.15)
    assert error.format() == (
        "CI.BASELINE_DRIFT: overall error_rate 5.0% -> 20.0% (+15.0 points, threshold 5.0), worse"
    )
    assert drift.compare(before, after, rate_threshold=0.2).ok


def test_a_small_move_is_not_drift():
    assert drift.compare(report_of(records(failed=2, succeeded=38)), report_of(records(failed=3, succeeded=37))).ok


def test_latency_drifts_relative_to_the_baseline_and_better_is_reported_unless_worse_only():
    before, slower = report_of(records(duration=100)), report_of(records(duration=200))
    result = drift.compare(before, slower)
    assert {(d.metric, d.worse) for d in result.drifts} == {("duration_ms.p50", True), ("duration_ms.p95", True)}
    assert result.drifts[0].change == pytest.approx(1.0)
    assert drift.compare(before, slower, threshold=1.0).ok
    faster = drift.compare(slower, before)
    assert faster.drifts and not any(d.worse for d in faster.drifts)
    assert drift.compare(slower, before, worse_only=True).ok


def test_scopes_below_min_count_new_and_gone_are_noted_not_compared():
    small = records(failed=1, succeeded=4, source="pk_small")
    before = report_of(records() + small + records(source="pk_gone"))
    after = report_of(records() + records(failed=4, succeeded=1, source="pk_small") + records(source="pk_new"))
    result = drift.compare(before, after, worse_only=True)
    key = KEY.encode()
    assert result.small_scopes == [f"odoo.healthcheck/{baseline.pseudonym('pk_small', key)}"]
    assert result.new_scopes == [f"odoo.healthcheck/{baseline.pseudonym('pk_new', key)}"]
    assert result.gone_scopes == [f"odoo.healthcheck/{baseline.pseudonym('pk_gone', key)}"]
    # the small scope went from 20% to 80% errors, not compared; the whole report moves 3.5 points
    assert result.ok, result.drifts


def test_reports_that_cannot_be_matched_are_refused():
    with pytest.raises(baseline.InputError, match="one report is anonymised and the other is not"):
        drift.compare(report_of(records()), report_of(records(), key=None))
    with pytest.raises(baseline.InputError, match="not a baseline report"):
        drift.check_report({"report": "other"}, "x.json")
    newer = copy.deepcopy(report_of(records()))
    newer["report_version"] = 99
    with pytest.raises(baseline.InputError, match="report_version 99"):
        drift.check_report(newer, "x.json")


def test_cli_exit_codes_and_output(tmp_path, run_cli):
    before, same, worse = tmp_path / "before.json", tmp_path / "same.json", tmp_path / "worse.json"
    before.write_text(baseline.render_json(report_of(records())))
    same.write_text(baseline.render_json(report_of(records())))
    worse.write_text(baseline.render_json(report_of(records(failed=2, succeeded=30, dead=8))))
    result = run_cli("report", "drift", "--baseline", str(before), "--current", str(same))
    assert result.code == 0 and result.out.startswith(f"ok: no drift from {before} (14 metric(s) compared)")
    result = run_cli("report", "drift", "--baseline", str(before), "--current", str(worse))
    assert result.code == 1
    assert "CI.BASELINE_DRIFT: overall dead_letter_rate 0.0% -> 20.0% (+20.0 points, threshold 5.0), worse" in (
        result.err
    )
    assert (
        result.err.rstrip()
        .splitlines()[-1]
        .startswith(f"CI.BASELINE_DRIFT: 8 metric(s) moved beyond the threshold from {before}")
    )
    result = run_cli("report", "drift", "--baseline", str(before), "--current", str(worse), "--format", "json")
    assert result.code == 1
    doc = json.loads(result.out)
    assert doc["failure_code"] == "CI.BASELINE_DRIFT" and len(doc["drifts"]) == 8
    (tmp_path / "bad.json").write_text("{not json")
    result = run_cli("report", "drift", "--baseline", str(tmp_path / "bad.json"), "--current", str(same))
    assert result.code == 2 and "bad.json:1:2" in result.err
    with pytest.raises(SystemExit) as exit_:
        run_cli("report", "drift", "--baseline", str(before), "--current", str(same), "--rate-threshold", "0")
    assert exit_.value.code == 2


def test_the_drift_verdict_classifies_to_its_code(registry, tmp_path, run_cli):
    before, worse = tmp_path / "before.json", tmp_path / "worse.json"
    before.write_text(baseline.render_json(report_of(records())))
    worse.write_text(baseline.render_json(report_of(records(failed=10, succeeded=30))))
    result = run_cli("report", "drift", "--baseline", str(before), "--current", str(worse))
    assert result.code == 1
    assert classify(registry, text=result.err).code == "CI.BASELINE_DRIFT"
