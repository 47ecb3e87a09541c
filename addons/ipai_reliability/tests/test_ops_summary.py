"""The operations summary, tokens and cost per provider and model, the Agent Run form's
verification and session, and the weekly summary mail through a real SMTP server.

Runs are real ``ops.agent_runs`` rows written on the test's cursor (rolled back after each
test); the table is emptied first in the same transaction, so every figure is exact.
"""

import json
import uuid
from datetime import UTC, datetime, timedelta
from email.header import decode_header, make_header
from unittest.mock import patch

from lxml import etree
from odoo.exceptions import AccessError
from odoo.tests import tagged

from ipai_ops import store as ops_store

from .common import ReliabilityCase
from .test_alerts import loopback_smtp


def _run(cr, run_id, *, kind, status="succeeded", seconds=10.0, hours_ago=1, metadata=None):
    started = datetime.now(UTC) - timedelta(hours=hours_ago)
    meta = {"kind": kind, **(metadata or {})}
    cr.execute(
        "INSERT INTO ops.agent_runs (run_id, source, agent, status, started_at, finished_at, duration_ms, metadata)"
        " VALUES (%s, 'agent', 'coder', %s, %s, %s, %s, %s) RETURNING id",
        [run_id, status, started, started + timedelta(seconds=seconds), int(seconds * 1000), json.dumps(meta)],
    )
    return cr.fetchone()[0]


