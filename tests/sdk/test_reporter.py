"""Reporter: envelope + problem + span event + ops row, once per occurrence, secrets redacted."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time

import psycopg2
import pytest
from opentelemetry.semconv.attributes.exception_attributes import (
    EXCEPTION_MESSAGE,
    EXCEPTION_STACKTRACE,
    EXCEPTION_TYPE,
)
from opentelemetry.trace import StatusCode

from ipai_ops.envelope import validate_envelope
from ipai_ops.problem import validate_problem
from ipai_ops.sdk import Failure, Reporter
from ipai_ops.sdk.reporter import correlation_id_from
from ipai_ops.semconv import (
    EXCEPTION_EVENT,
    IPAI_CORRELATION_ID,
    IPAI_FAILURE_CODE,
    IPAI_FAILURE_FINGERPRINT,
    IPAI_OCCURRENCE_ID,
    IPAI_SOURCE,
)
from tests.bridge.conftest import TcpProxy, free_port, proxied_dsn

from .conftest import error_rows

SECRET_MESSAGE = (
    "ledger sync failed: password=hunter2xyz, header Bearer abcdefghijklmnopqrstu, key sk-proj-ABCDEFGHIJKLMNOP1234"
)
SECRETS = ("hunter2xyz", "abcdefghijklmnopqrstu", "sk-proj-ABCDEFGHIJKLMNOP1234")


def _raise(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:
        return caught


def _no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


def test_typed_failure_carries_its_code_and_public_message(registry, tracing):
    reporter = Reporter("svc", registry=registry)
    exc = _raise(
        Failure(
            "API.REQUEST_INVALID",
            "field name is required",
            errors=[{"path": "$.name", "message": "required"}],
            details={"internal": "parser state 7"},
        )
    )
    with tracing.provider.get_tracer("t").start_as_current_span("handler"):
        report = reporter.report(exc, correlation_id="req-1", instance="/things")
    validate_problem(report.problem)
    validate_envelope(report.envelope)
    assert report.problem == {
        "type": "urn:ipai:failure:API.REQUEST_INVALID",
        "title": registry["API.REQUEST_INVALID"].title,
        "status": 400,
        "detail": "field name is required",
        "instance": "/things",
        "ipai": {"code": "API.REQUEST_INVALID", "retryable": False, "correlation_id": "req-1"},
        "errors": [{"path": "$.name", "message": "required"}],
    }
    assert report.envelope["error"]["matched_by"] == "explicit"
    assert report.envelope["error"]["details"] == {"internal": "parser state 7"}
    assert report.upsert is None  # no DSN: telemetry only
    assert report.retry_after is None and "Retry-After" not in dict(report.headers())


def test_untyped_exception_is_classified_by_signature_and_its_text_stays_server_side(registry):
    reporter = Reporter("svc", registry=registry)
    exc = _raise(psycopg2.OperationalError('connection to server at "ledger-db" (10.1.2.3), port 5432 failed'))
    report = reporter.report(exc, correlation_id="req-2")
    assert report.code == "TRANSPORT.DATABASE_UNAVAILABLE"
    assert report.envelope["error"]["matched_by"] == "signature"
    assert report.status == 503 and report.problem["ipai"]["retryable"] is True
    assert "ledger-db" not in report.problem["detail"] and "req-2" in report.problem["detail"]
    assert report.problem["detail"].startswith(registry["TRANSPORT.DATABASE_UNAVAILABLE"].title)
    # Retryable 503: Retry-After from the reporter's default; a Failure may set its own.
    assert dict(report.headers())["Retry-After"] == "5"
    limited = reporter.report(_raise(Failure("GITHUB.RATE_LIMITED", "slow down", retry_after=60)))
    assert limited.status == 429 and dict(limited.headers())["Retry-After"] == "60"
    assert report.problem["instance"].startswith("urn:uuid:")


def test_fallback_answers_500_without_the_message(registry):
    report = Reporter("svc", registry=registry).report(_raise(KeyError("customer 42 has no iban")))
    assert report.code == "UNCLASSIFIED.UNKNOWN" and report.status == 500
    assert "iban" not in json.dumps(report.problem)
    assert "iban" in report.envelope["error"]["message"]


def test_span_event_carries_the_keys_and_redacted_text(registry, tracing):
    reporter = Reporter("svc", source="billing", registry=registry)
    with tracing.provider.get_tracer("t").start_as_current_span("handler") as span:
        report = reporter.report(_raise(RuntimeError(SECRET_MESSAGE)), correlation_id="req-3")
        trace_id = format(span.get_span_context().trace_id, "032x")
    (finished,) = tracing.spans()
    (event,) = [e for e in finished.events if e.name == EXCEPTION_EVENT]
    occ = report.occurrence
    assert event.attributes[IPAI_FAILURE_CODE] == occ.code == "UNCLASSIFIED.UNKNOWN"
    assert event.attributes[IPAI_FAILURE_FINGERPRINT] == occ.fingerprint == report.envelope["error"]["fingerprint"]
    assert event.attributes[IPAI_OCCURRENCE_ID] == occ.occurrence_id
    assert event.attributes[IPAI_SOURCE] == "billing" == occ.source
    assert event.attributes[IPAI_CORRELATION_ID] == "req-3"
    assert event.attributes[EXCEPTION_TYPE] == "RuntimeError"
    assert event.attributes[EXCEPTION_MESSAGE] == occ.message
    assert "[REDACTED:" in event.attributes[EXCEPTION_MESSAGE]
    assert abs(event.timestamp / 1000 - occ.occurred_at.timestamp() * 1e6) <= 2  # one instant on both paths
    for key in (IPAI_FAILURE_CODE, IPAI_OCCURRENCE_ID, IPAI_SOURCE, IPAI_CORRELATION_ID):
        assert finished.attributes[key] == event.attributes[key]
    assert finished.status.status_code is StatusCode.ERROR
    assert finished.status.description == "UNCLASSIFIED.UNKNOWN"
    assert occ.trace_id == trace_id == report.envelope["context"]["trace_id"]
    everything = json.dumps(
        {
            "event": dict(event.attributes),
            "span": dict(finished.attributes),
            "status": finished.status.description,
            "problem": report.problem,
            "envelope": report.envelope,
        }
    )
    _no_secret(everything)
    assert "ledger sync failed" in event.attributes[EXCEPTION_STACKTRACE]


def test_no_span_no_recording_but_still_a_report(registry):
    report = Reporter("svc", registry=registry).report(_raise(ValueError("x")))
    assert report.occurrence.trace_id is None and report.envelope["context"]["span_id"] is None


def test_direct_upsert_counts_each_occurrence_once(registry, clean_ops_dsn):
    reporter = Reporter("svc", source="billing", dsn=clean_ops_dsn, registry=registry, in_app=("tests/sdk",))
    try:
        first = reporter.report(_raise(RuntimeError(SECRET_MESSAGE)))
        again = reporter.report(first_exc := _raise(RuntimeError(SECRET_MESSAGE)))
        assert reporter.report(first_exc) is again  # the same exception is one occurrence
    finally:
        reporter.close()
    assert first.upsert.is_new and first.upsert.count == 1
    assert again.upsert.count == 2 and first.occurrence.fingerprint == again.occurrence.fingerprint
    (row,) = error_rows(clean_ops_dsn)
    assert row["count"] == 2 and row["source"] == "billing" and row["service"] == "svc"
    assert row["occurrence_ids"] == sorted([first.occurrence_id, again.occurrence_id])
    assert row["sample"]["context"]["occurrence_id"] in row["occurrence_ids"]
    _no_secret(json.dumps(row, default=str))


def test_database_outage_is_a_warning_and_the_problem_still_comes(registry, caplog):
    reporter = Reporter("svc", dsn=f"postgresql://postgres@127.0.0.1:{free_port()}/nope", registry=registry)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="ipai_ops.sdk.reporter"):
        report = reporter.report(_raise(RuntimeError("boom")))
        skipped = reporter.report(_raise(RuntimeError("boom")))  # inside the retry interval: no connect
    assert time.monotonic() - started < 3
    assert report.upsert is None and skipped.upsert is None and report.status == 500
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "ops upsert skipped" in r.getMessage()]
    assert len(warnings) == 2
    assert "not retrying yet" in warnings[1].getMessage()
    assert all(isinstance(r.args, tuple) and r.args for r in warnings)  # %s args, not f-strings


def test_reconnects_after_the_database_comes_back(registry, clean_ops_dsn, caplog):
    proxy = TcpProxy(("127.0.0.1", 5432))
    proxy.up()
    reporter = Reporter("svc", dsn=proxied_dsn(clean_ops_dsn, proxy.port), registry=registry, retry_interval=0)
    try:
        assert reporter.report(_raise(RuntimeError("flaky"))).upsert.count == 1
        proxy.down()
        with caplog.at_level(logging.WARNING, logger="ipai_ops.sdk.reporter"):
            assert reporter.report(_raise(RuntimeError("flaky"))).upsert is None
        assert any("ops upsert skipped" in r.getMessage() for r in caplog.records)
        proxy.up()
        assert reporter.report(_raise(RuntimeError("flaky"))).upsert.count == 2
    finally:
        reporter.close()
        proxy.down()


def test_missing_ops_schema_is_a_warning_too(registry, empty_db_dsn, caplog):
    reporter = Reporter("svc", dsn=empty_db_dsn, registry=registry)
    try:
        with caplog.at_level(logging.WARNING, logger="ipai_ops.sdk.reporter"):
            report = reporter.report(_raise(RuntimeError("boom")))
    finally:
        reporter.close()
    assert report.upsert is None
    assert any("ops upsert failed" in r.getMessage() and "InvalidSchemaName" in r.getMessage() for r in caplog.records)


def test_concurrent_reports_share_one_connection_safely(registry, clean_ops_dsn):
    reporter = Reporter("svc", dsn=clean_ops_dsn, registry=registry)
    counts: list[int] = []

    def work():
        for _ in range(5):
            counts.append(reporter.report(_raise(RuntimeError("parallel"))).upsert.count)

    threads = [threading.Thread(target=work) for _ in range(4)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        reporter.close()
    assert sorted(counts) == list(range(1, 21))


def test_unknown_failure_code_falls_back_and_warns_once(registry, caplog):
    reporter = Reporter("svc", registry=registry)
    with caplog.at_level(logging.WARNING, logger="ipai_ops.sdk.reporter"):
        for _ in range(2):
            report = reporter.report(_raise(Failure("NOPE.NOT_A_CODE", "the widget is gone")))
    assert report.code == "UNCLASSIFIED.UNKNOWN" and report.problem["detail"] == "the widget is gone"
    assert len([r for r in caplog.records if "not in the registry" in r.getMessage()]) == 1


def test_reported_context_manager_and_decorators(registry, tracing):
    reporter = Reporter("svc", registry=registry)
    tracer = tracing.provider.get_tracer("t")

    block = reporter.reported(context={"job": "sync"})
    with pytest.raises(ValueError), tracer.start_as_current_span("block"), block as r:
        raise ValueError("in a block")
    assert r.report.envelope["context"]["job"] == "sync"

    with reporter.reported(reraise=False) as swallowed:
        raise Failure("INTENT.TIMEOUT", "took too long")
    assert swallowed.report.code == "INTENT.TIMEOUT"

    @reporter.reported(correlation_id="job-7")
    def sync_job(x):
        if x:
            raise RuntimeError("sync job failed")
        return "done"

    @reporter.reported(correlation_id="job-8")
    async def async_job(x):
        await asyncio.sleep(0)
        if x:
            raise RuntimeError("async job failed")
        return "done"

    assert sync_job(0) == "done" and asyncio.run(async_job(0)) == "done"
    with pytest.raises(RuntimeError) as sync_err:
        sync_job(1)
    with pytest.raises(RuntimeError) as async_err:
        asyncio.run(async_job(1))
    # The reports ride on the exceptions: an outer middleware reuses them, counting once.
    assert sync_err.value._ipai_report.correlation_id == "job-7"
    assert async_err.value._ipai_report.correlation_id == "job-8"
    assert sync_job.__name__ == "sync_job" and asyncio.iscoroutinefunction(async_job)
    (block,) = [s for s in tracing.spans() if s.name == "block"]
    assert block.attributes[IPAI_FAILURE_CODE] == "UNCLASSIFIED.UNKNOWN"


def test_async_report_writes_off_the_event_loop(registry, clean_ops_dsn):
    threads: list[int] = []

    class Recording(Reporter):
        def _write(self, occurrence):
            threads.append(threading.get_ident())
            return super()._write(occurrence)

    reporter = Recording("svc", dsn=clean_ops_dsn, registry=registry)

    async def main():
        report = await reporter.areport(_raise(RuntimeError("async boom")))
        return report, threading.get_ident()

    try:
        report, loop_thread = asyncio.run(main())
    finally:
        reporter.close()
    assert report.upsert.count == 1
    assert threads and threads[0] != loop_thread


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (("abc-123", None), "abc-123"),
        (("c0a8e1f2-7d3b-4b8e-9f1a-2d6c5e4b3a21", "other"), "c0a8e1f2-7d3b-4b8e-9f1a-2d6c5e4b3a21"),
        ((None, "req.42:a_b"), "req.42:a_b"),
        (("bad value\r\nX-Evil: 1", "fallback-id"), "fallback-id"),
        (("x" * 129, None), None),
        (("-leading-dash", None), None),
        (("", ""), None),
    ],
)
def test_correlation_ids_are_validated(headers, expected):
    got = correlation_id_from(*headers)
    if expected is None:
        assert len(got) == 32 and int(got, 16) >= 0
    else:
        assert got == expected


def test_bad_configuration_is_a_clear_error_at_construction(registry):
    for kwargs, message in (
        ({"service": ""}, "service is required"),
        ({"service": 7}, "service is required"),
        ({"service": "svc", "source": 5}, "source must be 1..64"),
        ({"service": "svc", "retry_after": -1}, "retry_after must be whole seconds"),
        ({"service": "svc", "retry_after": "5"}, "retry_after must be whole seconds"),
        # A typo'd DSN fails here, not as a warning on every error path.
        ({"service": "svc", "dsn": "host=db password=hunter2xyz oops"}, "invalid PostgreSQL DSN"),
    ):
        with pytest.raises(ValueError, match=message) as err:
            Reporter(registry=registry, **kwargs)
        assert "hunter2xyz" not in str(err.value)
    # One fragment as a plain string is that fragment, not its characters.
    assert Reporter("svc", registry=registry, in_app="billing_api/").in_app == ("billing_api/",)


def test_reporting_something_that_is_not_an_exception_is_a_type_error(registry):
    reporter = Reporter("svc", registry=registry)
    with pytest.raises(TypeError, match="takes the exception itself, not str"):
        reporter.report("boom")
    with pytest.raises(TypeError, match="not NoneType"):
        asyncio.run(reporter.areport(None))
