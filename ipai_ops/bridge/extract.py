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
that also wrote the failure directly hit the same key; a span's only exception event
without one takes the span's, with its ``ipai.failure.fingerprint`` and ``ipai.source``),
lowercase hex ids:

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

Each occurrence is a :class:`ipai_ops.store.ErrorOccurrence` whose ``sample`` is a
:class:`SampleDraft`: built only for the occurrences whose sample the writer stores
(:class:`ipai_ops.bridge.writer.Samples` decides).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Status
from opentelemetry.semconv._incubating.attributes.gen_ai_attributes import (
    GEN_AI_OPERATION_NAME,
    GEN_AI_PROVIDER_NAME,
    GEN_AI_REQUEST_MODEL,
    GEN_AI_RESPONSE_MODEL,
    GEN_AI_SYSTEM,
    GEN_AI_USAGE_INPUT_TOKENS,
    GEN_AI_USAGE_OUTPUT_TOKENS,
)
from opentelemetry.semconv.attributes.deployment_attributes import DEPLOYMENT_ENVIRONMENT_NAME
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.semconv.attributes.exception_attributes import (
    EXCEPTION_MESSAGE,
    EXCEPTION_STACKTRACE,
    EXCEPTION_TYPE,
)
from opentelemetry.semconv.attributes.service_attributes import SERVICE_NAME, SERVICE_VERSION

from ipai_ops.bridge.prefilter import trace_errors_possible
from ipai_ops.classify import classify, model_generation
from ipai_ops.classify.matching import matcher_for
from ipai_ops.envelope import Caps, build_envelope, clean_text
from ipai_ops.fingerprint import frames_from_stacktrace, normalize_message
from ipai_ops.registry import Registry
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
from ipai_ops.store import ErrorOccurrence

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
#: Service name, version and environment: a sender's megabyte-long version must not reach
#: every row, sample and cache key it touches.
MAX_SERVICE_CHARS = 256
#: Occurrence times are clamped to [now - MAX_AGE_SECONDS, now + MAX_SKEW_SECONDS] (the
#: bridge's Extractor; ``clamp_times``): a future time would pin ``last_seen`` ahead and
#: count as a regression of a resolved error, a very old one would be purged at once by
#: retention (and then count again when redelivered). Occurrence ids keep the sent time.
MAX_AGE_SECONDS = 7 * 24 * 3600
MAX_SKEW_SECONDS = 300
#: GenAI context (OpenTelemetry GenAI semantic conventions) kept per occurrence: provider
#: and operation names are short identifiers, model names a little longer.
MAX_GEN_AI_NAME_CHARS = 128
MAX_GEN_AI_MODEL_CHARS = 256
#: A token count above this is not a count (bigint holds it, but no call is that large).
MAX_TOKENS = 10**15
#: The ``sample`` envelope is kept small: it is stored on every touched error row.
SAMPLE_CAPS = Caps(message=1024, stdout=1024, stderr=4096, tool_calls=0, tool_call_chars=256, details=1024)


@dataclass
class Extraction:
    """The occurrences of one request, and the records refused (OTLP partial success)."""

    occurrences: list[ErrorOccurrence] = field(default_factory=list)
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


_NO_ATTRS: dict[str, AnyValue] = {}


def _either_attr(attrs: dict[str, AnyValue], parent: dict[str, AnyValue], key: str) -> str | None:
    """``_str_attr`` of the record, else of its parent (most records have neither)."""
    value = attrs.get(key)
    if value is not None and (text := any_text(value)):
        return text
    value = parent.get(key)
    if value is not None:
        return any_text(value) or None
    return None


def _first(*values: str | None) -> str | None:
    for value in values:
        if value:
            return value
    return None


def _iso_us(moment: datetime) -> str:
    # Microseconds (PostgreSQL's resolution), so "latest occurrence" ties are rare.
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def _when(nanos: int) -> str:
    """An OTLP time as ISO 8601 UTC with microseconds (exact: integer arithmetic)."""
    if nanos <= 0:
        return _iso_us(datetime.now(timezone.utc))
    seconds, rest = divmod(nanos, 1_000_000_000)
    try:
        return f"{_iso_second(seconds)}.{rest // 1000:06d}Z"
    except (OverflowError, OSError, ValueError):
        return _iso_us(datetime.now(timezone.utc))


