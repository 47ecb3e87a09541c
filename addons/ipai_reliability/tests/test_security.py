from odoo.exceptions import AccessError
from odoo.tests import new_test_user, tagged, users

from .common import ReliabilityCase


@tagged("post_install", "-at_install")
class TestSecurity(ReliabilityCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.mode = cls.env["ipai.failure.mode"].search([("code", "=", "INTENT.TIMEOUT")])
        cls.other_company = cls.env["res.company"].create({"name": "Other Co"})
        cls.other_resolution = cls.env["ipai.resolution"].create(
            {"name": "elsewhere", "failure_mode_id": cls.mode.id, "company_id": cls.other_company.id}
        )
        cls.private_mode = cls.env["ipai.failure.mode"].create(
            {
                "code": "OTHERCO.PRIVATE",
                "name": "Other company's code",
                "category": "OTHERCO",
                "description": "Only Other Co sees it",
                "company_id": cls.other_company.id,
                "signature_ids": [(0, 0, {"on": "message", "pattern": "other co private"})],
            }
        )

    def setUp(self):
        super().setUp()
        self.error_result = self.upsert()

    @users("rel_user")
    def test_user_reads_and_works_errors(self):
        self.assertTrue(self.env["ipai.failure.mode"].search([("code", "=", "INTENT.TIMEOUT")]).runbook_html)
        error = self.env["ipai.agent.error"].browse(self.error_result["error_id"])
        self.assertEqual(error.code, "WEBHOOK.SIGNATURE_INVALID")
        error.action_resolve()
        self.assertEqual(error.status, "resolved")
        error.action_reopen()
        error.action_assign(self.env.user)
        self.assertEqual(error.user_id, self.env.user)
        # benchmark results are readable too (search raises AccessError otherwise)
        self.env["ipai.benchmark.result"].search([], limit=1)
        self.assertTrue(self.env["ipai.benchmark.result"].has_access("read"))

    @users("rel_user")
    def test_user_writes_resolutions(self):
        resolution = self.env["ipai.resolution"].create({"name": "mine", "failure_mode_id": self.mode.id})
        resolution.write({"summary": "s", "root_cause": "x", "fix": "y", "pr_url": "https://example.com/pr/1"})
        resolution.action_submit_review()
        resolution.action_done()
        with self.assertRaises(AccessError):
            resolution.unlink()

    @users("rel_user")
    def test_user_cannot_edit_failure_modes_or_sync(self):
        mode = self.env["ipai.failure.mode"].browse(self.mode.id)
        with self.assertRaises(AccessError):
            mode.write({"severity": "low"})
        with self.assertRaises(AccessError):
            self.env["ipai.failure.mode"].action_sync_registry()
        with self.assertRaises(AccessError):
            self.env["ipai.failure.mode"].action_export_yaml()
        with self.assertRaises(AccessError):
            self.env["ipai.agent.error"].browse(self.error_result["error_id"]).action_create_failure_mode()

    @users("rel_manager")
    def test_manager_edits_and_syncs(self):
        mode = self.env["ipai.failure.mode"].browse(self.mode.id)
        mode.write({"owner": "platform"})
        self.assertEqual(mode.owner, "platform")
        action = self.env["ipai.failure.mode"].action_sync_registry()
        self.assertEqual(action["params"]["type"], "success")
        # the sync puts the registry's owner back over the edit
        self.assertEqual(mode.owner, self.env["ipai.ops"].registry()[mode.code].owner or False)
        action = self.env["ipai.failure.mode"].action_export_yaml()
        self.assertEqual(action["type"], "ir.actions.act_url")

    @users("plain_user")
    def test_plain_user_sees_nothing(self):
        for model in ("ipai.failure.mode", "ipai.agent.error", "ipai.resolution", "ipai.benchmark.result"):
            with self.assertRaises(AccessError, msg=model):
                self.env[model].search([], limit=1)
        error = self.env["ipai.agent.error"].browse(self.error_result["error_id"])
        with self.assertRaises(AccessError):
            error.action_resolve()
        with self.assertRaises(AccessError):
            self.env["ipai.resolution"].create({"name": "x", "code": "INTENT.TIMEOUT"})
        with self.assertRaises(AccessError):
            self.env["ipai.failure.mode"].action_sync_registry()
        menu = self.env.ref("ipai_reliability.menu_ipai_reliability_root")
        self.assertNotIn(menu.id, self.env["ir.ui.menu"]._visible_menu_ids())

    @users("rel_user")
    def test_multi_company_rules(self):
        resolutions = self.env["ipai.resolution"].search([])
        self.assertNotIn(self.other_resolution.id, resolutions.ids)
        modes = self.env["ipai.failure.mode"].search([])
        self.assertNotIn(self.private_mode.id, modes.ids)
        self.assertIn(self.mode.id, modes.ids, "shared failure modes are visible to every company")

    def test_multi_company_user_sees_both(self):
        both = new_test_user(
            self.env,
            login="rel_both",
            groups="base.group_user,ipai_reliability.group_ipai_reliability_user",
            company_ids=[(6, 0, [self.company.id, self.other_company.id])],
        )
        env = self.env(user=both, context={"allowed_company_ids": [self.company.id, self.other_company.id]})
        self.assertIn(self.other_resolution.id, env["ipai.resolution"].search([]).ids)

    def test_service_methods_are_not_callable_over_rpc(self):
        """ipai.ops reads secrets (the DSN), runs SQL and writes ops rows: Python callers only."""
        from odoo.service.model import get_public_method

        service = self.env["ipai.ops"]
        for name in (
            "ops_dsn",
            "registry_path",
            "ensure_schema",
            "create_ops_view",
            "record_failure",
            "envelope_for_exception",
        ):
            with self.subTest(name=name), self.assertRaises(AccessError):
                get_public_method(service, name)
        for model, name in (
            ("ipai.failure.mode", "sync_from_registry"),
            ("ipai.failure.mode", "export_registry_yaml"),
            ("ipai.resolution", "to_markdown"),
            ("ipai.failure.mode.propose", "proposal_for"),
        ):
            with self.subTest(name=name), self.assertRaises(AccessError):
                get_public_method(self.env[model], name)
        # the buttons the views call stay callable
        self.assertTrue(get_public_method(self.env["ipai.agent.error"], "action_resolve"))
