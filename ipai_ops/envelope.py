"""Failure envelopes: the versioned JSON that says exactly why something failed.

Contract: ``ssot/schemas/failure_envelope.schema.json`` (DESIGN.md, "Data
contracts"). Everything that leaves the process through an envelope is
redacted (:func:`ipai_ops.text.redact`) and capped (the *tail* of stdout/stderr is kept;
truncation is recorded in ``evidence.truncated``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any

import jsonschema

from ipai_ops import config
from ipai_ops.classify import Classification
from ipai_ops.fingerprint import fingerprint as make_fingerprint
from ipai_ops.registry import Registry
from ipai_ops.text import head, redact, redact_obj, tail

#: 1.1 adds ``error.family`` and ``evidence.classification`` (the deciding lines and captures);
#: 1.2 adds ``matched_by: model`` with ``evidence.classification.model`` (score, nearest
#: labelled example) and the evidence role ``passed``.
ENVELOPE_VERSION = "1.2"


class EnvelopeInvalid(ValueError):
    """An envelope does not satisfy the schema; ``errors`` holds ``path: message`` lines."""

    def __init__(self, errors: list[str]):
        self.errors = errors
        super().__init__("; ".join(errors))


@dataclass(frozen=True)
class Caps:
    """Size caps, in characters (strings) or entries (lists)."""

    message: int = 2048
    stdout: int = 8192
    stderr: int = 8192
    tool_calls: int = 50
    tool_call_chars: int = 2048
    details: int = 16384


DEFAULT_CAPS = Caps()

# --------------------------------------------------------------------------- caps


def _cap_json(value: Any, limit: int) -> tuple[Any, int | None]:
    encoded = json.dumps(value, default=str, ensure_ascii=False)
    if len(encoded) <= limit:
        return value, None
    return {"truncated_json": encoded[:limit]}, len(encoded)


def cap_evidence(evidence: Mapping[str, Any] | None, caps: Caps = DEFAULT_CAPS) -> dict[str, Any]:
    """Redacted, size-capped copy of an evidence mapping."""
    out: dict[str, Any] = dict(redact_obj(dict(evidence or {})))
    truncated: dict[str, int] = dict(out.pop("truncated", {}) or {})
    for key, limit in (("stdout_tail", caps.stdout), ("stderr_tail", caps.stderr)):
        if isinstance(out.get(key), str):
            out[key], size = tail(out[key], limit)
            if size is not None:
                truncated[key] = size
    calls = out.get("tool_calls")
    if isinstance(calls, list):
        if len(calls) > caps.tool_calls:
            truncated["tool_calls"] = len(calls)
            calls = calls[-caps.tool_calls :]
        out["tool_calls"] = [_cap_json(c, caps.tool_call_chars)[0] for c in calls]
    if truncated:
        out["truncated"] = truncated
    return out


# --------------------------------------------------------------------------- build / validate


def utc_now_iso() -> str:
    return iso_utc(datetime.now(timezone.utc))


def iso_utc(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def clean_text(message: str | None, caps: Caps = DEFAULT_CAPS) -> tuple[str, int | None]:
    """The message an envelope keeps (redacted, capped; the fingerprint's input) and its
    original size when it was cut."""
    return head(redact(message) or "", caps.message)


def envelope_evidence(
    classification: Classification,
    evidence: Mapping[str, Any] | None,
    caps: Caps = DEFAULT_CAPS,
    *,
    message_size: int | None = None,
    details_size: int | None = None,
) -> dict[str, Any]:
    """An envelope's ``evidence``: the caller's (redacted, capped), the sizes of what was cut,
    and the classification's deciding lines and captures (redacted)."""
    ev = cap_evidence(evidence, caps)
    if message_size is not None:
        ev.setdefault("truncated", {})["message"] = message_size
    if details_size is not None:
        ev.setdefault("truncated", {})["details"] = details_size
    if classification.evidence or classification.captures:
        ev["classification"] = redact_obj(classification.evidence_dict())
    return ev


def build_envelope(
    classification: Classification,
    *,
    message: str,
    context: Mapping[str, Any],
    error_type: str | None = None,
    details: Any = None,
    evidence: Mapping[str, Any] | None = None,
    frames: list[str] | tuple[str, ...] = (),
    occurred_at: datetime | str | None = None,
    caps: Caps = DEFAULT_CAPS,
    previous_message: str | None = None,
    normalized_message: str | None = None,
) -> dict[str, Any]:
    """A valid v1 envelope. The fingerprint is computed from the *redacted* message.

    ``previous_message``: the message grouping version 1 chose for this failure, when the
    caller picks it differently now (it feeds ``error.previous_fingerprint`` only).
    ``normalized_message``: ``normalize_message`` of the capped, redacted message, when the
    caller already computed it (the bridge, which keys its caches on it).
    """
    mode = classification.mode
    clean_message, msg_size = clean_text(message, caps)
    clean_details, details_size = _cap_json(redact_obj(details), caps.details)
    ev = envelope_evidence(classification, evidence, caps, message_size=msg_size, details_size=details_size)
    when = occurred_at if isinstance(occurred_at, str) else iso_utc(occurred_at or datetime.now(timezone.utc))
    fingerprint = make_fingerprint(
        code=mode.code,
        error_type=error_type,
        message=clean_message,
        frames=frames,
        normalized_message=normalized_message,
    )
    previous = None
    previous_clean = (
        clean_message if previous_message is None else head(redact(previous_message) or "", caps.message)[0]
    )
    previous_code = classification.grouping_v1_code()
    if previous_code and (previous_code != mode.code or previous_clean != clean_message):
        # The key this failure had under grouping version 1: the writers attach it to that
        # group during the upgrade window (docs/architecture.md, "Grouping versions").
        previous = make_fingerprint(
            code=previous_code,
            error_type=error_type,
            message=previous_clean,
            frames=frames,
            normalized_message=normalized_message if previous_clean == clean_message else None,
        )
    error = {
        "code": mode.code,
        "category": mode.category,
        "severity": mode.severity,
        "retryable": mode.retryable,
        "message": clean_message,
        "error_type": error_type,
        "details": clean_details,
        "runbook": mode.runbook,
        "fingerprint": fingerprint,
        "matched_by": classification.matched_by,
        "signature": classification.signature,
        "family": mode.family,
    }
    if previous:
        error["previous_fingerprint"] = previous
    return {
        "envelope_version": ENVELOPE_VERSION,
        "ok": False,
        "error": error,
        "context": dict(redact_obj(dict(context))),
        "evidence": ev,
        "occurred_at": when,
    }


def envelope_from_exception(
    registry: Registry,
    exc: BaseException,
    *,
    context: Mapping[str, Any],
    evidence: Mapping[str, Any] | None = None,
    stacktrace: str | None = None,
    in_app: tuple[str, ...] = (),
    details: Any = None,
    caps: Caps = DEFAULT_CAPS,
) -> dict[str, Any]:
    """The envelope alone of :func:`ipai_ops.record.failure_from_exception` (the one way to
    record a failure: same classification, same in-app frame rule, same fingerprint).

    ``context`` carries ``source`` and ``service``; without ``stacktrace`` no frames count
    and no stack trace becomes evidence.
    """
    from ipai_ops.record import failure_from_exception

    rest = dict(context)
    return failure_from_exception(
        registry,
        exc,
        source=rest.pop("source", None) or "unknown",
        service=rest.pop("service", None) or "unknown",
        occurrence_id=rest.pop("occurrence_id", None),
        context=rest,
        evidence=evidence if evidence is not None else {},
        stacktrace=stacktrace if stacktrace is not None else "",
        in_app=in_app,
        details=details,
        caps=caps,
    ).envelope


@lru_cache(maxsize=1)
def _validator() -> jsonschema.Draft202012Validator:
    path = config.data_path("ssot", "schemas", "failure_envelope.schema.json")
    schema = json.loads(path.read_text(encoding="utf-8"))
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def envelope_errors(envelope: Any) -> list[str]:
    """Every schema violation as ``/json/path: message``; empty when valid."""
    return [
        f"/{'/'.join(str(p) for p in err.absolute_path)}: {err.message}"
        for err in sorted(_validator().iter_errors(envelope), key=lambda e: list(map(str, e.path)))
    ]


def validate_envelope(envelope: Any) -> None:
    errors = envelope_errors(envelope)
    if errors:
        raise EnvelopeInvalid(errors)
