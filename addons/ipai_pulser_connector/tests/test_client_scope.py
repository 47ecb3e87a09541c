"""Per-client scopes and rate limits, through the real signed HTTP API.

A submission of a type outside the client's scope is 403 API.SCOPE_DENIED before anything
is created; a request past the client's requests per minute is 429 API.RATE_LIMITED with
``Retry-After``. Who may change a client's scope and limit is tested as non-admin users.
"""

import importlib.util
import time
from pathlib import Path

import psycopg2.errors
from odoo.exceptions import AccessError, ValidationError
from odoo.tests import HttpCase, new_test_user, tagged
from odoo.tools import mute_logger

from ..models.ipai_pulser_client import DEFAULT_RATE_LIMIT_PER_MINUTE, parse_scope, scope_allows
from . import test_api
from .common import register_test_handlers, unregister_test_handlers
from .test_access import MANAGER_GROUPS, USER_GROUPS

API = test_api.API
MIGRATION = Path(__file__).resolve().parent.parent / "migrations" / "19.0.1.1.0" / "post-migration.py"


def wait_for_a_fresh_minute(needed=15):
    """Sleep into the next clock minute when fewer than ``needed`` seconds are left in this
    one: a count that must stay in one minute must not straddle two."""
    left = 60 - time.time() % 60
    if left < needed:
        time.sleep(left + 0.05)


