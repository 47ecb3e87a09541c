"""Owner teams: who answers for a failure code.

The registry names an owner per failure mode (``owner: platform`` in
``ssot/errors/failure_modes.yaml``, the ``owner`` field of ``ipai.failure.mode``). A team
answers for one such owner: errors whose code has that owner belong to the team (the
console groups and filters by it), and a new error of such a code is assigned to the
team's default assignee, with the team's members following it. A small model of its own,
as helpdesk and project teams are in Odoo: ``hr`` is not a dependency, and a
``res.groups`` would mix access rights with who is on call.
"""

from odoo import api, fields, models
from odoo.exceptions import ValidationError

READER_GROUP = "ipai_reliability.group_ipai_reliability_user"


def reliability_users_domain(env):
    """Internal users who can read errors (the Reliability User group, or Manager, which implies it)."""
    group = env.ref(READER_GROUP, raise_if_not_found=False)
    return [("share", "=", False), ("all_group_ids", "in", group.ids if group else [])]


class IpaiReliabilityTeam(models.Model):
    _name = "ipai.reliability.team"
    _description = "Reliability owner team"
    _order = "sequence, name, id"

    name = fields.Char(required=True)
    owner = fields.Char(
        string="Registry owner",
        required=True,
        help="The owner value of the failure modes this team answers for (owner: in "
        "ssot/errors/failure_modes.yaml), e.g. platform.",
    )
    sequence = fields.Integer(default=10)
    active = fields.Boolean(default=True)
    color = fields.Integer()
    user_id = fields.Many2one(
        "res.users",
        string="Default assignee",
        domain=lambda self: reliability_users_domain(self.env),
        help="New errors of the team's codes are assigned to this person (a to-do on the error).",
    )
    member_ids = fields.Many2many(
        "res.users",
        "ipai_reliability_team_user_rel",
        "team_id",
        "user_id",
        string="Members",
        domain=lambda self: reliability_users_domain(self.env),
        help="Members follow the team's new errors: they are told about comments, regressions and status changes.",
    )
    failure_mode_ids = fields.One2many("ipai.failure.mode", compute="_compute_failure_mode_ids", string="Failure modes")
    failure_mode_count = fields.Integer(compute="_compute_failure_mode_ids", string="Codes")

    _owner_uniq = models.Constraint("UNIQUE(owner)", "One team per registry owner.")

    @api.depends("owner")
    def _compute_failure_mode_ids(self):
        Mode = self.env["ipai.failure.mode"].with_context(active_test=False)
        modes = Mode.search([("owner", "in", [o for o in self.mapped("owner") if o])])
        for team in self:
            team.failure_mode_ids = modes.filtered(lambda m, owner=team.owner: m.owner == owner)
            team.failure_mode_count = len(team.failure_mode_ids)

    @api.constrains("user_id", "member_ids")
    def _check_readers(self):
        readers = self.env["res.users"].sudo().search(reliability_users_domain(self.env))
        for team in self:
            outsiders = (team.user_id | team.member_ids) - readers
            if outsiders:
                raise ValidationError(
                    self.env._(
                        "%(users)s cannot read agent errors: add them to the Reliability User group first.",
                        users=", ".join(outsiders.mapped("name")),
                    )
                )

    @api.model_create_multi
    def create(self, vals_list):
        for vals in vals_list:
            if vals.get("owner"):
                vals["owner"] = vals["owner"].strip()
        return super().create(vals_list)

    def write(self, vals):
        if vals.get("owner"):
            vals["owner"] = vals["owner"].strip()
        return super().write(vals)

    @api.model
    def _assignee_domain(self):
        """Who may be assigned an error: internal users who can read errors."""
        return reliability_users_domain(self.env)

    @api.model
    def _team_by_code(self):
        """``{failure code: team id}`` for the codes whose owner has an active team."""
        teams = {team.owner: team.id for team in self.sudo().search_fetch([], ["owner"])}
        if not teams:
            return {}
        modes = self.env["ipai.failure.mode"].sudo().with_context(active_test=False)
        return {
            mode.code: teams[mode.owner]
            for mode in modes.search_fetch([("owner", "in", list(teams))], ["code", "owner"])
        }

    def action_view_errors(self):
        self.ensure_one()
        action = self.env["ir.actions.act_window"]._for_xml_id("ipai_reliability.ipai_agent_error_action")
        action.update(
            name=self.env._("Errors of %(team)s", team=self.name),
            domain=[("team_id", "=", self.id)],
        )
        return action
