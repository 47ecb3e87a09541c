import json
import time

from odoo.tests import tagged

from ..handlers.odoo_builtin import SAFE_CONFIG_KEYS, config_fingerprint, safe_config
from ..services.exceptions import (
    AllowlistProfileUnknown,
    ArgsInvalid,
    IntentTypeUnknown,
    LeaseExpired,
    RedactionModeUnsupported,
)
from ..services.handler_registry import HandlerContext, get_handler, handler_types, intent_handler, validate_args
from .common import PulserCase

SECRET_KEYS = ("admin_passwd", "db_password", "smtp_password", "smtp_user", "db_user", "proxy_access_token")


@tagged("post_install", "-at_install")
class TestHandlers(PulserCase):
    def call(self, intent_type, args=None):
        handler = validate_args(intent_type, args or {})
        return handler.func(HandlerContext(env=self.env, args=args or {}))

    def test_builtin_types_registered(self):
        for name in ("odoo.healthcheck", "odoo.modules.status", "odoo.config.snapshot"):
            self.assertIn(name, handler_types())

    def test_healthcheck(self):
        data = self.call("odoo.healthcheck", {"echo": "hi"})
        self.assertEqual(data["status"], "ok")
        self.assertEqual(data["database"], self.env.cr.dbname)
        self.assertEqual(data["echo"], "hi")

    def test_args_invalid_lists_json_paths(self):
        with self.assertRaises(ArgsInvalid) as caught:
            validate_args("test.echo", {"value": 3, "nested": {"n": "x"}})
        paths = sorted(e["path"] for e in caught.exception.errors)
        self.assertEqual(paths, ["$.nested.n", "$.value"])
        self.assertEqual(caught.exception.failure_code, "INTENT.ARGS_INVALID")
        with self.assertRaises(ArgsInvalid) as caught:
            validate_args("odoo.modules.status", {"sample_limit": 0, "extra": True})
        self.assertEqual(sorted(e["path"] for e in caught.exception.errors), ["$", "$.sample_limit"])

    def test_unknown_type(self):
        with self.assertRaises(IntentTypeUnknown) as caught:
            get_handler("odoo.nope")
        self.assertIn("odoo.healthcheck", caught.exception.details["known_types"])

    def test_modules_status_profile_diff_and_bound(self):
        data = self.call("odoo.modules.status", {"profile": "default", "sample_limit": 3})
        self.assertEqual(data["profile"], "default")
        self.assertEqual(len(data["sample"]), 3)
        self.assertTrue(data["sample_truncated"])
        self.assertNotIn("base", data["allowlist"]["missing"])
        self.assertNotIn("ipai_pulser_connector", data["allowlist"]["missing"])
        self.assertLessEqual(len(data["allowlist"]["unexpected"]), 3)
        self.assertGreaterEqual(data["counts"].get("installed", 0), data["installed_count"] - 1)
        minimal = self.call("odoo.modules.status", {"profile": "minimal"})
        self.assertIn("ipai_pulser_connector", minimal["allowlist"]["unexpected"])

    def test_modules_status_unknown_profile(self):
        for name in ("nope", "../../etc/passwd", "Default"):
            with self.subTest(name=name), self.assertRaises(AllowlistProfileUnknown) as caught:
                self.call("odoo.modules.status", {"profile": name})
            self.assertEqual(caught.exception.failure_code, "INTENT.ALLOWLIST_PROFILE_UNKNOWN")

    def test_config_snapshot_never_leaks_secrets(self):
        data = self.call("odoo.config.snapshot", {"redaction_mode": "strict"})
        encoded = json.dumps(data)
        for key in SECRET_KEYS:
            self.assertNotIn(key, encoded)
        self.assertEqual(sorted(data["config"]), sorted(SAFE_CONFIG_KEYS))
        self.assertRegex(data["fingerprint"], r"^sha256:[0-9a-f]{64}$")
        self.assertEqual(data["fingerprint"], config_fingerprint(safe_config()))
        names = self.call("odoo.config.snapshot", {"redaction_mode": "names_only"})
        self.assertNotIn("config", names)
        self.assertEqual(names["fingerprint"], data["fingerprint"])

    def test_config_fingerprint_changes_with_config(self):
        base = dict.fromkeys(SAFE_CONFIG_KEYS)
        self.assertNotEqual(
            config_fingerprint(safe_config(base)), config_fingerprint(safe_config({**base, "workers": 4}))
        )
        # a secret key never reaches the fingerprint input
        self.assertEqual(
            config_fingerprint(safe_config(base)),
            config_fingerprint(safe_config({**base, "admin_passwd": "x"})),
        )

    def test_config_snapshot_redaction_mode_unsupported(self):
        with self.assertRaises(RedactionModeUnsupported) as caught:
            self.call("odoo.config.snapshot", {"redaction_mode": "loose"})
        self.assertEqual(caught.exception.failure_code, "INTENT.REDACTION_MODE_UNSUPPORTED")

    def test_handler_failures_through_the_worker(self):
        cases = {
            ("odoo.modules.status", "profile", "nope"): "INTENT.ALLOWLIST_PROFILE_UNKNOWN",
            ("odoo.config.snapshot", "redaction_mode", "loose"): "INTENT.REDACTION_MODE_UNSUPPORTED",
        }
        intents = {code: self.submit(t, {k: v}) for (t, k, v), code in cases.items()}
        self.run_worker()
        for code, intent in intents.items():
            self.assertEqual(intent.state, "failed")
            self.assertEqual(intent.failure_code, code)

    def test_heartbeat_renews_at_most_three_times_a_lease_and_stops_a_lost_attempt(self):
        answers = [True, False]
        calls = []

        def renew():
            calls.append(1)
            return answers[len(calls) - 1]

        ctx = HandlerContext(env=self.env, args={}, timeout=60, lease=0.3, renew_lease=renew)
        ctx.check()
        self.assertEqual(calls, [], "not due before a third of the lease")
        time.sleep(0.11)
        ctx.check()
        ctx.check()
        self.assertEqual(len(calls), 1, "check() renews a leased attempt, once per third of a lease")
        time.sleep(0.11)
        with self.assertRaises(LeaseExpired) as caught:
            ctx.heartbeat()
        self.assertEqual(caught.exception.failure_code, "INTENT.LEASE_EXPIRED")

    def test_lease_must_be_positive(self):
        with self.assertRaisesRegex(ValueError, "lease must be a positive number"):
            intent_handler("test.bad_lease", lease=0)(lambda ctx: {})
        self.assertNotIn("test.bad_lease", handler_types())
