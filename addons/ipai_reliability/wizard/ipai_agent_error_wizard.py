from datetime import timedelta

from odoo import api, fields, models
from odoo.exceptions import UserError

#: Snooze presets: (key, label, duration); ``count`` and ``date`` use the fields below them.
SNOOZE_PRESETS = [
    ("1h", "1 hour", timedelta(hours=1)),
    ("1d", "1 day", timedelta(days=1)),
    ("1w", "1 week", timedelta(weeks=1)),
    ("count", "Until N more occurrences", None),
    ("date", "Until a date", None),
]


class IpaiAgentErrorWizard(models.TransientModel):
    _name = "ipai.agent.error.wizard"
    _description = "Agent error action (resolve in release, snooze, assign)"

    action = fields.Selection(
        [("resolve_release", "Resolve in release"), ("snooze", "Snooze"), ("assign", "Assign")], required=True
    )
    error_ids = fields.Many2many("ipai.agent.error", string="Errors")
    version = fields.Char(string="Release", help="The service.version the fix ships in, e.g. 1.4.2")
    current_release = fields.Char(
        compute="_compute_release_hint",
        help="The newest release (service.version) the selected errors' occurrences report.",
    )
    no_version = fields.Boolean(
        compute="_compute_release_hint",
        help="None of the selected errors' occurrences reports a release.",
    )
    snooze_preset = fields.Selection(
        [(key, label) for key, label, __ in SNOOZE_PRESETS],
        string="Snooze for",
        help="Empty (calls from code): the date and/or the number of occurrences below.",
    )
    snooze_until = fields.Datetime(string="Until")
    snooze_occurrences = fields.Integer(string="More occurrences")
    # only people who can read errors (the Reliability groups); action_assign checks it too
    user_id = fields.Many2one(
        "res.users",
        string="Assignee",
        domain=lambda self: self.env["ipai.reliability.team"]._assignee_domain(),
    )
    note = fields.Text()

    @api.depends("error_ids")
    def _compute_release_hint(self):
        for wiz in self:
            versions = [v for v in wiz.error_ids.mapped("last_service_version") if v]
            wiz.no_version = bool(wiz.error_ids) and not versions
            newest = max(versions, key=wiz._version_key) if versions else False
            wiz.current_release = newest

    @staticmethod
    def _version_key(version):
        # the order ops.version_key gives: the numbers in the version, compared as numbers
        digits, number = [], ""
        for ch in version[:256]:
            if ch.isdigit():
                number += ch
            elif number:
                digits.append(int(number))
                number = ""
        if number:
            digits.append(int(number))
        return digits

    def _snooze_values(self):
        """``(until, occurrences)`` the snooze asks for."""
        preset = self.snooze_preset
        if not preset:
            return self.snooze_until or False, self.snooze_occurrences or False
        if preset == "count":
            if self.snooze_occurrences < 1:
                raise UserError(self.env._("Enter how many more occurrences wake the error up (at least 1)."))
            return False, self.snooze_occurrences
        if preset == "date":
            if not self.snooze_until:
                raise UserError(self.env._("Pick the date and time the error wakes up."))
            return self.snooze_until, False
        duration = {key: delta for key, __, delta in SNOOZE_PRESETS}[preset]
        return fields.Datetime.now() + duration, False

    def action_apply(self):
        self.ensure_one()
        errors = self.error_ids
        if not errors:
            raise UserError(self.env._("Select at least one error."))
        # The console actions check what is entered (an empty release or user is a UserError).
        if self.action == "resolve_release":
            errors.action_resolve_in_release(self.version or "")
        elif self.action == "snooze":
            until, occurrences = self._snooze_values()
            errors.action_snooze(until=until, occurrences=occurrences)
        elif self.action == "assign":
            errors.action_assign(self.user_id, note=self.note or None)
        return {"type": "ir.actions.act_window_close"}
