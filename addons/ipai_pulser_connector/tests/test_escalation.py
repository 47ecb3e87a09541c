import json
import re
import uuid

from lxml import etree
from odoo import SUPERUSER_ID, api
from odoo.addons.ipai_reliability.tests.common import CommittedOpsMixin, read_bundle
from odoo.exceptions import UserError
from odoo.tests import tagged

from .common import PulserCase

SOURCE = "escalation-test"
SECRET = "ghp_esc4l4t10nT0k3nV4lue000000000"
PASSWORD = "hunter2-intent"
URL_RE = re.compile(r"/web/content/(\d+)\?download=true")


@tagged("post_install", "-at_install")
class TestIntentEscalation(CommittedOpsMixin, PulserCase):
    def _committed_failed_intent(self):
        """A ``test.crash`` intent submitted and failed by the worker on a cursor of its own and
        committed, as the cron does: the bundle reads Odoo's database on its own connection and
        sees committed rows only. The intent, its events and its ops error go after the test."""
        self.addCleanup(self.delete_committed, "ipai_pulser_intent", "source", SOURCE)
        message = f"boom {uuid.uuid4().hex[:8]}: upstream refused token {SECRET} (password={PASSWORD})"
        with self.registry.cursor() as cr:  # committed when the block exits
            intent, _created = api.Environment(cr, SUPERUSER_ID, {})["ipai.pulser.intent"]._submit(
                intent_type="test.crash",
                args={"message": message},
                source=SOURCE,
                work_item_ref="WI-ESC",
                priority=10_000,
            )
            intent_id = intent.id
        with self.registry.cursor() as cr:
            Intent = api.Environment(cr, SUPERUSER_ID, {})["ipai.pulser.intent"]
            stats = Intent._run_worker(limit=1, worker_id="odoo:test:escalation", commit=True)
            facts = Intent.browse(intent_id).read(
                ["ref", "state", "failure_code", "ops_error_id", "args", "failure_envelope"]
            )[0]
        if facts["ops_error_id"]:
            self.addCleanup(self.delete_committed, "ops.agent_errors", "id", facts["ops_error_id"])
        self.assertEqual(stats["failed"], 1)
        self.assertEqual((facts["state"], facts["failure_code"]), ("failed", "INTENT.HANDLER_CRASHED"))
        self.assertTrue(facts["ops_error_id"])
        # the raw secret really is stored (the intent's arguments): the bundle has to redact it
        self.assertIn(SECRET, facts["args"]["message"])
        return facts

    def test_bundle_of_a_failed_intent(self):
        facts = self._committed_failed_intent()
        admin = self.env.ref("base.user_admin").id
        # a cursor of its own: the test's transaction began before the intent was committed
        with self.registry.cursor() as cr:
            env = api.Environment(cr, admin, {})
            action = env["ipai.pulser.intent"].browse(facts["id"]).action_escalation_bundle()
            self.assertEqual(action["type"], "ir.actions.act_url")
            match = URL_RE.fullmatch(action["url"])
            self.assertTrue(match, action["url"])
            attachment = env["ir.attachment"].browse(int(match[1]))
            self.assertEqual((attachment.res_model, attachment.res_id), ("ipai.pulser.intent", facts["id"]))
            self.assertEqual(attachment.mimetype, "application/gzip")
            self.assertRegex(attachment.name, rf"^escalation-intent-{facts['ref']}-\d{{8}}T\d{{6}}Z\.tar\.gz$")
            top, members = read_bundle(attachment.raw)
            self.assertEqual(f"{top}.tar.gz", attachment.name)
            cr.rollback()  # the attachment was only needed for this test
        self.assertLessEqual(
            {"manifest.json", "README.txt", "envelope.json", "error.json", "intent.json"}, set(members)
        )
        manifest = json.loads(members["manifest.json"])
        self.assertEqual((manifest["kind"], manifest["ref"]), ("intent", f"intent:{facts['ref']}"))
        ids = manifest["ids"]
        self.assertEqual((ids["intent_ref"], ids["intent_id"]), (facts["ref"], facts["id"]))
        self.assertEqual(ids["error_id"], facts["ops_error_id"])
        self.assertEqual(ids["fingerprint"], facts["failure_envelope"]["error"]["fingerprint"])
        self.assertEqual(manifest["error"]["code"], "INTENT.HANDLER_CRASHED")
        self.assertEqual(manifest["error"]["runbook"], "docs/runbooks/failures/INTENT.HANDLER_CRASHED.md")
        self.assertEqual(manifest["status"]["intent"], "failed")
        self.assertEqual(manifest["command"]["intent_type"], "test.crash")
        self.assertIn("[REDACTED:", manifest["command"]["args"]["message"])
        self.assertEqual(manifest["envelope_problems"], [])
        envelope = json.loads(members["envelope.json"])
        self.assertEqual(envelope["context"]["intent_id"], facts["id"])
        self.assertEqual(json.loads(members["error.json"])["id"], facts["ops_error_id"])
        intent_json = json.loads(members["intent.json"])
        self.assertEqual(intent_json["intent"]["ref"], facts["ref"])
        self.assertEqual(
            [e["event_type"] for e in intent_json["events"]][-1:], ["attempt_failed"], "the audit trail is bundled"
        )
        for name, data in members.items():
            self.assertNotIn(SECRET.encode(), data, name)
            self.assertNotIn(PASSWORD.encode(), data, name)

    def test_intent_not_in_the_database_is_a_user_error(self):
        # Only in this test's transaction, never committed: to the bundle's own connection it
        # does not exist, like an intent deleted since the form was opened.
        intent = self.submit("test.crash", {"message": f"boom {uuid.uuid4().hex[:8]}"})
        self.run_worker()
        self.assertEqual(intent.state, "failed")
        # the worker committed the ops row on its own cursor: not left behind
        self.addCleanup(self.delete_committed, "ops.agent_errors", "id", intent.ops_error_id)
        with self.assertRaises(UserError) as caught:
            intent.action_escalation_bundle()
        self.assertIn("INTENT.NOT_FOUND", str(caught.exception))
        self.assertIn(intent.ref, str(caught.exception))

    def test_button_on_failed_and_dead_intents_only(self):
        arch = etree.fromstring(self.Intent.get_view(view_type="form")["arch"])
        [button] = arch.xpath("//header/button[@name='action_escalation_bundle']")
        self.assertEqual(button.get("invisible"), "state not in ('failed', 'dead') and not failure_code")
