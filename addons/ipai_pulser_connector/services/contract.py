"""The result contract written on every intent after an attempt.

success: ``{ok: true, intent, trace, data, evidence}``
failure: ``{ok: false, intent, trace, error: {code, message, details, retryable}, evidence}``

The failure side is derived from the v1 failure envelope (``ipai_ops.envelope``),
so the error a person reads in the result and the one deduplicated in
``ops.agent_errors`` are the same, redacted and capped once.
"""

from __future__ import annotations

from typing import Any

from ipai_ops.envelope import cap_evidence

CONTRACT_VERSION = "1.0"


def occurrence_id(dbname: str, intent_id: int, attempt: int) -> str:
    """Key of one attempt in ops.agent_error_occurrences: a re-run of the same attempt
    does not count twice, a new attempt does."""
    return f"intent:{dbname}:{intent_id}:attempt:{attempt}"


def evidence(
    *,
    exit_code: int,
    duration_ms: float,
    stdout_tail: str | None = None,
    stderr_tail: str | None = None,
    tool_calls: list | None = None,
    tokens: Any = None,
    model: str | None = None,
    artifacts: list | None = None,
    links: list | None = None,
) -> dict[str, Any]:
    return {
        "exit_code": exit_code,
        "duration_ms": round(max(duration_ms, 0.0), 3),
        "stdout_tail": stdout_tail,
        "stderr_tail": stderr_tail,
        "tool_calls": list(tool_calls or []),
        "tokens": tokens,
        "model": model,
        "artifacts": list(artifacts or []),
        "links": list(links or []),
    }


def success(intent: dict, trace: dict, data: dict, ev: dict) -> dict[str, Any]:
    return {
        "contract_version": CONTRACT_VERSION,
        "ok": True,
        "intent": intent,
        "trace": trace,
        "data": data,
        "evidence": cap_evidence(ev),
    }


def failure(intent: dict, trace: dict, envelope: dict) -> dict[str, Any]:
    err = envelope["error"]
    return {
        "contract_version": CONTRACT_VERSION,
        "ok": False,
        "intent": intent,
        "trace": trace,
        "error": {
            "code": err["code"],
            "message": err["message"],
            "details": err.get("details"),
            "retryable": err["retryable"],
            "runbook": err.get("runbook"),
            "fingerprint": err.get("fingerprint"),
        },
        "evidence": envelope["evidence"],
    }


RESULT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["ok", "intent", "trace", "evidence"],
    "properties": {
        "ok": {"type": "boolean"},
        "intent": {"type": "object", "required": ["id", "ref", "type", "attempt"]},
        "trace": {"type": "object", "required": ["work_item_ref", "run_id", "correlation_id"]},
        "data": {"type": "object"},
        "error": {"type": "object", "required": ["code", "message", "details", "retryable"]},
        "evidence": {"type": "object"},
    },
    "oneOf": [
        {"properties": {"ok": {"const": True}}, "required": ["data"], "not": {"required": ["error"]}},
        {"properties": {"ok": {"const": False}}, "required": ["error"], "not": {"required": ["data"]}},
    ],
}
