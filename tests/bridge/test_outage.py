"""PostgreSQL outages and overload: retryable answers, then nothing lost and nothing double-counted.

The outage is real from the bridge's side: its DSN points at a local TCP relay that
the test stops (refusing and cutting connections) and restarts. The machine's
PostgreSQL server itself is never touched.
"""

from __future__ import annotations

import string
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import grpc
import psycopg2
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from tests.bridge.conftest import BridgeProcess, TcpProxy, error_rows, post, proxied_dsn, unique_letters
from tests.bridge.otlp_factory import span, traces


def _finished_spans(service: str, n: int):
    memory = InMemorySpanExporter()
    tp = TracerProvider(resource=Resource.create({"service.name": service}))
    tp.add_span_processor(SimpleSpanProcessor(memory))
    tracer = tp.get_tracer("outage")
    for i in range(n):
        with tracer.start_as_current_span(f"op{i}") as s:
            s.set_status(Status(StatusCode.ERROR, f"failure kind {string.ascii_lowercase[i]} in {service}"))
    tp.shutdown()
    return memory.get_finished_spans()


@pytest.fixture
def proxy():
    relay = TcpProxy(("127.0.0.1", 5432))
    relay.up()
    try:
        yield relay
    finally:
        relay.down()


def test_outage_answers_retryable_then_sdk_retry_lands_everything_once(module_ops_dsn: str, proxy: TcpProxy):
    bridge = BridgeProcess(proxied_dsn(module_ops_dsn, proxy.port)).start()
    try:
        service = f"outage{unique_letters()}"
        http_spans = _finished_spans(service + "http", 4)
        grpc_spans = _finished_spans(service + "grpc", 3)
        proxy.down()

        # Direct evidence of the documented answers while PostgreSQL is unreachable.
        status, headers, _ = post(bridge.url + "/v1/traces", traces([span(error="probe")]).SerializeToString())
        assert status == 503 and headers["Retry-After"] == "1"
        with grpc.insecure_channel(f"127.0.0.1:{bridge.grpc_port}") as channel:
            stub = trace_service_pb2_grpc.TraceServiceStub(channel)
            with pytest.raises(grpc.RpcError) as info:
                stub.Export(traces([span(error="probe")]), timeout=10)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            assert any(k == "google.rpc.retryinfo-bin" for k, _ in info.value.trailing_metadata())

        http = HttpSpanExporter(endpoint=bridge.url + "/v1/traces", timeout=30)
        grpc_exporter = GrpcSpanExporter(endpoint=f"127.0.0.1:{bridge.grpc_port}", insecure=True, timeout=30)
        with ThreadPoolExecutor(2) as pool:
            results = [pool.submit(http.export, http_spans), pool.submit(grpc_exporter.export, grpc_spans)]
            time.sleep(2.5)  # the exporters are retrying against 503 / UNAVAILABLE now
            assert not any(r.done() for r in results)
            proxy.up()
            assert [r.result(timeout=60) for r in results] == [SpanExportResult.SUCCESS] * 2

        # Everything landed once; a full redelivery changes nothing.
        for name, spans in ((service + "http", http_spans), (service + "grpc", grpc_spans)):
            rows = error_rows(module_ops_dsn, service=name)
            assert [r["count"] for r in rows] == [1] * len(spans)
        assert http.export(http_spans) == SpanExportResult.SUCCESS
        assert grpc_exporter.export(grpc_spans) == SpanExportResult.SUCCESS
        assert [r["count"] for r in error_rows(module_ops_dsn, service=service + "http")] == [1] * 4
        assert [r["count"] for r in error_rows(module_ops_dsn, service=service + "grpc")] == [1] * 3
        with urllib.request.urlopen(bridge.url + "/metrics") as resp:
            assert 'ipai_bridge_records_rejected_total{reason="db_unavailable"}' in resp.read().decode()
    finally:
        bridge.stop()


def test_at_capacity_answers_503_instead_of_queueing(module_ops_dsn: str):
    bridge = BridgeProcess(module_ops_dsn, max_inflight=1, grpc_port=0).start()
    locker = psycopg2.connect(module_ops_dsn)
    try:
        service = f"capacity{unique_letters()}"
        with locker.cursor() as cur:
            cur.execute("LOCK TABLE ops.agent_errors IN ACCESS EXCLUSIVE MODE")  # writes now wait
        slow_body = traces([span(error=f"slow {service}")], resource={"service.name": service}).SerializeToString()
        results: list[int] = []
        slow = threading.Thread(target=lambda: results.append(post(bridge.url + "/v1/traces", slow_body)[0]))
        slow.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with urllib.request.urlopen(bridge.url + "/metrics") as resp:
                if "ipai_bridge_inflight_requests 1.0" in resp.read().decode():
                    break
            time.sleep(0.05)
        status, headers, _ = post(bridge.url + "/v1/traces", traces([span(error="more")]).SerializeToString())
        assert status == 503 and headers["Retry-After"] == "1"
        locker.rollback()
        slow.join(30)
        assert results == [200]
        assert [r["count"] for r in error_rows(module_ops_dsn, service=service)] == [1]
    finally:
        locker.close()
        bridge.stop()