@lru_cache(maxsize=4096)
def _iso_second(seconds: int) -> str:
    """``YYYY-MM-DDTHH:MM:SS`` of a Unix second (a request's events share a few)."""
    return datetime.fromtimestamp(seconds, tz=timezone.utc).replace(tzinfo=None).isoformat(timespec="seconds")


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
        version=(_str_attr(attrs, SERVICE_VERSION) or "")[:MAX_SERVICE_CHARS] or None,
        env=(_str_attr(attrs, DEPLOYMENT_ENVIRONMENT_NAME) or "")[:MAX_SERVICE_CHARS] or None,
    )


#: (occurrence key, attribute, cap) of the GenAI names kept; the first found of a key wins
#: (``gen_ai.provider.name`` over the older ``gen_ai.system``).
_GEN_AI_NAMES = (
    ("gen_ai_provider", GEN_AI_PROVIDER_NAME, MAX_GEN_AI_NAME_CHARS),
    ("gen_ai_provider", GEN_AI_SYSTEM, MAX_GEN_AI_NAME_CHARS),
    ("gen_ai_operation", GEN_AI_OPERATION_NAME, MAX_GEN_AI_NAME_CHARS),
    ("gen_ai_request_model", GEN_AI_REQUEST_MODEL, MAX_GEN_AI_MODEL_CHARS),
    ("gen_ai_response_model", GEN_AI_RESPONSE_MODEL, MAX_GEN_AI_MODEL_CHARS),
)
_GEN_AI_TOKENS = (
    ("gen_ai_input_tokens", GEN_AI_USAGE_INPUT_TOKENS),
    ("gen_ai_output_tokens", GEN_AI_USAGE_OUTPUT_TOKENS),
)


def _tokens(value: AnyValue) -> int | None:
    """A token count: the conventions' int, or an integral double (some SDKs send JS numbers
    as doubles), in [0, MAX_TOKENS]; anything else (text, negative, bool) is not kept."""
    kind = value.WhichOneof("value")
    if kind == "int_value":
        count = value.int_value
    elif kind == "double_value" and value.double_value.is_integer():
        count = int(value.double_value)
    else:
        return None
    return count if 0 <= count <= MAX_TOKENS else None


_NO_GEN_AI: dict[str, Any] = {}


def gen_ai_context(attrs: dict[str, AnyValue], parent: dict[str, AnyValue]) -> dict[str, Any] | None:
    """The GenAI call an error happened in (OpenTelemetry GenAI semantic conventions): provider
    (``gen_ai.provider.name``, else the older ``gen_ai.system``), operation, request and
    response model, input and output tokens; the record's attributes win over its span's.
    Only the values kept are keys of the answer (the writers read a missing key as NULL).

    None for a record that is not a GenAI call (a provider or an operation name marks one):
    six dict lookups decide it, and the occurrence then carries no GenAI keys at all.
    """
    if not (
        GEN_AI_PROVIDER_NAME in attrs
        or GEN_AI_SYSTEM in attrs
        or GEN_AI_OPERATION_NAME in attrs
        or GEN_AI_PROVIDER_NAME in parent
        or GEN_AI_SYSTEM in parent
        or GEN_AI_OPERATION_NAME in parent
    ):
        return None
    merged = {**parent, **attrs} if parent else attrs
    out: dict[str, Any] = {}
    for field_name, key, cap in _GEN_AI_NAMES:
        value = merged.get(key)
        if value is None or field_name in out:
            continue
        # string_value is empty for every other kind of value: those are no names
        text = value.string_value
        if text and (text := text.strip()[:cap]):
            out[field_name] = _clean(text)
    for field_name, key in _GEN_AI_TOKENS:
        value = merged.get(key)
        if value is not None and (count := _tokens(value)) is not None:
            out[field_name] = count
    return out


