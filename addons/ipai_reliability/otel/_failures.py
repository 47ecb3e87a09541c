"""Failures on spans and log records, classified against the failure-mode registry.

One failure may leave two signals: the ``exception`` event this module records on
the request or cron span, and the ERROR log record Odoo writes for the same
exception (``Exception during request handling.``, ``Job ... failed``). The bridge
counts an occurrence per ``(source, ipai.occurrence_id)``, so both carry the same id
(docs/specs/telemetry_v1.md, Exceptions): the id lives on the exception object, set
by whichever of the two sees it first, or earlier by code that wrote the occurrence
to ``ops`` directly and stored its id in ``exc.ipai_occurrence_id``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import uuid
from typing import Any

from opentelemetry.trace import Span, Status, StatusCode

from ipai_ops.semconv import IPAI_FAILURE_CODE, IPAI_FAILURE_FINGERPRINT, IPAI_OCCURRENCE_ID

_logger = logging.getLogger(__name__)
#: Whether a failed classification was already logged at WARNING (once per process).
_classification_warned = False

#: Exception attributes shared with the code that writes ``ops`` rows directly.
EXC_OCCURRENCE_ID = "ipai_occurrence_id"
EXC_FAILURE_CODE = "ipai_failure_code"
EXC_FINGERPRINT = "ipai_fingerprint"
_EXC_FAILURE = "_ipai_failure"
_EXC_RECORDED_ON = "_ipai_otel_recorded_on"


def _stash(exc: BaseException, name: str, value: Any) -> None:
    # Exceptions with __slots__ or read-only attributes keep nothing.
    with contextlib.suppress(AttributeError, TypeError):
        setattr(exc, name, value)


def occurrence_id(exc: BaseException, default: str | None = None) -> str:
    """The exception's occurrence id, assigning ``default`` (or a random one) the first time."""
    occ = getattr(exc, EXC_OCCURRENCE_ID, None)
    if isinstance(occ, str) and occ:
        return occ
    occ = default or f"odoo:{uuid.uuid4().hex}"
    _stash(exc, EXC_OCCURRENCE_ID, occ)
    return occ


def failure_of(
    exc: BaseException,
    *,
    service: str = "odoo",
    trace_id: str | None = None,
    span_id: str | None = None,
    default_occurrence: str | None = None,
):
    """``exc`` classified once (:func:`ipai_ops.record.failure_from_exception`, as every
    producer does): a :class:`~ipai_ops.record.RecordedFailure`, or None when the registry
    is unusable. Kept on the exception, so its span event and its log record agree."""
    failure = getattr(exc, _EXC_FAILURE, None)
    if failure is not None:
        return failure
    try:
        from ipai_ops.record import failure_from_exception
        from ipai_ops.registry import default_registry

        failure = failure_from_exception(
            default_registry(),
            exc,
            source="odoo",
            service=service,
            occurrence_id=occurrence_id(exc, default_occurrence),
            trace_id=trace_id,
            span_id=span_id,
        )
    except Exception:
        # the span keeps the plain exception; said once at WARNING, then at DEBUG
        global _classification_warned
        _logger.log(
            logging.DEBUG if _classification_warned else logging.WARNING,
            "failure classification unavailable: spans carry the exception without a failure code",
            exc_info=True,
        )
        _classification_warned = True
        return None
    code, fingerprint = getattr(exc, EXC_FAILURE_CODE, None), getattr(exc, EXC_FINGERPRINT, None)
    if isinstance(code, str) and isinstance(fingerprint, str):
        # Code that wrote the occurrence directly said what it stored: the telemetry copy agrees.
        occurrence = dataclasses.replace(failure.occurrence, code=code, fingerprint=fingerprint)
        failure = dataclasses.replace(failure, occurrence=occurrence)
    _stash(exc, _EXC_FAILURE, failure)
    _stash(exc, EXC_FAILURE_CODE, failure.code)
    _stash(exc, EXC_FINGERPRINT, failure.fingerprint)
    return failure


def classify(exc: BaseException, *, service: str = "odoo") -> tuple[str | None, str | None]:
    """``(failure code, fingerprint)`` of ``exc``; ``(None, None)`` when the registry is unusable.

    Reuses what a direct ``ops`` write stored on the exception so both paths agree.
    """
    code = getattr(exc, EXC_FAILURE_CODE, None)
    fingerprint = getattr(exc, EXC_FINGERPRINT, None)
    if isinstance(code, str) and isinstance(fingerprint, str):
        return code, fingerprint
    failure = failure_of(exc, service=service)
    return (failure.code, failure.fingerprint) if failure is not None else (None, None)


def record_exception(span: Span, exc: BaseException, *, service: str = "odoo", set_status: bool = True) -> str | None:
    """Record ``exc`` on ``span`` once (:func:`ipai_ops.record.record_on_span`: ``exception``
    event with the ``ipai.*`` attributes, the same keys on the span, status ERROR described by
    the code). Returns the code.

    Never raises: telemetry must not turn a handled failure into a different one.
    """
    try:
        if not span.is_recording():
            return None
        ctx = span.get_span_context()
        if getattr(exc, _EXC_RECORDED_ON, None) == ctx.span_id:
            return getattr(exc, EXC_FAILURE_CODE, None)
        from ipai_ops.record import record_on_span, span_ids

        trace_id, span_id = span_ids(span)
        events = getattr(span, "events", ())
        # The bridge's own id for this event would be the same string; sending it
        # lets the ERROR log record of the same exception carry it too.
        default = f"{ctx.trace_id:032x}:{ctx.span_id:016x}:{len(events)}"
        failure = failure_of(exc, service=service, trace_id=trace_id, span_id=span_id, default_occurrence=default)
        if failure is None:
            span.record_exception(exc, attributes={IPAI_OCCURRENCE_ID: occurrence_id(exc, default)})
            if set_status:
                span.set_status(Status(StatusCode.ERROR, type(exc).__qualname__))
            code = None
        else:
            record_on_span(span, failure, exc, set_status=set_status)
            code = failure.code
        _stash(exc, _EXC_RECORDED_ON, ctx.span_id)
        return code
    except Exception:
        _logger.debug("could not record an exception on a span", exc_info=True)
        return None


class FailureLogFilter(logging.Filter):
    """On the OpenTelemetry log handler: give an exception's log record the ids of its span event,
    and keep this package's own records out (no telemetry about telemetry)."""

    def __init__(self, skip_prefix: str) -> None:
        super().__init__()
        self._skip_prefix = skip_prefix

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith(self._skip_prefix):
            return False
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None:
            try:
                extra = {IPAI_OCCURRENCE_ID: occurrence_id(exc)}
                code = getattr(exc, EXC_FAILURE_CODE, None)
                if isinstance(code, str):
                    extra[IPAI_FAILURE_CODE] = code
                fingerprint = getattr(exc, EXC_FINGERPRINT, None)
                if isinstance(fingerprint, str):
                    extra[IPAI_FAILURE_FINGERPRINT] = fingerprint
                # The handler turns non-standard LogRecord attributes into OTel attributes.
                record.__dict__.update(extra)
            except Exception:
                _logger.debug("could not tag a log record", exc_info=True)
        return True
