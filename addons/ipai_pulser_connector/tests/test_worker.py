from datetime import timedelta

import jsonschema
from odoo import fields
from odoo.tests import tagged

from ..services.contract import RESULT_SCHEMA
from ..worker import Attempt, claim, reap_expired_leases
from .common import PulserCase


@tagged("post_install", "-at_install")
class TestWorker(PulserCase):
    def test_success_writes_result_contract_and_timeline(self):
        intent = self.submit("odoo.healthcheck", {"echo": "x"}, work_item_ref="WI-1")
        stats = self.run_worker()
        self.assertEqual(stats["succeeded"], 1)
        self.assertEqual(intent.state, "succeeded")
        self.assertEqual(intent.attempts, 1)
        self.assertFalse(intent.lease_owner)
        result = intent.result
        jsonschema.validate(result, RESULT_SCHEMA)
        self.assertTrue(result["ok"])
        self.assertEqual(result["data"]["echo"], "x")
        self.assertEqual(result["trace"]["work_item_ref"], "WI-1")
        self.assertEqual(result["trace"]["correlation_id"], intent.correlation_id)
        self.assertEqual(result["evidence"]["exit_code"], 0)
        self.assertEqual(
            intent.event_ids.sorted("id").mapped("event_type"),
            ["created", "claimed", "attempt_started", "succeeded"],
        )
        self.assertEqual(intent.event_ids.sorted("id")[1].worker, "odoo:test:host:1")

    def test_crash_is_failed_with_handler_crashed(self):
        intent = self.submit("test.crash")
        stats = self.run_worker()
        self.assertEqual(stats["failed"], 1)
        self.assertEqual(intent.state, "failed")
        self.assertEqual(intent.failure_code, "INTENT.HANDLER_CRASHED")
        self.assertFalse(intent.result["ok"])
        jsonschema.validate(intent.result, RESULT_SCHEMA)
        self.assertEqual(intent.result["error"]["code"], "INTENT.HANDLER_CRASHED")
        self.assertFalse(intent.result["error"]["retryable"])
        self.assertIn("RuntimeError", intent.failure_envelope["evidence"]["stderr_tail"])
        self.assertEqual(intent.failure_mode_id.code, "INTENT.HANDLER_CRASHED")

    def test_invalid_args_at_run_time(self):
        # created behind the API's back: the worker validates again
        intent = self.Intent.create({"intent_type": "test.echo", "args": {"value": 1}})
        self.run_worker()
        self.assertEqual((intent.state, intent.failure_code), ("failed", "INTENT.ARGS_INVALID"))
        self.assertEqual(intent.result["error"]["details"]["errors"][0]["path"], "$.value")

    def test_unknown_type_at_run_time(self):
        intent = self.Intent.create({"intent_type": "nobody.handles.this", "args": {}})
        self.run_worker()
        self.assertEqual((intent.state, intent.failure_code), ("failed", "INTENT.TYPE_UNKNOWN"))

    def test_retry_schedule_then_dead_letter(self):
        intent = self.submit("test.retryable", max_attempts=3)
        now = fields.Datetime.now()
        ceilings = {1: 2.0, 2: 4.0}
        for attempt in (1, 2):
            stats = self.run_worker(now=now)
            self.assertEqual(stats["retried"], 1, attempt)
            self.assertEqual(intent.state, "queued")
            self.assertEqual(intent.attempts, attempt)
            self.assertEqual(intent.failure_code, "INTENT.TIMEOUT")
            delay = (intent.next_attempt_at - fields.Datetime.now()).total_seconds()
            self.assertLessEqual(delay, ceilings[attempt] + 1)
            # not claimable before its time
            self.assertEqual(self.run_worker(now=intent.next_attempt_at - timedelta(seconds=1))["claimed"], 0)
            now = intent.next_attempt_at + timedelta(seconds=1)
        stats = self.run_worker(now=now)
        self.assertEqual(stats["dead"], 1)
        self.assertEqual(intent.state, "dead")
        self.assertEqual(intent.attempts, 3)
        self.assertTrue(intent.finished_at)
        failed = intent.event_ids.filtered(lambda e: e.event_type == "attempt_failed")
        self.assertEqual(failed.mapped("attempt"), [1, 2, 3])
        self.assertEqual(failed.mapped("to_state"), ["queued", "queued", "dead"])
        # requeue from dead grants a fresh budget
        intent.action_requeue()
        self.assertEqual((intent.state, intent.max_attempts), ("queued", 6))
        self.run_worker(now=now)
        self.assertEqual((intent.state, intent.attempts), ("queued", 4))

    def test_non_retryable_never_retries(self):
        intent = self.submit("test.crash", max_attempts=5)
        self.run_worker()
        self.assertEqual((intent.state, intent.attempts), ("failed", 1))

    def test_cooperative_timeout(self):
        intent = self.submit("test.slow", {"sleep_s": 0.1}, max_attempts=1)
        self.run_worker()
        self.assertEqual((intent.state, intent.failure_code), ("dead", "INTENT.TIMEOUT"))

    def test_timeout_arg_extends_budget(self):
        intent = self.submit("test.slow", {"sleep_s": 0.05, "timeout_s": 5})
        self.run_worker()
        self.assertEqual(intent.state, "succeeded")

    def test_statement_timeout_becomes_intent_timeout(self):
        intent = self.submit("test.sql_slow", max_attempts=1)
        self.run_worker()
        self.assertEqual((intent.state, intent.failure_code), ("dead", "INTENT.TIMEOUT"))
        # the budget does not leak to later statements of the transaction
        self.env.cr.execute("SELECT pg_sleep(0.3)")
        self.env.cr.execute("SHOW statement_timeout")
        self.assertEqual(self.env.cr.fetchone()[0], "0")

    def test_cooperative_cancel_inside_handler(self):
        intent = self.submit("test.cancel_self")
        self.run_worker()
        # cancellation acknowledged by the worker inside the handler
        self.assertEqual(intent.state, "cancelled")
        self.assertTrue(intent.cancel_acknowledged_at)
        self.assertEqual(intent.event_ids.sorted("id")[-1].event_type, "cancelled")

    def test_cancel_requested_before_run(self):
        intent = self.submit()
        claim(self.Intent, 10, "odoo:test:host:1")
        self.assertEqual(intent.state, "assigned")
        self.assertEqual(intent._request_cancel(source="test"), "cancel_requested")
        self.assertEqual(intent.state, "assigned")
        Attempt(intent, "odoo:test:host:1").run()
        self.assertEqual(intent.state, "cancelled")
        self.assertEqual(intent.attempts, 0)

    def test_expired_lease_requeues(self):
        running = self.submit("test.crash")
        assigned = self.submit("odoo.healthcheck")
        claim(self.Intent, 10, "odoo:test:dead-host:9")
        running._transition(
            "running",
            vals={
                "attempts": 1,
                "started_at": fields.Datetime.now(),
                "lease_expires_at": fields.Datetime.now() - timedelta(seconds=5),
            },
        )
        assigned.write({"lease_expires_at": fields.Datetime.now() - timedelta(seconds=5)})
        reaped = reap_expired_leases(self.Intent)
        self.assertEqual(reaped, 2)
        self.assertEqual((assigned.state, assigned.attempts), ("queued", 0))
        self.assertEqual((running.state, running.failure_code), ("queued", "INTENT.LEASE_EXPIRED"))
        self.assertTrue(running.next_attempt_at)
        self.assertEqual(running.failure_envelope["context"]["attempt"], 1)

    def test_expired_lease_on_last_attempt_is_dead(self):
        intent = self.submit("odoo.healthcheck", max_attempts=1)
        claim(self.Intent, 10, "odoo:test:dead-host:9")
        intent._transition(
            "running",
            vals={"attempts": 1, "lease_expires_at": fields.Datetime.now() - timedelta(seconds=1)},
        )
        reap_expired_leases(self.Intent)
        self.assertEqual((intent.state, intent.failure_code), ("dead", "INTENT.LEASE_EXPIRED"))

    def test_priority_order(self):
        low = self.submit(priority=0)
        high = self.submit(priority=10)
        self.run_worker(limit=1)
        self.assertEqual((high.state, low.state), ("succeeded", "queued"))

    def test_idempotent_submit(self):
        first = self.submit(idempotency_key="k-1", source="client-a")
        again = self.submit(idempotency_key="k-1", source="client-a")
        other_source = self.submit(idempotency_key="k-1", source="client-b")
        self.assertEqual(first, again)
        self.assertNotEqual(first, other_source)
