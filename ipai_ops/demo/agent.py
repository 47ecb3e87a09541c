"""The demo agent: real OpenTelemetry SDK telemetry, some of it failing, read back from ops.

Each *run* executes every :data:`TASKS` entry as a root span ``agent.task <name>`` with a
child ``llm.call`` span, in its own trace. A failing task reports its failure the way a
real agent would:

* ``span``: the exception is recorded as an ``exception`` span event (semconv attributes,
  plus ``ipai.failure.code`` when the agent knows the code) and the span ends with status
  ERROR; without an explicit code the bridge classifies the exception's type and message
  against the registry's signatures;
* ``log``: an ERROR log record through the OTel Logs API, in the task's trace context.

A task that calls a model (``gen_ai``) fails inside its ``llm.call`` span instead, shaped
as the OpenTelemetry GenAI semantic conventions say (provider, operation, request and
response model, token usage on the span): the bridge keeps that context, so the console's
GenAI filters and *Provider health* have rows on first run.

After the providers flush, ``ops.agent_errors`` is polled until every occurrence of this
invocation (found by its trace ids) has arrived, then what arrived is reported per code.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests
from opentelemetry import context as otel_context
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.semconv.attributes.deployment_attributes import DEPLOYMENT_ENVIRONMENT_NAME
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.semconv.attributes.service_attributes import SERVICE_NAME, SERVICE_VERSION
from opentelemetry.trace import SpanKind, Status, StatusCode

from ipai_ops import __version__
from ipai_ops.demo import DEFAULT_SERVICE_NAME, DEMO_SOURCE
from ipai_ops.semconv import IPAI_FAILURE_CODE, IPAI_SOURCE

_log = logging.getLogger(__name__)

#: semconv ``gen_ai.*`` names (incubating namespace: not imported from ``_incubating``).
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_PROVIDER_NAME = "gen_ai.provider.name"
GEN_AI_OPERATION_NAME = "gen_ai.operation.name"
GEN_AI_RESPONSE_MODEL = "gen_ai.response.model"
GEN_AI_USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"


class DemoError(Exception):
    """A problem that stops the demo: reported as one line by the CLI."""

    def __init__(self, message: str, *, unavailable: bool = False):
        super().__init__(message)
        self.unavailable = unavailable


# --------------------------------------------------------------------------- the agent's tasks


class OperationalError(Exception):
    """What psycopg2 raises when the database is down (stand-in: no driver call is made)."""


class RateLimited(Exception):
    """An HTTP 403 from GitHub's REST API."""


class BuildFailed(Exception):
    """A failed ``tsc --noEmit`` in the agent's sandbox."""


class ProviderKeyMissing(Exception):
    """The model provider's API key is not configured."""


class OutputSchemaInvalid(Exception):
    """The model's answer did not match the tool's JSON Schema."""


@dataclass(frozen=True)
class Task:
    """One agent task; ``expect`` is the failure code ops should file it under (None: succeeds)."""

    name: str
    expect: str | None = None
    kind: str = "ok"  # ok | span | log
    error: Callable[[str], BaseException] | None = None
    message: str = ""
    explicit_code: str | None = None
    #: GenAI attributes of the model call the task fails in (its ``llm.call`` span).
    gen_ai: tuple[tuple[str, str | int], ...] = ()


TASKS: tuple[Task, ...] = (
    Task("summarise-ticket"),
    Task(
        "sync-invoices",
        "TRANSPORT.DATABASE_UNAVAILABLE",
        "span",
        OperationalError,
        'connection to server at "db", port 5432 failed: Connection refused',
    ),
    Task(
        "list-pull-requests",
        "GITHUB.RATE_LIMITED",
        "span",
        RateLimited,
        "API rate limit exceeded for installation ID 4242.",
    ),
    Task(
        "typecheck-patch",
        "BUILD.TYPECHECK_FAILED",
        "span",
        BuildFailed,
        "src/invoice.ts(12,5): error TS2322: Type 'string' is not assignable to type 'number'.",
    ),
    Task(
        "call-model",
        "AGENT.PROVIDER_KEY_MISSING",
        "span",
        ProviderKeyMissing,
        "OPENAI_API_KEY is not set for provider openai",
        "AGENT.PROVIDER_KEY_MISSING",
        ((GEN_AI_PROVIDER_NAME, "openai"), (GEN_AI_OPERATION_NAME, "chat"), (GEN_AI_REQUEST_MODEL, "gpt-4o-mini")),
    ),
    Task(
        "draft-reply",
        "AGENT.OUTPUT_SCHEMA_INVALID",
        "span",
        OutputSchemaInvalid,
        "tool 'create_invoice' output: $.lines[0].qty must be a number",
        "AGENT.OUTPUT_SCHEMA_INVALID",
        (
            (GEN_AI_PROVIDER_NAME, "anthropic"),
            (GEN_AI_OPERATION_NAME, "chat"),
            (GEN_AI_REQUEST_MODEL, "claude-sonnet-4"),
            (GEN_AI_RESPONSE_MODEL, "claude-sonnet-4-20250514"),
            (GEN_AI_USAGE_INPUT_TOKENS, 812),
            (GEN_AI_USAGE_OUTPUT_TOKENS, 164),
        ),
    ),
    Task("reticulate-splines", "UNCLASSIFIED.UNKNOWN", "span", ValueError, "splines could not be reticulated"),
    Task("fetch-exchange-rates", "TRANSPORT.UPSTREAM_5XX", "log", message="rates.example.com answered 502 Bad Gateway"),
    Task(
        "verify-patch",
        "AGENT.VERIFICATION_FAILED",
        "log",
        message="verification failed: 3 of 41 tests fail after the patch",
        explicit_code="AGENT.VERIFICATION_FAILED",
    ),
    Task("post-summary"),
)


