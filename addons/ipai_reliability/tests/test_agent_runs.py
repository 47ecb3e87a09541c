import ast
import json
import os
import re
import tempfile
import uuid
from datetime import UTC, datetime, timedelta
from unittest.mock import patch

from lxml import etree
from odoo import fields
from odoo.exceptions import AccessError
from odoo.tests import tagged, users
from odoo.tests.common import get_db_name

from ipai_ops import store as ops_store

from ..models.ipai_agent_run import _COLUMNS, _VIEW_SQL
from ..models.ipai_ops import PARAM_ESCALATION_RETENTION_DAYS, local_dsn
from .common import CommittedOpsMixin, ReliabilityCase, read_bundle

URL_RE = re.compile(r"/web/content/(\d+)\?download=true")
ITERATIONS = [
    {"attempt": 1, "status": "failed", "exit_code": 1, "code": "BUILD.TEST_FAILED", "duration_ms": 2100},
    {"attempt": 2, "status": "failed", "exit_code": 1, "code": "BUILD.TEST_FAILED", "duration_ms": 2100},
]


@tagged("post_install", "-at_install")
class TestAgentRuns(ReliabilityCase):
    """``ops.agent_runs`` rows committed as ``ipai-ops run`` writes them, read through the view."""

    @classmethod
    def setUpClass(cls):
        # Committed BEFORE the test transaction starts: Odoo's cursor is REPEATABLE READ, so
        # it sees what was committed when it took its snapshot (its first query), never later.
        cls.facts = cls._commit_runs()
        super().setUpClass()
        cls.Run = cls.env["ipai.agent.run"]
        cls.mine = [("run_id", "=like", f"{cls.facts['prefix']}%")]

    @classmethod
    def _commit_runs(cls):
        conn = ops_store.connect(local_dsn(get_db_name()), application_name="ipai-reliability-test")
        cls.addClassCleanup(conn.close)
        prefix = f"run-test-{uuid.uuid4().hex[:10]}"
        error = ops_store.upsert_error(
            conn,
            ops_store.ErrorOccurrence(
                source="agent",
                occurrence_id=f"{prefix}-failed:2",
                fingerprint=f"fp1:{uuid.uuid4().hex}",
                code="BUILD.TEST_FAILED",
                severity="medium",
                message="2 failed, 10 passed",
                error_type="run.test_failed",
                service="coder",
                occurred_at=datetime.now(UTC),
            ),
        )
        cls.addClassCleanup(cls._delete_committed, conn, "DELETE FROM ops.agent_errors WHERE id = %s", error.error_id)
        failed_meta = {
            "variant_id": "v2",
            "model": "gpt-4.1",
            "code": "BUILD.TEST_FAILED",
            "exit_code": 1,
            "exit_status": 1,
            "attempts": 2,
            "iterations": [{**item, "error_id": error.error_id} for item in ITERATIONS],
            "tokens": {"input": 1200, "output": 300, "total": 1500},
            "tool_call_count": 7,
            "tool_calls": [{"name": "read_file", "ok": True}],
            "argv": ["pytest", "-q", "tests"],
            "command": "pytest -q tests",
            "cwd": "/srv/app",
            "artifacts": {"run_dir": f"/nonexistent/{prefix}-failed"},
        }
        rows = [
            # suffix, agent, status, started (hours ago), duration_ms, error_id, metadata
            ("running", "coder", "running", 0, None, None, {}),
            ("failed", "coder", "failed", 1, 4200, error.error_id, failed_meta),
            (
                "succeeded",
                "coder",
                "succeeded",
                2,
                1000,
                None,
                {
                    "variant_id": "baseline",
                    "model": "gpt-4.1-mini",
                    "exit_code": 0,
                    "iterations": [{"attempt": 1, "status": "succeeded", "exit_code": 0}],
                    "tokens": {"input": 100, "output": 50, "total": 150},
                    "tool_call_count": 2,
                },
            ),
            # another writer merged keys of the wrong type: the view must still read
            (
                "malformed",
                "odd",
                "cancelled",
                3,
                10,
                None,
                {"iterations": "not a list", "tokens": {"input": "many"}, "exit_code": "1", "tool_call_count": None},
            ),
            (
                "old",
                "linter",
                "failed",
                24 * 10,
                500,
                None,
                {"variant_id": "v2", "code": "BUILD.LINT_FAILED", "exit_code": 1, "iterations": [{"attempt": 1}]},
            ),
        ]
        with conn.cursor() as cur:
            for suffix, agent, status, hours_ago, duration_ms, error_id, metadata in rows:
                cur.execute(
                    "INSERT INTO ops.agent_runs (run_id, source, agent, task_ref, status, started_at, finished_at,"
                    " duration_ms, error_id, metadata)"
                    " VALUES (%(run_id)s, 'agent', %(agent)s, 'ISSUE-12', %(status)s,"
                    "  now() - make_interval(hours => %(hours)s),"
                    "  CASE WHEN %(duration)s::bigint IS NOT NULL"
                    "       THEN now() - make_interval(hours => %(hours)s) + %(duration)s * interval '1 ms' END,"
                    "  %(duration)s, %(error_id)s, %(metadata)s::jsonb)",
                    {
                        "run_id": f"{prefix}-{suffix}",
                        "agent": agent,
                        "status": status,
                        "hours": hours_ago,
                        "duration": duration_ms,
                        "error_id": error_id,
                        "metadata": json.dumps(metadata),
                    },
                )
        conn.commit()
        cls.addClassCleanup(
            cls._delete_committed, conn, "DELETE FROM ops.agent_runs WHERE run_id LIKE %s", f"{prefix}-%"
        )
        return {"prefix": prefix, "error_id": error.error_id}

    @staticmethod
    def _delete_committed(conn, query, value):
        with conn.cursor() as cur:
            cur.execute(query, (value,))
        conn.commit()

    def run_(self, suffix):
        run = self.Run.search([("run_id", "=", f"{self.facts['prefix']}-{suffix}")])
        self.assertEqual(len(run), 1, suffix)
        return run

    def suffixes(self, records):
        return {r.run_id.removeprefix(f"{self.facts['prefix']}-") for r in records}

    # ------------------------------------------------------------------ the view

    def test_committed_rows_with_their_metadata(self):
        runs = self.Run.search(self.mine)
        self.assertEqual(
            [r.run_id.removeprefix(f"{self.facts['prefix']}-") for r in runs],
            ["running", "failed", "succeeded", "malformed", "old"],
            "newest first",
        )
        failed = self.run_("failed")
        self.assertEqual(
            (failed.agent, failed.task_ref, failed.source, failed.status), ("coder", "ISSUE-12", "agent", "failed")
        )
        self.assertEqual((failed.variant_id, failed.model_name, failed.code), ("v2", "gpt-4.1", "BUILD.TEST_FAILED"))
        self.assertEqual((failed.exit_code, failed.attempts, failed.tool_call_count), (1, 2, 7))
        self.assertEqual((failed.input_tokens, failed.output_tokens, failed.total_tokens), (1200, 300, 1500))
        self.assertAlmostEqual(failed.duration, 4.2)
        self.assertEqual(failed.finished_at - failed.started_at, timedelta(milliseconds=4200))
        self.assertLess(
            abs(failed.started_at - (fields.Datetime.now() - timedelta(hours=1))), timedelta(minutes=5), "UTC"
        )
        self.assertEqual(failed.error_id.id, self.facts["error_id"])
        self.assertEqual(failed.error_id.code, "BUILD.TEST_FAILED")
        self.assertEqual(failed.command, "pytest -q tests")
        self.assertEqual((failed.cwd, failed.run_dir), ("/srv/app", f"/nonexistent/{self.facts['prefix']}-failed"))
        self.assertEqual(json.loads(failed.iterations)[1]["attempt"], 2)
        self.assertGreater(len(failed.iterations.splitlines()), 10, "pretty-printed, one key a line")
        self.assertEqual(failed.display_name, failed.run_id)

        running = self.run_("running")
        self.assertEqual((running.status, running.finished_at, running.duration), ("running", False, 0.0))
        self.assertEqual(
            (running.attempts, running.total_tokens, running.variant_id, running.iterations), (0, 0, False, False)
        )
        malformed = self.run_("malformed")
        self.assertEqual(
            (malformed.attempts, malformed.input_tokens, malformed.exit_code, malformed.tool_call_count), (0, 0, 0, 0)
        )

    def test_search_filters_and_groups(self):
        arch = self.Run.get_views([(False, "search")])["views"]["search"]["arch"]
        filters = {
            node.get("name"): ast.literal_eval(node.get("domain"))
            for node in etree.fromstring(arch).iter("filter")
            if node.get("domain")
        }
        expected = {
            "filter_failed": {"failed", "old"},
            "filter_succeeded": {"succeeded"},
            "filter_last_week": {"running", "failed", "succeeded", "malformed"},
        }
        self.assertLessEqual(set(expected), set(filters))
        for name, wanted in expected.items():
            with self.subTest(name):
                self.assertEqual(self.suffixes(self.Run.search([*self.mine, *filters[name]])), wanted)
        self.assertEqual(self.suffixes(self.Run.search([*self.mine, ("variant_id", "=", "v2")])), {"failed", "old"})
        self.assertEqual(self.suffixes(self.Run.search([*self.mine, ("code", "=", "BUILD.LINT_FAILED")])), {"old"})
        self.assertEqual(self.suffixes(self.Run.search([*self.mine, ("status", "=", "cancelled")])), {"malformed"})
        self.assertEqual(
            self.suffixes(self.Run.search([*self.mine, ("error_id", "=", self.facts["error_id"])])), {"failed"}
        )
        groups = self.Run._read_group(self.mine, ["agent", "variant_id"], ["total_tokens:sum", "duration:avg"])
        by_key = {(agent, variant): (tokens, duration) for agent, variant, tokens, duration in groups}
        self.assertEqual(by_key[("coder", "v2")], (1500, 4.2))
        self.assertEqual(by_key[("coder", "baseline")], (150, 1.0))
        by_code = dict(self.Run._read_group(self.mine, ["code"], ["__count"]))
        self.assertEqual((by_code["BUILD.TEST_FAILED"], by_code["BUILD.LINT_FAILED"]), (1, 1))

    def test_error_form_links_its_runs(self):
        error = self.Error.with_user(self.rel_user).browse(self.facts["error_id"])
        self.assertEqual(error.run_count, 1)
        action = error.action_view_runs()
        self.assertEqual((action["type"], action["res_model"]), ("ir.actions.act_window", "ipai.agent.run"))
        runs = self.env[action["res_model"]].with_user(self.rel_user).search(action["domain"])
        self.assertEqual(self.suffixes(runs), {"failed"})
        # an error no run ended with
        self.assertEqual(self.error(self.upsert()).run_count, 0)

    def test_stand_in_has_the_same_columns(self):
        """With ops in another database the view is an empty stand-in: same columns, same types."""

        def columns():
            self.env.cr.execute(
                "SELECT column_name, data_type FROM information_schema.columns"
                " WHERE table_schema = current_schema() AND table_name = 'ipai_agent_run'"
                " ORDER BY ordinal_position"
            )
            return self.env.cr.fetchall()

        real = columns()
        stored = {name for name, field in self.Run._fields.items() if field.store and field.column_type}
        self.assertEqual({name for name, __ in real}, stored)
        self.env["ipai.ops"].create_ops_view(
            "ipai_agent_run", select_sql=_VIEW_SQL, columns=_COLUMNS, source="ops.no_such_table"
        )
        self.assertEqual(columns(), real)
        self.Run.invalidate_model()
        self.assertFalse(self.Run.search([]))

    # ------------------------------------------------------------------ escalation

    def test_escalation_bundle_of_a_run(self):
        artifacts = self.enterContext(tempfile.TemporaryDirectory(prefix="ipai-run-esc-"))
        self.enterContext(patch.dict(os.environ, {"IPAI_OPS_RUN_ARTIFACTS": artifacts}))
        run = self.run_("failed").with_user(self.rel_user)
        action = run.action_escalation_bundle()
        self.assertEqual((action["type"], action["target"]), ("ir.actions.act_url", "self"))
        match = URL_RE.fullmatch(action["url"])
        self.assertTrue(match, action["url"])
        attachment = self.env["ir.attachment"].with_user(self.rel_user).browse(int(match[1]))
        self.assertEqual((attachment.res_model, attachment.res_id), ("ipai.agent.run", run.id))
        self.assertEqual(attachment.mimetype, "application/gzip")
        self.assertRegex(attachment.name, rf"^escalation-run-{re.escape(run.run_id)}-\d{{8}}T\d{{6}}Z\.tar\.gz$")
        __, members = read_bundle(attachment.raw)
        manifest = json.loads(members["manifest.json"])
        self.assertEqual((manifest["kind"], manifest["ref"]), ("run", f"run:{run.run_id}"))
        self.assertEqual(manifest["ids"]["run_id"], run.run_id)
        self.assertEqual(manifest["ids"]["error_id"], self.facts["error_id"])
        self.assertEqual(manifest["error"]["code"], "BUILD.TEST_FAILED")
        self.assertEqual(manifest["command"]["shell"], "pytest -q tests")
        self.assertEqual((manifest["status"]["run"], manifest["status"]["attempts"]), ("failed", 2))
        self.assertEqual(json.loads(members["run.json"])["run_id"], run.run_id)
        self.assertEqual(json.loads(members["error.json"])["id"], self.facts["error_id"])

    # ------------------------------------------------------------------ access

    @users("plain_user")
    def test_plain_user_cannot_read_runs(self):
        Run = self.env["ipai.agent.run"]
        with self.assertRaises(AccessError):
            Run.search([], limit=1)
        failed = Run.browse(self.run_id_of("failed"))
        with self.assertRaises(AccessError):
            failed.read(["run_id"])
        with self.assertRaises(AccessError):
            failed.action_escalation_bundle()
        menu = self.env.ref("ipai_reliability.menu_ipai_reliability_runs")
        self.assertNotIn(menu.id, self.env["ir.ui.menu"]._visible_menu_ids())

    @users("rel_user")
    def test_reliability_user_reads_runs_only(self):
        Run = self.env["ipai.agent.run"]
        failed = Run.search([("run_id", "=", f"{self.facts['prefix']}-failed")])
        self.assertEqual((failed.code, failed.error_id.code), ("BUILD.TEST_FAILED", "BUILD.TEST_FAILED"))
        with self.assertRaises(AccessError):
            failed.write({"agent": "someone else"})
        with self.assertRaises(AccessError):
            failed.unlink()
        menu = self.env.ref("ipai_reliability.menu_ipai_reliability_runs")
        self.assertIn(menu.id, self.env["ir.ui.menu"]._visible_menu_ids())

    def run_id_of(self, suffix):
        return self.Run.sudo().search([("run_id", "=", f"{self.facts['prefix']}-{suffix}")]).id


