"""The run-events protocol: tool calls and usage summed, bad lines kept as warnings, never a crash."""

from __future__ import annotations

import json
from pathlib import Path

from ipai_ops.runs.events import MAX_TOOL_CALLS_KEPT, parse_events


def _write(path: Path, *lines: object) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines), encoding="utf-8")
    return path


def test_tool_calls_and_usage_are_summed(tmp_path: Path):
    path = _write(
        tmp_path / "events.jsonl",
        {"type": "tool_call", "name": "read_file", "ok": True, "duration_ms": 12},
        {"type": "tool_call", "name": "read_file", "ok": False, "duration_ms": 3, "error": "api_key=sk-zzzzzzzz"},
        {"type": "tool_call", "name": "run_tests"},
        {"type": "usage", "model": "gpt-4.1", "input_tokens": 1000, "output_tokens": 200},
        {"type": "usage", "model": "gpt-4.1-mini", "input_tokens": 10, "output_tokens": 5, "cache_read_tokens": 7},
        {"type": "usage", "model": "gpt-4.1", "input_tokens": 500, "output_tokens": 100},
    )
    summary = parse_events(path)
    assert (summary.lines, summary.valid, summary.warnings) == (6, 6, [])
    assert (summary.tool_call_count, summary.tool_calls_failed) == (3, 1)
    assert summary.tool_summary["read_file"] == {"count": 2, "failed": 1, "duration_ms": 15}
    assert summary.tokens == {"input": 1510, "output": 305, "cache_read": 7, "total": 1815}
    assert summary.tokens_by_model["gpt-4.1"]["total"] == 1800
    assert summary.model == "gpt-4.1"  # most tokens, not the last one seen
    assert "sk-zzzzzzzz" not in json.dumps(summary.as_metadata())


def test_malformed_lines_are_warnings_and_the_rest_still_counts(tmp_path: Path):
    path = _write(
        tmp_path / "events.jsonl",
        "not json at all",
        "[1, 2]",
        {"type": "tool_call"},
        {"type": "tool_call", "name": "x", "ok": "yes"},
        {"type": "usage", "input_tokens": -1},
        {"type": "usage", "input_tokens": True},
        {"type": "mystery"},
        {"type": "metadata", "data": {"prompt": "fix it", "variant_id": "v9", "code": "overwrite?"}},
        {"type": "tool_call", "name": "ok_tool", "ok": True},
        '{"type": "usage", "output_tokens": 4',
    )
    summary = parse_events(path, reserved={"code"})
    assert summary.lines == 10 and summary.valid == 2
    assert summary.tool_call_count == 1
    assert summary.metadata == {"prompt": "fix it", "variant_id": "v9"}
    assert summary.warning_count == 9
    assert any("events.jsonl:1: not JSON" in w for w in summary.warnings)
    assert any("owned by the recorder are ignored: code" in w for w in summary.warnings)
    assert not summary.unusable


def test_nothing_usable_is_flagged_and_a_missing_file_is_not(tmp_path: Path):
    bad = parse_events(_write(tmp_path / "bad.jsonl", "{", "oops"))
    assert bad.unusable and bad.valid == 0 and bad.warning_count == 2
    missing = parse_events(tmp_path / "absent.jsonl")
    assert not missing.unusable and missing.lines == 0


def test_the_tool_call_list_is_capped_but_every_call_is_counted(tmp_path: Path):
    calls = [{"type": "tool_call", "name": f"t{n % 3}", "ok": True} for n in range(MAX_TOOL_CALLS_KEPT + 50)]
    summary = parse_events(_write(tmp_path / "e.jsonl", *calls))
    assert summary.tool_call_count == MAX_TOOL_CALLS_KEPT + 50
    assert len(summary.tool_calls) == MAX_TOOL_CALLS_KEPT
    assert sum(v["count"] for v in summary.tool_summary.values()) == MAX_TOOL_CALLS_KEPT + 50
