from odoo import fields, models


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

    def action_ipai_sync_registry(self):
        return self.env["ipai.failure.mode"].action_sync_registry()
