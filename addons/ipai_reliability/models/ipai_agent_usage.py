"""Tokens and cost of agent runs per provider and model: a SQL view over ``ops.agent_runs``.

One row per run and model: ``metadata.tokens_by_model`` when the run used several models,
else the run's own ``tokens`` and ``model`` (docs/agent_runs.md). Numbers are read only when
they are JSON numbers (one malformed row must not break the pivot). Provider and cost come
from the longest matching entry of ``ipai.model.price``; a model without one has no cost
(``priced`` false), never a guessed one.
"""

from odoo import fields, models

_COLUMNS = (
    ("id", "bigint"),
    ("run_id", "bigint"),
    ("run_ref", "text"),
    ("started_at", "timestamp"),
    ("agent", "text"),
    ("kind", "text"),
    ("status", "text"),
    ("provider", "text"),
    ("model", "text"),
    ("input_tokens", "bigint"),
    ("output_tokens", "bigint"),
    ("total_tokens", "bigint"),
    ("cost", "numeric"),
    ("priced", "boolean"),
)


def _tokens(key):
    return (
        f"CASE WHEN jsonb_typeof(u.tokens -> '{key}') = 'number'"
        f" THEN trunc((u.tokens ->> '{key}')::numeric)::bigint END"
    )


# The id is a 52-bit digest of (run, model): stable between a search and a read, and it fits
# a JavaScript number. LIKE needs the entry's own wildcards escaped to be a plain prefix;
# %% is one % (the view is executed as a format string).
_SQL = f"""
    WITH usage AS (
        SELECT r.id AS run_id, r.run_id AS run_ref, r.started_at, r.agent, r.status, r.metadata,
               m.key AS model, m.value AS tokens
          FROM ops.agent_runs r
          CROSS JOIN LATERAL jsonb_each(r.metadata -> 'tokens_by_model') m
         WHERE jsonb_typeof(r.metadata -> 'tokens_by_model') = 'object'
        UNION ALL
        SELECT r.id, r.run_id, r.started_at, r.agent, r.status, r.metadata,
               r.metadata ->> 'model', r.metadata -> 'tokens'
          FROM ops.agent_runs r
         WHERE jsonb_typeof(r.metadata -> 'tokens_by_model') IS DISTINCT FROM 'object'
            OR r.metadata -> 'tokens_by_model' = '{{}}'::jsonb
    ), counted AS (
        SELECT u.*, {_tokens("input")} AS input_tokens, {_tokens("output")} AS output_tokens,
               {_tokens("total")} AS total_tokens
          FROM usage u
    )
    SELECT ('x' || substr(md5(u.run_ref || chr(31) || coalesce(u.model, '')), 1, 13))::bit(52)::bigint AS id,
           u.run_id,
           u.run_ref,
           u.started_at AT TIME ZONE 'UTC' AS started_at,
           u.agent,
           coalesce(u.metadata ->> 'kind', u.metadata #>> '{{iterations,-1,kind}}') AS kind,
           u.status,
           coalesce(p.provider, u.metadata ->> 'provider', 'unknown') AS provider,
           u.model,
           u.input_tokens,
           u.output_tokens,
           coalesce(u.total_tokens, u.input_tokens + u.output_tokens) AS total_tokens,
           round((coalesce(u.input_tokens, 0) * p.input_price
                  + coalesce(u.output_tokens, 0) * p.output_price)::numeric / 1000000, 6) AS cost,
           p.model IS NOT NULL AS priced
      FROM counted u
      LEFT JOIN LATERAL (
            SELECT mp.provider, mp.model, mp.input_price, mp.output_price
              FROM ipai_model_price mp
             WHERE mp.active
               AND u.model LIKE replace(replace(replace(mp.model, '\\', '\\\\'), '%%', '\\%%'), '_', '\\_') || '%%'
             ORDER BY length(mp.model) DESC
             LIMIT 1
      ) p ON true
"""


class IpaiAgentUsage(models.Model):
    _name = "ipai.agent.usage"
    _description = "Agent run usage: tokens and cost per provider and model"
    _auto = False
    _order = "started_at desc, id desc"
    _rec_name = "model"

    run_id = fields.Many2one("ipai.agent.run", readonly=True)
    run_ref = fields.Char(string="Run id", readonly=True)
    started_at = fields.Datetime(readonly=True)
    agent = fields.Char(readonly=True)
    kind = fields.Char(readonly=True)
    status = fields.Char(readonly=True)
    provider = fields.Char(readonly=True, help="From the model's price entry, else the run's metadata.provider")
    model = fields.Char(readonly=True)
    input_tokens = fields.Integer(readonly=True, aggregator="sum")
    output_tokens = fields.Integer(readonly=True, aggregator="sum")
    total_tokens = fields.Integer(readonly=True, aggregator="sum")
    cost = fields.Float(
        string="Cost (USD)",
        readonly=True,
        digits=(16, 4),
        aggregator="sum",
        help="Tokens times the model's price (Configuration > Model prices); empty without a price.",
    )
    priced = fields.Boolean(readonly=True)

    def init(self):
        self.env["ipai.ops"].create_ops_view(self._table, select_sql=_SQL, columns=_COLUMNS, source="ops.agent_runs")
