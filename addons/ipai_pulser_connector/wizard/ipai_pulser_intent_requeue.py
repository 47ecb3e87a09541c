"""Requeue with a warning: a failure the registry calls non-retryable fails again as it is."""

from odoo import api, fields, models
from odoo.exceptions import UserError

from ..services import state_machine as sm


class IpaiPulserIntentRequeue(models.TransientModel):
    _name = "ipai.pulser.intent.requeue"
    _description = "Requeue intents (confirm non-retryable failures)"

    intent_ids = fields.Many2many("ipai.pulser.intent", string="Intents", required=True)
    non_retryable_ids = fields.Many2many(
        "ipai.pulser.intent", compute="_compute_non_retryable", string="Non-retryable failures"
    )
    non_retryable_codes = fields.Char(compute="_compute_non_retryable", string="Failure codes")

    @api.model
    def _is_non_retryable(self, intent):
        """Failed for good: ``failed`` (not ``dead``) is where a non-retryable failure ends,
        and a code the registry marks non-retryable says the same."""
        return intent.state == sm.FAILED or bool(intent.failure_mode_id and not intent.failure_mode_id.retryable)

    @api.depends("intent_ids")
    def _compute_non_retryable(self):
        for wiz in self:
            bad = wiz.intent_ids.filtered(wiz._is_non_retryable)
            wiz.non_retryable_ids = bad
            wiz.non_retryable_codes = ", ".join(sorted({code for code in bad.mapped("failure_code") if code})) or False

    @api.private
    @api.model
    def open_for(self, intents):
        """Requeue ``intents`` now when none is a non-retryable failure, else open the warning."""
        intents = intents.filtered(lambda intent: intent.state in sm.REQUEUEABLE)
        if not intents:
            raise UserError(self.env._("Only failed or dead intents can be requeued."))
        if not intents.filtered(self._is_non_retryable):
            intents.action_requeue()
            return {"type": "ir.actions.client", "tag": "soft_reload"}
        wizard = self.create({"intent_ids": [fields.Command.set(intents.ids)]})
        return {
            "type": "ir.actions.act_window",
            "res_model": self._name,
            "res_id": wizard.id,
            "view_mode": "form",
            "target": "new",
            "name": self.env._("Requeue a non-retryable failure?"),
        }

    def action_confirm(self):
        self.ensure_one()
        self.intent_ids.action_requeue()
        return {"type": "ir.actions.act_window_close", "infos": {"requeued": len(self.intent_ids)}}