@tagged("post_install", "-at_install")
class TestClientScopeAndRateLimit(HttpCase):
    # The signed-request helpers of the API tests (attributes, not the class: imported
    # classes would be collected and run a second time).
    call = test_api.TestApi.call
    assertProblem = test_api.TestApi.assertProblem

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        register_test_handlers()
        cls.Client = cls.env["ipai.pulser.client"]
        cls.client, cls.key = cls.Client._create_with_key(
            "scoped agent", allowed_intent_types="odoo.healthcheck,\ntest.*"
        )

    @classmethod
    def tearDownClass(cls):
        unregister_test_handlers()
        super().tearDownClass()

    def intents_of(self, client):
        return self.env["ipai.pulser.intent"].search_count([("source", "=", client.key_id)])

    # -------------------------------------------------------------- scopes

    def test_a_type_outside_the_scope_is_refused_before_anything_is_created(self):
        self.assertEqual(self.call(API, {"type": "odoo.healthcheck"}).status_code, 201)
        self.assertEqual(self.call(API, {"type": "test.echo", "args": {"value": "x"}}).status_code, 201)
        before = self.intents_of(self.client)
        body = self.assertProblem(
            self.call(API, {"type": "odoo.config.snapshot", "idempotency_key": "scope-1"}), 403, "API.SCOPE_DENIED"
        )
        self.assertIn("'odoo.config.snapshot'", body["detail"])
        self.assertIn("odoo.healthcheck, test.*", body["detail"])
        self.assertFalse(body["ipai"]["retryable"])
        self.assertEqual(self.intents_of(self.client), before, "nothing created")
        # a prefix is a prefix of dotted names: "test.*" does not cover "testing.x"
        self.assertProblem(self.call(API, {"type": "testing.x"}), 403, "API.SCOPE_DENIED")

    def test_an_empty_scope_allows_no_type_and_star_allows_every_type(self):
        client, key = self.Client._create_with_key("new agent")
        self.assertFalse(client.allowed_intent_types, "a new client starts with no type")
        body = self.assertProblem(
            self.call(API, {"type": "odoo.healthcheck"}, key_id=client.key_id, key=key), 403, "API.SCOPE_DENIED"
        )
        self.assertIn("no type (empty scope)", body["detail"])
        self.assertEqual(self.intents_of(client), 0)
        client.allowed_intent_types = "*"
        ok = self.call(API, {"type": "odoo.healthcheck"}, key_id=client.key_id, key=key)
        self.assertEqual(ok.status_code, 201, ok.text)
        # with every type allowed, an unregistered one is what it always was
        self.assertProblem(
            self.call(API, {"type": "odoo.nope"}, key_id=client.key_id, key=key), 422, "INTENT.TYPE_UNKNOWN"
        )

    def test_polling_and_cancelling_are_not_scoped(self):
        created = self.call(API, {"type": "odoo.healthcheck"}).json()
        self.client.allowed_intent_types = "test.*"
        self.assertEqual(self.call(f"{API}/{created['ref']}").status_code, 200)
        self.assertEqual(self.call(f"{API}/{created['ref']}/cancel", {}).status_code, 200)

    def test_scope_syntax(self):
        self.assertEqual(parse_scope(" odoo.healthcheck,odoo.* \n *"), ["odoo.healthcheck", "odoo.*", "*"])
        self.assertEqual(parse_scope(False), [])
        for bad in ("odoo.*.x", "odoo*", "odoo..x", ".*", "a;b"):
            with self.subTest(bad=bad), self.assertRaises(ValueError):
                parse_scope(bad)
        self.assertTrue(scope_allows(["odoo.*"], "odoo.modules.status"))
        self.assertFalse(scope_allows(["odoo.*"], "odoo"))
        self.assertFalse(scope_allows([], "odoo.healthcheck"))
        with self.assertRaisesRegex(ValidationError, "'odoo.\\*.x' is not an intent type"):
            self.Client.create({"name": "bad scope", "allowed_intent_types": "odoo.healthcheck, odoo.*.x"})

    def test_the_upgrade_keeps_existing_clients_working(self):
        """migrations/19.0.1.1.0: clients from before scopes keep every type and no limit,
        written out on their form; a fresh install (no version) changes nothing."""
        spec = importlib.util.spec_from_file_location("ipai_pulser_post_migration_19_0_1_1_0", MIGRATION)
        migration = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(migration)
        old = self.Client.create({"name": "from 19.0.1.0.0"})
        self.assertEqual((old.allowed_intent_types, old.rate_limit_per_minute), (False, DEFAULT_RATE_LIMIT_PER_MINUTE))
        self.env.flush_all()
        migration.migrate(self.env.cr, None)
        old.invalidate_recordset()
        self.assertFalse(old.allowed_intent_types)
        migration.migrate(self.env.cr, "19.0.1.0.0")
        old.invalidate_recordset()
        self.assertEqual((old.allowed_intent_types, old.rate_limit_per_minute), ("*", 0))
        self.client.invalidate_recordset()
        self.assertEqual(self.client.allowed_intent_types, "odoo.healthcheck,\ntest.*", "a scope set is kept")

    def test_only_managers_change_scopes_and_limits(self):
        user = new_test_user(self.env, login="pulser_scope_user", groups=USER_GROUPS)
        manager = new_test_user(self.env, login="pulser_scope_manager", groups=MANAGER_GROUPS)
        as_user = self.client.with_user(user)
        self.assertEqual(as_user.allowed_intent_types, "odoo.healthcheck,\ntest.*", "users read the scope")
        for vals in ({"allowed_intent_types": "*"}, {"rate_limit_per_minute": 0}):
            with self.subTest(vals=vals), self.assertRaises(AccessError):
                as_user.write(vals)
        self.client.with_user(manager).write({"allowed_intent_types": "*", "rate_limit_per_minute": 5})
        self.assertEqual((self.client.allowed_intent_types, self.client.rate_limit_per_minute), ("*", 5))
        with self.assertRaises(AccessError):
            self.env["ipai.pulser.client.rate"].with_user(user).search([])

    # -------------------------------------------------------------- rate limits

    def test_past_the_limit_a_request_is_429_with_retry_after_and_does_nothing(self):
        client, key = self.Client._create_with_key("limited agent", allowed_intent_types="*", rate_limit_per_minute=3)
        wait_for_a_fresh_minute()
        first = self.call(API, {"type": "odoo.healthcheck"}, key_id=client.key_id, key=key)
        self.assertEqual(first.status_code, 201, first.text)
        ref = first.json()["ref"]
        self.assertEqual(self.call(f"{API}/{ref}", key_id=client.key_id, key=key).status_code, 200)
        self.assertEqual(self.call(f"{API}/{ref}", key_id=client.key_id, key=key).status_code, 200)
        for path, payload in ((API, {"type": "odoo.healthcheck"}), (f"{API}/{ref}", None)):
            with self.subTest(path=path):
                response = self.call(path, payload, key_id=client.key_id, key=key)
                body = self.assertProblem(response, 429, "API.RATE_LIMITED")
                retry_after = int(response.headers["Retry-After"])
                self.assertTrue(1 <= retry_after <= 60, retry_after)
                self.assertIn("rate limit of 3 requests per minute", body["detail"])
                self.assertTrue(body["ipai"]["retryable"])
        self.assertEqual(self.intents_of(client), 1, "the refused submission created nothing")
        self.env.cr.execute("SELECT used FROM ipai_pulser_client_rate WHERE client_id = %s", (client.id,))
        self.assertEqual(self.env.cr.fetchone(), (3,), "refused requests are not counted")
        # another client's budget is its own
        self.assertEqual(self.call(API, {"type": "odoo.healthcheck"}).status_code, 201)

    def test_a_bad_signature_is_refused_before_it_is_counted(self):
        client, key = self.Client._create_with_key("forged agent", allowed_intent_types="*", rate_limit_per_minute=1)
        wait_for_a_fresh_minute()
        forged = self.call(API, {"type": "odoo.healthcheck"}, key_id=client.key_id, key="0" * 64)
        self.assertProblem(forged, 401, "WEBHOOK.SIGNATURE_INVALID")
        self.assertEqual(self.call(API, {"type": "odoo.healthcheck"}, key_id=client.key_id, key=key).status_code, 201)

    def test_a_limit_of_zero_is_no_limit(self):
        client, key = self.Client._create_with_key("unlimited agent", allowed_intent_types="*", rate_limit_per_minute=0)
        for _ in range(5):
            self.assertEqual(
                self.call(API, {"type": "odoo.healthcheck"}, key_id=client.key_id, key=key).status_code, 201
            )
        self.env.cr.execute("SELECT count(*) FROM ipai_pulser_client_rate WHERE client_id = %s", (client.id,))
        self.assertEqual(self.env.cr.fetchone(), (0,), "nothing counted")
        with (
            self.assertRaisesRegex(psycopg2.errors.CheckViolation, "rate_limit_positive"),
            mute_logger("odoo.sql_db"),
            self.env.cr.savepoint(),
        ):
            client.rate_limit_per_minute = -1
            client.flush_recordset()
