"""Agent runs: ``ops.agent_runs`` (written by ``ipai-ops run``) read in place through a SQL view.

The recorder owns the metadata keys this view reads (docs/agent_runs.md); other writers
merge keys into the same object, so every number is read only when it is a JSON number:
one malformed row must not break the whole list.
"""

from odoo import fields, models

STATUSES = [
    ("queued", "Queued"),
    ("running", "Running"),
    ("succeeded", "Succeeded"),
    ("failed", "Failed"),
    ("cancelled", "Cancelled"),
]

# (column, SQL type) of the view, used for the empty stand-in when ops lives elsewhere.
_COLUMNS = (
    ("id", "bigint"),
    ("run_id", "text"),
    ("source", "text"),
    ("agent", "text"),
    ("task_ref", "text"),
    ("status", "text"),
    ("started_at", "timestamp"),
    ("finished_at", "timestamp"),
    ("duration", "double precision"),
    ("error_id", "bigint"),
    ("variant_id", "text"),
    ("model_name", "text"),
    ("code", "text"),
    ("exit_code", "bigint"),
    ("attempts", "integer"),
    ("input_tokens", "bigint"),
    ("output_tokens", "bigint"),
    ("total_tokens", "bigint"),
    ("tool_call_count", "bigint"),
    ("command", "text"),
    ("cwd", "text"),
    ("run_dir", "text"),
    ("iterations", "text"),
    ("kind", "text"),
    ("retries", "integer"),
    ("session_id", "text"),
    ("verification_status", "text"),
    ("verification_checks", "bigint"),
    ("verification_failed", "bigint"),
    ("verification", "text"),
    ("structured_output_valid", "boolean"),
    ("structured_output", "text"),
)


def _json_int(path):
    """``metadata #> path`` as bigint when it is a JSON number, else NULL."""
    return (
        f"CASE WHEN jsonb_typeof(r.metadata #> '{path}') = 'number'"
        f" THEN trunc((r.metadata #> '{path}')::numeric)::bigint END"
    )


_VIEW_SQL = f"""
    SELECT r.id,
           r.run_id,
           r.source,
           r.agent,
           r.task_ref,
           r.status,
           r.started_at AT TIME ZONE 'UTC' AS started_at,
           r.finished_at AT TIME ZONE 'UTC' AS finished_at,
           (r.duration_ms / 1000.0)::double precision AS duration,
           r.error_id,
           r.metadata ->> 'variant_id' AS variant_id,
           r.metadata ->> 'model' AS model_name,
           r.metadata ->> 'code' AS code,
           {_json_int("{exit_code}")} AS exit_code,
           CASE WHEN jsonb_typeof(r.metadata -> 'iterations') = 'array'
                THEN jsonb_array_length(r.metadata -> 'iterations') END AS attempts,
           {_json_int("{tokens,input}")} AS input_tokens,
           {_json_int("{tokens,output}")} AS output_tokens,
           {_json_int("{tokens,total}")} AS total_tokens,
           {_json_int("{tool_call_count}")} AS tool_call_count,
           r.metadata ->> 'command' AS command,
           r.metadata ->> 'cwd' AS cwd,
           r.metadata #>> '{{artifacts,run_dir}}' AS run_dir,
           jsonb_pretty(r.metadata -> 'iterations') AS iterations,
           coalesce(r.metadata ->> 'kind', r.metadata #>> '{{iterations,-1,kind}}') AS kind,
           CASE WHEN jsonb_typeof(r.metadata -> 'iterations') = 'array'
                THEN greatest(jsonb_array_length(r.metadata -> 'iterations') - 1, 0) END AS retries,
           r.metadata ->> 'session_id' AS session_id,
           CASE WHEN r.metadata #>> '{{verification,status}}' IN ('passed', 'failed')
                THEN r.metadata #>> '{{verification,status}}' END AS verification_status,
           {_json_int("{verification,total}")} AS verification_checks,
           {_json_int("{verification,failed}")} AS verification_failed,
           CASE WHEN jsonb_typeof(r.metadata -> 'verification') = 'object'
                THEN jsonb_pretty(r.metadata -> 'verification') END AS verification,
           CASE WHEN jsonb_typeof(r.metadata #> '{{structured_output,valid}}') = 'boolean'
                THEN (r.metadata #>> '{{structured_output,valid}}')::boolean END AS structured_output_valid,
           CASE WHEN jsonb_typeof(r.metadata -> 'structured_output') = 'object'
                THEN jsonb_pretty(r.metadata -> 'structured_output') END AS structured_output
      FROM ops.agent_runs r
"""


