"""Which OTLP records are errors, and the ops occurrences they become.

Selection (docs/specs/telemetry_v1.md, "How the bridge turns telemetry into ops rows"):

* an ``exception`` span event (semconv exception attributes) is one occurrence, whatever
  the span's status: the producer chose to record it;
* a span with status ERROR and *no* exception event is one occurrence built from its
  status description and ``error.type``; an ERROR span *with* exception events is
  counted through its events only, so one failure is never counted twice; an event
  without ``ipai.occurrence_id`` repeating the type and message of one with it on the
  same span is an instrumentation's echo of a reported failure and is dropped;
* a log record with ``severity_number >= 17`` (ERROR..FATAL4; or an unset number with an
  ERROR/FATAL/CRITICAL severity text) is one occurrence, except audit events
  (``event.name`` ``run.state`` / ``run.cancel``).

Occurrence ids (``ipai.occurrence_id`` on the record always wins: it lets a producer
that also wrote the failure directly hit the same key), lowercase hex ids:

* ERROR span: ``span:<trace_id>:<span_id>``
* exception event: ``event:<trace_id>:<span_id>:<0-based index in the span's events>``
  (an exported span is immutable, so the index is stable across redeliveries)
* log record: ``log:<trace_id>:<span_id>:<time_unix_nano>:<h>`` where ids are all-zero
  hex without trace context, the time falls back to ``observed_time_unix_nano``, and
  ``h`` is the first 16 hex digits of sha1(body text + "\\x1f" + severity_number).

The key is ``(source, occurrence_id)``; ``source`` is the record's ``ipai.source``
attribute, else the resource's, else the configured default (``otlp``). A redelivered
batch therefore inserts nothing and counts nothing.

Code: an explicit ``ipai.failure.code`` (else ``error.type``) that the registry knows,
else signature classification over exception type / message / stacktrace or log body,
else the fallback (:func:`ipai_ops.classify.classify`). Fingerprint:
``ipai.failure.fingerprint`` when sent, else the envelope's (:mod:`ipai_ops.fingerprint`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache, partial
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Status
from opentelemetry.semconv.attributes.deployment_attributes import DEPLOYMENT_ENVIRONMENT_NAME
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.semconv.attributes.exception_attributes import (
    EXCEPTION_MESSAGE,
    EXCEPTION_STACKTRACE,
    EXCEPTION_TYPE,
)
from opentelemetry.semconv.attributes.service_attributes import SERVICE_NAME, SERVICE_VERSION

from ipai_ops.bridge.skeleton import trace_errors_possible
from ipai_ops.classify import classify
from ipai_ops.envelope import Caps, build_envelope
from ipai_ops.fingerprint import frames_from_stacktrace
from ipai_ops.semconv import (
    AUDIT_EVENTS,
    EVENT_NAME,
    EXCEPTION_EVENT,
    IPAI_CORRELATION_ID,
    IPAI_FAILURE_CODE,
    IPAI_FAILURE_FINGERPRINT,
    IPAI_OCCURRENCE_ID,
    IPAI_SOURCE,
)
from ipai_ops.taxonomy import Registry

DEFAULT_SERVICE = "unknown_service"

#: SeverityNumber ERROR (logs data model): 17..24 are ERROR..FATAL4.
SEVERITY_ERROR = 17
_ERROR_SEVERITY_TEXTS = frozenset({"ERROR", "FATAL", "CRITICAL", "ALERT", "EMERGENCY", "PANIC"})
_STATUS_ERROR = Status.STATUS_CODE_ERROR

_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
#: Bounded work per record: classification and frames see at most this much text.
MAX_TEXT = 64 * 1024
#: Deepest AnyValue rendered as text (protobuf decoding already bounds nesting at 100).
MAX_ANY_DEPTH = 16
MAX_ID_CHARS = 512
MAX_SOURCE_CHARS = 64
MAX_SERVICE_CHARS = 256
#: The ``sample`` envelope is kept small: it is stored on every touched error row.
SAMPLE_CAPS = Caps(message=1024, stdout=1024, stderr=4096, tool_calls=0, tool_call_chars=256, details=1024)


@dataclass
class Extraction:
    """The occurrences of one request, and the records refused (OTLP partial success)."""

    occurrences: list[dict[str, Any]] = field(default_factory=list)
    rejected: Counter[str] = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)

    @property
    def rejected_count(self) -> int:
        return sum(self.rejected.values())

    def reject(self, reason: str, note: str) -> None:
        self.rejected[reason] += 1
        if len(self.notes) < 5:
            self.notes.append(note)

    def message(self) -> str:
        if not self.rejected:
            return ""
        return f"{self.rejected_count} record(s) not stored: " + "; ".join(self.notes)


# --------------------------------------------------------------------------- values


def _clean(text: str) -> str:
    """PostgreSQL text and jsonb refuse NUL, which both OTLP encodings carry.

    Lone surrogates never get this far: both protobuf backends refuse a string field
    that is not UTF-8, and the JSON parser refuses an unpaired ``\\ud800`` (400).
    """
    if "\x00" in text:
        return text.replace("\x00", "\ufffd")
    return text


def _plain(value: AnyValue, depth: int) -> Any:
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind in ("int_value", "double_value", "bool_value"):
        return getattr(value, kind)
    if kind == "bytes_value":
        return value.bytes_value[:1024].hex()
    if depth >= MAX_ANY_DEPTH:
        return "[TRUNCATED:depth]"
    if kind == "array_value":
        return [_plain(v, depth + 1) for v in value.array_value.values[:256]]
    if kind == "kvlist_value":
        return {kv.key: _plain(kv.value, depth + 1) for kv in value.kvlist_value.values[:256]}
    return None


def any_text(value: AnyValue | None) -> str:
    """An AnyValue as text: strings as they are, everything else as canonical JSON."""
    if value is None:
        return ""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return _clean(value.string_value)
    if kind is None:
        return ""
    plain = _plain(value, 0)
    if isinstance(plain, str):
        return _clean(plain)
    return _clean(json.dumps(plain, sort_keys=True, separators=(",", ":"), default=str)[:MAX_TEXT])


def _attrs(attributes: Any) -> dict[str, AnyValue]:
    # Later duplicates win, like the SDKs' attribute maps; keys are looked up, not iterated.
    return {kv.key: kv.value for kv in attributes}


def _str_attr(attrs: dict[str, AnyValue], key: str) -> str | None:
    value = attrs.get(key)
    if value is None:
        return None
    text = any_text(value)
    return text or None


def _first(*values: str | None) -> str | None:
    for value in values:
        if value:
            return value
    return None


def _iso_us(moment: datetime) -> str:
    # Microseconds (PostgreSQL's resolution), so "latest occurrence" ties are rare.
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def _when(nanos: int) -> str:
    if nanos <= 0:
        return _iso_us(datetime.now(timezone.utc))
    try:
        return _iso_us(datetime.fromtimestamp(nanos // 1000 / 1e6, tz=timezone.utc))
    except (OverflowError, OSError, ValueError):
        return _iso_us(datetime.now(timezone.utc))


def thin_samples(occurrences: list[dict[str, Any]]) -> None:
    """Keep the ``sample`` only where the batch writer can use it, to shrink the write.

    ``ops.write_agent_errors`` stores the sample of each error's *latest* new occurrence
    (and keeps the stored one when that is null). Only the occurrences at their
    fingerprint's latest ``occurred_at`` in this batch can be that one, so every
    other sample is dropped before encoding: about half the write cost when a
    fingerprint repeats within a batch.
    """
    latest: dict[str, str] = {}
    for occ in occurrences:
        fp, when = occ["fingerprint"], occ["occurred_at"]
        if when > latest.get(fp, ""):
            latest[fp] = when
    for occ in occurrences:
        if occ["occurred_at"] != latest[occ["fingerprint"]]:
            occ["sample"] = None


@dataclass(frozen=True)
class _Resource:
    source: str
    service: str
    version: str | None
    env: str | None


def _resource(resource: Any, default_source: str) -> _Resource:
    attrs = _attrs(resource.attributes)
    return _Resource(
        source=((_str_attr(attrs, IPAI_SOURCE) or "").strip() or default_source)[:MAX_SOURCE_CHARS],
        service=(_str_attr(attrs, SERVICE_NAME) or DEFAULT_SERVICE)[:MAX_SERVICE_CHARS],
        version=(_str_attr(attrs, SERVICE_VERSION) or None),
        env=_str_attr(attrs, DEPLOYMENT_ENVIRONMENT_NAME),
    )


def _valid_ids(trace_id: bytes, span_id: bytes, *, required: bool) -> bool:
    """OTLP trace.proto: trace_id is 16 bytes, span_id 8 bytes; empty only where optional (logs)."""
    if required:
        return len(trace_id) == 16 and len(span_id) == 8
    return len(trace_id) in (0, 16) and len(span_id) in (0, 8)


# --------------------------------------------------------------------------- classification (cached)


@dataclass(frozen=True)
class _Template:
    code: str
    severity: str
    fingerprint: str
    message: str
    error_type: str | None
    sample: dict[str, Any]
    previous_fingerprint: str | None = None


def _template(
    registry: Registry,
    *,
    explicit_code: str | None,
    error_type: str | None,
    message: str,
    stacktrace: str | None,
    text: str | None,
    fingerprint: str | None,
    source: str,
    service: str,
    version: str | None,
    env: str | None,
    details: tuple[tuple[str, str], ...],
) -> _Template:
    """Everything about an occurrence that does not depend on its ids and time.

    Classification, normalisation and redaction cost tens of microseconds; a stream of
    errors repeats few distinct shapes, so they are computed once per shape.
    """
    classification = classify(registry, explicit_code=explicit_code, error_type=error_type, message=message, text=text)
    context = {"source": source, "service": service, "service_version": version, "env": env}
    envelope = build_envelope(
        classification,
        message=message or classification.code,
        error_type=error_type,
        context=context,
        details=dict(details),
        evidence={"stderr_tail": stacktrace} if stacktrace else None,
        frames=frames_from_stacktrace(stacktrace),
        occurred_at="1970-01-01T00:00:00.000Z",
        caps=SAMPLE_CAPS,
    )
    error = envelope["error"]
    return _Template(
        code=classification.code,
        severity=classification.mode.severity,
        fingerprint=fingerprint or error["fingerprint"],
        message=error["message"],
        error_type=error_type,
        sample=envelope,
        # A producer's own fingerprint is its key; otherwise grouping version 1's key
        # attaches this failure to its existing group (migration 0006).
        previous_fingerprint=None if fingerprint else error.get("previous_fingerprint"),
    )


class Extractor:
    """Turns decoded export requests into ops occurrence dicts (``store.write_batch`` input)."""

    def __init__(self, registry: Registry, *, default_source: str = "otlp") -> None:
        self.registry = registry
        self.default_source = default_source
        # Per instance, so the (large, slow to hash) registry is not part of the cache key.
        self._template = lru_cache(maxsize=8192)(partial(_template, registry))

    def _occurrence(
        self,
        *,
        resource: _Resource,
        attrs: dict[str, AnyValue],
        parent_attrs: dict[str, AnyValue] | None,
        occurrence_id: str,
        trace_hex: str | None,
        span_hex: str | None,
        nanos: int,
        error_type: str | None,
        message: str,
        stacktrace: str | None,
        text: str | None,
        details: tuple[tuple[str, str], ...],
    ) -> dict[str, Any]:
        parent = parent_attrs or {}
        explicit = _first(
            _str_attr(attrs, IPAI_FAILURE_CODE),
            _str_attr(parent, IPAI_FAILURE_CODE),
            _str_attr(attrs, ERROR_TYPE),
            _str_attr(parent, ERROR_TYPE),
        )
        source = ((_str_attr(attrs, IPAI_SOURCE) or "").strip() or resource.source)[:MAX_SOURCE_CHARS]
        occurrence_id = ((_str_attr(attrs, IPAI_OCCURRENCE_ID) or "").strip() or occurrence_id)[:MAX_ID_CHARS]
        template = self._template(
            explicit_code=explicit[:256] if explicit else None,
            error_type=error_type[:1024] if error_type else None,
            message=message[:MAX_TEXT],
            stacktrace=stacktrace[-MAX_TEXT:] if stacktrace else None,
            text=text[:MAX_TEXT] if text else None,
            fingerprint=(_str_attr(attrs, IPAI_FAILURE_FINGERPRINT) or "").strip()[:128] or None,
            source=source,
            service=resource.service,
            version=resource.version,
            env=resource.env,
            details=details,
        )
        occurred_at = _when(nanos)
        sample = dict(template.sample)
        correlation_id = _str_attr(attrs, IPAI_CORRELATION_ID) or _str_attr(parent, IPAI_CORRELATION_ID)
        sample["context"] = {
            **template.sample["context"],
            "correlation_id": correlation_id[:MAX_ID_CHARS] if correlation_id else None,
            "occurrence_id": occurrence_id,
            "trace_id": trace_hex,
            "span_id": span_hex,
        }
        sample["occurred_at"] = occurred_at
        return {
            "source": source,
            "occurrence_id": occurrence_id,
            "fingerprint": template.fingerprint,
            "code": template.code,
            "severity": template.severity,
            "message": template.message,
            "error_type": template.error_type,
            "service": resource.service,
            "service_version": resource.version,
            "occurred_at": occurred_at,
            "trace_id": trace_hex,
            "span_id": span_hex,
            "sample": sample,
            "previous_fingerprint": template.previous_fingerprint,
        }

    # ----------------------------------------------------------------------- traces

    def traces(self, request: Any, *, raw: bytes | None = None) -> Extraction:
        out = Extraction()
        if raw is not None and not trace_errors_possible(raw):
            return out
        for rs in request.resource_spans:
            resource: _Resource | None = None
            for ss in rs.scope_spans:
                for span in ss.spans:
                    is_error = span.status.code == _STATUS_ERROR
                    if not is_error and not span.events:
                        continue
                    exception_events = [
                        (i, _attrs(ev.attributes)) for i, ev in enumerate(span.events) if ev.name == EXCEPTION_EVENT
                    ]
                    if len(exception_events) > 1:
                        exception_events = _without_echoes(exception_events)
                    if not is_error and not exception_events:
                        continue
                    if not _valid_ids(span.trace_id, span.span_id, required=True):
                        out.reject("invalid_id", "span with a trace_id/span_id of the wrong length")
                        continue
                    if resource is None:
                        resource = _resource(rs.resource, self.default_source)
                    self._span(out, resource, span, exception_events)
        return out

    def _span(
        self, out: Extraction, resource: _Resource, span: Any, events: list[tuple[int, dict[str, AnyValue]]]
    ) -> None:
        """``events``: (index in the span's events, attributes) of its exception events."""
        trace_hex = span.trace_id.hex()
        span_hex = span.span_id.hex()
        span_attrs = _attrs(span.attributes)
        span_name = _clean(span.name[:256])
        details = (("signal", "span"), ("span_name", span_name))
        if not events:
            message = _clean(span.status.message) or f"span {span_name!s} failed"
            out.occurrences.append(
                self._occurrence(
                    resource=resource,
                    attrs=span_attrs,
                    parent_attrs=None,
                    occurrence_id=f"span:{trace_hex}:{span_hex}",
                    trace_hex=trace_hex,
                    span_hex=span_hex,
                    nanos=span.end_time_unix_nano or span.start_time_unix_nano,
                    error_type=_str_attr(span_attrs, ERROR_TYPE),
                    message=message,
                    stacktrace=None,
                    text=None,
                    details=details,
                )
            )
            return
        for index, attrs in events:
            stacktrace = _str_attr(attrs, EXCEPTION_STACKTRACE)
            error_type = _str_attr(attrs, EXCEPTION_TYPE)
            message = (
                _first(_str_attr(attrs, EXCEPTION_MESSAGE), _clean(span.status.message), error_type) or "exception"
            )
            out.occurrences.append(
                self._occurrence(
                    resource=resource,
                    attrs=attrs,
                    parent_attrs=span_attrs,
                    occurrence_id=f"event:{trace_hex}:{span_hex}:{index}",
                    trace_hex=trace_hex,
                    span_hex=span_hex,
                    nanos=span.events[index].time_unix_nano or span.end_time_unix_nano,
                    error_type=error_type,
                    message=message,
                    stacktrace=stacktrace,
                    text=stacktrace,
                    details=(("signal", "exception_event"), details[1]),
                )
            )

    # ----------------------------------------------------------------------- logs

    def logs(self, request: Any) -> Extraction:
        out = Extraction()
        for rl in request.resource_logs:
            resource: _Resource | None = None
            for sl in rl.scope_logs:
                for record in sl.log_records:
                    if not _is_error_log(record):
                        continue
                    attrs = _attrs(record.attributes)
                    event_name = getattr(record, "event_name", "") or _str_attr(attrs, EVENT_NAME)
                    if event_name in AUDIT_EVENTS:
                        continue
                    if not _valid_ids(record.trace_id, record.span_id, required=False):
                        out.reject("invalid_id", "log record with a trace_id/span_id of the wrong length")
                        continue
                    if resource is None:
                        resource = _resource(rl.resource, self.default_source)
                    self._log(out, resource, record, attrs)
        return out

    def _log(self, out: Extraction, resource: _Resource, record: Any, attrs: dict[str, AnyValue]) -> None:
        trace_hex = record.trace_id.hex() or None
        span_hex = record.span_id.hex() or None
        nanos = record.time_unix_nano or record.observed_time_unix_nano
        body = any_text(record.body) if record.HasField("body") else ""
        digest = hashlib.sha1(f"{body}\x1f{record.severity_number}".encode("utf-8", "surrogatepass")).hexdigest()[:16]
        occurrence_id = f"log:{trace_hex or _ZERO_TRACE}:{span_hex or _ZERO_SPAN}:{nanos}:{digest}"
        stacktrace = _str_attr(attrs, EXCEPTION_STACKTRACE)
        error_type = _str_attr(attrs, EXCEPTION_TYPE)
        message = _first(_str_attr(attrs, EXCEPTION_MESSAGE), body, error_type) or (
            f"{_clean(record.severity_text) or 'ERROR'} log record"
        )
        text = "\n".join(p for p in (body, stacktrace) if p) or None
        out.occurrences.append(
            self._occurrence(
                resource=resource,
                attrs=attrs,
                parent_attrs=None,
                occurrence_id=occurrence_id,
                trace_hex=trace_hex,
                span_hex=span_hex,
                nanos=nanos,
                error_type=error_type,
                message=message,
                stacktrace=stacktrace,
                text=text,
                details=(("signal", "log"), ("severity", _clean(record.severity_text[:32]))),
            )
        )


#: What ipai_ops.envelope.head appends to a capped message.
_CAP_MARKER = re.compile(r" \[\.\.\. \d+ chars truncated\]$")


def _same_text(echo: str, reported: str) -> bool:
    """Equal, or the reported text is the capped start of the echo."""
    return echo == reported or (bool(reported) and echo.startswith(reported))


def _without_echoes(events: list[tuple[int, dict[str, AnyValue]]]) -> list[tuple[int, dict[str, AnyValue]]]:
    """Drop a second recording of an exception a producer already reported with an id.

    A reporter that writes a failure directly (ipai_ops.middleware, the Odoo connector)
    puts ``ipai.occurrence_id`` on its exception event. When the exception is re-raised
    (the response had already started), the HTTP instrumentation around it records it on
    the same span once more, without the id: same ``exception.type``, same (redacted)
    message, possibly uncapped. That echo is the same failure, not a second one.
    """
    reported = []
    for _, attrs in events:
        if _str_attr(attrs, IPAI_OCCURRENCE_ID):
            message = _CAP_MARKER.sub("", _str_attr(attrs, EXCEPTION_MESSAGE) or "")
            reported.append((_str_attr(attrs, EXCEPTION_TYPE), message))
    if not reported:
        return events
    kept = []
    for index, attrs in events:
        if not _str_attr(attrs, IPAI_OCCURRENCE_ID):
            kind, message = _str_attr(attrs, EXCEPTION_TYPE), _str_attr(attrs, EXCEPTION_MESSAGE) or ""
            if any(kind == k and _same_text(message, m) for k, m in reported):
                continue
        kept.append((index, attrs))
    return kept


def _is_error_log(record: Any) -> bool:
    """Logs data model, "Severity Fields": numbers 17-24 are ERROR and FATAL; text only when unset."""
    number = record.severity_number
    if number:
        return number >= SEVERITY_ERROR
    return record.severity_text.strip().upper() in _ERROR_SEVERITY_TEXTS
