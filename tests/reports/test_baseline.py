from __future__ import annotations

import json

import pytest

from ipai_ops.cli import main
from ipai_ops.reports import baseline


def rec(state, *, type_="odoo.healthcheck", source="pk_a", duration=None, attempts=1, code=None, cancel=None):
    out = {"type": type_, "source": source, "state": state, "attempts": attempts}
    if duration is not None:
        out["duration_ms"] = duration
    if code:
        out["failure_envelope"] = {"error": {"code": code}}
    if cancel:
        out["cancel_requested_at"], out["cancel_acknowledged_at"] = cancel
    return out


RECORDS = [
    rec("succeeded", duration=10),
    rec("succeeded", duration=20),
    rec("succeeded", duration=30),
    rec("failed", duration=5, code="INTENT.HANDLER_CRASHED"),
    rec("dead", duration=100, attempts=3, code="INTENT.TIMEOUT"),
    rec("cancelled", cancel=("2026-01-01T00:00:00.000Z", "2026-01-01T00:00:00.250Z")),
    rec("queued", attempts=2, code="INTENT.TIMEOUT"),
    rec("succeeded", type_="odoo.config.snapshot", source="pk_b", duration=7),
]


def test_rates_percentiles_codes():
    report = baseline.compute(RECORDS)
    overall = report["overall"]
    assert overall["total"] == 8
    assert overall["finished"] == 7
    assert overall["in_flight"] == 1
    assert overall["completion_rate"] == round(4 / 7, 4)
    assert overall["error_rate"] == round(2 / 7, 4)
    assert overall["cancel_rate"] == round(1 / 7, 4)
    assert overall["duration_ms"] == {"p50": 10.0, "p95": 100.0, "n": 6}
    assert overall["cancel_latency_ms"] == {"p50": 250.0, "p95": 250.0, "n": 1}
    assert overall["retries"] == 3
    assert overall["dead_letters"] == 1
    assert report["top_failure_codes"] == [
        {"code": "INTENT.TIMEOUT", "count": 2},
        {"code": "INTENT.HANDLER_CRASHED", "count": 1},
    ]
    keys = [(r["intent_type"], r["source"]) for r in report["by_type_source"]]
    assert keys == [("odoo.config.snapshot", "pk_b"), ("odoo.healthcheck", "pk_a")]


def test_nearest_rank_percentile():
    assert baseline.percentile([], 50) is None
    assert baseline.percentile([5], 95) == 5.0
    assert baseline.percentile(range(1, 101), 50) == 50.0
    assert baseline.percentile(range(1, 101), 95) == 95.0


def test_safe_on_missing_and_garbage_fields():
    records = [
        {},
        {"state": "succeeded", "duration_ms": "fast", "attempts": None},
        {"type": 3, "state": None, "cancel_requested_at": "yesterday", "cancel_acknowledged_at": 5},
        {"state": "failed", "result": {"error": {"code": "INTENT.ARGS_INVALID"}}, "duration_ms": -1},
        {"state": "succeeded", "duration_ms": float("nan")},
    ]
    report = baseline.compute(records)
    assert report["overall"]["total"] == 5
    assert report["overall"]["duration_ms"]["n"] == 0
    assert report["top_failure_codes"] == [{"code": "INTENT.ARGS_INVALID", "count": 1}]
    baseline.render_markdown(report)
    assert baseline.compute([])["overall"]["completion_rate"] is None
    assert "No failures." in baseline.render_markdown(baseline.compute([]))


def test_deterministic_whatever_the_order():
    forward = baseline.render_json(baseline.compute(RECORDS))
    backward = baseline.render_json(baseline.compute(list(reversed(RECORDS))))
    assert forward == backward
    assert baseline.render_markdown(baseline.compute(RECORDS)) == baseline.render_markdown(
        baseline.compute(list(reversed(RECORDS)))
    )


@pytest.mark.parametrize("shape", ["array", "object", "jsonl"])
def test_input_shapes(tmp_path, shape):
    path = tmp_path / "intents.json"
    if shape == "array":
        path.write_text(json.dumps(RECORDS))
    elif shape == "object":
        path.write_text(json.dumps({"intents": RECORDS}))
    else:
        path.write_text("\n".join(json.dumps(r) for r in RECORDS) + "\n\n")
    assert len(baseline.load_records(path)) == len(RECORDS)


def test_cli_json_and_markdown(tmp_path, capsys):
    path = tmp_path / "intents.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in RECORDS))
    assert main(["report", "baseline", "--input", str(path), "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["report"] == "baseline"
    assert out["overall"]["dead_letters"] == 1
    assert main(["report", "baseline", "--input", str(path)]) == 0
    text = capsys.readouterr().out
    assert text.startswith("# Pulser intents: reliability baseline")
    assert "| INTENT.TIMEOUT | 2 |" in text


def test_cli_bad_input(tmp_path, capsys):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"state": "queued"}\nnot json\n')
    assert main(["report", "baseline", "--input", str(path)]) == 2
    assert "bad.jsonl:2" in capsys.readouterr().err
    assert main(["report", "baseline", "--input", str(tmp_path / "missing.json")]) == 2


def test_cli_unreadable_input_and_output_are_one_line(tmp_path, capsys):
    binary = tmp_path / "intents.bin"
    binary.write_bytes(b'{"state": "\xd0\x00"}')
    assert main(["report", "baseline", "--input", str(binary)]) == 2
    err = capsys.readouterr().err
    assert "not UTF-8 text" in err and err.count("\n") == 1
    good = tmp_path / "intents.json"
    good.write_text(json.dumps(RECORDS))
    assert main(["report", "baseline", "--input", str(good), "--output", str(tmp_path / "no" / "dir.md")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ipai-ops: error: cannot write") and err.count("\n") == 1
