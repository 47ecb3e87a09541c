"""OTLP protocol details: content types, bodies, decoding and answers.

Spec: https://opentelemetry.io/docs/specs/otlp/ (sections cited as "OTLP/HTTP ...").
Each validator is a small function that raises :class:`OtlpRejected` carrying the
HTTP status, the gRPC code and the ``reason`` label of
``ipai_bridge_records_rejected_total``.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import time
import zlib
from typing import Any

import grpc
import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.message import DecodeError, Message
from google.rpc import status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

PROTOBUF = "application/x-protobuf"
JSON = "application/json"

#: signal -> (request type, response type)
SIGNALS: dict[str, tuple[type[Message], type[Message]]] = {
    "traces": (ExportTraceServiceRequest, ExportTraceServiceResponse),
    "logs": (ExportLogsServiceRequest, ExportLogsServiceResponse),
    "metrics": (ExportMetricsServiceRequest, ExportMetricsServiceResponse),
}

#: Nesting accepted in OTLP JSON (AnyValue kvlists/arrays): deeper is malformed.
#: upb enforces its own recursion limit (100) on the protobuf path.
MAX_JSON_DEPTH = 64

#: An id that is not valid hex in OTLP JSON becomes this (wrong length) so the record
#: is rejected as ``invalid_id`` through partial_success instead of failing the batch.
_INVALID_ID = base64.b64encode(b"\xff").decode()


class OtlpRejected(Exception):
    """The request is refused as a whole."""

    def __init__(
        self,
        http_status: int,
        grpc_code: grpc.StatusCode,
        reason: str,
        message: str,
        *,
        retry_after: int | None = None,
    ):
        super().__init__(message)
        #: Seconds to advertise (Retry-After / RetryInfo) instead of the configured default.
        self.retry_after = retry_after
        self.http_status = http_status
        self.grpc_code = grpc_code
        self.reason = reason
        self.message = message


def check_bearer(header: str | None, token: str) -> None:
    """OTLP leaves auth to the deployment: ``Authorization: Bearer <token>``, compared in constant time
    (the scheme in any case: ``bearer`` and ``BEARER`` too).

    Shared by OTLP/HTTP and OTLP/gRPC. A header that is not valid UTF-8 (aiohttp keeps
    its bytes as surrogates) is simply wrong, never a crash.
    """
    if not token:
        return
    # RFC 9110 11.1: the scheme is case-insensitive; one or more spaces before the token.
    scheme, _, credentials = (header or "").strip().partition(" ")
    presented = credentials.lstrip(" ").encode("utf-8", "surrogateescape")
    if scheme.lower() != "bearer" or not hmac.compare_digest(presented, token.encode()):
        raise OtlpRejected(401, grpc.StatusCode.UNAUTHENTICATED, "unauthenticated", "missing or wrong bearer token")


def media_type(content_type: str | None) -> str:
    """OTLP/HTTP "Binary Protobuf Encoding" / "JSON Protobuf Encoding": the media type, parameters dropped."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def check_content_type(content_type: str | None) -> str:
    """OTLP/HTTP Request: only ``application/x-protobuf`` and ``application/json``; else 415."""
    kind = media_type(content_type)
    if kind not in (PROTOBUF, JSON):
        raise OtlpRejected(
            415,
            grpc.StatusCode.INVALID_ARGUMENT,
            "unsupported_content_type",
            f"unsupported content type {kind or '(none)'!r}; use {PROTOBUF} or {JSON}",
        )
    return kind


def check_content_encoding(encoding: str | None) -> bool:
    """OTLP/HTTP Request: ``Content-Encoding: gzip`` is the one compression senders may use. True = gzip."""
    value = (encoding or "identity").strip().lower()
    if value in ("", "identity"):
        return False
    if value == "gzip":
        return True
    raise OtlpRejected(
        415,
        grpc.StatusCode.INVALID_ARGUMENT,
        "unsupported_content_type",
        f"unsupported content encoding {value!r}; use gzip or none",
    )


def check_declared_length(content_length: int | None, *, limit: int) -> None:
    """RFC 9110 15.5.14: refuse a declared oversize body before reading a byte of it."""
    if content_length is not None and content_length > limit:
        raise too_large(f"request body of {content_length} bytes exceeds the {limit} byte limit")


