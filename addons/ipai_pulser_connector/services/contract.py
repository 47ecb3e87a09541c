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
from ipai_ops.record import RecordedFailure, failure_from_exception

from .exceptions import HandlerCrashed

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


#: Where a person opens the intent in Odoo; the first link of every attempt's evidence.
INTENT_LINK = "/odoo/action-ipai_pulser_connector.ipai_pulser_intent_action/{}"


def intent_info(intent: Any, attempt: int) -> dict[str, Any]:
    """The ``intent`` member of the result contract, from an intent record (or any object
    with its attributes)."""
    return {
        "id": intent.id,
        "ref": intent.ref,
        "type": intent.intent_type,
        "attempt": attempt,
        "max_attempts": intent.max_attempts,
        "source": intent.source,
    }


def trace_info(dbname: str, intent: Any, attempt: int, ids: tuple[str | None, str | None] = (None, None)) -> dict:
    """The ``trace`` member: the work item, the attempt's run id and the span ``ids``
    (``(trace_id, span_id)``, None outside a recorded span)."""
    trace_id, span_id = ids
    return {
        "work_item_ref": intent.work_item_ref or None,
        "run_id": occurrence_id(dbname, intent.id, attempt),
        "correlation_id": intent.correlation_id,
        "trace_id": trace_id,
        "span_id": span_id,
    }


def attempt_evidence(
    intent_id: int,
    *,
    exit_code: int,
    duration_ms: float,
    stdout: list[str] | None = None,
    tool_calls: list | None = None,
    stacktrace: str | None = None,
) -> dict[str, Any]:
    """The evidence of one attempt: the handler's output lines and tool calls (its
    ``HandlerContext``), the stack trace of a failure, and the intent's link."""
    return evidence(
        exit_code=exit_code,
        duration_ms=duration_ms,
        stdout_tail="\n".join(stdout) if stdout else None,
        stderr_tail=stacktrace,
        tool_calls=tool_calls or [],
        links=[INTENT_LINK.format(intent_id)],
    )


def attempt_failure(
    registry: Any,
    exc: BaseException,
    *,
    dbname: str,
    intent: Any,
    attempt: int,
    ev: dict[str, Any],
    ids: tuple[str | None, str | None] = (None, None),
    stacktrace: str | None = None,
    service_version: str | None = None,
) -> RecordedFailure:
    """The failure of one attempt as every producer records one
    (``ipai_ops.record.failure_from_exception`` with the failure-mode ``registry``): its
    envelope and the occurrence keyed ``intent:<db>:<id>:attempt:<n>``, which the worker
    writes directly and the attempt span's exception event carries."""
    trace_id, span_id = ids
    return failure_from_exception(
        registry,
        exc,
        source="odoo",
        service="odoo",
        occurrence_id=occurrence_id(dbname, intent.id, attempt),
        service_version=service_version,
        env=dbname,
        correlation_id=intent.correlation_id or None,
        trace_id=trace_id,
        span_id=span_id,
        context={
            "intent_id": intent.id,
            "intent_type": intent.intent_type,
            "attempt": attempt,
            "work_item_ref": intent.work_item_ref or None,
        },
        evidence=ev,
        stacktrace=stacktrace or "",
        # An exception escaping a handler that neither a typed failure nor a signature
        # names is, by definition, the handler crashing (registry: INTENT.HANDLER_CRASHED).
        fallback_code=HandlerCrashed.failure_code,
    )


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
