"""The runbook widget in a real browser: a ```mermaid block is drawn as an SVG by the
bundled Mermaid, and the business-users block comes first. Needs Chromium (skipped by
Odoo's test runner when it is not installed)."""

from odoo.tests import HttpCase, tagged

# Runs in the page: waits for the diagram (or its error note) and reports.
_WAIT_FOR_DIAGRAM = """
const deadline = Date.now() + 30000;
(function wait() {
    const root = document.querySelector(".o_ipai_runbook");
    const svg = root && root.querySelector("figure.o_ipai_mermaid svg");
    const error = root && root.querySelector(".o_ipai_mermaid_error");
    if (error) {
        console.error("mermaid refused the diagram: " + error.textContent);
    } else if (svg) {
        const summary = root.querySelector(".o_ipai_business_summary");
        if (!summary || summary.compareDocumentPosition(svg) !== Node.DOCUMENT_POSITION_FOLLOWING) {
            console.error("the business-users block does not open the runbook");
        } else if (!svg.textContent.includes("Rotate the key")) {
            console.error("the diagram lost its labels: " + svg.textContent.slice(0, 200));
        } else if (root.querySelector("code.language-mermaid")) {
            console.error("a mermaid block was left as code");
        } else if (typeof window.mermaid !== "object") {
            console.error("mermaid is not the bundled one");
        } else {
            console.log("test successful");
        }
    } else if (Date.now() > deadline) {
        console.error("no diagram after 30 s");
    } else {
        setTimeout(wait, 200);
    }
})();
"""


@tagged("post_install", "-at_install")
class TestRunbookBrowser(HttpCase):
    def test_mermaid_block_is_drawn_in_the_runbook_tab(self):
        mode = self.env["ipai.failure.mode"].search([("code", "=", "WEBHOOK.SIGNATURE_INVALID")])
        mode.runbook_markdown = (
            "# WEBHOOK.SIGNATURE_INVALID: signature mismatch\n\n## Recovery\n\n"
            "```mermaid\nflowchart LR\n  A[Signature mismatch] --> B[Rotate the key]\n```\n"
        )
        self.browser_js(
            f"/odoo/action-ipai_reliability.ipai_failure_mode_action/{mode.id}",
            _WAIT_FOR_DIAGRAM,
            login="admin",
            timeout=90,
        )