def _valid_ids(trace_id: bytes, span_id: bytes, *, required: bool) -> bool:
    """OTLP trace.proto: trace_id is 16 bytes, span_id 8 bytes; empty only where optional (logs)."""
    if required:
        return len(trace_id) == 16 and len(span_id) == 8
    return len(trace_id) in (0, 16) and len(span_id) in (0, 8)


# --------------------------------------------------------------------------- classification (cached)

#: Occurrence time of a template's envelope; each sample gets its occurrence's own.
_EPOCH = "1970-01-01T00:00:00.000Z"
#: Templates (and exact-input entries) kept per worker: keys hold at most ~4 KB of text.
_TEMPLATES = 4096
#: Stand-in for the message inside a stack trace or log text (a template key's residue).
_HOLE = "\x1f\x1e"
#: Digits 1-9 as one (zero stays: "0x" starts a hex id for the normaliser).
_NONZERO_DIGITS_TO_ONE = str.maketrans("23456789", "11111111")
_ASCII_DIGIT_RE = re.compile(r"[0-9]")
#: What every Python frame line holds (fingerprint.frames_from_stacktrace).
_FRAME_MARK = 'File "'


@dataclass(frozen=True)
class _Template:
    """What every occurrence of one *shape* shares: code, fingerprint, previous key.

    A shape is the normalised message (``fingerprint.normalize_message``: numbers, ids,
    quoted values and paths replaced), the stack trace and log text with the message taken
    out, the frames, the type, the explicit code and the resource. It is reused only while
    the same registry signatures occur in the new occurrence's raw message and text
    (``Matcher.present``; the type is in the key), since a signature may read what the shape
    hides (``KeyError: 'OPENAI_API_KEY'`` and ``KeyError: 'sku'`` share a shape). Found by
    exact text first, then by the digits-blind message, then by the normalised one
    (:meth:`Extractor._classified`).
    """

    code: str
    severity: str
    fingerprint: str
    previous_fingerprint: str | None
    present: frozenset[int]
    #: The envelope of the occurrence that made the template (its ids and time left out).
    envelope: dict[str, Any]


@dataclass(slots=True, eq=False)
class _Shape:
    """A cache entry: the template of one shape, made at the end of the request that first
    met the shape, from the shape's latest occurrence in it (greatest ``occurred_at``, then
    occurrence id). That is the occurrence whose sample the writer keeps
    (ipai_ops.bridge.writer.Samples), so its sample is the template's envelope, not a
    second classification; the template is the same whichever occurrence of the shape
    makes it (that is what reusing it means)."""

    present: frozenset[int]
    producer_fingerprint: str | None
    #: None while the request that met the shape first is being read
    template: _Template | None = None
    #: (occurred_at, occurrence_id), inputs and sample draft of the latest occurrence so far
    latest: tuple[str, str] | None = None
    inputs: dict[str, Any] | None = None
    draft: SampleDraft | None = None


@dataclass(slots=True, eq=False)
class _Deferred:
    """An occurrence whose shape's template is made at the end of its request."""

    shape: _Shape
    draft: SampleDraft
    fields: dict[str, Any]

    def occurrence(self) -> ErrorOccurrence:
        template = self.shape.template
        assert template is not None
        self.draft.fingerprint = template.fingerprint
        return ErrorOccurrence(
            fingerprint=template.fingerprint,
            code=template.code,
            severity=template.severity,
            previous_fingerprint=template.previous_fingerprint,
            **self.fields,
        )


