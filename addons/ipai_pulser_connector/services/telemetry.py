"""Telemetry through the OpenTelemetry *API* only.

The SDK (providers, OTLP exporters from ``OTEL_*`` variables) is configured by
ipai_reliability; without it every call here is a no-op. Tests and the benchmark
swap providers with :func:`use_providers` instead of the process-global setters,
which may be called only once per process.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import contextmanager
from datetime import UTC, datetime

from opentelemetry import metrics, propagate, trace

from ipai_ops.record import RecordedFailure, record_on_span
from ipai_ops.record import span_ids as _span_ids
from ipai_ops.semconv import (
    AUDIT_LOGGER,
    EVENT_NAME,
    IPAI_CORRELATION_ID,
    IPAI_FAILURE_CODE,
    IPAI_INTENT_ATTEMPT,
    IPAI_INTENT_CANCEL_INSTANT,
    IPAI_INTENT_CANCEL_PATH,
    IPAI_INTENT_ID,
    IPAI_INTENT_OUTCOME,
    IPAI_INTENT_STATE,
    IPAI_INTENT_TYPE,
    IPAI_RUN_ID,
)

try:  # semantic-convention constants when available (CONVENTIONS.md)
    from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
    from opentelemetry.semconv.attributes.exception_attributes import EXCEPTION_TYPE
except ImportError:  # pragma: no cover
    ERROR_TYPE = "error.type"
    EXCEPTION_TYPE = "exception.type"

SCOPE = "odoo.addons.ipai_pulser_connector"
SPAN_ATTEMPT = "pulser.intent.attempt"

ATTR_INTENT_ID = IPAI_INTENT_ID
ATTR_INTENT_TYPE = IPAI_INTENT_TYPE
ATTR_ATTEMPT = IPAI_INTENT_ATTEMPT
ATTR_CORRELATION = IPAI_CORRELATION_ID
ATTR_FAILURE_CODE = IPAI_FAILURE_CODE
ATTR_OUTCOME = IPAI_INTENT_OUTCOME

ATTR_CANCEL_PATH = IPAI_INTENT_CANCEL_PATH
ATTR_CANCEL_INSTANT = IPAI_INTENT_CANCEL_INSTANT

#: Outside the ``odoo`` logger on purpose: ipai_reliability exports ``odoo`` records at
#: WARNING and up, and this logger at INFO (the audit trail is INFO by definition).
_event_logger = logging.getLogger(AUDIT_LOGGER)

#: Instrument names, units and bucket boundaries are a contract (docs/specs/telemetry_v1.md;
#: the Grafana dashboards and the runbooks' PromQL use their Prometheus names).
METRIC_INTENTS = "ipai.intents"
METRIC_ATTEMPT_DURATION = "ipai.intent.attempt.duration"
METRIC_CANCEL_LATENCY = "ipai.intent.cancel.latency"
METRIC_RETRIES = "ipai.intent.retries"
METRIC_DEAD_LETTERS = "ipai.intent.dead_letters"
METRIC_QUEUE_DEPTH = "ipai.intent.queue.depth"
METRIC_CLAIM_CONFLICTS = "ipai.intent.claim.conflicts"
#: Seconds. The SDK's default boundaries (0, 5, 10, 25, ... 10000) are made for
#: milliseconds: every sub-5-second value would land in one bucket. The top bucket of the
#: attempt duration is the default lease (300 s).
ATTEMPT_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
#: Seconds. A cooperative cancel waits for the handler's next ``ctx.check()`` (sub-second
#: to a few seconds); a cancel acknowledged by the lease reaper waits for the lease.
CANCEL_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)
#: Cancel paths (``ipai.intent.cancel.path``) by the ``cancel_source`` prefix the caller
#: recorded: the intents API stores ``api:<key id>``, the Odoo button ``ui``.
CANCEL_PATHS = {"api": "api", "ui": "odoo_ui", "odoo_ui": "odoo_ui", "agent": "agent"}
#: Attributes that never become metric attributes (unbounded cardinality), and the one
#: renamed: a failure code is semconv's ``error.type`` on metrics.
_NOT_ON_METRICS = frozenset({IPAI_INTENT_ID, IPAI_CORRELATION_ID, IPAI_INTENT_ATTEMPT, IPAI_RUN_ID})
#: The states counted by ``ipai.intent.queue.depth``.
QUEUE_STATES = ("queued", "assigned", "running")

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
                METRIC_INTENTS, unit="{intent}", description="Intents that reached a terminal state, by outcome"
            ),
            "attempt_duration": meter.create_histogram(
                METRIC_ATTEMPT_DURATION,
                unit="s",
                description="Duration of one intent attempt",
                explicit_bucket_boundaries_advisory=ATTEMPT_DURATION_BUCKETS,
            ),
            "cancel_latency": meter.create_histogram(
                METRIC_CANCEL_LATENCY,
                unit="s",
                description="Cancel requested -> acknowledged, by cancel path",
                explicit_bucket_boundaries_advisory=CANCEL_LATENCY_BUCKETS,
            ),
            "retries": meter.create_counter(
                METRIC_RETRIES, unit="{retry}", description="Failed attempts requeued for a retry"
            ),
            "dead_letters": meter.create_counter(
                METRIC_DEAD_LETTERS, unit="{intent}", description="Intents dead-lettered"
            ),
            "claim_conflicts": meter.create_counter(
                METRIC_CLAIM_CONFLICTS,
                unit="{conflict}",
                description="Claims (or lease reaps) that lost a race to another worker as a serialization failure",
            ),
            "queue_depth": meter.create_observable_gauge(
                METRIC_QUEUE_DEPTH,
                callbacks=[_observe_queue_depth],
                unit="{intent}",
                description="Intents waiting or in progress, by state and type, per database",
            ),
        }
    return _instruments


def metric_attributes(attributes: dict) -> dict:
    """The bounded metric attributes of ``attributes``: ids dropped, the failure code as
    ``error.type`` (docs/specs/telemetry_v1.md, "Metrics")."""
    out = {}
    for key, value in attributes.items():
        if key in _NOT_ON_METRICS or value is None:
            continue
        out[ERROR_TYPE if key == IPAI_FAILURE_CODE else key] = value
    return out


def utcnow() -> datetime:
    """Naive UTC with microseconds, comparable with Odoo's Datetime values (which the ORM's
    ``Datetime.now()`` truncates to the second: too coarse for a cancel latency)."""
    return datetime.now(UTC).replace(tzinfo=None)


def cancel_path(source: str | None) -> str:
    """``api``, ``odoo_ui``, ``agent`` or ``other`` for a recorded ``cancel_source``."""
    prefix = (source or "").partition(":")[0].strip().lower()
    return CANCEL_PATHS.get(prefix, "other")


def cancel_attributes(source: str | None, *, instant: bool) -> dict:
    """Attributes of one cancel: its path, and whether a queued intent was cancelled at once
    (``instant``: no worker held it, latency 0) rather than acknowledged by a worker."""
    return {ATTR_CANCEL_PATH: cancel_path(source), ATTR_CANCEL_INSTANT: bool(instant)}


#: Where ``ipai.intent.queue.depth`` reads, by database name: a database is watched once its
#: worker ran in this process (:func:`watch_queue`). Each reader returns
#: ``(state, intent_type, count)`` rows.
_queue_readers: dict[str, Callable[[], list]] = {}
_QUEUE_DEPTH_SQL = """
    SELECT state, intent_type, count(*) FROM ipai_pulser_intent
     WHERE state = ANY(%s) GROUP BY state, intent_type
