import json

from odoo.exceptions import AccessError
from odoo.tests import tagged, users

from ipai_ops.classify import classify
from ipai_ops.envelope import build_envelope

from ..models.ipai_agent_error import capture_rows, evidence_rows
from .common import ReliabilityCase

# A CI log whose failing assertion carries markup: the sender controls every line of it.
INJECTED = "'<script>alert(\"x\")</script>' == '<img src=x onerror=alert(1)>'"
PYTEST_LOG = f"""$ pytest -q tests/test_render.py
..F
=================================== FAILURES ===================================
_______________________________ test_render ____________________________________
    def test_render():
>       assert render(name) == "<b>safe</b>"
E       AssertionError: assert '<script>alert("x")</script>' == '<b>safe</b>'

tests/test_render.py:12: AssertionError
=========================== short test summary info ============================
FAILED tests/test_render.py::test_render - AssertionError: assert {INJECTED}
1 failed, 2 passed in 0.05s
Error: Process completed with exit code 1.
"""


@tagged("post_install", "-at_install")
class TestClassificationPanel(ReliabilityCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        registry = cls.env["ipai.ops"].registry()
        cls.Mode.sync_from_registry(registry)
        cls.classification = classify(registry, message="pytest failed", text=PYTEST_LOG)
        cls.envelope = build_envelope(
            cls.classification,
            message="pytest failed",
            error_type="CalledProcessError",
            context={"source": "cli", "service": "ci"},
        )

    def _error_from_envelope(self, envelope=None, **upsert):
        envelope = envelope or self.envelope
        return self.error(
            self.upsert(
                code=envelope["error"]["code"],
                source="cli",
                service="ci",
                message=envelope["error"]["message"],
                error_type=envelope["error"]["error_type"],
                sample=envelope,
                **upsert,
            )
        )

    def test_envelope_is_classified_by_a_signature(self):
        # the fixture is what the panel is for: a signature decided, lines and captures kept
        self.assertEqual(self.classification.code, "BUILD.TEST_FAILED")
        data = self.envelope["evidence"]["classification"]
        self.assertEqual(data["matched_by"], "signature")
        self.assertTrue(any("<script>" in line["text"] for line in data["lines"]))

    def test_panel_renders_evidence_escaped(self):
        error = self._error_from_envelope()
        data = self.envelope["evidence"]["classification"]
        self.assertTrue(error.has_classification)
        self.assertEqual(error.family, "test")
        self.assertEqual(error.matched_by, "signature")
        self.assertEqual(error.classification_signature, data["signature"])
        self.assertEqual(error.classification_headline, data["headline"])
        html = str(error.classification_html)
        # the sender's markup is text, never markup
        self.assertNotIn("<script", html)
        self.assertNotIn("<img", html)
        self.assertNotIn("<b>safe", html)
        self.assertIn("&lt;script&gt;", html)
        self.assertIn("&lt;img src=x onerror=alert(1)&gt;", html)
        # line numbers in a gutter, the deciding line emphasised, markers muted, gaps shown
        for line in data["lines"]:
            self.assertIn(f">{line['line']}</td>", html)
        self.assertIn("o_ipai_evidence_signature fw-bold", html)
        self.assertIn("o_ipai_evidence_marker text-muted", html)
        self.assertIn("o_ipai_evidence_gap", html, "lines 3 and 11 are not adjacent")
        # the captures as a table, not JSON
        self.assertIn("Failing tests", html)
        self.assertIn("tests/test_render.py::test_render", html)
        self.assertIn("Exit code", html)
        self.assertNotIn('"captures"', html)
        self.assertNotIn("{", html)

    def test_older_envelopes_hide_the_panel(self):
        for sample in ({"ok": False}, {"evidence": {"stdout_tail": "x"}}, {"evidence": {"classification": "x"}}):
            error = self._error_from_envelope(dict(self.envelope, evidence=sample.get("evidence", {})))
            with self.subTest(sample=sample):
                self.assertFalse(error.has_classification)
                self.assertFalse(error.classification_html)
                self.assertFalse(error.matched_by)
        # the raw envelope stays where it was
        self.assertIn('"envelope_version"', error.sample_pretty)

    def test_hostile_shapes_render_as_text(self):
        envelope = json.loads(json.dumps(self.envelope))
        envelope["evidence"]["classification"] = {
            "matched_by": ["<b>bogus</b>"],
            "signature": {"nested": "<i>x</i>"},
            "lines": [
                {"line": "7", "text": "<svg onload=alert(1)>", "role": "<script>"},
                {"line": 2, "text": ["a", "<u>b</u>"], "role": "signature"},
                "not a line",
            ],
            "captures": {"<h1>key</h1>": "<h2>value</h2>", "test": ["t1", "<b>t2</b>"], "exit_code": 2},
        }
        error = self._error_from_envelope(envelope)
        self.assertTrue(error.has_classification)
        self.assertFalse(error.matched_by, "an unknown value is not shown")
        html = str(error.classification_html)
        for tag in ("<svg", "<u>", "<h1>", "<h2>", "<b>t2", "<script"):
            self.assertNotIn(tag, html)
        self.assertIn("&lt;svg onload=alert(1)&gt;", html)
        self.assertIn("&lt;h1&gt;key&lt;/h1&gt;", html)

    def test_a_model_decision_shows_its_probability_and_nearest_example(self):
        envelope = json.loads(json.dumps(self.envelope))
        data = envelope["evidence"]["classification"]
        data.update(
            {
                "matched_by": "model",
                "signature": None,
                "model": {"score": 0.912, "nearest": {"source": "ci_more-go-003", "text": "<b>lease</b> wedged"}},
                "lines": [{"line": 1, "text": "passed", "role": "passed"}],
            }
        )
        error = self._error_from_envelope(envelope)
        self.assertEqual(error.matched_by, "model")
        self.assertEqual(
            error.classification_model,
            "probability 0.91; nearest labelled example: <b>lease</b> wedged (ci_more-go-003)",
        )
        self.assertIn("o_ipai_evidence_passed", str(error.classification_html))
        for bogus in ("x", {"score": "high"}, {"score": True}):
            data["model"] = bogus
            with self.subTest(model=bogus):
                self.assertFalse(self._error_from_envelope(envelope).classification_model)

    def test_rows_helpers(self):
        rows = evidence_rows(
            [
                {"line": 40, "text": "marker", "role": "marker"},
                {"line": 12, "text": "decided", "role": "signature"},
                {"line": 13, "text": "next", "role": "context"},
                {"line": None, "text": "ValueError", "role": "type"},
            ]
        )
        self.assertEqual([r.get("gutter") for r in rows], ["type", "12", "13", None, "40"])
        self.assertTrue(rows[3]["gap"])
        captures = dict(capture_rows({"file": "src/app.py", "line": 12, "column": 4, "package": "left-pad"}))
        self.assertEqual(captures, {"File:line": ["src/app.py:12:4"], "Package": ["left-pad"]})
        self.assertEqual(capture_rows({"line": [3, 4], "file": ["a", "b"]})[0], ("File", ["a", "b"]))

    def test_form_has_the_panel_and_keeps_the_envelope(self):
        arch = self.Error.with_user(self.rel_user).get_views([(False, "form")])["views"]["form"]["arch"]
        self.assertIn('name="why_this_code"', arch)
        self.assertIn('name="classification_html"', arch)
        self.assertIn('name="sample_pretty"', arch)

    def test_family_filter_and_group_by(self):
        tested = self._error_from_envelope()
        other = self.error(self.upsert(code="WEBHOOK.SIGNATURE_INVALID"))
        unknown = self.error(self.upsert(code="NOT.A_REGISTERED_CODE"))
        mine = [("id", "in", [tested.id, other.id, unknown.id])]
        self.assertEqual(other.family, self.Mode.search([("code", "=", "WEBHOOK.SIGNATURE_INVALID")]).family)
        self.assertFalse(unknown.family)
        self.assertEqual(self.Error.search([*mine, ("family", "=", "test")]), tested)
        self.assertEqual(self.Error.search([*mine, ("family", "!=", "test")]), other | unknown)
        self.assertEqual(self.Error.search([*mine, ("family", "=", False)]), unknown)
        self.assertEqual(self.Error.search([*mine, ("family", "in", ["test", False])]), tested | unknown)
        # the filter is a condition on the ops code column, not a subquery per row
        where = self.Error._search([("family", "=", "test")]).where_clause
        self.assertIn('"code"', where.code)
        self.assertNotIn("ipai_failure_mode", where.code)
        groups = dict(self.Error._read_group(mine, ["family"], ["__count"]))
        self.assertEqual(groups["test"], 1)
        self.assertEqual(groups[False], 1)
        result = self.Error.with_user(self.rel_user).formatted_read_group(mine, ["family"], ["count:sum"])
        self.assertIn("test", [g["family"] for g in result])

    @users("rel_user")
    def test_reliability_users_read_the_panel(self):
        error = self._error_from_envelope().with_user(self.env.user)
        self.assertTrue(error.classification_html)
        self.assertEqual(error.family, "test")

    @users("plain_user")
    def test_others_do_not(self):
        error = self._error_from_envelope().with_user(self.env.user)
        with self.assertRaises(AccessError):
            error.read(["classification_html"])
        with self.assertRaises(AccessError):
            self.env["ipai.failure.mode.example"].search([], limit=1)


@tagged("post_install", "-at_install")
class TestCodeHistory(ReliabilityCase):
    """A classifier upgrade that changes a known failure's code keeps its group: the form says so."""

    def test_a_new_key_attached_to_its_previous_group_shows_the_code_history(self):
        old = self.upsert("fp1:grouping-v1-key", code="BUILD.AGENT_CRASHED", message="Killed")
        self.env.cr.execute(
            "UPDATE ops.error_group_keys SET \"grouping\" = 1, created_at = now() - interval '1 day'"
            " WHERE fingerprint = %s",
            ["fp1:grouping-v1-key"],
        )
        new = self.upsert(
            "fp1:grouping-v2-key",
            code="RESOURCE.OUT_OF_MEMORY",
            message="Killed",
            previous_fingerprint="fp1:grouping-v1-key",
        )
        self.assertEqual(new["error_id"], old["error_id"])  # one group, not two
        error = self.error(new)
        self.assertEqual(error.code, "RESOURCE.OUT_OF_MEMORY")
        lines = error.code_history.splitlines()
        self.assertEqual(len(lines), 2)
        self.assertIn("grouping version 1: BUILD.AGENT_CRASHED", lines[0])
        self.assertIn("grouping version 2: RESOURCE.OUT_OF_MEMORY", lines[1])

    def test_a_group_with_one_code_has_no_history_to_show(self):
        error = self.error(self.upsert(code="BUILD.TEST_FAILED"))
        self.assertFalse(error.code_history)
        self.upsert(error.fingerprint, code="BUILD.TEST_FAILED")  # the same key again
        self.assertFalse(error.code_history)
