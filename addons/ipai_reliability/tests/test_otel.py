"""OpenTelemetry from Odoo: off without OTEL_* variables, real OTLP/HTTP when configured.

The receiver is a plain ``http.server`` on 127.0.0.1 that keeps every POST body; the
assertions decode what Odoo really sent (``ExportTraceServiceRequest.FromString``)
instead of looking at mocks.
"""

import http.server
import logging
import os
import sys
import threading
import time
import uuid

from odoo import http as odoo_http
from odoo.addons.base.models.ir_cron import IrCron
from odoo.tests import HttpCase, TransactionCase, tagged
from odoo.tools import mute_logger
from opentelemetry import trace
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from opentelemetry.semconv.attributes.service_attributes import SERVICE_INSTANCE_ID

from .. import otel
from ..otel._state import STATE

WRAPPED = "__ipai_otel_wrapped__"


class _Receiver:
    """A minimal OTLP/HTTP endpoint: answers 200 to every POST and keeps the bodies."""

    def __init__(self):
        self.requests = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:
                    receiver.requests.append((self.path, self.headers.get("Content-Type"), body))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server.server_port}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def clear(self):
        with self._lock:
            self.requests.clear()

    def bodies(self, path):
        with self._lock:
            return [body for p, _ctype, body in self.requests if p == path]

    def spans(self):
        out = []
        for body in self.bodies("/v1/traces"):
            for rs in ExportTraceServiceRequest.FromString(body).resource_spans:
                resource = {a.key: a.value.string_value for a in rs.resource.attributes}
                for ss in rs.scope_spans:
                    out.extend((resource, span) for span in ss.spans)
        return out

    def log_records(self):
        out = []
        for body in self.bodies("/v1/logs"):
            for rl in ExportLogsServiceRequest.FromString(body).resource_logs:
                for sl in rl.scope_logs:
                    out.extend(sl.log_records)
        return out


def _attrs(key_values):
    out = {}
    for kv in key_values:
        value = kv.value
        out[kv.key] = value.string_value if value.HasField("string_value") else value.int_value
    return out


class OtelCaseMixin:
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.receiver = _Receiver()
        cls.addClassCleanup(cls.receiver.close)
        # Leave the process as the tests found it: telemetry off (post_load found no OTEL_*).
        cls.addClassCleanup(otel.shutdown)

    def setup_otel(self, **extra):
        self.receiver.clear()
        environ = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.receiver.url,
            "OTEL_SERVICE_NAME": "odoo-test",
            "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=test",
            # Nothing leaves before shutdown()/force_flush(): the batch delay is 10 minutes.
            "OTEL_BSP_SCHEDULE_DELAY": "600000",
            "OTEL_BLRP_SCHEDULE_DELAY": "600000",
            **extra,
        }
        self.assertTrue(otel.setup_from_env(environ, force=True))
        self.addCleanup(otel.shutdown)

    def find_span(self, name, *, wait=0.0):
        deadline = time.monotonic() + wait
        while True:
            found = [(res, span) for res, span in self.receiver.spans() if span.name == name]
            if found or time.monotonic() >= deadline:
                return found
            otel.force_flush()
            time.sleep(0.1)

    def assert_failure_span(self, span, *, code=None):
        self.assertEqual(span.status.code, Status.STATUS_CODE_ERROR)
        events = [e for e in span.events if e.name == "exception"]
        self.assertEqual(len(events), 1, span)
        event = _attrs(events[0].attributes)
        self.assertTrue(event["exception.type"])
        self.assertIn("exception.stacktrace", event)
        failure_code = event["ipai.failure.code"]
        if code:
            self.assertEqual(failure_code, code)
        self.assertEqual(_attrs(span.attributes)["ipai.failure.code"], failure_code)
        self.assertEqual(span.status.message, failure_code)
        self.assertTrue(event["ipai.failure.fingerprint"].startswith("fp1:"))
        self.assertEqual(event["ipai.occurrence_id"], f"{span.trace_id.hex()}:{span.span_id.hex()}:0")
        return event


