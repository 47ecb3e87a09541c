from odoo import fields, models

_COLUMNS = (
    ("id", "bigint"),
    ("comparison_id", "text"),
    ("baseline_variant", "text"),
    ("candidate_variant", "text"),
    ("benchmark_version", "integer"),
    ("category", "text"),
    ("n_baseline", "integer"),
    ("n_candidate", "integer"),
    ("mean_baseline", "numeric"),
    ("mean_candidate", "numeric"),
    ("delta", "numeric"),
    ("ci_low", "numeric"),
    ("ci_high", "numeric"),
    ("confidence", "numeric"),
    ("verdict", "text"),
    ("compared_at", "timestamp"),
)

_VIEW_SQL = """
    SELECT c.id, c.comparison_id, c.baseline_variant, c.candidate_variant, c.benchmark_version,
           c.category, c.n_baseline, c.n_candidate, c.mean_baseline, c.mean_candidate, c.delta,
           c.ci_low, c.ci_high, c.confidence, c.verdict, c.compared_at AT TIME ZONE 'UTC' AS compared_at
      FROM ops.agent_ab_comparisons c
"""


class IpaiBenchmarkComparison(models.Model):
    """A/B comparisons of agent variants (``ipai-ops bench compare``), read in place."""

    _name = "ipai.benchmark.comparison"
    _description = "Agent A/B comparison (ops.agent_ab_comparisons)"
    _auto = False
    _order = "compared_at desc, category, id"
    _rec_name = "comparison_id"

    comparison_id = fields.Char(readonly=True)
    baseline_variant = fields.Char(readonly=True)
    candidate_variant = fields.Char(readonly=True)
    benchmark_version = fields.Integer(readonly=True, aggregator=False)
    category = fields.Char(readonly=True)
    n_baseline = fields.Integer(string="Baseline runs", readonly=True)
    n_candidate = fields.Integer(string="Candidate runs", readonly=True)
    mean_baseline = fields.Float(readonly=True, aggregator="avg", digits=(8, 4))
    mean_candidate = fields.Float(readonly=True, aggregator="avg", digits=(8, 4))
    delta = fields.Float(readonly=True, aggregator="avg", digits=(8, 4), help="candidate - baseline")
    ci_low = fields.Float(string="CI low", readonly=True, aggregator=False, digits=(8, 4))
    ci_high = fields.Float(string="CI high", readonly=True, aggregator=False, digits=(8, 4))
    confidence = fields.Float(readonly=True, aggregator=False, digits=(5, 4))
    verdict = fields.Selection(
        [("better", "Better"), ("worse", "Worse"), ("no evidence", "No evidence")], readonly=True
    )
    compared_at = fields.Datetime(readonly=True)

    def init(self):
        self.env["ipai.ops"].create_ops_view(
            self._table, select_sql=_VIEW_SQL, columns=_COLUMNS, source="ops.agent_ab_comparisons"
        )
