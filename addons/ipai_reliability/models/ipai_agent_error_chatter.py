"""An error is a record people discuss: chatter, the assignee's to-do, owner teams, merging.

``ipai.agent.error`` reads ``ops.agent_errors`` through a SQL view, and its actions write
that table with SQL, so Odoo's write-time tracking never runs. Every place that changes
status or severity goes through ``_ops_update``, and assigning through ``action_assign``;
both are wrapped here to post the change as a tracking message (old -> new) with the same
``mail.tracking.value`` rows a tracked ORM write would leave. Regressions are found in SQL
by the writers; the regression cron posts them (subtype *Regressed*, which followers get
by default).

Chatter works on the view model because ``mail.thread`` and ``mail.activity.mixin`` keep
everything in their own tables (``mail_message``, ``mail_followers``, ``mail_activity``,
keyed by model and ``res_id``) and add no stored column: the ops row id is the ``res_id``.
"""

import json

from markupsafe import Markup
from odoo import api, fields, models
from odoo.exceptions import UserError
from odoo.fields import Domain
from odoo.tools import SQL
from psycopg2 import errors as pg_errors

from .ipai_reliability_team import READER_GROUP

TODO = "mail.mail_activity_data_todo"
TRACKED = ("status", "severity", "user_id")
#: statuses that end the assignee's to-do ("snoozed" comes back by itself, so its to-do stays)
DONE_STATUSES = ("resolved", "ignored", "merged")
PARAM_NEW_ERRORS_CHECKED = "ipai_reliability.new_errors_checked_at"
#: how far back a run looks before the last one: a writer's transaction that began before
#: the last run and committed after it still has its new error seen
NEW_ERRORS_OVERLAP = "10 minutes"
NEW_ERRORS_BATCH = 5000


