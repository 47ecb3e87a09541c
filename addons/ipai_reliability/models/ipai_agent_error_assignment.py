from odoo import api, fields, models


class IpaiAgentErrorAssignment(models.Model):
    """Odoo-side fields of an error (who works it, a note), keyed by fingerprint.

    Kept out of the ops schema on purpose: ``ops.agent_errors`` belongs to every
    writer (bridge, CLI, CI ingest); who fixes an error is an Odoo concern.
    """

    _name = "ipai.agent.error.assignment"
    _description = "Agent error assignment"
    _inherit = ["mail.thread", "mail.activity.mixin"]
    _order = "write_date desc, id desc"
    _rec_name = "fingerprint"

    fingerprint = fields.Char(required=True, index=True, readonly=True)
    code = fields.Char(readonly=True)
    user_id = fields.Many2one("res.users", string="Assignee", tracking=True, index=True)
    note = fields.Text()
    error_id = fields.Many2one("ipai.agent.error", compute="_compute_error_id")

    _fingerprint_uniq = models.Constraint("UNIQUE(fingerprint)", "One assignment per error fingerprint.")

    @api.depends("fingerprint")
    def _compute_error_id(self):
        errors = self.env["ipai.agent.error"].search([("fingerprint", "in", self.mapped("fingerprint"))])
        by_fp = {e.fingerprint: e for e in errors}
        for rec in self:
            rec.error_id = by_fp.get(rec.fingerprint, False)
