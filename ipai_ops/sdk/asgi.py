"""ASGI 3 middleware: an escaping exception becomes an RFC 9457 problem answer.

Pure ASGI (no framework): ``http`` scopes are handled, ``lifespan`` and ``websocket``
pass through untouched. Wrap it *inside* the OpenTelemetry ASGI instrumentation so the
server span is current when a failure is recorded::

    app = OpenTelemetryMiddleware(ASGIProblemMiddleware(app, reporter=reporter))

Every response carries ``X-Correlation-Id``. The direct ops upsert runs in a worker
thread, never on the event loop. When the exception escapes after the response started,
no problem can be sent any more: the failure is reported and re-raised (its message
redacted in place), so the server aborts the response instead of passing a truncated
body off as complete. An outer OpenTelemetry ASGI instrumentation then records the
escaping exception as a second span event of its own (without ``ipai.occurrence_id``),
which the bridge counts as a second occurrence: the price of an aborted stream.

A problem that was sent is *not* re-raised: the failure is fully handled (reported,
recorded, answered). Re-raising would make outer layers record it a second time, with
the raw exception text the middleware keeps away from telemetry.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from ipai_ops.sdk.reporter import (
    CORRELATION_HEADER,
    Reporter,
    bind_correlation_id,
    correlation_id_from,
    scrub_exception,
    unbind_correlation_id,
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: The scope key holding the request's correlation id (an ASGI extension key).
SCOPE_CORRELATION_ID = "ipai.correlation_id"
_HEADER = CORRELATION_HEADER.lower().encode("latin-1")
_REQUEST_ID = b"x-request-id"


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or ():
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _path(scope: Scope) -> str:
    return (scope.get("root_path") or "") + (scope.get("path") or "") or "/"


class ASGIProblemMiddleware:
    def __init__(self, app: ASGIApp, *, reporter: Reporter) -> None:
        self.app = app
        self.reporter = reporter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cid = correlation_id_from(_header(scope, _HEADER), _header(scope, _REQUEST_ID))
        scope = {**scope, SCOPE_CORRELATION_ID: cid}
        started = False

        async def send_with_correlation(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = list(message.get("headers") or ())
                if not any(key.lower() == _HEADER for key, _ in headers):
                    headers.append((_HEADER, cid.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        token = bind_correlation_id(cid)
        try:
            await self.app(scope, receive, send_with_correlation)
        except Exception as exc:
            report = await self.reporter.areport(
                exc,
                correlation_id=cid,
                context={"http_method": scope.get("method"), "url_path": _path(scope)},
                instance=_path(scope),
            )
            if started:
                scrub_exception(exc)
                raise
            await send(
                {
                    "type": "http.response.start",
                    "status": report.status,
                    "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in report.headers()],
                }
            )
            await send({"type": "http.response.body", "body": report.body(), "more_body": False})
        finally:
            unbind_correlation_id(token)