def too_large(message: str, *, reason: str = "payload_too_large") -> OtlpRejected:
    return OtlpRejected(413, grpc.StatusCode.RESOURCE_EXHAUSTED, reason, message)


def malformed(message: str) -> OtlpRejected:
    """OTLP/HTTP Failures: a body that cannot be decoded is answered 400 and must not be retried."""
    return OtlpRejected(400, grpc.StatusCode.INVALID_ARGUMENT, "malformed", message)


def gunzip(data: bytes, *, limit: int) -> bytes:
    """Inflate at most ``limit`` bytes: a compression bomb is refused without being inflated.

    ``max_length`` bounds every step's output, so memory never exceeds the limit;
    concatenated gzip members (RFC 1952 2.2) are accepted.
    """
    out = bytearray()
    pending = data
    while pending:
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        chunk = pending
        try:
            while chunk and not inflater.eof:
                out += inflater.decompress(chunk, limit - len(out) + 1)
                if len(out) > limit:
                    raise too_large(f"gzip body inflates beyond the {limit} byte limit", reason="decompression_limit")
                chunk = inflater.unconsumed_tail
            if not inflater.eof:
                out += inflater.flush()
                raise malformed("gzip body is truncated")
        except zlib.error as exc:
            raise malformed(f"gzip body is corrupt: {exc}") from None
        pending = inflater.unused_data
    return bytes(out)


def decode(signal: str, body: bytes, kind: str) -> Message:
    """The request message of ``signal`` from a protobuf or OTLP-JSON body; 400 when undecodable."""
    request_type = SIGNALS[signal][0]
    if kind == PROTOBUF:
        return decode_protobuf(request_type, body)
    return decode_json(request_type, body)


class Deadline:
    """CPU seconds a request may spend in the bridge's threads (``time.thread_time``, so
    time spent waiting for the GIL or a core does not count), checked at safe points.

    ``running()`` marks the stretch spent in the current thread; ``check()`` raises 413
    (``cpu_deadline``) once the total passes the limit.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.spent = 0.0
        self._started: float | None = None

    def __enter__(self) -> Deadline:
        self._started = time.thread_time()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._started is not None:
            self.spent += time.thread_time() - self._started
            self._started = None

    def check(self) -> None:
        spent = self.spent + (time.thread_time() - self._started if self._started is not None else 0.0)
        if spent > self.seconds:
            raise OtlpRejected(
                413,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "cpu_deadline",
                f"request needs more than {self.seconds:g} CPU seconds to decode and extract; send smaller batches",
            )


#: ExportTraceServiceRequest.resource_spans, ResourceSpans.scope_spans, ScopeSpans.spans, and the
#: same numbers for logs (resource_logs, scope_logs, log_records): each a length-delimited field.
_RECORD_PATH = (1, 2, 2)
#: The one-byte tag of a record (field 2, wire type 2): every record starts with it.
_RECORD_TAG = 0x12
#: Bodies with up to this many times ``limit`` 0x12 bytes get an exact count in C first.
_EXACT_COUNT_FACTOR = 64


def _record_counter_class() -> type[Message]:
    """A schema that keeps resource -> scope -> records, each record as bytes (never decoded)."""
    package = "ipai.ops.count"
    kinds = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(name="ipai_ops/record_count.proto", package=package, syntax="proto3")
    for name, field_name, number, kind, type_name in (
        ("Request", "resources", _RECORD_PATH[0], kinds.TYPE_MESSAGE, "Resource"),
        ("Resource", "scopes", _RECORD_PATH[1], kinds.TYPE_MESSAGE, "Scope"),
        ("Scope", "records", _RECORD_PATH[2], kinds.TYPE_BYTES, None),
    ):
        field = proto.message_type.add(name=name).field.add(
            name=field_name, number=number, type=kind, label=kinds.LABEL_REPEATED
        )
        if type_name:
            field.type_name = f".{package}.{type_name}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.Request"))


_RecordCounter = _record_counter_class()


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise malformed("body is not valid protobuf: truncated or overlong varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def encode_varint(value: int) -> bytes:
    """A protobuf varint (the tests and benchmarks build hostile bodies with it too)."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _skip(buf: bytes, pos: int, end: int, wire: int) -> int:
    if wire == 0:
        return _varint(buf, pos)[1]
    if wire == 1:
        pos += 8
    elif wire == 5:
        pos += 4
    elif wire == 2:
        length, pos = _varint(buf, pos)
        pos += length
    else:  # groups (3, 4) are not used by OTLP; 6 and 7 do not exist
        raise malformed(f"body is not valid protobuf: wire type {wire}")
    if pos > end:
        raise malformed("body is not valid protobuf: a field runs past its message")
    return pos


