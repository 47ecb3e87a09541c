"""Alert rules end to end: a real SMTP server and a real HTTP receiver on loopback.

The SMTP server is aiosmtpd; the webhook receiver is ``http.server`` on a thread and checks
every request's signature with the ``standardwebhooks`` library, as a receiver would.
"""

import email
import email.policy
import json
import socket
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from email.header import decode_header, make_header
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from unittest.mock import patch

from aiosmtpd.controller import Controller
from odoo.exceptions import AccessError, ValidationError
from odoo.tests import tagged
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from ipai_ops import store as ops_store

from ..models.ipai_alert_delivery import BACKOFF
from .common import ReliabilityCase


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _Inbox:
    """aiosmtpd handler: keeps every message it accepts."""

    def __init__(self):
        self.messages = []
        self.arrived = threading.Event()

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(
            (list(envelope.rcpt_tos), email.message_from_bytes(envelope.content, policy=email.policy.default))
        )
        self.arrived.set()
        return "250 OK"


def loopback_smtp(case):
    """A real SMTP server (aiosmtpd) on loopback for the test ``case``, and Odoo's outgoing
    mail server pointing at it; returns the inbox that keeps what it receives."""
    inbox = _Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    case.addCleanup(controller.stop)
    case.env["ir.mail_server"].create(
        {"name": "loopback", "smtp_host": "127.0.0.1", "smtp_port": port, "smtp_encryption": "none"}
    )
    return inbox


class Receiver:
    """A webhook receiver on loopback that verifies Standard Webhooks signatures."""

    def __init__(self, secret, status=200):
        self.secret = secret
        self.status = status
        self.requests = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = dict(self.headers.items())
                try:
                    Webhook(receiver.secret).verify(body, headers)
                    verified = True
                except WebhookVerificationError as exc:
                    verified = str(exc)
                receiver.requests.append({"path": self.path, "headers": headers, "body": body, "verified": verified})
                self.send_response(receiver.status)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"ok" if receiver.status < 300 else b"receiver broke")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/ipai"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@tagged("post_install", "-at_install")
