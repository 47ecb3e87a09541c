import json
import re
import traceback

from odoo.exceptions import AccessError, ValidationError
from odoo.orm import models as odoo_models
from odoo.tests import tagged, users
from odoo.tools import SQL

from ipai_ops.classify import classify
from ipai_ops.envelope import build_envelope, envelope_from_exception, validate_envelope

from ..models.ipai_agent_error_detail import is_library_frame, stack_items
from ..models.ipai_agent_error_occurrence import PARAM_TRACE_URL, check_trace_url_template, trace_url
from .common import ReliabilityCase

JAEGER = "http://localhost:16686/trace/{trace_id}"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CI_LOG = """$ pytest -q tests/test_orders.py
..F
=================================== FAILURES ===================================
_______________________________ test_total _____________________________________
    def test_total():
>       assert total([1, 2]) == 4
E       assert 3 == 4

tests/test_orders.py:9: AssertionError
=========================== short test summary info ============================
FAILED tests/test_orders.py::test_total - assert 3 == 4
1 failed, 2 passed in 0.05s
Error: Process completed with exit code 1.
"""


def _parse_order(payload):
    # application code calling into the standard library, which raises
    return json.loads(payload)


def _real_exception(payload="{not json"):
    try:
        _parse_order(payload)
    except ValueError as exc:
        return exc, "".join(traceback.format_exception(exc))
    raise AssertionError("json.loads accepted the payload")


def _counts(svg):
    return [int(c) for c in re.search(r'data-counts="([0-9,]*)"', str(svg)).group(1).split(",")]


