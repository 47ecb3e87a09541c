"""Merging errors from the console: the ops rows (ops.merge_agent_errors) and the Odoo side."""

from odoo.exceptions import UserError
from odoo.tests import Form, tagged

from .common import ReliabilityCase


@tagged("post_install", "-at_install")
class TestMerge(ReliabilityCase):
    def setUp(self):
        super().setUp()
        # one failure reported by two sources: two fingerprints, two groups
        first = self.upsert(source="odoo", message="Signature mismatch for event 42")
        self.upsert(first["fingerprint"], source="odoo")
        self.upsert(first["fingerprint"], source="odoo")
        second = self.upsert(source="bridge", message="signature mismatch (event 42)")
        self.upsert(second["fingerprint"], source="bridge")
        self.kept, self.merged = self.error(first), self.error(second)
        self.merged_fp = second["fingerprint"]

    def test_merge_through_the_dialog(self):
        errors = self.kept | self.merged
        action = errors.action_merge_errors()
        with Form(self.env[action["res_model"]].with_context(**action["context"])) as form:
            self.assertEqual(form.kept_error_id, self.kept, "the error with the most occurrences is kept")
            self.assertEqual(form.total_count, 5)
        result = form.record.action_merge()
        self.assertEqual((result["res_model"], result["res_id"]), ("ipai.agent.error", self.kept.id))
        self.assertEqual(self.kept.count, 5)
        self.assertEqual((self.merged.status, self.merged.count), ("merged", 0))
        self.assertEqual(self.merged.merged_into_id, self.kept)
        self.env.cr.execute("SELECT count(*) FROM ops.agent_error_occurrences WHERE error_id = %s", [self.kept.id])
        self.assertEqual(self.env.cr.fetchone()[0], 5)
        # later occurrences of the merged fingerprint count on the kept error
        later = self.upsert(self.merged_fp, source="bridge")
        self.assertEqual(later["error_id"], self.kept.id)
        self.assertEqual(self.error(later).count, 6)
        # the merged error leaves the default console (open or regressed) and shows under Merged
        on_fire = self.Error.search([("status", "in", ("open", "regressed")), ("id", "in", errors.ids)])
        self.assertEqual(on_fire, self.kept)

    def test_history_followers_todos_and_resolutions_move(self):
        self.merged.message_post(body="seen from the bridge side too", message_type="comment")
        self.merged.message_subscribe(partner_ids=self.rel_manager.partner_id.ids)
        self.merged.action_assign(self.rel_user)
        resolution = self.env["ipai.resolution"].create(
            {"name": "proxy", "failure_mode_id": self.merged.failure_mode_id.id, "error_id": self.merged.id}
        )
        comment = self.merged.message_ids.filtered(lambda m: "bridge side" in (m.body or ""))
        (self.kept | self.merged)._merge_into(self.kept)
        self.Error.invalidate_model()
        self.assertEqual((comment.model, comment.res_id), ("ipai.agent.error", self.kept.id))
        self.assertIn(comment, self.kept.message_ids)
        self.assertIn(self.rel_manager.partner_id, self.kept.message_partner_ids)
        self.assertEqual(self.kept.activity_ids.user_id, self.rel_user, "the to-do moves to the kept error")
        self.assertEqual(resolution.error_id, self.kept)
        # the kept error had no assignee: it takes the merged one's
        self.assertEqual(self.kept.user_id, self.rel_user)
        summary = self.kept.message_ids[0]
        self.assertIn("Merged into this error", summary.body)
        self.assertIn(self.merged_fp, summary.body)
        self.assertIn(f"Merged into #{self.kept.id}", self.merged.message_ids[0].body)
        status = self.merged.message_ids[0].sudo().tracking_value_ids.filtered(lambda v: v.field_id.name == "status")
        self.assertEqual(status.new_value_char, "Merged")

    def test_refusals(self):
        with self.assertRaisesRegex(UserError, "two or more"):
            self.kept.action_merge_errors()
        with self.assertRaisesRegex(UserError, "besides the one to keep"):
            self.kept._merge_into(self.kept)
        other = self.error(self.upsert())
        (self.kept | self.merged)._merge_into(self.kept)
        with self.assertRaisesRegex(UserError, "Cannot merge: error .* is merged already"):
            (other | self.merged)._merge_into(other)
        with self.assertRaisesRegex(UserError, "Cannot merge: error .* is merged into error"):
            (other | self.merged)._merge_into(self.merged)
        # the transaction is still usable and nothing moved
        self.assertEqual(other.count, 1)
        wizard = self.env["ipai.agent.error.merge"].create({"error_ids": [(6, 0, (self.kept | other).ids)]})
        with self.assertRaisesRegex(UserError, "Choose which"):
            wizard.action_merge()
