"""The Odoo 19 hooks: HTTP requests and cron jobs.

Installed once per process, on the first enabled setup, and never removed: each
hook reads ``STATE.active`` first and calls straight through while telemetry is off.

- **HTTP**: ``odoo.http.Application.__call__`` (the WSGI entry point every server
  mode uses through ``odoo.http.root``) runs inside opentelemetry-instrumentation-wsgi's
  ``OpenTelemetryMiddleware``: one SERVER span per request with the HTTP semantic
  conventions. Odoo turns exceptions into responses before WSGI sees them, so
  ``Request._serve_db`` / ``_serve_nodb`` are wrapped to record the exception on that
  span; ``Request._set_request_dispatcher`` (called once Odoo matched a route) renames
  the span ``{method} {route template}`` and sets ``http.route``.
- **Cron**: ``ir.cron._run_job`` (one call per job run, whichever worker or thread)
  runs in an INTERNAL span ``odoo.cron {name}``; ``ir.cron._callback`` (where the
  server action's exception still propagates; ``_run_job`` swallows and logs it)
  records failures on that span.
"""

from __future__ import annotations

import contextvars
import functools
import logging
from typing import Any

from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.semconv.attributes.http_attributes import HTTP_ROUTE
from opentelemetry.trace import SpanKind, Status, StatusCode

from ipai_ops.semconv import IPAI_CRON_ID, IPAI_CRON_NAME, IPAI_CRON_STATUS

from . import ODOO_DATABASE
from ._failures import record_exception
from ._state import STATE

_logger = logging.getLogger(__name__)

_ENV_APP = "ipai.otel.app"
_ENV_SPAN = "ipai.otel.span"
_ENV_FAILURE = "ipai.otel.failure_code"
#: Marks our wrappers (tests assert on it; a second install is a no-op).
WRAPPED = "__ipai_otel_wrapped__"

_cron_span: contextvars.ContextVar[Any] = contextvars.ContextVar("ipai_otel_cron_span", default=None)


def _mark(func):
    setattr(func, WRAPPED, True)
    return func


# --------------------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------------------


def _request_hook(span, environ) -> None:
    environ[_ENV_SPAN] = span
    if span.is_recording():
        # The middleware names the span "{method} {path}"; a concrete path would explode
        # cardinality. "{method}" until a route matches (semconv HTTP span name).
        span.update_name(environ.get("REQUEST_METHOD") or "HTTP")


def _response_hook(span, environ, status, response_headers) -> None:
    # The middleware has just set the status from the HTTP code (ERROR without a
    # description on 5xx); keep the failure code as the description.
    code = environ.get(_ENV_FAILURE)
    if code and span.is_recording():
        span.set_status(Status(StatusCode.ERROR, code))


def _build_middleware(orig_call):
    from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware

    def inner(environ, start_response):
        return orig_call(environ.pop(_ENV_APP), environ, start_response)

    return OpenTelemetryMiddleware(
        inner,
        request_hook=_request_hook,
        response_hook=_response_hook,
        tracer_provider=STATE.providers.tracer_provider,
        meter_provider=STATE.providers.meter_provider,
    )


def _server_span(request) -> Any:
    try:
        return request.httprequest.environ.get(_ENV_SPAN)
    except Exception:
        return None


def _is_client_error(exc: BaseException) -> bool:
    """Failures Odoo answers as the client's (4xx, redirects, user errors): not recorded."""
    from odoo.exceptions import RedirectWarning, UserError
    from odoo.http import RegistryError, SessionExpiredException
    from werkzeug.exceptions import HTTPException

    if isinstance(exc, HTTPException):
        return exc.code is None or exc.code < 500
    # RegistryError: Odoo logs a warning and serves the request without a database.
    return isinstance(exc, (UserError, RedirectWarning, SessionExpiredException, RegistryError))


def _on_http_exception(request, exc: BaseException) -> None:
    try:
        span = _server_span(request)
        if span is None or not span.is_recording() or _is_client_error(exc):
            return
        code = record_exception(span, exc, service=STATE.service_name)
        if code:
            request.httprequest.environ[_ENV_FAILURE] = code
    except Exception:
        _logger.debug("could not record an HTTP exception", exc_info=True)


