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
import zlib
from typing import Any

import grpc
from google.protobuf import json_format
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

    def __init__(self, http_status: int, grpc_code: grpc.StatusCode, reason: str, message: str):
        super().__init__(message)
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
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise malformed(f"body is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise malformed("body must be a JSON object")
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