@tagged("post_install", "-at_install")
class TestFailurePanel(ReliabilityCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.registry_ = cls.env["ipai.ops"].registry()
        cls.Mode.sync_from_registry(cls.registry_)
        cls.Occurrence = cls.env["ipai.agent.error.occurrence"]

    def _exception_error(self, payload="{not json", **upsert):
        exc, stack = _real_exception(payload)
        envelope = envelope_from_exception(
            self.registry_,
            exc,
            context={"source": "odoo", "service": "orders", "trace_id": TRACE},
            evidence={"stderr_tail": stack},
            stacktrace=stack,
        )
        validate_envelope(envelope)
        error = self.error(
            self.upsert(
                code=envelope["error"]["code"],
                message=envelope["error"]["message"],
                error_type=envelope["error"]["error_type"],
                sample=envelope,
                **upsert,
            )
        )
        return error, envelope, stack

    # ------------------------------------------------------------------ the panel

    def test_panel_of_a_real_exception(self):
        error, __, stack = self._exception_error()
        html = str(error.failure_html)
        # the exception, as text
        self.assertIn("json.decoder.JSONDecodeError", html)
        self.assertIn("Expecting property name enclosed in double quotes", html)
        # the application's frames highlighted, the standard library's folded
        app = re.findall(r'o_ipai_frame_app[^"]*"[^>]*>(.*?)</div>', html, re.S)
        self.assertTrue(any("_parse_order" in frame for frame in app), app)
        self.assertTrue(any("_real_exception" in frame for frame in app), app)
        self.assertFalse(any("decoder.py" in frame for frame in app))
        folded = re.search(r"<details>(.*?)</details>", html, re.S)
        self.assertIsNotNone(folded, "library frames are folded")
        self.assertIn("library frames", folded.group(1))
        self.assertIn("json/decoder.py", folded.group(1))
        self.assertIn("o_ipai_frame_lib", folded.group(1))
        # every frame of the traceback is there, with its line and code
        frames = re.findall(r'File "([^"]+)", line (\d+), in (\S+)', stack)
        self.assertIn(f"{len(frames)} frames", html)
        for __, line, __ in frames:
            self.assertIn(f'o_ipai_frame_line">{line}</span>', html)
        self.assertIn("return json.loads(payload)", html)
        # never the envelope as a JSON string; the raw envelope keeps its own tab
        self.assertNotIn("envelope_version", html)
        self.assertNotIn('{"', html)
        self.assertIn('"envelope_version"', error.sample_pretty)

    def test_panel_shows_evidence_lines_and_captures(self):
        classification = classify(self.registry_, message="pytest failed", text=CI_LOG)
        self.assertEqual(classification.code, "BUILD.TEST_FAILED")
        envelope = build_envelope(
            classification,
            message="pytest failed",
            error_type="CalledProcessError",
            context={"source": "cli", "service": "ci"},
            evidence={"stdout_tail": CI_LOG, "exit_code": 1},
        )
        validate_envelope(envelope)
        error = self.error(
            self.upsert(
                code=classification.code, message="pytest failed", error_type="CalledProcessError", sample=envelope
            )
        )
        html = str(error.failure_html)
        lines = envelope["evidence"]["classification"]["lines"]
        self.assertTrue(lines)
        for line in lines:
            if line["line"]:
                self.assertIn(f">{line['line']}</td>", html, "evidence lines keep their line numbers")
        self.assertIn("o_ipai_evidence_signature", html)
        self.assertIn("Failing tests", html)
        self.assertIn("tests/test_orders.py::test_total", html)
        # no frames in a CI log: no stack section, and the output stays folded below
        self.assertNotIn("o_ipai_stack", html)
        self.assertIn("Output (tail)", html)
        self.assertNotIn('"captures"', html)

    def test_markup_in_a_message_is_escaped(self):
        payload = "<script>alert(1)</script>"
        __, envelope, __ = self._exception_error()
        envelope = json.loads(json.dumps(envelope))
        envelope["error"]["message"] = "<script>alert('x')</script> in order <img src=x onerror=alert(1)>"
        envelope["error"]["error_type"] = "<b>Boom</b>"
        envelope["evidence"]["stderr_tail"] = (
            "Traceback (most recent call last):\n"
            f'  File "/srv/app/<svg onload=alert(1)>.py", line 3, in <module>\n'
            f"    handle({payload!r})\n"
            f"ValueError: {payload}\n"
        )
        error = self.error(self.upsert(message=envelope["error"]["message"], sample=envelope))
        html = str(error.failure_html)
        for tag in ("<script", "<img", "<svg", "<b>Boom"):
            self.assertNotIn(tag, html)
        self.assertIn("&lt;script&gt;alert(", html)
        self.assertIn("&lt;img src=x onerror=alert(1)&gt;", html)
        self.assertIn("&lt;b&gt;Boom&lt;/b&gt;", html)
        self.assertIn("&lt;svg onload=alert(1)&gt;.py", html)

    def test_envelopes_without_an_exception_still_show_the_row(self):
        for sample in ({"ok": False}, {"evidence": "x", "error": []}, {"evidence": {"stderr_tail": 12}}):
            error = self.error(self.upsert(message="Signature <mismatch>", error_type="HMACError", sample=sample))
            with self.subTest(sample=sample):
                html = str(error.failure_html)
                self.assertIn("Signature &lt;mismatch&gt;", html)
                self.assertIn("HMACError", html)
                self.assertNotIn("o_ipai_stack", html)

    def test_stack_parsing(self):
        node = (
            "TypeError: Cannot read properties of undefined (reading 'id')\n"
            "    at handler (/srv/fn/index.js:12:9)\n"
            "    at Layer.handle (/srv/fn/node_modules/express/lib/router/layer.js:95:5)\n"
            "    at node:internal/process/task_queues:95:5\n"
        )
        items = stack_items(node)
        frames = [i for i in items if i["kind"] == "frame"]
        self.assertEqual(
            [(f["func"], f["line"], f["in_app"]) for f in frames][:2],
            [("handler", 12, True), ("Layer.handle", 95, False)],
        )
        self.assertFalse(frames[2]["in_app"])
        self.assertEqual(stack_items("just a log line\nanother"), [])
        self.assertEqual(
            len([i for i in stack_items('  File "a.py", line 1, in f\n' * 500) if i["kind"] == "frame"]), 100
        )
        for path, library in (
            ("/usr/lib/python3.12/json/decoder.py", True),
            ("/srv/venv/lib/python3.11/site-packages/requests/api.py", True),
            ("/usr/lib/python3/dist-packages/yaml/__init__.py", True),
            ("<frozen importlib._bootstrap>", True),
            (odoo_models.__file__, True),
            ("/srv/fn/node_modules/express/index.js", True),
            ("/srv/app/addons/sale/models/order.py", False),
            ("/work/main/ipai_ops/envelope.py", False),
        ):
            self.assertEqual(is_library_frame(path), library, path)

    def test_form_and_list_carry_the_new_parts(self):
        views = self.Error.with_user(self.rel_user).get_views([(False, "form"), (False, "list")])["views"]
        form, listing = views["form"]["arch"], views["list"]["arch"]
        for name in (
            "failure_html",
            "occurrence_ids",
            "sparkline_24h",
            "sparkline_30d",
            "last_trace_link",
            "sample_pretty",
        ):
            self.assertIn(f'name="{name}"', form)
        self.assertIn('name="occurrences"', form)
        self.assertIn('name="sparkline_24h"', listing)

    # ------------------------------------------------------------------ occurrences

    def test_occurrences_are_paged_newest_first(self):
        fingerprint = "fp1:occurrencesorder000000000000000"
        for hours in (5, 1, 30, 3, 2, 48, 4):
            result = self.upsert(
                fingerprint,
                occurred_at=self.hours_ago(hours),
                service_version=f"1.{hours}.0",
                trace_id=f"{hours:032x}",
                source="bridge" if hours % 2 else "odoo",
            )
        error = self.error(result)
        occurrences = error.occurrence_ids
        self.assertEqual(len(occurrences), 7)
        self.assertEqual(occurrences.mapped("service_version"), [f"1.{h}.0" for h in (1, 2, 3, 4, 5, 30, 48)])
        self.assertEqual(occurrences[0].source, "bridge")
        self.assertEqual(occurrences[0].trace_id, f"{1:032x}")
        self.assertEqual(occurrences[0].service, error.service)
        # a page is the next newest ones, through the ORM's pager
        page = self.Occurrence.search([("error_id", "=", error.id)], limit=3, offset=3)
        self.assertEqual(page.mapped("service_version"), ["1.4.0", "1.5.0", "1.30.0"])
        # the form's one2many read (the web client's page of 2)
        read = error.web_read({"occurrence_ids": {"fields": {"service_version": {}, "trace_link": {}}, "limit": 2}})
        rows = read[0]["occurrence_ids"]
        self.assertEqual([r["service_version"] for r in rows[:2]], ["1.1.0", "1.2.0"])
        self.assertEqual(rows[2:], [{"id": i} for i in occurrences.ids[2:]], "the rest are ids only, read per page")
        # "Open as a list": the same occurrences, paged and filtered on their own
        action = error.action_view_occurrences()
        self.assertEqual(action["res_model"], "ipai.agent.error.occurrence")
        self.assertEqual(self.Occurrence.search(action["domain"]), occurrences)
        # ids read back the same rows (by address), and an unknown id reads as gone
        again = self.Occurrence.browse(occurrences.ids[::-1])
        self.assertEqual(again.mapped("occurrence_id"), occurrences.mapped("occurrence_id")[::-1])
        self.assertFalse(self.Occurrence.browse([(10**6 << 16) + 1]).exists())
        self.env.cr.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'ops'"
            " AND table_name = 'agent_error_occurrences' AND column_name = 'environment'"
        )
        if self.env.cr.fetchone():  # migration 0010: each occurrence carries its environment
            self.env.cr.execute(
                "UPDATE ops.agent_error_occurrences SET environment = 'staging' WHERE error_id = %s", [error.id]
            )
            self.Occurrence.invalidate_model()
            self.assertEqual(set(error.occurrence_ids.mapped("environment")), {"staging"})

    def test_reading_occurrences_by_id_is_a_tid_scan(self):
        error = self.error(self.upsert(occurred_at=self.hours_ago(1)))
        query = error.occurrence_ids._as_query(ordered=False)
        self.env.cr.execute(SQL("EXPLAIN %s", query.select("id")))
        plan = "\n".join(row[0] for row in self.env.cr.fetchall())
        self.assertIn("Tid Scan", plan)

    @users("plain_user")
    def test_occurrences_need_the_reliability_group(self):
        with self.assertRaises(AccessError):
            self.env["ipai.agent.error.occurrence"].search([], limit=1)

    # ------------------------------------------------------------------ sparklines

    def test_sparkline_counts(self):
        fingerprint = "fp1:sparkline00000000000000000000000"
        for hours in (0.2, 0.5, 1.5, 1.6, 23.5, 30, 24 * 10, 24 * 29.5, 24 * 40):
            result = self.upsert(fingerprint, occurred_at=self.hours_ago(hours))
        other = self.error(self.upsert(occurred_at=self.hours_ago(2)))
        error = self.error(result)
        self.assertEqual(error.count, 9)
        self.assertEqual(error.occurrences_24h, 5)
        self.assertEqual(error.occurrences_30d, 8, "40 days ago is outside the window")
        hourly = _counts(error.sparkline_24h)
        self.assertEqual(len(hourly), 24)
        self.assertEqual(hourly[-1], 2, "the last hour")
        self.assertEqual(hourly[-2], 2, "one to two hours ago")
        self.assertEqual(hourly[0], 1, "23.5 hours ago")
        daily = _counts(error.sparkline_30d)
        self.assertEqual(len(daily), 30)
        self.assertEqual(daily[-1], 5)
        self.assertEqual(daily[-2], 1, "30 hours ago")
        self.assertEqual(daily[-11], 1, "10 days ago")
        self.assertEqual(daily[0], 1, "29.5 days ago")
        self.assertEqual(other.occurrences_24h, 1)
        self.assertIn("<svg", str(error.sparkline_24h))
        self.assertIn('aria-label="5 occurrences in the last 24 hours"', str(error.sparkline_24h))

    def test_sparklines_cost_one_query_per_batch(self):
        errors = self.Error.browse([self.upsert(occurred_at=self.hours_ago(h))["error_id"] for h in (1, 2, 3, 4)])

        def queries(records):
            records.invalidate_recordset()
            before = self.env.cr.sql_log_count
            records._occurrence_buckets()
            return self.env.cr.sql_log_count - before

        self.assertEqual(queries(errors[:1]), queries(errors))
        self.assertEqual(errors.mapped("occurrences_24h"), [1, 1, 1, 1])

    # ------------------------------------------------------------------ trace links

    def test_trace_url_template_is_validated(self):
        Settings = self.env["res.config.settings"]
        for bad, why in (
            ("javascript:alert(1)//{trace_id}", "http"),
            ("ftp://jaeger/trace/{trace_id}", "http"),
            ("http://localhost:16686/trace/", "{trace_id}"),
            ("http:///trace/{trace_id}", "host"),
            ("http://jaeger trace/{trace_id}", "spaces"),
            ("http://jaeger/{trace_id}" + "x" * 3000, "longer"),
        ):
            with self.subTest(template=bad), self.assertRaises(ValidationError) as caught:
                Settings.create({"ipai_trace_url_template": bad})
            self.assertIn(why, str(caught.exception))
        Settings.create({"ipai_trace_url_template": JAEGER}).execute()
        self.assertEqual(self.env["ir.config_parameter"].get_param(PARAM_TRACE_URL), JAEGER)
        Settings.create({"ipai_trace_url_template": ""}).execute()
        self.assertIsNone(check_trace_url_template(""))
        self.assertIsNone(check_trace_url_template("https://tempo.example.com/explore?traceId={trace_id}"))

    def test_trace_ids_link_to_the_tracing_ui(self):
        params = self.env["ir.config_parameter"].sudo()
        error = self.error(self.upsert(trace_id=TRACE, occurred_at=self.hours_ago(1)))
        params.set_param(PARAM_TRACE_URL, JAEGER)
        self.env.invalidate_all()
        link = f'href="http://localhost:16686/trace/{TRACE}"'
        self.assertIn(link, str(error.occurrence_ids.trace_link))
        self.assertIn(link, str(error.last_trace_link))
        # no template, or one set around the settings' check: the id without a link
        for template in ("", "javascript:alert(1)//{trace_id}"):
            params.set_param(PARAM_TRACE_URL, template)
            self.env.invalidate_all()
            with self.subTest(template=template):
                self.assertNotIn("href", str(error.occurrence_ids.trace_link))
                self.assertIn(TRACE, str(error.occurrence_ids.trace_link))
        # a sender's trace id never shapes the URL
        self.assertIsNone(trace_url(JAEGER, "../../admin?x=1"))
        self.assertIsNone(trace_url(JAEGER, "<script>"))
        self.assertEqual(trace_url(JAEGER, TRACE.upper()), f"http://localhost:16686/trace/{TRACE}")
