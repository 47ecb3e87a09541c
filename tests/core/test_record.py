"""One way to record a failure (ipai_ops.record): every path gives one exception one key.

The Reporter (services), the Odoo producers and the bridge's reading of the span event
must agree on code, fingerprint and occurrence id; these tests run the real paths (the
Reporter, the real OpenTelemetry SDK, the bridge's Extractor on the OTLP encoding of the
exported span, the ops writers on a real PostgreSQL) and compare what they produce.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import sysconfig
import types
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.semconv.attributes.exception_attributes import (
    EXCEPTION_MESSAGE,
    EXCEPTION_STACKTRACE,
    EXCEPTION_TYPE,
)
from opentelemetry.trace import StatusCode

from ipai_ops import store
from ipai_ops.bridge.extract import Extractor
from ipai_ops.fingerprint import frames_from_stacktrace
from ipai_ops.record import failure_from_exception, is_app_path, record_on_span, span_ids
from ipai_ops.sdk import Reporter
from ipai_ops.semconv import (
    IPAI_FAILURE_CODE,
    IPAI_FAILURE_FINGERPRINT,
    IPAI_OCCURRENCE_ID,
    IPAI_SOURCE,
)

SECRET = "sk-proj-abcdefghijklmnop1234567890"
ODOO_OCCURRENCE = "intent:ipai_test:7:attempt:1"


def _connect_upstream(port: int) -> None:
    raise ConnectionRefusedError(111, f"Connection refused (port {port}, key {SECRET})")


def _sync_ledger(port: int) -> None:
    _connect_upstream(port)


def _other_caller(port: int) -> None:
    _connect_upstream(port)


def _raised(func, port: int = 5432) -> BaseException:
    try:
        func(port)
    except Exception as exc:
        return exc
    raise AssertionError("nothing raised")


def _odoo_path(registry, exc: BaseException, **kw):
    """What the intent worker passes (ipai_pulser_intent._failure)."""
    return failure_from_exception(
        registry,
        exc,
        source="odoo",
        service="odoo",
        occurrence_id=ODOO_OCCURRENCE,
        service_version="19.0",
        env="ipai_test",
        correlation_id="c-1",
        context={"intent_id": 7, "intent_type": "test.crash", "attempt": 1},
        evidence={"exit_code": 1, "duration_ms": 3.5},
        fallback_code="INTENT.HANDLER_CRASHED",
        **kw,
    )


def test_reporter_path_and_odoo_path_give_one_fingerprint(registry):
    exc = _raised(_sync_ledger)
    report = Reporter("billing", source="service", registry=registry).report(exc)
    odoo = _odoo_path(registry, exc)
    assert odoo.code == report.code == "TRANSPORT.CONNECTION_FAILED"
    assert odoo.fingerprint == report.occurrence.fingerprint
    assert odoo.envelope["error"]["message"] == report.envelope["error"]["message"]
    assert SECRET not in json.dumps(odoo.envelope) and SECRET not in json.dumps(report.envelope)
    # The in-app frames are part of the key: the same error raised through another caller
    # is another group, on both paths alike.
    elsewhere = _raised(_other_caller, 6543)
    assert _odoo_path(registry, elsewhere).fingerprint != odoo.fingerprint
    assert Reporter("billing", registry=registry).report(elsewhere).occurrence.fingerprint == (
        _odoo_path(registry, elsewhere).fingerprint
    )


def test_the_occurrence_is_the_envelope(registry):
    failure = _odoo_path(registry, _raised(_sync_ledger))
    occ = failure.occurrence
    assert (occ.source, occ.occurrence_id, occ.code) == ("odoo", ODOO_OCCURRENCE, failure.envelope["error"]["code"])
    assert occ.sample is failure.envelope
    context = failure.envelope["context"]
    assert context["occurrence_id"] == ODOO_OCCURRENCE
    assert (context["intent_id"], context["env"], context["correlation_id"]) == (7, "ipai_test", "c-1")
    assert failure.envelope["evidence"]["exit_code"] == 1


def test_fallback_code_only_for_what_nothing_names(registry):
    unnamed = _raised(lambda _port: {}["no such key"])
    assert _odoo_path(registry, unnamed).code == "INTENT.HANDLER_CRASHED"
    plain = failure_from_exception(registry, unnamed, source="service", service="billing")
    assert plain.code == registry.fallback.code
    # a typed failure's own code wins over the fallback
    typed = ValueError("x")
    typed.failure_code = "TRANSPORT.UPSTREAM_TIMEOUT"
    assert _odoo_path(registry, typed).code == "TRANSPORT.UPSTREAM_TIMEOUT"


def test_the_in_app_rule():
    assert is_app_path(__file__)
    assert not is_app_path(json.__file__)  # the standard library
    assert not is_app_path(str(Path(sysconfig.get_paths()["purelib"]) / "requests" / "api.py"))
    assert not is_app_path("/usr/lib/python3/dist-packages/yaml/__init__.py")
    assert not is_app_path("<frozen importlib._bootstrap>")
    assert not is_app_path("")


def test_the_odoo_framework_is_a_library(monkeypatch, tmp_path):
    root = tmp_path / "odoo-server"
    fake = types.ModuleType("odoo")
    fake.__file__ = str(root / "odoo" / "__init__.py")
    monkeypatch.setitem(sys.modules, "odoo", fake)
    assert not is_app_path(str(root / "odoo" / "orm" / "models.py"))
    assert not is_app_path(str(root / "odoo" / "addons" / "base" / "models" / "ir_cron.py"))
    assert not is_app_path(str(root / "addons" / "web" / "controllers" / "dataset.py"))
    assert is_app_path(str(tmp_path / "custom" / "addons" / "ipai_x" / "models" / "thing.py"))


def test_a_namespace_odoo_package_is_a_library_too(monkeypatch, tmp_path):
    # Odoo 19's ``odoo`` has no __init__.py: a namespace package, known by its __path__.
    root = tmp_path / "odoo-19"
    fake = types.ModuleType("odoo")
    fake.__path__ = [str(root / "odoo")]
    monkeypatch.setitem(sys.modules, "odoo", fake)
    assert not is_app_path(str(root / "odoo" / "orm" / "models.py"))
    assert not is_app_path(str(root / "addons" / "mail" / "models" / "mail_thread.py"))
    assert is_app_path(str(tmp_path / "custom" / "ipai_x" / "models" / "thing.py"))


def test_the_real_odoo_server_is_a_library_when_present(monkeypatch):
    source = Path(os.environ.get("ODOO_SRC", "/opt/odoo"))
    if not (source / "odoo" / "release.py").is_file():
        pytest.skip("no Odoo source here (ODOO_SRC, /opt/odoo)")
    monkeypatch.syspath_prepend(str(source))
    for name in [m for m in sys.modules if m == "odoo" or m.startswith("odoo.")]:
        monkeypatch.delitem(sys.modules, name)
    try:
        importlib.import_module("odoo.release")  # the real package, as Odoo 19 ships it
        assert not is_app_path(str(source / "odoo" / "models.py"))
        assert not is_app_path(str(source / "addons" / "mail" / "models" / "mail_thread.py"))
        repo = Path(__file__).resolve().parents[2]
        assert is_app_path(str(repo / "addons" / "ipai_pulser_connector" / "models" / "ipai_pulser_intent.py"))
    finally:  # other tests of this process must not find an odoo they did not import
        for name in [m for m in sys.modules if m == "odoo" or m.startswith("odoo.")]:
            del sys.modules[name]


def test_library_frames_stay_out_of_the_fingerprint(registry):
    exc = _raised(lambda _port: json.loads("{not json"))
    failure = failure_from_exception(registry, exc, source="service", service="billing")
    frames = frames_from_stacktrace(failure.stacktrace, keep=is_app_path)
    assert frames and all("test_record" in f for f in frames)
    assert any("json/decoder" in f for f in frames_from_stacktrace(failure.stacktrace))


def _span_with(recorder) -> tuple[object, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "odoo"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("test").start_as_current_span(
        "pulser.intent.attempt", record_exception=False, set_status_on_exception=False
    ) as span:
        recorder(span)
    (exported,) = exporter.get_finished_spans()
    return exported, exporter


def test_record_on_span_carries_the_direct_writes_key(registry):
    exc = _raised(_sync_ledger)
    holder = {}

    def record(span):
        trace_id, span_id = span_ids(span)
        holder["failure"] = _odoo_path(registry, exc, trace_id=trace_id, span_id=span_id)
        assert record_on_span(span, holder["failure"], exc)

    exported, _ = _span_with(record)
    failure = holder["failure"]
    (event,) = exported.events
    assert event.name == "exception"
    assert event.attributes[IPAI_OCCURRENCE_ID] == ODOO_OCCURRENCE
    assert event.attributes[IPAI_FAILURE_CODE] == failure.code
    assert event.attributes[IPAI_FAILURE_FINGERPRINT] == failure.fingerprint
    assert event.attributes[IPAI_SOURCE] == "odoo"
    assert event.attributes[EXCEPTION_TYPE] == "ConnectionRefusedError"
    assert event.attributes[EXCEPTION_MESSAGE] == failure.envelope["error"]["message"]
    assert SECRET not in event.attributes[EXCEPTION_MESSAGE] + event.attributes[EXCEPTION_STACKTRACE]
    assert "_sync_ledger" in event.attributes[EXCEPTION_STACKTRACE]
    assert exported.attributes[IPAI_OCCURRENCE_ID] == ODOO_OCCURRENCE
    assert exported.status.status_code == StatusCode.ERROR
    assert exported.status.description == failure.code
    assert failure.envelope["context"]["span_id"] == f"{exported.context.span_id:016x}"

    # The bridge reads the OTLP encoding of that span into the direct write's key.
    (occ,) = Extractor(registry).traces(encode_spans([exported])).occurrences
    assert (occ.source, occ.occurrence_id, occ.fingerprint, occ.code) == (
        "odoo",
        ODOO_OCCURRENCE,
        failure.fingerprint,
        failure.code,
    )


def test_a_span_that_is_not_recording_is_left_alone(registry):
    from opentelemetry.trace import INVALID_SPAN

    exc = _raised(_sync_ledger)
    assert not record_on_span(INVALID_SPAN, _odoo_path(registry, exc), exc)
    assert span_ids(INVALID_SPAN) == (None, None)
    assert span_ids(None) == (None, None)


def test_the_only_event_takes_the_spans_key(registry):
    """An instrumentation recorded the exception (no ipai.* on its event); the producer put its
    key on the span: the bridge keys that one event on the span's id. With two events it cannot
    tell which one the key belongs to, and each keeps its own."""
    exc = _raised(_sync_ledger)
    failure = _odoo_path(registry, exc)
    keys = {IPAI_OCCURRENCE_ID: ODOO_OCCURRENCE, IPAI_FAILURE_FINGERPRINT: failure.fingerprint, IPAI_SOURCE: "odoo"}

    def one(span):
        span.record_exception(exc)
        span.set_attributes(keys)

    exported, _ = _span_with(one)
    (occ,) = Extractor(registry).traces(encode_spans([exported])).occurrences
    assert (occ.source, occ.occurrence_id, occ.fingerprint) == ("odoo", ODOO_OCCURRENCE, failure.fingerprint)

    def two(span):
        span.record_exception(exc)
        span.record_exception(KeyError("another"))
        span.set_attributes(keys)

    exported, _ = _span_with(two)
    ids = [o.occurrence_id for o in Extractor(registry).traces(encode_spans([exported])).occurrences]
    assert len(ids) == 2 and all(i.startswith("event:") for i in ids)


@pytest.mark.parametrize("order", ["direct first", "bridge first"])
def test_direct_write_and_telemetry_copy_count_once(registry, ops_dsn, order):
    exc = _raised(_sync_ledger)
    holder = {}

    def record(span):
        trace_id, span_id = span_ids(span)
        holder["failure"] = _odoo_path(registry, exc, trace_id=trace_id, span_id=span_id)
        record_on_span(span, holder["failure"], exc)

    exported, _ = _span_with(record)
    failure = holder["failure"]
    copy = Extractor(registry).traces(encode_spans([exported])).occurrences
    conn = store.connect(ops_dsn)
    try:
        if order == "direct first":
            first = store.upsert_error(conn, failure.occurrence)
            written = store.write_batch(conn, copy)
            assert (first.count, written.new_occurrences) == (1, 0)
        else:
            written = store.write_batch(conn, copy)
            again = store.upsert_error(conn, failure.occurrence)
            assert (written.new_occurrences, again.count, again.is_new) == (1, 1, False)
        with conn.cursor() as cur:
            cur.execute("SELECT fingerprint, count FROM ops.agent_errors")
            assert cur.fetchall() == [(failure.fingerprint, 1)]
            cur.execute("SELECT source, occurrence_id FROM ops.agent_error_occurrences")
            assert cur.fetchall() == [("odoo", ODOO_OCCURRENCE)]
    finally:
        conn.close()