class TestAlerts(ReliabilityCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.Rule = cls.env["ipai.alert.rule"]
        cls.Delivery = cls.env["ipai.alert.delivery"]
        cls.secret = cls.Rule.new_webhook_secret()
        cls.oncall = cls.env["res.partner"].create({"name": "On call", "email": "oncall@example.com"})
        cls.env.company.email = "alerts@example.com"

    def receiver(self, status=200, secret=None):
        receiver = Receiver(secret or self.secret, status=status)
        self.addCleanup(receiver.close)
        return receiver

    def rule(self, **vals):
        values = {
            "name": "Webhook failures",
            "trigger": "new",
            "action_email": False,
            "partner_ids": [(6, 0, self.oncall.ids)],
        }
        values.update(vals)
        rule = self.Rule.create(values)
        rule._evaluate(settle_seconds=0)  # the first run only sets the rule's starting point
        return rule

    def webhook_rule(self, receiver, **vals):
        return self.rule(action_webhook=True, webhook_url=receiver.url, webhook_secret=self.secret, **vals)

    def new_errors(self, n, **kwargs):
        return [
            self.upsert(message=f"Signature mismatch for event {i}-{uuid.uuid4().hex[:6]}", **kwargs) for i in range(n)
        ]

    def deliver(self):
        return self.Delivery._cron_deliver()

    def make_due(self, deliveries):
        self.env.cr.execute(
            "UPDATE ipai_alert_delivery SET next_attempt_at = now() AT TIME ZONE 'UTC' - interval '1 second'"
            " WHERE id = ANY(%s)",
            [deliveries.ids],
        )
        deliveries.invalidate_recordset()

    # ------------------------------------------------------------------ email

    def test_new_error_email_reaches_a_real_smtp_server(self):
        inbox = loopback_smtp(self)
        rule = self.rule(action_email=True)
        error = self.upsert(code="WEBHOOK.SIGNATURE_INVALID", message="Signature mismatch for order 7")
        self.assertEqual(rule._evaluate(settle_seconds=0), 1)
        # Odoo suppresses SMTP while tests run; lift that so the real path to the server runs
        with patch.object(type(self.env["ir.mail_server"]), "_disable_send", lambda *args: False):
            self.assertEqual(self.deliver(), 1)
        delivery = rule.delivery_ids
        self.assertEqual((delivery.channel, delivery.state, delivery.attempts), ("email", "sent", 1))
        self.assertEqual(delivery.error_id.id, error["error_id"])
        self.assertTrue(inbox.arrived.wait(10), "the SMTP server received nothing")
        self.assertEqual(len(inbox.messages), 1)
        rcpt, message = inbox.messages[0]
        self.assertEqual(rcpt, ["oncall@example.com"])
        subject = str(make_header(decode_header(message["Subject"])))
        self.assertIn("WEBHOOK.SIGNATURE_INVALID", subject)
        self.assertIn("New error", subject)
        html = message.get_body(preferencelist=("html",)).get_content()
        self.assertIn("Signature mismatch for order 7", html)
        self.assertIn(f"/odoo/ipai.agent.error/{error['error_id']}", html)

    def test_email_to_an_unreachable_server_is_retried(self):
        self.env["ir.mail_server"].create(
            {"name": "nobody", "smtp_host": "127.0.0.1", "smtp_port": free_port(), "smtp_encryption": "none"}
        )
        rule = self.rule(action_email=True)
        self.new_errors(1)
        rule._evaluate(settle_seconds=0)
        with patch.object(type(self.env["ir.mail_server"]), "_disable_send", lambda *args: False):
            self.deliver()
        delivery = rule.delivery_ids
        self.assertEqual((delivery.state, delivery.attempts), ("retrying", 1))
        self.assertIn("email not sent", delivery.last_error)
        self.assertFalse(
            self.env["mail.mail"].search([("model", "=", "ipai.alert.delivery"), ("res_id", "=", delivery.id)]),
            "a failed alert mail must not stay queued for mail's own cron to resend",
        )

    def test_activity_for_the_on_call_user(self):
        rule = self.rule(action_activity=True, alert_user_id=self.rel_manager.id)
        self.new_errors(1, code="BUILD.TEST_FAILED", severity="critical")
        rule._evaluate(settle_seconds=0)
        self.deliver()
        self.assertEqual(rule.delivery_ids.state, "sent")
        activity = self.env["mail.activity"].search(
            [("user_id", "=", self.rel_manager.id), ("summary", "ilike", "BUILD.TEST_FAILED")]
        )
        self.assertEqual(len(activity), 1)

    # ------------------------------------------------------------------ webhooks

    def test_webhook_is_signed_per_standard_webhooks(self):
        receiver = self.receiver()
        rule = self.webhook_rule(receiver)
        error = self.upsert(code="WEBHOOK.SIGNATURE_INVALID", message="Signature mismatch for event 42")
        self.assertEqual(rule._evaluate(settle_seconds=0), 1)
        self.deliver()
        delivery = rule.delivery_ids
        self.assertEqual((delivery.state, delivery.response_status), ("sent", 200))
        self.assertEqual(len(receiver.requests), 1)
        request = receiver.requests[0]
        self.assertIs(request["verified"], True)
        self.assertEqual(request["headers"]["webhook-id"], delivery.message_uid)
        body = json.loads(request["body"])
        self.assertEqual(body["type"], "ipai.alert.new_error")
        self.assertEqual([e["id"] for e in body["data"]["errors"]], [error["error_id"]])
        self.assertEqual(body["data"]["errors"][0]["message"], "Signature mismatch for event 42")
        # a receiver holding another secret refuses the same request
        other = Webhook(self.Rule.new_webhook_secret())
        with self.assertRaises(WebhookVerificationError):
            other.verify(request["body"], request["headers"])
        tampered = request["body"].replace(b"event 42", b"event 43")
        with self.assertRaises(WebhookVerificationError):
            Webhook(self.secret).verify(tampered, request["headers"])

    def test_slack_payload(self):
        receiver = self.receiver()
        rule = self.webhook_rule(receiver, webhook_format="slack")
        self.new_errors(1, code="BUILD.TEST_FAILED")
        rule._evaluate(settle_seconds=0)
        self.deliver()
        body = json.loads(receiver.requests[0]["body"])
        self.assertIn("BUILD.TEST_FAILED", body["text"])
        self.assertEqual(body["blocks"][0]["type"], "section")
        self.assertIn("/odoo/ipai.agent.error/", body["blocks"][1]["text"]["text"])
        self.assertIs(receiver.requests[0]["verified"], True)

    def test_failing_receiver_is_retried_with_backoff(self):
        receiver = self.receiver(status=500)
        rule = self.webhook_rule(receiver, max_attempts=3)
        self.new_errors(1)
        rule._evaluate(settle_seconds=0)
        delivery = rule.delivery_ids
        for attempt in (1, 2):
            before = datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=1)
            self.make_due(delivery)
            self.deliver()
            self.assertEqual((delivery.state, delivery.attempts, delivery.response_status), ("retrying", attempt, 500))
            self.assertTrue(delivery.last_error.startswith("HTTP 500"), delivery.last_error)
            ceiling = BACKOFF.ceiling(attempt)  # 60 s, then 120 s
            self.assertGreaterEqual(delivery.next_attempt_at, before + timedelta(seconds=ceiling / 2))
            self.assertLessEqual(delivery.next_attempt_at, before + timedelta(seconds=ceiling + 2))
            # not due yet: the next cron run leaves it alone
            self.deliver()
            self.assertEqual(delivery.attempts, attempt)
        self.make_due(delivery)
        self.deliver()
        self.assertEqual((delivery.state, delivery.attempts), ("failed", 3))
        self.assertEqual(len(receiver.requests), 3)
        self.assertEqual({r["headers"]["webhook-id"] for r in receiver.requests}, {delivery.message_uid})
        for text in (receiver.url, "127.0.0.1", self.secret):
            self.assertNotIn(text, delivery.last_error)
        self.assertEqual(rule.delivery_failed_count, 1)

    def test_unreachable_receiver_error_names_no_url(self):
        receiver = self.receiver()
        rule = self.webhook_rule(receiver)
        receiver.close()
        self.new_errors(1)
        rule._evaluate(settle_seconds=0)
        self.deliver()
        delivery = rule.delivery_ids
        self.assertEqual(delivery.state, "retrying")
        self.assertIn("could not connect", delivery.last_error)
        self.assertNotIn("/hooks/ipai", delivery.last_error)

    # ------------------------------------------------------------------ volume

    def test_digest_turns_a_storm_into_one_message(self):
        receiver = self.receiver()
        rule = self.webhook_rule(receiver, digest=True)
        self.new_errors(50)
        self.assertEqual(rule._evaluate(settle_seconds=0), 1)
        self.deliver()
        self.assertEqual(len(rule.delivery_ids), 1)
        self.assertEqual(len(receiver.requests), 1)
        data = json.loads(receiver.requests[0]["body"])["data"]
        self.assertEqual((data["total"], data["listed"]), (50, 50))

    def test_rate_limit_folds_a_storm_into_one_digest(self):
        receiver = self.receiver()
        rule = self.webhook_rule(receiver, rate_limit_count=5, rate_limit_minutes=60)
        self.new_errors(3)
        self.assertEqual(rule._evaluate(settle_seconds=0), 3, "under the limit: one message per error")
        self.new_errors(50)
        self.assertEqual(rule._evaluate(settle_seconds=0), 1, "over the limit: one digest")
        self.deliver()
        self.assertEqual(len(receiver.requests), 4)
        self.assertEqual(json.loads(receiver.requests[-1]["body"])["data"]["total"], 50)

    def test_exhausted_budget_keeps_errors_for_the_next_message(self):
        receiver = self.receiver()
        rule = self.webhook_rule(receiver, rate_limit_count=1, rate_limit_minutes=60)
        self.new_errors(1)
        self.assertEqual(rule._evaluate(settle_seconds=0), 1)
        held = self.new_errors(10)
        self.assertEqual(rule._evaluate(settle_seconds=0), 0)
        self.assertEqual(sorted(rule.pending_error_ids), sorted(e["error_id"] for e in held))
        # the hour passes
        self.env.cr.execute(
            "UPDATE ipai_alert_delivery SET create_date = create_date - interval '2 hours' WHERE rule_id = %s",
            [rule.id],
        )
        self.env["ipai.alert.delivery"].invalidate_model()
        self.assertEqual(rule._evaluate(settle_seconds=0), 1)
        self.assertFalse(rule.pending_error_ids)
        self.deliver()
        self.assertEqual(json.loads(receiver.requests[-1]["body"])["data"]["total"], 10)

    # ------------------------------------------------------------------ triggers and conditions

    def test_conditions_filter_errors(self):
        receiver = self.receiver()
        rule = self.webhook_rule(receiver, digest=True, min_severity="high", sources="bridge", services="billing")
        wanted = self.upsert(source="bridge", service="billing", severity="critical")
        self.upsert(source="bridge", service="billing", severity="low")
        self.upsert(source="odoo", service="billing", severity="critical")
        self.upsert(source="bridge", service="shop", severity="high")
        rule._evaluate(settle_seconds=0)
        self.assertEqual(rule.delivery_ids.error_refs, [wanted["error_id"]])

    def test_code_and_family_conditions(self):
        mode = self.Mode.search([("code", "=", "BUILD.TEST_FAILED")])
        by_code = self.rule(failure_mode_ids=[(6, 0, mode.ids)], action_activity=True,
                            alert_user_id=self.rel_manager.id)  # fmt: skip
        by_family = self.rule(family=mode.family, action_activity=True, alert_user_id=self.rel_manager.id)
        hit = self.upsert(code="BUILD.TEST_FAILED")
        self.upsert(code="WEBHOOK.SIGNATURE_INVALID")
        by_code._evaluate(settle_seconds=0)
        by_family._evaluate(settle_seconds=0)
        self.assertEqual(by_code.delivery_ids.error_refs, [hit["error_id"]])
        self.assertIn(hit["error_id"], by_family.delivery_ids.error_refs)

    def test_new_errors_are_reported_once(self):
        rule = self.rule(action_activity=True, alert_user_id=self.rel_manager.id, digest=True)
        before = self.upsert()  # before the rule's first run: history, not news
        rule.last_error_id = before["error_id"]
        first = self.upsert()
        self.upsert(fingerprint=first["fingerprint"])  # a second occurrence is not a new error
        rule._evaluate(settle_seconds=0)
        rule._evaluate(settle_seconds=0)
        self.assertEqual(rule.delivery_ids.mapped("error_refs"), [[first["error_id"]]])

    def test_regression_trigger(self):
        rule = self.rule(trigger="regression", action_activity=True, alert_user_id=self.rel_manager.id)
        error = self.upsert()
        self.env.cr.execute(
            "UPDATE ops.agent_errors SET status = 'resolved', resolved_at = now() WHERE id = %s", [error["error_id"]]
        )
        rule._evaluate(settle_seconds=0)
        self.assertFalse(rule.delivery_ids, "resolved is not regressed")
        self.upsert(fingerprint=error["fingerprint"])
        rule.last_evaluated_at = datetime.now(UTC).replace(tzinfo=None) - timedelta(minutes=5)
        self.assertEqual(rule._evaluate(settle_seconds=0), 1)
        self.assertEqual(rule.delivery_ids.error_refs, [error["error_id"]])

    def test_frequency_trigger_with_cooldown(self):
        rule = self.rule(trigger="frequency", threshold=3, window_minutes=60, action_activity=True,
                         alert_user_id=self.rel_manager.id)  # fmt: skip
        busy = self.upsert()
        for __ in range(3):
            self.upsert(fingerprint=busy["fingerprint"])
        quiet = self.upsert()
        self.upsert(fingerprint=quiet["fingerprint"], occurred_at=self.hours_ago(3))
        self.upsert(fingerprint=quiet["fingerprint"])
        self.assertEqual(rule._evaluate(settle_seconds=0), 1)
        self.assertEqual(rule.delivery_ids.error_refs, [busy["error_id"]])
        self.upsert(fingerprint=busy["fingerprint"])
        self.assertEqual(rule._evaluate(settle_seconds=0), 0, "alerted once per window")

    def test_spike_trigger_against_own_baseline(self):
        rule = self.rule(trigger="spike", threshold=5, window_minutes=60, baseline_days=1, spike_factor=3.0,
                         action_activity=True, alert_user_id=self.rel_manager.id)  # fmt: skip
        fresh = self.upsert()
        steady = self.upsert()
        for __ in range(5):
            self.upsert(fingerprint=fresh["fingerprint"])
            self.upsert(fingerprint=steady["fingerprint"])
        # steady: 46 occurrences over the 23 baseline hours = 2 per hour; 6 now is not > 3 x 2
        for hour in range(2, 25):
            for __ in range(2):
                self.upsert(fingerprint=steady["fingerprint"], occurred_at=self.hours_ago(hour - 0.5))
        self.assertEqual(rule._evaluate(settle_seconds=0), 1)
        self.assertEqual(rule.delivery_ids.error_refs, [fresh["error_id"]])

    def test_environment_condition(self):
        if "environment" not in ops_store.ErrorOccurrence.__dataclass_fields__:
            self.skipTest("occurrence environments (ops migration 0010) are not in this checkout yet")
        rule = self.rule(environments="production", action_activity=True, alert_user_id=self.rel_manager.id)
        hits = []
        for env_name in ("production", "staging"):
            result = ops_store.upsert_error_on(
                self.env.cr,
                ops_store.ErrorOccurrence(
                    source="bridge", occurrence_id=uuid.uuid4().hex, fingerprint=f"fp1:env{uuid.uuid4().hex[:28]}",
                    code="WEBHOOK.SIGNATURE_INVALID", severity="high", message=f"in {env_name}",
                    occurred_at=datetime.now(UTC), environment=env_name,
                ),
            )  # fmt: skip
            hits.append(result.error_id)
        rule._evaluate(settle_seconds=0)
        self.assertEqual(rule.delivery_ids.error_refs, [hits[0]])

    # ------------------------------------------------------------------ input and secrets

    def test_bad_rule_input_is_refused_clearly(self):
        cases = [
            ({"action_webhook": True, "webhook_url": "ftp://example.com/x", "webhook_secret": self.secret}, "http://"),
            ({"action_webhook": True, "webhook_url": "https://", "webhook_secret": self.secret}, "no host"),
            ({"action_webhook": True, "webhook_url": "https://u:p@example.com/", "webhook_secret": self.secret},
             "credentials"),
            ({"action_webhook": True, "webhook_url": "https://exa mple.com/", "webhook_secret": self.secret}, "spaces"),
            ({"action_webhook": True, "webhook_url": "https://example.com/"}, "signing secret"),
            ({"action_webhook": True, "webhook_url": "https://example.com/",
              "webhook_secret": "hunter2"}, "whsec_"),  # pragma: allowlist secret
            ({"action_webhook": True, "webhook_url": "https://example.com/",
              "webhook_secret": "whsec_c2hvcnQ="}, "bytes"),  # pragma: allowlist secret
            ({"trigger": "frequency", "window_minutes": -5}, "window"),
            ({"trigger": "frequency", "window_minutes": 0}, "window"),
            ({"trigger": "frequency", "threshold": -1}, "negative"),
            ({"trigger": "spike", "spike_factor": 0.5}, "spike factor"),
            ({"rate_limit_count": 0}, "rate limit"),
            ({"action_email": False}, "at least one action"),
            ({"action_email": False, "action_activity": True}, "user"),
        ]  # fmt: skip
        for vals, expected in cases:
            with (
                self.subTest(vals=vals),
                self.assertRaises(ValidationError) as caught,
                self.env.cr.savepoint(),
            ):
                self.Rule.create({"name": "bad", "action_email": True, **vals}).flush_recordset()
            self.assertIn(expected, str(caught.exception))
            self.assertNotIn("hunter2", str(caught.exception))

    def test_webhook_secret_is_write_only(self):
        receiver = self.receiver()
        rule = self.webhook_rule(receiver)
        self.assertEqual(rule.read(["webhook_secret"])[0]["webhook_secret"], "")
        self.assertTrue(rule.webhook_secret_set)
        exported = rule.export_data(["webhook_secret", "webhook_url"])["datas"]
        self.assertNotIn(self.secret, json.dumps(exported))
        self.assertEqual(rule._webhook_secret(), self.secret)
        # an empty input keeps it; a new one replaces it
        rule.write({"webhook_secret": ""})
        self.assertEqual(rule._webhook_secret(), self.secret)
        other = self.Rule.new_webhook_secret()
        rule.write({"webhook_secret": other})
        self.assertEqual(rule._webhook_secret(), other)
        # a Reliability User reads the rule, not its webhook
        with self.assertRaises(AccessError):
            rule.with_user(self.rel_user).read(["webhook_url"])
        with self.assertRaises(AccessError):
            rule.with_user(self.rel_user).write({"webhook_secret": other})
        self.assertNotIn("webhook_secret_value", rule._fields)
        # the shared write-only field (ipai.webhook.secret.mixin) keeps the rule form's labels
        self.assertEqual(
            (rule._fields["webhook_secret"].string, rule._fields["webhook_secret_set"].string),
            ("Signing secret", "Secret set"),
        )
        copy = rule.copy()
        self.assertFalse(copy.action_webhook)
        self.assertFalse(copy.webhook_secret_set)

    def test_cron_evaluates_and_delivers_in_bounded_time(self):
        receiver = self.receiver()
        rule = self.webhook_rule(receiver, digest=True)
        self.new_errors(5)
        # the cron settles new rows before reading them; this transaction's rows are "now"
        self.env.cr.execute(
            "UPDATE ops.agent_errors SET created_at = created_at - interval '1 minute' WHERE id > %s",
            [rule.last_error_id],
        )
        started = time.monotonic()
        self.assertEqual(self.Rule._cron_evaluate(), 1)
        self.assertEqual(self.Delivery._cron_deliver(), 1)
        self.assertLess(time.monotonic() - started, 20)
        self.assertEqual(len(receiver.requests), 1)

    def test_retry_now_and_who_may_use_the_buttons(self):
        receiver = self.receiver(status=500)
        rule = self.webhook_rule(receiver, max_attempts=1)
        self.new_errors(1)
        rule._evaluate(settle_seconds=0)
        self.deliver()
        delivery = rule.delivery_ids
        self.assertEqual((delivery.state, delivery.attempts), ("failed", 1))
        with self.assertRaises(AccessError):
            delivery.with_user(self.rel_user).action_retry_now()
        with self.assertRaises(AccessError):
            rule.with_user(self.rel_user).action_evaluate_now()
        receiver.status = 200
        delivery.with_user(self.rel_manager).action_retry_now()
        self.assertEqual(delivery.state, "retrying")
        self.deliver()
        self.assertEqual((delivery.state, delivery.response_status), ("sent", 200))
        self.assertEqual(rule.with_user(self.rel_user).delivery_count, 1)
        action = rule.with_user(self.rel_user).action_view_deliveries()
        self.assertEqual(self.Delivery.with_user(self.rel_user).search(action["domain"]), delivery)

    def test_views_hide_the_webhook_from_users(self):
        manager_form = self.Rule.with_user(self.rel_manager).get_views([(False, "form")])["views"]["form"]["arch"]
        user_form = self.Rule.with_user(self.rel_user).get_views([(False, "form")])["views"]["form"]["arch"]
        self.assertIn('name="webhook_url"', manager_form)
        self.assertIn('name="webhook_secret"', manager_form)
        self.assertNotIn('name="webhook_url"', user_form)
        self.assertNotIn('name="webhook_secret"', user_form)
        self.assertIn('name="delivery_ids"', user_form)

    def test_email_recipients_followers_teams_and_error_followers(self):
        member = self.env["res.partner"].create({"name": "Team member", "email": "member@example.com"})
        member_user = self.env["res.users"].create(
            {"name": "Member", "login": "alert_member", "partner_id": member.id,
             "group_ids": [(6, 0, [self.env.ref("ipai_reliability.group_ipai_reliability_user").id])]}
        )  # fmt: skip
        team = self.env["ipai.reliability.team"].create(
            {"name": "Platform", "owner": "platform-alerts", "member_ids": [(6, 0, member_user.ids)]}
        )
        follower = self.env["res.partner"].create({"name": "Rule follower", "email": "follower@example.com"})
        watcher = self.env["res.partner"].create({"name": "Error watcher", "email": "watcher@example.com"})
        no_email = self.env["res.partner"].create({"name": "No email"})
        rule = self.rule(
            action_email=True, team_ids=[(6, 0, team.ids)], partner_ids=[(6, 0, (self.oncall | no_email).ids)]
        )
        rule.message_subscribe(partner_ids=follower.ids)
        error = self.upsert()
        self.error(error).message_subscribe(partner_ids=watcher.ids)
        rule._evaluate(settle_seconds=0)
        recipients = rule.delivery_ids._recipients()
        self.assertEqual(
            set(recipients.mapped("email")),
            {"oncall@example.com", "member@example.com", "follower@example.com", "watcher@example.com"},
        )
        rule.error_followers = False
        self.assertNotIn("watcher@example.com", rule.delivery_ids._recipients().mapped("email"))

    def test_a_rule_failing_in_the_database_does_not_stop_the_others(self):
        broken = self.rule(action_activity=True, alert_user_id=self.rel_manager.id, digest=True)
        fine = self.rule(action_activity=True, alert_user_id=self.rel_manager.id, digest=True)
        self.new_errors(2)
        # a statement the database cancels, as the statement timeout does with a slow query
        original = type(broken)._match_new

        def slow(rule, where, upper):
            if rule == broken:
                rule.env.cr.execute("SELECT pg_sleep(5)")
            return original(rule, where, upper)

        with (
            patch.object(type(broken), "_match_new", slow),
            patch("odoo.addons.ipai_reliability.models.ipai_alert_rule.EVALUATE_STATEMENT_SECONDS", 0.2),
        ):
            queued = (broken | fine)._evaluate(settle_seconds=0)
        self.assertEqual(queued, 1)
        self.assertFalse(broken.delivery_ids)
        self.assertIn("QueryCanceled", broken.evaluation_note)
        self.assertEqual(len(fine.delivery_ids), 1)
        self.env.cr.execute("SHOW statement_timeout")
        self.assertNotEqual(self.env.cr.fetchone()[0], "200ms", "the evaluation's timeout does not outlive it")
