"""The escalation triggers of the agent incident runbook, on real ops rows and real Odoo records.

The rows are committed on a connection of their own, as the recorder and the bridge write them,
and the cron runs in a transaction of its own that sees them (the test's transaction has an
older snapshot), so the escalation bundle, read on yet another connection, finds the run.
That transaction is rolled back at the end; the committed ops rows are deleted.
"""

import json
import uuid
from datetime import UTC, datetime, timedelta

from odoo import SUPERUSER_ID, api
from odoo.exceptions import AccessError
from odoo.tests import new_test_user, tagged

from ipai_ops import store as ops_store

from ..models.ipai_agent_error_escalation import PARAM_CHECKED
from .common import CommittedOpsMixin, ReliabilityCase, read_bundle

OUTPUT = "AGENT.OUTPUT_SCHEMA_INVALID"
VERIFY = "AGENT.VERIFICATION_FAILED"
CONTRACT = "AGENT.RUN_METADATA_INVALID"


@tagged("post_install", "-at_install")
class TestEscalationTriggers(CommittedOpsMixin, ReliabilityCase):
    # ------------------------------------------------------------------ committed rows

    def _occurrence(self, code, *, fingerprint=None, provider=None, minutes_ago=1, message=None):
        conn = self.ops_connection()
        fingerprint = fingerprint or f"fp1:esc{uuid.uuid4().hex[:29]}"
        result = ops_store.upsert_error(
            conn,
            ops_store.ErrorOccurrence(
                source="agent",
                occurrence_id=uuid.uuid4().hex,
                fingerprint=fingerprint,
                code=code,
                severity="medium",
                message=message or f"{code} in a test",
                error_type="run.failed",
                service="codex",
                occurred_at=datetime.now(UTC) - timedelta(minutes=minutes_ago),
                sample={"error": {"code": code, "fingerprint": fingerprint}},
                gen_ai_provider=provider,
            ),
        )
        self.addCleanup(self.delete_committed, "ops.agent_errors", "id", result.error_id)
        return result.error_id, fingerprint

    def _run(self, *, error_id=None, codes=(), status="failed", task_ref="task-1", minutes_ago=1, verification=None):
        run_id = f"run-test-{uuid.uuid4().hex[:12]}"
        iterations = [
            {"attempt": n, "code": code, "error_id": error_id if code else None} for n, code in enumerate(codes, 1)
        ]
        metadata = {"record_version": 2, "iterations": iterations, "verification": verification}
        conn = self.ops_connection()
        with conn.cursor() as cur:
            cur.execute(
                "INSERT INTO ops.agent_runs (run_id, source, agent, task_ref, status, started_at, finished_at,"
                " error_id, metadata) VALUES (%s, 'cli', 'codex', %s, %s, now() - make_interval(mins => %s),"
                " now(), %s, %s::jsonb)",
                (run_id, task_ref, status, minutes_ago, error_id, json.dumps(metadata)),
            )
        conn.commit()
        self.addCleanup(self.delete_committed, "ops.agent_runs", "run_id", run_id)
        return run_id

    def _cron_env(self):
        """A transaction of its own (sees what was committed), rolled back after the test."""
        cr = self.registry.cursor()

        def close():
            cr.rollback()
            cr.close()

        self.addCleanup(close)
        env = api.Environment(cr, SUPERUSER_ID, {})
        env["ir.config_parameter"].set_param(PARAM_CHECKED, (datetime.now(UTC) - timedelta(hours=1)).isoformat())
        # the test's own users live in its transaction, which this one does not see
        groups = "base.group_user,ipai_reliability.group_ipai_reliability_user"
        self.owner = new_test_user(env, login=f"esc-owner-{uuid.uuid4().hex[:6]}", groups=groups)
        self.member = new_test_user(env, login=f"esc-member-{uuid.uuid4().hex[:6]}", groups=groups)
        Team = env["ipai.reliability.team"].with_context(active_test=False)
        team = Team.search([("owner", "=", "agents")]) or Team.create({"name": "Agents", "owner": "agents"})
        team.write({"active": True, "user_id": self.owner.id, "member_ids": [(6, 0, [self.member.id])]})
        return env, team

    # ------------------------------------------------------------------ the triggers

    def test_every_retry_failing_structured_output_escalates_with_the_runs_bundle(self):
        error_id, fingerprint = self._occurrence(OUTPUT)
        twice = self._run(error_id=error_id, codes=(OUTPUT, OUTPUT))
        once_id, __ = self._occurrence(OUTPUT)
        self._run(error_id=once_id, codes=(OUTPUT, None), status="succeeded")  # the retry fixed it
        env, team = self._cron_env()
        Escalation = env["ipai.agent.error.escalation"]
        self.assertGreaterEqual(Escalation._cron_escalate(), 1)

        (escalation,) = Escalation.search([("error_id", "=", error_id)])
        self.assertEqual((escalation.trigger, escalation.run_ref, escalation.code), ("output_retries", twice, OUTPUT))
        self.assertIn("on 2 attempts", escalation.reason)
        self.assertFalse(Escalation.search([("error_id", "=", once_id)]), "a retry that worked is not escalated")

        # marked: the console's Escalated filter and field
        error = env["ipai.agent.error"].browse(error_id)
        self.assertTrue(error.escalated)
        self.assertIn(error_id, env["ipai.agent.error"].search([("escalated", "=", True)]).ids)
        self.assertNotIn(once_id, env["ipai.agent.error"].search([("escalated", "=", True)]).ids)

        # the owner: the team's default assignee, notified by a to-do and, with the members, following
        self.assertEqual((escalation.user_id, escalation.team_id), (self.owner, team))
        self.assertLessEqual((self.owner | self.member).partner_id, error.message_partner_ids)
        todo = error.activity_ids.filtered(lambda a: a.summary == f"Escalated: {OUTPUT}")
        self.assertEqual(todo.user_id, self.owner)
        (message,) = error.message_ids.filtered(
            lambda m: m.subtype_id == env.ref("ipai_reliability.mt_agent_error_escalated")
        )
        self.assertIn("Escalated (Structured output failed on every retry)", message.body)
        self.assertIn(self.owner.partner_id, message.notified_partner_ids | message.partner_ids)

        # the run's escalation bundle, on the error and on the message
        bundle = escalation.attachment_id
        self.assertTrue(bundle, escalation.bundle_note)
        self.assertEqual((bundle.res_model, bundle.res_id), ("ipai.agent.error", error_id))
        self.assertEqual(message.attachment_ids, bundle)
        __, members = read_bundle(bundle.raw)
        manifest = json.loads(members["manifest.json"])
        self.assertEqual((manifest["kind"], manifest["ids"]["run_id"]), ("run", twice))
        self.assertEqual(manifest["ids"]["fingerprint"], fingerprint)

        # once: the next run escalates nothing again
        env["ir.config_parameter"].set_param(PARAM_CHECKED, (datetime.now(UTC) - timedelta(hours=1)).isoformat())
        Escalation._cron_escalate()
        self.assertEqual(Escalation.search_count([("error_id", "=", error_id)]), 1)
        self.assertEqual(len(error.activity_ids.filtered(lambda a: a.summary == f"Escalated: {OUTPUT}")), 1)

    def test_structured_output_failing_across_providers_escalates(self):
        openai_id, fingerprint = self._occurrence(OUTPUT, provider="openai")
        self._occurrence(OUTPUT, fingerprint=fingerprint, provider="openai")
        env, __ = self._cron_env()
        Escalation = env["ipai.agent.error.escalation"]
        Escalation._cron_escalate()
        self.assertFalse(Escalation.search([("error_id", "=", openai_id)]), "one provider is not a trigger")

        anthropic_id, __ = self._occurrence(OUTPUT, provider="anthropic")
        env.cr.rollback()  # ends the first transaction (and its team row): the next one sees the new occurrence
        env, __ = self._cron_env()
        Escalation = env["ipai.agent.error.escalation"]
        Escalation._cron_escalate()
        for error_id in (openai_id, anthropic_id):
            (escalation,) = Escalation.search([("error_id", "=", error_id)])
            self.assertEqual(escalation.trigger, "output_providers")
            self.assertIn("anthropic, openai", escalation.reason)
            # no run behind an OTLP occurrence: the error's own bundle
            manifest = json.loads(read_bundle(escalation.attachment_id.raw)[1]["manifest.json"])
            self.assertEqual((manifest["kind"], manifest["ref"]), ("error", str(error_id)))

    def test_a_validator_failing_after_a_known_good_baseline_escalates(self):
        passed = {"attempt": 1, "status": "passed", "total": 3, "passed": 3, "failed": 0}
        baseline = self._run(
            codes=(None,), status="succeeded", task_ref="fix-invoice", minutes_ago=30, verification=passed
        )
        error_id, __ = self._occurrence(VERIFY)
        failing = self._run(error_id=error_id, codes=(VERIFY,), task_ref="fix-invoice", minutes_ago=2)
        # the same failure on a task that never passed: no baseline, no escalation
        other_id, __ = self._occurrence(VERIFY)
        self._run(error_id=other_id, codes=(VERIFY,), task_ref="new-task", minutes_ago=2)
        env, __ = self._cron_env()
        Escalation = env["ipai.agent.error.escalation"]
        Escalation._cron_escalate()
        (escalation,) = Escalation.search([("error_id", "=", error_id)])
        self.assertEqual((escalation.trigger, escalation.run_ref), ("verification_regressed", failing))
        self.assertIn(baseline, escalation.reason)
        self.assertFalse(Escalation.search([("error_id", "=", other_id)]))

    def test_a_core_contract_that_does_not_parse_escalates_at_once(self):
        error_id, __ = self._occurrence(CONTRACT, message="run events file has 3 line(s) and none is a valid event")
        run_id = self._run(error_id=error_id, codes=(CONTRACT,))
        env, __ = self._cron_env()
        Escalation = env["ipai.agent.error.escalation"]
        Escalation._cron_escalate()
        (escalation,) = Escalation.search([("error_id", "=", error_id)])
        self.assertEqual((escalation.trigger, escalation.run_ref), ("contract_parse", run_id))
        self.assertTrue(escalation.attachment_id)

    def test_no_bundle_is_said_and_the_escalation_stands(self):
        """Rows the bundle cannot read (here: never committed) still escalate, saying why."""
        result = self.upsert(code=CONTRACT, source="agent", message="run.json record_version 9 is not supported")
        self.env["ir.config_parameter"].set_param(PARAM_CHECKED, (datetime.now(UTC) - timedelta(hours=1)).isoformat())
        Escalation = self.env["ipai.agent.error.escalation"]
        Escalation._cron_escalate()
        (escalation,) = Escalation.search([("error_id", "=", result["error_id"])])
        self.assertFalse(escalation.attachment_id)
        self.assertIn("could not be built", escalation.bundle_note)
        error = self.error(result)
        self.assertTrue(error.escalated)
        self.assertIn("No bundle:", error.message_ids[0].body)

    def test_ignored_errors_are_not_escalated_and_only_readers_see_escalations(self):
        ignored = self.upsert(code=CONTRACT, source="agent")
        self.error(ignored).action_ignore()
        kept = self.upsert(code=CONTRACT, source="agent")
        self.env["ir.config_parameter"].set_param(PARAM_CHECKED, (datetime.now(UTC) - timedelta(hours=1)).isoformat())
        Escalation = self.env["ipai.agent.error.escalation"]
        Escalation._cron_escalate()
        self.assertFalse(Escalation.search([("error_id", "=", ignored["error_id"])]))
        escalation = Escalation.search([("error_id", "=", kept["error_id"])])
        self.assertEqual(len(escalation), 1)
        self.assertEqual(escalation.with_user(self.rel_user).read(["trigger"])[0]["trigger"], "contract_parse")
        with self.assertRaises(AccessError):
            escalation.with_user(self.plain_user).read(["trigger"])
        with self.assertRaises(AccessError):
            escalation.with_user(self.rel_manager).write({"reason": "edited"})
