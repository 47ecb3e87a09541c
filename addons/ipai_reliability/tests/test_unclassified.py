import re
import shutil
import tempfile
from pathlib import Path

from odoo.exceptions import UserError
from odoo.tests import tagged

from ipai_ops import ssot
from ipai_ops.registry import load_registry, parse_registry

from ..wizard.ipai_failure_mode_propose import propose_code, propose_signature
from .common import ReliabilityCase

MESSAGE = "Quota exceeded for tenant 'acme' after 1200 requests at 2026-01-01T10:00:00Z"


@tagged("post_install", "-at_install")
class TestUnclassified(ReliabilityCase):
    def _propose(self, **upsert):
        result = self.upsert(code="UNCLASSIFIED.UNKNOWN", service="billing-api", message=MESSAGE, **upsert)
        error = self.error(result)
        self.assertTrue(error.unclassified)
        action = error.with_user(self.rel_manager).action_create_failure_mode()
        return error, self.env[action["res_model"]].with_user(self.rel_manager).browse(action["res_id"])

    def test_proposal_from_normalised_message(self):
        pattern = propose_signature(MESSAGE)
        self.assertRegex(MESSAGE, pattern)
        self.assertRegex("Quota exceeded for tenant 'globex' after 7 requests at 2027-05-05T01:02:03Z", pattern)
        self.assertNotRegex("Quota fine for tenant 'acme'", pattern)
        self.assertEqual(propose_code(MESSAGE, prefix="billing-api"), "BILLING_API.QUOTA_EXCEEDED_TENANT_AFTER")

    def test_classified_error_is_refused(self):
        error = self.error(self.upsert())
        with self.assertRaises(UserError):
            error.action_create_failure_mode()

    def test_create_opens_the_new_mode_and_reclassifies_the_source_error(self):
        error, wizard = self._propose()
        self.assertEqual(wizard.code, "BILLING_API.QUOTA_EXCEEDED_TENANT_AFTER")
        wizard.signature_pattern = "does not match"
        with self.assertRaisesRegex(UserError, "does not match"):
            wizard.action_create()
        wizard.signature_pattern = "(unclosed"
        with self.assertRaisesRegex(UserError, "compile"):
            wizard.action_create()
        wizard.signature_pattern = propose_signature(MESSAGE)
        action = wizard.action_create()
        mode = self.Mode.search([("code", "=", wizard.code)])
        # the dialog closes on the new failure mode, and the source error has its code
        self.assertEqual(
            (action["type"], action["res_model"], action["res_id"], action["target"]),
            ("ir.actions.act_window", "ipai.failure.mode", mode.id, "current"),
        )
        error.invalidate_recordset()
        self.assertEqual(error.code, wizard.code)
        self.env.cr.execute(
            "SELECT code, error_id, previous_code FROM ops.classification_examples WHERE error_id = %s", (error.id,)
        )
        self.assertEqual(self.env.cr.fetchall(), [(wizard.code, error.id, "UNCLASSIFIED.UNKNOWN")])
        self.assertEqual((mode.lifecycle, mode.origin, mode.category), ("active", "odoo", "BILLING_API"))
        self.assertTrue(mode.runbook_html)
        fallback = self.Mode.search([("fallback", "=", True)])
        self.assertGreater(fallback.sequence, mode.sequence, "the fallback stays last")
        names = (
            self.env["ir.attachment"].search([("res_model", "=", mode._name), ("res_id", "=", mode.id)]).mapped("name")
        )
        self.assertEqual(sorted(names), ["BILLING_API.QUOTA_EXCEEDED_TENANT_AFTER.md", "failure_modes.yaml"])
        # the next sync keeps the Odoo-created code active
        self.Mode.sync_from_registry()
        self.assertEqual(mode.lifecycle, "active")
        # a second proposal of the same code is refused
        __, again = self._propose()
        with self.assertRaisesRegex(UserError, "already exists"):
            again.action_create()
        # surrounding spaces are stripped on create, so they do not make a new code
        again.code = f"  {wizard.code} "
        with self.assertRaisesRegex(UserError, "already exists"):
            again.action_create()

    def test_look_around_is_refused_with_re2_reason(self):
        __, wizard = self._propose()
        for pattern, reason in (
            ("Quota exceeded(?= for)", "invalid perl operator: (?="),
            ("(?<!not )Quota exceeded", "invalid perl operator: (?<"),
            ("(tenant) .{1,20}\\1", "invalid escape sequence: \\1"),
        ):
            wizard.signature_pattern = pattern
            with self.subTest(pattern=pattern), self.assertRaises(UserError) as caught:
                wizard.action_create()
            message = str(caught.exception)
            self.assertIn("RE2", message)
            self.assertIn(reason, message, "RE2's own reason is shown")
            self.assertIn("look-around", message)
        self.assertFalse(self.Mode.search([("code", "=", wizard.code)]), "nothing was created")

    def test_wizard_writes_family_priority_and_command_signatures(self):
        error, wizard = self._propose()
        self.assertEqual(wizard.family, "runtime")
        # a command signature needs the failed command the envelope captured
        wizard.write({"signature_on": "command", "signature_pattern": "make"})
        with self.assertRaisesRegex(UserError, "no failed command"):
            wizard.action_create()
        error.invalidate_recordset()
        self.env.cr.execute(
            "UPDATE ops.agent_errors SET sample = %s::jsonb WHERE id = %s",
            (
                '{"evidence": {"classification": {"matched_by": "fallback", "lines": [], '
                '"captures": {"command": "make billing-quota-check", "exit_code": 2}}}}',
                error.id,
            ),
        )
        error.invalidate_model()
        wizard.write(
            {
                "signature_pattern": "^make (?P<action>billing-quota-check)",
                "family": "resource",
                "priority": 3,
                "signature_priority": 4,
            }
        )
        wizard.action_create()
        mode = self.Mode.search([("code", "=", wizard.code)])
        self.assertEqual((mode.family, mode.priority), ("resource", 3))
        sig = mode.signature_ids
        self.assertEqual((sig.on, sig.has_priority, sig.priority), ("command", True, 4))
        exported = parse_registry(self.Mode.export_registry_yaml(), source="export")[0][wizard.code]
        self.assertEqual((exported.family, exported.priority), ("resource", 3))
        self.assertEqual((exported.signatures[0].on, exported.signatures[0].priority), ("command", 4))
        self.assertIn("`command`", mode.runbook_markdown)

    def test_writeback_to_a_writable_registry(self):
        root = self.env["ipai.ops"].repo_root()
        with tempfile.TemporaryDirectory() as tmpdir:
            tmp = Path(tmpdir)
            registry = tmp / "ssot" / "errors" / "failure_modes.yaml"
            registry.parent.mkdir(parents=True)
            shutil.copy(root / "ssot" / "errors" / "failure_modes.yaml", registry)
            runbooks = tmp / "docs" / "runbooks" / "failures"
            runbooks.mkdir(parents=True)
            for path in (root / "docs" / "runbooks" / "failures").glob("*.md"):
                (runbooks / path.name).symlink_to(path)
            (tmp / "docs" / "runbooks" / "_template.md").symlink_to(root / "docs" / "runbooks" / "_template.md")
            params = self.env["ir.config_parameter"]
            params.set_param("ipai_reliability.registry_path", str(registry))
            params.set_param("ipai_reliability.registry_writeback", "True")
            header = registry.read_text(encoding="utf-8").split("schema_version", 1)[0]

            __, wizard = self._propose()
            action = wizard.action_create()
            self.assertEqual(action["res_model"], "ipai.failure.mode")
            text = registry.read_text(encoding="utf-8")
            self.assertTrue(text.startswith(header), "the registry's header comment is kept")
            written = load_registry(registry)
            self.assertIn(wizard.code, written)
            self.assertTrue(re.search(written[wizard.code].signatures[0].pattern, MESSAGE))
            report = ssot.check(registry_path=registry, repo_root=tmp)
            # only the new code and the registry itself: the other runbooks' relative links
            # point outside this temporary checkout
            own = [p for p in report.problems if p.code == wizard.code or p.file == str(registry)]
            self.assertEqual([p.format() for p in own if p.severity == "error"], [])
            # The stub works locally; its TODO sections are warnings that CI (--strict) refuses.
            self.assertTrue(own, "the stub's TODO sections are reported")
            self.assertEqual({p.severity for p in own}, {"warning"})
            self.assertTrue(all("still a placeholder" in p.message for p in own))
            self.assertTrue((runbooks / f"{wizard.code}.md").is_file(), "a runbook stub is written")
            # the next sync adopts it: origin becomes the registry, nothing else changes
            result = self.Mode.sync_from_registry()
            self.assertEqual(result["created"], [])
            self.assertEqual(self.Mode.search([("code", "=", wizard.code)]).origin, "registry")
            self.assertEqual(self.Mode.sync_from_registry()["updated"], {})