@tagged("post_install", "-at_install")
class TestOpsSummary(ReliabilityCase):
    def setUp(self):
        super().setUp()
        cr = self.env.cr
        cr.execute("DELETE FROM ops.agent_runs")
        self.env["ipai.model.price"].search([]).unlink()
        Price = self.env["ipai.model.price"]
        Price.create({"provider": "openai", "model": "gpt-4.1", "input_price": 2.0, "output_price": 8.0})
        Price.create({"provider": "openai", "model": "gpt-4.1-mini", "input_price": 0.4, "output_price": 1.6})
        two_models = {
            "tokens_by_model": {
                "gpt-4.1-2025-04-14": {"input": 1_000_000, "output": 100_000, "total": 1_100_000},
                "claude-sonnet-4": {"input": 2000, "output": 100, "total": 2100},
            },
            "iterations": [{"attempt": 1}, {"attempt": 2}],
        }
        # tests: 10 s and 30 s (p90 30); build: 5, 7, 100 s (p90 100); one old run outside the window
        self.ids = {
            "t1": _run(cr, "sum-t1", kind="test", seconds=10, metadata=two_models),
            "t2": _run(
                cr,
                "sum-t2",
                kind="test",
                status="failed",
                seconds=30,
                metadata={
                    "code": "BUILD.TEST_FAILED",
                    "model": "gpt-4.1-mini",
                    "tokens": {"input": 1_000_000, "output": 0, "total": 1_000_000},
                    "artifacts": {"run_dir": "/srv/runs/sum-t2"},
                    "iterations": [{"attempt": 1}, {"attempt": 2}, {"attempt": 3}],
                },
            ),
            "b1": _run(cr, "sum-b1", kind="lint", seconds=5),
            "b2": _run(
                cr, "sum-b2", kind=None, seconds=7, metadata={"iterations": [{"attempt": 1, "kind": "typecheck"}]}
            ),
            "b3": _run(
                cr,
                "sum-b3",
                kind="agent",
                seconds=100,
                metadata={
                    "record_version": 2,
                    "session_id": "sess-4f1c",
                    "verification": {
                        "attempt": 1,
                        "status": "failed",
                        "total": 2,
                        "passed": 1,
                        "failed": 1,
                        "checks": [{"name": "pytest tests/x", "ok": False, "evidence": "3 failed"}],
                    },
                    "structured_output": {"attempt": 1, "present": True, "valid": False, "data": {"plan": []}},
                },
            ),
            "old": _run(cr, "sum-old", kind="test", seconds=999, hours_ago=24 * 20),
        }
        self.env.invalidate_all()

    # ------------------------------------------------------------------ usage: tokens and cost

    def test_tokens_and_cost_per_provider_and_model(self):
        rows = self.env["ipai.agent.usage"].search([("run_ref", "=like", "sum-%")])
        by_model = {r.model: r for r in rows}
        self.assertEqual(set(by_model), {"gpt-4.1-2025-04-14", "claude-sonnet-4", "gpt-4.1-mini", False})
        full = by_model["gpt-4.1-2025-04-14"]
        # the longest matching entry prices it: gpt-4.1, not gpt-4.1-mini
        self.assertEqual((full.provider, full.total_tokens, full.priced), ("openai", 1_100_000, True))
        self.assertAlmostEqual(full.cost, 2.0 + 0.8)
        self.assertAlmostEqual(by_model["gpt-4.1-mini"].cost, 0.4)
        claude = by_model["claude-sonnet-4"]
        self.assertEqual((claude.provider, claude.priced, claude.cost), ("unknown", False, 0.0))
        self.assertEqual(full.run_id.id, self.ids["t1"])
        self.assertEqual(claude.run_id.id, self.ids["t1"])
        # an underscore in an entry is a character, not LIKE's wildcard
        self.env["ipai.model.price"].create(
            {"provider": "acme", "model": "claude_", "input_price": 1, "output_price": 1}
        )
        self.env.invalidate_all()
        claude = self.env["ipai.agent.usage"].search([("model", "=", "claude-sonnet-4")])
        self.assertFalse(claude.priced)
        groups = self.env["ipai.agent.usage"].read_group(
            [("run_ref", "=like", "sum-%")], ["cost:sum", "total_tokens:sum"], ["provider"]
        )
        openai = next(g for g in groups if g["provider"] == "openai")
        self.assertAlmostEqual(openai["cost"], 3.2)
        self.assertEqual(openai["total_tokens"], 2_100_000)

    # ------------------------------------------------------------------ the summary

    def test_summary_figures(self):
        summary = self.env["ipai.ops.summary"].create({"period": "7"})
        self.assertEqual((summary.runs_total, summary.runs_failed, summary.runs_retries), (5, 1, 3))
        self.assertEqual((summary.test_runs, summary.build_runs), (2, 3))
        self.assertAlmostEqual(summary.test_latency_avg, 20.0)
        self.assertAlmostEqual(summary.test_latency_p90, 30.0)
        self.assertAlmostEqual(summary.build_latency_avg, 112 / 3, places=1)  # shown with one decimal
        self.assertAlmostEqual(summary.build_latency_p90, 100.0)
        self.assertEqual(summary.tokens_total, 1_100_000 + 2100 + 1_000_000)
        self.assertAlmostEqual(summary.cost_total, 3.2)
        self.assertEqual(summary.unpriced_models, 2)  # claude, and the runs with no model at all
        html = str(summary.usage_html)
        self.assertIn("gpt-4.1-2025-04-14", html)
        self.assertIn("no price", html)
        self.assertEqual(summary.gate_run_ids.mapped("run_id"), ["sum-t2"])
        self.assertEqual(summary.gate_run_ids.run_dir, "/srv/runs/sum-t2")
        # the month window takes the old run in
        month = self.env["ipai.ops.summary"].create({"period": "30"})
        self.assertEqual(month.runs_total, 6)
        self.assertAlmostEqual(month.test_latency_p90, 999.0)

    def test_gate_errors_and_provider_health_of_the_last_hour(self):
        ci = self.upsert(code="CI.QUALITY_GATE_FAILED", message="quality score 41.25 is below the threshold 70")
        other = self.upsert(code="WEBHOOK.SIGNATURE_INVALID")
        ops_store.upsert_error_on(
            self.env.cr,
            ops_store.ErrorOccurrence(
                source="otlp",
                occurrence_id=uuid.uuid4().hex,
                fingerprint=f"fp1:genai{uuid.uuid4().hex[:27]}",
                code="LLM.RATE_LIMITED",
                severity="high",
                message="Rate limit reached",
                service="agent",
                occurred_at=datetime.now(UTC) - timedelta(minutes=5),
                sample={"ok": False},
                gen_ai_provider="openai",
                gen_ai_request_model="gpt-4.1",
            ),
        )
        self.env.invalidate_all()
        summary = self.env["ipai.ops.summary"].create({})
        self.assertIn(ci["error_id"], summary.gate_error_ids.ids)
        self.assertNotIn(other["error_id"], summary.gate_error_ids.ids)
        self.assertEqual(summary.provider_health_ids.mapped("provider"), ["openai"])
        self.assertEqual(summary.provider_errors_last_hour, 1)

    def test_intents_without_and_with_the_connectors_view(self):
        cr = self.env.cr
        cr.execute("SELECT to_regclass('ops.pulser_intents_v1') IS NOT NULL")
        if cr.fetchone()[0]:
            cr.execute("DROP VIEW ops.pulser_intents_v1 CASCADE")  # rolled back with the test
            self.env.invalidate_all()
        summary = self.env["ipai.ops.summary"].create({})
        self.assertFalse(summary.connector_installed)
        self.assertEqual((summary.intents_total, summary.intents_dead), (0, 0))
        self.assertFalse(
            summary.action_open_intents()
            and not self.env.ref("ipai_pulser_connector.ipai_pulser_intent_action", raise_if_not_found=False)
        )
        form = etree.fromstring(self.env["ipai.ops.summary"].get_views([(False, "form")])["views"]["form"]["arch"])
        notice = form.xpath("//div[@invisible='connector_installed']")
        self.assertIn("not installed", "".join(notice[0].itertext()))
        # the connector's contract (columns the summary reads), two days of intents
        cr.execute(
            """CREATE VIEW ops.pulser_intents_v1 AS
               SELECT * FROM (VALUES
                 ('succeeded', 1, now()), ('succeeded', 2, now()), ('failed', 1, now()),
                 ('dead', 3, now()), ('queued', 1, now()), ('dead', 3, now() - interval '10 days')
               ) AS v(state, attempts, created_at)"""
        )
        summary = self.env["ipai.ops.summary"].create({"period": "7"})
        self.assertTrue(summary.connector_installed)
        self.assertEqual(
            (summary.intents_total, summary.intents_failed, summary.intents_dead, summary.intents_retries), (5, 1, 1, 3)
        )
        self.assertEqual(self.env["ipai.ops.summary"].create({"period": "30"}).intents_dead, 2)

    def test_a_reliability_user_opens_the_summary(self):
        summary = self.env["ipai.ops.summary"].with_user(self.rel_user).create({})
        self.assertEqual(summary.runs_total, 5)
        action = summary.action_open_usage()
        self.assertEqual(action["res_model"], "ipai.agent.usage")
        self.assertTrue(self.env["ipai.agent.usage"].with_user(self.rel_user).search_count(action["domain"]))
        with self.assertRaises(AccessError):
            self.env["ipai.model.price"].with_user(self.rel_user).create({"provider": "x", "model": "y"})

    # ------------------------------------------------------------------ the run form: record version 2

    def test_the_run_form_shows_verification_and_session(self):
        run = self.env["ipai.agent.run"].browse(self.ids["b3"])
        self.assertEqual((run.session_id, run.verification_status), ("sess-4f1c", "failed"))
        self.assertEqual((run.verification_checks, run.verification_failed), (2, 1))
        self.assertEqual(json.loads(run.verification)["checks"][0]["evidence"], "3 failed")
        self.assertFalse(run.structured_output_valid)
        self.assertEqual(json.loads(run.structured_output)["data"], {"plan": []})
        self.assertEqual(run.kind, "agent")
        old_record = self.env["ipai.agent.run"].browse(self.ids["b2"])
        self.assertEqual(old_record.kind, "typecheck")  # read from the last attempt
        self.assertFalse(old_record.session_id or old_record.verification or old_record.verification_status)
        self.assertEqual(self.env["ipai.agent.run"].browse(self.ids["t2"]).retries, 2)
        arch = etree.fromstring(self.env["ipai.agent.run"].get_views([(False, "form")])["views"]["form"]["arch"])
        self.assertTrue(arch.xpath("//page[@name='verification']//field[@name='verification']"))
        self.assertTrue(arch.xpath("//field[@name='session_id']"))

    # ------------------------------------------------------------------ the weekly mail

    def test_weekly_summary_reaches_the_managers_through_a_real_smtp_server(self):
        inbox = loopback_smtp(self)
        self.env.company.email = "reliability@example.com"
        self.rel_manager.email = "manager@example.com"
        self.rel_user.email = "user@example.com"
        with patch.object(type(self.env["ir.mail_server"]), "_disable_send", lambda *args: False):
            mail_id = self.env["ipai.ops.summary"]._cron_send_weekly_summary()
        self.assertTrue(mail_id)
        self.assertTrue(inbox.arrived.wait(10), "the SMTP server received nothing")
        recipients = {r for rcpt, _ in inbox.messages for r in rcpt}
        self.assertIn("manager@example.com", recipients)
        self.assertNotIn("user@example.com", recipients)
        message = inbox.messages[0][1]
        subject = str(make_header(decode_header(message["Subject"])))
        self.assertEqual(subject, "Reliability weekly summary: 1 failed run(s), 0 dead letter(s)")
        html = message.get_body(preferencelist=("html",)).get_content()
        self.assertIn("sum-t2", html)
        self.assertIn("/srv/runs/sum-t2", html)
        self.assertIn("gpt-4.1-2025-04-14", html)
        self.assertIn("30.0", html)  # test p90

    def test_the_weekly_cron_exists_and_sends_nothing_without_a_manager_email(self):
        cron = self.env.ref("ipai_reliability.ir_cron_ipai_reliability_weekly_summary")
        self.assertEqual((cron.interval_number, cron.interval_type, cron.active), (1, "weeks", True))
        group = self.env.ref("ipai_reliability.group_ipai_reliability_manager")
        group.all_user_ids.partner_id.write({"email": False})
        self.assertIsNone(self.env["ipai.ops.summary"]._cron_send_weekly_summary())
