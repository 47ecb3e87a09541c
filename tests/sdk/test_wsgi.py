"""WSGI: a real wsgiref server, the OpenTelemetry WSGI instrumentation, the ops database."""

from __future__ import annotations

import http.client
import json
import uuid
from urllib.parse import urlsplit

import pytest
import requests
from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware
from opentelemetry.semconv.attributes.exception_attributes import EXCEPTION_MESSAGE
from opentelemetry.trace import StatusCode

from ipai_ops.sdk import (
    CORRELATION_HEADER,
    DeliveryStore,
    Failure,
    Reporter,
    WebhookVerifier,
    WSGIProblemMiddleware,
    current_correlation_id,
)
from ipai_ops.sdk.webhooks import GITHUB
from ipai_ops.semconv import EXCEPTION_EVENT, IPAI_CORRELATION_ID, IPAI_FAILURE_CODE, IPAI_OCCURRENCE_ID

from .conftest import SERVICE, assert_problem, error_rows, serve_wsgi

GITHUB_SECRET = "wsgi-test-secret"
# Not in the raise line itself: a traceback quotes its source line (the test would find it there).
MIDSTREAM_MESSAGE = "stream broke after the headers went out: password=hunter2xyz"


def make_app(verifier: WebhookVerifier):
    def app(environ, start_response):
        path = environ["PATH_INFO"]
        if path == "/ok":
            body = json.dumps({"correlation_id": current_correlation_id(), "environ": environ["ipai.correlation_id"]})
            start_response("200 OK", [("Content-Type", "application/json")])
            return [body.encode()]
        if path == "/typed":
            raise Failure("API.REQUEST_INVALID", "name is required; we got password=hunter2xyz")
        if path == "/boom":
            raise RuntimeError("ledger exploded: password=hunter2xyz api_key=sk-proj-ABCDEFGHIJKLMNOP1234")
        if path == "/after-start-response":
            start_response("200 OK", [("Content-Type", "text/plain")])
            raise Failure("INTENT.TIMEOUT", "took too long")
        if path == "/lazy":
            return lazy_failure(start_response)
        if path == "/midstream":
            return midstream_failure(start_response)
        if path == "/hooks/github":
            body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
            with verifier.receive(environ, body) as delivery:
                if delivery.json().get("fail"):
                    raise RuntimeError("handler could not apply the push")
            start_response("204 No Content", [])
            return []
        start_response("404 Not Found", [])
        return []

    return app


