"""End to end: real OpenTelemetry SDK exporters and hand-made OTLP against ``ipai-ops bridge serve``."""

from __future__ import annotations

import gzip
import json
import logging
import urllib.error
import urllib.request
import uuid

import pytest
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.trace import Status, StatusCode

from tests.bridge.conftest import BridgeProcess, error_rows, occurrence_ids, post, unique_letters
from tests.bridge.otlp_factory import span, traces


def _emit(tracer_provider: TracerProvider, logger_provider: LoggerProvider, service: str) -> None:
    tracer = tracer_provider.get_tracer("e2e")
    try:
        with tracer.start_as_current_span("intent.attempt") as s:
            s.set_attribute("ipai.failure.code", "INTENT.LEASE_EXPIRED")
            raise TimeoutError(f"lease expired after 300 s in {service}")
    except TimeoutError:
        pass
    with tracer.start_as_current_span("db") as s:
        s.set_status(Status(StatusCode.ERROR, f"psycopg2.OperationalError: could not connect to server {service}"))
    with tracer.start_as_current_span("ok"):
        pass
    logger = logging.getLogger(f"e2e.{service}")
    logger.propagate = False
    handler = LoggingHandler(logger_provider=logger_provider)
    logger.addHandler(handler)
    try:
        with tracer.start_as_current_span("with-log"):
            logger.error("GitHub API rate limit exceeded for installation %s", service)
        logger.info("all good")
    finally:
        logger.removeHandler(handler)


def _providers(service: str, span_exporter, log_exporter):
    resource = Resource.create({"service.name": service, "service.version": "1.0.0"})
    tp = TracerProvider(resource=resource)
    tp.add_span_processor(SimpleSpanProcessor(span_exporter))
    lp = LoggerProvider(resource=resource)
    lp.add_log_record_processor(SimpleLogRecordProcessor(log_exporter))
    return tp, lp


def _assert_rows(dsn: str, service: str) -> None:
    rows = error_rows(dsn, service=service)
    by_code = {r["code"]: r for r in rows}
    assert set(by_code) == {"INTENT.LEASE_EXPIRED", "TRANSPORT.DATABASE_UNAVAILABLE", "GITHUB.RATE_LIMITED"}
    for row in rows:
        assert row["count"] == 1
        assert row["source"] == "otlp"
        assert row["last_service_version"] == "1.0.0"
        assert len(row["last_trace_id"]) == 32 and len(row["last_span_id"]) == 16
    lease = by_code["INTENT.LEASE_EXPIRED"]
    assert lease["error_type"] == "TimeoutError" and "lease expired" in lease["message"]
    ids = [oid for _, oid in occurrence_ids(dsn, service=service)]
    assert sorted(i.split(":")[0] for i in ids) == ["event", "log", "span"]


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_sdk_exporters_land_rows(bridge: BridgeProcess, transport: str):
    service = f"sdk{transport}{unique_letters()}"
    if transport == "http":
        exporters = (
            HttpSpanExporter(endpoint=bridge.url + "/v1/traces"),
            HttpLogExporter(endpoint=bridge.url + "/v1/logs"),
        )
    else:
        endpoint = f"127.0.0.1:{bridge.grpc_port}"
        exporters = (
            GrpcSpanExporter(endpoint=endpoint, insecure=True),
            GrpcLogExporter(endpoint=endpoint, insecure=True),
        )
    tp, lp = _providers(service, *exporters)
    _emit(tp, lp, service)
    tp.shutdown()
    lp.shutdown()
    _assert_rows(bridge.dsn, service)


def test_replay_changes_no_count_in_any_encoding(bridge: BridgeProcess):
    service = f"replay{unique_letters()}"
    request = traces(
        [
            span(error=f"replayed failure {service}"),
            span(exceptions=[{"exception.type": "E", "exception.message": service}]),
        ],
        resource={"service.name": service},
    )
    body = request.SerializeToString()
    for _ in range(3):
        status, headers, answer = post(bridge.url + "/v1/traces", body)
        assert status == 200, answer
        assert headers["Content-Type"].startswith("application/x-protobuf")
        assert not ExportTraceServiceResponse.FromString(answer).HasField("partial_success")
    status, _, _ = post(bridge.url + "/v1/traces", gzip.compress(body), headers={"Content-Encoding": "gzip"})
    assert status == 200
    assert [r["count"] for r in error_rows(bridge.dsn, service=service)] == [1, 1]