#: Records up to this size past the limit are counted by runs of identical copies,
#: compared in blocks of up to this many bytes.
_RUN_RECORD_BYTES = 32
_RUN_BLOCK_BYTES = 1 << 20


def _run_of(buf: bytes, record: bytes, pos: int, end: int) -> tuple[int, int]:
    """(copies of ``record`` at ``buf[pos:end]``, the position after them): galloping, then halving."""
    copies = 0
    block, count = record, 1
    while pos + len(block) <= end and buf.startswith(block, pos):
        pos += len(block)
        copies += count
        if len(block) < _RUN_BLOCK_BYTES:
            block, count = block + block, count * 2
    while count > 1:
        count //= 2
        block = block[: len(record) * count]
        if pos + len(block) <= end and buf.startswith(block, pos):
            pos += len(block)
            copies += count
    return copies, pos


class _RecordCap:
    """Walks resource -> scope -> record fields of a protobuf export request, keeping at most
    ``limit`` records (the first ones) and counting the rest, without decoding anything."""

    def __init__(self, limit: int, deadline: Deadline | None) -> None:
        self.limit = limit
        self.deadline = deadline
        self.seen = 0

    def walk(self, buf: bytes, start: int, end: int, depth: int) -> bytes | None:
        """The message ``buf[start:end]`` with records beyond the limit left out (None: unchanged)."""
        if depth == len(_RECORD_PATH) - 1:
            return self._records(buf, start, end)
        parts: list[bytes] = []
        copied = start  # buf[copied:field_start] is kept as it is
        pos = start
        wanted = _RECORD_PATH[depth]
        while pos < end:
            field_start = pos
            key, pos = _varint(buf, pos)
            if key != (wanted << 3 | 2):
                pos = _skip(buf, pos, end, key & 7)
                continue
            length_start = pos
            length, body_start = _varint(buf, pos)
            pos = body_start + length
            if pos > end:
                raise malformed("body is not valid protobuf: a field runs past its message")
            inner = self.walk(buf, body_start, pos, depth + 1)
            if inner is not None:
                parts += (buf[copied:field_start], buf[field_start:length_start], encode_varint(len(inner)), inner)
                copied = pos
        if not parts:
            return None
        parts.append(buf[copied:end])
        return b"".join(parts)

    def _records(self, buf: bytes, start: int, end: int) -> bytes | None:
        """A ScopeSpans/ScopeLogs message: its records past the limit are left out, the rest kept."""
        pos = start
        seen = self.seen
        deadline = self.deadline
        # Records within the limit are kept as they are.
        while pos < end and seen < self.limit:
            key, pos = _varint(buf, pos)
            if key != 0x12:
                pos = _skip(buf, pos, end, key & 7)
                continue
            length, pos = _varint(buf, pos)
            pos += length
            seen += 1
        if pos > end:
            raise malformed("body is not valid protobuf: a field runs past its message")
        if pos == end:
            self.seen = seen
            return None
        # Past the limit records are only counted (the other fields kept): the hot loop of a
        # body of millions of tiny records, so records under 128 bytes take a short path,
        # and every 64th record a run of copies of it is skipped with memcmp.
        parts = [buf[start:pos]]
        run_at = seen + 64
        check_at = seen + 4096
        while pos < end:
            if buf[pos] == 0x12 and pos + 1 < end and buf[pos + 1] < 0x80:
                field_start = pos
                pos += 2 + buf[pos + 1]
                seen += 1
                if seen >= run_at and pos <= end:
                    run_at = seen + 64
                    if pos - field_start <= _RUN_RECORD_BYTES:
                        copies, pos = _run_of(buf, buf[field_start:pos], pos, end)
                        seen += copies
                    if seen >= check_at and deadline is not None:
                        check_at = seen + 4096
                        deadline.check()
                continue
            field_start = pos
            key, pos = _varint(buf, pos)
            if key == 0x12:
                length, pos = _varint(buf, pos)
                pos += length
                seen += 1
            else:
                pos = _skip(buf, pos, end, key & 7)
                parts.append(buf[field_start:pos])
        if pos > end:
            raise malformed("body is not valid protobuf: a field runs past its message")
        self.seen = seen
        return b"".join(parts)


