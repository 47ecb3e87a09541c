"""Who may change an intent: Reliability Users read, the state machine alone moves ``state``.

As non-admin users, through the ORM and through Odoo's JSON-RPC (``/web/dataset/call_kw``),
where the caller chooses the context: the transition guard must not be a context key.
"""

from odoo.exceptions import AccessError
from odoo.tests import HttpCase, new_test_user, tagged
from odoo.tests.common import JsonRpcException

from ..services.exceptions import StateConflict

USER_GROUPS = "base.group_user,ipai_reliability.group_ipai_reliability_user"
MANAGER_GROUPS = "base.group_user,ipai_reliability.group_ipai_reliability_manager"
#: The context key the guard trusted before: ``kwargs.context`` of any RPC call sets it.
OLD_GUARD_KEY = "ipai_pulser_transition"


@tagged("post_install", "-at_install")
class TestIntentAccess(HttpCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.user = new_test_user(cls.env, login="pulser_rel_user", groups=USER_GROUPS)
        cls.manager = new_test_user(cls.env, login="pulser_rel_manager", groups=MANAGER_GROUPS)
        cls.intent, _created = cls.env["ipai.pulser.intent"]._submit(intent_type="odoo.healthcheck", args={})

    def assertUnchanged(self):
        self.intent.invalidate_recordset()
        self.assertEqual((self.intent.state, self.intent.priority), ("queued", 0))
        self.assertEqual(self.intent.event_ids.mapped("event_type"), ["created"])

    def call_kw(self, method, args, kwargs=None):
        return self.make_jsonrpc_request(
            "/web/dataset/call_kw",
            {"model": "ipai.pulser.intent", "method": method, "args": args, "kwargs": kwargs or {}},
        )

    # ------------------------------------------------------------------ ORM

    def test_user_reads_intents_and_changes_none_through_the_orm(self):
        Intent = self.env["ipai.pulser.intent"].with_user(self.user)
        self.assertEqual(Intent.browse(self.intent.id).state, "queued")
        with self.assertRaises(AccessError):
            Intent.create({"intent_type": "odoo.healthcheck"})
        intent = Intent.browse(self.intent.id)
        for vals, context in (
            ({"priority": 5}, {}),
            ({"state": "succeeded"}, {OLD_GUARD_KEY: True}),
        ):
            with self.subTest(vals=vals, context=context), self.assertRaises(AccessError):
                intent.with_context(**context).write(vals)
        with self.assertRaises(AccessError):
            intent.action_cancel()
        self.assertUnchanged()

    def test_manager_cannot_open_the_guard_with_a_context_key(self):
        intent = self.intent.with_user(self.manager)
        with self.assertRaises(StateConflict):
            intent.with_context(**{OLD_GUARD_KEY: True}).write({"state": "succeeded"})
        self.assertUnchanged()

    # ------------------------------------------------------------------ JSON-RPC

    def test_user_is_refused_through_json_rpc(self):
        self.authenticate(self.user.login, self.user.login)
        rows = self.call_kw("read", [[self.intent.id], ["state"]])
        self.assertEqual(rows[0]["state"], "queued")
        refused = {
            "create": ("create", [[{"intent_type": "odoo.healthcheck"}]], {}),
            "write": ("write", [[self.intent.id], {"priority": 5}], {}),
            "write state with the old guard key": (
                "write",
                [[self.intent.id], {"state": "succeeded"}],
                {"context": {OLD_GUARD_KEY: True}},
            ),
            "cancel": ("action_cancel", [[self.intent.id]], {}),
            "the private transition method": ("_transition", [[self.intent.id], "cancelled"], {}),
        }
        for name, (method, args, kwargs) in refused.items():
            with self.subTest(name), self.assertRaises(JsonRpcException) as caught:
                self.call_kw(method, args, kwargs)
            self.assertEqual(str(caught.exception), "odoo.exceptions.AccessError", name)
        self.assertUnchanged()

    def test_manager_cannot_bypass_the_state_machine_through_json_rpc(self):
        self.authenticate(self.manager.login, self.manager.login)
        with self.assertRaises(JsonRpcException) as caught:
            self.call_kw("write", [[self.intent.id], {"state": "succeeded"}], {"context": {OLD_GUARD_KEY: True}})
        self.assertTrue(str(caught.exception).endswith(".StateConflict"), str(caught.exception))
        self.assertUnchanged()
        # what a manager may do goes through the machine: cancel a queued intent
        self.call_kw("action_cancel", [[self.intent.id]])
        self.intent.invalidate_recordset()
        self.assertEqual(self.intent.state, "cancelled")
