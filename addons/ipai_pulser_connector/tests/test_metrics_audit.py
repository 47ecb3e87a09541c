"""What the intent model really records: metric names and attributes (cancel path, instant
cancels, sub-second latency, no ids), the queue depth, and audit events exported at INFO
with the intent id while other INFO records of ``odoo`` stay home (docs/specs/telemetry_v1.md)."""

import logging

from odoo.addons.ipai_reliability import otel
from odoo.addons.ipai_reliability.otel._state import STATE
from odoo.addons.ipai_reliability.tests.test_otel import _Receiver
from odoo.tests import tagged
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from ..services import telemetry
from ..worker import Attempt, claim
from .common import PulserCase

WORKER = "odoo:test:host:1"


def _attrs(key_values):
    """OTLP attributes as Python values (what was really sent)."""
    out = {}
    for kv in key_values:
        kind = kv.value.WhichOneof("value")
        out[kv.key] = getattr(kv.value, kind) if kind else None
    return out


@tagged("post_install", "-at_install")
class TestIntentMetrics(PulserCase):
    def setUp(self):
        super().setUp()
        self.reader = InMemoryMetricReader()
        telemetry.use_providers(None, MeterProvider(metric_readers=[self.reader]))
        self.addCleanup(telemetry.use_providers, None, None)
        self.addCleanup(telemetry.unwatch_queue, self.env.cr.dbname)

    def points(self, name):
        data = self.reader.get_metrics_data()
        return [
            point
            for rm in data.resource_metrics
            for sm in rm.scope_metrics
            for metric in sm.metrics
            if metric.name == name
            for point in metric.data.data_points
        ]

    def test_cancel_latency_by_path_and_instant(self):
        queued_api = self.submit()
        queued_ui = self.submit()
        claimed = self.submit()
        self.assertEqual(queued_api._request_cancel(source="api:k1"), "cancelled")
        queued_ui.action_cancel()
        # claimed (assigned) by a worker: a cooperative request, acknowledged by the next run
        claim(self.Intent, 1, WORKER)
        self.assertEqual(claimed.state, "assigned")
        self.assertEqual(claimed._request_cancel(source="agent:planner"), "cancel_requested")
        self.assertEqual(Attempt(claimed, WORKER).run(), "cancelled")
        self.assertEqual(claimed.state, "cancelled")

        by_attrs = {
            (p.attributes["ipai.intent.cancel.path"], p.attributes["ipai.intent.cancel.instant"]): p
            for p in self.points("ipai.intent.cancel.latency")
        }
        self.assertEqual(set(by_attrs), {("api", True), ("odoo_ui", True), ("agent", False)})
        self.assertEqual(by_attrs[("api", True)].sum, 0)
        cooperative = by_attrs[("agent", False)]
        self.assertEqual(cooperative.count, 1)
        # wall-clock seconds with microseconds, not the second-truncated Datetime.now()
        self.assertGreater(cooperative.sum, 0)
        self.assertLess(cooperative.sum, 600)
        self.assertNotEqual(cooperative.sum, round(cooperative.sum))
        # seconds buckets, not the SDK's millisecond defaults
        self.assertEqual(tuple(cooperative.explicit_bounds), telemetry.CANCEL_LATENCY_BUCKETS)
        for point in by_attrs.values():
            self.assertEqual(point.attributes["ipai.intent.type"], "odoo.healthcheck")
            self.assertNotIn("source", point.attributes)

    def test_names_and_bounded_attributes(self):
        self.submit("odoo.healthcheck")
        self.submit("test.retryable", max_attempts=2)
        self.submit("test.retryable", max_attempts=1)
        self.run_worker()
        self.run_worker()
        names = {
            m.name
            for rm in self.reader.get_metrics_data().resource_metrics
            for sm in rm.scope_metrics
            for m in sm.metrics
        }
        for name in ("ipai.intents", "ipai.intent.attempt.duration", "ipai.intent.retries", "ipai.intent.dead_letters"):
            self.assertIn(name, names)
        self.assertFalse({n for n in names if n.startswith("pulser.")})
        for name in ("ipai.intents", "ipai.intent.retries", "ipai.intent.dead_letters", "ipai.intent.attempt.duration"):
            for point in self.points(name):
                self.assertFalse(set(point.attributes) & {"ipai.intent.id", "ipai.correlation_id", "ipai.failure.code"})
        dead = self.points("ipai.intent.dead_letters")
        self.assertEqual([p.attributes["error.type"] for p in dead], ["INTENT.TIMEOUT"])
        outcomes = {p.attributes["ipai.intent.outcome"]: p.value for p in self.points("ipai.intents")}
        self.assertEqual(outcomes.get("succeeded"), 1)
        duration = self.points("ipai.intent.attempt.duration")[0]
        self.assertEqual(tuple(duration.explicit_bounds), telemetry.ATTEMPT_DURATION_BUCKETS)

    def test_queue_depth_reads_this_database(self):
        self.submit()
        self.submit()
        claim(self.Intent, 1, WORKER)
        # the test transaction is not committed: read it on the test cursor, ORM writes flushed
        # (in production the reader has its own cursor and sees committed rows)
        self.env.flush_all()
        telemetry.watch_queue(self.env.cr.dbname, lambda: telemetry.queue_depth(self.env.cr))
        depth = {p.attributes["ipai.intent.state"]: p.value for p in self.points("ipai.intent.queue.depth")}
        before = self.Intent.search_count([("state", "=", "queued")])
        self.assertEqual(depth["queued"], before)
        self.assertGreaterEqual(depth["assigned"], 1)
        self.assertEqual(depth["running"], 0)

    def test_queue_depth_reader_of_the_worker(self):
        """The reader the worker registers opens its own cursor on the registry: it sees the
        committed queue (not this test's uncommitted intents) and never writes."""
        self.env.flush_all()
        with self.registry.cursor() as cr:
            committed = dict.fromkeys(telemetry.QUEUE_STATES, 0)
            cr.execute("SELECT state, count(*) FROM ipai_pulser_intent GROUP BY state")
            committed.update({state: n for state, n in cr.fetchall() if state in committed})
        self.submit()
        rows = telemetry._odoo_queue_reader(self.env.cr.dbname)()
        got = dict.fromkeys(telemetry.QUEUE_STATES, 0)
        for state, _type, number in rows:
            got[state] += number
        self.assertEqual(got, committed)