def cap_protobuf_records(body: bytes, limit: int, deadline: Deadline | None = None) -> tuple[bytes, int]:
    """(``body`` with at most ``limit`` spans or log records, the number left out).

    A traces or logs request of millions of tiny records costs the protobuf runtime about
    170 bytes of memory and 0.4 us each to decode, so the records beyond the limit are cut
    from the wire bytes first, by a walk that decodes nothing (about 0.1 us a record). A
    body that cannot hold more records than the limit is returned as it is (the same object).
    """
    if len(body) <= 2 * limit:  # a record takes at least two bytes
        return body, 0
    # Every record starts with the byte 0x12 (so do some other fields): numpy counts them at
    # about 10 GB/s, an upper bound that clears most bodies at once.
    bound = int(np.count_nonzero(np.frombuffer(body, dtype=np.uint8) == _RECORD_TAG))
    if bound <= limit:
        return body, 0
    if bound <= _EXACT_COUNT_FACTOR * limit:
        # Exact, in C (about 25 us for a 512-span body), in memory bounded by ``bound``.
        try:
            counter = _RecordCounter.FromString(body)
        except DecodeError:
            counter = None  # the walk below answers malformed
        if counter is not None and sum(len(s.records) for r in counter.resources for s in r.scopes) <= limit:
            return body, 0
    cap = _RecordCap(limit, deadline)
    kept = cap.walk(body, 0, len(body), 0)
    dropped = max(0, cap.seen - limit)
    return (body if kept is None else kept), dropped


#: Nested messages (attributes, events, links, values) deeper than this are refused as the
#: protobuf runtime refuses them (its recursion limit).
MAX_NESTING = 100
#: A tag byte of a length-delimited field numbered 1-15 (every message field of OTLP): each
#: nested message starts with one of these, so their count bounds the number of messages.
_MESSAGE_TAGS = np.zeros(256, dtype=bool)
_MESSAGE_TAGS[[(number << 3) | 2 for number in range(1, 16)]] = True
_MESSAGE_FIELDS: dict[str, dict[int, Any]] = {}


def _message_fields(descriptor: Any) -> dict[int, Any]:
    """{field number: descriptor} of the message-typed fields of ``descriptor``."""
    fields = _MESSAGE_FIELDS.get(descriptor.full_name)
    if fields is None:
        fields = {f.number: f.message_type for f in descriptor.fields if f.message_type is not None}
        _MESSAGE_FIELDS[descriptor.full_name] = fields
    return fields


def check_message_count(request_type: type[Message], body: bytes, limit: int, deadline: Deadline | None = None) -> None:
    """413 (``too_many_values``) when decoding ``body`` would build more than ``limit`` messages.

    The record cap keeps the number of spans and log records down, but one kept span can
    hold millions of empty events or attributes (two bytes each on the wire, about a hundred
    bytes each once decoded). Most bodies are cleared by size or by a count of the bytes that
    can start a nested message (numpy, about 1 ms per MiB); the others are walked field by
    field, following the message-typed fields of ``request_type``, without decoding, and
    stop as soon as the limit is passed.
    """
    if len(body) <= 2 * limit:  # a nested message takes at least two bytes
        return
    if int(np.count_nonzero(_MESSAGE_TAGS[np.frombuffer(body, dtype=np.uint8)])) <= limit:
        return
    count = 0
    pos = 0
    stack: list[tuple[dict[int, Any], int]] = [(_message_fields(request_type.DESCRIPTOR), len(body))]
    while stack:
        fields, end = stack[-1]
        if pos >= end:
            if pos > end:
                raise malformed("body is not valid protobuf: a field runs past its message")
            stack.pop()
            continue
        key = body[pos]
        if key < 0x80:
            pos += 1
        else:
            key, pos = _varint(body, pos)
        wire = key & 7
        sub = fields.get(key >> 3) if wire == 2 else None
        if sub is None:
            pos = _skip(body, pos, end, wire)
            continue
        length = body[pos] if pos < end else 0x80
        if length < 0x80:
            pos += 1
        else:
            length, pos = _varint(body, pos)
        if pos + length > end:
            raise malformed("body is not valid protobuf: a field runs past its message")
        count += 1
        if count > limit:
            raise too_large(
                f"protobuf body holds more than {limit} nested messages (attributes, events, links,"
                " values); send smaller batches",
                reason="too_many_values",
            )
        if len(stack) > MAX_NESTING:
            raise malformed(f"body is not valid protobuf: messages nested deeper than {MAX_NESTING}")
        if deadline is not None and not count & 0xFFF:
            deadline.check()
        if length:  # an empty message has nothing inside to count
            stack.append((_message_fields(sub), pos + length))