@dataclass(slots=True, eq=False)
class SampleDraft:
    """An occurrence's ``sample``, still to build (:class:`ipai_ops.store.PendingSample`).

    Classification, redaction and enveloping are most of the cost of an error, so a sample
    is built only where it is stored: the bridge's writer clears ``wanted`` on the others
    (:class:`ipai_ops.bridge.writer.Samples`) and ``store.write_batch`` builds the rest.
    """

    registry: Registry
    inputs: dict[str, Any]
    ids: dict[str, Any]
    occurred_at: str
    #: The occurrence's fingerprint as extracted (a sender policy may namespace it later).
    fingerprint: str
    #: Whether that fingerprint is the sender's own ``ipai.failure.fingerprint`` (the sender
    #: policy namespaces those on shared sources; ipai_ops.bridge.auth). Not stored.
    producer_fingerprint: bool
    #: The exact envelope when this occurrence made its template (nothing left to compute),
    #: or once built (a batch isolating a refused record is written again).
    envelope: dict[str, Any] | None = None
    wanted: bool = True

    def build(self, occurrence: ErrorOccurrence) -> dict[str, Any] | None:
        """The sample of ``occurrence`` (this draft's, after the sender policy: its occurrence
        id and namespaced fingerprint), or None when its writer keeps the stored one."""
        if not self.wanted:
            return None
        envelope = self.envelope
        if envelope is None:
            envelope = self.envelope = _envelope(self.registry, **self.inputs)[1]
        sample = dict(envelope)
        sample["context"] = {**envelope["context"], **self.ids, "occurrence_id": occurrence.occurrence_id}
        sample["occurred_at"] = self.occurred_at
        if occurrence.fingerprint != self.fingerprint:
            sample["error"] = {**envelope["error"], "fingerprint": occurrence.fingerprint}
        return sample


def _digest(key: tuple[Any, ...]) -> int:
    """A cache key: Python's hash of the key tuple, 64 bits of SipHash keyed at random per
    process (PYTHONHASHSEED), so an entry costs the same whatever the sender's strings and a
    sender cannot aim two keys at one entry. A string's hash is computed once (in C) and
    kept on it; the repr-and-blake2b digest this replaces cost ~8% of the error path. No
    text is kept, so long texts go in as they are (a blake2b digest of each first cost
    another ~4%)."""
    return hash(key)


def _clamped(nanos: int) -> int:
    """``nanos`` within [now - MAX_AGE_SECONDS, now + MAX_SKEW_SECONDS]; 0 (unset) stays 0."""
    if nanos <= 0:
        return nanos
    now = time.time_ns()
    return min(max(nanos, now - MAX_AGE_SECONDS * 1_000_000_000), now + MAX_SKEW_SECONDS * 1_000_000_000)


def _residue(text: str | None, message: str) -> tuple[str | None, bool]:
    """``text`` with the message taken out (what stays when only the message's ids change),
    and whether the message sat on a frame line (then the frames vary with it)."""
    if not text or len(message) < 4:
        return text, False
    residue = text.replace(message, _HOLE)
    if residue is text or residue == text:
        return text, False
    in_frame = _FRAME_MARK in message
    position = residue.find(_HOLE)
    while position >= 0 and not in_frame:
        start = residue.rfind("\n", 0, position) + 1
        end = residue.find("\n", position)
        in_frame = _FRAME_MARK in residue[start : end if end >= 0 else len(residue)]
        position = residue.find(_HOLE, position + len(_HOLE))
    return residue, in_frame


def _envelope(
    registry: Registry,
    *,
    explicit_code: str | None,
    error_type: str | None,
    message: str,
    stacktrace: str | None,
    text: str | None,
    frames: tuple[str, ...] | None,
    context: dict[str, Any],
    details: tuple[tuple[str, str], ...],
) -> tuple[Any, dict[str, Any]]:
    """Classify one occurrence and build its envelope (the exact, uncached path)."""
    if frames is None:
        frames = tuple(frames_from_stacktrace(stacktrace))
    classification = classify(registry, explicit_code=explicit_code, error_type=error_type, message=message, text=text)
    envelope = build_envelope(
        classification,
        message=message or classification.code,
        error_type=error_type,
        context=dict(context),
        details=dict(details),
        evidence={"stderr_tail": stacktrace} if stacktrace else None,
        frames=list(frames),
        occurred_at=_EPOCH,
        caps=SAMPLE_CAPS,
    )
    return classification, envelope


