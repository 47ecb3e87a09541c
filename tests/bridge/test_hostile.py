"""Hostile and broken input gets its documented status; good traffic keeps flowing meanwhile."""

from __future__ import annotations

import gzip
import http.client
import json
import os
import string
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import pytest
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from ipai_ops.bridge.otlp import encode_varint
from tests.bridge.conftest import BridgeProcess, error_rows, post, unique_letters
from tests.bridge.otlp_factory import span, traces

MiB = 1024 * 1024


def _field(number: int, payload: bytes) -> bytes:
    return encode_varint(number << 3 | 2) + encode_varint(len(payload)) + payload


def nested_any_value(depth: int) -> bytes:
    """AnyValue{kvlist{KeyValue{key, AnyValue{...}}}} ``depth`` levels deep, encoded by hand."""
    value = _field(1, b"leaf")  # AnyValue.string_value
    for _ in range(depth):
        key_value = _field(1, b"k") + _field(2, value)
        value = _field(6, _field(1, key_value))  # AnyValue.kvlist_value.values
    return value


def _request_with_body_attribute(any_value: bytes) -> bytes:
    """ExportTraceServiceRequest with one ERROR span carrying the hand-encoded AnyValue attribute."""
    base = span(error="nested", trace_id=os.urandom(16), span_id=os.urandom(8))
    span_bytes = base.SerializeToString() + _field(9, _field(1, b"deep") + _field(2, any_value))
    return _field(1, _field(2, _field(2, span_bytes)))  # resource_spans.scope_spans.spans


CASES = {
    "truncated protobuf": (traces([span(error="x")]).SerializeToString()[:-7], {}, 400, "application/x-protobuf"),
    "random protobuf": (b"\xff\xff\xff\xff\x0f" + os.urandom(64), {}, 400, "application/x-protobuf"),
    "invalid json": (b'{"resourceSpans": [', {}, 400, "application/json"),
    "json wrong types": (b'{"resourceSpans": "nope"}', {}, 400, "application/json"),
    "json array body": (b"[1, 2]", {}, 400, "application/json"),
    "json int64 garbage": (
        b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"endTimeUnixNano":"soon"}]}]}]}',
        {},
        400,
        "application/json",
    ),
    "truncated gzip": (gzip.compress(b"x" * 1000)[:-8], {"Content-Encoding": "gzip"}, 400, "application/x-protobuf"),
    "corrupt gzip": (b"\x1f\x8b\x08\x00garbage", {"Content-Encoding": "gzip"}, 400, "application/x-protobuf"),
    "unsupported content type": (b"{}", {}, 415, "text/plain"),
    "unsupported encoding": (b"{}", {"Content-Encoding": "br"}, 415, "application/json"),
    "deep protobuf anyvalue": (_request_with_body_attribute(nested_any_value(200)), {}, 400, "application/x-protobuf"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_bodies_get_their_status(bridge: BridgeProcess, name: str):
    body, headers, expected, content_type = CASES[name]
    status, _, answer = post(bridge.url + "/v1/traces", body, content_type=content_type, headers=headers)
    assert status == expected, answer
    if content_type == "application/x-protobuf":
        assert status_pb2.Status.FromString(answer).message
    elif content_type == "application/json":
        assert json.loads(answer)["message"]


def test_gzip_bomb_is_refused_without_inflating(bridge: BridgeProcess):
    bomb = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    chunk = b"\0" * MiB
    body = b"".join(bomb.compress(chunk) for _ in range(1024)) + bomb.flush()  # 1 GiB inflated
    assert len(body) < 2 * MiB
    started = time.monotonic()
    status, _, answer = post(bridge.url + "/v1/traces", body, headers={"Content-Encoding": "gzip"})
    assert status == 413, answer
    assert time.monotonic() - started < 5  # stopped at the 16 MiB limit, never inflated to 1 GiB


def test_oversize_bodies_declared_or_chunked_are_413(bridge: BridgeProcess):
    big = os.urandom(5 * MiB)
    assert post(bridge.url + "/v1/traces", big)[0] == 413
    conn = http.client.HTTPConnection("127.0.0.1", bridge.http_port, timeout=30)
    try:
        conn.request(
            "POST",
            "/v1/traces",
            body=iter([big[i : i + 65536] for i in range(0, len(big), 65536)]),
            headers={"Content-Type": "application/x-protobuf"},
            encode_chunked=True,
        )
        assert conn.getresponse().status == 413
    except (BrokenPipeError, ConnectionResetError):
        pass  # the bridge may close the connection before the whole chunked body is sent
    finally:
        conn.close()


def test_huge_attribute_values_and_10k_attributes_are_stored_capped(bridge: BridgeProcess):
    service = f"hostile{unique_letters()}"
    huge = span(exceptions=[{"exception.type": "E", "exception.message": "m" * (3 * MiB)}])
    many = span(error=f"many attributes {service}", attributes={f"attr.{i}": "v" * 10 for i in range(10_000)})
    body = traces([huge, many], resource={"service.name": service}).SerializeToString()
    assert len(body) < 4 * MiB
    status, _, answer = post(bridge.url + "/v1/traces", body)
    assert status == 200, answer
    assert not ExportTraceServiceResponse.FromString(answer).HasField("partial_success")
    rows = error_rows(bridge.dsn, service=service)
    assert len(rows) == 2
    assert all(len(r["message"]) < 2000 and len(json.dumps(r["sample"])) < 16_000 for r in rows)


def test_moderately_nested_anyvalue_is_fine_and_deep_json_is_400(bridge: BridgeProcess):
    status, _, _ = post(bridge.url + "/v1/traces", _request_with_body_attribute(nested_any_value(20)))
    assert status == 200
    deep: dict = {"stringValue": "leaf"}
    for _ in range(150):
        deep = {"kvlistValue": {"values": [{"key": "k", "value": deep}]}}
    body = {
        "resourceSpans": [
            {
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": "ab" * 16,
                                "spanId": "cd" * 8,
                                "status": {"code": 2},
                                "attributes": [{"key": "deep", "value": deep}],
                            }
                        ]
                    }
                ]
            }
        ]
    }
    status, _, _ = post(bridge.url + "/v1/traces", json.dumps(body).encode(), content_type="application/json")
    assert status == 400


