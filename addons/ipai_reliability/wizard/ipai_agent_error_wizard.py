from odoo import api, fields, models
from odoo.exceptions import UserError


class IpaiAgentErrorWizard(models.TransientModel):
    _name = "ipai.agent.error.wizard"
    _description = "Agent error action (resolve in release, snooze, assign)"

    action = fields.Selection(
        [("resolve_release", "Resolve in release"), ("snooze", "Snooze"), ("assign", "Assign")], required=True
    )
    error_ids = fields.Many2many("ipai.agent.error", string="Errors")
    version = fields.Char(string="Release", help="The service.version the fix ships in, e.g. 1.4.2")
    snooze_until = fields.Datetime(string="Until")
    snooze_occurrences = fields.Integer(string="Or for N more occurrences")
    # only people who can read errors (the Reliability groups); action_assign checks it too
    user_id = fields.Many2one(
        "res.users",
        string="Assignee",
        domain=lambda self: self.env["ipai.reliability.team"]._assignee_domain(),
    )
    note = fields.Text()

    @api.model
    def default_get(self, fields_list):
        values = super().default_get(fields_list)
        # values["error_ids"] holds commands ([Command.set(ids)]); the console passes plain ids.
        errors = self.env["ipai.agent.error"].browse(self.env.context.get("default_error_ids") or [])
        if "version" in fields_list and errors:
            versions = [v for v in errors.mapped("last_service_version") if v]
            values.setdefault("version", versions[0] if versions else False)
        return values

    def action_apply(self):
        self.ensure_one()
        errors = self.error_ids
        if not errors:
            raise UserError(self.env._("Select at least one error."))
        # The console actions check what is entered (an empty release or user is a UserError).
        if self.action == "resolve_release":
            errors.action_resolve_in_release(self.version or "")
        elif self.action == "snooze":
            errors.action_snooze(until=self.snooze_until or False, occurrences=self.snooze_occurrences or False)
        elif self.action == "assign":
            errors.action_assign(self.user_id, note=self.note or None)
        return {"type": "ir.actions.act_window_close"}
