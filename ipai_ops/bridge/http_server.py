"""OTLP/HTTP on aiohttp: ``POST /v1/{traces,logs,metrics}``, ``/healthz``, ``/readyz``, ``/metrics``.

The server runs with ``auto_decompress=False``: aiohttp would otherwise inflate gzip
bodies itself, without our decompressed-size limit.

Slow senders hold no request slot: a body is read (under ``body_timeout_seconds`` and the
worker's body byte budget) before the request takes one. A connection must deliver a
complete request head within ``idle_timeout_seconds`` of opening or of its previous answer
(aiohttp's keep-alive timer, which also runs before the first request), and
:class:`ConnectionCap` closes the oldest idle connection beyond ``max_connections``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict
from typing import Any

import grpc
from aiohttp import web

from ipai_ops.bridge import metrics
from ipai_ops.bridge.otlp import (
    JSON,
    PROTOBUF,
    OtlpRejected,
    check_content_encoding,
    check_content_type,
    check_declared_length,
    encode_response,
    encode_status,
    media_type,
    too_large,
)
from ipai_ops.bridge.pipeline import Pipeline
from ipai_ops.bridge.settings import Settings

log = logging.getLogger(__name__)

PIPELINE = web.AppKey("pipeline", Pipeline)
SETTINGS = web.AppKey("settings", Settings)


async def read_body(
    request: web.Request, *, limit: int, timeout: float | None = None, reservation: Any = None
) -> bytes:
    """The raw body, refused with 413 as soon as it passes ``limit`` (chunked bodies included),
    with 408 when it has not fully arrived within ``timeout`` seconds, and with 503 when the
    worker's body budget (``reservation``) has no room for it."""
    buf = bytearray()

    async def read() -> bytes:
        while True:
            chunk = await request.content.readany()
            if not chunk:
                return bytes(buf)
            if reservation is not None:
                reservation.take(len(chunk))
            buf.extend(chunk)
            if len(buf) > limit:
                raise too_large(f"request body exceeds the {limit} byte limit")

    try:
        return await asyncio.wait_for(read(), timeout)  # asyncio.timeout() needs Python 3.11
    except asyncio.TimeoutError:
        raise OtlpRejected(
            408,
            grpc.StatusCode.DEADLINE_EXCEEDED,
            "body_timeout",
            f"request body did not arrive within {timeout} s ({len(buf)} bytes received)",
        ) from None


def _answer_kind(request: web.Request) -> str:
    kind = media_type(request.headers.get("Content-Type"))
    return kind if kind in (PROTOBUF, JSON) else PROTOBUF


def _refusal(exc: OtlpRejected, kind: str, settings: Settings, *, body_read: bool) -> web.Response:
    headers = {}
    if exc.http_status in (429, 503):
        retry_after = exc.retry_after if exc.retry_after is not None else settings.retry_after_seconds
        headers["Retry-After"] = str(retry_after)
    if exc.http_status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="ipai-bridge"'
    response = web.Response(
        status=exc.http_status,
        body=encode_status(exc.grpc_code, exc.message, kind),
        content_type=kind,
        headers=headers,
    )
    if not body_read:
        # The unread body (maybe huge) must not be drained to keep the connection alive.
        response.force_close()
    return response