#: OTLP/JSON record lists: request -> resources -> scopes -> records (camelCase or snake_case).
_JSON_RECORD_PATHS = {
    "ExportTraceServiceRequest": (("resourceSpans", "resource_spans"), ("scopeSpans", "scope_spans"), ("spans",)),
    "ExportLogsServiceRequest": (
        ("resourceLogs", "resource_logs"),
        ("scopeLogs", "scope_logs"),
        ("logRecords", "log_records"),
    ),
}


def _json_list(obj: Any, names: tuple[str, ...]) -> list[Any]:
    if isinstance(obj, dict):
        for name in names:
            value = obj.get(name)
            if isinstance(value, list):
                return value
    return []


def cap_json_records(obj: Any, request_name: str, limit: int) -> int:
    """Leave at most ``limit`` records in a parsed OTLP/JSON request (in place); the number left out."""
    paths = _JSON_RECORD_PATHS.get(request_name)
    if paths is None:
        return 0
    seen = 0
    for resource in _json_list(obj, paths[0]):
        for scope in _json_list(resource, paths[1]):
            records = _json_list(scope, paths[2])
            room = max(0, limit - seen)
            seen += len(records)
            if len(records) > room:
                del records[room:]
    return max(0, seen - limit)


def json_values(obj: Any, limit: int) -> int:
    """Objects and arrays in a parsed JSON document, counted up to ``limit + 1``."""
    count = 0
    stack = [obj]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
        else:
            continue
        count += 1
        if count > limit:
            break
    return count


def decode_capped(
    signal: str,
    body: bytes,
    kind: str,
    *,
    max_records: int,
    max_json_values: int,
    max_messages: int | None = None,
    deadline: Deadline | None = None,
) -> tuple[Message, bytes | None, int]:
    """Like :func:`decode`, with at most ``max_records`` spans or log records decoded: the
    message, the protobuf bytes it was decoded from (None for JSON), and how many records
    were left out. A JSON body holding more than ``max_json_values`` objects and arrays, or
    a protobuf body more than ``max_messages`` messages (after the cap), is refused with 413:
    each costs about 10 us to parse, or about a hundred bytes once decoded."""
    request_type = SIGNALS[signal][0]
    if kind == PROTOBUF:
        body, dropped = cap_protobuf_records(body, max_records, deadline)
        if max_messages is not None:
            check_message_count(request_type, body, max_messages, deadline)
        if deadline is not None:
            deadline.check()
        return decode_protobuf(request_type, body), body, dropped
    obj = load_json(body)
    dropped = cap_json_records(obj, request_type.DESCRIPTOR.name, max_records)
    if json_values(obj, max_json_values) > max_json_values:
        raise too_large(
            f"OTLP/JSON body holds more than {max_json_values} objects and arrays; send smaller batches",
            reason="too_many_values",
        )
    if deadline is not None:
        deadline.check()
    return parse_json(request_type, obj), None, dropped


def decode_protobuf(request_type: type[Message], body: bytes) -> Message:
    try:
        return request_type.FromString(body)
    except (DecodeError, RecursionError, ValueError) as exc:
        raise malformed(f"body is not a valid {request_type.DESCRIPTOR.name}: {exc}") from None


def decode_json(request_type: type[Message], body: bytes) -> Message:
    """OTLP/HTTP "JSON Protobuf Encoding": the proto3 JSON mapping with three deviations.

    trace/span ids are hex (not base64), enums are integers, and unknown fields must
    be ignored. int64 as strings or numbers is plain proto3 JSON.
    """
    return parse_json(request_type, load_json(body))


