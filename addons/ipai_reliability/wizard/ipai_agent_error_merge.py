from odoo import api, fields, models
from odoo.exceptions import UserError


class IpaiAgentErrorMerge(models.TransientModel):
    """Merge errors: one failure reported twice (two sources, two fingerprints) becomes one error."""

    _name = "ipai.agent.error.merge"
    _description = "Merge agent errors"

    error_ids = fields.Many2many("ipai.agent.error", string="Errors")
    kept_error_id = fields.Many2one(
        "ipai.agent.error",
        string="Keep",
        domain="[('id', 'in', error_ids)]",
        help="The error that stays: the others' occurrences, counts, keys, runs and history move to it, "
        "and they point to it.",
    )
    total_count = fields.Integer(compute="_compute_total_count", string="Occurrences after the merge")

    @api.model
    def default_get(self, fields_list):
        values = super().default_get(fields_list)
        errors = self.env["ipai.agent.error"].browse(self.env.context.get("default_error_ids") or []).exists()
        if "kept_error_id" in fields_list and errors and not values.get("kept_error_id"):
            # the error with the most occurrences, then the oldest: the one people know
            values["kept_error_id"] = errors.sorted(lambda e: (-e.count, e.first_seen or fields.Datetime.now(), e.id))[
                :1
            ].id
        return values

    @api.depends("error_ids")
    def _compute_total_count(self):
        for wizard in self:
            wizard.total_count = sum(wizard.error_ids.mapped("count"))

    def action_merge(self):
        self.ensure_one()
        if len(self.error_ids) < 2:
            raise UserError(self.env._("Select two or more errors to merge."))
        if not self.kept_error_id or self.kept_error_id not in self.error_ids:
            raise UserError(self.env._("Choose which of the selected errors to keep."))
        kept = self.kept_error_id
        self.error_ids._merge_into(kept)
        return {
            "type": "ir.actions.act_window",
            "res_model": "ipai.agent.error",
            "res_id": kept.id,
            "view_mode": "form",
            "target": "current",
        }
