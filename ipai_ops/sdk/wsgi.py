"""WSGI middleware (PEP 3333): an escaping exception becomes an RFC 9457 problem answer.

Wrap it *inside* the OpenTelemetry WSGI instrumentation so the server span is current
when a failure is recorded::

    app = OpenTelemetryMiddleware(WSGIProblemMiddleware(app, reporter=reporter))

Every answer carries ``X-Correlation-Id`` (the caller's valid ``X-Correlation-Id``, else
its ``X-Request-Id``, else a new id); handlers read it from ``environ["ipai.correlation_id"]``
or :func:`ipai_ops.sdk.current_correlation_id`.

A response body is often produced lazily, while the server iterates it. An exception
there is still answered with a problem as long as no body byte was sent: the middleware
calls ``start_response`` again with ``exc_info``, which PEP 3333 allows before the headers
are sent (and which makes the server re-raise once they are: then the failure is
reported and the connection is dropped, the only honest thing left to do).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from ipai_ops.sdk.reporter import (
    CORRELATION_HEADER,
    Report,
    Reporter,
    bind_correlation_id,
    correlation_id_from,
    scrub_exception,
    status_line,
    unbind_correlation_id,
)

#: The WSGI environ key holding the request's correlation id.
ENVIRON_CORRELATION_ID = "ipai.correlation_id"

StartResponse = Callable[..., Callable[[bytes], Any]]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def _context(environ: Mapping[str, Any]) -> dict[str, Any]:
    return {"http_method": environ.get("REQUEST_METHOD"), "url_path": _path(environ)}


def _path(environ: Mapping[str, Any]) -> str:
    return (environ.get("SCRIPT_NAME") or "") + (environ.get("PATH_INFO") or "") or "/"


class WSGIProblemMiddleware:
    def __init__(self, app: WSGIApp, *, reporter: Reporter) -> None:
        self.app = app
        self.reporter = reporter

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        cid = correlation_id_from(environ.get("HTTP_X_CORRELATION_ID"), environ.get("HTTP_X_REQUEST_ID"))
        environ[ENVIRON_CORRELATION_ID] = cid

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], Any]:
            if not any(name.lower() == CORRELATION_HEADER.lower() for name, _ in headers):
                headers = [*headers, (CORRELATION_HEADER, cid)]
            if exc_info is not None:
                return start_response(status, headers, exc_info)
            return start_response(status, headers)

        token = bind_correlation_id(cid)
        try:
            result = self.app(environ, start)
        except Exception as exc:
            report = self._report(exc, environ, cid)
            # exc_info: the app may have called start_response already (headers not sent yet).
            start_response(status_line(report.status), report.headers(), sys.exc_info())
            return [report.body()]
        finally:
            unbind_correlation_id(token)
        return _Body(result, self, environ, start_response, cid)

    def _report(self, exc: BaseException, environ: Mapping[str, Any], cid: str) -> Report:
        return self.reporter.report(exc, correlation_id=cid, context=_context(environ), instance=_path(environ))


class _Body:
    """The app's iterable, with failures during iteration reported (and answered when possible)."""

    def __init__(
        self,
        result: Iterable[bytes],
        middleware: WSGIProblemMiddleware,
        environ: dict[str, Any],
        start_response: StartResponse,
        cid: str,
    ) -> None:
        self._result = result
        self._iterator: Iterator[bytes] | None = None
        self._middleware = middleware
        self._environ = environ
        self._start_response = start_response
        self._cid = cid
        self._body_sent = False
        self._pending: list[bytes] | None = None

    def __iter__(self) -> _Body:
        return self

    def __next__(self) -> bytes:
        if self._pending is not None:
            if not self._pending:
                raise StopIteration
            return self._pending.pop()
        token = bind_correlation_id(self._cid)
        try:
            if self._iterator is None:
                self._iterator = iter(self._result)
            chunk = next(self._iterator)
        except StopIteration:
            raise
        except Exception as exc:
            report = self._middleware._report(exc, self._environ, self._cid)
            # The server logs what it re-raises: the redacted text only.
            scrub_exception(exc)
            if self._body_sent:
                raise
            # Re-raises the original exception if the server already sent the headers.
            self._start_response(status_line(report.status), report.headers(), sys.exc_info())
            self._pending = [report.body()]
            return self._pending.pop()
        finally:
            unbind_correlation_id(token)
        if chunk:
            self._body_sent = True
        return chunk

    def close(self) -> None:
        close = getattr(self._result, "close", None)
        if close is not None:
            close()
