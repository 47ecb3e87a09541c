"""Telemetry through the OpenTelemetry *API* only.

The SDK (providers, OTLP exporters from ``OTEL_*`` variables) is configured by
ipai_reliability; without it every call here is a no-op. Tests and the benchmark
swap providers with :func:`use_providers` instead of the process-global setters,
which may be called only once per process.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager

from opentelemetry import metrics, propagate, trace

from ipai_ops.record import RecordedFailure, record_on_span
from ipai_ops.record import span_ids as _span_ids
from ipai_ops.semconv import (
    IPAI_CORRELATION_ID,
    IPAI_FAILURE_CODE,
    IPAI_INTENT_ATTEMPT,
    IPAI_INTENT_ID,
    IPAI_INTENT_OUTCOME,
    IPAI_INTENT_TYPE,
)

try:  # semantic-convention constants when available (CONVENTIONS.md)
    from opentelemetry.semconv.attributes.exception_attributes import EXCEPTION_TYPE
except ImportError:  # pragma: no cover
    EXCEPTION_TYPE = "exception.type"

SCOPE = "odoo.addons.ipai_pulser_connector"
SPAN_ATTEMPT = "pulser.intent.attempt"

ATTR_INTENT_ID = IPAI_INTENT_ID
ATTR_INTENT_TYPE = IPAI_INTENT_TYPE
ATTR_ATTEMPT = IPAI_INTENT_ATTEMPT
ATTR_CORRELATION = IPAI_CORRELATION_ID
ATTR_FAILURE_CODE = IPAI_FAILURE_CODE
ATTR_OUTCOME = IPAI_INTENT_OUTCOME

_event_logger = logging.getLogger("odoo.addons.ipai_pulser_connector.audit")

_tracer_provider = None
_meter_provider = None
_instruments: dict | None = None
_enabled = True


def use_providers(tracer_provider=None, meter_provider=None) -> None:
    """Route this module's telemetry to explicit providers (None = the global ones)."""
    global _tracer_provider, _meter_provider, _instruments
    _tracer_provider = tracer_provider
    _meter_provider = meter_provider
    _instruments = None


def set_enabled(enabled: bool) -> None:
    """Switch telemetry off entirely (the benchmark's baseline)."""
    global _enabled
    _enabled = bool(enabled)


def enabled() -> bool:
    return _enabled


def tracer():
    if _tracer_provider is not None:
        return _tracer_provider.get_tracer(SCOPE)
    return trace.get_tracer(SCOPE)


def instruments() -> dict:
    global _instruments
    if _instruments is None:
        meter = _meter_provider.get_meter(SCOPE) if _meter_provider is not None else metrics.get_meter(SCOPE)
        _instruments = {
            "intents": meter.create_counter(
                "pulser.intents", unit="{intent}", description="Intents finished, by type and outcome"
            ),
            "attempt_duration": meter.create_histogram(
                "pulser.intent.attempt.duration", unit="s", description="Duration of one intent attempt"
            ),
            "cancel_latency": meter.create_histogram(
                "pulser.intent.cancel.latency", unit="s", description="Cancel requested -> acknowledged"
            ),
            "retries": meter.create_counter(
                "pulser.intent.retries", unit="{attempt}", description="Attempts requeued for retry"
            ),
            "dead_letters": meter.create_counter(
                "pulser.intent.dead_letters", unit="{intent}", description="Intents dead-lettered"
            ),
        }
    return _instruments


class _NoopSpan:
    def set_attribute(self, *args, **kwargs):
        pass

    def set_attributes(self, *args, **kwargs):
        pass

    def record_exception(self, *args, **kwargs):
        pass

    def set_status(self, *args, **kwargs):
        pass

    def add_event(self, *args, **kwargs):
        pass

    def get_span_context(self):
        return trace.INVALID_SPAN_CONTEXT


@contextmanager
def attempt_span(*, traceparent: str | None, attributes: dict):
    """One span per attempt, child of the caller's ``traceparent`` when it is valid."""
    if not _enabled:
        yield _NoopSpan()
        return
    parent = propagate.extract({"traceparent": traceparent}) if traceparent else None
    with tracer().start_as_current_span(
        SPAN_ATTEMPT,
        context=parent,
        kind=trace.SpanKind.CONSUMER,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        yield span


def record_failure(span, failure: RecordedFailure, exc: BaseException) -> None:
    """Record ``failure`` on the attempt span with the shared occurrence id (ipai_ops.record)."""
    if not _enabled:
        return
    record_on_span(span, failure, exc)


def span_ids(span) -> tuple[str | None, str | None]:
    return _span_ids(span)


def count(name: str, value: float, attributes: dict) -> None:
    if _enabled:
        instruments()[name].add(value, attributes)


def observe(name: str, value: float, attributes: dict) -> None:
    if _enabled:
        instruments()[name].record(value, attributes)


def audit(event_name: str, message: str, **attributes) -> None:
    """An audit log record (``event.name`` = run.state | run.cancel) with structured extras."""
    if not _enabled or not _event_logger.isEnabledFor(logging.INFO):
        return
    extra = {"event.name": event_name}
    extra.update({f"ipai.{k}": v for k, v in attributes.items()})
    _event_logger.info("%s %s", event_name, message, extra=extra)