"""


def queue_depth(cr) -> list[tuple[str, str, int]]:
    """``(state, intent_type, count)`` of the intents waiting or in progress."""
    cr.execute(_QUEUE_DEPTH_SQL, [list(QUEUE_STATES)])
    return cr.fetchall()


def _odoo_queue_reader(dbname: str) -> Callable[[], list]:
    def read() -> list:
        from odoo.modules.registry import Registry  # here only: this module imports no Odoo at load

        with Registry(dbname).cursor() as cr:  # short, read-only, its own transaction
            return queue_depth(cr)

    return read


def watch_queue(dbname: str, reader: Callable[[], list] | None = None) -> None:
    """Report the queue depth of ``dbname`` from now on (the worker calls it with Odoo's
    registry cursor; a test may give any reader of the same rows)."""
    if dbname and (reader is not None or dbname not in _queue_readers):
        _queue_readers[dbname] = reader or _odoo_queue_reader(dbname)
    if _enabled:
        instruments()  # the gauge exists from the first worker run, not the first finished intent


def unwatch_queue(dbname: str) -> None:
    _queue_readers.pop(dbname, None)


#: Databases whose queue depth could not be read at the last collection.
_queue_unreadable: set[str] = set()


def _observe_queue_depth(_options):
    """Collection callback (the metric reader's thread). A database that cannot be read is
    skipped until the next collection: a collection never raises into the SDK."""
    for dbname, read in sorted(_queue_readers.items()):
        try:
            rows = read()
        except Exception:
            # once per database at WARNING (a lasting failure is seen), then at DEBUG
            level = logging.DEBUG if dbname in _queue_unreadable else logging.WARNING
            _queue_unreadable.add(dbname)
            logging.getLogger(__name__).log(level, "queue depth of %s not read", dbname, exc_info=True)
            continue
        _queue_unreadable.discard(dbname)
        seen = set()
        for state, intent_type, number in rows:
            seen.add(state)
            yield metrics.Observation(number, {IPAI_INTENT_STATE: state, IPAI_INTENT_TYPE: intent_type})
        for state in QUEUE_STATES:
            if state not in seen:  # an empty queue is 0, not a missing series
                yield metrics.Observation(0, {IPAI_INTENT_STATE: state, IPAI_INTENT_TYPE: ""})


@contextmanager
def attempt_span(*, traceparent: str | None, attributes: dict):
    """One span per attempt, child of the caller's ``traceparent`` when it is valid."""
    if not _enabled:
        # the API's own non-recording span: every method a no-op, an invalid context
        yield trace.INVALID_SPAN
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
        instruments()[name].add(value, metric_attributes(attributes))


def observe(name: str, value: float, attributes: dict) -> None:
    if _enabled:
        instruments()[name].record(value, metric_attributes(attributes))


def audit(event_name: str, message: str, *, intent_id: int, run_id: str | None = None, **attributes) -> None:
    """An audit log record (``event.name`` = run.state | run.cancel) on the ``ipai.audit``
    logger, always carrying the intent id (and the run id when there is one) so the trail
    of one intent can be read back from any log backend."""
    if not _enabled or not _event_logger.isEnabledFor(logging.INFO):
        return
    if not intent_id:
        raise ValueError(f"audit event {event_name!r} without an intent id")
    extra = {EVENT_NAME: event_name, IPAI_INTENT_ID: int(intent_id)}
    if run_id:
        extra[IPAI_RUN_ID] = str(run_id)
    extra.update({f"ipai.{k}": v for k, v in attributes.items() if v is not None})
    _event_logger.info("%s %s intent=%s", event_name, message, intent_id, extra=extra)
