"""Tours through the Agent Errors console in a real browser (static/tests/tours/reliability_tours.js):
triage today's top error (assign, comment, snooze with a preset, resolve in a release) and
create a failure mode from an unclassified error. The rows are written through ipai_ops'
store, the clicks are Odoo's tour runner's, and what the database holds afterwards is checked
here. Needs Chromium (skipped by Odoo's test runner when it is not installed)."""

import re
from datetime import datetime, timedelta

from odoo.tests import HttpCase, new_test_user, tagged

from .common import ReliabilityCase

# the same values as in reliability_tours.js
TOP_CODE = "APP.TOUR_TRIAGE_TOP"
ASSIGNEE = "Tour Assignee"
COMMENT = "Looking at it: the proxy re-encodes the webhook body"
RELEASE = "2.3.5"
PROPOSED_CODE = "BILLING_API.QUOTA_EXCEEDED_TENANT_AFTER"
MODE_NAME = "Tenant quota exceeded"
QUOTA_MESSAGE = "Quota exceeded for tenant 'acme' after 1200 requests at 2026-01-01T10:00:00Z"


@tagged("post_install", "-at_install")
class TestTriageTour(ReliabilityCase, HttpCase):
    def _ops_row(self, error_id):
        self.env.cr.execute(
            "SELECT status, resolved_in_version, snooze_until FROM ops.agent_errors WHERE id = %s", (error_id,)
        )
        return self.env.cr.fetchone()

    def test_triage_the_top_error_assign_comment_snooze_resolve_in_release(self):
        assignee = new_test_user(
            self.env,
            login="tour_assignee",
            name=ASSIGNEE,
            groups="base.group_user,ipai_reliability.group_ipai_reliability_user",
        )
        top = None
        for __ in range(40):
            top = self.upsert(
                top and top["fingerprint"],
                code=TOP_CODE,
                service="billing",
                service_version="2.3.4",
                message="Signature mismatch for event 42",
            )
        self.upsert(code="APP.TOUR_TRIAGE_OTHER", message="a quieter one")
        error = self.error(top)
        # the console's own order and default filters put it first (rows other tests left
        # committed would make the tour open another error)
        admin = self.env.ref("base.user_admin")
        domain = [("status", "in", ("open", "regressed")), ("last_seen", ">=", "today")]
        first = self.Error.with_user(admin).search(domain, order="period_count desc, last_seen desc", limit=1)
        self.assertEqual(first, error)
        self.assertEqual((error.status, error.user_id), ("open", self.env["res.users"]))

        self.start_tour("/odoo", "ipai_reliability_triage_tour", login="admin", timeout=180)

        self.env.invalidate_all()
        self.assertEqual(error.status, "resolved")
        self.assertEqual(error.resolved_in_version, RELEASE)
        self.assertEqual(error.user_id, assignee)
        status, version, snooze_until = self._ops_row(error.id)
        self.assertEqual((status, version, snooze_until), ("resolved", RELEASE, None))
        messages = error.message_ids
        comment = messages.filtered(lambda m: COMMENT in (m.body or ""))
        self.assertEqual(len(comment), 1, messages.mapped("body"))
        self.assertEqual((comment.message_type, comment.author_id), ("comment", admin.partner_id))
        self.assertEqual(comment.subtype_id, self.env.ref("mail.mt_comment"))
        # every step left its trace in the chatter: assignment, a one-week snooze, the release
        tracked = messages.tracking_value_ids
        self.assertIn(ASSIGNEE, tracked.filtered(lambda t: t.field_id.name == "user_id").mapped("new_value_char"))
        statuses = tracked.filtered(lambda t: t.field_id.name == "status").mapped("new_value_char")
        self.assertIn("Snoozed", statuses)
        self.assertIn("Resolved", statuses)
        # the "1 week" preset, not the dialog's default day
        snoozed = messages.filtered(lambda m: "Snoozed until" in (m.body or ""))
        self.assertEqual(len(snoozed), 1, messages.mapped("body"))
        until = datetime.strptime(re.search(r"until (\S+ \S+) UTC", snoozed.body).group(1), "%Y-%m-%d %H:%M:%S")
        self.assertAlmostEqual(until - snoozed.date, timedelta(weeks=1), delta=timedelta(minutes=5))
        self.assertTrue(messages.filtered(lambda m: f"Resolved in release {RELEASE}" in (m.body or "")))
        self.assertIn(assignee.partner_id, error.message_partner_ids)

    def test_create_a_failure_mode_from_an_unclassified_error(self):
        result = self.upsert(code="UNCLASSIFIED.UNKNOWN", service="billing-api", message=QUOTA_MESSAGE)
        error = self.error(result)
        self.assertTrue(error.unclassified)
        self.assertFalse(self.Mode.search([("code", "=", PROPOSED_CODE)]))

        self.start_tour("/odoo", "ipai_reliability_failure_mode_tour", login="admin", timeout=180)

        self.env.invalidate_all()
        mode = self.Mode.search([("code", "=", PROPOSED_CODE)])
        self.assertEqual(len(mode), 1)
        self.assertEqual((mode.name, mode.lifecycle, mode.origin), (MODE_NAME, "active", "odoo"))
        self.assertRegex(QUOTA_MESSAGE, mode.signature_ids.pattern)
        # the source error is reclassified and taught
        self.assertEqual((error.code, error.unclassified), (PROPOSED_CODE, False))
        self.env.cr.execute(
            "SELECT code, previous_code FROM ops.classification_examples WHERE error_id = %s", (error.id,)
        )
        self.assertEqual(self.env.cr.fetchall(), [(PROPOSED_CODE, "UNCLASSIFIED.UNKNOWN")])
