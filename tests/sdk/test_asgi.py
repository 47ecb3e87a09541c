"""ASGI: a pure ASGI 3 app served by uvicorn, the OpenTelemetry ASGI instrumentation, the ops database."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid

import pytest
import requests
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.semconv.attributes.exception_attributes import EXCEPTION_MESSAGE, EXCEPTION_STACKTRACE
from opentelemetry.trace import StatusCode

from ipai_ops.registry import default_registry
from ipai_ops.sdk import (
    CORRELATION_HEADER,
    ASGIProblemMiddleware,
    DeliveryStore,
    Failure,
    Reporter,
    WebhookVerifier,
    current_correlation_id,
)
from ipai_ops.sdk.webhooks import STANDARD_WEBHOOKS
from ipai_ops.semconv import EXCEPTION_EVENT, IPAI_CORRELATION_ID, IPAI_FAILURE_CODE, IPAI_OCCURRENCE_ID, IPAI_SOURCE

from .conftest import SERVICE, assert_problem, error_rows, serve_asgi

SECRET = "whsec_" + "c2VjcmV0LWtleS1mb3ItdGhlLWFzZ2ktdGVzdHM="
LEAKY = "upstream said: Authorization: Bearer abcdefghijklmnopqrstu and password=hunter2xyz"


async def read_body(receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def respond(send, status: int, body: bytes = b"", content_type: bytes = b"application/json") -> None:
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", content_type)]})
    await send({"type": "http.response.body", "body": body})


def make_app(verifier: WebhookVerifier, state: dict):
    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    state["lifespan"] = "started"
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        path = scope["path"]
        if path == "/ok":
            body = {"correlation_id": current_correlation_id(), "scope": scope["ipai.correlation_id"]}
            await respond(send, 200, json.dumps(body).encode())
        elif path == "/typed":
            raise Failure("API.REQUEST_INVALID", "name is required", errors=[{"path": "$.name", "message": "required"}])
        elif path == "/boom":
            await asyncio.sleep(0)
            raise ConnectionError(LEAKY)
        elif path == "/unavailable":
            raise Failure("TRANSPORT.DATABASE_UNAVAILABLE", "the ledger database is down")
        elif path == "/started":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"partial", "more_body": True})
            raise RuntimeError("stream broke after the headers went out; " + LEAKY)
        elif path == "/hooks/standard":
            body = await read_body(receive)
            async with verifier.areceive(scope, body) as delivery:
                if delivery.json().get("fail"):
                    raise RuntimeError("handler could not apply the event")
            await respond(send, 204)
        else:
            await respond(send, 404)

    return app


@pytest.fixture
def served(clean_ops_dsn, registry, tracing):
    reporter = Reporter(SERVICE, source="asgi-svc", dsn=clean_ops_dsn, registry=registry, retry_after=7)
    deliveries = DeliveryStore(clean_ops_dsn)
    verifier = WebhookVerifier("standard", secrets=[SECRET], deliveries=deliveries)
    state: dict = {}
    app = OpenTelemetryMiddleware(
        ASGIProblemMiddleware(make_app(verifier, state), reporter=reporter), tracer_provider=tracing.provider
    )
    try:
        with serve_asgi(app) as url:
            yield url, state
    finally:
        reporter.close()
        deliveries.close()


def call(url: str, path: str, *, method: str = "GET", **kwargs) -> tuple[requests.Response, str]:
    cid = "t-" + uuid.uuid4().hex
    headers = {CORRELATION_HEADER: cid, **kwargs.pop("headers", {})}
    return requests.request(method, url + path, headers=headers, timeout=10, **kwargs), cid


def test_lifespan_and_success_pass_through(served):
    url, state = served
    resp, cid = call(url, "/ok")
    assert state["lifespan"] == "started"
    assert resp.status_code == 200 and resp.headers[CORRELATION_HEADER] == cid
    assert resp.json() == {"correlation_id": cid, "scope": cid}


def test_typed_failure_and_span(served, clean_ops_dsn, tracing):
    url, _ = served
    resp, cid = call(url, "/typed")
    doc = assert_problem(resp, status=400, code="API.REQUEST_INVALID", cid=cid, instance="/typed")
    assert doc["detail"] == "name is required" and doc["errors"] == [{"path": "$.name", "message": "required"}]
    span = tracing.wait_for(lambda s: s.kind.name == "SERVER" and s.attributes.get(IPAI_CORRELATION_ID) == cid)
    (event,) = [e for e in span.events if e.name == EXCEPTION_EVENT]
    assert event.attributes[IPAI_FAILURE_CODE] == span.attributes[IPAI_FAILURE_CODE] == "API.REQUEST_INVALID"
    assert event.attributes[IPAI_SOURCE] == "asgi-svc"
    (row,) = error_rows(clean_ops_dsn)
    assert (row["code"], row["count"], row["source"]) == ("API.REQUEST_INVALID", 1, "asgi-svc")
    assert row["occurrence_ids"] == [event.attributes[IPAI_OCCURRENCE_ID]]


def test_untyped_failure_is_redacted_everywhere(served, clean_ops_dsn, tracing):
    url, _ = served
    resp, cid = call(url, "/boom", method="POST", data=b"{}")
    # A bare ConnectionError is typed by its class name (a generic `on: type` signature).
    doc = assert_problem(resp, status=502, code="TRANSPORT.CONNECTION_FAILED", cid=cid, instance="/boom")
    assert "upstream" not in resp.text and cid in doc["detail"]
    span = tracing.wait_for(lambda s: s.kind.name == "SERVER" and s.attributes.get(IPAI_CORRELATION_ID) == cid)
    assert span.status.status_code is StatusCode.ERROR
    # Exactly one exception event: the middleware answered, nothing escaped to the instrumentation.
    (event,) = [e for e in span.events if e.name == EXCEPTION_EVENT]
    assert "[REDACTED:" in event.attributes[EXCEPTION_MESSAGE]
    assert "ConnectionError" in event.attributes[EXCEPTION_STACKTRACE]
    (row,) = error_rows(clean_ops_dsn)
    assert row["count"] == 1 and row["last_span_id"] == format(span.context.span_id, "016x")
    assert row["sample"]["context"]["http_method"] == "POST"
    everything = json.dumps(
        {"event": dict(event.attributes), "span": dict(span.attributes), "row": row, "body": resp.text}, default=str
    )
    assert "hunter2xyz" not in everything and "abcdefghijklmnopqrstu" not in everything


def test_retryable_503_carries_retry_after(served):
    url, _ = served
    resp, cid = call(url, "/unavailable")
    doc = assert_problem(resp, status=503, code="TRANSPORT.DATABASE_UNAVAILABLE", cid=cid, instance="/unavailable")
    assert doc["ipai"]["retryable"] is True and resp.headers["retry-after"] == "7"


def test_failure_after_the_response_started_is_reported_and_reraised(served, clean_ops_dsn, tracing):
    url, _ = served
    cid = "t-" + uuid.uuid4().hex
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(url + "/started", headers={CORRELATION_HEADER: cid}, timeout=10)
    span = tracing.wait_for(lambda s: s.kind.name == "SERVER" and s.attributes.get(IPAI_CORRELATION_ID) == cid)
    assert span.attributes[IPAI_FAILURE_CODE] == "UNCLASSIFIED.UNKNOWN"
    (row,) = error_rows(clean_ops_dsn)
    assert row["count"] == 1 and row["occurrence_ids"] == [span.attributes[IPAI_OCCURRENCE_ID]]
    events = [e for e in span.events if e.name == EXCEPTION_EVENT]
    ours = [e for e in events if e.attributes.get(IPAI_OCCURRENCE_ID) == row["occurrence_ids"][0]]
    assert len(ours) == 1
    # The instrumentation records the re-raised exception again (documented); it was
    # redacted in place first, so no copy of the secret leaves the process.
    texts = json.dumps([dict(e.attributes) for e in events] + [span.status.description])
    assert "hunter2xyz" not in texts and "abcdefghijklmnopqrstu" not in texts
    assert len(events) == 2
    # ...and the bridge knows that echo for what it is: the span is still one occurrence.
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    from ipai_ops.bridge.extract import Extractor

    request = encode_spans([span])
    extracted = Extractor(default_registry()).traces(request, raw=request.SerializeToString())
    assert [o.occurrence_id for o in extracted.occurrences] == row["occurrence_ids"]


def test_standard_webhook_good_bad_stale_replayed(served, clean_ops_dsn):
    url, _ = served
    body = json.dumps({"type": "invoice.paid"}).encode()

    def post(headers, payload=body):
        return call(url, "/hooks/standard", method="POST", data=payload, headers=headers)

    good = STANDARD_WEBHOOKS.sign(SECRET, body, delivery_id="msg_" + uuid.uuid4().hex)
    assert post(good)[0].status_code == 204
    resp, cid = post(good)
    assert_problem(resp, status=409, code="WEBHOOK.DELIVERY_DUPLICATE", cid=cid, instance="/hooks/standard")
    tampered = {**good, "webhook-id": "msg_other"}
    resp, cid = post(tampered)
    assert_problem(resp, status=401, code="WEBHOOK.SIGNATURE_INVALID", cid=cid, instance="/hooks/standard")
    stale = STANDARD_WEBHOOKS.sign(SECRET, body, delivery_id="msg_old", timestamp=int(good["webhook-timestamp"]) - 900)
    resp, cid = post(stale)
    doc = assert_problem(resp, status=401, code="WEBHOOK.TIMESTAMP_STALE", cid=cid, instance="/hooks/standard")
    assert "old" in doc["detail"]
    failing = json.dumps({"fail": True}).encode()
    retried = STANDARD_WEBHOOKS.sign(SECRET, failing, delivery_id="msg_" + uuid.uuid4().hex)
    assert post(retried, failing)[0].status_code == 500
    assert post(retried, failing)[0].status_code == 500  # released, so the retry ran the handler again
    counts = {r["code"]: r["count"] for r in error_rows(clean_ops_dsn)}
    assert counts == {
        "UNCLASSIFIED.UNKNOWN": 2,
        "WEBHOOK.DELIVERY_DUPLICATE": 1,
        "WEBHOOK.SIGNATURE_INVALID": 1,
        "WEBHOOK.TIMESTAMP_STALE": 1,
    }


def test_concurrent_failures_do_not_block_the_loop(served, clean_ops_dsn):
    url, _ = served
    results: list[int] = []

    def hit():
        results.append(call(url, "/boom")[0].status_code)

    threads = [threading.Thread(target=hit) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [502] * 8
    (row,) = error_rows(clean_ops_dsn)
    assert row["count"] == 8 and len(row["occurrence_ids"]) == 8


def test_websocket_and_lifespan_scopes_pass_through_untouched(registry):
    seen = []

    async def inner(scope, receive, send):
        seen.append((scope, receive, send))
        raise RuntimeError("not ours to answer")

    middleware = ASGIProblemMiddleware(inner, reporter=Reporter("svc", registry=registry))

    async def receive():
        return {}

    async def send(message):
        raise AssertionError("the middleware must not send on a non-http scope")

    for scope in ({"type": "websocket", "path": "/ws", "headers": []}, {"type": "lifespan"}):
        with pytest.raises(RuntimeError, match="not ours"):
            asyncio.run(middleware(scope, receive, send))
        assert seen[-1] == (scope, receive, send) and seen[-1][0] is scope
