"""One failing attempt is one occurrence in ops, whichever way it arrives.

Odoo writes the attempt's failure directly (``intent:<db>:<id>:attempt:<n>``, its own
committed connection) and records it on the attempt span. When the Collector forwards
that span, the bridge must key it on the same ``(source, occurrence_id)`` with the same
fingerprint: one occurrence, one group (docs/specs/telemetry_v1.md, "Exceptions").

Everything is real: the OpenTelemetry SDK with an in-memory exporter, the OTLP protobuf
encoding of the exported span, the bridge's Extractor, its sender policy and its Writer
on its own PostgreSQL connection.
"""

import random
import string

from odoo.addons.ipai_reliability.models.ipai_ops import local_dsn
from odoo.addons.ipai_reliability.otel import _failures
from odoo.tests import tagged
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from ipai_ops import store as ops_store
from ipai_ops.bridge.auth import Sender, Senders
from ipai_ops.bridge.extract import Extractor
from ipai_ops.bridge.pipeline import apply_senders
from ipai_ops.bridge.writer import Writer
from ipai_ops.record import failure_from_exception

from ..services import contract, telemetry
from ..services.exceptions import IntentTimeout
from ..services.handler_registry import intent_handler, unregister
from .common import PulserCase

PROBE = "test.one_occurrence_probe"


def _word():
    # Letters only: the fingerprint's normaliser keeps them, so each run has groups of its own
    # (other tests' direct writes are committed in the same database).
    return "".join(random.choices(string.ascii_lowercase, k=12))