def test_good_traffic_keeps_flowing_under_hostile_load(bridge: BridgeProcess):
    service = f"steady{unique_letters()}"
    hostile = [(body, headers, ctype) for body, headers, _, ctype in CASES.values()]
    bomb = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    bomb_body = b"".join(bomb.compress(b"\0" * MiB) for _ in range(64)) + bomb.flush()
    hostile.append((bomb_body, {"Content-Encoding": "gzip"}, "application/x-protobuf"))
    # Amplification: 3M "{}" spans of JSON in a few KB of gzip (413), 200k empty protobuf
    # spans (200, the records beyond the limit refused through partial success).
    json_bomb = gzip.compress(
        b'{"resourceSpans":[{"scopeSpans":[{"spans":[' + b",".join([b"{}"] * 3_000_000) + b"]}]}]}"
    )
    hostile.append((json_bomb, {"Content-Encoding": "gzip"}, "application/json"))
    empty_spans = b"\x12\x00" * 200_000
    resource = b"\x12" + encode_varint(len(empty_spans)) + empty_spans
    hostile.append((b"\x0a" + encode_varint(len(resource)) + resource, {}, "application/x-protobuf"))

    def attack(i: int) -> int:
        body, headers, ctype = hostile[i % len(hostile)]
        return post(bridge.url + "/v1/traces", body, content_type=ctype, headers=headers)[0]

    def good(i: int) -> int:
        request = traces(
            [span(error=f"steady failure {string.ascii_lowercase[i % 26]} {service}")],
            resource={"service.name": service},
        )
        return post(bridge.url + "/v1/traces", request.SerializeToString())[0]

    with ThreadPoolExecutor(8) as pool:
        bad = [pool.submit(attack, i) for i in range(60)]
        ok = [pool.submit(good, i) for i in range(52)]
        assert [f.result() for f in ok] == [200] * 52
        assert all(f.result() in (200, 400, 413, 415) for f in bad)
    rows = error_rows(bridge.dsn, service=service)
    assert len(rows) == 26 and sum(r["count"] for r in rows) == 52
