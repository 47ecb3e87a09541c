import uuid
from datetime import UTC, datetime

from odoo.exceptions import UserError
from odoo.tests import new_test_user, tagged

from ipai_ops import store as ops_store

from ..models.ipai_pulser_intent import state_writes_allowed
from .common import PulserCase


@tagged("post_install", "-at_install")
class TestRequeueWarning(PulserCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.manager = new_test_user(
            cls.env,
            login="requeue_manager",
            groups="base.group_user,ipai_reliability.group_ipai_reliability_manager",
        )
        cls.requeue = cls.env.ref("ipai_pulser_connector.ipai_pulser_intent_requeue_action_server")

    def _run_requeue(self, intents):
        """The Requeue button: the server action on the selected intents, as a manager."""
        return (
            self.requeue.with_user(self.manager)
            .with_context(active_model=intents._name, active_ids=intents.ids, active_id=intents[:1].id)
            .run()
        )

    def test_non_retryable_failure_asks_before_requeue(self):
        intent = self.submit("test.crash")
        self.run_worker()
        self.assertEqual(intent.state, "failed")
        self.assertFalse(intent.failure_mode_id.retryable, intent.failure_code)
        action = self._run_requeue(intent)
        # nothing requeued yet: a dialog names the failure first
        self.assertEqual((action["res_model"], action["target"]), ("ipai.pulser.intent.requeue", "new"))
        self.assertEqual(intent.state, "failed")
        wizard = self.env["ipai.pulser.intent.requeue"].with_user(self.manager).browse(action["res_id"])
        self.assertEqual(wizard.non_retryable_ids, intent)
        self.assertEqual(wizard.non_retryable_codes, intent.failure_code)
        self.assertEqual(wizard.action_confirm()["type"], "ir.actions.act_window_close")
        self.assertEqual(intent.state, "queued")
        self.assertEqual(intent.event_ids.sorted("id")[-1].event_type, "requeued")

    def test_retryable_dead_letter_is_requeued_without_asking(self):
        intent = self.submit("test.retryable", max_attempts=1)
        self.run_worker()
        self.assertEqual(intent.state, "dead")
        self.assertTrue(intent.failure_mode_id.retryable)
        action = self._run_requeue(intent)
        self.assertEqual(action, {"type": "ir.actions.client", "tag": "soft_reload"})
        self.assertEqual(intent.state, "queued")

    def test_a_mixed_selection_warns_and_only_finished_failures_requeue(self):
        crashed = self.submit("test.crash")
        queued = self.submit()
        self.run_worker(limit=1)
        self.assertEqual((crashed.state, queued.state), ("failed", "queued"))
        action = self._run_requeue(crashed | queued)
        wizard = self.env["ipai.pulser.intent.requeue"].browse(action["res_id"])
        self.assertEqual(wizard.intent_ids, crashed, "only failed or dead intents are offered")
        with self.assertRaisesRegex(UserError, "Only failed or dead"):
            self._run_requeue(queued)

    def test_ops_error_is_a_link_to_the_console(self):
        intent = self.submit()
        result = ops_store.upsert_error_on(
            self.env.cr,
            ops_store.ErrorOccurrence(
                source="odoo",
                occurrence_id=uuid.uuid4().hex,
                fingerprint=f"fp1:test{uuid.uuid4().hex[:28]}",
                code="INTENT.HANDLER_CRASHED",
                severity="high",
                message="boom",
                occurred_at=datetime.now(UTC),
            ),
        )
        self.env["ipai.agent.error"].invalidate_model()
        with state_writes_allowed():
            intent.write({"ops_error_id": result.error_id})
        self.assertEqual(intent.ops_error_ref_id, self.env["ipai.agent.error"].browse(result.error_id))
        self.assertEqual(intent.ops_error_ref_id.code, "INTENT.HANDLER_CRASHED")
        with state_writes_allowed():
            intent.write({"ops_error_id": result.error_id + 10**9})
        self.assertFalse(intent.ops_error_ref_id, "a row that no longer exists is no link")

    def test_views_show_the_clients_name(self):
        client = self.env["ipai.pulser.client"].create({"name": "Billing agent"})
        intent = self.submit(source=client.key_id, client=client)
        self.assertEqual(intent.client_id.display_name, "Billing agent")
        views = self.Intent.get_views([(False, "list"), (False, "form"), (False, "kanban")])["views"]
        for view_type in ("list", "form", "kanban"):
            self.assertIn('name="client_id"', views[view_type]["arch"], view_type)
