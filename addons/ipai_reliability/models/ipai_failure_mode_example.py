from odoo import fields, models


class IpaiFailureModeExample(models.Model):
    _name = "ipai.failure.mode.example"
    _description = "Failure mode example"
    _order = "failure_mode_id, sequence, id"

    failure_mode_id = fields.Many2one("ipai.failure.mode", required=True, ondelete="cascade", index=True)
    sequence = fields.Integer(default=10)
    text = fields.Text(
        required=True,
        help="A real text (log excerpt, message) this code is for: it must classify to this code "
        "(the registry's examples, checked by the core's tests).",
    )
