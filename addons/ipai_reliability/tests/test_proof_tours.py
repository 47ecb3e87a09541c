"""Proof in a real browser (issue 17, static/tests/tours/reliability_tours.js): write a resolution
record from an error in the Agent Errors console and submit it for review; create an alert
rule for new errors with the email action, then see a new error's email reach a real SMTP
server on loopback (aiosmtpd) through the evaluation and delivery crons. The rows are written
through ipai_ops' store, the clicks are Odoo's tour runner's, and what the database (and the
SMTP server) holds afterwards is checked here. Needs Chromium (skipped by Odoo's test runner
when it is not installed)."""

from email.header import decode_header, make_header
from unittest.mock import patch

from odoo.tests import HttpCase, new_test_user, tagged

from .common import ReliabilityCase
from .test_alerts import loopback_smtp

# the same values as in reliability_tours.js
RESOLUTION_CODE = "APP.TOUR_PROOF_RESOLUTION"
RESOLUTION_TITLE = "The proxy re-encodes the webhook body"
SUMMARY = "Webhook signatures failed for every event behind the new proxy for 40 minutes"
ROOT_CAUSE = "The proxy re-encoded the JSON body before the signature was checked"
RULE_NAME = "Proof tour: new errors by email"
RECIPIENT = "Proof On Call"
RECIPIENT_EMAIL = "proof-oncall@example.com"


@tagged("post_install", "-at_install")
class TestProofTours(ReliabilityCase, HttpCase):
    def test_create_a_resolution_record_from_an_error_and_submit_it_for_review(self):
        assignee = new_test_user(
            self.env,
            login="proof_assignee",
            name="Proof Assignee",
            groups="base.group_user,ipai_reliability.group_ipai_reliability_user",
        )
        error = self.error(
            self.upsert(code=RESOLUTION_CODE, service="billing", message="Signature mismatch for event 77")
        )
        error.action_assign(assignee)
        self.assertEqual(error.user_id, assignee)
        Resolution = self.env["ipai.resolution"]
        self.assertFalse(Resolution.search([("code", "=", RESOLUTION_CODE)]))

        self.start_tour("/odoo", "ipai_reliability_resolution_tour", login="admin", timeout=180)

        self.env.invalidate_all()
        resolution = Resolution.search([("code", "=", RESOLUTION_CODE)])
        self.assertEqual(len(resolution), 1)
        self.assertEqual(
            (resolution.name, resolution.summary, resolution.root_cause, resolution.stage),
            (RESOLUTION_TITLE, SUMMARY, ROOT_CAUSE, "review"),
        )
        # linked to the error it came from, by id and by fingerprint
        self.assertEqual((resolution.error_id, resolution.fingerprint), (error, error.fingerprint))
        self.assertIn(resolution, error.resolution_ids)
        # the owner is the error's assignee, not admin who wrote it in the browser
        self.assertEqual(resolution.user_id, assignee)
        self.assertEqual(resolution.create_uid, self.env.ref("base.user_admin"))
        self.assertEqual(resolution.origin, "odoo")
        self.assertTrue(resolution.ref)

    def test_an_alert_rule_made_in_the_browser_emails_a_new_error_to_a_real_smtp_server(self):
        inbox = loopback_smtp(self)
        self.env.company.email = "alerts@example.com"
        recipient = self.env["res.partner"].create({"name": RECIPIENT, "email": RECIPIENT_EMAIL})
        Rule = self.env["ipai.alert.rule"]
        self.assertFalse(Rule.search([("name", "=", RULE_NAME)]))

        self.start_tour("/odoo", "ipai_reliability_alert_rule_tour", login="admin", timeout=180)

        self.env.invalidate_all()
        rule = Rule.search([("name", "=", RULE_NAME)])
        self.assertEqual(len(rule), 1)
        self.assertEqual((rule.trigger, rule.action_email, rule.action_webhook), ("new", True, False))
        self.assertEqual(rule.partner_ids, recipient)
        # the first evaluation only sets the rule's starting point (no alert on history)
        Rule._cron_evaluate()
        self.assertTrue(rule.last_error_id or rule.last_evaluated_at)
        result = self.upsert(code="WEBHOOK.SIGNATURE_INVALID", message="Signature mismatch for order 1717")
        # the cron leaves rows younger than its settle time for the next run; this one is older
        self.env.cr.execute(
            "UPDATE ops.agent_errors SET created_at = created_at - interval '1 minute' WHERE id = %s",
            [result["error_id"]],
        )
        self.assertEqual(Rule._cron_evaluate(), 1)
        # Odoo suppresses SMTP while tests run; lift that so the real path to the server runs
        with patch.object(type(self.env["ir.mail_server"]), "_disable_send", lambda *args: False):
            self.assertEqual(self.env["ipai.alert.delivery"]._cron_deliver(), 1)
        delivery = rule.delivery_ids
        self.assertEqual((delivery.channel, delivery.state, delivery.attempts), ("email", "sent", 1))
        self.assertEqual(delivery.error_id.id, result["error_id"])
        self.assertTrue(inbox.arrived.wait(10), "the SMTP server received nothing")
        self.assertEqual(len(inbox.messages), 1)
        rcpt, message = inbox.messages[0]
        self.assertIn(RECIPIENT_EMAIL, rcpt)
        subject = str(make_header(decode_header(message["Subject"])))
        self.assertIn("WEBHOOK.SIGNATURE_INVALID", subject)
        self.assertIn("New error", subject)
        html = message.get_body(preferencelist=("html",)).get_content()
        self.assertIn("Signature mismatch for order 1717", html)
        self.assertIn(f"/odoo/ipai.agent.error/{result['error_id']}", html)
