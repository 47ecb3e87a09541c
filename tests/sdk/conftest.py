"""Middleware fixtures: the real OpenTelemetry SDK, real servers (uvicorn, wsgiref), ops rows."""

from __future__ import annotations

import io
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import psycopg2
import pytest
import requests
import uvicorn
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from ipai_ops.problem import PROBLEM_CONTENT_TYPE, validate_problem
from ipai_ops.sdk import CORRELATION_HEADER
from tests.conftest import query_rows

SERVICE = "svc-under-test"


class Tracing(SpanProcessor):
    """A TracerProvider whose finished spans land in memory; tests wait for them, never sleep."""

    def __init__(self, *, processors: Sequence[SpanProcessor] = ()) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider(resource=Resource.create({"service.name": SERVICE}))
        # Processors run in order: a span is announced only after every exporter has had it.
        for processor in (*processors, SimpleSpanProcessor(self.exporter)):
            self.provider.add_span_processor(processor)
        self.provider.add_span_processor(self)
        self._ended = threading.Condition()

    def on_end(self, span: ReadableSpan) -> None:
        with self._ended:
            self._ended.notify_all()

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def wait_for(self, predicate: Callable[[ReadableSpan], bool], *, timeout: float = 10) -> ReadableSpan:
        """The first finished span matching ``predicate``, waiting for the server thread to end it."""
        with self._ended:
            found: list[ReadableSpan] = []

            def ready() -> bool:
                found[:] = [s for s in self.spans() if predicate(s)]
                return bool(found)

            if not self._ended.wait_for(ready, timeout=timeout):
                names = [s.name for s in self.spans()]
                raise AssertionError(f"no matching span within {timeout}s; finished: {names}")
            return found[0]


@pytest.fixture
def tracing() -> Iterator[Tracing]:
    tracing = Tracing()
    try:
        yield tracing
    finally:
        tracing.provider.shutdown()


class _QuietHandler(WSGIRequestHandler):
    """wsgiref's handler without the access log, and with its error traces kept off the test output."""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def get_stderr(self) -> io.StringIO:
        return io.StringIO()


@contextmanager
def serve_wsgi(app: Callable[..., Any]) -> Iterator[str]:
    """``app`` on wsgiref.simple_server (stdlib) in a thread, on a free port."""
    server: WSGIServer = make_server("127.0.0.1", 0, app, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@contextmanager
def serve_asgi(app: Callable[..., Any]) -> Iterator[str]:
    """``app`` on uvicorn in a thread. The socket listens before uvicorn starts, so requests
    sent right away queue in the backlog instead of racing the startup."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, lifespan="on", log_level="critical", loop="asyncio", http="h11"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture
def clean_ops_dsn(module_ops_dsn: str) -> str:
    """The module's migrated database, emptied for this test (a fresh database costs ~0.3 s)."""
    conn = psycopg2.connect(module_ops_dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SET LOCAL lock_timeout = '5s'")
            cur.execute("TRUNCATE ops.agent_errors, ops.agent_error_occurrences, ops.webhook_deliveries CASCADE")
    finally:
        conn.close()
    return module_ops_dsn


def error_rows(dsn: str) -> list[dict[str, Any]]:
    return query_rows(
        dsn,
        "SELECT e.code, e.count, e.source, e.service, e.message, e.fingerprint, e.sample,"
        " e.last_trace_id, e.last_span_id,"
        " array_agg(o.occurrence_id ORDER BY o.occurrence_id) AS occurrence_ids"
        " FROM ops.agent_errors e LEFT JOIN ops.agent_error_occurrences o ON o.error_id = e.id"
        " GROUP BY e.id ORDER BY e.code, e.id",
    )


def assert_problem(resp: requests.Response, *, status: int, code: str, cid: str, instance: str) -> dict:
    """A valid RFC 9457 answer of ``code`` for the request with correlation id ``cid``; its document."""
    assert resp.status_code == status
    assert resp.headers["Content-Type"] == PROBLEM_CONTENT_TYPE
    assert resp.headers[CORRELATION_HEADER] == cid
    doc = resp.json()
    validate_problem(doc)
    assert (doc["type"], doc["status"], doc["instance"]) == (f"urn:ipai:failure:{code}", status, instance)
    assert doc["ipai"]["code"] == code and doc["ipai"]["correlation_id"] == cid
    return doc
