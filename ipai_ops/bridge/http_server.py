"""OTLP/HTTP on aiohttp: ``POST /v1/{traces,logs,metrics}``, ``/healthz``, ``/readyz``, ``/metrics``.

The server runs with ``auto_decompress=False``: aiohttp would otherwise inflate gzip
bodies itself, without our decompressed-size limit.
"""

from __future__ import annotations

import json
import logging

from aiohttp import web

from ipai_ops.bridge import metrics
from ipai_ops.bridge.otlp import (
    JSON,
    PROTOBUF,
    OtlpRejected,
    check_bearer,
    check_content_encoding,
    check_content_type,
    check_declared_length,
    decode,
    encode_response,
    encode_status,
    gunzip,
    media_type,
    too_large,
)
from ipai_ops.bridge.pipeline import Pipeline
from ipai_ops.bridge.settings import Settings

log = logging.getLogger(__name__)

PIPELINE = web.AppKey("pipeline", Pipeline)
SETTINGS = web.AppKey("settings", Settings)


async def read_body(request: web.Request, *, limit: int) -> bytes:
    """The raw body, refused with 413 as soon as it passes ``limit`` (chunked bodies included)."""
    buf = bytearray()
    while True:
        chunk = await request.content.readany()
        if not chunk:
            return bytes(buf)
        buf += chunk
        if len(buf) > limit:
            raise too_large(f"request body exceeds the {limit} byte limit")


def _answer_kind(request: web.Request) -> str:
    kind = media_type(request.headers.get("Content-Type"))
    return kind if kind in (PROTOBUF, JSON) else PROTOBUF


def _refusal(exc: OtlpRejected, kind: str, settings: Settings, *, body_read: bool) -> web.Response:
    headers = {}
    if exc.http_status in (429, 503):
        headers["Retry-After"] = str(settings.retry_after_seconds)
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
            check_bearer(request.headers.get("Authorization"), settings.token)
            kind = check_content_type(request.headers.get("Content-Type"))
            gzipped = check_content_encoding(request.headers.get("Content-Encoding"))
            check_declared_length(request.content_length, limit=settings.max_body_bytes)
            with pipeline.slot():
                body = await read_body(request, limit=settings.max_body_bytes)
                body_read = True
                if gzipped:
                    body = gunzip(body, limit=settings.max_decompressed_bytes)
                message = decode(signal, body, kind)
                response = await pipeline.export(
                    signal,
                    message,
                    encoding="protobuf" if kind == PROTOBUF else "json",
                    raw=body if kind == PROTOBUF else None,
                )
        except OtlpRejected as exc:
            if exc.reason != "db_unavailable":  # counted per record by the pipeline
                metrics.RECORDS_REJECTED.labels(exc.reason).inc()
            return _refusal(exc, kind, settings, body_read=body_read)
        return web.Response(body=encode_response(response, kind), content_type=kind)

    return handle


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


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
    app = web.Application(client_max_size=settings.max_body_bytes)
    app[PIPELINE] = pipeline
    app[SETTINGS] = settings
    for signal in ("traces", "logs", "metrics"):
        app.router.add_post(f"/v1/{signal}", export_handler(signal))
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_handler)
    return app
