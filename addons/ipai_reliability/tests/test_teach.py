import base64

from odoo.exceptions import AccessError, UserError
from odoo.tests import tagged

from .common import ReliabilityCase

SHAPE = "Spool {n} tipped over on shard kappa after {n} passes"


@tagged("post_install", "-at_install")
class TestSetFailureCode(ReliabilityCase):
    def _unclassified(self, message, error_type="SpoolError"):
        return self.error(self.upsert(code="UNCLASSIFIED.UNKNOWN", message=message, error_type=error_type))

    def _examples(self):
        self.env.cr.execute(
            "SELECT code, error_type, text, error_id, previous_code, taught_by"
            " FROM ops.classification_examples ORDER BY id"
        )
        return self.env.cr.fetchall()

    def test_a_manager_sets_the_code_the_example_is_kept_and_the_same_shape_follows(self):
        error = self._unclassified(SHAPE.format(n=1))
        sibling = self._unclassified(SHAPE.format(n=7))
        other_type = self._unclassified(SHAPE.format(n=3), error_type="OtherError")
        other_shape = self._unclassified("Spool 4 is fine but slow")
        mode = self.Mode.search([("code", "=", "INTENT.STATE_CONFLICT")])
        action = error.with_user(self.rel_manager).action_set_failure_code()
        self.assertEqual((action["res_model"], action["target"]), ("ipai.agent.error.teach", "new"))
        wizard = (
            self.env["ipai.agent.error.teach"]
            .with_user(self.rel_manager)
            .with_context(**action["context"])
            .create({"failure_mode_id": mode.id})
        )
        self.assertEqual(wizard.error_id, error)
        done = wizard.action_apply()
        self.assertEqual(done["params"]["next"], {"type": "ir.actions.act_window_close"})
        self.assertIn("1 unclassified error(s) of the same shape too", done["params"]["message"])
        (error | sibling | other_type | other_shape).invalidate_recordset()
        self.assertEqual((error.code, sibling.code), ("INTENT.STATE_CONFLICT", "INTENT.STATE_CONFLICT"))
        self.assertEqual(error.severity, mode.severity)
        self.assertEqual((other_type.code, other_shape.code), ("UNCLASSIFIED.UNKNOWN", "UNCLASSIFIED.UNKNOWN"))
        self.assertEqual(
            self._examples(),
            [
                (
                    "INTENT.STATE_CONFLICT",
                    "SpoolError",
                    SHAPE.format(n=1),
                    error.id,
                    "UNCLASSIFIED.UNKNOWN",
                    "rel_manager",
                )
            ],
        )

    def test_a_misclassified_error_is_corrected_too(self):
        error = self.error(self.upsert(code="WEBHOOK.SIGNATURE_INVALID", message="Spool 2 tipped over"))
        error.with_user(self.rel_manager)._teach(self.Mode.search([("code", "=", "INTENT.STATE_CONFLICT")]))
        error.invalidate_recordset()
        self.assertEqual(error.code, "INTENT.STATE_CONFLICT")
        self.assertEqual(self._examples()[0][4], "WEBHOOK.SIGNATURE_INVALID")

    def test_only_managers_teach_and_only_real_codes(self):
        error = self._unclassified(SHAPE.format(n=2))
        mode = self.Mode.search([("code", "=", "INTENT.STATE_CONFLICT")])
        with self.assertRaises(AccessError):
            error.with_user(self.rel_user).action_set_failure_code()
        with self.assertRaises(AccessError):
            error.with_user(self.rel_user)._teach(mode)
        fallback = self.Mode.search([("fallback", "=", True)], limit=1)
        with self.assertRaisesRegex(UserError, "other than the fallback"):
            error.with_user(self.rel_manager)._teach(fallback)
        mode.lifecycle = "deprecated"
        with self.assertRaisesRegex(UserError, "active failure code"):
            error.with_user(self.rel_manager)._teach(mode)
        empty = self.error(self.upsert(code="UNCLASSIFIED.UNKNOWN", message="", error_type=None))
        mode.lifecycle = "active"
        with self.assertRaisesRegex(UserError, "no message or type"):
            empty.with_user(self.rel_manager)._teach(mode)
        self.assertEqual(self._examples(), [], "nothing was taught")
        error.invalidate_recordset()
        self.assertEqual(error.code, "UNCLASSIFIED.UNKNOWN")
        # a user cannot reach the wizard's model at all
        with self.assertRaises(AccessError):
            self.env["ipai.agent.error.teach"].with_user(self.rel_user).create(
                {"error_id": error.id, "failure_mode_id": mode.id}
            )


