import json
import os
import re
import tempfile
import uuid
from pathlib import Path
from unittest.mock import patch

from odoo.exceptions import AccessError, UserError
from odoo.tests import HttpCase, new_test_user, tagged

from .common import CommittedOpsMixin, ReliabilityCase, read_bundle

# Secrets a careless writer left in the failure message, the command and the logs.
SECRET = "sk-proj-esc4l4t10nS3cr3tV4lue9x"
PASSWORD = "hunter2-esc"
MESSAGE = f"Signature mismatch for event 42 (signing key {SECRET}, db password={PASSWORD})"
URL_RE = re.compile(r"/web/content/(\d+)\?download=true")


@tagged("post_install", "-at_install")
class TestEscalationBundle(CommittedOpsMixin, ReliabilityCase):
    def _failure_with_run(self):
        artifacts = Path(self.enterContext(tempfile.TemporaryDirectory(prefix="ipai-esc-run-")))
        # The server reads run logs only under its configured artifacts directory (ipai-ops run --artifacts).
        self.enterContext(patch.dict(os.environ, {"IPAI_OPS_RUN_ARTIFACTS": str(artifacts)}))
        # The recorder's layout, <artifacts>/<run id>/<attempt>/: nothing else is ever read.
        run_id = f"run-test-{uuid.uuid4().hex[:12]}"
        run_dir = artifacts / run_id / "1"
        run_dir.mkdir(parents=True)
        (run_dir / "stdout.log").write_text("checking the webhook\n", encoding="utf-8")
        (run_dir / "stderr.log").write_text(f"ValueError: {MESSAGE}\nAuthorization: Bearer {SECRET}\n")
        failure = self.commit_failure(
            MESSAGE,
            run={
                "run_id": run_id,
                "metadata": {
                    "argv": ["codex", "exec", "--api-key", SECRET, "fix the webhook"],
                    "command": f"codex exec --api-key {SECRET} 'fix the webhook'",
                    "cwd": str(run_dir.parent),
                    "iterations": [
                        {
                            "attempt": 1,
                            "stdout_log": str(run_dir / "stdout.log"),
                            "stderr_log": str(run_dir / "stderr.log"),
                        }
                    ],
                },
            },
        )
        # the secret really is in the committed row: the bundle has to redact it itself
        with self.ops_connection().cursor() as cur:
            cur.execute(
                "SELECT message, sample->'error'->>'message' FROM ops.agent_errors WHERE id = %s", [failure["error_id"]]
            )
            self.assertEqual(cur.fetchone(), (MESSAGE, MESSAGE))
        return failure

    def test_console_user_downloads_the_bundle(self):
        failure = self._failure_with_run()
        error_id = failure["error_id"]
        error = self.Error.with_user(self.rel_user).browse(error_id)
        action = error.action_escalation_bundle()
        self.assertEqual((action["type"], action["target"]), ("ir.actions.act_url", "self"))
        match = URL_RE.fullmatch(action["url"])
        self.assertTrue(match, action["url"])
        attachment = self.env["ir.attachment"].with_user(self.rel_user).browse(int(match[1]))
        # linked to the console record (the ops id): whoever reads the error reads the bundle
        self.assertEqual((attachment.res_model, attachment.res_id), ("ipai.agent.error", error_id))
        self.assertEqual(attachment.mimetype, "application/gzip")
        self.assertRegex(attachment.name, rf"^escalation-error-{error_id}-\d{{8}}T\d{{6}}Z\.tar\.gz$")
        self.assertEqual(attachment.create_uid, self.rel_user)

        top, members = read_bundle(attachment.raw)
        self.assertEqual(f"{top}.tar.gz", attachment.name)
        self.assertLessEqual(
            {"manifest.json", "README.txt", "envelope.json", "error.json", "run.json", "logs/1/stderr.log"},
            set(members),
        )
        manifest = json.loads(members["manifest.json"])
        self.assertEqual(manifest["members"], sorted(members))
        self.assertEqual((manifest["kind"], manifest["ref"]), ("error", str(error_id)))
        ids = manifest["ids"]
        self.assertEqual(ids["error_id"], error_id)
        self.assertEqual(ids["fingerprint"], failure["fingerprint"])
        self.assertEqual(ids["run_id"], failure["run_id"])
        self.assertEqual(ids["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736")
        typed = manifest["error"]
        self.assertEqual(typed["code"], "WEBHOOK.SIGNATURE_INVALID")
        self.assertEqual(typed["runbook"], "docs/runbooks/failures/WEBHOOK.SIGNATURE_INVALID.md")
        self.assertTrue(typed["owner"])
        self.assertEqual(typed["show"], f"ipai-ops errors show {failure['fingerprint']}")
        self.assertIn("[REDACTED:", typed["message"])
        self.assertEqual(manifest["settings"]["service"], "billing")
        self.assertEqual(manifest["envelope_problems"], [])
        self.assertEqual(manifest["artifacts"]["copied"][0]["member"], "logs/1/stdout.log")
        envelope = json.loads(members["envelope.json"])
        self.assertEqual(envelope["error"]["code"], "WEBHOOK.SIGNATURE_INVALID")
        self.assertEqual(envelope["error"]["fingerprint"], failure["fingerprint"])
        self.assertEqual(json.loads(members["error.json"])["id"], error_id)
        self.assertEqual(json.loads(members["run.json"])["run_id"], failure["run_id"])
        self.assertIn(b"[REDACTED:", members["logs/1/stderr.log"])
        # no secret anywhere, whatever member it came in through (message, sample, argv, logs)
        for name, data in members.items():
            self.assertNotIn(SECRET.encode(), data, name)
            self.assertNotIn(PASSWORD.encode(), data, name)

    def test_deleted_error_is_a_user_error(self):
        failure = self.commit_failure(MESSAGE)
        # retention (or another user) removed the row after the console was opened
        self.delete_committed("ops.agent_errors", "id", failure["error_id"])
        error = self.Error.with_user(self.rel_user).browse(failure["error_id"])
        with self.assertRaises(UserError) as caught:
            error.action_escalation_bundle()
        message = str(caught.exception)
        self.assertIn(f"no error with id or fingerprint '{failure['error_id']}'", message)
        self.assertFalse(
            self.env["ir.attachment"].search_count(
                [("res_model", "=", "ipai.agent.error"), ("res_id", "=", failure["error_id"])]
            )
        )

    def test_unreachable_ops_database_is_a_typed_user_error(self):
        self.env["ir.config_parameter"].set_param(
            "ipai_reliability.ops_dsn", "postgresql://ipai:s3cret-pw@127.0.0.1:1/ipai_ops?connect_timeout=3"
        )
        with self.assertRaises(UserError) as caught:
            self.Error.with_user(self.rel_user).browse(1).action_escalation_bundle()
        message = str(caught.exception)
        self.assertIn("TRANSPORT.DATABASE_UNAVAILABLE", message)
        self.assertNotIn("s3cret-pw", message)

    def test_only_console_readers(self):
        with self.assertRaises(AccessError):
            self.Error.with_user(self.plain_user).browse(1).action_escalation_bundle()


@tagged("post_install", "-at_install")
class TestEscalationDownload(CommittedOpsMixin, HttpCase):
    """The button as the web client calls it, then the download as the user's browser does."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.esc_user = new_test_user(
            cls.env, login="esc_user", groups="base.group_user,ipai_reliability.group_ipai_reliability_user"
        )
        new_test_user(cls.env, login="esc_plain", groups="base.group_user")

    def _call_button(self, error_id):
        """The JSON-RPC body the web client gets back from the header button."""
        response = self.opener.post(
            f"{self.base_url()}/web/dataset/call_button/ipai.agent.error/action_escalation_bundle",
            json={
                "id": 0,
                "jsonrpc": "2.0",
                "method": "call",
                "params": {
                    "model": "ipai.agent.error",
                    "method": "action_escalation_bundle",
                    "args": [[error_id]],
                    "kwargs": {},
                },
            },
            timeout=30,
        )
        response.raise_for_status()
        return response.json()

    def test_button_and_download(self):
        failure = self.commit_failure(MESSAGE)
        self.authenticate("esc_user", "esc_user")
        action = self._call_button(failure["error_id"])["result"]
        self.assertEqual(action["type"], "ir.actions.act_url")
        response = self.url_open(action["url"])
        self.assertEqual(response.status_code, 200)
        self.assertIn(".tar.gz", response.headers["Content-Disposition"])
        top, members = read_bundle(response.content)
        self.assertTrue(top.startswith(f"escalation-error-{failure['error_id']}-"))
        self.assertEqual(json.loads(members["manifest.json"])["ids"]["error_id"], failure["error_id"])
        for name, data in members.items():
            self.assertNotIn(SECRET.encode(), data, name)
        # a user outside the console cannot fetch it by its URL
        self.authenticate("esc_plain", "esc_plain")
        self.assertNotEqual(self.url_open(action["url"]).status_code, 200)

    def test_unknown_error_is_a_user_error_dialog(self):
        failure = self.commit_failure(MESSAGE)
        self.delete_committed("ops.agent_errors", "id", failure["error_id"])
        self.authenticate("esc_user", "esc_user")
        error = self._call_button(failure["error_id"])["error"]["data"]
        # a UserError is the client's warning dialog, not the "server error" traceback
        self.assertEqual(error["name"], "odoo.exceptions.UserError")
        self.assertIn(f"no error with id or fingerprint '{failure['error_id']}'", error["message"])
