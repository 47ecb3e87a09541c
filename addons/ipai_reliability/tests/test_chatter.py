"""An error is a record people discuss: chatter, tracked changes, the assignee's to-do, owner teams."""

from datetime import timedelta

from odoo import fields
from odoo.exceptions import AccessError, UserError, ValidationError
from odoo.tests import Form, new_test_user, tagged, users

from .common import ReliabilityCase


@tagged("post_install", "-at_install")
class TestChatter(ReliabilityCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.other_user = new_test_user(
            cls.env, login="rel_other", groups="base.group_user,ipai_reliability.group_ipai_reliability_user"
        )
        cls.portal_user = new_test_user(cls.env, login="rel_portal", groups="base.group_portal")

    def tracking(self, error):
        """``[(field name, old, new)]`` of the error's tracking messages, newest first."""
        out = []
        for message in error.message_ids:
            for value in message.sudo().tracking_value_ids:
                out.append(
                    (
                        value.field_id.name,
                        value.old_value_char or value.old_value_integer or "",
                        value.new_value_char or value.new_value_integer or "",
                    )
                )
        return out

    def todo(self, error):
        return error.activity_ids.filtered(lambda a: a.activity_type_id == self.env.ref("mail.mail_activity_data_todo"))

    @users("rel_user")
    def test_a_user_comments_and_follows(self):
        error = self.env["ipai.agent.error"].browse(self.upsert()["error_id"])
        message = error.message_post(body="Proxy re-encodes the body, see PR 12", message_type="comment")
        error.message_subscribe(partner_ids=self.env.user.partner_id.ids)
        error.invalidate_recordset()
        self.assertIn(message, error.message_ids)
        self.assertIn(self.env.user.partner_id, error.message_partner_ids)
        note = error.message_post(body="internal note", subtype_xmlid="mail.mt_note")
        self.assertTrue(note.subtype_id.internal)
        # the message belongs to the ops row id
        self.assertEqual((message.model, message.res_id), ("ipai.agent.error", error.id))

    @users("plain_user")
    def test_a_user_without_the_reliability_group_cannot_post(self):
        error_id = self.upsert()["error_id"]
        with self.assertRaises(AccessError):
            self.env["ipai.agent.error"].browse(error_id).message_post(body="hi")

    def test_status_changes_are_tracked(self):
        result = self.upsert()
        error = self.error(result)
        labels = dict(error._fields["status"]._description_selection(self.env))
        error.action_resolve_in_release("2.0.0")
        self.assertEqual(self.tracking(error)[0], ("status", "Open", "Resolved"))
        self.assertIn("Resolved in release 2.0.0", error.message_ids[0].body)
        error.action_reopen()
        self.assertEqual(self.tracking(error)[0], ("status", "Resolved", "Open"))
        error.action_snooze(occurrences=5)
        snoozed = labels[error.status]
        self.assertEqual(self.tracking(error)[0], ("status", "Open", snoozed))
        self.assertIn("Snoozed until it reaches", error.message_ids[0].body)
        error.action_reopen()
        error.action_ignore()
        error.action_reopen()
        statuses = [new for name, __, new in self.tracking(error) if name == "status"]
        self.assertEqual(statuses, ["Open", "Ignored", "Open", snoozed, "Open", "Resolved"], "one message per change")

    def test_severity_change_from_teaching_is_tracked(self):
        mode = self.Mode.search([("code", "=", "INTENT.TIMEOUT")])
        labels = dict(self.Error._fields["severity"].selection)
        before = "low" if mode.severity != "low" else "critical"
        error = self.error(self.upsert(code="UNCLASSIFIED.UNKNOWN", severity=before, message="took too long"))
        error._teach(mode)
        self.assertEqual(error.code, "INTENT.TIMEOUT")
        self.assertIn(("severity", labels[before], labels[mode.severity]), self.tracking(error))

    def test_no_message_when_nothing_changed(self):
        error = self.error(self.upsert())
        before = len(error.message_ids)
        with self.assertRaises(UserError):
            error.action_reopen()  # already open
        error.action_assign(self.rel_user)
        error.invalidate_recordset()
        after_assign = len(error.message_ids)
        self.assertEqual(after_assign, before + 1)
        error.action_assign(self.rel_user)  # the same assignee again: nothing changed
        error.invalidate_recordset()
        self.assertEqual(len(error.message_ids), after_assign)

    def test_merged_errors_refuse_status_actions(self):
        kept, merged = self.error(self.upsert()), self.error(self.upsert())
        (kept | merged)._merge_into(kept)
        with self.assertRaisesRegex(UserError, "merged into another error"):
            merged.action_resolve()

    def test_assign_puts_the_todo_on_the_error_and_tracks_the_assignee(self):
        error = self.error(self.upsert())
        error.action_assign(self.rel_user, note="look at the proxy")
        todo = self.todo(error)
        self.assertEqual(todo.user_id, self.rel_user)
        self.assertEqual((todo.res_model, todo.res_id), ("ipai.agent.error", error.id))
        self.assertIn("WEBHOOK.SIGNATURE_INVALID", todo.summary)
        self.assertIn(self.rel_user.partner_id, error.message_partner_ids, "the assignee follows the error")
        self.assertEqual(self.tracking(error)[0], ("user_id", "", self.rel_user.display_name))
        self.assertIn("look at the proxy", error.message_ids[0].body)
        # the assignment record carries no to-do any more
        self.assertFalse(error.assignment_id.activity_ids)
        # reassigning moves the one to-do
        error.action_assign(self.other_user)
        self.assertEqual(self.todo(error).user_id, self.other_user)
        self.assertEqual(self.tracking(error)[0], ("user_id", self.rel_user.display_name, self.other_user.display_name))

    def test_the_todo_is_done_when_resolved_or_ignored_not_when_snoozed(self):
        for action in ("resolve", "ignore"):
            with self.subTest(action):
                error = self.error(self.upsert())
                error.action_assign(self.rel_user)
                todo = self.todo(error)
                error.action_snooze(occurrences=3)
                self.assertTrue(todo.exists(), "a snoozed error comes back: its to-do stays")
                error.action_reopen()
                getattr(error, f"action_{action}")()
                self.assertFalse(todo.exists() and todo.active, "done: archived (or deleted)")
                self.assertFalse(self.todo(error))
                done = error.message_ids.filtered(lambda m: m.mail_activity_type_id)
                self.assertTrue(done, "marking it done leaves a 'done' message in the chatter")

    def test_assignee_must_read_errors(self):
        error = self.error(self.upsert())
        for user in (self.plain_user, self.portal_user):
            with self.subTest(user.login), self.assertRaisesRegex(UserError, "cannot read agent errors"):
                error.action_assign(user)
        self.assertFalse(error.user_id)
        # the dialog offers only them
        wizard = self.env["ipai.agent.error.wizard"].with_context(default_action="assign", default_error_ids=error.ids)
        offered = self.env["res.users"].search(wizard._fields["user_id"].get_comodel_domain(wizard))
        self.assertIn(self.rel_user, offered)
        self.assertIn(self.rel_manager, offered)
        self.assertNotIn(self.plain_user, offered)
        self.assertNotIn(self.portal_user, offered)
        with Form(wizard.create({"action": "assign", "error_ids": [(6, 0, error.ids)]})) as form:
            form.user_id = self.rel_user
        form.record.action_apply()
        self.assertEqual(error.user_id, self.rel_user)

    def test_regression_is_posted_to_followers_with_a_todo_for_the_assignee(self):
        result = self.upsert(service_version="1.0.0")
        error = self.error(result)
        error.action_assign(self.rel_user)
        error.message_subscribe(partner_ids=self.other_user.partner_id.ids)
        error.action_resolve()
        self.assertFalse(self.todo(error))
        self.env["ir.config_parameter"].set_param(
            "ipai_reliability.regressions_checked_at",
            fields.Datetime.to_string(fields.Datetime.now() - timedelta(minutes=1)),
        )
        self.upsert(result["fingerprint"], service_version="1.1.0")
        self.assertEqual(self.Error._cron_notify_regressions(), 1, "the assignee (no resolution record)")
        error.invalidate_recordset()
        message = error.message_ids[0]
        self.assertEqual(message.subtype_id, self.env.ref("ipai_reliability.mt_agent_error_regressed"))
        self.assertEqual(self.tracking(error)[0], ("status", "Resolved", "Regressed"))
        self.assertIn("1.1.0", message.body)
        notified = message.notification_ids.res_partner_id | message.sudo().notified_partner_ids
        self.assertIn(self.other_user.partner_id, notified, "followers hear about a regression")
        self.assertEqual(self.todo(error).user_id, self.rel_user)
        self.assertIn("Regressed", self.todo(error).summary)


@tagged("post_install", "-at_install")
class TestOwnerTeams(ReliabilityCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.Team = cls.env["ipai.reliability.team"]
        cls.member = new_test_user(
            cls.env, login="rel_member", groups="base.group_user,ipai_reliability.group_ipai_reliability_user"
        )
        cls.webhook_mode = cls.Mode.search([("code", "=", "WEBHOOK.SIGNATURE_INVALID")])
        cls.webhook_mode.owner = "integrations-test"
        cls.team = cls.Team.create(
            {
                "name": "Integrations",
                "owner": " integrations-test ",
                "user_id": cls.rel_user.id,
                "member_ids": [(6, 0, cls.member.ids)],
            }
        )

    def checked_just_now(self):
        self.env.cr.execute("SELECT now()")
        self.env["ir.config_parameter"].set_param(
            "ipai_reliability.new_errors_checked_at", self.env.cr.fetchone()[0].isoformat()
        )

    def test_owner_maps_to_the_team(self):
        self.assertEqual(self.team.owner, "integrations-test", "stripped")
        self.assertEqual(self.team.failure_mode_ids, self.webhook_mode)
        error = self.error(self.upsert())
        other = self.error(self.upsert(code="INTENT.TIMEOUT"))
        self.assertEqual(error.team_id, self.team)
        self.assertFalse(other.team_id)
        ids = (error | other).ids
        self.assertEqual(self.Error.search([("id", "in", ids), ("team_id", "=", self.team.id)]), error)
        self.assertEqual(self.Error.search([("id", "in", ids), ("team_id", "=", False)]), other)
        self.assertEqual(self.Error.search([("id", "in", ids), ("team_id", "ilike", "integr")]), error)
        self.assertEqual(self.Error.search([("id", "in", ids), ("team_id", "!=", self.team.id)]), other)
        groups = dict(self.Error._read_group([("id", "in", ids)], ["team_id"], ["__count"]))
        self.assertEqual(groups, {self.team: 1, self.Team: 1})
        self.assertEqual(self.Error.search([("id", "in", ids)], order="team_id").ids[0], error.id)

    def test_my_teams_filter(self):
        error = self.error(self.upsert())
        self.assertTrue(self.Error.with_user(self.member).search([("id", "=", error.id), ("my_team", "=", True)]))
        self.assertFalse(self.Error.with_user(self.rel_manager).search([("id", "=", error.id), ("my_team", "=", True)]))

    def test_group_by_assignee(self):
        error = self.error(self.upsert())
        self.upsert()
        error.action_assign(self.member)
        groups = dict(self.Error._read_group([("code", "=", error.code)], ["user_id"], ["__count"]))
        self.assertEqual(groups[self.member], 1)

    def test_new_errors_of_the_teams_codes_are_assigned(self):
        self.checked_just_now()
        error = self.error(self.upsert())
        foreign = self.error(self.upsert(code="INTENT.TIMEOUT"))
        self.assertEqual(self.Error._cron_assign_new_errors(), 1)
        self.Error.invalidate_model()
        self.assertEqual(error.user_id, self.rel_user)
        self.assertEqual(error.activity_ids.user_id, self.rel_user, "the default assignee's to-do is on the error")
        self.assertIn(self.member.partner_id, error.message_partner_ids, "members follow the team's new errors")
        new = error.message_ids.filtered(lambda m: m.subtype_id == self.env.ref("ipai_reliability.mt_agent_error_new"))
        self.assertIn("Integrations", new.body)
        self.assertFalse(foreign.user_id)
        # once only: a second run takes nothing, even after a reassignment
        error.action_assign(self.member)
        self.assertEqual(self.Error._cron_assign_new_errors(), 0)
        self.assertEqual(error.user_id, self.member)

    def test_a_team_without_default_assignee_still_takes_its_errors(self):
        self.team.user_id = False
        self.checked_just_now()
        error = self.error(self.upsert())
        self.assertEqual(self.Error._cron_assign_new_errors(), 1)
        self.Error.invalidate_model()
        self.assertFalse(error.user_id)
        self.assertIn(self.member.partner_id, error.message_partner_ids)
        self.assertEqual(self.Error._cron_assign_new_errors(), 0)

    def test_old_errors_are_not_new(self):
        error = self.error(self.upsert())
        self.env.cr.execute(
            "UPDATE ops.agent_errors SET created_at = now() - interval '2 hours' WHERE id = %s", [error.id]
        )
        self.checked_just_now()
        self.assertEqual(self.Error._cron_assign_new_errors(), 0)

    def test_team_members_must_read_errors(self):
        with self.assertRaisesRegex(ValidationError, "cannot read agent errors"):
            self.Team.create({"name": "X", "owner": "x-test", "member_ids": [(6, 0, self.plain_user.ids)]})
        with self.assertRaisesRegex(ValidationError, "cannot read agent errors"):
            self.Team.create({"name": "Y", "owner": "y-test", "user_id": self.plain_user.id})

    @users("rel_user")
    def test_users_read_teams_managers_edit_them(self):
        Team = self.env["ipai.reliability.team"]
        self.assertEqual(Team.browse(self.team.id).name, "Integrations")
        with self.assertRaises(AccessError):
            Team.create({"name": "Z", "owner": "z-test"})
