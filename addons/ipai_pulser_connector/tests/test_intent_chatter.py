from odoo.tests import new_test_user, tagged

from .common import PulserCase


@tagged("post_install", "-at_install")
class TestIntentChatter(PulserCase):
    """Intents have a chatter; followers hear when the worker gives up on one."""

    def setUp(self):
        super().setUp()
        self.watcher = new_test_user(
            self.env,
            login="intent_watcher",
            email="watcher@example.com",
            groups="base.group_user,ipai_reliability.group_ipai_reliability_user",
        )

    def _gave_up(self, intent):
        subtype = self.env.ref("ipai_pulser_connector.mt_intent_gave_up")
        return intent.message_ids.filtered(lambda m: m.subtype_id == subtype)

    def test_followers_are_notified_when_the_worker_gives_up(self):
        intent = self.submit("test.crash", {"message": "ledger closed"})
        intent.message_subscribe(partner_ids=self.watcher.partner_id.ids)
        self.run_worker()
        self.assertEqual(intent.state, "failed")
        [message] = self._gave_up(intent)
        self.assertIn("INTENT.HANDLER_CRASHED", message.body)
        self.assertIn("ledger closed", message.body)
        self.assertIn("/odoo/ipai.agent.error/", message.body)
        notified = message.notification_ids.mapped("res_partner_id")
        self.assertIn(self.watcher.partner_id, notified)

    def test_a_retry_or_a_success_says_nothing(self):
        ok = self.submit("odoo.healthcheck", {"echo": "x"})
        retrying = self.submit("test.retryable", max_attempts=3)
        self.run_worker()
        self.assertEqual(retrying.state, "queued")
        self.assertFalse(self._gave_up(ok) | self._gave_up(retrying))

    def test_a_markup_message_is_escaped(self):
        intent = self.submit("test.crash", {"message": "<img src=x onerror=alert(1)>"})
        self.run_worker()
        [message] = self._gave_up(intent)
        self.assertNotIn("<img", message.body)
        self.assertIn("&lt;img", message.body)

    def test_a_reliability_user_can_comment_and_follow_a_read_only_intent(self):
        intent = self.submit("odoo.healthcheck", {"echo": "x"})
        as_user = intent.with_user(self.watcher)
        as_user.message_subscribe(partner_ids=self.watcher.partner_id.ids)
        as_user.message_post(body="looking into it", message_type="comment", subtype_xmlid="mail.mt_comment")
        self.assertIn("looking into it", intent.message_ids[0].body)
        self.assertIn(self.watcher.partner_id, intent.message_partner_ids)
