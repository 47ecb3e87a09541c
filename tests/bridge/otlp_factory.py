"""Hand-made OTLP requests for tests and the benchmark."""

from __future__ import annotations

import os
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status


def kv(key: str, value: Any) -> KeyValue:
    if isinstance(value, AnyValue):
        return KeyValue(key=key, value=value)
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=str(value)))


def attrs(mapping: dict[str, Any] | None) -> list[KeyValue]:
    return [kv(k, v) for k, v in (mapping or {}).items()]


def span(
    *,
    name: str = "work",
    error: str | None = None,
    exceptions: list[dict[str, Any]] = (),
    attributes: dict[str, Any] | None = None,
    trace_id: bytes | None = None,
    span_id: bytes | None = None,
    end_ns: int = 1_700_000_000_000_000_000,
) -> Span:
    out = Span(
        trace_id=os.urandom(16) if trace_id is None else trace_id,
        span_id=os.urandom(8) if span_id is None else span_id,
        name=name,
        start_time_unix_nano=max(0, end_ns - 1_000_000),
        end_time_unix_nano=end_ns,
        attributes=attrs(attributes),
    )
    if error is not None:
        out.status.CopyFrom(Status(code=Status.STATUS_CODE_ERROR, message=error))
    for exc in exceptions:
        out.events.add(name="exception", time_unix_nano=max(0, end_ns - 1000), attributes=attrs(exc))
    return out


def traces(spans: list[Span], *, resource: dict[str, Any] | None = None) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    rs.resource.attributes.extend(attrs(resource if resource is not None else {"service.name": "svc"}))
    rs.scope_spans.add().spans.extend(spans)
    return request


def log_record(
    *,
    body: str = "something failed",
    severity: int = 17,
    severity_text: str = "ERROR",
    attributes: dict[str, Any] | None = None,
    trace_id: bytes = b"",
    span_id: bytes = b"",
    time_ns: int = 1_700_000_000_000_000_000,
) -> LogRecord:
    return LogRecord(
        time_unix_nano=time_ns,
        severity_number=severity,
        severity_text=severity_text,
        body=AnyValue(string_value=body),
        attributes=attrs(attributes),
        trace_id=trace_id,
        span_id=span_id,
    )


def logs(records: list[LogRecord], *, resource: dict[str, Any] | None = None) -> ExportLogsServiceRequest:
    request = ExportLogsServiceRequest()
    rl = request.resource_logs.add()
    rl.resource.attributes.extend(attrs(resource if resource is not None else {"service.name": "svc"}))
    rl.scope_logs.add().log_records.extend(records)
    return request