class Extractor:
    """Turns decoded export requests into :class:`~ipai_ops.store.ErrorOccurrence` s
    (``store.write_batch`` input), each with its sample as a :class:`SampleDraft`.

    Which samples are built is the writer's decision (:class:`ipai_ops.bridge.writer.Samples`);
    written without one, every occurrence's sample is built (tests, one-off conversions).
    """

    def __init__(
        self,
        registry: Registry,
        *,
        default_source: str = "otlp",
        clamp_times: bool = False,
    ) -> None:
        self.registry = registry
        self.default_source = default_source
        self.clamp_times = clamp_times
        self._matcher = matcher_for(registry)
        # Keyed on 64-bit keyed hashes of the key tuples (:func:`_digest`): a cache entry
        # costs the same whatever the sender's strings.
        self._templates: OrderedDict[int, _Shape] = OrderedDict()
        self._exact: OrderedDict[int, tuple[_Shape, str]] = OrderedDict()
        self._digit_blind: OrderedDict[int, _Shape] = OrderedDict()
        #: The shapes first met in the request being read (their templates are made at its end).
        self._pending: list[_Shape] = []
        self._model_generation: int | None = model_generation()

    def _follow_the_model(self) -> None:
        """Templates hold decisions: when a new model artifact is loaded (a person taught a
        code, a retraining), they are dropped, so the next occurrences are decided anew."""
        generation = model_generation()
        if generation != self._model_generation:
            self._model_generation = generation
            self._templates.clear()
            self._exact.clear()
            self._digit_blind.clear()

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
    ) -> ErrorOccurrence | _Deferred:
        parent = parent_attrs or _NO_ATTRS
        explicit = _either_attr(attrs, parent, IPAI_FAILURE_CODE) or _either_attr(attrs, parent, ERROR_TYPE)
        source = ((_str_attr(attrs, IPAI_SOURCE) or "").strip() or resource.source)[:MAX_SOURCE_CHARS]
        occurrence_id = ((_str_attr(attrs, IPAI_OCCURRENCE_ID) or "").strip() or occurrence_id)[:MAX_ID_CHARS]
        inputs = {
            "explicit_code": explicit[:256] if explicit else None,
            "error_type": error_type[:1024] if error_type else None,
            "message": message[:MAX_TEXT],
            "stacktrace": stacktrace[-MAX_TEXT:] if stacktrace else None,
            "text": text[:MAX_TEXT] if text else None,
            "frames": None,
            "context": {
                "source": source,
                "service": resource.service,
                "service_version": resource.version,
                "env": resource.env,
            },
            "details": details,
        }
        producer_fingerprint = (_str_attr(attrs, IPAI_FAILURE_FINGERPRINT) or "").strip()[:128] or None
        found, made_now, clean_message = self._classified(inputs, resource, producer_fingerprint)
        correlation_id = _either_attr(attrs, parent, IPAI_CORRELATION_ID)
        occurred_at = _when(_clamped(nanos) if self.clamp_times else nanos)
        ids = {
            "correlation_id": correlation_id[:MAX_ID_CHARS] if correlation_id else None,
            "occurrence_id": occurrence_id,
            "trace_id": trace_hex,
            "span_id": span_hex,
        }
        gen_ai = gen_ai_context(attrs, parent) or _NO_GEN_AI
        if isinstance(found, _Shape):
            template = found.template
            if template is None:
                return self._deferred(
                    found,
                    SampleDraft(self.registry, inputs, ids, occurred_at, "", producer_fingerprint is not None),
                    dict(
                        source=source,
                        occurrence_id=occurrence_id,
                        message=clean_message,
                        occurred_at=occurred_at,
                        error_type=inputs["error_type"],
                        service=resource.service,
                        trace_id=trace_hex,
                        span_id=span_hex,
                        service_version=resource.version,
                        environment=resource.env,
                        **gen_ai,
                    ),
                )
            made_now = False
        else:
            template = found
        draft = SampleDraft(
            self.registry,
            inputs,
            ids,
            occurred_at,
            template.fingerprint,
            producer_fingerprint is not None,
            template.envelope if made_now else None,
        )
        return ErrorOccurrence(
            source=source,
            occurrence_id=occurrence_id,
            fingerprint=template.fingerprint,
            code=template.code,
            severity=template.severity,
            message=clean_message,
            occurred_at=occurred_at,
            error_type=inputs["error_type"],
            service=resource.service,
            trace_id=trace_hex,
            span_id=span_hex,
            service_version=resource.version,
            sample=draft,
            previous_fingerprint=template.previous_fingerprint,
            environment=resource.env,
            **gen_ai,
        )

    @staticmethod
    def _deferred(shape: _Shape, draft: SampleDraft, fields: dict[str, Any]) -> _Deferred:
        """An occurrence of a shape met first in this request; the latest one makes its template."""
        fields["sample"] = draft
        latest = (fields["occurred_at"], fields["occurrence_id"])
        if shape.latest is None or latest > shape.latest:
            shape.latest, shape.inputs, shape.draft = latest, draft.inputs, draft
        return _Deferred(shape, draft, fields)

    def _classified(
        self, inputs: dict[str, Any], resource: _Resource, producer_fingerprint: str | None
    ) -> tuple[_Shape | _Template, bool, str]:
        """(its shape, whether this occurrence met it first, the stored message) of one
        occurrence; a subclass may answer with a template of its own.

        The very same error again (a retry loop, a storm of one message) is found by its
        exact text; otherwise by its shape (:class:`_Template`, :class:`_Shape`).
        """
        explicit, error_type, message = inputs["explicit_code"], inputs["error_type"], inputs["message"]
        stacktrace, text = inputs["stacktrace"], inputs["text"]
        separate_text = text is not stacktrace
        common = (
            explicit,
            error_type,
            inputs["context"]["source"],
            resource.service,
            resource.version,
            resource.env,
            inputs["details"],
            producer_fingerprint,
        )
        exact_key = _digest((*common, message, stacktrace, text if separate_text else None))
        hit = self._exact.get(exact_key)
        if hit is not None:
            self._exact.move_to_end(exact_key)
            return hit[0], False, hit[1]
        clean_message = clean_text(message, SAMPLE_CAPS)[0]
        # Frames come from the stack trace; with the message out of it (the key's residue)
        # they are the residue's, unless the message sat on a frame line.
        residue, message_in_frames = _residue(stacktrace, message)
        if message_in_frames:
            inputs["frames"] = tuple(frames_from_stacktrace(stacktrace))
        rest = (
            residue,
            _residue(text, message)[0] if separate_text else None,
            inputs["frames"],
        )
        # The type is part of the key already: only what message and text hold can differ.
        present = self._matcher.present(error_type=None, message=message, text=text)
        # Redaction and normalisation treat the ASCII digits 1-9 alike, so two messages that
        # differ only in those digits' values have normalised messages that differ only where
        # digits survive: when the normalised message keeps none, they are equal (the
        # fingerprint's input) and normalising again is skipped (tests/bridge/test_templates.py).
        digit_key = _digest((*common, message.translate(_NONZERO_DIGITS_TO_ONE), *rest))
        template = self._digit_blind.get(digit_key)
        made_now = False
        if template is not None and template.present == present:
            self._digit_blind.move_to_end(digit_key)
        else:
            shape = normalize_message(clean_message)
            key = _digest((*common, shape, *rest))
            template = self._templates.get(key)
            made_now = template is None or template.present != present
            if made_now:
                template = _Shape(present, producer_fingerprint)
                self._pending.append(template)
                self._templates[key] = template
            self._templates.move_to_end(key)
            if not _ASCII_DIGIT_RE.search(shape):
                self._digit_blind[digit_key] = template
        self._exact[exact_key] = (template, clean_message)
        for cache in (self._templates, self._digit_blind, self._exact):
            while len(cache) > _TEMPLATES:
                cache.popitem(last=False)
        return template, made_now, clean_message

    def _make_template(
        self, inputs: dict[str, Any], present: frozenset[int], producer_fingerprint: str | None
    ) -> _Template:
        classification, envelope = _envelope(self.registry, **inputs)
        error = envelope["error"]
        return _Template(
            code=classification.code,
            severity=classification.mode.severity,
            fingerprint=producer_fingerprint or error["fingerprint"],
            # A producer's own fingerprint is its key; otherwise grouping version 1's key
            # attaches this failure to its existing group (migration 0006).
            previous_fingerprint=None if producer_fingerprint else error.get("previous_fingerprint"),
            present=present,
            envelope=envelope,
        )

    # ----------------------------------------------------------------------- end of a request

    def _read(self, read: Any, out: Extraction, request: Any) -> Extraction:
        try:
            read(out, request)
        except BaseException:
            self._forget(self._pending)
            raise
        return self._finish(out)

    def _finish(self, out: Extraction) -> Extraction:
        """Make the templates of the shapes first met in this request, each from its latest
        occurrence (whose draft then holds its envelope), and their occurrences."""
        pending, self._pending = self._pending, []
        try:
            for shape in pending:
                template = self._make_template(shape.inputs, shape.present, shape.producer_fingerprint)
                shape.template = template
                shape.draft.envelope = template.envelope  # type: ignore[union-attr]
        except BaseException:
            self._forget(pending)
            raise
        if pending:
            out.occurrences = [o.occurrence() if isinstance(o, _Deferred) else o for o in out.occurrences]
        return out

    def _forget(self, pending: list[_Shape]) -> None:
        """Drop the shapes of a request that did not finish (its CPU deadline passed): no
        template was made for them."""
        for cache in (self._templates, self._digit_blind):
            for key in [key for key, shape in cache.items() if shape.template is None]:
                del cache[key]
        for key in [key for key, (shape, _) in self._exact.items() if shape.template is None]:
            del self._exact[key]
        pending.clear()

    # ----------------------------------------------------------------------- traces

    def traces(self, request: Any, *, raw: bytes | None = None) -> Extraction:
        out = Extraction()
        if raw is not None and not trace_errors_possible(raw):
            return out
        self._follow_the_model()
        return self._read(self._spans, out, request)

    def _spans(self, out: Extraction, request: Any) -> None:
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
        for index, event_attrs in events:
            attrs = _with_span_keys(event_attrs, span_attrs) if len(events) == 1 else event_attrs
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
        self._follow_the_model()
        return self._read(self._logs, Extraction(), request)

    def _logs(self, out: Extraction, request: Any) -> None:
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