class IpaiAgentRun(models.Model):
    _name = "ipai.agent.run"
    _description = "Agent run (ops.agent_runs)"
    _auto = False
    _order = "started_at desc, id desc"
    _rec_name = "run_id"

    run_id = fields.Char(string="Run id", readonly=True)
    source = fields.Char(readonly=True)
    agent = fields.Char(readonly=True)
    task_ref = fields.Char(string="Task", readonly=True)
    status = fields.Selection(STATUSES, readonly=True)
    started_at = fields.Datetime(readonly=True)
    finished_at = fields.Datetime(readonly=True)
    duration = fields.Float(string="Duration (s)", readonly=True, aggregator="avg", digits=(16, 3))
    error_id = fields.Many2one("ipai.agent.error", readonly=True)
    variant_id = fields.Char(readonly=True, help="A/B variant (metadata.variant_id)")
    model_name = fields.Char(string="Model", readonly=True)
    code = fields.Char(string="Failure code", readonly=True)
    exit_code = fields.Integer(
        readonly=True, aggregator=False, help="Of the last attempt; negative = killed by a signal"
    )
    attempts = fields.Integer(readonly=True, aggregator="avg")
    input_tokens = fields.Integer(readonly=True, aggregator="sum")
    output_tokens = fields.Integer(readonly=True, aggregator="sum")
    total_tokens = fields.Integer(readonly=True, aggregator="sum")
    tool_call_count = fields.Integer(string="Tool calls", readonly=True, aggregator="sum")
    command = fields.Text(readonly=True, prefetch=False)
    cwd = fields.Char(string="Working directory", readonly=True, prefetch=False)
    run_dir = fields.Char(string="Run directory", readonly=True, prefetch=False)
    iterations = fields.Text(string="Attempts (JSON)", readonly=True, prefetch=False)
    kind = fields.Char(readonly=True, help="test, lint, typecheck or agent (--kind, else read from the program)")
    retries = fields.Integer(readonly=True, aggregator="sum", help="Attempts after the first")
    # record_version 2 (docs/agent_runs.md, "Record versions"); empty on older records
    session_id = fields.Char(readonly=True, help="The agent session the run ended in")
    verification_status = fields.Selection(
        [("passed", "Passed"), ("failed", "Failed")], string="Verification", readonly=True
    )
    verification_checks = fields.Integer(string="Checks", readonly=True, aggregator="sum")
    verification_failed = fields.Integer(string="Checks failed", readonly=True, aggregator="sum")
    verification = fields.Text(string="Verification report (JSON)", readonly=True, prefetch=False)
    structured_output_valid = fields.Boolean(string="Output valid", readonly=True)
    structured_output = fields.Text(string="Structured output (JSON)", readonly=True, prefetch=False)

    def init(self):
        self.env["ipai.ops"].create_ops_view(
            self._table, select_sql=_VIEW_SQL, columns=_COLUMNS, source="ops.agent_runs"
        )

    def action_escalation_bundle(self):
        """Download this run's escalation bundle (``ipai-ops escalate <run id>``): manifest,
        the run row, its error and envelope, and the logs still on disk, redacted.

        ``run:`` makes the reference a run whatever the id looks like: a ``--run-id`` made
        of digits would otherwise be read as an error id.
        """
        self.ensure_one()
        return self.env["ipai.ops"]._escalation_bundle(f"run:{self.run_id}", record=self)
