"""The runbook widget in a real browser: a ```mermaid block is drawn as an SVG by the
bundled Mermaid, and the business-users block comes first. Needs Chromium (skipped by
Odoo's test runner when it is not installed)."""

from odoo.tests import HttpCase, tagged

from .common import ReliabilityCase

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

    def test_resolution_title_spans_the_sheet_and_the_code_shows_once(self):
        mode = self.env["ipai.failure.mode"].search([("code", "=", "WEBHOOK.SIGNATURE_INVALID")])
        resolution = self.env["ipai.resolution"].create(
            {"name": "Proxy re-encoded webhook JSON, every signature check failed", "failure_mode_id": mode.id}
        )
        code = """
        const deadline = Date.now() + 30000;
        (function wait() {
            const sheet = document.querySelector(".o_form_sheet");
            const title = document.querySelector(".oe_title h1 input");
            if (!sheet || !title) {
                if (Date.now() > deadline) { console.error("no resolution form"); return; }
                return setTimeout(wait, 200);
            }
            const ratio = title.getBoundingClientRect().width / sheet.getBoundingClientRect().width;
            // fields that show the code itself (a record reference that embeds it is not the code)
            const shown = (el) => (el.querySelector("input")?.value || el.textContent || "").trim();
            const codes = [...document.querySelectorAll(".o_form_sheet .o_field_widget")].filter(
                (el) => el.offsetParent !== null && shown(el) === "WEBHOOK.SIGNATURE_INVALID"
            );
            if (ratio < 0.85) {
                console.error(`the title takes ${Math.round(ratio * 100)}% of the sheet`);
            } else if (codes.length !== 1) {
                const names = codes.map((el) => el.getAttribute("name")).join(", ");
                console.error(`the code shows ${codes.length} times (${names})`);
            } else {
                console.log("test successful");
            }
        })();
        """
        self.browser_js(f"/odoo/action-ipai_reliability.ipai_resolution_action/{resolution.id}", code, login="admin")


# From Odoo's home: the apps menu, the Reliability app, the first row; then the form shows
# the code. Three clicks, counted by the page itself.
_THREE_CLICKS = """
let clicks = 0;
const click = (el) => { clicks++; el.click(); };
const deadline = Date.now() + 45000;
function until(find, then, what) {
    const found = find();
    if (found) { return then(found); }
    if (Date.now() > deadline) { return console.error("timed out waiting for " + what); }
    setTimeout(() => until(find, then, what), 200);
}
until(() => document.querySelector(".o_navbar_apps_menu button"), (button) => {
    click(button);
    const tile = '.o_app[data-menu-xmlid="ipai_reliability.menu_ipai_reliability_root"]';
    until(() => document.querySelector(tile), (app) => {
        click(app);
        until(() => document.querySelector(".o_list_view .o_data_row td[name='code']"), (cell) => {
            const first = cell.textContent.trim();
            if (first !== EXPECTED) {
                return console.error(`the first row is ${first}, not ${EXPECTED}`);
            }
            click(cell);
            until(() => document.querySelector(".o_form_view .oe_title [name='code']"), (code) => {
                if (!code.textContent.includes(EXPECTED)) {
                    return console.error("the form shows " + code.textContent);
                }
                if (clicks > 3) {
                    return console.error(`${clicks} clicks`);
                }
                console.log("test successful");
            }, "the error's form");
        }, "the console list");
    }, "the Reliability app in the apps menu");
}, "the apps menu");
"""


@tagged("post_install", "-at_install")
class TestTodaysTopErrorInThreeClicks(ReliabilityCase, HttpCase):
    def test_from_home_to_todays_most_frequent_error(self):
        top = None
        for __ in range(25):
            top = self.upsert(top and top["fingerprint"], code="APP.TRIAGE_TOP", message="the top one today")
        self.upsert(code="APP.TRIAGE_OTHER", message="a quieter one")
        admin = self.env.ref("base.user_admin")
        Error = self.env["ipai.agent.error"].with_user(admin)
        domain = [("status", "in", ("open", "regressed")), ("last_seen", ">=", "today")]
        expected = Error.web_search_read(domain, {"code": {}}, limit=1, order="period_count desc, last_seen desc")
        # rows other tests committed may exist: the page must show whatever the console says is first
        self.assertTrue(expected["records"])
        self.browser_js(
            "/odoo",
            f"const EXPECTED = {expected['records'][0]['code']!r};" + _THREE_CLICKS,
            login="admin",
            timeout=90,
        )