class IpaiAgentError(models.Model):
    _name = "ipai.agent.error"
    _inherit = ["ipai.agent.error", "mail.thread", "mail.activity.mixin"]
    # posting a comment or a note is working the error, as resolving it is
    _mail_post_access = "write"

    status = fields.Selection(selection_add=[("merged", "Merged")], tracking=True)
    severity = fields.Selection(tracking=True)
    user_id = fields.Many2one(tracking=True)
    # read, grouped and ordered in SQL as a lookup of ``code`` (see _field_to_sql), like family
    team_id = fields.Many2one(
        "ipai.reliability.team",
        string="Owner team",
        readonly=True,
        search="_search_team_id",
        help="The team that answers for the code's registry owner (Reliability > Configuration > Owner teams).",
    )
    my_team = fields.Boolean(
        compute="_compute_my_team", search="_search_my_team", string="Of my teams", help="Owned by a team I am on."
    )
    merged_into_id = fields.Many2one(
        "ipai.agent.error",
        compute="_compute_merged_into_id",
        string="Merged into",
        help="This error was merged: its occurrences, counts and history are on this one now.",
    )
    # an escalation trigger matched (models/ipai_agent_error_escalation.py)
    escalation_ids = fields.One2many("ipai.agent.error.escalation", "error_id", string="Escalations", readonly=True)
    escalated = fields.Boolean(
        compute="_compute_escalated",
        search="_search_escalated",
        help="An escalation trigger of the agent incident runbook matched this error: its owner was "
        "notified and the escalation bundle attached.",
    )

    # ------------------------------------------------------------------ owner teams

    def _field_to_sql(self, alias, field_expr, query=None):
        if field_expr != "team_id":
            return super()._field_to_sql(alias, field_expr, query)
        self._check_field_access(self._fields["team_id"], "read")
        # a jsonb object lookup per row, one constant per query (no subquery per row)
        team_by_code = self.env["ipai.reliability.team"]._team_by_code()
        return SQL(
            "(%s::jsonb ->> %s)::integer",
            json.dumps(team_by_code, sort_keys=True),
            SQL.identifier(alias, "code"),
        )

    def _search_team_id(self, operator, value):
        if operator in ("any", "not any"):
            teams = self.env["ipai.reliability.team"].with_context(active_test=False)._search(value)
            value, operator = list(teams), "in" if operator == "any" else "not in"
        if operator not in ("in", "not in"):
            return NotImplemented
        wanted = set(value)
        team_by_code = self.env["ipai.reliability.team"]._team_by_code()
        domain = Domain("code", "in", [code for code, team in team_by_code.items() if team in wanted])
        if False in wanted or None in wanted:  # codes of no team
            domain |= Domain("code", "not in", list(team_by_code))
        return domain if operator == "in" else ~domain

    def _compute_my_team(self):
        mine = set(self._my_team_ids())
        for error in self:
            error.my_team = error.team_id.id in mine

    def _search_my_team(self, operator, value):
        if operator not in ("=", "!=") or not isinstance(value, bool):
            raise UserError(self.env._("Of my teams can only be searched with = or != True/False."))
        positive = (operator == "=") == value
        return [("team_id", "in" if positive else "not in", self._my_team_ids())]

    def _my_team_ids(self):
        Team = self.env["ipai.reliability.team"].sudo()
        return Team.search(["|", ("member_ids", "in", self.env.uid), ("user_id", "=", self.env.uid)]).ids

    def _compute_merged_into_id(self):
        targets = {}
        if self.ids and self.env["ipai.ops"].ops_is_local():
            self.env.cr.execute(
                SQL(
                    "SELECT id, merged_into FROM ops.agent_errors WHERE id = ANY(%s) AND merged_into IS NOT NULL",
                    list(self.ids),
                )
            )
            targets = dict(self.env.cr.fetchall())
        for error in self:
            error.merged_into_id = self.browse(targets[error.id]) if error.id in targets else False

    # ------------------------------------------------------------------ escalations

    def _compute_escalated(self):
        escalated = set(
            self.env["ipai.agent.error.escalation"].sudo().search([("error_id", "in", self.ids)]).error_id.ids
        )
        for error in self:
            error.escalated = error.id in escalated

    def _search_escalated(self, operator, value):
        if operator not in ("=", "!=") or not isinstance(value, bool):
            return NotImplemented
        escalated = self.env["ipai.agent.error.escalation"].sudo()._search([("error_id", "!=", False)])
        positive = (operator == "=") == value
        return [("id", "in" if positive else "not in", escalated.subselect("error_id"))]

    # ------------------------------------------------------------------ tracking the SQL writes

    def _track_subtype(self, initial_values):
        if "status" in initial_values and self.status == "regressed":
            return self.env.ref("ipai_reliability.mt_agent_error_regressed")
        return super()._track_subtype(initial_values)

    def _tracked_values(self):
        return {error.id: {name: error[name] for name in TRACKED} for error in self}

    def _post_changes(self, initial, bodies=None):
        """Post what changed since ``initial`` (``{id: {field: value}}``) as tracking messages,
        with ``bodies`` (``{id: text}``) as their text; end the to-dos of errors now done."""
        bodies = bodies or {}
        for error in self:
            if error.id in bodies:
                error._track_set_log_message(bodies[error.id])
        self._message_track(list(TRACKED), initial)
        done = self.filtered(lambda e: e.status in DONE_STATUSES and initial[e.id]["status"] != e.status)
        for error in done:
            label = dict(error._fields["status"]._description_selection(self.env))[error.status]
            error.sudo().activity_feedback([TODO], feedback=self.env._("The error is %(status)s.", status=label))

    def _ops_update(self, assignments, where_status=None):
        self._check_console()
        if merged := self.filtered(lambda e: e.status == "merged"):
            raise UserError(
                self.env._(
                    "%(errors)s merged into another error: work that one instead.",
                    errors=", ".join(f"#{e.id} {e.code}" for e in merged),
                )
            )
        initial = self._tracked_values()
        done = super()._ops_update(assignments, where_status=where_status)
        done._post_changes(initial, {error.id: error._change_text() for error in done})
        return done

    def _change_text(self):
        """What a status change meant, in words (the tracking row shows old -> new)."""
        if self.status == "resolved" and self.resolved_in_version:
            return self.env._(
                "Resolved in release %(version)s: only occurrences from that release or later reopen it.",
                version=self.resolved_in_version,
            )
        if self.status in ("snoozed", "ignored") and (self.snooze_until or self.snooze_until_count):
            parts = []
            if self.snooze_until:
                parts.append(self.env._("until %(when)s UTC", when=fields.Datetime.to_string(self.snooze_until)))
            if self.snooze_until_count:
                parts.append(self.env._("until it reaches %(count)s occurrences", count=self.snooze_until_count))
            return self.env._("Snoozed %(how)s.", how=self.env._(" or ").join(parts))
        return ""

    # ------------------------------------------------------------------ assigning

    def _check_assignee(self, user):
        """A user who can read errors (Reliability User or Manager), or a UserError."""
        if isinstance(user, int) and not isinstance(user, bool):
            user = self.env["res.users"].browse(user)
        is_one_user = isinstance(user, models.BaseModel) and user._name == "res.users" and len(user.exists()) == 1
        if is_one_user and (user.share or not user.has_group(READER_GROUP)):
            raise UserError(
                self.env._(
                    "%(user)s cannot read agent errors: assign a Reliability user, or add them to the "
                    "Reliability User group first.",
                    user=user.name,
                )
            )
        return user

    def action_assign(self, user=None, note=None):
        """Assign (see the base action); the assignee gets a to-do on the error itself and
        follows it, and the change is posted."""
        if user is None:
            return super().action_assign(user, note=note)
        self._check_console()
        user = self._check_assignee(user)
        initial = self._tracked_values()
        result = super().action_assign(user, note=note)
        user = self.env["res.users"].browse(user.id) if isinstance(user, models.BaseModel) else user
        for error in self:
            error.message_subscribe(partner_ids=user.partner_id.ids)
            error._schedule_todo(user)
        self._post_changes(initial, {e.id: note for e in self if note})
        return result

    def _schedule_todo(self, user, summary=None):
        """The assignee's to-do on this error: moved to ``user`` if one is open, else created."""
        self.ensure_one()
        todo = self.sudo().activity_search([TODO])
        if todo:
            todo.write({"user_id": user.id})
            return todo
        return self.activity_schedule(
            TODO,
            user_id=user.id,
            summary=summary or self.env._("Fix %(code)s", code=self.code),
            note=self.env._(
                "%(message)s (%(count)s occurrences, fingerprint %(fingerprint)s)",
                message=self.message or "",
                count=self.count,
                fingerprint=self.fingerprint,
            ),
        )

    # ------------------------------------------------------------------ regressions

    def _notify_regression(self):
        notified = super()._notify_regression()
        self._post_changes(
            {self.id: {**self._tracked_values()[self.id], "status": "resolved"}},
            {
                self.id: self.env._(
                    "Regressed: it occurred again in release %(version)s after it was resolved%(release)s.",
                    version=self.last_service_version or "?",
                    release=self.env._(" in %s", self.resolved_in_version) if self.resolved_in_version else "",
                )
            },
        )
        if self.user_id:
            self._schedule_todo(self.user_id, summary=self.env._("Regressed: %(code)s", code=self.code))
            notified += 1
        return notified

    # ------------------------------------------------------------------ new errors: owner teams

    @api.model
    def _cron_assign_new_errors(self):
        """New errors of a code an owner team answers for: assigned to the team's default
        assignee (a to-do on the error), the team's members following. Also moves
        occurrences that raced a merge (``ops.follow_merges``). Returns the errors assigned."""
        if not self.env["ipai.ops"].ops_is_local():
            return 0
        self.env.cr.execute("SELECT ops.follow_merges(), now()")
        __, now = self.env.cr.fetchone()
        params = self.env["ir.config_parameter"].sudo()
        since = params.get_param(PARAM_NEW_ERRORS_CHECKED)
        team_by_code = self.env["ipai.reliability.team"]._team_by_code()
        assigned = 0
        if team_by_code:
            self.env.cr.execute(
                SQL(
                    "SELECT e.id FROM ops.agent_errors e"
                    " WHERE e.created_at >= coalesce(%s::timestamptz, %s::timestamptz - interval '1 hour')"
                    " - %s::interval"
                    " AND e.code IN %s AND e.merged_into IS NULL AND e.status IN ('open', 'regressed')"
                    " AND NOT EXISTS (SELECT 1 FROM ipai_agent_error_assignment a WHERE a.fingerprint = e.fingerprint)"
                    " ORDER BY e.id LIMIT %s",
                    since,
                    now,
                    NEW_ERRORS_OVERLAP,
                    tuple(team_by_code),
                    NEW_ERRORS_BATCH,
                )
            )
            errors = self.sudo().browse([row[0] for row in self.env.cr.fetchall()])
            teams = self.env["ipai.reliability.team"].sudo().browse(set(team_by_code.values()))
            for error in errors:
                error._assign_to_team(teams.browse(team_by_code[error.code]))
                assigned += 1
        params.set_param(PARAM_NEW_ERRORS_CHECKED, now.isoformat())
        return assigned

    def _assign_to_team(self, team):
        self.ensure_one()
        self.message_subscribe(partner_ids=(team.member_ids | team.user_id).partner_id.ids)
        if team.user_id:
            self.action_assign(team.user_id)
        else:
            # the assignment row marks the error as seen by the team, so no later run takes it again
            self.env["ipai.agent.error.assignment"].sudo().create({"fingerprint": self.fingerprint, "code": self.code})
            self.invalidate_model(["assignment_id", "user_id"])
        self.message_post(
            body=self.env._(
                "New error of %(code)s, owned by %(team)s%(who)s.",
                code=self.code,
                team=team.name,
                who=self.env._(": assigned to %s", team.user_id.name) if team.user_id else "",
            ),
            subtype_xmlid="ipai_reliability.mt_agent_error_new",
        )

    # ------------------------------------------------------------------ merging

    def action_merge_errors(self):
        """Open the merge dialog for the selected errors."""
        self._check_console()
        if len(self) < 2:
            raise UserError(self.env._("Select two or more errors to merge."))
        return {
            "type": "ir.actions.act_window",
            "res_model": "ipai.agent.error.merge",
            "view_mode": "form",
            "target": "new",
            "name": self.env._("Merge errors"),
            "context": {"default_error_ids": self.ids},
        }

    @api.private
    def _merge_into(self, kept):
        """Merge ``self`` (less ``kept``) into ``kept``, in this transaction: counts, occurrences,
        keys, runs and taught examples in SQL (``ops.merge_agent_errors``), then the Odoo side:
        messages, followers, activities, resolutions and, when ``kept`` has none, the assignee.
        Returns the merged errors."""
        kept.ensure_one()
        merged = self - kept
        (merged | kept)._check_console()
        if not merged:
            raise UserError(self.env._("Select at least one error besides the one to keep."))
        codes = {error.id: (error.code, error.count, error.fingerprint) for error in merged}
        initial = merged._tracked_values()
        try:
            with self.env.cr.savepoint():
                self.env.cr.execute(
                    SQL("SELECT * FROM ops.merge_agent_errors(%s, %s::bigint[])", kept.id, list(merged.ids))
                )
        except pg_errors.InvalidParameterValue as exc:
            raise UserError(self.env._("Cannot merge: %(reason)s.", reason=exc.diag.message_primary)) from None
        self.invalidate_model()
        self.env["ipai.failure.mode"].invalidate_model(["error_ids"])

        # the history: messages and activities follow the ops rows to the kept error
        self.env.flush_all()
        self.env.cr.execute(
            SQL(
                "UPDATE mail_message SET res_id = %s WHERE model = %s AND res_id IN %s",
                kept.id,
                self._name,
                tuple(merged.ids),
            )
        )
        self.env["mail.message"].invalidate_model(["res_id"])
        activities = (
            self.env["mail.activity"].sudo().search([("res_model", "=", self._name), ("res_id", "in", merged.ids)])
        )
        activities.write({"res_id": kept.id})
        kept.message_subscribe(partner_ids=merged.sudo().message_partner_ids.ids)
        self.env["ipai.resolution"].sudo().search([("error_id", "in", merged.ids)]).write({"error_id": kept.id})
        Assignment = self.env["ipai.agent.error.assignment"].sudo()
        if not Assignment.search_count([("fingerprint", "=", kept.fingerprint)]):
            moved = Assignment.search(
                [("fingerprint", "in", [c[2] for c in codes.values()])], order="write_date desc", limit=1
            )
            moved.write({"fingerprint": kept.fingerprint, "code": kept.code})
        self.invalidate_model()

        lines = Markup("").join(
            Markup("<li>#%s %s: %s occurrences (%s)</li>") % (error_id, code, count, fingerprint)
            for error_id, (code, count, fingerprint) in sorted(codes.items())
        )
        kept.message_post(
            body=Markup("%s<ul>%s</ul>") % (self.env._("Merged into this error:"), lines),
            subtype_xmlid="mail.mt_note",
        )
        body = self.env._("Merged into #%(id)s %(code)s.", id=kept.id, code=kept.code)
        merged._post_changes(initial, dict.fromkeys(merged.ids, body))
        return merged
