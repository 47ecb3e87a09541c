"""Report a failure once: envelope, problem document, span event and (optionally) the ops row.

:class:`Reporter` is what the WSGI/ASGI middleware and the :meth:`Reporter.reported`
decorator/context manager call when an exception escapes. One call:

1. classifies the exception (a :class:`~ipai_ops.sdk.errors.Failure` carries its
   code; anything else goes through the registry's signatures) and builds the redacted
   failure envelope and its occurrence with :func:`ipai_ops.record.failure_from_exception`,
   the function every producer (Odoo included) uses, so one exception has one fingerprint;
2. builds the RFC 9457 problem document (:mod:`ipai_ops.problem`); only a ``Failure``'s
   message reaches the client, any other exception's text stays server-side;
3. records the exception on the current OpenTelemetry span
   (:func:`ipai_ops.record.record_on_span`) with the attributes the OTLP bridge reads
   (``ipai.failure.code``, ``ipai.failure.fingerprint``, ``ipai.occurrence_id``,
   ``ipai.source``, ``ipai.correlation_id``) and redacted
   ``exception.message``/``exception.stacktrace``; the span gets status ERROR;
4. when a DSN is configured, upserts the occurrence into ``ops.agent_errors`` under the
   same ``(source, occurrence_id)`` the span event carries, so the direct write and the
   telemetry copy arriving through the bridge count once together.

The upsert is best effort (the telemetry path is the durable one): a database outage is
logged as a warning and never becomes a second exception.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from http import HTTPStatus
from typing import Any, TypeVar

from opentelemetry import trace

from ipai_ops.problem import PROBLEM_CONTENT_TYPE, problem
from ipai_ops.record import failure_from_exception, record_on_span, span_ids
from ipai_ops.registry import Registry, default_registry
from ipai_ops.sdk._pg import SharedConnection
from ipai_ops.sdk.errors import Failure
from ipai_ops.store import ErrorOccurrence, OpsDatabaseUnavailable, UpsertResult, upsert_error
from ipai_ops.text import head, redact, redact_obj, redacted_first_line

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

#: The request header a caller sets to tie its request to its own logs; echoed on every response.
CORRELATION_HEADER = "X-Correlation-Id"
#: Accepted when there is no X-Correlation-Id (proxies and load balancers set it).
REQUEST_ID_HEADER = "X-Request-Id"
#: Letters, digits and ``._:-``, starting with a letter or digit, at most 128 characters:
#: enough for UUIDs, ULIDs and hex ids, and nothing that could split a header or a log line.
_CORRELATION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
#: Problem ``detail`` limit for a Failure's (public) message.
MAX_DETAIL_CHARS = 1024
#: HTTP statuses that get ``Retry-After`` when the failure mode is retryable (RFC 9110 10.2.3).
RETRY_AFTER_STATUSES = frozenset({429, 503})

_correlation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("ipai_correlation_id", default=None)
_REPORT_ATTR = "_ipai_report"


def new_correlation_id() -> str:
    return uuid.uuid4().hex


def valid_correlation_id(value: str | None) -> bool:
    return bool(value) and _CORRELATION_RE.match(value) is not None


def correlation_id_from(*candidates: str | None) -> str:
    """The first valid candidate (header values, in order of preference), else a new id."""
    for candidate in candidates:
        value = candidate.strip() if candidate is not None else None
        if valid_correlation_id(value):
            return value
    return new_correlation_id()


def current_correlation_id() -> str | None:
    """The correlation id of the request being handled (set by the middleware), if any."""
    return _correlation_id.get()


def bind_correlation_id(value: str | None) -> contextvars.Token[str | None]:
    return _correlation_id.set(value)


def unbind_correlation_id(token: contextvars.Token[str | None]) -> None:
    _correlation_id.reset(token)


def status_line(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"{status} Error"


@dataclass(frozen=True)
class Report:
    """The outcome of one report: what was stored, what the client gets."""

    envelope: dict[str, Any]
    problem: dict[str, Any]
    occurrence: ErrorOccurrence
    #: The ``ops.upsert_agent_error`` result; None without a DSN or when the write failed.
    upsert: UpsertResult | None
    #: Seconds for ``Retry-After``; None when the answer should not carry one.
    retry_after: int | None = None

    @property
    def code(self) -> str:
        return self.problem["ipai"]["code"]

    @property
    def status(self) -> int:
        return self.problem["status"]

    @property
    def correlation_id(self) -> str | None:
        return self.problem["ipai"]["correlation_id"]

    @property
    def occurrence_id(self) -> str:
        return self.occurrence.occurrence_id

    def body(self) -> bytes:
        return json.dumps(self.problem, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    def headers(self) -> list[tuple[str, str]]:
        """Response headers of the problem answer (``Content-Length`` matches :meth:`body`)."""
        out = [
            ("Content-Type", PROBLEM_CONTENT_TYPE),
            ("Content-Length", str(len(self.body()))),
            ("Cache-Control", "no-store"),
        ]
        if self.correlation_id:
            out.append((CORRELATION_HEADER, self.correlation_id))
        if self.retry_after is not None:
            out.append(("Retry-After", str(self.retry_after)))
        return out


class Reporter:
    """Turns exceptions into envelopes, problem documents, span events and ops rows.

    ``service`` names the service (``ops.agent_errors.service``); ``source`` is the ops
    source of its occurrences (and the ``ipai.source`` on its span events, so the bridge
    keys the telemetry copy the same way). ``dsn`` enables direct upserts; without it the
    telemetry path alone reaches ``ops``. ``in_app`` path fragments keep only the service's
    own frames in the fingerprint (library frames move between releases).
    """

    def __init__(
        self,
        service: str,
        *,
        source: str = "service",
        dsn: str | None = None,
        registry: Registry | None = None,
        env: str | None = None,
        service_version: str | None = None,
        in_app: Sequence[str] = (),
        retry_after: int = 5,
        connect_timeout: int = 2,
        statement_timeout_ms: int = 2000,
        retry_interval: float = 5.0,
    ) -> None:
        if not service or not isinstance(service, str):
            raise ValueError("service is required (a non-empty string)")
        if not isinstance(source, str) or not 1 <= len(source) <= 64:
            raise ValueError("source must be 1..64 characters")
        if isinstance(retry_after, bool) or not isinstance(retry_after, int) or retry_after < 0:
            raise ValueError("retry_after must be whole seconds >= 0")
        self.service = service
        self.source = source
        self.env = env
        self.service_version = service_version
        # One fragment given as a plain string is one fragment, not its characters.
        self.in_app = (in_app,) if isinstance(in_app, str) else tuple(in_app)
        self.retry_after = retry_after
        self._registry = registry
        self._db = (
            SharedConnection(
                dsn,
                application_name=f"ipai-ops reporter ({service})"[:63],
                connect_timeout=connect_timeout,
                statement_timeout_ms=statement_timeout_ms,
                retry_interval=retry_interval,
            )
            if dsn
            else None
        )
        self._warned_codes: set[str] = set()
        self._warned_lock = threading.Lock()

    @property
    def registry(self) -> Registry:
        return self._registry if self._registry is not None else default_registry()

    # ------------------------------------------------------------------- report

    def report(
        self,
        exc: BaseException,
        *,
        correlation_id: str | None = None,
        context: Mapping[str, Any] | None = None,
        instance: str | None = None,
    ) -> Report:
        """Report ``exc`` (once: a second call for the same exception returns the first report)."""
        _require_exception(exc)
        previous = _previous(exc, instance)
        if previous is not None:
            return previous
        report = self._prepare(exc, correlation_id=correlation_id, context=context, instance=instance)
        if self._db is not None:
            report = replace(report, upsert=self._write(report.occurrence))
        _remember(exc, report)
        return report

    async def areport(
        self,
        exc: BaseException,
        *,
        correlation_id: str | None = None,
        context: Mapping[str, Any] | None = None,
        instance: str | None = None,
    ) -> Report:
        """:meth:`report` for coroutines: the blocking upsert runs in a worker thread."""
        _require_exception(exc)
        previous = _previous(exc, instance)
        if previous is not None:
            return previous
        # The span is the caller's current one: record it here, on the event loop's context.
        report = self._prepare(exc, correlation_id=correlation_id, context=context, instance=instance)
        if self._db is not None:
            report = replace(report, upsert=await asyncio.to_thread(self._write, report.occurrence))
        _remember(exc, report)
        return report

    def _prepare(
        self,
        exc: BaseException,
        *,
        correlation_id: str | None,
        context: Mapping[str, Any] | None,
        instance: str | None,
    ) -> Report:
        registry = self.registry
        span = trace.get_current_span()
        trace_id, span_id = span_ids(span)
        cid = correlation_id or current_correlation_id() or new_correlation_id()
        occurrence_uuid = uuid.uuid4()
        now_ns = time.time_ns()
        typed = isinstance(exc, Failure)
        details = None
        if typed:
            details = exc.details if exc.details is not None else ({"errors": exc.errors} if exc.errors else None)
        failure = failure_from_exception(
            registry,
            exc,
            source=self.source,
            service=self.service,
            occurrence_id=str(occurrence_uuid),
            service_version=self.service_version,
            env=self.env,
            correlation_id=cid,
            trace_id=trace_id,
            span_id=span_id,
            context=context,
            details=details,
            in_app=self.in_app,
            occurred_at=datetime.fromtimestamp(now_ns // 1000 / 1e6, tz=timezone.utc),
        )
        envelope = failure.envelope
        error = envelope["error"]
        code = error["code"]
        mode = registry[code]
        if typed and exc.failure_code not in registry:
            self._warn_unknown(exc.failure_code, code)

        status = exc.status if typed and exc.status else None
        if typed:
            detail = head(error["message"], MAX_DETAIL_CHARS)[0] or mode.title
            errors = redact_obj(exc.errors) if exc.errors else None
        else:
            # Never the exception's own text: it can hold secrets, SQL, paths, internals.
            detail = f"{mode.title}. Quote correlation id {cid} when reporting this."
            errors = None
        document = problem(
            registry,
            code,
            detail=detail,
            instance=instance or occurrence_uuid.urn,
            correlation_id=cid,
            status=status,
            errors=errors,
        )
        retry_after = None
        if mode.retryable and document["status"] in RETRY_AFTER_STATUSES:
            retry_after = exc.retry_after if typed and exc.retry_after is not None else self.retry_after

        occurrence = failure.occurrence
        record_on_span(span, failure, exc, timestamp_ns=now_ns)
        level = logging.WARNING if document["status"] >= 500 else logging.INFO
        log.log(
            level,
            "%s %s: %s (correlation_id=%s, fingerprint=%s)",
            document["status"],
            code,
            error["message"],
            cid,
            error["fingerprint"],
        )
        return Report(envelope=envelope, problem=document, occurrence=occurrence, upsert=None, retry_after=retry_after)

    def _write(self, occurrence: ErrorOccurrence) -> UpsertResult | None:
        assert self._db is not None
        try:
            return self._db.run(lambda conn: upsert_error(conn, occurrence))
        except OpsDatabaseUnavailable as exc:
            log.warning("ops upsert skipped for %s %s: %s", occurrence.code, occurrence.occurrence_id, exc)
        except Exception as exc:  # the error path must not raise a second error
            log.warning(
                "ops upsert failed for %s %s: %s: %s",
                occurrence.code,
                occurrence.occurrence_id,
                type(exc).__name__,
                redacted_first_line(exc),
            )
        return None

    def _warn_unknown(self, given: str, used: str) -> None:
        with self._warned_lock:
            if given in self._warned_codes:
                return
            self._warned_codes.add(given)
        log.warning("failure code %s is not in the registry; reported as %s", given, used)

    # ------------------------------------------------------------------- decorator / context manager

    def reported(
        self,
        *,
        correlation_id: str | None = None,
        context: Mapping[str, Any] | None = None,
        reraise: bool = True,
    ) -> Reported:
        """Report what escapes a block or a function (sync or async), then re-raise it.

        ``with reporter.reported(context={"job": "sync"}):`` / ``async with ...`` /
        ``@reporter.reported()``. With ``reraise=False`` the exception is swallowed (a
        decorated function then returns None). The report is on ``.report``.
        """
        return Reported(self, correlation_id=correlation_id, context=context, reraise=reraise)

    def close(self) -> None:
        """Close the direct-upsert connection (it reopens on the next report)."""
        if self._db is not None:
            self._db.close()


class Reported:
    """Context manager and decorator returned by :meth:`Reporter.reported`."""

    def __init__(
        self,
        reporter: Reporter,
        *,
        correlation_id: str | None,
        context: Mapping[str, Any] | None,
        reraise: bool,
    ) -> None:
        self.reporter = reporter
        self.correlation_id = correlation_id
        self.context = context
        self.reraise = reraise
        self.report: Report | None = None

    def _fresh(self) -> Reported:
        return Reported(self.reporter, correlation_id=self.correlation_id, context=self.context, reraise=self.reraise)

    def __enter__(self) -> Reported:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        if exc is None or not isinstance(exc, Exception):
            return False
        self.report = self.reporter.report(exc, correlation_id=self.correlation_id, context=self.context)
        return not self.reraise

    async def __aenter__(self) -> Reported:
        return self

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        if exc is None or not isinstance(exc, Exception):
            return False
        self.report = await self.reporter.areport(exc, correlation_id=self.correlation_id, context=self.context)
        return not self.reraise

    def __call__(self, func: F) -> F:
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                async with self._fresh():
                    return await func(*args, **kwargs)
                return None

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with self._fresh():
                return func(*args, **kwargs)
            return None

        return wrapper  # type: ignore[return-value]


def scrub_exception(exc: BaseException) -> None:
    """Redact a single-message exception in place before it is re-raised.

    Whatever handles it next (the server's error log, an outer instrumentation recording
    ``str(exc)`` on its span) then sees the redacted text too.
    """
    if len(exc.args) == 1 and isinstance(exc.args[0], str):
        clean = redact(exc.args[0])
        if clean != exc.args[0]:
            exc.args = (clean,)
            if isinstance(exc, Failure):
                exc.message = clean


def _require_exception(exc: Any) -> None:
    if not isinstance(exc, BaseException):
        raise TypeError(f"report() takes the exception itself, not {type(exc).__name__}")


def _previous(exc: BaseException, instance: str | None) -> Report | None:
    report = getattr(exc, _REPORT_ATTR, None)
    if not isinstance(report, Report):
        return None
    if instance and report.problem.get("instance") != instance:
        report = replace(report, problem={**report.problem, "instance": instance})
    return report


def _remember(exc: BaseException, report: Report) -> None:
    # An exception type with __slots__ cannot remember: it may then be reported twice.
    with contextlib.suppress(AttributeError):
        setattr(exc, _REPORT_ATTR, report)