def _install_http() -> None:
    import odoo
    from odoo import http

    if getattr(odoo, "evented", False):
        # The gevent process serves only /websocket: connections that live for hours
        # would be one endless span each (opentelemetry-distro-odoo skips it too).
        return
    app_cls = http.Application
    if getattr(app_cls.__call__, WRAPPED, False):
        return
    orig_call = app_cls.__call__
    STATE.middleware = _build_middleware(orig_call)

    @functools.wraps(orig_call)
    def __call__(self, environ, start_response):
        if not STATE.active:
            return orig_call(self, environ, start_response)
        environ[_ENV_APP] = self
        return STATE.middleware(environ, start_response)

    app_cls.__call__ = _mark(__call__)

    req_cls = http.Request

    def wrap_serve(orig):
        @functools.wraps(orig)
        def serve(self, *args, **kwargs):
            if not STATE.active:
                return orig(self, *args, **kwargs)
            if self.db:
                span = _server_span(self)
                if span is not None and span.is_recording():
                    span.set_attribute(ODOO_DATABASE, self.db)
            try:
                return orig(self, *args, **kwargs)
            except Exception as exc:
                _on_http_exception(self, exc)
                raise

        return _mark(serve)

    req_cls._serve_db = wrap_serve(req_cls._serve_db)
    req_cls._serve_nodb = wrap_serve(req_cls._serve_nodb)

    orig_dispatcher = req_cls._set_request_dispatcher

    @functools.wraps(orig_dispatcher)
    def _set_request_dispatcher(self, rule):
        result = orig_dispatcher(self, rule)
        if STATE.active:
            try:
                span = _server_span(self)
                if span is not None and span.is_recording():
                    route = rule.rule
                    span.update_name(f"{self.httprequest.method} {route}")
                    span.set_attribute(HTTP_ROUTE, route)
            except Exception:
                _logger.debug("could not name the HTTP span", exc_info=True)
        return result

    req_cls._set_request_dispatcher = _mark(_set_request_dispatcher)


# --------------------------------------------------------------------------------------
# Cron
# --------------------------------------------------------------------------------------


def _cron_attributes(cron_id: Any, name: str, db: str | None) -> dict[str, Any]:
    attrs: dict[str, Any] = {IPAI_CRON_NAME: name or ""}
    if isinstance(cron_id, int):
        attrs[IPAI_CRON_ID] = cron_id
    if db:
        attrs[ODOO_DATABASE] = db
    return attrs


def _record_cron_failure(span, exc: BaseException) -> None:
    code = record_exception(span, exc, service=STATE.service_name)
    if code and span.is_recording():
        # semconv's low-cardinality error class, as on pulser.intent.attempt spans.
        span.set_attribute(ERROR_TYPE, code)


def _install_cron() -> None:
    from odoo.addons.base.models.ir_cron import IrCron

    if getattr(IrCron._run_job, WRAPPED, False):
        return
    orig_run_job = IrCron.__dict__["_run_job"].__func__
    orig_callback = IrCron._callback

    @functools.wraps(orig_run_job)
    def _run_job(cls, job):
        if not STATE.active:
            return orig_run_job(cls, job)
        name = job.get("cron_name") or ""
        db = getattr(getattr(cls, "pool", None), "db_name", None)
        with STATE.tracer.start_as_current_span(
            f"odoo.cron {name}",
            kind=SpanKind.INTERNAL,
            attributes=_cron_attributes(job.get("id"), name, db),
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            token = _cron_span.set(span)
            try:
                status = orig_run_job(cls, job)
            except Exception as exc:
                _record_cron_failure(span, exc)
                raise
            finally:
                _cron_span.reset(token)
            if span.is_recording() and status is not None:
                span.set_attribute(IPAI_CRON_STATUS, str(getattr(status, "value", status)))
            return status

    IrCron._run_job = classmethod(_mark(_run_job))

    @functools.wraps(orig_callback)
    def _callback(self, cron_name, server_action_id, *args, **kwargs):
        if not STATE.active:
            return orig_callback(self, cron_name, server_action_id, *args, **kwargs)
        span = _cron_span.get()
        if span is not None:
            try:
                return orig_callback(self, cron_name, server_action_id, *args, **kwargs)
            except Exception as exc:
                _record_cron_failure(span, exc)
                raise
        # Called outside a job run (a test, a shell): its own span.
        with STATE.tracer.start_as_current_span(
            f"odoo.cron {cron_name}",
            kind=SpanKind.INTERNAL,
            attributes=_cron_attributes(self.id, cron_name, self.env.cr.dbname),
            record_exception=False,
            set_status_on_exception=False,
        ) as own:
            try:
                return orig_callback(self, cron_name, server_action_id, *args, **kwargs)
            except Exception as exc:
                _record_cron_failure(own, exc)
                raise

    IrCron._callback = _mark(_callback)


def install() -> None:
    """Install the HTTP and cron hooks (idempotent). Call with ``STATE.providers`` set."""
    for name, installer in (("http", _install_http), ("cron", _install_cron)):
        try:
            installer()
        except Exception:
            _logger.warning("OpenTelemetry: the Odoo %s hook could not be installed", name, exc_info=True)