@tagged("post_install", "-at_install")
class TestAuditExport(PulserCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.receiver = _Receiver()
        cls.addClassCleanup(cls.receiver.close)
        cls.addClassCleanup(otel.shutdown)

    def test_audit_events_leave_at_info_with_the_intent_id(self):
        self.assertTrue(
            otel.setup_from_env(
                {
                    "OTEL_EXPORTER_OTLP_ENDPOINT": self.receiver.url,
                    "OTEL_SERVICE_NAME": "odoo-test",
                    "OTEL_BSP_SCHEDULE_DELAY": "600000",
                    "OTEL_BLRP_SCHEDULE_DELAY": "600000",
                },
                force=True,
            )
        )
        self.addCleanup(otel.shutdown)
        ran = self.submit()
        cancelled = self.submit()
        self.run_worker(limit=1)
        cancelled._request_cancel(source="api:k1")
        logging.getLogger("odoo.addons.ipai_pulser_connector").info("an INFO record that stays home")
        otel.shutdown()

        records = self.receiver.log_records()
        self.assertNotIn("an INFO record that stays home", [r.body.string_value for r in records])
        audit = [r for r in records if r.event_name in ("run.state", "run.cancel")]
        self.assertTrue(audit)
        for record in audit:
            attributes = _attrs(record.attributes)
            self.assertEqual(record.severity_number, 9)  # INFO
            self.assertIn(attributes["ipai.intent.id"], (ran.id, cancelled.id))
        states = [(_attrs(r.attributes)["ipai.intent.id"], _attrs(r.attributes).get("ipai.state")) for r in audit]
        self.assertIn((ran.id, "start"), states)
        self.assertIn((ran.id, "complete"), states)
        self.assertIn((cancelled.id, "cancelled"), states)
        (cancel,) = [_attrs(r.attributes) for r in audit if r.event_name == "run.cancel"]
        self.assertEqual(cancel["ipai.intent.id"], cancelled.id)
        self.assertEqual((cancel["ipai.cancel_path"], cancel["ipai.instant"]), ("api", True))
        self.assertIsNone(STATE.log_handler)

    def test_audit_without_intent_id_is_refused(self):
        with self.assertRaises(ValueError):
            telemetry.audit("run.state", "start", intent_id=None, state="start")
