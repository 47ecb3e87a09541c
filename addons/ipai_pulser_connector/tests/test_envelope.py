from odoo.tests import tagged

from ipai_ops.envelope import validate_envelope

from ..services.contract import occurrence_id
from .common import PulserCase


class _Rollback(Exception):
    pass


@tagged("post_install", "-at_install")
class TestEnvelopeAndOpsRow(PulserCase):
    def test_envelope_validates_and_carries_context(self):
        intent = self.submit(
            "test.crash",
            {"message": "db password=hunter2 at postgresql://u:pw@h/db"},
            work_item_ref="WI-9",
            correlation_id="corr-1",
        )
        self.run_worker()
        env = intent.failure_envelope
        validate_envelope(env)
        self.assertEqual(env["error"]["code"], "INTENT.HANDLER_CRASHED")
        self.assertEqual(env["context"]["source"], "odoo")
        self.assertEqual(env["context"]["intent_id"], intent.id)
        self.assertEqual(env["context"]["attempt"], 1)
        self.assertEqual(env["context"]["correlation_id"], "corr-1")
        self.assertEqual(env["context"]["occurrence_id"], occurrence_id(self.env.cr.dbname, intent.id, 1))
        self.assertEqual(env["error"]["runbook"], "docs/runbooks/failures/INTENT.HANDLER_CRASHED.md")
        # redacted everywhere: message, traceback tail, result
        self.assertNotIn("hunter2", str(env))
        self.assertNotIn("hunter2", str(intent.result))
        self.assertNotIn(":pw@", str(env))
        self.assertEqual(intent.result["error"]["message"], env["error"]["message"])
        self.assertEqual(intent.result["trace"]["work_item_ref"], "WI-9")
        for key in (
            "exit_code",
            "duration_ms",
            "stdout_tail",
            "stderr_tail",
            "tool_calls",
            "tokens",
            "model",
            "artifacts",
            "links",
        ):
            self.assertIn(key, env["evidence"])

    def test_evidence_is_capped(self):
        intent = self.submit("test.crash", {"message": "x" * 50000})
        self.run_worker()
        validate_envelope(intent.failure_envelope)
        self.assertLess(len(intent.failure_envelope["error"]["message"]), 4096)
        self.assertIn("message", intent.failure_envelope["evidence"]["truncated"])

    def test_ops_row_counts_attempts_not_replays(self):
        intent = self.submit("test.retryable", max_attempts=3)
        self.run_worker()
        fingerprint = intent.failure_envelope["error"]["fingerprint"]
        row = self.ops_row(fingerprint)
        self.assertTrue(row, "the failure must be in ops.agent_errors")
        self.assertEqual((row["code"], row["source"]), ("INTENT.TIMEOUT", "odoo"))
        self.assertEqual(intent.ops_error_id, row["id"])
        first = row["count"]
        # replay: the same occurrence delivered again changes nothing
        again = self.env["ipai.ops"].record_failure(
            intent.failure_envelope,
            occurrence_id=occurrence_id(self.env.cr.dbname, intent.id, 1),
            source="odoo",
        )
        self.assertFalse(again["is_new"])
        self.assertEqual(again["count"], first)
        # repeat: a new attempt is a new occurrence
        intent.write({"next_attempt_at": False})
        self.run_worker()
        self.assertEqual(intent.attempts, 2)
        self.assertEqual(self.ops_row(fingerprint)["count"], first + 1)

    def test_ops_row_survives_rollback(self):
        intent = self.submit("test.crash", {"message": "rolled back business transaction"})
        before = None
        with self.assertRaises(_Rollback), self.env.cr.savepoint():
            self.run_worker()
            fingerprint = intent.failure_envelope["error"]["fingerprint"]
            before = self.ops_row(fingerprint)["count"]
            raise _Rollback
        self.env.invalidate_all()
        self.assertEqual(intent.state, "queued", "the intent's own writes were rolled back")
        row = self.ops_row(fingerprint)
        self.assertEqual(row["count"], before, "the ops row was committed on its own cursor")
