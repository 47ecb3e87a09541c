import threading
import time
from datetime import timedelta

from odoo import SUPERUSER_ID, api, fields
from odoo.tests import tagged

from ..services.exceptions import IntentTimeout
from ..worker import Attempt, cancel, claim, reap_expired_leases
from . import common
from .common import PulserCase

SOURCE = "cancel-race-test"
WORKER = "odoo:test:cancel-worker"


@tagged("post_install", "-at_install")
class TestCancelAcrossTransactions(PulserCase):
    """A worker and a canceller on two real cursors (two PostgreSQL sessions), each committing
    as the cron and the API do: the request must not wait for the attempt, and the attempt must
    see a request committed after its transaction began."""

    def setUp(self):
        super().setUp()
        self.addCleanup(self._cleanup)
        common.HANDLER_STARTED.clear()

    def _cleanup(self):
        with self.registry.cursor() as cr:
            # events go with their intent (ondelete cascade)
            cr.execute("DELETE FROM ipai_pulser_intent WHERE source = %s", (SOURCE,))

    def _worker(self, out):
        try:
            with self.registry.cursor() as cr:
                started = time.monotonic()
                stats = api.Environment(cr, SUPERUSER_ID, {})["ipai.pulser.intent"]._run_worker(
                    limit=1, worker_id=WORKER, commit=True
                )
                out["worker"] = (stats, time.monotonic() - started)
        except Exception as exc:
            out["worker_error"] = repr(exc)

    def _canceller(self, intent_id, out):
        try:
            if not common.HANDLER_STARTED.wait(timeout=20):
                out["cancel_error"] = "the handler never started"
                return
            started = time.monotonic()
            with self.registry.cursor() as cr:  # commits on exit, as a request does
                intent = api.Environment(cr, SUPERUSER_ID, {})["ipai.pulser.intent"].browse(intent_id)
                outcome = intent._request_cancel(source="test")
            out["cancel"] = (outcome, time.monotonic() - started)
        except Exception as exc:
            out["cancel_error"] = repr(exc)

    def test_cancel_while_running_is_answered_at_once_and_acknowledged(self):
        with self.registry.cursor() as cr:
            intent, _created = api.Environment(cr, SUPERUSER_ID, {})["ipai.pulser.intent"]._submit(
                intent_type="test.wait_for_cancel", args={"sleep_s": 5}, source=SOURCE, priority=10**6
            )
            intent_id = intent.id
        out = {}
        threads = [
            threading.Thread(target=self._worker, args=(out,)),
            threading.Thread(target=self._canceller, args=(intent_id, out)),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        self.assertFalse(any(thread.is_alive() for thread in threads), "threads finished")
        self.assertNotIn("cancel_error", out)
        self.assertNotIn("worker_error", out)
        outcome, cancel_seconds = out["cancel"]
        self.assertEqual(outcome, "cancel_requested")
        self.assertLess(cancel_seconds, 1.5, "the request does not wait for the 5 s attempt")
        stats, worker_seconds = out["worker"]
        self.assertEqual((stats["claimed"], stats["cancelled"], stats["succeeded"]), (1, 1, 0))
        self.assertLess(worker_seconds, 4.5, "the handler stopped at its next ctx.check()")
        with self.registry.cursor() as cr:
            cr.execute(
                "SELECT state, cancel_requested_at, cancel_acknowledged_at, cancel_source, attempts"
                "  FROM ipai_pulser_intent WHERE id = %s",
                (intent_id,),
            )
            state, requested, acknowledged, source, attempts = cr.fetchone()
            cr.execute(
                "SELECT event_type, data->>'source' FROM ipai_pulser_intent_event WHERE intent_id = %s ORDER BY id",
                (intent_id,),
            )
            events = cr.fetchall()
        self.assertEqual((state, source, attempts), ("cancelled", "test", 1))
        self.assertTrue(requested and acknowledged)
        self.assertLessEqual(requested, acknowledged)
        types = [event_type for event_type, _source in events]
        self.assertEqual(types, ["created", "claimed", "attempt_started", "cancel_requested", "cancelled"])
        self.assertIn(("cancel_requested", "test"), events)


@tagged("post_install", "-at_install")
class TestCancelRequests(PulserCase):
    """Requests made in the worker's own transaction (the ``TransactionCase`` way)."""

    def _running(self, intent, **vals):
        claim(self.Intent, 10, WORKER)
        intent._transition(
            "running",
            vals={"attempts": 1, "started_at": fields.Datetime.now(), **vals},
        )

    def events(self, intent):
        return intent.event_ids.sorted("id").mapped("event_type")

    def test_request_is_an_event_not_a_row_write(self):
        intent = self.submit()
        self._running(intent)
        self.assertEqual(intent._request_cancel(source="api:k1"), "cancel_requested")
        self.assertEqual(intent._request_cancel(source="api:k2"), "cancel_requested")
        self.assertFalse(intent.cancel_requested_at, "the intent row is not written")
        requests = intent.event_ids.filtered(lambda e: e.event_type == "cancel_requested")
        self.assertEqual(len(requests), 1, "a pending request is not duplicated")
        self.assertEqual(requests.data, {"source": "api:k1"})
        self.assertTrue(cancel.cancel_requested_in_db(intent))
        self.assertTrue(intent._api_dict()["cancel_requested_at"])

    def test_request_inside_the_handler_is_acknowledged(self):
        intent = self.submit("test.cancel_self")
        self.assertEqual(self.run_worker()["cancelled"], 1)
        self.assertEqual(intent.state, "cancelled")
        self.assertEqual(intent.cancel_source, "test")
        self.assertTrue(intent.cancel_requested_at)
        self.assertLessEqual(intent.cancel_requested_at, intent.cancel_acknowledged_at)

    def test_requeued_intent_ignores_an_old_request(self):
        intent = self.submit()
        self._running(intent)
        intent._request_cancel(source="test")
        intent._transition(
            "failed", vals={"lease_owner": False, "lease_expires_at": False, "finished_at": fields.Datetime.now()}
        )
        intent.action_requeue()
        stats = self.run_worker()
        self.assertEqual((stats["succeeded"], stats["cancelled"]), (1, 0))
        self.assertEqual(intent.state, "succeeded")
        self.assertNotIn("cancel_ignored", self.events(intent))
        self.assertEqual(self.events(intent)[-4:], ["requeued", "claimed", "attempt_started", "succeeded"])

    def test_request_then_success_logs_cancel_ignored(self):
        intent = self.submit()
        self._running(intent)
        intent._request_cancel(source="test")
        Attempt(intent, "odoo:test:host:1", number=1).succeed({}, duration_ms=1.0)
        self.assertEqual(intent.state, "succeeded")
        self.assertEqual(self.events(intent)[-1], "cancel_ignored")

    def test_request_survives_a_retry_and_cancels_the_next_claim(self):
        intent = self.submit("test.retryable", max_attempts=3)
        self._running(intent)
        intent._request_cancel(source="test")
        outcome = Attempt(intent, "odoo:test:host:1", number=1).fail(IntentTimeout("slow"), duration_ms=1.0)
        self.assertEqual((outcome, intent.state), ("retried", "queued"))
        self.assertEqual(intent.cancel_source, "test")
        self.assertTrue(intent.cancel_requested_at, "the request moves onto the row with the intent")
        stats = self.run_worker(now=fields.Datetime.now() + timedelta(hours=1))
        self.assertEqual(stats["cancelled"], 1)
        self.assertEqual((intent.state, intent.attempts), ("cancelled", 1))

    def test_reaper_acknowledges_a_request_the_handler_never_saw(self):
        intent = self.submit(max_attempts=3)
        self._running(intent, lease_expires_at=fields.Datetime.now() - timedelta(seconds=5))
        intent._request_cancel(source="test")
        self.assertEqual(reap_expired_leases(self.Intent), 1)
        self.assertEqual((intent.state, intent.cancel_source), ("cancelled", "test"))
        self.assertTrue(intent.cancel_acknowledged_at)
        self.assertFalse(intent.lease_owner)
