from odoo import fields, models

_COLUMNS = (
    ("id", "bigint"),
    ("subject", "text"),
    ("run_id", "text"),
    ("agent", "text"),
    ("variant_id", "text"),
    ("benchmark_version", "integer"),
    ("category", "text"),
    ("score", "numeric"),
    ("weight", "numeric"),
    ("composite", "numeric"),
    ("tier", "text"),
    ("details", "text"),
    ("scored_at", "timestamp"),
)

_VIEW_SQL = """
    SELECT b.id, b.subject, b.run_id, b.agent, coalesce(b.variant_id, 'baseline') AS variant_id,
           b.benchmark_version, b.category, b.score, b.weight, b.composite, b.tier,
           b.details::text AS details, b.scored_at AT TIME ZONE 'UTC' AS scored_at
      FROM ops.agent_benchmark_results b
"""


class IpaiBenchmarkResult(models.Model):
    _name = "ipai.benchmark.result"
    _description = "Agent benchmark result (ops.agent_benchmark_results)"
    _auto = False
    _order = "scored_at desc, id desc"
    _rec_name = "subject"

    subject = fields.Char(readonly=True)
    run_id = fields.Char(readonly=True)
    agent = fields.Char(readonly=True)
    variant_id = fields.Char(readonly=True, help="A/B variant; 'baseline' when none")
    benchmark_version = fields.Integer(readonly=True, aggregator=False)
    category = fields.Char(readonly=True)
    score = fields.Float(readonly=True, aggregator="avg", digits=(6, 2))
    weight = fields.Float(readonly=True, aggregator=False, digits=(6, 4))
    composite = fields.Float(readonly=True, aggregator="avg", digits=(6, 2))
    tier = fields.Char(readonly=True)
    details = fields.Text(readonly=True)
    scored_at = fields.Datetime(readonly=True)

    def init(self):
        self.env["ipai.ops"].create_ops_view(
            self._table, select_sql=_VIEW_SQL, columns=_COLUMNS, source="ops.agent_benchmark_results"
        )