@tagged("post_install", "-at_install")
class TestOtelSetup(OtelCaseMixin, TransactionCase):
    def test_00_unset_installs_nothing(self):
        """No OTEL_* endpoint nor exporter: nothing is built, nothing is wrapped."""
        if STATE.providers is not None:
            self.skipTest("this process configured OpenTelemetry before this test")
        for environ in (
            {},
            {"OTEL_SERVICE_NAME": "x"},
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://h:4318", "OTEL_SDK_DISABLED": "true"},
        ):
            self.assertFalse(otel.setup_from_env(environ, force=True), environ)
        self.assertFalse(otel.is_enabled())
        self.assertIsInstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
        self.assertIsNone(STATE.providers)
        self.assertNotIn("odoo.addons.ipai_reliability.otel._pipeline", sys.modules)
        self.assertFalse(getattr(odoo_http.Application.__call__, WRAPPED, False))
        self.assertFalse(getattr(odoo_http.Request._serve_db, WRAPPED, False))
        self.assertFalse(getattr(IrCron._run_job, WRAPPED, False))
        self.assertFalse(getattr(IrCron._callback, WRAPPED, False))

    def test_01_settings_follow_the_standard_variables(self):
        from ..otel._settings import read_settings

        s = read_settings({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/"})
        self.assertEqual([e.endpoint for e in s.exporters["traces"]], ["http://collector:4318/v1/traces"])
        self.assertEqual([e.endpoint for e in s.exporters["logs"]], ["http://collector:4318/v1/logs"])
        s = read_settings(
            {
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4317",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20abc,x-tenant=7",
            }
        )
        (exporter,) = s.exporters["traces"]
        self.assertEqual((exporter.protocol, exporter.endpoint), ("grpc", "http://c:4317"))
        self.assertEqual(dict(exporter.headers), {"authorization": "Bearer abc", "x-tenant": "7"})
        # Only traces have an endpoint: metrics and logs are not sent to a default localhost.
        self.assertEqual((s.exporters["metrics"], s.exporters["logs"]), ((), ()))
        s = read_settings({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_METRICS_EXPORTER": "none"})
        self.assertFalse(s.signal_enabled("metrics"))
        self.assertTrue(s.signal_enabled("traces"))

    def test_02_cron_failure_span_and_shutdown_flush(self):
        """A cron whose code raises: one ``odoo.cron <name>`` span, status ERROR, an exception
        event with ``ipai.failure.code``; it reaches the collector at shutdown(), not before."""
        self.setup_otel()
        cron = self.env["ir.cron"].create(
            {
                "name": "ipai otel probe",
                "model_id": self.env.ref("base.model_res_partner").id,
                "state": "code",
                "code": "raise ValueError('ipai otel probe failed on record 42')",
                "interval_number": 1,
                "interval_type": "days",
            }
        )
        with (
            self.enter_registry_test_mode(),
            self.assertLogs("odoo.addons.base.models.ir_cron", logging.ERROR),
            self.registry.cursor() as cron_cr,
        ):
            cron.with_env(self.env(cr=cron_cr)).method_direct_trigger()

        self.assertEqual(self.receiver.bodies("/v1/traces"), [], "exported before the batch delay")
        started = time.monotonic()
        otel.shutdown()
        self.assertLess(time.monotonic() - started, 5.0)
        found = self.find_span("odoo.cron ipai otel probe")
        self.assertEqual(len(found), 1)
        resource, span = found[0]
        self.assertEqual(span.kind, Span.SPAN_KIND_INTERNAL)
        attributes = _attrs(span.attributes)
        self.assertEqual(attributes["ipai.cron.id"], cron.id)
        self.assertEqual(attributes["ipai.cron.name"], "ipai otel probe")
        self.assertEqual(attributes["odoo.database"], self.env.cr.dbname)
        event = self.assert_failure_span(span)
        self.assertEqual(event["exception.type"], "ValueError")
        self.assertEqual(attributes["error.type"], event["ipai.failure.code"])
        self.assertEqual(resource["service.name"], "odoo-test")
        self.assertEqual(resource["ipai.source"], "odoo")
        self.assertEqual(resource["deployment.environment.name"], "test")
        self.assertTrue(resource["service.version"].startswith("19.0."))

    def test_03_error_log_record_shares_the_occurrence_id(self):
        """Odoo logs the exception it handled; that ERROR record carries the span event's ids,
        so the bridge counts one occurrence (docs/specs/telemetry_v1.md, Exceptions)."""
        self.setup_otel()
        with STATE.tracer.start_as_current_span("probe") as span:
            try:
                raise KeyError("ipai-otel-probe")
            except KeyError as exc:
                code = otel.record_exception(span, exc)
                record = logging.LogRecord(
                    "odoo.http", logging.ERROR, __file__, 1, "Exception during request handling.", None, sys.exc_info()
                )
                STATE.log_handler.handle(record)
        otel.shutdown()
        (log,) = self.receiver.log_records()
        (_res, exported), *_ = self.find_span("probe")
        event = self.assert_failure_span(exported, code=code)
        attributes = _attrs(log.attributes)
        self.assertGreaterEqual(log.severity_number, 17)
        self.assertEqual(attributes["ipai.occurrence_id"], event["ipai.occurrence_id"])
        self.assertEqual(attributes["ipai.failure.code"], code)
        self.assertEqual(log.trace_id, exported.trace_id)

    def test_04_shutdown_turns_the_hooks_into_pass_through(self):
        self.setup_otel()
        otel.shutdown()
        self.assertFalse(otel.is_enabled())
        with trace.get_tracer("probe").start_as_current_span("after shutdown") as span:
            self.assertFalse(span.is_recording())
        self.assertEqual(self.receiver.bodies("/v1/traces"), [])

    def test_05_each_forked_worker_reports_its_own_service_instance(self):
        """Prefork workers fork after the providers are built: each exports its own
        ``service.instance.id`` (a UUID), the parent keeps its own, the rest is shared."""
        self.setup_otel()

        def probe(name):
            with STATE.tracer.start_as_current_span(name):
                pass
            otel.force_flush()

        children = []
        for index in range(2):
            pid = os.fork()
            if pid == 0:  # the child exports one span and leaves without Odoo's exit hooks
                status = 1
                try:
                    probe(f"instance probe child {index}")
                    status = 0
                finally:
                    os._exit(status)
            children.append(pid)
        for pid in children:
            _pid, status = os.waitpid(pid, 0)
            self.assertEqual(os.waitstatus_to_exitcode(status), 0)
        probe("instance probe parent")

        instances = {}
        for name in ("instance probe parent", "instance probe child 0", "instance probe child 1"):
            ((resource, _span),) = self.find_span(name)
            self.assertEqual(resource["service.name"], "odoo-test")
            self.assertEqual(resource["deployment.environment.name"], "test")
            instances[name] = uuid.UUID(resource[SERVICE_INSTANCE_ID])
        self.assertEqual(len(set(instances.values())), 3, instances)
        self.assertEqual(
            str(instances["instance probe parent"]),
            STATE.providers.tracer_provider.resource.attributes[SERVICE_INSTANCE_ID],
        )


@tagged("post_install", "-at_install")
class TestOtelHttp(OtelCaseMixin, HttpCase):
    def test_request_exception_is_recorded_on_the_server_span(self):
        self.setup_otel()
        self.authenticate("admin", "admin")
        with mute_logger("odoo.http"):
            response = self.url_open(
                "/web/dataset/call_kw/res.partner/ipai_otel_no_such_method",
                json={
                    "jsonrpc": "2.0",
                    "method": "call",
                    "id": 1,
                    "params": {"model": "res.partner", "method": "ipai_otel_no_such_method", "args": [], "kwargs": {}},
                },
            )
        self.assertIn("error", response.json())
        route = "/web/dataset/call_kw/<path:path>"
        found = self.find_span(f"POST {route}", wait=10.0)
        self.assertEqual(len(found), 1, [s.name for _r, s in self.receiver.spans()])
        _resource, span = found[0]
        self.assertEqual(span.kind, Span.SPAN_KIND_SERVER)
        attributes = _attrs(span.attributes)
        self.assertEqual(attributes["http.route"], route)
        self.assertEqual(attributes["http.request.method"], "POST")
        self.assertEqual(attributes["odoo.database"], self.env.cr.dbname)
        event = self.assert_failure_span(span)
        self.assertEqual(event["exception.type"], "AttributeError")

    def test_client_errors_are_not_failures(self):
        self.setup_otel()
        self.url_open("/ipai/otel/no/such/page")
        found = self.find_span("GET", wait=10.0)
        self.assertTrue(found, [s.name for _r, s in self.receiver.spans()])
        _resource, span = found[-1]
        self.assertEqual(_attrs(span.attributes)["http.response.status_code"], 404)
        self.assertNotEqual(span.status.code, Status.STATUS_CODE_ERROR)
        self.assertFalse([e for e in span.events if e.name == "exception"])


#: Secrets a failure's text may carry, each of a kind the envelope's redactor or the URL rule knows.
TEXT_SECRETS = ("hunter2hunter2", "dbpass123", "sk-proj-abcdefghijklmnop0123456789", "oauthcode123", "sigval999")
SECRET_MESSAGE = (
    "sync failed: password=hunter2hunter2 on postgres://odoo:dbpass123@db/odoo with "
    "sk-proj-abcdefghijklmnop0123456789, callback https://idp.example/cb?code=oauthcode123&signature=sigval999&x=1"
)


@tagged("post_install", "-at_install")
class TestOtelRedaction(OtelCaseMixin, TransactionCase):
    """Nothing secret leaves in telemetry: URL tokens, exception messages, tracebacks, log bodies."""

    def exported(self):
        return b"".join(body for _p, _c, body in self.receiver.requests)

    def test_url_attributes_lose_their_tokens_but_keep_their_shape(self):
        from ..otel._redaction import clean_attributes, clean_url

        self.assertEqual(
            clean_url("https://odoo.example/web/reset_password?token=Zx81Qa&db=prod#frag"),
            "https://odoo.example/web/reset_password?token=REDACTED&db=prod#frag",
        )
        self.assertEqual(
            clean_url("/my/orders/7?access_token=3f2a-9c&report_type=pdf&Signature=abc&X-Amz-Credential=k"),
            "/my/orders/7?access_token=REDACTED&report_type=pdf&Signature=REDACTED&X-Amz-Credential=REDACTED",
        )
        self.assertNotIn("portal-secret", clean_url("/web/login?redirect=%2Fmy%2Fo%3Faccess_token%3Dportal-secret"))
        self.assertEqual(clean_url("http://user:pw@h:80/p?q=1"), "http://REDACTED:REDACTED@h:80/p?q=1")
        self.assertEqual(clean_url("/cb#access_token=abc&state=s"), "/cb#access_token=REDACTED&state=REDACTED")
        cleaned = clean_attributes(
            {
                "http.route": "/survey/<string:survey_token>/<string:answer_token>",
                "url.path": "/survey/5ecre7/an5wer",
                "http.target": "/survey/5ecre7/an5wer?token=t0k",
                "url.query": "token=t0k",
            }
        )
        self.assertEqual(cleaned["url.path"], "/survey/<string:survey_token>/<string:answer_token>")
        self.assertEqual(cleaned["http.target"], "/survey/<string:survey_token>/<string:answer_token>?token=REDACTED")
        self.assertEqual(cleaned["url.query"], "token=REDACTED")
        self.assertIsNone(clean_attributes({"url.query": "page=2&db=prod", "url.path": "/shop"}))

    def test_exception_text_is_redacted_on_every_span_and_log_record(self):
        """Our record_exception, another tracer's automatic one, and the ERROR log record:
        none of them exports the secrets the exception's message carried."""
        self.setup_otel()
        tracer = STATE.providers.tracer_provider.get_tracer("another.addon")
        with STATE.tracer.start_as_current_span("ours") as span:
            try:
                raise ValueError(SECRET_MESSAGE)
            except ValueError as exc:
                otel.record_exception(span, exc)
                record = logging.LogRecord(
                    "odoo.addons.probe", logging.ERROR, __file__, 1, "failed: %s", (SECRET_MESSAGE,), sys.exc_info()
                )
                STATE.log_handler.handle(record)
        with self.assertRaises(RuntimeError), tracer.start_as_current_span("theirs"):
            raise RuntimeError(SECRET_MESSAGE)  # the SDK records it (record_exception=True)
        otel.shutdown()
        blob = self.exported()
        for secret in TEXT_SECRETS:
            self.assertNotIn(secret.encode(), blob, secret)
        for name in ("ours", "theirs"):
            ((_res, span),) = self.find_span(name)
            (event,) = [e for e in span.events if e.name == "exception"]
            attributes = _attrs(event.attributes)
            self.assertIn("password=[REDACTED:secret]", attributes["exception.message"])
            self.assertIn("code=REDACTED&signature=REDACTED&x=1", attributes["exception.message"])
            self.assertIn("postgres://odoo:[REDACTED:password]@db/odoo", attributes["exception.stacktrace"])
        (log,) = self.receiver.log_records()
        self.assertIn("password=[REDACTED:secret]", log.body.string_value)
        self.assertIn("[REDACTED:api_key]", _attrs(log.attributes)["exception.message"])


@tagged("post_install", "-at_install")
class TestOtelHttpRedaction(OtelCaseMixin, HttpCase):
    def test_reset_and_portal_tokens_never_leave_in_the_request_url(self):
        self.setup_otel()
        self.url_open("/web/reset_password/ipai-otel-probe?token=ResetT0kenValue&access_token=P0rtalT0ken&db=kept")
        found = self.find_span("GET", wait=10.0)
        self.assertTrue(found, [s.name for _r, s in self.receiver.spans()])
        otel.shutdown()
        blob = b"".join(body for _p, _c, body in self.receiver.requests)
        self.assertNotIn(b"ResetT0kenValue", blob)
        self.assertNotIn(b"P0rtalT0ken", blob)
        queries = [_attrs(s.attributes).get("url.query") for _r, s in self.receiver.spans()]
        self.assertIn("token=REDACTED&access_token=REDACTED&db=kept", queries)
