"""Completion webhooks end to end: a real HTTP receiver on loopback (ipai_reliability's
alert-test receiver) verifies every delivery's signature with the ``standardwebhooks``
library, as a client would."""

import json
from datetime import timedelta

from odoo import fields
from odoo.addons.ipai_reliability.tests.test_alerts import Receiver
from odoo.exceptions import AccessError, ValidationError
from odoo.tests import new_test_user, tagged

from ..models.ipai_pulser_webhook_delivery import CRON_XMLID, MAX_ATTEMPTS
from .common import PulserCase
from .test_access import MANAGER_GROUPS, USER_GROUPS


@tagged("post_install", "-at_install")
class TestCompletionWebhook(PulserCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.Delivery = cls.env["ipai.pulser.webhook.delivery"]
        cls.secret = cls.env["ipai.alert.rule"].new_webhook_secret()

    def receiver(self, status=200, secret=None):
        receiver = Receiver(secret or self.secret, status=status)
        self.addCleanup(receiver.close)
        return receiver

    def client(self, receiver=None, **vals):
        if receiver:
            vals.update(webhook_url=receiver.url, webhook_secret=self.secret)
        return self.env["ipai.pulser.client"].create({"name": "hooked agent", "allowed_intent_types": "*", **vals})

    def submit_for(self, client, intent_type="odoo.healthcheck", args=None):
        return self.submit(intent_type, args, source=client.key_id, client=client)

    def deliveries(self, client):
        return self.Delivery.search([("client_id", "=", client.id)], order="id")

    # -------------------------------------------------------------- delivery

    def test_a_succeeded_intent_is_posted_signed_once_the_cron_runs(self):
        receiver = self.receiver()
        client = self.client(receiver)
        intent = self.submit_for(client)
        cron = self.env.ref(CRON_XMLID)
        triggers_before = self.env["ir.cron.trigger"].search_count([("cron_id", "=", cron.id)])
        self.assertEqual(self.run_worker()["succeeded"], 1)
        self.assertEqual(intent.state, "succeeded")
        delivery = self.deliveries(client)
        self.assertEqual(len(delivery), 1)
        self.assertEqual(
            (delivery.state, delivery.event_type, delivery.intent_id), ("queued", "intent.succeeded", intent)
        )
        self.assertEqual(receiver.requests, [], "the worker only queues: nothing is sent on its write path")
        self.assertEqual(self.env["ir.cron.trigger"].search_count([("cron_id", "=", cron.id)]), triggers_before + 1)

        self.assertEqual(self.Delivery._cron_deliver(), 1)
        self.assertEqual(len(receiver.requests), 1)
        request = receiver.requests[0]
        self.assertIs(request["verified"], True, request["verified"])
        self.assertEqual(request["headers"]["webhook-id"], delivery.message_uid)
        body = json.loads(request["body"])
        self.assertEqual(body["type"], "intent.succeeded")
        self.assertEqual(
            (body["data"]["ref"], body["data"]["state"], body["data"]["source"]),
            (intent.ref, "succeeded", client.key_id),
        )
        self.assertIs(body["data"]["result"]["ok"], True)
        self.assertNotIn("events", body["data"])
        self.assertEqual((delivery.state, delivery.attempts, delivery.response_status), ("sent", 1, 200))
        self.assertTrue(delivery.sent_at)
        self.assertEqual(self.Delivery._cron_deliver(), 0, "a sent delivery is not sent again")

    def test_every_final_state_is_delivered_and_nothing_else(self):
        receiver = self.receiver()
        client = self.client(receiver)
        failed = self.submit_for(client, "test.crash")
        cancelled = self.submit_for(client)
        cancelled._request_cancel(source="api")  # a queued intent, cancelled by the API at once
        retried = self.submit_for(client, "test.retryable")
        retried.max_attempts = 2
        dead = self.submit_for(client, "test.retryable")
        dead.max_attempts = 1
        self.run_worker()
        self.assertEqual(
            (failed.state, cancelled.state, retried.state, dead.state), ("failed", "cancelled", "queued", "dead")
        )
        by_intent = {d.intent_id: d.event_type for d in self.deliveries(client)}
        self.assertEqual(
            by_intent,
            {failed: "intent.failed", cancelled: "intent.cancelled", dead: "intent.dead"},
            "a retry is not final",
        )
        self.Delivery._cron_deliver()
        types = sorted(json.loads(r["body"])["type"] for r in receiver.requests)
        self.assertEqual(types, ["intent.cancelled", "intent.dead", "intent.failed"])
        self.assertTrue(all(r["verified"] is True for r in receiver.requests))
        failed_body = next(json.loads(r["body"]) for r in receiver.requests if b"intent.failed" in r["body"])
        self.assertEqual(failed_body["data"]["failure_code"], failed.failure_code)

    def test_clients_without_a_webhook_and_backend_intents_queue_nothing(self):
        client = self.client()
        self.submit_for(client)
        self.submit("odoo.healthcheck")
        self.run_worker()
        self.assertFalse(self.Delivery.search([]))

    def test_a_receiver_with_another_secret_cannot_verify(self):
        receiver = self.receiver(secret=self.env["ipai.alert.rule"].new_webhook_secret())
        client = self.client(receiver)
        self.submit_for(client)
        self.run_worker()
        self.Delivery._cron_deliver()
        self.assertEqual(len(receiver.requests), 1)
        self.assertIn("No matching signature found", receiver.requests[0]["verified"])

    def test_a_failing_receiver_is_retried_with_backoff_then_given_up(self):
        receiver = self.receiver(status=500)
        client = self.client(receiver)
        self.submit_for(client)
        self.run_worker()
        delivery = self.deliveries(client)
        before = fields.Datetime.now()
        self.assertEqual(self.Delivery._cron_deliver(), 1)
        self.assertEqual((delivery.state, delivery.attempts, delivery.response_status), ("retrying", 1, 500))
        self.assertEqual(delivery.last_error, "HTTP 500: receiver broke")
        self.assertGreaterEqual(delivery.next_attempt_at, before + timedelta(seconds=30), "backoff, not a busy loop")
        self.assertEqual(self.Delivery._cron_deliver(), 0, "not due yet")
        for attempt in range(2, MAX_ATTEMPTS + 1):
            delivery.sudo().write({"next_attempt_at": fields.Datetime.now() - timedelta(seconds=1)})
            self.assertEqual(self.Delivery._cron_deliver(), 1)
            self.assertEqual(delivery.attempts, attempt)
        self.assertEqual(delivery.state, "failed")
        self.assertEqual(len(receiver.requests), MAX_ATTEMPTS)
        ids = {r["headers"]["webhook-id"] for r in receiver.requests}
        self.assertEqual(ids, {delivery.message_uid}, "one message id on every retry: receivers deduplicate")
        bodies = {r["body"] for r in receiver.requests}
        self.assertEqual(len(bodies), 1, "every retry sends the same body")
        delivery.action_retry_now()
        self.assertEqual(delivery.state, "retrying")
        receiver.status = 200
        self.assertEqual(self.Delivery._cron_deliver(), 1)
        self.assertEqual(delivery.state, "sent")

    def test_an_unreachable_receiver_is_recorded_without_its_url(self):
        receiver = self.receiver()
        client = self.client(receiver)
        receiver.close()
        client.webhook_url = receiver.url.replace("/hooks/ipai", "/hooks/ipai?token=s3cr3t")
        self.submit_for(client)
        self.run_worker()
        self.Delivery._cron_deliver()
        delivery = self.deliveries(client)
        self.assertEqual(delivery.state, "retrying")
        self.assertIn("could not connect", delivery.last_error)
        self.assertNotIn("s3cr3t", delivery.last_error)

    # -------------------------------------------------------------- settings and access

    def test_the_secret_is_write_only_and_only_managers_see_the_webhook(self):
        receiver = self.receiver()
        client = self.client(receiver)
        manager = new_test_user(
            self.env, login="pulser_hook_manager", groups=f"{MANAGER_GROUPS},base.group_allow_export"
        )
        user = new_test_user(self.env, login="pulser_hook_user", groups=USER_GROUPS)
        as_manager = client.with_user(manager)
        self.assertEqual(as_manager.read(["webhook_secret", "webhook_secret_set"])[0]["webhook_secret"], "")
        self.assertTrue(as_manager.webhook_secret_set)
        exported = as_manager.export_data(["webhook_url", "webhook_secret"])["datas"]
        self.assertEqual(exported, [[receiver.url, ""]])
        self.assertNotIn("webhook_secret_value", client._fields, "the stored secret is no field")
        self.assertEqual(client._webhook_secret(), self.secret)
        with self.assertRaisesRegex(ValueError, "not stored"):  # nobody guesses it with searches
            as_manager.search([("id", "=", client.id), ("webhook_secret", "=", self.secret)])
        as_user = client.with_user(user)
        for field in ("webhook_url", "webhook_secret"):
            with self.subTest(field=field), self.assertRaises(AccessError):
                as_user.read([field])
        with self.assertRaises(AccessError):
            as_user.action_generate_webhook_secret()
        action = as_manager.action_generate_webhook_secret()
        new_secret = action["params"]["message"]
        self.assertTrue(new_secret.startswith("whsec_"))
        self.assertEqual(client._webhook_secret(), new_secret)
        as_manager.write({"webhook_secret": ""})
        self.assertEqual(client._webhook_secret(), new_secret, "an empty input keeps the stored secret")
        self.submit_for(client)
        self.run_worker()
        delivery = self.deliveries(client).with_user(user)
        self.assertEqual(delivery.state, "queued", "users read deliveries")
        with self.assertRaises(AccessError):
            delivery.write({"state": "sent"})
        with self.assertRaises(AccessError):
            delivery.action_retry_now()

    def test_a_webhook_url_and_secret_are_validated(self):
        with self.assertRaisesRegex(ValidationError, "http:// or https://"):
            self.client(webhook_url="ftp://example.com/hook")
        with self.assertRaisesRegex(ValidationError, "whsec_"):
            self.client(webhook_url="https://example.com/hook", webhook_secret="hunter2")  # pragma: allowlist secret

    def test_a_delivery_whose_client_lost_its_secret_fails_in_words(self):
        receiver = self.receiver()
        client = self.client(receiver)
        self.submit_for(client)
        self.run_worker()
        self.env.cr.execute("UPDATE ipai_pulser_client SET webhook_secret_value = NULL WHERE id = %s", (client.id,))
        self.Delivery._cron_deliver()
        delivery = self.deliveries(client)
        self.assertEqual(
            (delivery.state, delivery.last_error), ("retrying", "the client has no webhook signing secret")
        )
        self.assertEqual(receiver.requests, [], "never sent unsigned")