def export_handler(signal: str):
    async def handle(request: web.Request) -> web.Response:
        pipeline = request.app[PIPELINE]
        settings = request.app[SETTINGS]
        kind = _answer_kind(request)
        body_read = False
        try:
            sender = pipeline.authenticate(request.headers.get("Authorization"), settings.token)
            pipeline.check_quota_before_body(sender)
            kind = check_content_type(request.headers.get("Content-Type"))
            gzipped = check_content_encoding(request.headers.get("Content-Encoding"))
            limit = settings.max_body_bytes
            if kind == JSON and not gzipped:
                limit = min(limit, settings.max_json_bytes)
            check_declared_length(request.content_length, limit=limit)
            with pipeline.bodies.reservation() as reservation:
                body = await read_body(
                    request, limit=limit, timeout=settings.body_timeout_seconds, reservation=reservation
                )
                body_read = True
                with pipeline.slot():
                    answer = await pipeline.export_body(
                        signal,
                        body,
                        kind=kind,
                        gzipped=gzipped,
                        encoding="protobuf" if kind == PROTOBUF else "json",
                        sender=sender,
                    )
        except OtlpRejected as exc:
            if exc.reason != "db_unavailable":  # counted per record by the pipeline
                metrics.RECORDS_REJECTED.labels(exc.reason).inc()
            response = _refusal(exc, kind, settings, body_read=body_read)
            if exc.reason == "body_timeout":
                # No lingering read of the rest: this sender has had its time. Closing the
                # transport still flushes the answer first.
                await response.prepare(request)
                await response.write_eof()
                request.protocol.force_close()
            return response
        except ConnectionResetError:
            raise  # the sender went away: nobody to answer
        except Exception:
            # Never aiohttp's plain-text 500: the documented google.rpc.Status, no detail.
            log.exception("unexpected failure handling an OTLP/HTTP %s request", signal)
            metrics.RECORDS_REJECTED.labels("internal").inc()
            response = web.Response(
                status=500,
                body=encode_status(grpc.StatusCode.INTERNAL, "internal error; see the bridge's log", kind),
                content_type=kind,
            )
            response.force_close()
            return response
        return web.Response(body=encode_response(answer, kind), content_type=kind)

    return handle


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


class ConnectionCap:
    """At most ``limit`` open connections: a new one beyond it closes the oldest idle one.

    Idle means no request being handled: silent connections, keep-alive connections
    between requests, and connections still sending a request head. A connection whose
    request is being handled (its body being read included, bounded by the body deadline)
    is never closed; when all are, the new connection is closed instead.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.busy: set[Any] = set()
        self._open: OrderedDict[Any, None] = OrderedDict()

    def attach(self, server: web.Server) -> None:
        """Watch ``server``'s connections (``AppRunner.server``, once set up)."""
        self._made = server.connection_made
        self._lost = server.connection_lost
        # RequestHandler reports to its server (its "manager") through these two calls.
        server.connection_made = self._connection_made  # type: ignore[method-assign]
        server.connection_lost = self._connection_lost  # type: ignore[method-assign]

    def _connection_made(self, handler: Any, transport: asyncio.Transport) -> None:
        self._made(handler, transport)
        self._open[handler] = None
        if len(self._open) <= self.limit:
            return
        victim = next((h for h in self._open if h not in self.busy and h is not handler), None)
        victim = handler if victim is None else victim
        del self._open[victim]
        victim.force_close()

    def _connection_lost(self, handler: Any, exc: BaseException | None = None) -> None:
        self._open.pop(handler, None)
        self.busy.discard(handler)
        self._lost(handler, exc)


CONNECTIONS = web.AppKey("connections", ConnectionCap)


@web.middleware
async def _mark_busy(request: web.Request, handler: Any) -> web.StreamResponse:
    cap = request.app[CONNECTIONS]
    protocol = request.protocol
    cap.busy.add(protocol)
    try:
        return await handler(request)
    finally:
        cap.busy.discard(protocol)


async def readyz(request: web.Request) -> web.Response:
    ok, detail = await request.app[PIPELINE].writer.readiness()
    return web.Response(
        status=200 if ok else 503,
        text=json.dumps({"status": "ready" if ok else "not ready", **detail}, default=str),
        content_type="application/json",
    )


async def metrics_handler(request: web.Request) -> web.Response:
    body, content_type = metrics.exposition()
    response = web.Response(body=body)
    response.headers["Content-Type"] = content_type
    return response


def build_app(pipeline: Pipeline, settings: Settings) -> web.Application:
    # client_max_size is moot (bodies are read by read_body) but keep aiohttp's own cap aligned.
    app = web.Application(client_max_size=settings.max_body_bytes, middlewares=[_mark_busy])
    app[PIPELINE] = pipeline
    app[SETTINGS] = settings
    app[CONNECTIONS] = ConnectionCap(settings.max_connections)
    for signal in ("traces", "logs", "metrics"):
        app.router.add_post(f"/v1/{signal}", export_handler(signal))
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_handler)
    return app
