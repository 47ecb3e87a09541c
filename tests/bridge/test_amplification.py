"""Small bodies that decode into millions of records: capped per request, answered with partial success.

The bridge runs with small limits (50 records, 64 KiB of JSON) so each case is fast; the
same code paths cut a 16 MiB body of 8 million empty spans (benchmarks/bridge_hostile.py).
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterator

import grpc
import hypothesis.strategies as st
import pytest
from google.rpc import status_pb2
from hypothesis import given, settings
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from ipai_ops.bridge.otlp import MAX_NESTING, OtlpRejected, cap_protobuf_records, check_message_count, encode_varint
from tests.bridge.conftest import BridgeProcess, error_rows, post, unique_letters
from tests.bridge.otlp_factory import log_record, logs, span, traces

LIMIT = 50
EMPTY_SPAN = b"\x12\x00"  # ScopeSpans.spans: an empty Span


@pytest.fixture(scope="module")
def capped_bridge(module_ops_dsn: str) -> Iterator[BridgeProcess]:
    proc = BridgeProcess(module_ops_dsn, max_records=LIMIT, max_json_bytes=64 * 1024).start()
    try:
        yield proc
    finally:
        proc.stop()


def _with_empty_spans(request: ExportTraceServiceRequest, count: int) -> bytes:
    """``request`` (one resource, one scope) followed by a second scope of ``count`` empty spans."""
    scope = EMPTY_SPAN * count
    resource = b"\x12" + encode_varint(len(scope)) + scope  # ResourceSpans.scope_spans
    return request.SerializeToString() + b"\x0a" + encode_varint(len(resource)) + resource


# --------------------------------------------------------------------------- the cap itself


def test_cap_keeps_the_first_records_and_everything_around_them():
    request = ExportTraceServiceRequest()
    for r in range(3):
        rs = request.resource_spans.add(schema_url=f"resource-{r}")
        rs.resource.attributes.add(key="service.name").value.string_value = f"svc{r}"
        for s in range(4):
            ss = rs.scope_spans.add(schema_url=f"scope-{r}-{s}")
            ss.scope.name = f"scope{r}{s}"
            ss.spans.extend(span(name=f"span-{r}-{s}-{i}") for i in range(5))
    body = request.SerializeToString()
    for limit in (0, 1, 7, 20, 37, 59, 60, 100):
        capped, dropped = cap_protobuf_records(body, limit)
        assert dropped == max(0, 60 - limit)
        got = ExportTraceServiceRequest.FromString(capped)
        names = [sp.name for rs in got.resource_spans for ss in rs.scope_spans for sp in ss.spans]
        full = [sp.name for rs in request.resource_spans for ss in rs.scope_spans for sp in ss.spans]
        assert names == full[:limit]
        # resources and scopes keep their own fields, whatever was cut from them
        assert [rs.schema_url for rs in got.resource_spans] == ["resource-0", "resource-1", "resource-2"]
        assert [rs.resource.attributes[0].value.string_value for rs in got.resource_spans] == ["svc0", "svc1", "svc2"]
        assert [(ss.scope.name, ss.schema_url) for rs in got.resource_spans for ss in rs.scope_spans] == [
            (f"scope{r}{s}", f"scope-{r}-{s}") for r in range(3) for s in range(4)
        ]
    assert cap_protobuf_records(body, 60) == (body, 0)


def test_cap_leaves_bodies_within_the_limit_untouched():
    # Each attribute's value tag is the byte 0x12 too: 200 records, thousands of 0x12 bytes.
    many_attributes = {f"attr.{i}": "v" for i in range(40)}
    body = traces([span(error="x", attributes=many_attributes) for _ in range(200)]).SerializeToString()
    assert body.count(b"\x12") > 200 * 40
    assert cap_protobuf_records(body, 200)[0] is body
    capped, dropped = cap_protobuf_records(body, 199)
    assert (
        dropped == 1 and len(ExportTraceServiceRequest.FromString(capped).resource_spans[0].scope_spans[0].spans) == 199
    )


def test_cap_counts_runs_of_tiny_records_exactly():
    head = traces([span(error="kept")]).SerializeToString()
    for unit, copies in (
        (EMPTY_SPAN, 100_003),
        (b"\x12\x02\x08\x01", 70_001),
        (EMPTY_SPAN + b"\x12\x02\x08\x01", 33_333),
    ):
        scope = unit * copies
        resource = b"\x12" + encode_varint(len(scope)) + scope
        body = head + b"\x0a" + encode_varint(len(resource)) + resource
        capped, dropped = cap_protobuf_records(body, LIMIT)
        assert dropped == 1 + copies * unit.count(b"\x12") - LIMIT
        got = ExportTraceServiceRequest.FromString(capped)
        assert sum(len(ss.spans) for rs in got.resource_spans for ss in rs.scope_spans) == LIMIT
        assert got.resource_spans[0].scope_spans[0].spans[0].status.message == "kept"


def test_cap_refuses_broken_protobuf_as_malformed():
    body = _with_empty_spans(traces([]), 200)
    with pytest.raises(OtlpRejected) as info:
        cap_protobuf_records(body[:-101], LIMIT)  # the last field runs past the body
    assert (info.value.http_status, info.value.reason) == (400, "malformed")


def _span_with_nested(count: int, field: int, *, service: str = "svc") -> bytes:
    """A traces request of one ERROR span followed by ``count`` empty nested messages of
    Span field ``field`` (9: attributes, 11: events, 13: links) -- inside a kept record."""
    request = traces([span(error=f"nested failure {service}")], resource={"service.name": service})
    extra = bytes([field << 3 | 2, 0]) * count
    sp = request.resource_spans[0].scope_spans[0].spans[0].SerializeToString() + extra
    scope = b"\x12" + encode_varint(len(sp)) + sp
    resource = request.resource_spans[0].resource.SerializeToString()
    rs = b"\x0a" + encode_varint(len(resource)) + resource + b"\x12" + encode_varint(len(scope)) + scope
    return b"\x0a" + encode_varint(len(rs)) + rs


def _messages_in(message) -> int:
    """Every message decoding builds below ``message`` (the reference the walk is held to)."""
    total = 0
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        values = value if field.is_repeated else [value]
        for item in values:
            total += 1 + _messages_in(item)
    return total


def test_nested_messages_inside_one_kept_span_are_counted_and_refused_past_the_limit():
    for field in (9, 11, 13):
        body = _span_with_nested(5_000, field)
        expected = _messages_in(ExportTraceServiceRequest.FromString(body))
        assert expected > 5_000
        check_message_count(ExportTraceServiceRequest, body, expected)  # exactly at the limit: decoded
        with pytest.raises(OtlpRejected) as info:
            check_message_count(ExportTraceServiceRequest, body, expected - 1)
        assert (info.value.http_status, info.value.reason) == (413, "too_many_values")
        assert info.value.grpc_code == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_values_nested_deeper_than_the_runtime_allows_are_malformed():
    value = b""
    for _ in range(MAX_NESTING + 5):  # AnyValue.array_value (5) -> ArrayValue.values (1) -> ...
        array = b"\x0a" + encode_varint(len(value)) + value
        value = b"\x2a" + encode_varint(len(array)) + array
    attribute = b"\x0a\x01k\x12" + encode_varint(len(value)) + value  # KeyValue{key, value}
    name = b"z" * 2000  # "z" is also a tag byte: the body is walked, not cleared by its counts
    sp = b"\x2a" + encode_varint(len(name)) + name + b"\x4a" + encode_varint(len(attribute)) + attribute
    scope = b"\x12" + encode_varint(len(sp)) + sp
    rs = b"\x12" + encode_varint(len(scope)) + scope
    body = b"\x0a" + encode_varint(len(rs)) + rs
    with pytest.raises(OtlpRejected) as info:
        check_message_count(ExportTraceServiceRequest, body, 4 * MAX_NESTING)
    assert info.value.reason == "malformed"


# --------------------------------------------------------------------------- through the bridge


def test_protobuf_of_many_empty_spans_is_capped_and_innocent_errors_stored(capped_bridge: BridgeProcess):
    service = f"amplified{unique_letters()}"
    errors = traces([span(error=f"real failure {service} {i}") for i in range(3)], resource={"service.name": service})
    body = _with_empty_spans(errors, 200_000)
    status, _, answer = post(capped_bridge.url + "/v1/traces", body)
    assert status == 200, answer
    partial = ExportTraceServiceResponse.FromString(answer).partial_success
    assert partial.rejected_spans == 200_003 - LIMIT
    assert f"limit of {LIMIT} records" in partial.error_message
    assert sum(row["count"] for row in error_rows(capped_bridge.dsn, service=service)) == 3


def test_error_spans_beyond_the_cap_are_refused_not_stored(capped_bridge: BridgeProcess):
    service = f"overcap{unique_letters()}"
    letters = "abcdefghijklmnopqrstuvwxyz"
    body = traces(
        [span(error=f"failure {letters[i // 26]}{letters[i % 26]} {service}") for i in range(LIMIT + 10)],
        resource={"service.name": service},
    ).SerializeToString()
    status, _, answer = post(capped_bridge.url + "/v1/traces", body)
    assert status == 200, answer
    assert ExportTraceServiceResponse.FromString(answer).partial_success.rejected_spans == 10
    assert sum(row["count"] for row in error_rows(capped_bridge.dsn, service=service)) == LIMIT


def test_grpc_gets_the_same_cap(capped_bridge: BridgeProcess):
    service = f"grpccap{unique_letters()}"
    body = _with_empty_spans(
        traces([span(error=f"grpc failure {service}")], resource={"service.name": service}), 50_000
    )
    with grpc.insecure_channel(f"127.0.0.1:{capped_bridge.grpc_port}") as channel:
        export = channel.unary_unary(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            request_serializer=None,
            response_deserializer=ExportTraceServiceResponse.FromString,
        )
        answer = export(body, timeout=10)
    assert answer.partial_success.rejected_spans == 50_001 - LIMIT
    assert len(error_rows(capped_bridge.dsn, service=service)) == 1


def test_error_logs_beyond_the_cap_are_refused(capped_bridge: BridgeProcess):
    service = f"logcap{unique_letters()}"
    request: ExportLogsServiceRequest = logs(
        [log_record(body=f"error number {i} in {service}", time_ns=1_700_000_000_000_000_000 + i) for i in range(3000)],
        resource={"service.name": service},
    )
    status, _, answer = post(capped_bridge.url + "/v1/logs", request.SerializeToString())
    assert status == 200, answer
    assert ExportLogsServiceResponse.FromString(answer).partial_success.rejected_log_records == 3000 - LIMIT
    assert sum(row["count"] for row in error_rows(capped_bridge.dsn, service=service)) == LIMIT


def _json_spans(spans: list[dict]) -> dict:
    return {"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}


def test_json_of_many_empty_spans_is_capped(capped_bridge: BridgeProcess):
    service = f"jsoncap{unique_letters()}"
    real = {"traceId": os.urandom(16).hex(), "spanId": os.urandom(8).hex(), "status": {"code": 2, "message": service}}
    doc = _json_spans([real] + [{}] * 15_000)
    doc["resourceSpans"][0]["resource"] = {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]}
    body = gzip.compress(json.dumps(doc, separators=(",", ":")).encode())
    status, _, answer = post(
        capped_bridge.url + "/v1/traces", body, content_type="application/json", headers={"Content-Encoding": "gzip"}
    )
    assert status == 200, answer
    assert json.loads(answer)["partialSuccess"]["rejectedSpans"] == str(15_001 - LIMIT)
    assert len(error_rows(capped_bridge.dsn, service=service)) == 1


def test_json_has_its_own_smaller_limit(capped_bridge: BridgeProcess):
    # 3 bytes a span: a 3 KB gzip body of 300k "{}" spans inflates past 64 KiB of JSON.
    body = gzip.compress(json.dumps(_json_spans([{}] * 300_000)).encode())
    assert len(body) < 4096
    status, _, answer = post(
        capped_bridge.url + "/v1/traces", body, content_type="application/json", headers={"Content-Encoding": "gzip"}
    )
    assert status == 413, answer
    assert "65536" in json.loads(answer)["message"]
    # The same JSON uncompressed, and protobuf of that size, are judged by their own limits.
    plain = json.dumps(_json_spans([{}] * 30_000)).encode()
    assert post(capped_bridge.url + "/v1/traces", plain, content_type="application/json")[0] == 413


def test_json_of_many_tiny_values_inside_one_span_is_refused(capped_bridge: BridgeProcess):
    attributes = [{}] * 15_000  # 45 KB of JSON, each "{}" about 10 us to parse
    doc = _json_spans([{"traceId": "ab" * 16, "spanId": "cd" * 8, "status": {"code": 2}, "attributes": attributes}])
    status, _, answer = post(
        capped_bridge.url + "/v1/traces", json.dumps(doc).encode(), content_type="application/json"
    )
    assert status == 413, answer
    assert "objects and arrays" in json.loads(answer)["message"]


def test_millions_of_empty_events_in_one_span_are_refused_and_the_bridge_stays_small(module_ops_dsn: str):
    # One message per 16 bytes of the decompressed limit: 1 Mi for the default 16 MiB (8
    # million empty events were 961 MB and 3.5 s before; benchmarks/bridge_hostile.py), 64 Ki
    # here, where 500,000 empty events fit in 1 MB.
    proc = BridgeProcess(module_ops_dsn, max_body_bytes=1024 * 1024, max_decompressed_bytes=1024 * 1024).start()
    service = f"nested{unique_letters()}"
    try:
        body = gzip.compress(_span_with_nested(500_000, 11, service=service))
        status, _, answer = post(proc.url + "/v1/traces", body, headers={"Content-Encoding": "gzip"})
        assert status == 413, answer
        assert "nested messages" in status_pb2.Status.FromString(answer).message
        # the same span with a sender's usual handful of events is stored
        status, _, answer = post(proc.url + "/v1/traces", _span_with_nested(3, 11, service=service))
        assert status == 200, answer
        assert sum(row["count"] for row in error_rows(proc.dsn, service=service)) == 1
    finally:
        proc.stop()


def test_a_request_over_its_cpu_deadline_is_refused_and_not_to_be_retried(module_ops_dsn: str):
    proc = BridgeProcess(module_ops_dsn, cpu_seconds=0.0001).start()
    body = traces([span(error=f"costly {unique_letters()} {i}") for i in range(200)]).SerializeToString()
    try:
        status, headers, answer = post(proc.url + "/v1/traces", body)
        with grpc.insecure_channel(f"127.0.0.1:{proc.grpc_port}") as channel:
            export = channel.unary_unary(
                "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                request_serializer=None,
                response_deserializer=ExportTraceServiceResponse.FromString,
            )
            with pytest.raises(grpc.RpcError) as info:
                export(body, timeout=10)
    finally:
        proc.stop()
    assert status == 413 and "Retry-After" not in headers, answer
    assert "CPU seconds" in status_pb2.Status.FromString(answer).message
    # RESOURCE_EXHAUSTED without RetryInfo: OTLP/gRPC senders do not retry it.
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert not [key for key, _ in info.value.trailing_metadata() or () if key == "google.rpc.retryinfo-bin"]


# --------------------------------------------------------------------------- properties

_names = st.text(alphabet="abcxyz", max_size=3)
_requests = st.lists(  # resources -> scopes -> span names
    st.lists(st.tuples(_names, st.lists(_names, max_size=12)), max_size=3), max_size=3
)


@settings(max_examples=200, deadline=None)
@given(shape=_requests, limit=st.integers(min_value=0, max_value=40), logs_signal=st.booleans())
def test_cap_equals_decoding_everything_then_keeping_the_first_records(shape, limit, logs_signal):
    request = ExportLogsServiceRequest() if logs_signal else ExportTraceServiceRequest()
    for r, scopes in enumerate(shape):
        resource = request.resource_logs.add() if logs_signal else request.resource_spans.add()
        resource.schema_url = f"r{r}"
        for schema, names in scopes:
            scope = resource.scope_logs.add() if logs_signal else resource.scope_spans.add()
            scope.schema_url = schema
            for name in names:
                if logs_signal:
                    scope.log_records.add().severity_text = name
                else:
                    scope.spans.add(name=name)
    body = request.SerializeToString()
    capped, dropped = cap_protobuf_records(body, limit)
    expected = type(request).FromString(body)
    left = limit
    for resource in expected.resource_logs if logs_signal else expected.resource_spans:
        for scope in resource.scope_logs if logs_signal else resource.scope_spans:
            records = scope.log_records if logs_signal else scope.spans
            keep = min(left, len(records))
            del records[keep:]
            left -= keep
    total = sum(len(names) for scopes in shape for _, names in scopes)
    assert dropped == max(0, total - limit)
    assert type(request).FromString(capped) == expected


_values = st.recursive(
    st.one_of(
        st.text(max_size=3).map(lambda t: ("s", t)),
        st.integers(min_value=-(2**63), max_value=2**63 - 1).map(lambda i: ("i", i)),
    ),
    lambda inner: st.lists(inner, max_size=4).map(lambda items: ("a", items)),
    max_leaves=12,
)


def _set_value(target, value) -> None:
    kind, payload = value
    if kind == "s":
        target.string_value = payload
    elif kind == "i":
        target.int_value = payload
    else:
        target.array_value.SetInParent()
        for item in payload:
            _set_value(target.array_value.values.add(), item)


@settings(max_examples=200, deadline=None)
@given(
    spans=st.lists(
        st.tuples(st.lists(_values, max_size=4), st.integers(min_value=0, max_value=4)), min_size=1, max_size=4
    ),
    slack=st.integers(min_value=-3, max_value=3),
)
def test_message_count_equals_counting_the_decoded_request(spans, slack):
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    for attributes, events in spans:
        sp = scope.spans.add(name="s")
        for i, value in enumerate(attributes):
            attr = sp.attributes.add(key=f"k{i}")
            _set_value(attr.value, value)
        for _ in range(events):
            sp.events.add()
    body = request.SerializeToString()
    expected = _messages_in(request)
    limit = max(0, expected + slack)
    # the size and tag-byte shortcuts only clear bodies that cannot pass the limit
    if expected > limit:
        with pytest.raises(OtlpRejected) as info:
            check_message_count(ExportTraceServiceRequest, body, limit)
        assert info.value.reason == "too_many_values"
    else:
        check_message_count(ExportTraceServiceRequest, body, limit)


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=300), limit=st.integers(min_value=0, max_value=5))
def test_message_count_of_arbitrary_bytes_answers_or_refuses(body, limit):
    try:
        check_message_count(ExportTraceServiceRequest, body, limit)
    except OtlpRejected as exc:
        assert exc.reason in ("malformed", "too_many_values")


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=300), limit=st.integers(min_value=0, max_value=5))
def test_cap_of_arbitrary_bytes_answers_or_refuses_as_malformed(body, limit):
    try:
        capped, dropped = cap_protobuf_records(body, limit)
    except OtlpRejected as exc:
        assert exc.reason == "malformed"
        return
    assert dropped >= 0 and len(capped) <= len(body)