# --------------------------------------------------------------------------- export bookkeeping


@dataclass
class ExportTally:
    """What the SDK's exporters reported: a failed export is not silent in a demo."""

    ok: int = 0
    failed: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, success: bool) -> None:
        with self._lock:
            if success:
                self.ok += 1
            else:
                self.failed += 1


class _TallySpanExporter(SpanExporter):
    def __init__(self, inner: SpanExporter, tally: ExportTally):
        self._inner = inner
        self._tally = tally

    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        result = self._inner.export(spans)
        self._tally.add(result is SpanExportResult.SUCCESS)
        return result

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


class _TallyLogExporter(LogRecordExporter):
    def __init__(self, inner: LogRecordExporter, tally: ExportTally):
        self._inner = inner
        self._tally = tally

    def export(self, batch: Sequence[Any]) -> LogRecordExportResult:
        result = self._inner.export(batch)
        self._tally.add(result is LogRecordExportResult.SUCCESS)
        return result

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


# --------------------------------------------------------------------------- running


@dataclass
class AgentReport:
    """The outcome of :func:`run_agent`."""

    trace_ids: list[str] = field(default_factory=list)
    expected: Counter[str] = field(default_factory=Counter)
    arrived: Counter[str] = field(default_factory=Counter)
    tasks_run: int = 0
    tasks_failed: int = 0
    exports: ExportTally = field(default_factory=ExportTally)
    checked: bool = False
    waited_s: float = 0.0

    @property
    def complete(self) -> bool:
        return all(self.arrived[code] >= n for code, n in self.expected.items())


def signal_url(endpoint: str, signal: str) -> str:
    """OTLP/HTTP: the base endpoint plus ``/v1/<signal>`` (OTLP exporter spec, "Endpoint URLs")."""
    return endpoint.rstrip("/") + f"/v1/{signal}"


def preflight(endpoint: str, headers: dict[str, str], *, timeout: float = 5) -> None:
    """An empty OTLP export request: proves the receiver is there and takes our token."""
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DemoError(f"--otlp-endpoint must be an http(s) URL such as http://127.0.0.1:4318, got {endpoint!r}")
    url = signal_url(endpoint, "traces")
    try:
        resp = requests.post(
            url, data=b"", headers={**headers, "Content-Type": "application/x-protobuf"}, timeout=timeout
        )
    except requests.RequestException as exc:
        from ipai_ops.demo.intents import reason

        raise DemoError(
            f"no OTLP receiver at {endpoint} ({reason(exc)}): start the bridge (ipai-ops bridge serve) "
            "or point --otlp-endpoint at your collector",
            unavailable=True,
        ) from None
    if resp.status_code in (401, 403):
        raise DemoError(
            f"the OTLP receiver at {endpoint} refused the demo's credentials (HTTP {resp.status_code}): "
            "set --bridge-token / IPAI_BRIDGE_TOKEN to the bridge's token"
        )
    if resp.status_code == 404:
        raise DemoError(f"{url} answered 404: --otlp-endpoint must be the OTLP/HTTP base URL (without /v1/traces)")
    if resp.status_code >= 500:
        raise DemoError(
            f"the OTLP receiver at {endpoint} is not accepting data (HTTP {resp.status_code}): "
            "is its database up? (see the bridge's log)",
            unavailable=True,
        )


def _fail(span: Any, task: Task) -> None:
    """How an agent reports a failure it understands: the exception event carries the code
    when known (docs/specs/telemetry_v1.md), the span ends ERROR."""
    assert task.error is not None
    try:
        raise task.error(task.message)
    except Exception as exc:
        event_attrs = {IPAI_FAILURE_CODE: task.explicit_code} if task.explicit_code else None
        span.record_exception(exc, attributes=event_attrs)
        span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        if task.explicit_code:
            span.set_attribute(ERROR_TYPE, task.explicit_code)


