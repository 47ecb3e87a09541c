import json
import tempfile
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

from odoo.tests import tagged

from ipai_ops.cli import main as ipai_ops_main
from ipai_ops.reports import baseline

from .common import PulserCase


@tagged("post_install", "-at_install")
class TestBaselineReport(PulserCase):
    def test_report_over_exported_intents(self):
        ok = [self.submit("odoo.healthcheck", source="pk_r") for _ in range(3)]
        crash = self.submit("test.crash", source="pk_r")
        dead = self.submit("test.retryable", source="pk_r", max_attempts=1)
        cancelled = self.submit("odoo.healthcheck", source="pk_r")
        cancelled._request_cancel(source="test")
        self.run_worker()
        intents = self.Intent.browse([i.id for i in (*ok, crash, dead, cancelled)])
        export = [json.loads(json.dumps(i._api_dict())) for i in intents]
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "intents.jsonl"
            path.write_text("\n".join(json.dumps(r) for r in export), encoding="utf-8")
            out = StringIO()
            with redirect_stdout(out):
                self.assertEqual(ipai_ops_main(["report", "baseline", "--input", str(path), "--format", "json"]), 0)
        report = json.loads(out.getvalue())
        self.assertEqual(report, baseline.compute(export))
        rows = {(r["intent_type"], r["source"]): r for r in report["by_type_source"]}
        health = rows[("odoo.healthcheck", "pk_r")]
        self.assertEqual((health["succeeded"], health["cancelled"], health["total"]), (3, 1, 4))
        self.assertEqual(health["duration_ms"]["n"], 3)
        self.assertEqual(health["cancel_latency_ms"]["n"], 1)
        self.assertEqual(rows[("test.retryable", "pk_r")]["dead_letters"], 1)
        codes = {c["code"] for c in report["top_failure_codes"]}
        self.assertEqual(codes, {"INTENT.HANDLER_CRASHED", "INTENT.TIMEOUT"})

    def test_report_from_the_database_reads_the_published_view(self):
        """``report baseline --dsn`` reads ops.pulser_intents_v1 (data/ops_intent_views.sql), which
        the install created: the same report as over the API's records of the same intents."""
        ok = self.submit("odoo.healthcheck", source="pk_view")
        crash = self.submit("test.crash", source="pk_view")
        cancelled = self.submit("odoo.healthcheck", source="pk_view")
        cancelled._request_cancel(source="test")
        self.run_worker()
        self.env.flush_all()
        intents = self.Intent.browse([i.id for i in (ok, crash, cancelled)])
        export = [json.loads(json.dumps(i._api_dict())) for i in intents]
        # Odoo's own connection: the view sees this test's uncommitted intents
        records = [r for r in baseline.load_records_from_db(self.env.cr._cnx) if r["source"] == "pk_view"]
        self.assertEqual([r["ref"] for r in records], [i.ref for i in intents])
        self.assertEqual(baseline.compute(records), baseline.compute(export))
        self.assertEqual(baseline.compute(records)["overall"]["succeeded"], 1)