@tagged("post_install", "-at_install")
class TestOneOccurrence(PulserCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()

        @intent_handler(PROBE, schema={"type": "object"})
        def probe(ctx):
            raise IntentTimeout(f"ledger {ctx.args['word']} took too long")  # retryable

        cls.addClassCleanup(unregister, PROBE)

    def setUp(self):
        super().setUp()
        self.exporter = InMemorySpanExporter()
        provider = TracerProvider(resource=Resource.create({"service.name": "odoo", "ipai.source": "odoo"}))
        provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        telemetry.use_providers(provider, None)
        self.addCleanup(telemetry.use_providers, None, None)
        # The direct write commits on a connection of its own (as in production, where it
        # survives the worker's rollback); the bridge writes on another one.
        self.dsn = local_dsn(self.env.cr.dbname)
        self.env["ir.config_parameter"].set_param("ipai_reliability.ops_dsn", self.dsn)
        self.conn = ops_store.connect(self.dsn, application_name="ipai-pulser-test")
        self.addCleanup(self.conn.close)
        self.fingerprints = set()
        self.addCleanup(self._drop_rows)

    def _drop_rows(self):
        self.conn.rollback()
        with self.conn.cursor() as cur:
            cur.execute("DELETE FROM ops.agent_errors WHERE fingerprint = ANY(%s)", [sorted(self.fingerprints)])
        self.conn.commit()

    def rows(self, sql, params):
        self.conn.rollback()  # a fresh snapshot: the writers committed after the last one
        with self.conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()

    def bridge(self, spans):
        """What the bridge does with an export request from the Odoo Collector's sender."""
        sender = Sender("odoo-collector", frozenset({"odoo"}), False, (b"t" * 32,))
        extraction = Extractor(self.env["ipai.ops"].registry()).traces(encode_spans(spans))
        apply_senders(extraction, Senders([sender]), sender)
        self.assertFalse(extraction.rejected, extraction.message())
        writer = Writer(self.dsn, pool_size=1)
        self.addCleanup(writer.close)
        return extraction.occurrences, writer.write_sync(extraction.occurrences)

    def test_failed_attempt_is_one_occurrence_and_one_group(self):
        intent = self.submit("test.crash", args={"message": f"ledger {_word()} fell over"}, max_attempts=1)
        self.run_worker()
        self.assertEqual(intent.state, "failed")
        envelope = intent.failure_envelope
        fingerprint = envelope["error"]["fingerprint"]
        self.fingerprints.add(fingerprint)
        occurrence_id = contract.occurrence_id(self.env.cr.dbname, intent.id, 1)
        self.assertEqual(envelope["context"]["occurrence_id"], occurrence_id)
        self.assertEqual(envelope["error"]["code"], "INTENT.HANDLER_CRASHED")
        self.assertTrue(intent.ops_error_id)

        (span,) = [s for s in self.exporter.get_finished_spans() if s.attributes.get("ipai.intent.id") == intent.id]
        (event,) = [e for e in span.events if e.name == "exception"]
        self.assertEqual(event.attributes["ipai.occurrence_id"], occurrence_id)
        self.assertEqual(event.attributes["ipai.failure.fingerprint"], fingerprint)
        self.assertEqual(envelope["context"]["span_id"], f"{span.context.span_id:016x}")

        occurrences, written = self.bridge([span])
        (occ,) = occurrences
        self.assertEqual(
            (occ.source, occ.occurrence_id, occ.fingerprint, occ.code),
            ("odoo", occurrence_id, fingerprint, "INTENT.HANDLER_CRASHED"),
        )
        self.assertEqual((written.received, written.new_occurrences, written.refused), (1, 0, []))
        # a redelivery of the same batch (the Collector retries) changes nothing either
        self.assertEqual(self.bridge([span])[1].new_occurrences, 0)

        trace_hex = f"{span.context.trace_id:032x}"
        groups = self.rows("SELECT id, count, source FROM ops.agent_errors WHERE last_trace_id = %s", [trace_hex])
        self.assertEqual(groups, [(intent.ops_error_id, 1, "odoo")])
        stored = self.rows(
            "SELECT o.source, o.occurrence_id, e.fingerprint FROM ops.agent_error_occurrences o "
            "JOIN ops.agent_errors e ON e.id = o.error_id WHERE o.error_id = %s OR o.occurrence_id LIKE %s",
            [intent.ops_error_id, f"%{trace_hex}%"],
        )
        self.assertEqual(stored, [("odoo", occurrence_id, fingerprint)])

    def test_each_attempt_is_its_own_occurrence_of_one_group(self):
        """Two attempts of one intent: two occurrences (a retry is a new failure), one group,
        and the bridge's copies of both attempt spans add nothing."""
        intent = self.submit(PROBE, args={"word": _word()}, max_attempts=2)
        self.run_worker()
        intent.write({"next_attempt_at": False})
        self.run_worker()
        self.assertEqual((intent.state, intent.attempts), ("dead", 2))
        fingerprint = intent.failure_envelope["error"]["fingerprint"]
        self.fingerprints.add(fingerprint)
        spans = [s for s in self.exporter.get_finished_spans() if s.attributes.get("ipai.intent.id") == intent.id]
        self.assertEqual(len(spans), 2)
        occurrences, written = self.bridge(spans)
        self.assertEqual({o.fingerprint for o in occurrences}, {fingerprint})
        self.assertEqual((written.received, written.new_occurrences), (2, 0))
        rows = self.rows(
            "SELECT e.count, array_agg(o.occurrence_id ORDER BY o.occurrence_id) FROM ops.agent_errors e "
            "JOIN ops.agent_error_occurrences o ON o.error_id = e.id WHERE e.fingerprint = %s GROUP BY e.count",
            [fingerprint],
        )
        db = self.env.cr.dbname
        self.assertEqual(
            rows, [(2, [contract.occurrence_id(db, intent.id, 1), contract.occurrence_id(db, intent.id, 2)])]
        )

    def test_odoo_request_hook_records_what_the_worker_would(self):
        """The request/cron hooks' recorder (ipai_reliability.otel) and the worker build the
        failure with the same function: same code and fingerprint for one exception; what a
        direct writer stashed on the exception wins on the span."""
        tracer = TracerProvider()
        tracer.add_span_processor(SimpleSpanProcessor(self.exporter))
        registry = self.env["ipai.ops"].registry()

        def boom():
            raise ConnectionRefusedError(111, "Connection refused (one-occurrence probe)")

        with tracer.get_tracer("probe").start_as_current_span("request") as span:
            try:
                boom()
            except ConnectionRefusedError as exc:
                code = _failures.record_exception(span, exc)
                direct = failure_from_exception(registry, exc, source="odoo", service="odoo")
        (exported,) = [s for s in self.exporter.get_finished_spans() if s.name == "request"]
        (event,) = exported.events
        self.assertEqual(code, direct.code)
        self.assertEqual(event.attributes["ipai.failure.fingerprint"], direct.fingerprint)
        self.assertEqual(event.attributes["ipai.source"], "odoo")
        self.assertEqual(exported.attributes["ipai.occurrence_id"], event.attributes["ipai.occurrence_id"])

        stashed = RuntimeError("written directly first")
        stashed.ipai_occurrence_id = "direct-1"
        stashed.ipai_failure_code = "INTENT.HANDLER_CRASHED"
        stashed.ipai_fingerprint = "fp1:" + "a" * 32
        with tracer.get_tracer("probe").start_as_current_span("stashed") as span:
            _failures.record_exception(span, stashed)
        (exported,) = [s for s in self.exporter.get_finished_spans() if s.name == "stashed"]
        attributes = exported.events[0].attributes
        self.assertEqual(
            (attributes["ipai.occurrence_id"], attributes["ipai.failure.code"], attributes["ipai.failure.fingerprint"]),
            ("direct-1", "INTENT.HANDLER_CRASHED", "fp1:" + "a" * 32),
        )
