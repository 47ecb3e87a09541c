import logging

from odoo.tests import tagged
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from ..services import telemetry
from .common import PulserCase

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@tagged("post_install", "-at_install")
class TestTelemetry(PulserCase):
    def setUp(self):
        super().setUp()
        self.exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        telemetry.use_providers(provider, MeterProvider(metric_readers=[self.reader]))
        self.addCleanup(telemetry.use_providers, None, None)

    def metric_names(self):
        data = self.reader.get_metrics_data()
        return {m.name for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}

    def test_span_per_attempt_continues_traceparent(self):
        ok = self.submit("odoo.healthcheck", traceparent=TRACEPARENT, correlation_id="c-1")
        bad = self.submit("test.retryable", max_attempts=1)
        self.run_worker()
        spans = {s.attributes["ipai.intent.id"]: s for s in self.exporter.get_finished_spans()}
        self.assertEqual(set(spans), {ok.id, bad.id})
        span = spans[ok.id]
        self.assertEqual(span.name, "pulser.intent.attempt")
        self.assertEqual(f"{span.context.trace_id:032x}", "4bf92f3577b34da6a3ce929d0e0e4736")
        self.assertEqual(f"{span.parent.span_id:016x}", "00f067aa0ba902b7")
        self.assertEqual(span.attributes["ipai.intent.type"], "odoo.healthcheck")
        self.assertEqual(span.attributes["ipai.intent.attempt"], 1)
        self.assertEqual(span.attributes["ipai.correlation_id"], "c-1")
        self.assertEqual(ok.result["trace"]["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736")
        failed = spans[bad.id]
        self.assertEqual(failed.attributes["ipai.failure.code"], "INTENT.TIMEOUT")
        self.assertEqual(failed.status.status_code.name, "ERROR")
        events = [e for e in failed.events if e.name == "exception"]
        self.assertEqual(len(events), 1)
        self.assertEqual(events[0].attributes["ipai.failure.code"], "INTENT.TIMEOUT")
        self.assertIn("IntentTimeout", events[0].attributes["exception.type"])
        # the envelope points at the span that recorded it
        self.assertEqual(bad.failure_envelope["context"]["span_id"], f"{failed.context.span_id:016x}")

    def test_metrics(self):
        self.submit("odoo.healthcheck")
        self.submit("test.retryable", max_attempts=2)
        self.submit("test.retryable", max_attempts=1)
        self.submit("odoo.healthcheck")._request_cancel(source="test")
        self.run_worker()
        names = self.metric_names()
        for name in (
            "ipai.intents",
            "ipai.intent.attempt.duration",
            "ipai.intent.retries",
            "ipai.intent.dead_letters",
            "ipai.intent.cancel.latency",
        ):
            self.assertIn(name, names)

    def test_audit_log_events(self):
        intent = self.submit("odoo.healthcheck")
        with self.assertLogs("ipai.audit", level=logging.INFO) as logs:
            self.run_worker()
            intent2 = self.submit("odoo.healthcheck")
            intent2._request_cancel(source="api")
        names = [getattr(r, "event.name") for r in logs.records]
        self.assertIn("run.state", names)
        self.assertIn("run.cancel", names)
        cancel = next(r for r in logs.records if getattr(r, "event.name") == "run.cancel")
        self.assertEqual(getattr(cancel, "ipai.cancel_source"), "api")
        self.assertEqual(getattr(cancel, "ipai.intent.id"), intent2.id)
        self.assertGreaterEqual(getattr(cancel, "ipai.latency_ms"), 0)
        self.assertEqual(intent.state, "succeeded")

    def test_disabled_is_silent(self):
        telemetry.set_enabled(False)
        self.addCleanup(telemetry.set_enabled, True)
        self.submit("odoo.healthcheck")
        self.run_worker()
        self.assertEqual(self.exporter.get_finished_spans(), ())
