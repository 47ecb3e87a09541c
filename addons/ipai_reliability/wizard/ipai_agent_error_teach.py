"""Set failure code: a manager decides the code of an error, and the classifier learns it."""

from odoo import fields, models
from odoo.exceptions import UserError


class IpaiAgentErrorTeach(models.TransientModel):
    _name = "ipai.agent.error.teach"
    _description = "Set the failure code of an agent error (a taught example)"

    error_id = fields.Many2one("ipai.agent.error", required=True, readonly=True, ondelete="cascade")
    current_code = fields.Char(related="error_id.code", string="Current code")
    message = fields.Text(related="error_id.message")
    failure_mode_id = fields.Many2one(
        "ipai.failure.mode",
        string="Failure code",
        required=True,
        domain=[("lifecycle", "=", "active"), ("fallback", "=", False)],
        help="The code this error should have. Its text is kept as a labelled example (who, when): "
        "the next 'ipai-ops classify train --taught' learns it, and unclassified errors of the same "
        "shape take the code now.",
    )

    def action_apply(self):
        self.ensure_one()
        if not self.error_id:
            raise UserError(self.env._("The error no longer exists."))
        recoded = self.error_id._teach(self.failure_mode_id)
        others = len(recoded - self.error_id)
        return {
            "type": "ir.actions.client",
            "tag": "display_notification",
            "params": {
                "type": "success",
                "message": self.env._(
                    "%(code)s set and taught%(others)s.",
                    code=self.failure_mode_id.code,
                    others=self.env._("; %(n)s unclassified error(s) of the same shape too", n=others)
                    if others
                    else "",
                ),
                "next": {"type": "ir.actions.act_window_close"},
            },
        }
