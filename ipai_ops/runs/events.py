"""The run-events protocol: what a command tells the recorder about its own work.

The event types and their fields are specified in docs/agent_runs.md ("Tool calls, tokens,
model: the events protocol"); :func:`parse_events` reads a file of them into an
:class:`EventSummary`. A bad line is a warning, never a reason to stop.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ipai_ops.text import redact, redact_obj

EVENTS_CODE_INVALID = "AGENT.RUN_METADATA_INVALID"
#: At most this much of an events file is read.
MAX_EVENTS_BYTES = 16 * 1024 * 1024
#: Tool calls kept as a list (the newest); all of them are counted and summarised by name.
MAX_TOOL_CALLS_KEPT = 200
MAX_TOOL_NAMES = 100
MAX_WARNINGS = 20
MAX_METADATA_CHARS = 64 * 1024
EVENT_TYPES = ("tool_call", "usage", "metadata", "verification", "output", "session")
#: Checks kept per attempt (all are counted).
MAX_CHECKS = 200
_MAX_EVIDENCE = 2000
_MAX_NAME = 200
_MAX_ERROR = 500
#: Event field -> key in the summed ``tokens``. The summed keys carry no "token": the
#: redactor replaces any number under a key containing "token" (it cannot tell a count
#: from a numeric secret), and these sums go through it on their way into envelopes.
TOKEN_FIELDS = {
    "input_tokens": "input",
    "output_tokens": "output",
    "cache_read_tokens": "cache_read",
    "reasoning_tokens": "reasoning",
}


@dataclass
class EventSummary:
    """Everything usable in one or more events files, summed."""

    lines: int = 0
    valid: int = 0
    tool_call_count: int = 0
    tool_calls_failed: int = 0
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    tool_summary: dict[str, dict[str, Any]] = field(default_factory=dict)
    tokens: dict[str, int] = field(default_factory=dict)
    tokens_by_model: dict[str, dict[str, int]] = field(default_factory=dict)
    models: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    warning_count: int = 0
    #: ``verification`` events: the checks they list, in order (redacted).
    checks: list[dict[str, Any]] = field(default_factory=list)
    check_count: int = 0
    checks_failed: int = 0
    #: The last ``output`` event's ``data`` (raw: validated, then redacted, by the recorder).
    output: Any = None
    has_output: bool = False
    output_count: int = 0
    #: The last ``session`` event's id.
    session_id: str | None = None

    @property
    def unusable(self) -> bool:
        """Lines were written but none of them could be used."""
        return self.lines > 0 and self.valid == 0

    @property
    def model(self) -> str | None:
        """The model that used the most tokens (the last one seen on a tie)."""
        if not self.tokens_by_model:
            return self.models[-1] if self.models else None
        return max(reversed(self.models), key=lambda m: self.tokens_by_model.get(m, {}).get("total", 0))

    def warn(self, message: str) -> None:
        self.warning_count += 1
        if len(self.warnings) < MAX_WARNINGS:
            self.warnings.append(redact(message) or message)

    def tokens_or_none(self) -> dict[str, int] | None:
        return dict(self.tokens) if self.tokens else None

    def merge(self, other: EventSummary) -> None:
        """Add another attempt's summary to this one (the run's totals)."""
        self.lines += other.lines
        self.valid += other.valid
        self.tool_call_count += other.tool_call_count
        self.tool_calls_failed += other.tool_calls_failed
        self.tool_calls = (self.tool_calls + other.tool_calls)[-MAX_TOOL_CALLS_KEPT:]
        for name, item in other.tool_summary.items():
            _add_tool(self.tool_summary, name, item["count"], item["failed"], item["duration_ms"])
        _add_tokens(self.tokens, other.tokens)
        for model, tokens in other.tokens_by_model.items():
            _add_tokens(self.tokens_by_model.setdefault(model, {}), tokens)
        for model in other.models:
            if model in self.models:
                self.models.remove(model)
            self.models.append(model)
        self.metadata.update(other.metadata)
        for warning in other.warnings:
            if len(self.warnings) < MAX_WARNINGS:
                self.warnings.append(warning)
        self.warning_count += other.warning_count
        self.session_id = other.session_id or self.session_id

    def as_metadata(self) -> dict[str, Any]:
        return {
            "tool_call_count": self.tool_call_count,
            "tool_calls_failed": self.tool_calls_failed,
            "tool_calls": self.tool_calls,
            "tool_summary": self.tool_summary,
            "tokens": self.tokens_or_none(),
            "tokens_by_model": self.tokens_by_model or None,
            "events": {"lines": self.lines, "valid": self.valid, "warnings": self.warning_count},
            "event_warnings": self.warnings,
        }


def _add_tokens(into: dict[str, int], add: dict[str, int]) -> None:
    for key, value in add.items():
        into[key] = into.get(key, 0) + value


def _add_tool(summary: dict[str, dict[str, Any]], name: str, count: int, failed: int, duration_ms: float) -> None:
    item = summary.get(name)
    if item is None:
        if len(summary) >= MAX_TOOL_NAMES:
            name = "(other)"
            item = summary.get(name)
        if item is None:
            item = summary[name] = {"count": 0, "failed": 0, "duration_ms": 0}
    item["count"] += count
    item["failed"] += failed
    item["duration_ms"] += duration_ms


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0


def _tool_call(event: dict[str, Any], summary: EventSummary, where: str) -> bool:
    name = event.get("name")
    if not isinstance(name, str) or not name.strip():
        summary.warn(f"{where}: tool_call needs a non-empty string 'name'")
        return False
    ok = event.get("ok")
    if ok is not None and not isinstance(ok, bool):
        summary.warn(f"{where}: tool_call 'ok' must be true or false")
        return False
    duration = event.get("duration_ms")
    if duration is not None and not _number(duration):
        summary.warn(f"{where}: tool_call 'duration_ms' must be a number >= 0")
        return False
    call: dict[str, Any] = {"name": redact(name.strip()[:_MAX_NAME])}
    if ok is not None:
        call["ok"] = ok
    if duration is not None:
        call["duration_ms"] = duration
    if isinstance(event.get("error"), str) and event["error"]:
        call["error"] = redact(event["error"][:_MAX_ERROR])
    summary.tool_call_count += 1
    if ok is False:
        summary.tool_calls_failed += 1
    summary.tool_calls.append(call)
    if len(summary.tool_calls) > MAX_TOOL_CALLS_KEPT:
        del summary.tool_calls[0]
    _add_tool(summary.tool_summary, call["name"], 1, int(ok is False), duration or 0)
    return True


def _usage(event: dict[str, Any], summary: EventSummary, where: str) -> bool:
    model = event.get("model")
    if model is not None and (not isinstance(model, str) or not model.strip()):
        summary.warn(f"{where}: usage 'model' must be a non-empty string")
        return False
    counts: dict[str, int] = {}
    for key, name in TOKEN_FIELDS.items():
        value = event.get(key)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            summary.warn(f"{where}: usage {key!r} must be a whole number >= 0")
            return False
        counts[name] = value
    if not counts and model is None:
        summary.warn(f"{where}: usage event has neither token counts nor a model")
        return False
    counts["total"] = counts.get("input", 0) + counts.get("output", 0)
    _add_tokens(summary.tokens, counts)
    if model is not None:
        model = model.strip()[:_MAX_NAME]
        _add_tokens(summary.tokens_by_model.setdefault(model, {}), counts)
        if model in summary.models:
            summary.models.remove(model)
        summary.models.append(model)
    return True


def _metadata(event: dict[str, Any], summary: EventSummary, where: str, reserved: Iterable[str]) -> bool:
    data = event.get("data")
    if not isinstance(data, dict) or not data:
        summary.warn(f"{where}: metadata event needs a non-empty object 'data'")
        return False
    refused = sorted(k for k in data if k in set(reserved))
    if refused:
        summary.warn(f"{where}: metadata keys owned by the recorder are ignored: {', '.join(refused)}")
    kept = {k: v for k, v in data.items() if isinstance(k, str) and k not in set(reserved)}
    if not kept:
        return False
    clean = redact_obj(kept)
    size = len(json.dumps({**summary.metadata, **clean}, default=str))
    if size > MAX_METADATA_CHARS:
        summary.warn(f"{where}: metadata over {MAX_METADATA_CHARS} characters in all; event ignored")
        return False
    summary.metadata.update(clean)
    return True


def _verification(event: dict[str, Any], summary: EventSummary, where: str) -> bool:
    checks = event.get("checks")
    if not isinstance(checks, list) or not checks:
        summary.warn(f"{where}: verification needs a non-empty list 'checks'")
        return False
    kept: list[dict[str, Any]] = []
    for number, check in enumerate(checks, start=1):
        name = check.get("name") if isinstance(check, dict) else None
        if not isinstance(name, str) or not name.strip():
            summary.warn(f"{where}: verification check {number} needs a non-empty string 'name'")
            return False
        if not isinstance(check.get("ok"), bool):
            summary.warn(f"{where}: verification check {name[:_MAX_NAME]!r} needs 'ok': true or false")
            return False
        duration = check.get("duration_ms")
        if duration is not None and not _number(duration):
            summary.warn(f"{where}: verification check {name[:_MAX_NAME]!r} 'duration_ms' must be a number >= 0")
            return False
        item: dict[str, Any] = {"name": redact(name.strip()[:_MAX_NAME]), "ok": check["ok"]}
        evidence = check.get("evidence")
        if evidence is not None:
            text = evidence if isinstance(evidence, str) else json.dumps(evidence, default=str, sort_keys=True)
            item["evidence"] = redact(text[:_MAX_EVIDENCE])
        if duration is not None:
            item["duration_ms"] = duration
        kept.append(item)
    summary.check_count += len(kept)
    summary.checks_failed += sum(1 for c in kept if not c["ok"])
    summary.checks.extend(kept[: max(0, MAX_CHECKS - len(summary.checks))])
    return True


def _output(event: dict[str, Any], summary: EventSummary, where: str) -> bool:
    if "data" not in event:
        summary.warn(f"{where}: output event needs 'data' (the JSON the agent returned)")
        return False
    if summary.has_output:
        summary.warn(f"{where}: a second output event: the last one is kept")
    summary.output, summary.has_output = event["data"], True
    summary.output_count += 1
    return True


def _session(event: dict[str, Any], summary: EventSummary, where: str) -> bool:
    session_id = event.get("id")
    if not isinstance(session_id, str) or not session_id.strip() or len(session_id) > _MAX_NAME:
        summary.warn(f"{where}: session event needs a string 'id' of 1-{_MAX_NAME} characters")
        return False
    summary.session_id = session_id.strip()
    return True


def parse_events(path: Path, *, reserved: Iterable[str] = ()) -> EventSummary:
    """Summarise one events file; a missing file is an empty summary."""
    summary = EventSummary()
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_EVENTS_BYTES + 1)
    except FileNotFoundError:
        return summary
    except OSError as exc:
        summary.warn(f"{path.name}: cannot read: {exc.strerror}")
        return summary
    if len(data) > MAX_EVENTS_BYTES:
        summary.warn(f"{path.name}: larger than {MAX_EVENTS_BYTES} bytes; the rest is ignored")
        data = data[:MAX_EVENTS_BYTES]
        data = data[: data.rfind(b"\n") + 1]
    reserved = tuple(reserved)
    for number, raw in enumerate(data.splitlines(), start=1):
        if not raw.strip():
            continue
        summary.lines += 1
        where = f"{path.name}:{number}"
        try:
            event = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            summary.warn(f"{where}: not JSON ({exc.__class__.__name__}): {raw[:80].decode('utf-8', 'replace')}")
            continue
        if not isinstance(event, dict):
            summary.warn(f"{where}: an event must be a JSON object")
            continue
        kind = event.get("type")
        if kind == "tool_call":
            ok = _tool_call(event, summary, where)
        elif kind == "usage":
            ok = _usage(event, summary, where)
        elif kind == "metadata":
            ok = _metadata(event, summary, where, reserved)
        elif kind == "verification":
            ok = _verification(event, summary, where)
        elif kind == "output":
            ok = _output(event, summary, where)
        elif kind == "session":
            ok = _session(event, summary, where)
        else:
            summary.warn(f"{where}: unknown event type {kind!r} ({', '.join(EVENT_TYPES)})")
            ok = False
        summary.valid += int(ok)
    return summary