@tagged("post_install", "-at_install")
class TestClassificationQuality(ReliabilityCase):
    def _envelope_sample(self, matched_by):
        return {"ok": False, "error": {"matched_by": matched_by}}

    def test_how_each_error_got_its_code_and_the_corrections_per_code(self):
        signed = self.error(self.upsert(code="WEBHOOK.SIGNATURE_INVALID", sample=self._envelope_sample("signature")))
        learned = self.error(self.upsert(code="ENV.KEY_MISSING", sample=self._envelope_sample("model")))
        backlog = self.error(self.upsert(code="UNCLASSIFIED.UNKNOWN", message="Spool 9 is stuck"))
        wrong = self.error(
            self.upsert(
                code="WEBHOOK.SIGNATURE_INVALID", message="Spool 8 tipped", sample=self._envelope_sample("signature")
            )
        )
        conflict = self.Mode.search([("code", "=", "INTENT.STATE_CONFLICT")])
        wrong.with_user(self.rel_manager)._teach(conflict)
        Quality = self.env["ipai.classification.quality"].with_user(self.rel_user)
        decided = {r.id: (r.decided_by, r.unclassified, r.taught) for r in Quality.search([])}
        self.assertEqual(decided[signed.id], ("signature", False, False))
        self.assertEqual(decided[learned.id], ("model", False, False))
        self.assertEqual(decided[backlog.id], ("fallback", True, False))
        self.assertEqual(decided[wrong.id], ("person", False, True))
        self.assertIn(backlog.id, Quality.search([("unclassified", "=", True)]).ids)
        per_code = {r.code: r for r in self.env["ipai.classification.code.quality"].with_user(self.rel_user).search([])}
        webhook = per_code["WEBHOOK.SIGNATURE_INVALID"]
        self.assertEqual((webhook.errors, webhook.corrected_away), (1, 1))
        self.assertAlmostEqual(webhook.precision, 0.5)  # given to 2 errors, 1 corrected away
        self.assertEqual(
            (per_code["INTENT.STATE_CONFLICT"].taught, per_code["INTENT.STATE_CONFLICT"].corrected_to), (1, 1)
        )
        self.assertNotIn("UNCLASSIFIED.UNKNOWN", per_code)
        with self.assertRaises(AccessError):
            self.env["ipai.classification.quality"].with_user(self.plain_user).search([])


@tagged("post_install", "-at_install")
class TestSuggestSignature(ReliabilityCase):
    def _teach_three(self):
        mode = self.Mode.search([("code", "=", "INTENT.STATE_CONFLICT")])
        for n, word in ((1, "kappa"), (22, "lambda"), (3, "sigma")):
            error = self.error(
                self.upsert(
                    code="UNCLASSIFIED.UNKNOWN",
                    message=f"zorblax spool {n} tipped over on shard {word}; sweeper gave up after {n * 3} passes",
                )
            )
            error.with_user(self.rel_manager)._teach(mode)
        return mode.with_user(self.rel_manager)

    def test_a_suggested_signature_is_checked_again_and_added_by_a_person(self):
        mode = self._teach_three()
        # another error's message the signature must not match
        self.upsert(
            code="WEBHOOK.SIGNATURE_INVALID",
            message="zorblax spool 5 tipped over on shard x; sweeper gave up after 2 passes too",
        )
        with self.assertRaisesRegex(UserError, "No signature to suggest"):
            mode.action_suggest_signature()
        self.env.cr.execute("DELETE FROM ops.agent_errors WHERE code = 'WEBHOOK.SIGNATURE_INVALID'")
        action = mode.action_suggest_signature()
        wizard = self.env[action["res_model"]].with_user(self.rel_manager).browse(action["res_id"])
        self.assertIn("zorblax", wizard.pattern)
        self.assertNotIn("kappa", wizard.pattern)
        self.assertEqual(wizard.examples, 3)
        # an edit is checked again
        wizard.pattern = "zorblax spool 1 "
        with self.assertRaisesRegex(UserError, "misses 2 taught example"):
            wizard.action_accept()
        wizard.pattern = "(?=x)"
        with self.assertRaisesRegex(UserError, "does not compile"):
            wizard.action_accept()
        wizard.pattern = r"zorblax\s+spool.{1,200}?tipped\s+over"
        before = len(mode.signature_ids)
        done = wizard.action_accept()
        self.assertEqual((done["res_model"], done["res_id"]), ("ipai.failure.mode", mode.id))
        self.assertEqual(len(mode.signature_ids), before + 1)
        self.assertEqual(mode.signature_ids[-1].pattern, r"zorblax\s+spool.{1,200}?tipped\s+over")
        # write-back is off: the registry and the runbook quoting the signature are attached
        names = self.env["ir.attachment"].search([("res_model", "=", mode._name), ("res_id", "=", mode.id)])
        runbook = names.filtered(lambda a: a.name == "INTENT.STATE_CONFLICT.md")
        self.assertIn(r"`zorblax\s+spool.{1,200}?tipped\s+over`", base64.b64decode(runbook.datas).decode())
        self.assertIn("failure_modes.yaml", names.mapped("name"))

    def test_only_managers_and_only_with_taught_examples(self):
        mode = self.Mode.search([("code", "=", "ENV.KEY_MISSING")])
        with self.assertRaisesRegex(UserError, "no taught example yet"):
            mode.with_user(self.rel_manager).action_suggest_signature()
        with self.assertRaises(AccessError):
            mode.with_user(self.rel_user).action_suggest_signature()