def lazy_failure(start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield from ()
    raise RuntimeError("generator failed before its first chunk")


def midstream_failure(start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"first chunk\n"
    raise RuntimeError(MIDSTREAM_MESSAGE)


@pytest.fixture
def server(clean_ops_dsn, registry, tracing):
    reporter = Reporter(SERVICE, source="wsgi-svc", dsn=clean_ops_dsn, registry=registry)
    deliveries = DeliveryStore(clean_ops_dsn)
    verifier = WebhookVerifier("github", secrets=[GITHUB_SECRET], deliveries=deliveries)
    app = OpenTelemetryMiddleware(
        WSGIProblemMiddleware(make_app(verifier), reporter=reporter), tracer_provider=tracing.provider
    )
    try:
        with serve_wsgi(app) as url:
            yield url
    finally:
        reporter.close()
        deliveries.close()


def get(url: str, path: str, **kwargs) -> tuple[requests.Response, str]:
    cid = "t-" + uuid.uuid4().hex
    resp = requests.get(url + path, headers={CORRELATION_HEADER: cid}, timeout=10, **kwargs)
    return resp, cid


def test_success_passes_through_with_the_correlation_id(server):
    resp, cid = get(server, "/ok")
    assert resp.status_code == 200 and resp.headers[CORRELATION_HEADER] == cid
    assert resp.json() == {"correlation_id": cid, "environ": cid}
    fresh = requests.get(server + "/ok", headers={"X-Request-Id": "bad id\t!"}, timeout=10)
    assert (
        len(fresh.headers[CORRELATION_HEADER]) == 32
        and fresh.json()["correlation_id"] == fresh.headers[CORRELATION_HEADER]
    )
    by_request_id = requests.get(server + "/ok", headers={"X-Request-Id": "lb-123"}, timeout=10)
    assert by_request_id.headers[CORRELATION_HEADER] == "lb-123"


def test_typed_failure(server, clean_ops_dsn, tracing):
    resp, cid = get(server, "/typed")
    doc = assert_problem(resp, status=400, code="API.REQUEST_INVALID", cid=cid, instance="/typed")
    assert doc["detail"] == "name is required; we got password=[REDACTED:secret]"
    span = tracing.wait_for(lambda s: s.attributes.get(IPAI_CORRELATION_ID) == cid)
    assert span.attributes[IPAI_FAILURE_CODE] == "API.REQUEST_INVALID"
    (row,) = error_rows(clean_ops_dsn)
    assert (row["code"], row["count"], row["source"], row["service"]) == ("API.REQUEST_INVALID", 1, "wsgi-svc", SERVICE)
    assert row["occurrence_ids"] == [span.attributes[IPAI_OCCURRENCE_ID]]


def test_untyped_failure_never_leaks_its_text(server, clean_ops_dsn, tracing):
    resp, cid = get(server, "/boom")
    doc = assert_problem(resp, status=500, code="UNCLASSIFIED.UNKNOWN", cid=cid, instance="/boom")
    assert "ledger" not in resp.text and cid in doc["detail"]
    span = tracing.wait_for(lambda s: s.attributes.get(IPAI_CORRELATION_ID) == cid)
    assert span.status.status_code is StatusCode.ERROR
    (event,) = [e for e in span.events if e.name == EXCEPTION_EVENT]
    assert event.attributes[IPAI_FAILURE_CODE] == "UNCLASSIFIED.UNKNOWN"
    assert "ledger exploded" in event.attributes[EXCEPTION_MESSAGE]
    (row,) = error_rows(clean_ops_dsn)
    assert row["count"] == 1 and row["last_trace_id"] == format(span.context.trace_id, "032x")
    assert row["last_span_id"] == format(span.context.span_id, "016x")
    assert row["sample"]["context"]["url_path"] == "/boom" and row["sample"]["context"]["correlation_id"] == cid
    everything = json.dumps(
        {"event": dict(event.attributes), "span": dict(span.attributes), "row": row, "body": doc}, default=str
    )
    assert "hunter2xyz" not in everything and "sk-proj-ABCDEFGHIJKLMNOP1234" not in everything


def test_failure_after_start_response_and_in_a_lazy_body(server, clean_ops_dsn):
    resp, cid = get(server, "/after-start-response")
    assert_problem(resp, status=504, code="INTENT.TIMEOUT", cid=cid, instance="/after-start-response")
    resp, cid = get(server, "/lazy")
    assert_problem(resp, status=500, code="UNCLASSIFIED.UNKNOWN", cid=cid, instance="/lazy")
    assert sorted((r["code"], r["count"]) for r in error_rows(clean_ops_dsn)) == [
        ("INTENT.TIMEOUT", 1),
        ("UNCLASSIFIED.UNKNOWN", 1),
    ]


def test_failure_after_the_body_started_is_reported_and_the_response_aborted(server, clean_ops_dsn, tracing):
    cid = "t-" + uuid.uuid4().hex
    parts = urlsplit(server)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.request("GET", "/midstream", headers={CORRELATION_HEADER: cid})
        resp = conn.getresponse()
        assert resp.status == 200  # already on the wire when the failure came
        body = resp.read()
    finally:
        conn.close()
    assert body == b"first chunk\n"  # wsgiref closes the connection: no problem document follows
    span = tracing.wait_for(lambda s: s.attributes.get(IPAI_CORRELATION_ID) == cid)
    assert span.attributes[IPAI_FAILURE_CODE] == "UNCLASSIFIED.UNKNOWN"
    (row,) = error_rows(clean_ops_dsn)
    assert row["count"] == 1 and "stream broke" in row["message"]
    events = [e for e in span.events if e.name == EXCEPTION_EVENT]
    assert [e.attributes.get(IPAI_OCCURRENCE_ID) for e in events].count(row["occurrence_ids"][0]) == 1
    # The instrumentation records the re-raised exception again (docs/services.md); it was
    # redacted in place first, so no copy of the secret leaves the process.
    texts = json.dumps([dict(e.attributes) for e in events] + [row["message"], span.status.description])
    assert "hunter2xyz" not in texts


def test_github_webhook_good_bad_replayed(server, clean_ops_dsn, tracing):
    body = json.dumps({"ref": "refs/heads/main"}).encode()

    def post(headers, payload=body):
        cid = "t-" + uuid.uuid4().hex
        resp = requests.post(
            server + "/hooks/github", data=payload, headers={**headers, CORRELATION_HEADER: cid}, timeout=10
        )
        return resp, cid

    good = GITHUB.sign(GITHUB_SECRET, body, delivery_id=str(uuid.uuid4()))
    resp, _ = post(good)
    assert resp.status_code == 204
    resp, cid = post(good)
    doc = assert_problem(resp, status=409, code="WEBHOOK.DELIVERY_DUPLICATE", cid=cid, instance="/hooks/github")
    assert doc["detail"] == "this delivery was already processed"
    resp, cid = post(GITHUB.sign("not-the-secret", body, delivery_id=str(uuid.uuid4())))
    assert_problem(resp, status=401, code="WEBHOOK.SIGNATURE_INVALID", cid=cid, instance="/hooks/github")
    resp, cid = post({"X-GitHub-Delivery": str(uuid.uuid4())})
    doc = assert_problem(resp, status=401, code="API.AUTH_MISSING", cid=cid, instance="/hooks/github")
    assert "x-hub-signature-256" in doc["detail"]
    # A failing handler releases the id: GitHub's redelivery (same id) is then accepted.
    failing = json.dumps({"fail": True}).encode()
    retry_headers = GITHUB.sign(GITHUB_SECRET, failing, delivery_id=str(uuid.uuid4()))
    resp, cid = post(retry_headers, failing)
    assert_problem(resp, status=500, code="UNCLASSIFIED.UNKNOWN", cid=cid, instance="/hooks/github")
    resp, cid = post(retry_headers, failing)
    assert resp.status_code == 500  # processed again, not refused as a duplicate
    counts = {r["code"]: r["count"] for r in error_rows(clean_ops_dsn)}
    assert counts == {
        "API.AUTH_MISSING": 1,
        "UNCLASSIFIED.UNKNOWN": 2,
        "WEBHOOK.DELIVERY_DUPLICATE": 1,
        "WEBHOOK.SIGNATURE_INVALID": 1,
    }