#: The keys of a producer's direct write: on its span, they key the span's one exception event.
_OCCURRENCE_KEYS = (IPAI_OCCURRENCE_ID, IPAI_FAILURE_FINGERPRINT, IPAI_SOURCE)


def _with_span_keys(attrs: dict[str, AnyValue], span_attrs: dict[str, AnyValue]) -> dict[str, AnyValue]:
    """The span's ``ipai.occurrence_id`` (with its fingerprint and source) for its only exception
    event when the event has none: a producer that wrote the failure directly put its key on the
    span (ipai_ops.record.record_on_span), while the event may come from an instrumentation
    that knows nothing of it. With several exception events on the span, which one the key
    belongs to is unknown, and each keeps its own ``event:`` id."""
    if IPAI_OCCURRENCE_ID in attrs or IPAI_OCCURRENCE_ID not in span_attrs:
        return attrs
    return {**{key: span_attrs[key] for key in _OCCURRENCE_KEYS if key in span_attrs}, **attrs}


#: What ipai_ops.text.head appends to a capped message.
_CAP_MARKER = re.compile(r" \[\.\.\. \d+ chars truncated\]$")


def _same_text(echo: str, reported: str) -> bool:
    """Equal, or the reported text is the capped start of the echo."""
    return echo == reported or (bool(reported) and echo.startswith(reported))


def _without_echoes(events: list[tuple[int, dict[str, AnyValue]]]) -> list[tuple[int, dict[str, AnyValue]]]:
    """Drop a second recording of an exception a producer already reported with an id.

    A reporter that writes a failure directly (ipai_ops.sdk, the Odoo connector)
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
