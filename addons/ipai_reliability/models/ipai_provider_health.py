"""Provider health: errors per GenAI provider and model over the last hour and day.

A SQL view over ``ops.agent_error_occurrences`` (read in place, nothing copied): one row
per provider, model and environment with a GenAI error in the last 24 hours. The bridge
keeps each occurrence's GenAI context (ops migration 0010, from the OpenTelemetry GenAI
semantic conventions' ``gen_ai.*`` attributes); the model is the response's, else the
one requested.

What "error rate" can mean here: the bridge receives error telemetry only (the Collector
forwards error spans and error logs, and the bridge's prefilter drops requests without
an error undecoded), so it never sees the GenAI calls that succeeded and cannot say
which *share* of calls failed. The rate shown is errors per minute over the last hour; a
failure ratio needs all ``gen_ai.*`` spans counted where they all pass (the Collector,
e.g. its count connector, into Prometheus). docs/bridge.md says the same.
"""

from odoo import fields, models

_COLUMNS = (
    ("id", "bigint"),
    ("provider", "text"),
    ("model", "text"),
    ("environment", "text"),
    ("operations", "text"),
    ("errors_last_hour", "bigint"),
    ("errors_last_day", "bigint"),
    ("errors_per_minute", "numeric"),
    ("error_groups", "bigint"),
    ("input_tokens", "bigint"),
    ("output_tokens", "bigint"),
    ("last_seen", "timestamp"),
    ("latest_error_id", "bigint"),
)

# The WHERE matches the partial index agent_error_occurrences_gen_ai_idx (migration 0010):
# only the last day's GenAI occurrences are read, however large the table. The id is a
# 52-bit digest of the row's key, so a row keeps its id between the search and the read
# (a row_number would shift when a new provider appears) and it fits a JavaScript number.
_SQL = """
    WITH recent AS (
        SELECT o.gen_ai_provider AS provider,
               coalesce(o.gen_ai_response_model, o.gen_ai_request_model, '') AS model,
               coalesce(o.environment, '') AS environment,
               o.gen_ai_operation,
               o.occurred_at,
               o.error_id,
               o.gen_ai_input_tokens,
               o.gen_ai_output_tokens
          FROM ops.agent_error_occurrences o
         WHERE o.gen_ai_provider IS NOT NULL
           AND o.occurred_at >= now() - interval '1 day'
    )
    SELECT ('x' || substr(md5(r.provider || chr(31) || r.model || chr(31) || r.environment), 1, 13))::bit(52)::bigint
               AS id,
           r.provider,
           nullif(r.model, '') AS model,
           nullif(r.environment, '') AS environment,
           string_agg(DISTINCT r.gen_ai_operation, ', ') AS operations,
           count(*) FILTER (WHERE r.occurred_at >= now() - interval '1 hour') AS errors_last_hour,
           count(*) AS errors_last_day,
           round(count(*) FILTER (WHERE r.occurred_at >= now() - interval '1 hour') / 60.0, 2) AS errors_per_minute,
           count(DISTINCT r.error_id) AS error_groups,
           sum(r.gen_ai_input_tokens) AS input_tokens,
           sum(r.gen_ai_output_tokens) AS output_tokens,
           max(r.occurred_at) AT TIME ZONE 'UTC' AS last_seen,
           (array_agg(r.error_id ORDER BY r.occurred_at DESC))[1] AS latest_error_id
      FROM recent r
     GROUP BY r.provider, r.model, r.environment
"""


class IpaiProviderHealth(models.Model):
    _name = "ipai.provider.health"
    _description = "Provider health: GenAI errors per provider and model, last hour and day"
    _auto = False
    _order = "errors_last_hour desc, errors_last_day desc, provider, model"
    _rec_name = "provider"

    provider = fields.Char(readonly=True, help="gen_ai.provider.name (or the older gen_ai.system).")
    model = fields.Char(readonly=True, help="gen_ai.response.model, else gen_ai.request.model.")
    environment = fields.Char(readonly=True, help="deployment.environment.name of the sender.")
    operations = fields.Char(readonly=True, help="gen_ai.operation.name values seen (chat, embeddings, ...).")
    errors_last_hour = fields.Integer(string="Errors (1 h)", readonly=True, aggregator="sum")
    errors_last_day = fields.Integer(string="Errors (24 h)", readonly=True, aggregator="sum")
    errors_per_minute = fields.Float(
        string="Errors / min (1 h)",
        readonly=True,
        digits=(16, 2),
        aggregator="sum",
        help="Errors per minute over the last hour. Not a share of calls: the bridge receives error "
        "telemetry only and never sees the calls that succeeded.",
    )
    error_groups = fields.Integer(
        string="Error groups (24 h)",
        readonly=True,
        aggregator=False,
        help="Distinct errors in the last 24 hours (not summed across rows: one error can span several).",
    )
    input_tokens = fields.Integer(string="Input tokens (24 h)", readonly=True, aggregator="sum")
    output_tokens = fields.Integer(string="Output tokens (24 h)", readonly=True, aggregator="sum")
    last_seen = fields.Datetime(readonly=True)
    latest_error_id = fields.Many2one("ipai.agent.error", string="Latest error", readonly=True)

    def init(self):
        self.env["ipai.ops"].create_ops_view(
            self._table, select_sql=_SQL, columns=_COLUMNS, source="ops.agent_error_occurrences"
        )
