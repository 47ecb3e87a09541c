from odoo import api, fields, models
from odoo.exceptions import ValidationError

from ipai_ops import store as ops_store

from .ipai_agent_error_occurrence import PARAM_TRACE_URL, check_trace_url_template


class ResConfigSettings(models.TransientModel):
    _inherit = "res.config.settings"

    ipai_registry_path = fields.Char(
        string="Failure-mode registry",
        config_parameter="ipai_reliability.registry_path",
        help="Path of failure_modes.yaml; empty = the bundled ssot/errors/failure_modes.yaml",
    )
    ipai_registry_writeback = fields.Boolean(
        string="Write new failure modes back to the registry file",
        config_parameter="ipai_reliability.registry_writeback",
    )
    ipai_ops_dsn = fields.Char(
        string="Separate ops database (DSN)",
        config_parameter="ipai_reliability.ops_dsn",
        help="Empty = ops lives in Odoo's database (required for the Agent Errors console).",
    )

    ipai_trace_url_template = fields.Char(
        string="Trace URL template",
        config_parameter=PARAM_TRACE_URL,
        help="Trace ids in the Agent Errors console link to this URL, {trace_id} replaced by the id, "
        "e.g. http://localhost:16686/trace/{trace_id} for Jaeger. Empty = no links.",
    )

    @api.constrains("ipai_trace_url_template")
    def _check_ipai_trace_url_template(self):
        for settings in self:
            problem = check_trace_url_template(settings.ipai_trace_url_template)
            if problem:
                raise ValidationError(
                    self.env._(
                        "The trace URL template %(problem)s, e.g. http://localhost:16686/trace/{trace_id}.",
                        problem=problem,
                    )
                )

    @api.constrains("ipai_ops_dsn")
    def _check_ipai_ops_dsn(self):
        for settings in self:
            if not (settings.ipai_ops_dsn or "").strip():
                continue
            try:
                ops_store.check_dsn(settings.ipai_ops_dsn.strip())
            except ops_store.InvalidDsn:
                raise ValidationError(
                    self.env._(
                        "The ops database DSN is neither a libpq connection string (host=... dbname=...) "
                        "nor a URI (postgresql://user@host:5432/ops)."
                    )
                ) from None

    def action_ipai_sync_registry(self):
        return self.env["ipai.failure.mode"].action_sync_registry()