def _json_request(service: str, trace_hex: str, span_hex: str) -> dict:
    return {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [
                        {"key": "service.name", "value": {"stringValue": service}},
                        {"key": "ipai.source", "value": {"stringValue": "agents"}},
                    ]
                },
                "scopeSpans": [
                    {
                        "scope": {"name": "hand"},
                        "spans": [
                            {
                                "traceId": trace_hex,
                                "spanId": span_hex,
                                "name": "call",
                                "kind": 3,
                                "startTimeUnixNano": "1700000000000000000",
                                "endTimeUnixNano": "1700000000500000000",
                                "status": {"code": 2, "message": f"Error code: 503 - upstream {service}"},
                                "unknownField": {"ignored": True},
                            },
                            {
                                "traceId": trace_hex.upper(),
                                "spanId": "zz" * 8,
                                "name": "bad id",
                                "status": {"code": 2},
                            },
                        ],
                    }
                ],
            }
        ]
    }


def test_hand_made_json_with_partial_success_and_replay(bridge: BridgeProcess):
    service = f"json{unique_letters()}"
    trace_hex, span_hex = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    body = json.dumps(_json_request(service, trace_hex, span_hex)).encode()
    for _ in range(2):
        status, headers, answer = post(bridge.url + "/v1/traces", body, content_type="application/json")
        assert status == 200, answer
        assert headers["Content-Type"].startswith("application/json")
        partial = json.loads(answer)["partialSuccess"]
        assert partial["rejectedSpans"] == "1"
        assert "trace_id/span_id" in partial["errorMessage"]
    [row] = error_rows(bridge.dsn, service=service)
    assert (row["code"], row["count"], row["source"]) == ("TRANSPORT.UPSTREAM_5XX", 1, "agents")
    assert (row["last_trace_id"], row["last_span_id"]) == (trace_hex, span_hex)
    assert occurrence_ids(bridge.dsn, service=service) == [("agents", f"span:{trace_hex}:{span_hex}")]


def test_metrics_signal_is_acknowledged(bridge: BridgeProcess):
    status, _, answer = post(bridge.url + "/v1/metrics", b"{}", content_type="application/json")
    assert (status, json.loads(answer)) == (200, {})


def test_health_readiness_and_metrics(bridge: BridgeProcess):
    with urllib.request.urlopen(bridge.url + "/readyz") as resp:
        assert json.loads(resp.read())["status"] == "ready"
    # labelled counters exist once something was counted: send an error of our own, so the
    # test does not depend on which tests ran before it on this worker
    body = traces([span(error=f"metrics probe {unique_letters()}")]).SerializeToString()
    assert post(bridge.url + "/v1/traces", body)[0] == 200
    with urllib.request.urlopen(bridge.url + "/metrics") as resp:
        text = resp.read().decode()
    for name in (
        "ipai_bridge_records_received_total",
        "ipai_bridge_errors_written_total",
        "ipai_bridge_batch_size_bucket",
        "ipai_bridge_write_seconds_bucket",
        "ipai_bridge_inflight_requests",
    ):
        assert name in text, name


def test_readyz_reports_unmigrated_database(empty_db_dsn: str):
    proc = BridgeProcess(empty_db_dsn, grpc_port=0).start()
    try:
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(proc.url + "/readyz")
        assert info.value.code == 503
        status, headers, _ = post(proc.url + "/v1/traces", traces([span(error="x")]).SerializeToString())
        assert status == 503 and headers["Retry-After"] == "1"
    finally:
        proc.stop()


def test_bearer_token(module_ops_dsn: str):
    proc = BridgeProcess(module_ops_dsn, env={"IPAI_BRIDGE_TOKEN": "s3cret-token"}).start()
    try:
        body = traces([span()]).SerializeToString()
        assert post(proc.url + "/v1/traces", body)[0] == 401
        assert post(proc.url + "/v1/traces", body, headers={"Authorization": "Bearer wrong"})[0] == 401
        # Not UTF-8 on the wire (urllib sends latin-1): wrong, not a 500.
        assert post(proc.url + "/v1/traces", body, headers={"Authorization": "Bearer \xff\xfe"})[0] == 401
        assert post(proc.url + "/v1/traces", body, headers={"Authorization": "Bearer s3cret-token"})[0] == 200
        ok = GrpcSpanExporter(
            endpoint=f"127.0.0.1:{proc.grpc_port}", insecure=True, headers={"authorization": "Bearer s3cret-token"}
        )
        bad = GrpcSpanExporter(endpoint=f"127.0.0.1:{proc.grpc_port}", insecure=True, timeout=2)
        finished = ReadableSpan(name="s", context=TracerProvider().get_tracer("t").start_span("x").get_span_context())
        assert ok.export([finished]) == SpanExportResult.SUCCESS
        assert bad.export([finished]) == SpanExportResult.FAILURE
    finally:
        proc.stop()