@tagged("post_install", "-at_install")
class TestEscalationRetention(CommittedOpsMixin, ReliabilityCase):
    """The daily cron deletes old escalation bundles, and nothing else."""

    def attachment(self, name, *, age_days, res_model="ipai.agent.error", mimetype="application/gzip"):
        attachment = self.env["ir.attachment"].create(
            {"name": name, "raw": b"\x1f\x8b", "mimetype": mimetype, "res_model": res_model, "res_id": 1}
        )
        self.age(attachment, age_days)
        return attachment

    def age(self, attachment, days):
        self.env.cr.execute(
            "UPDATE ir_attachment SET create_date = (now() AT TIME ZONE 'UTC') - make_interval(days => %s)"
            " WHERE id IN %s",
            [days, tuple(attachment.ids)],
        )
        attachment.invalidate_recordset(["create_date"])

    def test_cron_record(self):
        cron = self.env.ref("ipai_reliability.ir_cron_ipai_reliability_gc_escalations")
        self.assertEqual((cron.model_id.model, cron.code), ("ipai.ops", "model._gc_escalation_bundles()"))
        self.assertEqual((cron.interval_number, cron.interval_type, cron.active), (1, "days", True))
        self.assertEqual(self.env["ir.config_parameter"].get_param(PARAM_ESCALATION_RETENTION_DAYS), "30")

    def test_deletes_old_bundles_only(self):
        self.env["ir.config_parameter"].set_param(PARAM_ESCALATION_RETENTION_DAYS, "10")
        stamp = "20250101T000000Z.tar.gz"
        old = (
            self.attachment(f"escalation-error-1-{stamp}", age_days=15)
            | self.attachment(f"escalation-run-run-x-{stamp}", age_days=15, res_model="ipai.agent.run")
            | self.attachment(f"escalation-intent-abc-{stamp}", age_days=15, res_model="ipai.pulser.intent")
        )
        kept = (
            self.attachment(f"escalation-error-2-{stamp}", age_days=5)
            | self.attachment("escalation-notes.txt", age_days=15, mimetype="text/plain")
            | self.attachment(f"escalation-error-3-{stamp}", age_days=15, res_model="res.partner")
            | self.attachment("failure_modes.tar.gz", age_days=15)
        )
        # batches of 2: the loop goes on until nothing old is left
        self.assertEqual(self.env["ipai.ops"]._gc_escalation_bundles(batch_size=2), 3)
        self.assertFalse(old.exists())
        self.assertEqual(kept.exists(), kept)

    def test_in_a_cron_each_batch_is_committed_and_reported(self):
        old = self.attachment("escalation-error-1-a.tar.gz", age_days=40) | self.attachment(
            "escalation-error-1-b.tar.gz", age_days=40
        )
        old |= self.attachment("escalation-error-1-c.tar.gz", age_days=40)
        calls = []

        def commit_progress(cron, processed=0, *, remaining=None, deactivate=False):
            calls.append((processed, remaining))
            return 60.0

        with patch.object(type(self.env["ir.cron"]), "_commit_progress", autospec=True, side_effect=commit_progress):
            ops = self.env["ipai.ops"].with_context(ir_cron_progress_id=1)
            self.assertEqual(ops._gc_escalation_bundles(batch_size=2), 3)
        self.assertEqual(calls, [(2, 1), (1, 0)])
        self.assertFalse(old.exists())

    def test_retention_setting(self):
        Param = self.env["ir.config_parameter"]
        young = self.attachment("escalation-error-1-young.tar.gz", age_days=20)
        old = self.attachment("escalation-error-1-old.tar.gz", age_days=400)
        Param.set_param(PARAM_ESCALATION_RETENTION_DAYS, "0")  # keep forever
        self.assertEqual(self.env["ipai.ops"]._gc_escalation_bundles(), 0)
        Param.set_param(PARAM_ESCALATION_RETENTION_DAYS, "a month")
        with self.assertLogs("odoo.addons.ipai_reliability.models.ipai_ops", "WARNING"):
            self.assertEqual(self.env["ipai.ops"]._gc_escalation_bundles(), 0)
        self.assertEqual((young | old).exists(), young | old)
        Param.set_param(PARAM_ESCALATION_RETENTION_DAYS, False)  # unset: 30 days
        self.assertEqual(self.env["ipai.ops"]._gc_escalation_bundles(), 1)
        self.assertEqual((young | old).exists(), young)

    def test_bundles_the_buttons_make_are_collected(self):
        """The real button's attachment (name, mimetype, model) matches what the cron deletes."""
        # the bundle is read on a connection of its own: the error has to be committed
        failure = self.commit_failure("Signature mismatch for event 42")
        action = self.Error.browse(failure["error_id"]).action_escalation_bundle()
        bundle = self.env["ir.attachment"].browse(int(URL_RE.fullmatch(action["url"])[1]))
        self.assertTrue(bundle.exists())
        self.assertEqual(self.env["ipai.ops"]._gc_escalation_bundles(), 0, "young")
        self.age(bundle, 31)
        self.assertEqual(self.env["ipai.ops"]._gc_escalation_bundles(), 1)
        self.assertFalse(bundle.exists())
