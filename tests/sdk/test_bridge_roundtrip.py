"""One failure, two paths, one count: the direct upsert and the OTLP bridge share the occurrence key.

The service's spans go through the real OTLP/HTTP exporter to a real ``ipai-ops bridge
serve`` (tests/bridge/conftest.py's BridgeProcess) writing to the same database the
reporter upserts into directly.
"""

from __future__ import annotations

import random
import string
from collections.abc import Iterator, Sequence

import pytest
import requests
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from ipai_ops.sdk import CORRELATION_HEADER, Reporter, WSGIProblemMiddleware
from ipai_ops.semconv import IPAI_CORRELATION_ID, IPAI_OCCURRENCE_ID
from tests.bridge.conftest import BridgeProcess, error_rows, occurrence_ids

from .conftest import SERVICE, Tracing, serve_wsgi


class RecordingExporter(SpanExporter):
    """The real OTLP/HTTP exporter, remembering its results: a failed export must fail the test."""

    def __init__(self, endpoint: str) -> None:
        self.inner = OTLPSpanExporter(endpoint=endpoint, timeout=10)
        self.results: list[SpanExportResult] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = self.inner.export(spans)
        self.results.append(result)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()


@pytest.fixture(scope="module")
def bridge(module_ops_dsn: str) -> Iterator[BridgeProcess]:
    proc = BridgeProcess(module_ops_dsn, workers=1).start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def exported(bridge: BridgeProcess) -> Iterator[tuple[Tracing, RecordingExporter]]:
    exporter = RecordingExporter(bridge.url + "/v1/traces")
    tracing = Tracing(processors=[SimpleSpanProcessor(exporter)])
    try:
        yield tracing, exporter
    finally:
        tracing.provider.shutdown()


def token() -> str:
    """Letters only: fingerprints normalise digits away; a letter token keeps tests apart."""
    return "".join(random.choices(string.ascii_lowercase, k=12))


def test_direct_upsert_and_bridge_count_once(module_ops_dsn, registry, exported):
    tracing, exporter = exported
    source = "svc-" + token()
    reporter = Reporter(SERVICE, source=source, dsn=module_ops_dsn, registry=registry)
    marker = token()

    def app(environ, start_response):
        raise RuntimeError(f"settlement {marker} failed")

    wrapped = OpenTelemetryMiddleware(WSGIProblemMiddleware(app, reporter=reporter), tracer_provider=tracing.provider)
    try:
        with serve_wsgi(wrapped) as url:
            for n in range(2):
                cid = f"rt-{marker}-{n}"
                resp = requests.get(url + "/pay", headers={CORRELATION_HEADER: cid}, timeout=10)
                assert resp.status_code == 500
                # The span reaches the bridge after the answer; the bridge answers after COMMIT.
                tracing.wait_for(lambda s, cid=cid: s.attributes.get(IPAI_CORRELATION_ID) == cid)
    finally:
        reporter.close()
    assert exporter.results == [SpanExportResult.SUCCESS] * 2
    (row,) = error_rows(module_ops_dsn, source=source)
    assert row["count"] == 2 and row["service"] == SERVICE
    ids = [span.attributes[IPAI_OCCURRENCE_ID] for span in tracing.spans()]
    assert sorted(occurrence_ids(module_ops_dsn, source=source)) == sorted((source, i) for i in ids)


def test_bridge_alone_lands_on_the_keys_a_direct_upsert_would_use(module_ops_dsn, registry, exported):
    tracing, exporter = exported
    source = "svc-" + token()
    reporter = Reporter(SERVICE, source=source, registry=registry)  # no DSN: telemetry only
    with tracing.provider.get_tracer("rt").start_as_current_span("job"):
        try:
            raise ValueError(f"invoice {token()} has no customer; password=hunter2xyz")
        except ValueError as exc:
            report = reporter.report(exc, correlation_id="rt-telemetry-only")
    assert exporter.results == [SpanExportResult.SUCCESS]
    (row,) = error_rows(module_ops_dsn, source=source)
    occ = report.occurrence
    assert (row["code"], row["fingerprint"], row["count"]) == (occ.code, occ.fingerprint, 1)
    assert occurrence_ids(module_ops_dsn, source=source) == [(source, occ.occurrence_id)]
    assert row["last_trace_id"] == occ.trace_id and row["last_span_id"] == occ.span_id
    assert "hunter2xyz" not in row["message"] and "hunter2xyz" not in str(row["sample"])
