import re

import yaml
from odoo.exceptions import UserError, ValidationError
from odoo.tests import Form, tagged

from ipai_ops import config

from .common import ReliabilityCase


def _template_shape():
    text = (config.repo_root() / "docs" / "resolutions" / "_template.md").read_text(encoding="utf-8")
    __, front, body = text.split("---", 2)
    keys = {line.split(":", 1)[0] for line in front.splitlines() if re.match(r"^[a-z_]+:", line)}
    sections = [line[3:].strip() for line in body.splitlines() if line.startswith("## ")]
    return keys, sections


@tagged("post_install", "-at_install")
class TestResolution(ReliabilityCase):
    def _resolution_from_error(self, error):
        action = error.action_create_resolution()
        self.assertEqual(action["res_model"], "ipai.resolution")
        with Form(self.env["ipai.resolution"].with_context(**action["context"])) as form:
            form.summary = "Agents got 401 on every intent"
            form.root_cause = "The proxy re-encodes JSON bodies"
            form.fix = "Verify the signature over the raw body"
        return form.record

    def test_create_from_error_prefills(self):
        result = self.upsert(service_version="1.2.0", trace_id="a" * 32)
        error = self.error(result)
        resolution = self._resolution_from_error(error)
        self.assertEqual(resolution.code, "WEBHOOK.SIGNATURE_INVALID")
        self.assertEqual(resolution.failure_mode_id, error.failure_mode_id)
        self.assertEqual(resolution.fingerprint, result["fingerprint"])
        self.assertEqual(resolution.error_id, error)
        self.assertEqual(resolution.incident_start, error.first_seen.replace(microsecond=0))
        self.assertEqual(resolution.stage, "draft")
        self.assertIn("a" * 32, resolution.evidence)
        self.assertIn("1.2.0", resolution.evidence)
        self.assertIn(resolution, error.resolution_ids)

    def test_stages_and_done_resolves_the_error_in_release(self):
        result = self.upsert(service_version="1.2.0")
        error = self.error(result)
        resolution = self._resolution_from_error(error)
        resolution.action_submit_review()
        self.assertEqual(resolution.stage, "review")
        with self.assertRaisesRegex(UserError, "PR link"):
            resolution.action_done()
        resolution.write({"pr_url": "https://github.com/o/r/pull/7", "fixed_in_release": "1.3.0"})
        resolution.action_done()
        self.assertEqual(resolution.stage, "done")
        self.assertTrue(resolution.date_done)
        error.invalidate_recordset()
        self.assertEqual((error.status, error.resolved_in_version), ("resolved", "1.3.0"))
        self.assertEqual(self.upsert(result["fingerprint"], service_version="1.2.5")["status"], "resolved")
        resolution.action_back_to_draft()
        self.assertEqual((resolution.stage, resolution.date_done), ("draft", False))

    def test_bad_input(self):
        mode = self.Mode.search([("code", "=", "INTENT.TIMEOUT")])
        with self.assertRaises(ValidationError):
            self.env["ipai.resolution"].create({"name": "x", "failure_mode_id": mode.id, "pr_url": "not a url"})
        with self.assertRaises(UserError):
            self.env["ipai.resolution"].create({"name": "no code"})
        resolution = self.env["ipai.resolution"].create({"name": "x", "failure_mode_id": mode.id})
        with self.assertRaises(ValidationError):
            resolution.write({"incident_start": "2026-01-02 00:00:00", "incident_end": "2026-01-01 00:00:00"})

    def test_export_markdown_follows_the_template(self):
        error = self.error(self.upsert())
        resolution = self._resolution_from_error(error)
        resolution.write(
            {
                "name": "WEBHOOK.SIGNATURE_INVALID: proxy re-encodes JSON",
                "pr_url": "https://github.com/o/r/pull/7",
                "fixed_in_release": "1.3.0",
                "regression_test": "tests/test_webhook.py::test_raw_body",
                "follow_ups": "- [ ] add an alert\n- [ ] update the runbook",
                "summary": "Webhooks failed for 2 hours.",
            }
        )
        text = resolution.to_markdown()
        __, front, body = text.split("---", 2)
        meta = yaml.safe_load(front)
        self.assertEqual(meta["code"], "WEBHOOK.SIGNATURE_INVALID")
        self.assertEqual(meta["fingerprints"], [error.fingerprint])
        self.assertEqual(meta["pr"], "https://github.com/o/r/pull/7")
        self.assertEqual(str(meta["resolved_in_version"]), "1.3.0")
        self.assertEqual(meta["regression_test"], "tests/test_webhook.py::test_raw_body")
        keys, sections = _template_shape()
        self.assertEqual(set(meta), keys)
        self.assertEqual([line[3:].strip() for line in body.splitlines() if line.startswith("## ")], sections)
        # The code once: the name loses the "CODE: " the heading puts back.
        self.assertEqual(resolution.name, "proxy re-encodes JSON")
        self.assertIn("\n# WEBHOOK.SIGNATURE_INVALID: proxy re-encodes JSON\n", body)
        self.assertIn("\n## Follow-ups\n\n- [ ] add an alert\n- [ ] update the runbook\n", body)
        # Its file is named after its id, set once when it was created (a later title change
        # does not move the file): docs/resolutions/<YYYY>/<MM>/<id>.md, as the gate wants.
        self.assertRegex(
            resolution.ref, r"^\d{4}-\d{2}-\d{2}_WEBHOOK\.SIGNATURE_INVALID_signature-mismatch-for-event-42$"
        )
        self.assertEqual(
            resolution.export_filename(),
            f"docs/resolutions/{resolution.ref[:4]}/{resolution.ref[5:7]}/{resolution.ref}.md",
        )
        self.assertEqual(meta["id"], resolution.ref)
        action = resolution.action_export_markdown()
        self.assertEqual(action["type"], "ir.actions.act_url")
        attachment = self.env["ir.attachment"].search(
            [("res_model", "=", "ipai.resolution"), ("res_id", "=", resolution.id)]
        )
        self.assertEqual(attachment.raw.decode(), text)
