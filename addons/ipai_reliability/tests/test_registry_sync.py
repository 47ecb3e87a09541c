import os
import tempfile
from pathlib import Path

import psycopg2
import yaml
from odoo.exceptions import UserError, ValidationError
from odoo.tests import tagged
from odoo.tools import mute_logger

from ipai_ops import ssot
from ipai_ops.registry import parse_registry

from .common import ReliabilityCase


@tagged("post_install", "-at_install")
class TestRegistrySync(ReliabilityCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.ops_registry = cls.env["ipai.ops"].registry()
        cls.Mode.sync_from_registry(cls.ops_registry)

    def _registry_from(self, mutate):
        doc = yaml.safe_load(self.Mode.export_registry_yaml())
        mutate(doc["failure_modes"])
        registry, problems = parse_registry(yaml.safe_dump(doc, sort_keys=False), source="mutated")
        self.assertFalse(problems, [p.format() for p in problems])
        return registry

    def test_every_registry_code_is_synced(self):
        codes = set(self.Mode.with_context(active_test=False).search([]).mapped("code"))
        self.assertTrue({m.code for m in self.ops_registry}.issubset(codes))
        fallback = self.Mode.search([("fallback", "=", True)])
        self.assertEqual(fallback.code, self.ops_registry.fallback.code)
        mode = self.Mode.search([("code", "=", "WEBHOOK.SIGNATURE_INVALID")])
        self.assertTrue(mode.signature_ids)
        self.assertIn("<h2", str(mode.runbook_html))
        self.assertEqual(mode.category, "WEBHOOK")

    def test_second_sync_changes_nothing(self):
        result = self.Mode.sync_from_registry(self.ops_registry)
        self.assertEqual(result["created"], [])
        self.assertEqual(result["updated"], {})
        self.assertEqual(result["deprecated"], [])
        self.assertEqual(result["unchanged"], len(self.ops_registry))

    def test_round_trip(self):
        text = self.Mode.export_registry_yaml()
        exported, problems = parse_registry(text, source="export")
        self.assertFalse(problems, [p.format() for p in problems])
        self.assertEqual([m.as_dict() for m in exported], [m.as_dict() for m in self.ops_registry])
        self.assertEqual(exported.modes, self.ops_registry.modes)

        def shape(registry):
            return {
                m.code: (m.family, m.priority, m.examples, [(s.on, s.flags, s.priority) for s in m.signatures])
                for m in registry
            }

        self.assertEqual(shape(exported), shape(self.ops_registry))
        # the registry exercises what must survive: families, priorities (also an explicit 0
        # on a signature), multi-line examples, flag order, command signatures
        modes = list(self.ops_registry)
        self.assertGreater(len({m.family for m in modes}), 5)
        self.assertTrue(any(m.priority for m in modes))
        self.assertTrue(any(s.priority == 0 for m in modes for s in m.signatures))
        self.assertTrue(any("\n" in e for m in modes for e in m.examples))
        self.assertTrue(any(s.on == "command" for m in modes for s in m.signatures))
        # syncing the export back writes nothing
        result = self.Mode.sync_from_registry(exported)
        self.assertEqual((result["created"], result["updated"], result["deprecated"]), ([], {}, []))

    def test_export_passes_ssot_check(self):
        root = self.env["ipai.ops"].repo_root()
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "ssot" / "errors" / "failure_modes.yaml"
            path.parent.mkdir(parents=True)
            path.write_text(self.Mode.export_registry_yaml(), encoding="utf-8")
            report = ssot.check(registry_path=path, repo_root=root)
        self.assertTrue(report.ok, [p.format() for p in report.problems])
        self.assertEqual(report.codes, len(self.ops_registry))

    def test_sync_updates_edits_and_posts_diff(self):
        mode = self.Mode.search([("code", "=", "WEBHOOK.SIGNATURE_INVALID")])
        registry = self._registry_from(
            lambda modes: next(m for m in modes if m["code"] == mode.code).update(severity="critical", owner="sre")
        )
        messages_before = len(mode.message_ids)
        result = self.Mode.sync_from_registry(registry)
        self.assertEqual(sorted(result["updated"][mode.code]), ["owner", "severity"])
        self.assertEqual(len(result["updated"]), 1)
        self.assertEqual((mode.severity, mode.owner), ("critical", "sre"))
        self.assertGreater(len(mode.message_ids), messages_before)
        self.assertIn("severity", mode.message_ids[0].body)

    def test_family_and_priority_are_synced(self):
        for mode in self.ops_registry:
            rec = self.Mode.search([("code", "=", mode.code)])
            self.assertEqual((rec.family, rec.priority), (mode.family, mode.priority), mode.code)
            self.assertEqual(rec.example_ids.mapped("text"), list(mode.examples), mode.code)
            self.assertEqual(
                [(s.on, tuple(s.flag_list()), s.priority_value()) for s in rec.signature_ids],
                [(s.on, s.flags, s.priority) for s in mode.signatures],
                mode.code,
            )
        self.assertEqual(self.Mode.search([("fallback", "=", True)]).family, "unknown")
        # a family, a priority, a signature's own priority and the examples change in the registry
        code = "WEBHOOK.SIGNATURE_INVALID"

        def edit(modes):
            entry = next(m for m in modes if m["code"] == code)
            entry.update(family="config", priority=7, examples=["Signature mismatch for event 1\nsecond line"])
            entry["signatures"][0]["priority"] = 0
            entry["signatures"][0]["flags"] = ["MULTILINE", "IGNORECASE"]

        result = self.Mode.sync_from_registry(self._registry_from(edit))
        self.assertEqual(sorted(result["updated"][code]), ["examples", "family", "priority", "signatures"])
        mode = self.Mode.search([("code", "=", code)])
        self.assertEqual((mode.family, mode.priority), ("config", 7))
        self.assertEqual(mode.example_ids.mapped("text"), ["Signature mismatch for event 1\nsecond line"])
        first = mode.signature_ids[0]
        self.assertEqual(
            (first.has_priority, first.priority, first.flag_list()), (True, 0, ["MULTILINE", "IGNORECASE"])
        )
        exported = parse_registry(self.Mode.export_registry_yaml(), source="export")[0][code]
        self.assertEqual((exported.family, exported.priority, exported.signatures[0].priority), ("config", 7, 0))
        self.assertEqual(exported.signatures[0].flags, ("MULTILINE", "IGNORECASE"))
        # and back
        result = self.Mode.sync_from_registry(self.ops_registry)
        self.assertEqual(sorted(result["updated"][code]), ["examples", "family", "priority", "signatures"])
        self.assertEqual(self.Mode.sync_from_registry(self.ops_registry)["updated"], {})

    def test_family_contract(self):
        with self.assertRaisesRegex(ValidationError, "Unknown"):
            self.Mode.create(
                {"code": "LOCAL.NO_FAMILY", "name": "x", "category": "LOCAL", "description": "d", "family": "unknown"}
            )
        fallback = self.Mode.search([("fallback", "=", True)])
        with self.assertRaisesRegex(ValidationError, "Unknown"):
            fallback.family = "runtime"

    def test_signature_patterns_must_run_on_re2(self):
        mode = self.Mode.search([("code", "=", "WEBHOOK.SIGNATURE_INVALID")])
        Signature = self.env["ipai.failure.mode.signature"]
        with self.assertRaisesRegex(ValidationError, "RE2"):
            Signature.create({"failure_mode_id": mode.id, "on": "message", "pattern": "mismatch(?! for)"})
        with self.assertRaisesRegex(ValidationError, "not captures"):
            Signature.create({"failure_mode_id": mode.id, "on": "message", "pattern": "(?P<secret>x)"})
        sig = Signature.create(
            {"failure_mode_id": mode.id, "on": "command", "pattern": "(?P<tool>pytest)", "flags": "ignorecase"}
        )
        self.assertEqual(sig.flag_list(), ["IGNORECASE"])

    def test_removed_code_is_deprecated_never_deleted(self):
        gone = "INTENT.TIMEOUT"
        registry = self._registry_from(lambda modes: modes.remove(next(m for m in modes if m["code"] == gone)))
        local = self.Mode.create(
            {
                "code": "LOCAL.ONLY_IN_ODOO",
                "name": "Created in Odoo",
                "category": "LOCAL",
                "description": "Not yet in the registry file",
                "origin": "odoo",
            }
        )
        result = self.Mode.sync_from_registry(registry)
        self.assertEqual(result["deprecated"], [gone])
        removed = self.Mode.search([("code", "=", gone)])
        self.assertTrue(removed, "a removed code is never deleted")
        self.assertEqual(removed.lifecycle, "deprecated")
        self.assertEqual(local.lifecycle, "active", "codes created in Odoo wait for the registry")
        # coming back re-activates it
        result = self.Mode.sync_from_registry(self.ops_registry)
        self.assertEqual(removed.lifecycle, "active")
        self.assertIn(gone, result["updated"])

    def test_bad_registry_path_is_a_user_error(self):
        self.env["ir.config_parameter"].set_param("ipai_reliability.registry_path", "/nonexistent/failure_modes.yaml")
        with self.assertRaises(UserError):
            self.Mode.sync_from_registry()

    def test_invalid_registry_is_a_user_error(self):
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
            handle.write("schema_version: 1\nfailure_modes: [{code: nope}]\n")
        try:
            self.env["ir.config_parameter"].set_param("ipai_reliability.registry_path", handle.name)
            with self.assertRaisesRegex(UserError, "invalid"):
                self.env["ipai.ops"].registry()
        finally:
            os.unlink(handle.name)

    def test_code_is_unique(self):
        with self.assertRaises(psycopg2.errors.UniqueViolation) as caught, mute_logger("odoo.sql_db"):
            self.Mode.create(
                {
                    "code": "WEBHOOK.SIGNATURE_INVALID",
                    "name": "dup",
                    "category": "WEBHOOK",
                    "description": "dup dup dup",
                }
            )
            self.env.flush_all()
        self.assertEqual(caught.exception.diag.constraint_name, "ipai_failure_mode_code_uniq")

    def test_code_contract(self):
        with self.assertRaises(ValidationError):
            self.Mode.create({"code": "lower.case", "name": "x", "category": "lower", "description": "bad code"})
        with self.assertRaises(ValidationError):
            self.Mode.create({"code": "ABC.DEF", "name": "x", "category": "XYZ", "description": "bad category"})

    def test_manager_sync_action_and_ensure_schema(self):
        action = self.Mode.with_user(self.rel_manager).action_sync_registry()
        self.assertEqual(action["tag"], "display_notification")
        self.env["ipai.ops"].ensure_schema()
        self.assertEqual(self.env["ipai.ops"].ensure_schema(), [], "migrations apply once")
        self.assertTrue(self.env["ipai.ops"].ops_schema_ready())
