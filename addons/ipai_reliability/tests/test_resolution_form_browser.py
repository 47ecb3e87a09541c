"""The resolution form's identifiers, in a real browser (Odoo's test browser, Chromium):
the failure code, the error, the error group's fingerprint and the regression test's path
are whole and labelled on a resolution whose values are long, for a manager (inputs) and
for a user who may only read resolutions (read-only text). At 1400 px, the narrowest
window that puts the chatter beside the form (Odoo's XXL breakpoint), the sheet is at its
narrowest. Needs Chromium (skipped by Odoo's test runner when it is not installed)."""

import json

from odoo.tests import HttpCase, tagged

from ipai_ops.demo.resolution import VALUES as DEMO_VALUES
from ipai_ops.fingerprint import fingerprint

from .common import ReliabilityCase

#: The demo resolution's regression test (73 characters; the README's form cut it at 255 px).
LONG_TEST = DEMO_VALUES["regression_test"]

# Runs in the page with FIELDS ([[name, text], ...]) and LOGIN: each field's widget shows
# its whole text, on one line, with a label.
_CHECK = """
const fields = FIELDS;
const deadline = Date.now() + 30000;

// [text, px of text, px it may take, lines] of a widget: an input scrolls what does not
// fit; read-only text must fit in its widget and in the boxes inside (one may clip it).
function measure(widget) {
    const input = widget.querySelector("input, textarea");
    if (input) {
        return [input.value, input.scrollWidth, input.clientWidth, 1];
    }
    const range = document.createRange();
    range.selectNodeContents(widget);
    const text = range.getBoundingClientRect();
    let right = widget.getBoundingClientRect().right;
    for (let el = widget.querySelector("*"); el; el = el.querySelector("*")) {
        if (getComputedStyle(el).overflowX !== "visible") {
            right = Math.min(right, el.getBoundingClientRect().right);
        }
    }
    // lines of text (the boxes of the elements around it have their own heights)
    const rects = [];
    const walker = document.createTreeWalker(widget, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
        range.selectNodeContents(node);
        rects.push(...[...range.getClientRects()].filter((r) => r.width > 0));
    }
    rects.sort((a, b) => a.top - b.top);
    const lines = rects.filter((r, i) => i === 0 || r.top >= rects[i - 1].top + r.height / 2).length;
    return [widget.textContent.trim(), text.width, right - text.left, lines];
}

(function wait() {
    const sheet = document.querySelector(".o_form_view .o_form_sheet");
    const widgets = fields.map(([name]) => sheet?.querySelector(`.o_field_widget[name='${name}']`));
    if (!widgets.every((w) => w && (w.querySelector("input")?.value || w.textContent.trim()))) {
        if (Date.now() > deadline) {
            console.error(`the resolution form never showed its fields (${LOGIN})`);
            return;
        }
        return setTimeout(wait, 200);
    }
    const errors = [];
    fields.forEach(([name, expected], i) => {
        const [text, needed, room, lines] = measure(widgets[i]);
        const what = `${name} (${widgets[i].querySelector("input") ? "input" : "text"}, ${LOGIN})`;
        console.info(`${what}: ${Math.round(needed)}px of text in ${Math.round(room)}px, ${lines} line(s)`);
        if (text !== expected) {
            errors.push(`${what} reads ${JSON.stringify(text)}, not ${JSON.stringify(expected)}`);
        } else if (needed > room + 1) {
            errors.push(`${what} is cut: ${Math.round(needed)}px of text in ${Math.round(room)}px`);
        } else if (lines > 1) {
            errors.push(`${what} is broken over ${lines} lines`);
        } else if (!sheet.querySelector(`label[for^='${name}']`)) {
            errors.push(`${what} has no label`);
        }
    });
    if (errors.length) {
        console.error(errors.join("; "));
    } else {
        console.log("test successful");
    }
})();
"""


@tagged("post_install", "-at_install")
class TestResolutionFormBrowser(ReliabilityCase, HttpCase):
    browser_size = "1400x900"

    def test_the_identifiers_are_readable(self):
        modes = self.Mode.search([])
        mode = max(modes, key=lambda m: len(m.code))
        self.assertGreaterEqual(len(mode.code), 30, mode.code)  # TRANSPORT.DATABASE_UNAVAILABLE was cut
        fp = fingerprint(code=mode.code, error_type="ValueError", message="a long code's error")
        error = self.error(self.upsert(fp, code=mode.code))
        resolution = self.env["ipai.resolution"].create(
            {
                "name": "Long identifiers",
                "failure_mode_id": mode.id,
                "error_id": error.id,
                "fingerprint": fp,
                "regression_test": LONG_TEST,
            }
        )
        fields = [
            ["failure_mode_id", mode.code],
            ["error_id", error.display_name],
            ["fingerprint", fp],
            ["regression_test", LONG_TEST],
        ]
        url = f"/odoo/action-ipai_reliability.ipai_resolution_action/{resolution.id}"
        self.browser_js(url, self._check(fields, "rel_manager"), login="rel_manager", timeout=90)
        # a user who may read resolutions but not write them sees read-only text
        self.env.ref("ipai_reliability.access_ipai_resolution_user").write({"perm_write": False, "perm_create": False})
        self.browser_js(url, self._check(fields, "reader"), login="rel_user", timeout=90)

    @staticmethod
    def _check(fields, login):
        return _CHECK.replace("FIELDS", json.dumps(fields)).replace("LOGIN", json.dumps(login))
