"""Triage in three clicks: the landing list, the snooze / resolve dialogs, the failure-mode
proposal, runbooks (business summary, Mermaid), and resolution rules."""

import ast
import hashlib
import shutil
import tempfile
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

from lxml import etree
from odoo import fields
from odoo.exceptions import AccessError, UserError, ValidationError
from odoo.tests import Form, tagged

from ..wizard.ipai_failure_mode_propose import propose_signature
from .common import ReliabilityCase

ADDON = Path(__file__).resolve().parents[1]
MERMAID_VERSION = "12.4.0"
MERMAID_SHA256 = "c0891e4c0413d0710ad193b431d8cbbe9d031636e51c467d11daa4721ba22094"
TODAY = [("last_seen", ">=", "today")]


@tagged("post_install", "-at_install")
class TestTriage(ReliabilityCase):
    def _occurrences(self, n, *, hours_ago=0.0, fingerprint=None, **kw):
        result = None
        for __ in range(n):
            result = self.upsert(fingerprint, occurred_at=self.hours_ago(hours_ago), **kw)
            fingerprint = result["fingerprint"]
        return result

    def _arch(self, xmlid):
        return etree.fromstring(self.env.ref(xmlid).arch)

    # ------------------------------------------------------------------ the landing list

    def test_default_list_puts_the_most_frequent_error_of_the_period_first(self):
        # old: many occurrences last week, one today; busy: three today; quiet: one today
        old = self._occurrences(6, hours_ago=24 * 3, message="old storm")
        old = self._occurrences(1, fingerprint=old["fingerprint"])
        busy = self._occurrences(3, message="busy today")
        quiet = self._occurrences(1, message="quiet today")
        ids = [old["error_id"], busy["error_id"], quiet["error_id"]]
        order = self._arch("ipai_reliability.ipai_agent_error_view_list").get("default_order")
        self.assertEqual(order, "period_count desc, last_seen desc")
        spec = {"code": {}, "count": {}, "period_count": {}}
        today = self.Error.web_search_read([*TODAY, ("id", "in", ids)], spec, order=order)["records"]
        self.assertEqual(
            [(r["id"], r["period_count"], r["count"]) for r in today],
            # a tie in the period: the most recently seen first
            [(busy["error_id"], 3, 3), (quiet["error_id"], 1, 1), (old["error_id"], 1, 7)],
        )
        # no period: "In period" is every occurrence, so the old storm leads
        everything = self.Error.web_search_read([("id", "in", ids)], spec, order=order)["records"]
        self.assertEqual(everything[0]["id"], old["error_id"])
        self.assertEqual({r["period_count"] for r in everything}, {7, 3, 1})
        # the grouped list sums the period too
        groups = self.Error.formatted_read_group([*TODAY, ("id", "in", ids)], ["code"], ["period_count:sum"])
        self.assertEqual(sum(g["period_count:sum"] for g in groups), 5)

    def test_period_starts_where_the_search_says(self):
        self.assertIsNone(self.Error._period_start([("status", "=", "open")]))
        midnight = self.env.tz.localize(datetime.combine(fields.Date.context_today(self.Error), time.min))
        self.assertEqual(self.Error._period_start(TODAY), midnight.astimezone(UTC).replace(tzinfo=None))
        week = self.Error._period_start([("last_seen", ">=", "-7d"), ("last_seen", ">=", "-24H")])
        self.assertAlmostEqual(week, fields.Datetime.now() - timedelta(hours=24), delta=timedelta(minutes=1))

    def test_today_replaces_last_7_days_and_the_shortcuts_filter(self):
        search = self._arch("ipai_reliability.ipai_agent_error_view_search")
        (date_filter,) = search.xpath("//filter[@name='filter_last_seen']")
        # options of one date filter exclude each other in the web client (custom_* generators)
        self.assertEqual(date_filter.get("date"), "last_seen")
        options = [option.get("name") for option in date_filter.xpath("./filter")]
        self.assertEqual(options, ["last_seen_hour", "last_seen_today", "last_seen_24h", "last_seen_7d"])
        self.assertFalse(search.xpath("/search/filter[@name='filter_last_week']"), "no second, widening 7-day filter")
        mine = self.upsert(message="mine")
        theirs = self.upsert(message="theirs")
        nobody = self.upsert(message="nobody's")
        self.error(mine).action_assign(self.env.user)
        self.error(theirs).action_assign(self.rel_user)
        ids = [mine["error_id"], theirs["error_id"], nobody["error_id"]]
        for name, expected in (("filter_unassigned", nobody), ("filter_mine", mine)):
            (node,) = search.xpath(f"//filter[@name='{name}']")
            domain = ast.literal_eval(node.get("domain"))
            self.assertEqual(self.Error.search([*domain, ("id", "in", ids)]).ids, [expected["error_id"]], name)

    def test_root_menu_opens_todays_errors_in_one_click(self):
        root = self.env.ref("ipai_reliability.menu_ipai_reliability_root")
        action = self.env.ref("ipai_reliability.ipai_agent_error_action")
        self.assertEqual(root.action, action)
        # the app tile opens the action itself, not the first child menu
        menus = self.env["ir.ui.menu"].with_user(self.rel_user).load_web_menus(False)
        self.assertEqual(menus[root.id]["actionID"], action.id)
        self.assertEqual(action.view_mode.split(",")[0], "list")
        context = ast.literal_eval(action.context)
        self.assertEqual(context["search_default_filter_last_seen"], "custom_last_seen_today")
        self.assertTrue(context["search_default_filter_on_fire"])
        # the list's code column is wide enough to read a dotted code
        (code,) = self._arch("ipai_reliability.ipai_agent_error_view_list").xpath("//field[@name='code']")
        self.assertEqual(code.get("width"), "300px")

    def test_severity_groups_come_worst_first(self):
        for severity in ("low", "critical", "medium"):
            self.upsert(severity=severity, message=f"{severity} one")
        groups = self.Error.with_context(read_group_expand=True).web_read_group(TODAY, ["severity"], ["__count"])
        self.assertEqual([g["severity"] for g in groups["groups"]], ["critical", "high", "medium", "low"])

    # ------------------------------------------------------------------ snooze and resolve dialogs

    def _wizard(self, action, errors, **values):
        context = errors._open_wizard(action)["context"]
        Wizard = self.env["ipai.agent.error.wizard"].with_context(**context)
        return Wizard.create(values)

    def test_snooze_presets_give_a_real_snoozed_status(self):
        result = self.upsert()
        error = self.error(result)
        wizard = self._wizard("snooze", error)
        self.assertEqual(wizard.snooze_preset, "1d", "the dialog opens on a preset, no date to pick")
        for preset, delta in (("1h", timedelta(hours=1)), ("1d", timedelta(days=1)), ("1w", timedelta(weeks=1))):
            self._wizard("snooze", error, snooze_preset=preset).action_apply()
            self.assertEqual(error.status, "snoozed")
            self.assertAlmostEqual(error.snooze_until, fields.Datetime.now() + delta, delta=timedelta(minutes=1))
            self.assertFalse(error.snooze_until_count)
        self.assertIn(error, self.Error.search([("status", "=", "snoozed")]))
        self.assertNotIn(error, self.Error.search([("status", "=", "ignored")]))
        # until N more: two more occurrences wake it
        self._wizard("snooze", error, snooze_preset="count", snooze_occurrences=2).action_apply()
        self.assertEqual((error.status, error.snooze_until, error.snooze_until_count), ("snoozed", False, 3))
        self.assertEqual(self.upsert(result["fingerprint"])["status"], "snoozed")
        self.assertEqual(self.upsert(result["fingerprint"])["status"], "open")
        with self.assertRaisesRegex(UserError, "how many"):
            self._wizard("snooze", error, snooze_preset="count").action_apply()
        with self.assertRaisesRegex(UserError, "date and time"):
            self._wizard("snooze", error, snooze_preset="date").action_apply()
        # a snoozed error reopens on demand, and Ignore is for good
        self._wizard("snooze", error, snooze_preset="1w").action_apply()
        error.action_reopen()
        self.assertEqual(error.status, "open")
        error.action_ignore()
        self.assertEqual((error.status, error.snooze_until), ("ignored", False))
        self.assertEqual(self.upsert(result["fingerprint"])["status"], "ignored")

    def test_snooze_dialog_keeps_the_date_field_last(self):
        form = self._arch("ipai_reliability.ipai_agent_error_wizard_view_form")
        (snooze,) = form.xpath("//div[@invisible=\"action != 'snooze'\"]")
        names = [field.get("name") for field in snooze.iter("field")]
        self.assertEqual(names[-1], "snooze_until", "its picker opens over the footer, not over other fields")
        self.assertEqual(snooze.xpath(".//field[@name='snooze_preset']")[0].get("widget"), "radio")

    def test_resolve_in_release_hints_the_current_release_and_checks_the_format(self):
        older = self.error(self.upsert(service_version="1.9.0", message="older"))
        newer = self.error(self.upsert(service_version="1.10.0", message="newer"))
        wizard = self._wizard("resolve_release", older | newer)
        self.assertEqual((wizard.current_release, wizard.no_version), ("1.10.0", False))
        self.assertFalse(wizard.version, "the current release is a hint, not the answer")
        for bad in ("latest", "1.4 beta", "release 3", "1..2", "v"):
            wizard.version = bad
            with self.assertRaisesRegex(UserError, "looks like"):
                wizard.action_apply()
        wizard.version = "v1.11.0-rc.1"
        wizard.action_apply()
        self.assertEqual(newer.resolved_in_version, "v1.11.0-rc.1")
        unversioned = self._wizard("resolve_release", self.error(self.upsert(message="no version")))
        self.assertEqual((unversioned.current_release, unversioned.no_version), (False, True))

    # ------------------------------------------------------------------ create failure mode from this error

    def _propose(self, message, service="billing-api"):
        error = self.error(self.upsert(code="UNCLASSIFIED.UNKNOWN", service=service, message=message))
        action = error.with_user(self.rel_manager).action_create_failure_mode()
        return error, self.env[action["res_model"]].with_user(self.rel_manager).browse(action["res_id"])

    def test_proposal_closes_opens_the_mode_reclassifies_and_keeps_the_edited_runbook(self):
        error, wizard = self._propose("Ledger lock held by batch 'close-2026' for 900 seconds")
        self.assertFalse(wizard.duplicate_ids)
        self.assertIn(f"# {wizard.code}: ", wizard.runbook_markdown, "a stub with every section to start from")
        runbook = wizard.runbook_markdown + "\n```mermaid\nflowchart LR\n  A[lock] --> B[wait]\n```\n"
        wizard.runbook_markdown = runbook
        action = wizard.action_create()
        mode = self.Mode.search([("code", "=", wizard.code)])
        self.assertEqual(
            (action["type"], action["res_model"], action["res_id"], action["target"]),
            ("ir.actions.act_window", "ipai.failure.mode", mode.id, "current"),
        )
        error.invalidate_recordset()
        self.assertEqual((error.code, error.unclassified), (mode.code, False))
        self.assertEqual(mode.runbook_markdown.strip(), runbook.strip())
        self.assertIn('class="language-mermaid"', str(mode.runbook_html))

    def test_a_duplicate_proposal_is_named_and_needs_create_anyway(self):
        message = "Payroll export rejected: column 'iban' missing in row 17"
        __, first = self._propose(message)
        second_error, second = self._propose(message.replace("17", "18"), service="payroll")
        first.action_create()
        mode = self.Mode.search([("code", "=", first.code)])
        second.invalidate_recordset()
        self.assertEqual(second.duplicate_ids, mode, "the first proposal's signature already matches")
        with self.assertRaisesRegex(UserError, mode.code):
            second.action_create()
        second.create_anyway = True
        second.signature_pattern = propose_signature(second_error.message)
        second.action_create()
        self.assertTrue(self.Mode.search([("code", "=", second.code)]))

    def test_runbook_is_edited_in_odoo(self):
        mode = self.Mode.search([("code", "=", "WEBHOOK.SIGNATURE_INVALID")])
        with Form(mode.with_user(self.rel_manager)) as form:
            form.runbook_markdown = "# WEBHOOK.SIGNATURE_INVALID: edited\n\n## Recovery\n\n1. Rotate the key.\n"
        self.assertIn("Rotate the key.", str(mode.runbook_html))

    def test_an_edited_runbook_goes_to_its_file_or_to_the_chatter(self):
        mode = self.Mode.search([("code", "=", "WEBHOOK.SIGNATURE_INVALID")])
        root = self.env["ipai.ops"].repo_root()
        original = (root / mode.runbook_path).read_text(encoding="utf-8")
        edited = original.rstrip() + "\n\nEdited in Odoo.\n"
        manager_mode = mode.with_user(self.rel_manager)
        # write-back off (the default): attached for a person to commit, the checkout untouched
        mode.runbook_markdown = edited
        manager_mode.action_write_runbook()
        attachment = self.env["ir.attachment"].search(
            [("res_model", "=", mode._name), ("res_id", "=", mode.id), ("name", "=", "WEBHOOK.SIGNATURE_INVALID.md")]
        )
        self.assertEqual(attachment.raw.decode(), edited)
        self.assertEqual((root / mode.runbook_path).read_text(encoding="utf-8"), original)
        mode.runbook_markdown = "# WEBHOOK.SIGNATURE_INVALID: a title alone\n"
        with self.assertRaisesRegex(UserError, "Likely causes"):
            manager_mode.action_write_runbook()
        with self.assertRaises(AccessError):
            mode.with_user(self.rel_user).action_write_runbook()
        # write-back on, into a checkout of its own: the file is the text edited in Odoo
        with tempfile.TemporaryDirectory() as tmpdir:
            tmp = Path(tmpdir)
            registry = tmp / "ssot" / "errors" / "failure_modes.yaml"
            registry.parent.mkdir(parents=True)
            shutil.copy(root / "ssot" / "errors" / "failure_modes.yaml", registry)
            runbook = tmp / mode.runbook_path
            runbook.parent.mkdir(parents=True)
            runbook.write_text(original, encoding="utf-8")
            params = self.env["ir.config_parameter"]
            params.set_param("ipai_reliability.registry_path", str(registry))
            params.set_param("ipai_reliability.registry_writeback", "True")
            mode.runbook_markdown = edited
            manager_mode.action_write_runbook()
            self.assertEqual(runbook.read_text(encoding="utf-8"), edited)
            self.assertIn("Runbook written to", mode.message_ids[0].body)

    # ------------------------------------------------------------------ runbooks

    def test_runbooks_open_with_a_summary_for_business_users(self):
        mode = self.Mode.search([("code", "=", "WEBHOOK.SIGNATURE_INVALID")])
        html = str(mode.runbook_html)
        self.assertLess(html.index("For business users"), html.index("<h1"), "the summary comes first")
        self.assertIn("Credentials were rejected", html, "the auth family's text")
        self.assertIn("What happened", html)
        mode.retryable = False
        self.assertIn("No: trying again gives the same result", str(mode.runbook_html))
        mode.write({"retryable": True, "max_attempts": 4})
        self.assertIn("up to 4 attempts", str(mode.runbook_html))

    def test_mermaid_is_bundled_pinned_and_lazy(self):
        lib = ADDON / "static" / "lib" / "mermaid"
        self.assertEqual(hashlib.sha256((lib / "mermaid.min.js").read_bytes()).hexdigest(), MERMAID_SHA256)
        self.assertIn("MIT License", (lib / "LICENSE").read_text())
        self.assertIn(f"**{MERMAID_VERSION}**", (lib / "README.md").read_text())
        widget = (ADDON / "static" / "src" / "runbook" / "runbook_field.js").read_text()
        self.assertIn('"/ipai_reliability/static/lib/mermaid/mermaid.min.js"', widget)
        self.assertNotIn("http", widget.split("MERMAID_URL =")[1].split(";")[0], "no CDN")
        for xmlid in (
            "ipai_reliability.ipai_agent_error_view_form",
            "ipai_reliability.ipai_failure_mode_view_form",
            "ipai_reliability.ipai_resolution_view_form",
        ):
            (field,) = self._arch(xmlid).xpath("//field[@name='runbook_html']")
            self.assertEqual(field.get("widget"), "ipai_runbook", xmlid)

    # ------------------------------------------------------------------ resolutions

    def test_resolution_owner_is_the_assignee_and_review_needs_the_analysis(self):
        error = self.error(self.upsert())
        error.action_assign(self.rel_user)
        action = error.action_create_resolution()
        with Form(self.env["ipai.resolution"].with_context(**action["context"])) as form:
            self.assertEqual(form.user_id, self.rel_user)
        resolution = form.record
        with self.assertRaisesRegex(ValidationError, "Summary and a Root cause"):
            resolution.action_submit_review()
        resolution.summary = "Agents got 401s"
        with self.assertRaisesRegex(ValidationError, "Summary and a Root cause"):
            resolution.write({"stage": "review"})
        resolution.root_cause = "The proxy re-encodes JSON"
        resolution.action_submit_review()
        self.assertEqual(resolution.stage, "review")
        unassigned = self.error(self.upsert(message="nobody's"))
        self.assertEqual(unassigned.action_create_resolution()["context"]["default_user_id"], self.env.uid)
