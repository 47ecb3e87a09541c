import uuid
from datetime import timedelta

from odoo import fields
from odoo.exceptions import MissingError, UserError, ValidationError
from odoo.tests import Form, tagged

from ipai_ops import store as ops_store

from ..models.ipai_ops import local_dsn
from .common import ReliabilityCase


@tagged("post_install", "-at_install")
class TestConsole(ReliabilityCase):
    def test_console_reads_real_rows(self):
        first = self.upsert(service="pulser", source="odoo", occurred_at=self.hours_ago(30))
        again = self.upsert(first["fingerprint"], service="pulser", source="odoo")
        self.assertEqual((first["count"], again["count"], again["is_new"]), (1, 2, True))
        other = self.upsert(code="UNCLASSIFIED.UNKNOWN", source="bridge", service="billing", message="weird 1")
        error = self.error(first)
        self.assertEqual(error.fingerprint, first["fingerprint"])
        self.assertEqual(error.count, 2)
        self.assertEqual(error.status, "open")
        self.assertEqual(error.failure_mode_id.code, "WEBHOOK.SIGNATURE_INVALID")
        self.assertFalse(error.unclassified)
        self.assertTrue(error.runbook_html)
        self.assertTrue(self.error(other).unclassified)
        self.assertLess(error.first_seen, error.last_seen)
        # the console's filters and groupings run on real rows
        mine = [("id", "in", [first["error_id"], other["error_id"]])]
        self.assertEqual(self.Error.search([*mine, ("unclassified", "=", True)]).ids, [other["error_id"]])
        self.assertEqual(len(self.Error.search([*mine, ("last_seen", ">=", "-1H")])), 2)
        groups = dict(self.Error._read_group(mine, ["source"], ["count:sum"]))
        self.assertEqual(groups, {"odoo": 2, "bridge": 1})
        by_day = self.Error._read_group(mine, ["last_seen_day:day", "code", "service"], ["__count"])
        self.assertEqual(len(by_day), 2)
        # the failure mode's live counters
        mode = error.failure_mode_id
        mode.invalidate_recordset()
        self.assertGreaterEqual(mode.occurrence_count, 2)
        self.assertGreaterEqual(mode.open_error_count, 1)
        self.assertIn(error, mode.error_ids)

    def test_resolve_then_any_occurrence_regresses(self):
        result = self.upsert()
        error = self.error(result)
        error.action_resolve()
        self.assertEqual(error.status, "resolved")
        self.assertTrue(error.resolved_at)
        self.assertEqual(self.upsert(result["fingerprint"])["status"], "regressed")
        self.assertEqual(self.error(result).status, "regressed")
        self.assertTrue(self.error(result).regressed_at)

    def test_resolve_in_release_regresses_only_from_that_release(self):
        result = self.upsert(service_version="1.3.0")
        error = self.error(result)
        error.action_resolve_in_release("1.4.0")
        self.assertEqual((error.status, error.resolved_in_version), ("resolved", "1.4.0"))
        # an old deploy still draining does not reopen it
        self.assertEqual(self.upsert(result["fingerprint"], service_version="1.3.9")["status"], "resolved")
        # the fixed release (or later) does
        self.assertEqual(self.upsert(result["fingerprint"], service_version="1.10.0")["status"], "regressed")

    def test_resolve_in_release_needs_a_version(self):
        error = self.error(self.upsert())
        with self.assertRaises(UserError):
            error.action_resolve_in_release("latest")
        wizard = self.env["ipai.agent.error.wizard"].create(
            {"action": "resolve_release", "error_ids": [(6, 0, error.ids)], "version": " "}
        )
        with self.assertRaises(UserError):
            wizard.action_apply()
        wizard.version = "2.0.1"
        wizard.action_apply()
        self.assertEqual(error.resolved_in_version, "2.0.1")

    def test_snooze_for_n_occurrences_then_reopen(self):
        result = self.upsert()
        error = self.error(result)
        wizard = self.env["ipai.agent.error.wizard"].create(
            {"action": "snooze", "error_ids": [(6, 0, error.ids)], "snooze_occurrences": 2}
        )
        wizard.action_apply()
        self.assertEqual((error.status, error.snooze_until_count), ("snoozed", 3))
        self.assertEqual(self.upsert(result["fingerprint"])["status"], "snoozed")
        self.assertEqual(self.upsert(result["fingerprint"])["status"], "open")
        self.assertFalse(self.error(result).snooze_until_count)

    def test_snooze_until_date(self):
        result = self.upsert()
        error = self.error(result)
        until = fields.Datetime.now() + timedelta(days=1)
        error.action_snooze(until=until)
        self.assertEqual(error.status, "snoozed")
        self.assertEqual(error.snooze_until.replace(microsecond=0), until.replace(microsecond=0))
        self.assertEqual(self.upsert(result["fingerprint"])["status"], "snoozed")
        # once the date has passed, the next occurrence reopens it
        self.env.cr.execute(
            "UPDATE ops.agent_errors SET snooze_until = now() - interval '1 minute' WHERE id = %s", [error.id]
        )
        self.assertEqual(self.upsert(result["fingerprint"])["status"], "open")

    def test_snooze_bad_input(self):
        error = self.error(self.upsert())
        with self.assertRaises(UserError):
            error.action_snooze(until=False, occurrences=False)
        with self.assertRaises(UserError):
            error.action_snooze(occurrences=-1)
        with self.assertRaises(UserError):
            error.action_snooze(until=fields.Datetime.now() - timedelta(hours=1))
        action = error.action_snooze()
        self.assertEqual(action["res_model"], "ipai.agent.error.wizard")
        self.assertEqual(error.status, "open")

    def test_bad_input_over_rpc_is_a_user_error(self):
        """The console actions are public: arguments of the wrong type or value, and ids that
        do not exist, get a one-line UserError (never a traceback), and change nothing."""
        error = self.error(self.upsert())
        calls = {
            "snooze, occurrences not a number": lambda: error.action_snooze(occurrences="abc"),
            "snooze, occurrences a list": lambda: error.action_snooze(occurrences=[1]),
            "snooze, until not a date": lambda: error.action_snooze(until="garbage"),
            "snooze, until a number": lambda: error.action_snooze(until=123),
            "resolve in release, a number": lambda: error.action_resolve_in_release(123),
            "resolve in release, empty": lambda: error.action_resolve_in_release(" "),
            "assign, unknown user id": lambda: error.action_assign(987654321),
            "assign, a name": lambda: error.action_assign("bob"),
            "assign, a list": lambda: error.action_assign([self.rel_user.id]),
            "assign, no user": lambda: error.action_assign(self.env["res.users"]),
            "assign, two users": lambda: error.action_assign(self.rel_user | self.rel_manager),
        }
        for label, call in calls.items():
            with self.subTest(label), self.assertRaises(UserError):
                call()
        self.assertEqual((error.status, error.user_id), ("open", self.env["res.users"]))
        gone = self.Error.browse(987654321)
        with self.assertRaisesRegex(MissingError, "987654321"):
            gone.action_resolve()
        with self.assertRaises(MissingError):
            (error | gone).action_ignore()
        self.assertEqual(error.status, "open")
        # an int user id is fine
        error.action_assign(self.rel_user.id)
        self.assertEqual(error.user_id, self.rel_user)

    def test_wizard_opened_from_the_console(self):
        """As the web client does: the button's action, then the wizard form with its context."""
        result = self.upsert(service_version="1.7.3")
        error = self.error(result)
        action = error.action_resolve_in_release()
        with Form(self.env[action["res_model"]].with_context(**action["context"])) as wizard:
            self.assertFalse(wizard.version, "the fix ships in a later release than the one it was seen in")
            self.assertEqual(wizard.current_release, "1.7.3", "shown as a hint")
            self.assertEqual(wizard.action, "resolve_release")
            wizard.version = "1.8.0"
        wizard.record.action_apply()
        self.assertEqual((error.status, error.resolved_in_version), ("resolved", "1.8.0"))

    def test_ignore_and_reopen(self):
        result = self.upsert()
        error = self.error(result)
        error.action_ignore()
        self.assertEqual(self.upsert(result["fingerprint"])["status"], "ignored", "ignored for good")
        error.action_reopen()
        self.assertEqual(self.error(result).status, "open")
        with self.assertRaises(UserError):
            self.error(result).action_reopen()

    def test_assign_creates_activity(self):
        error = self.error(self.upsert())
        wizard = self.env["ipai.agent.error.wizard"].create({"action": "assign", "error_ids": [(6, 0, error.ids)]})
        with self.assertRaises(UserError):
            wizard.action_apply()
        wizard.write({"user_id": self.rel_user.id, "note": "look at the proxy"})
        wizard.action_apply()
        self.assertEqual(error.user_id, self.rel_user)
        assignment = error.assignment_id
        self.assertEqual(assignment.note, "look at the proxy")
        # the to-do is on the error itself (test_chatter.py has the rest)
        self.assertEqual(error.activity_ids.user_id, self.rel_user)
        self.assertFalse(assignment.activity_ids)
        self.assertEqual(assignment.error_id, error)
        # reassigning keeps one assignment per fingerprint
        error.action_assign(self.rel_manager)
        self.assertEqual(
            self.env["ipai.agent.error.assignment"].search_count([("fingerprint", "=", error.fingerprint)]), 1
        )
        self.assertEqual(error.user_id, self.rel_manager)

    def test_regression_notifies_resolution_owner(self):
        result = self.upsert(service_version="1.0.0")
        error = self.error(result)
        resolution = self.env["ipai.resolution"].create(
            {
                "name": "proxy re-encodes JSON",
                "failure_mode_id": error.failure_mode_id.id,
                "fingerprint": error.fingerprint,
                "error_id": error.id,
                "user_id": self.rel_user.id,
            }
        )
        error.action_resolve_in_release("1.1.0")
        self.env["ir.config_parameter"].set_param(
            "ipai_reliability.regressions_checked_at",
            fields.Datetime.to_string(fields.Datetime.now() - timedelta(minutes=1)),
        )
        self.assertEqual(self.Error._cron_notify_regressions(), 0)
        self.upsert(result["fingerprint"], service_version="1.1.0")
        self.assertEqual(self.Error._cron_notify_regressions(), 1)
        message = resolution.message_ids[0]
        self.assertIn("Regression", message.body)
        self.assertIn(self.rel_user.partner_id, message.partner_ids)
        self.assertEqual(resolution.activity_ids.user_id, self.rel_user)
        # already notified: the next run is quiet
        self.assertEqual(self.Error._cron_notify_regressions(), 0)

    def test_record_failure_commits_on_its_own_cursor(self):
        fingerprint = f"fp1:own{uuid.uuid4().hex[:29]}"
        envelope = {
            "envelope_version": 1,
            "ok": False,
            "error": {
                "code": "INTENT.HANDLER_CRASHED",
                "severity": "high",
                "message": "boom",
                "error_type": "RuntimeError",
                "fingerprint": fingerprint,
            },
            "context": {"source": "odoo", "service": "odoo", "service_version": "19.0.1"},
            "occurred_at": "2026-01-01T00:00:00Z",
        }
        ops = self.env["ipai.ops"]
        try:
            first = ops.record_failure(envelope, occurrence_id="occ-1")
            again = ops.record_failure(envelope, occurrence_id="occ-1")
            self.assertTrue(first["is_new"])
            self.assertEqual((again["count"], again["is_new"], again["status"]), (1, False, "open"))
            # committed: another transaction sees it even though ours never commits
            with self.env.registry.cursor() as cr:
                cr.execute(
                    "SELECT count, last_service_version, sample->'error'->>'code'"
                    " FROM ops.agent_errors WHERE fingerprint = %s",
                    [fingerprint],
                )
                self.assertEqual(cr.fetchone(), (1, "19.0.1", "INTENT.HANDLER_CRASHED"))
        finally:
            with self.env.registry.cursor() as cr:
                cr.execute("DELETE FROM ops.agent_errors WHERE fingerprint = %s", [fingerprint])
        with self.assertRaises(ValueError):
            ops.record_failure({"error": {}}, occurrence_id="x")
        with self.assertRaises(ValueError):
            ops.record_failure(envelope, occurrence_id="")

    def test_record_failure_with_a_separate_ops_database(self):
        """With ``ops_dsn`` set, record_failure writes through ``ipai_ops.store`` on a connection of
        its own (here the same database, reached by DSN) and answers the same dict."""
        fingerprint = f"fp1:dsn{uuid.uuid4().hex[:29]}"
        envelope = {
            "error": {"code": "INTENT.HANDLER_CRASHED", "message": "boom", "fingerprint": fingerprint},
            "context": {"service": "worker", "service_version": "3.1.0"},
            "occurred_at": "2026-01-01T00:00:00Z",
        }
        ops = self.env["ipai.ops"]
        dsn = local_dsn(self.env.cr.dbname)
        self.env["ir.config_parameter"].set_param("ipai_reliability.ops_dsn", dsn)
        conn = ops_store.connect(dsn, application_name="ipai-reliability-test")
        self.addCleanup(conn.close)
        try:
            first = ops.record_failure(envelope, occurrence_id="dsn-1")
            again = ops.record_failure(envelope, occurrence_id="dsn-2")
            self.assertEqual(set(first), {"error_id", "count", "is_new", "status"})
            self.assertEqual((first["count"], first["is_new"], first["status"]), (1, True, "open"))
            self.assertEqual((again["error_id"], again["count"], again["is_new"]), (first["error_id"], 2, True))
            # committed by another connection after this test's snapshot: read it on one too
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT source, service, severity, last_service_version FROM ops.agent_errors WHERE id = %s",
                    [first["error_id"]],
                )
                self.assertEqual(cur.fetchone(), ("odoo", "worker", "medium", "3.1.0"))
        finally:
            with conn.cursor() as cur:
                cur.execute("DELETE FROM ops.agent_errors WHERE fingerprint = %s", [fingerprint])
            conn.commit()

    def test_settings_refuse_a_malformed_ops_dsn(self):
        Settings = self.env["res.config.settings"]
        with self.assertRaisesRegex(ValidationError, "DSN"):
            Settings.create({"ipai_ops_dsn": "not a dsn at all"})
        Settings.create({"ipai_ops_dsn": "postgresql://nobody@127.0.0.1:1/x"})
        Settings.create({"ipai_ops_dsn": " "})

    def test_record_failure_from_exception_envelope(self):
        ops = self.env["ipai.ops"]
        envelope = ops.envelope_for_exception(
            RuntimeError("something odd 1234"), context={"source": "odoo", "service": "odoo"}
        )
        self.assertEqual(envelope["error"]["code"], ops.registry().fallback.code)
        self.assertTrue(envelope["error"]["fingerprint"].startswith("fp1:"))

    def test_console_needs_local_ops(self):
        error = self.error(self.upsert())
        self.env["ir.config_parameter"].set_param("ipai_reliability.ops_dsn", "postgresql://elsewhere/ops")
        with self.assertRaisesRegex(UserError, "own database"):
            error.action_resolve()
        self.assertEqual(self.Error._cron_notify_regressions(), 0)

    def test_empty_selection_is_a_user_error(self):
        with self.assertRaises(UserError):
            self.Error.browse().action_resolve()
