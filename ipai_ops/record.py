"""Record a failure: the one way an exception becomes an envelope, an ops occurrence and a span event.

Every producer that catches an exception (the service middleware's ``Reporter``, Odoo's
request and cron hooks, the Pulser intent worker, ``ipai.ops.envelope_for_exception``)
goes through two functions here, so one exception gets one code and one fingerprint
whatever the path it took (docs/specs/telemetry_v1.md, "Exceptions"):

* :func:`failure_from_exception` classifies the exception, builds the redacted, capped
  failure envelope and the :class:`~ipai_ops.store.ErrorOccurrence` a direct write
  stores: same classification text (the stack trace), same in-app frame rule
  (:func:`is_app_path`), same attributes;
* :func:`record_on_span` records it on an OpenTelemetry span as the semconv
  ``exception`` event with ``ipai.occurrence_id``, ``ipai.failure.code``,
  ``ipai.failure.fingerprint`` and ``ipai.source``, so the OTLP bridge
  (:mod:`ipai_ops.bridge.extract`) keys the telemetry copy on the direct write's
  ``(source, occurrence_id)`` and counts the failure once.

It lives beside :mod:`ipai_ops.envelope` (the data contract) rather than inside it: it
composes the envelope with the store's occurrence and the OpenTelemetry API.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import sysconfig
import traceback
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any

from opentelemetry.semconv.attributes.exception_attributes import (
    EXCEPTION_MESSAGE,
    EXCEPTION_STACKTRACE,
    EXCEPTION_TYPE,
)
from opentelemetry.trace import Span, Status, StatusCode

from ipai_ops.classify import classify, classify_exception, qualified_type
from ipai_ops.envelope import DEFAULT_CAPS, Caps, build_envelope, iso_utc
from ipai_ops.fingerprint import frames_from_stacktrace
from ipai_ops.registry import Registry
from ipai_ops.semconv import (
    IPAI_CORRELATION_ID,
    IPAI_FAILURE_CODE,
    IPAI_FAILURE_FINGERPRINT,
    IPAI_OCCURRENCE_ID,
    IPAI_SOURCE,
)
from ipai_ops.store import ErrorOccurrence
from ipai_ops.text import redact, tail

log = logging.getLogger(__name__)

#: The stack trace recorded on the span event (the tail: the raising frames are last).
MAX_STACKTRACE_CHARS = 16 * 1024

__all__ = [
    "MAX_STACKTRACE_CHARS",
    "RecordedFailure",
    "failure_from_exception",
    "is_app_path",
    "record_on_span",
    "span_ids",
]


# --------------------------------------------------------------------------- in-app frames


@lru_cache(maxsize=4)
def _library_roots(odoo_packages: tuple[str, ...]) -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    roots = {paths.get(key) for key in ("stdlib", "platstdlib", "purelib", "platlib")}
    for package in odoo_packages:
        # The Odoo server: its ``odoo`` package (with ``odoo/addons/base``) and the standard
        # ``addons`` folder beside it. Addons from any other addons path are the application.
        roots |= {package, os.path.join(os.path.dirname(_slashed(package)), "addons")}
    return tuple(sorted(_slashed(root) + "/" for root in roots if root))


def _odoo_packages() -> tuple[str, ...]:
    """Where the running Odoo's ``odoo`` package lives. Odoo 19's ``odoo`` is a namespace
    package (no ``__file__``): its ``__path__`` says; older ones have an ``__init__.py``."""
    odoo = sys.modules.get("odoo")
    if odoo is None:
        return ()
    found = [str(p) for p in getattr(odoo, "__path__", None) or ()]
    if not found and getattr(odoo, "__file__", None):
        found = [os.path.dirname(odoo.__file__)]
    return tuple(dict.fromkeys(found))


def _slashed(path: str) -> str:
    return os.path.normpath(path).replace("\\", "/").rstrip("/")


def is_app_path(path: str) -> bool:
    """The one in-app rule: is the file of a traceback frame the application's own code?

    Not: the standard library, installed packages (``site-packages``/``dist-packages``),
    frozen or generated code (``<frozen ...>``, ``<string>``) and, in an Odoo process, the
    Odoo server's own framework and standard addons. Their frames move between releases
    of code the application does not own, so a fingerprint over them would split a group
    on an upgrade. Everything else is in-app.
    """
    if not path or path.startswith("<"):
        return False
    normal = _slashed(path)
    if "/site-packages/" in normal or "/dist-packages/" in normal:
        return False
    roots = _library_roots(_odoo_packages())
    return not any(normal.startswith(root) for root in roots)


# --------------------------------------------------------------------------- the failure


@dataclass(frozen=True)
class RecordedFailure:
    """An exception, classified: the envelope, the occurrence a direct write stores, and the
    raw stack trace (the span event carries its redacted tail)."""

    envelope: dict[str, Any]
    occurrence: ErrorOccurrence
    stacktrace: str
    correlation_id: str | None = None

    @property
    def code(self) -> str:
        return self.occurrence.code

    @property
    def fingerprint(self) -> str:
        return self.occurrence.fingerprint

    @property
    def occurrence_id(self) -> str:
        return self.occurrence.occurrence_id


def failure_from_exception(
    registry: Registry,
    exc: BaseException,
    *,
    source: str,
    service: str,
    occurrence_id: str | None = None,
    service_version: str | None = None,
    env: str | None = None,
    correlation_id: str | None = None,
    trace_id: str | None = None,
    span_id: str | None = None,
    context: Mapping[str, Any] | None = None,
    evidence: Mapping[str, Any] | None = None,
    stacktrace: str | None = None,
    details: Any = None,
    in_app: Sequence[str] = (),
    fallback_code: str | None = None,
    occurred_at: datetime | None = None,
    caps: Caps = DEFAULT_CAPS,
) -> RecordedFailure:
    """Classify ``exc`` and build its envelope and its ops occurrence.

    The code: ``exc.failure_code`` when the registry knows it, else the registry's
    signatures over type, message and stack trace, else ``fallback_code`` when given (the
    intent worker: an exception no signature names is the handler crashing), else the
    registry's fallback. The fingerprint: code, type, redacted message and the top frames
    that pass :func:`is_app_path` (and hold one of the ``in_app`` fragments, when a service
    narrows them). ``occurrence_id``: the key of the direct write and of the span event
    (a random UUID when not given). ``context`` adds keys to the envelope's context (the
    keyword arguments win over its keys unless they are None);
    ``evidence`` defaults to the stack trace as ``stderr_tail``; ``details`` to
    ``exc.details``.
    """
    if not isinstance(exc, BaseException):
        raise TypeError(f"failure_from_exception() takes an exception, not {type(exc).__name__}")
    if not source or not service:
        raise ValueError("source and service are required")
    if stacktrace is None:
        stacktrace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    occurrence_id = occurrence_id or str(uuid.uuid4())
    moment = occurred_at or datetime.now(timezone.utc)
    classification = classify_exception(registry, exc, text=stacktrace)
    if classification.is_fallback and fallback_code:
        classification = classify(registry, explicit_code=fallback_code)
    merged = {**(context or {}), "source": source, "service": service}
    for key, value in (
        ("service_version", service_version),
        ("env", env),
        ("correlation_id", correlation_id),
        ("occurrence_id", occurrence_id),
        ("trace_id", trace_id),
        ("span_id", span_id),
    ):
        if value is not None or key not in merged:
            merged[key] = value
    envelope = build_envelope(
        classification,
        message=str(exc) or type(exc).__name__,
        error_type=qualified_type(exc),
        context=merged,
        details=details if details is not None else getattr(exc, "details", None),
        evidence=evidence if evidence is not None else {"stderr_tail": stacktrace},
        frames=frames_from_stacktrace(stacktrace, in_app=tuple(in_app), keep=is_app_path),
        occurred_at=moment,
        caps=caps,
    )
    # Stored as jsonb: whatever a caller put in the context or details must survive JSON.
    envelope = json.loads(json.dumps(envelope, default=str))
    envelope["occurred_at"] = iso_utc(moment)
    occurrence = ErrorOccurrence.from_envelope(envelope, source=source, occurrence_id=occurrence_id, occurred_at=moment)
    return RecordedFailure(envelope, occurrence, stacktrace, correlation_id)


# --------------------------------------------------------------------------- the span


def span_ids(span: Span | None) -> tuple[str | None, str | None]:
    """Lowercase hex trace and span ids of ``span``; ``(None, None)`` without a valid context."""
    ctx = span.get_span_context() if span is not None else None
    if ctx is None or not ctx.is_valid:
        return None, None
    return f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"


def record_on_span(
    span: Span,
    failure: RecordedFailure,
    exc: BaseException,
    *,
    set_status: bool = True,
    timestamp_ns: int | None = None,
) -> bool:
    """Record ``failure`` on ``span``: one ``exception`` event, the ``ipai.*`` keys on the span.

    The event carries the semconv ``exception.type`` / ``exception.message`` /
    ``exception.stacktrace`` (the envelope's redacted message and type, the redacted tail
    of the stack trace: never the raw text) and ``ipai.occurrence_id``,
    ``ipai.failure.code``, ``ipai.failure.fingerprint``, ``ipai.source`` (and
    ``ipai.correlation_id`` when known). The same keys go on the span, so an ERROR span
    whose events were dropped (event limits) lands on the same key; with ``set_status``
    the span's status is ERROR described by the code.

    Returns whether it recorded; never raises (telemetry must not turn a handled failure
    into another one).
    """
    try:
        if span is None or not span.is_recording():
            return False
        occurrence = failure.occurrence
        keys = {
            IPAI_OCCURRENCE_ID: occurrence.occurrence_id,
            IPAI_FAILURE_CODE: occurrence.code,
            IPAI_FAILURE_FINGERPRINT: occurrence.fingerprint,
            IPAI_SOURCE: occurrence.source,
        }
        if failure.correlation_id:
            keys[IPAI_CORRELATION_ID] = failure.correlation_id
        span.record_exception(
            exc,
            attributes={
                EXCEPTION_TYPE: occurrence.error_type or qualified_type(exc),
                EXCEPTION_MESSAGE: occurrence.message,
                EXCEPTION_STACKTRACE: tail(redact(failure.stacktrace), MAX_STACKTRACE_CHARS)[0] or "",
                **keys,
            },
            timestamp=timestamp_ns,
        )
        span.set_attributes(keys)
        if set_status:
            span.set_status(Status(StatusCode.ERROR, occurrence.code))
        return True
    except Exception:
        log.debug("could not record a failure on a span", exc_info=True)
        return False