def _run_task(tracer: Any, otel_logger: Any, task: Task, run_no: int, report: AgentReport) -> None:
    with tracer.start_as_current_span(
        f"agent.task {task.name}",
        kind=SpanKind.INTERNAL,
        attributes={"demo.task": task.name, "demo.run": run_no},
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        report.trace_ids.append(format(span.get_span_context().trace_id, "032x"))
        with tracer.start_as_current_span(
            "llm.call",
            kind=SpanKind.CLIENT,
            attributes=dict(task.gen_ai) or {GEN_AI_REQUEST_MODEL: "demo-model"},
            record_exception=False,
            set_status_on_exception=False,
        ) as llm:
            time.sleep(0.002)
            if task.kind == "span" and task.gen_ai:
                _fail(llm, task)
        if task.kind == "span" and not task.gen_ai:
            _fail(span, task)
        elif task.kind == "log":
            log_attrs: dict[str, Any] = {"demo.task": task.name}
            if task.explicit_code:
                log_attrs[IPAI_FAILURE_CODE] = task.explicit_code
            otel_logger.emit(
                severity_number=SeverityNumber.ERROR,
                severity_text="ERROR",
                body=task.message,
                attributes=log_attrs,
                context=otel_context.get_current(),
            )
    report.tasks_run += 1
    if task.expect:
        report.tasks_failed += 1
        report.expected[task.expect] += 1


def run_agent(
    *,
    endpoint: str,
    runs: int = 3,
    service_name: str = DEFAULT_SERVICE_NAME,
    token: str = "",
    environment: str = "demo",
    progress: Callable[[Task, AgentReport], None] | None = None,
    export_timeout: float = 10,
) -> AgentReport:
    """Run every task ``runs`` times and export the telemetry; flush before returning."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    preflight(endpoint, headers)
    resource = Resource.create(
        {
            SERVICE_NAME: service_name,
            SERVICE_VERSION: __version__,
            DEPLOYMENT_ENVIRONMENT_NAME: environment,
            IPAI_SOURCE: DEMO_SOURCE,
            "demo.invocation": uuid.uuid4().hex,
        }
    )
    report = AgentReport()
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(
        BatchSpanProcessor(
            _TallySpanExporter(
                OTLPSpanExporter(endpoint=signal_url(endpoint, "traces"), headers=headers, timeout=export_timeout),
                report.exports,
            ),
            schedule_delay_millis=200,
        )
    )
    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(
        BatchLogRecordProcessor(
            _TallyLogExporter(
                OTLPLogExporter(endpoint=signal_url(endpoint, "logs"), headers=headers, timeout=export_timeout),
                report.exports,
            ),
            schedule_delay_millis=200,
        )
    )
    tracer = tracer_provider.get_tracer("ipai_ops.demo", __version__)
    otel_logger = logger_provider.get_logger("ipai_ops.demo", __version__)
    # The exporters log their own failures; the demo reports them as one line instead.
    quiet = [logging.getLogger(name) for name in ("opentelemetry.exporter", "opentelemetry.sdk")]
    levels = [lg.level for lg in quiet]
    for lg in quiet:
        lg.setLevel(logging.CRITICAL)
    try:
        for run_no in range(1, runs + 1):
            for task in TASKS:
                _run_task(tracer, otel_logger, task, run_no, report)
                if progress:
                    progress(task, report)
        tracer_provider.force_flush(int(export_timeout * 3000))
        logger_provider.force_flush(int(export_timeout * 3000))
    finally:
        tracer_provider.shutdown()
        logger_provider.shutdown()
        for lg, level in zip(quiet, levels, strict=True):
            lg.setLevel(level)
    if report.exports.failed:
        raise DemoError(
            f"{report.exports.failed} of {report.exports.ok + report.exports.failed} OTLP export(s) to {endpoint} "
            "failed (see the receiver's log)",
            unavailable=True,
        )
    return report


# --------------------------------------------------------------------------- reading ops back

ARRIVED_SQL = """
SELECT e.code, count(*)
  FROM ops.agent_error_occurrences o
  JOIN ops.agent_errors e ON e.id = o.error_id
 WHERE o.source = %(source)s AND o.trace_id = ANY(%(trace_ids)s)
 GROUP BY e.code
"""

ROWS_SQL = """
SELECT code, count, status, message
  FROM ops.agent_errors
 WHERE service = %(service)s AND code = ANY(%(codes)s)
 ORDER BY code, count DESC
"""


def check_ops_schema(conn: Any) -> None:
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass('ops.agent_errors') IS NOT NULL")
        present = cur.fetchone()[0]
    conn.rollback()
    if not present:
        raise DemoError("the database has no ops schema: run `ipai-ops db migrate --dsn ...` first")


def wait_for_arrivals(conn: Any, report: AgentReport, *, wait: float, poll: float = 0.5) -> AgentReport:
    """Poll ``ops`` until every expected occurrence arrived (the bridge commits before it
    answers, but a collector in between batches and retries on its own schedule)."""
    started = time.monotonic()
    while True:
        with conn.cursor() as cur:
            cur.execute(ARRIVED_SQL, {"source": DEMO_SOURCE, "trace_ids": report.trace_ids})
            report.arrived = Counter(dict(cur.fetchall()))
        conn.rollback()
        report.waited_s = time.monotonic() - started
        if report.complete or report.waited_s >= wait:
            report.checked = True
            return report
        time.sleep(poll)


def error_rows(conn: Any, *, service: str, codes: list[str]) -> list[tuple[str, int, str, str]]:
    with conn.cursor() as cur:
        cur.execute(ROWS_SQL, {"service": service, "codes": codes})
        rows = cur.fetchall()
    conn.rollback()
    return rows
