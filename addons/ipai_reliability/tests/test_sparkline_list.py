"""The occurrence sparklines in the Agent Errors list, in a real browser (Odoo's test
browser, Chromium). The list computes the sparkline of every row in one batch and draws it
in a column that clips its cells: each row must show the same counts as its form, and every
bar of a non-empty bucket must really be visible (``elementFromPoint`` at the bar's centre
is the bar), also after the column is made narrower than the chart. The newest bucket is
the rightmost bar, the first one a clipping cell hides. Needs Chromium (skipped by Odoo's
test runner when it is not installed)."""

import json
import re

from odoo.tests import HttpCase, tagged

from .common import ReliabilityCase

# Runs in the page with EXPECTED ({code: [24 counts, oldest first]}).
_CHECK = """
const expected = EXPECTED;
const deadline = Date.now() + 30000;
const frame = () => new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)));

function problems(when) {
    const found = [];
    const rows = [...document.querySelectorAll(".o_list_renderer .o_data_row")];
    for (const code of Object.keys(expected)) {
        const row = rows.find((tr) => tr.querySelector("td[name='code']")?.textContent.trim() === code);
        const cell = row?.querySelector("td[name='sparkline_24h']");
        const svg = cell?.querySelector("svg.o_ipai_sparkline");
        if (!svg) {
            found.push(`${when}: ${code} has no sparkline in the list`);
            continue;
        }
        if (svg.dataset.counts !== expected[code].join(",")) {
            found.push(`${when}: ${code} counts ${svg.dataset.counts}, its form ${expected[code].join(",")}`);
        }
        const bars = [...svg.querySelectorAll("rect")];
        const box = cell.getBoundingClientRect();
        expected[code].forEach((count, index) => {
            if (!count) {
                return;
            }
            const bar = bars[index].getBoundingClientRect();
            const hit = document.elementFromPoint(bar.x + bar.width / 2, bar.y + bar.height / 2);
            if (!(bar.height > 0) || hit !== bars[index]) {
                found.push(
                    `${when}: ${code} bucket ${index} (${count}) is not visible: bar x ${Math.round(bar.x)}..` +
                    `${Math.round(bar.right)} height ${bar.height}, cell x ${Math.round(box.x)}..` +
                    `${Math.round(box.right)}, the point shows ${hit?.tagName}`
                );
            }
        });
    }
    return found;
}

(async function wait() {
    const cells = document.querySelectorAll(".o_list_renderer .o_data_row td[name='sparkline_24h'] svg");
    if (cells.length < Object.keys(expected).length) {
        if (Date.now() > deadline) {
            console.error("the list never showed the sparklines");
            return;
        }
        return setTimeout(wait, 200);
    }
    await frame();
    const found = problems("as laid out");
    // a user narrows the column (Odoo's lists are table-layout: fixed, the header sets it)
    const header = document.querySelector(".o_list_renderer th[data-name='sparkline_24h']");
    header.style.width = "56px";
    await frame();
    found.push(...problems("column narrowed to 56px"));
    if (found.length) {
        console.error(found.join("; "));
    } else {
        console.log("test successful");
    }
})();
"""


def _counts(svg):
    return [int(c) for c in re.search(r'data-counts="([0-9,]*)"', str(svg)).group(1).split(",")]


@tagged("post_install", "-at_install")
class TestSparklineList(ReliabilityCase, HttpCase):
    def test_every_bar_of_the_list_sparkline_is_visible(self):
        # today's rows of the console: three errors seen in the last hour (the newest
        # bucket, the rightmost bar) and one over the whole day (the leftmost bar too)
        hours = {
            "APP.SPARK_NOW_A": (0.1, 0.2, 0.3),
            "APP.SPARK_NOW_B": (0.1, 0.1, 0.4),
            "APP.SPARK_NOW_C": (0.5, 0.6, 0.7),
            "APP.SPARK_SPREAD": (0.2, 5.5, 12.5, 23.5),
        }
        errors = self.Error
        for code, ages in hours.items():
            fingerprint = None
            for age in ages:
                fingerprint = self.upsert(fingerprint, code=code, occurred_at=self.hours_ago(age))["fingerprint"]
            errors |= self.Error.search([("code", "=", code)])
        # what each error's form shows, computed alone
        expected = {}
        for error in errors:
            error.invalidate_recordset()
            expected[error.code] = _counts(error.sparkline_24h)
        self.assertEqual(expected["APP.SPARK_NOW_A"][-1], 3)
        self.assertEqual(expected["APP.SPARK_SPREAD"][0], 1)
        # the list's read: every row at once, the same counts
        errors.invalidate_recordset()
        rows = errors.web_search_read([("id", "in", errors.ids)], {"code": {}, "sparkline_24h": {}})["records"]
        self.assertEqual({row["code"]: _counts(row["sparkline_24h"]) for row in rows}, expected)

        check = _CHECK.replace("EXPECTED", json.dumps(expected))
        self.browser_js("/odoo/agent-errors", check, login="admin", timeout=90)