def load_json(body: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise malformed(f"body is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise malformed("body must be a JSON object")
    return obj


def parse_json(request_type: type[Message], obj: dict[str, Any]) -> Message:
    """A parsed OTLP/JSON document as the request message (hex ids converted first)."""
    try:
        _hex_ids_to_base64(obj, _ID_PATHS[request_type.DESCRIPTOR.name], 0)
        message = request_type()
        json_format.ParseDict(obj, message, ignore_unknown_fields=True, max_recursion_depth=MAX_JSON_DEPTH)
    except (json_format.ParseError, RecursionError, ValueError, TypeError, AttributeError) as exc:
        raise malformed(f"body is not a valid OTLP/JSON {request_type.DESCRIPTOR.name}: {exc}") from None
    return message


# Where hex ids live in each request (JSON names), walked without recursion into AnyValues.
_SPAN_PATH: tuple[Any, ...] = (
    "resourceSpans",
    "scopeSpans",
    "spans",
    {"traceId": None, "spanId": None, "parentSpanId": None, "links": ("traceId", "spanId")},
)
_LOG_PATH: tuple[Any, ...] = ("resourceLogs", "scopeLogs", "logRecords", {"traceId": None, "spanId": None})
_ID_PATHS: dict[str, tuple[Any, ...]] = {
    "ExportTraceServiceRequest": _SPAN_PATH,
    "ExportLogsServiceRequest": _LOG_PATH,
    # Exemplars carry ids too; metrics are only acknowledged, so ids are ignored there.
    "ExportMetricsServiceRequest": (),
}
_SNAKE = {
    "resourceSpans": "resource_spans",
    "scopeSpans": "scope_spans",
    "resourceLogs": "resource_logs",
    "scopeLogs": "scope_logs",
    "logRecords": "log_records",
    "traceId": "trace_id",
    "spanId": "span_id",
    "parentSpanId": "parent_span_id",
}


def _get(obj: dict[str, Any], key: str) -> tuple[str, Any]:
    if key in obj:
        return key, obj[key]
    snake = _SNAKE.get(key, key)
    return snake, obj.get(snake)


def _hex_ids_to_base64(obj: Any, path: tuple[Any, ...], depth: int) -> None:
    if not path or not isinstance(obj, dict):
        return
    head, rest = path[0], path[1:]
    if isinstance(head, dict):
        _fix_ids(obj, head)
        return
    _, items = _get(obj, head)
    if isinstance(items, list):
        for item in items:
            _hex_ids_to_base64(item, rest, depth + 1)


def _fix_ids(record: dict[str, Any], spec: dict[str, Any]) -> None:
    for key, nested in spec.items():
        name, value = _get(record, key)
        if nested is None:
            if isinstance(value, str):
                record[name] = _hex_to_b64(value)
        elif isinstance(value, list):
            for link in value:
                if isinstance(link, dict):
                    _fix_ids(link, dict.fromkeys(nested))


def _hex_to_b64(value: str) -> str:
    if not value:
        return ""
    try:
        return base64.b64encode(binascii.unhexlify(value)).decode()
    except (binascii.Error, ValueError):
        return _INVALID_ID


def encode_response(message: Message, kind: str) -> bytes:
    """OTLP/HTTP Response: the body uses the request's encoding."""
    if kind == JSON:
        return json_format.MessageToJson(message, indent=None).encode()
    return message.SerializeToString()


def encode_status(code: grpc.StatusCode, message: str, kind: str) -> bytes:
    """OTLP/HTTP Failures: the body of a non-2xx answer is a google.rpc.Status."""
    status = status_pb2.Status(code=code.value[0], message=message)
    return encode_response(status, kind)


def partial_success(signal: str, *, rejected: int, message: str) -> Message:
    """OTLP "Partial Success": a rejected count and why, in the signal's own response field."""
    response = SIGNALS[signal][1]()
    if rejected or message:
        field = {"traces": "rejected_spans", "logs": "rejected_log_records", "metrics": "rejected_data_points"}
        setattr(response.partial_success, field[signal], rejected)
        response.partial_success.error_message = message
    return response


def count_records(signal: str, request: Message) -> int:
    """Spans, log records or metric data points in a request (``records_received`` metric)."""
    if signal == "traces":
        return sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
    if signal == "logs":
        return sum(len(sl.log_records) for rl in request.resource_logs for sl in rl.scope_logs)
    total = 0
    for rm in request.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                kind = metric.WhichOneof("data")
                if kind:
                    total += len(getattr(metric, kind).data_points)
    return total
