"""The failure-mode form's runbook path, in a real browser (Odoo's test browser, Chromium):
the whole path is readable on the Runbook tab, for a manager (an input) and for a user
(read-only text), with the longest path of the registry. Needs Chromium (skipped by Odoo's
test runner when it is not installed)."""

import json

from odoo.tests import HttpCase, tagged

from .common import ReliabilityCase

# Runs in the page with PATH: the runbook path's widget shows all of PATH, uncut.
_CHECK = """
const path = PATH;
const deadline = Date.now() + 30000;
(function wait() {
    const widget = document.querySelector(".o_notebook .o_field_widget[name='runbook_path']");
    if (!widget || !document.querySelector(".o_ipai_runbook")) {
        if (Date.now() > deadline) { console.error("no runbook tab"); return; }
        return setTimeout(wait, 200);
    }
    const input = widget.querySelector("input");
    const text = input ? input.value : widget.textContent.trim();
    // an input scrolls what does not fit; read-only text must fit in its widget
    const [needed, room] = input
        ? [input.scrollWidth, input.clientWidth]
        : [Math.max(widget.scrollWidth, widget.firstElementChild?.getBoundingClientRect().width || 0),
           widget.getBoundingClientRect().width];
    const label = document.querySelector(".o_notebook label[for^='runbook_path']");
    const what = (input ? "input" : "text") + " (" + LOGIN + ")";
    if (text !== path) {
        console.error(`the runbook path's ${what} reads ${JSON.stringify(text)}, not ${JSON.stringify(path)}`);
    } else if (needed > room + 1) {
        console.error(`the runbook path's ${what} is cut: ${Math.round(needed)}px of text in ${Math.round(room)}px`);
    } else if (!label) {
        console.error(`the runbook path's ${what} has no label`);
    } else {
        console.log("test successful");
    }
})();
"""


@tagged("post_install", "-at_install")
class TestRunbookPathBrowser(ReliabilityCase, HttpCase):
    def test_the_whole_runbook_path_is_readable(self):
        modes = self.Mode.search([("runbook_path", "!=", False)])
        self.assertTrue(modes, "the registry sync left no runbook path")
        mode = max(modes, key=lambda m: len(m.runbook_path))
        self.assertGreater(len(mode.runbook_path), 50, mode.runbook_path)
        url = f"/odoo/action-ipai_reliability.ipai_failure_mode_action/{mode.id}"
        # a manager edits it (an input), a user reads it
        for login in ("rel_manager", "rel_user"):
            with self.subTest(login=login):
                check = _CHECK.replace("PATH", json.dumps(mode.runbook_path)).replace("LOGIN", json.dumps(login))
                self.browser_js(url, check, login=login, timeout=90)
