"""The README's screenshots, taken by Odoo's test browser (Chromium) on a database that
``ipai-ops demo`` filled through the real flows (the bridge, the Pulser API, the
recorder, Odoo's RPC API). Opt-in: ``scripts/screenshots.py`` prepares that database and
runs this class with ``--test-tags ipai_readme_screenshots``; anywhere else it is skipped
(it is not in the standard tags, and without ``IPAI_README_SCREENSHOTS_DIR`` it skips).

Each page waits until it shows what the README says it shows (rows, the failure panel,
the drawn runbook), then Chromium's own ``Page.captureScreenshot`` writes the PNG. A page
that never gets there, or logs a JavaScript error, fails the run and writes no image.
"""

import base64
import json
import os
import struct
import unittest
from pathlib import Path
from unittest.mock import patch

from odoo.tests import HttpCase, tagged
from odoo.tests.common import ChromeBrowser

from ipai_ops.demo import DEFAULT_SERVICE_NAME
from ipai_ops.demo.resolution import TITLE as DEMO_RESOLUTION_TITLE

#: Folder the PNGs are written to; unset = skip (scripts/screenshots.py sets it).
OUT_DIR = "IPAI_README_SCREENSHOTS_DIR"
WIDTH, HEIGHT = 1440, 900

# Runs in the page: once READY (a JS expression) holds and Odoo is idle, SCROLL (a selector,
# or "") is scrolled to the top of the view; a pause for fonts, avatars and progress bars,
# then the signal Odoo's browser waits for.
_WAIT = """
const deadline = Date.now() + 60000;
(function wait() {
    let ready = false;
    try { ready = Boolean(READY); } catch (e) { ready = false; }
    const busy = document.querySelector(".o_blockUI, .o_loading_indicator, .o_dialog");
    if (ready && !busy) {
        document.activeElement?.blur();
        if (SCROLL) {
            // below the form's sticky button bar, not under it
            const target = document.querySelector(SCROLL);
            const bar = document.querySelector(".o_form_view .o_form_statusbar");
            target.style.scrollMarginTop = (bar ? bar.getBoundingClientRect().height : 0) + 12 + "px";
            target.scrollIntoView({ block: "start" });
        }
        setTimeout(() => console.log("test successful"), 1500);
    } else if (Date.now() > deadline) {
        console.error("the page never showed: WHAT (at " + location.href + ")");
    } else {
        setTimeout(wait, 250);
    }
})();
"""


def png_size(data):
    """(width, height) from a PNG's IHDR chunk."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    return struct.unpack(">II", data[16:24])


@tagged("-standard", "-at_install", "post_install", "ipai_readme_screenshots")
class TestReadmeScreenshots(HttpCase):
    browser_size = f"{WIDTH}x{HEIGHT}"

    @classmethod
    def setUpClass(cls):
        if not os.environ.get(OUT_DIR):
            raise unittest.SkipTest(f"opt-in: scripts/screenshots.py sets {OUT_DIR}")
        super().setUpClass()
        cls.out = Path(os.environ[OUT_DIR])
        cls.out.mkdir(parents=True, exist_ok=True)
        Error = cls.env["ipai.agent.error"]
        cls.demo_errors = Error.search([("service", "=", DEFAULT_SERVICE_NAME)])
        if not cls.demo_errors:
            raise AssertionError(f"no errors of {DEFAULT_SERVICE_NAME}: run ipai-ops demo on this database first")
        cls.demo_resolution = cls.env["ipai.resolution"].search([("name", "=", DEMO_RESOLUTION_TITLE)])
        if len(cls.demo_resolution) != 1 or not cls.demo_resolution.error_id:
            raise AssertionError(f"the demo's resolution {DEMO_RESOLUTION_TITLE!r}, linked to its error, is missing")

    def shoot(self, filename, url, ready, what, scroll=""):
        """Open ``url`` as admin, wait until the JS expression ``ready`` holds, scroll the
        element of the selector ``scroll`` to the top, write the PNG."""
        shots = []
        original = ChromeBrowser._wait_code_ok

        # The capture has to happen while browser_js still holds the browser (it closes it on
        # return): right after the page signalled success, in the same DevTools session.
        def wait_then_capture(browser, code, timeout, error_checker=None):
            original(browser, code, timeout, error_checker=error_checker)
            reply = browser._websocket_request("Page.captureScreenshot", params={"format": "png"}, timeout=30)
            shots.append(base64.b64decode(reply["data"]))

        code = (
            _WAIT.replace("READY", ready).replace("SCROLL", json.dumps(scroll)).replace("WHAT", what.replace('"', "'"))
        )
        with patch.object(ChromeBrowser, "_wait_code_ok", wait_then_capture):
            self.browser_js(url, code, login="admin", timeout=120)
        self.assertEqual(len(shots), 1, f"{filename}: no capture")
        self.assertEqual(png_size(shots[0]), (WIDTH, HEIGHT), filename)
        (self.out / filename).write_bytes(shots[0])

    def test_agent_errors_console(self):
        # The app's landing page: today's open and regressed errors, the most frequent first.
        self.shoot(
            "agent_errors_console.png",
            "/odoo/agent-errors",
            f"document.querySelectorAll('.o_list_renderer .o_data_row').length >= {min(len(self.demo_errors), 5)}",
            "the console's rows",
        )

    def test_agent_error_failure_panel(self):
        # The error the demo's resolution is about: its stack trace and the lines that decided its code.
        error = self.demo_resolution.error_id
        self.assertIn("o_ipai_stack", str(error.failure_html), "the error shows no stack trace")
        self.assertIn("o_ipai_failure_evidence", str(error.failure_html), "the error shows no deciding lines")
        self.shoot(
            "agent_error_failure_panel.png",
            f"/odoo/agent-errors/{error.id}",
            "document.querySelector('.o_ipai_failure_panel .o_ipai_stack')"
            " && document.querySelector('.o_ipai_failure_panel .o_ipai_failure_evidence')",
            "the failure panel",
            scroll=".o_ipai_failure_panel",
        )

    def test_runbook(self):
        # The runbook of the demo's resolution code, drawn in the failure mode's Runbook tab.
        mode = self.demo_resolution.failure_mode_id
        self.assertIn("```mermaid", mode.runbook_markdown or "", "the failure mode's runbook has no diagram")
        self.shoot(
            "runbook.png",
            f"/odoo/action-ipai_reliability.ipai_failure_mode_action/{mode.id}",
            "document.querySelector('.o_ipai_runbook .o_ipai_business_summary')"
            " && document.querySelector('.o_ipai_runbook figure.o_ipai_mermaid svg')",
            "the drawn runbook",
            scroll=".o_form_sheet .o_notebook",
        )

    def test_failure_modes_kanban(self):
        self.shoot(
            "failure_modes_kanban.png",
            "/odoo/action-ipai_reliability.ipai_failure_mode_action?view_type=kanban",
            "document.querySelectorAll('.o_kanban_renderer .o_kanban_record:not(.o_kanban_ghost)').length >= 12",
            "the failure-mode cards",
        )

    def test_resolution_form(self):
        self.shoot(
            "resolution_form.png",
            f"/odoo/action-ipai_reliability.ipai_resolution_action/{self.demo_resolution.id}",
            "document.querySelector('.o_form_view .o_form_sheet .oe_title')",
            "the resolution form",
        )
