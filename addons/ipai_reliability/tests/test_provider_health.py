"""Environment, release and GenAI provider/model on the console, and the Provider health view.

Rows are real ops rows (ops.upsert_agent_error on the test's cursor, rolled back after each
test) carrying the context the bridge extracts from OpenTelemetry GenAI spans.
"""

import uuid
from datetime import UTC, datetime, timedelta

from lxml import etree
from odoo.exceptions import AccessError
from odoo.tests import tagged
from odoo.tools.safe_eval import safe_eval

from ipai_ops import store as ops_store

from .common import ReliabilityCase


@tagged("post_install", "-at_install")
class TestProviderHealth(ReliabilityCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.Health = cls.env["ipai.provider.health"]

    def occurrence(self, fingerprint=None, *, minutes_ago=5, **context):
        """One occurrence with its context; returns (error id, fingerprint)."""
        fingerprint = fingerprint or f"fp1:genai{uuid.uuid4().hex[:27]}"
        result = ops_store.upsert_error_on(
            self.env.cr,
            ops_store.ErrorOccurrence(
                source="otlp",
                occurrence_id=uuid.uuid4().hex,
                fingerprint=fingerprint,
                code="PROVIDER.RATE_LIMITED" if context.get("gen_ai_provider") else "UNCLASSIFIED.UNKNOWN",
                severity="high",
                message="Rate limit reached",
                service="agent",
                occurred_at=datetime.now(UTC) - timedelta(minutes=minutes_ago),
                service_version=context.pop("release", None),
                sample={"ok": False},
                **context,
            ),
        )
        self.env["ipai.agent.error"].invalidate_model()
        self.Health.invalidate_model()
        return result.error_id, fingerprint

    def search_view(self, model):
        arch = self.env[model].get_views([(False, "search")])["views"]["search"]["arch"]
        return etree.fromstring(arch)

    def view_domain(self, model, filter_name):
        node = self.search_view(model).find(f".//filter[@name='{filter_name}']")
        self.assertIsNotNone(node, f"{model}'s search view has no filter {filter_name}")
        return safe_eval(node.get("domain"))

    def view_group_by(self, model, filter_name):
        node = self.search_view(model).find(f".//filter[@name='{filter_name}']")
        self.assertIsNotNone(node, f"{model}'s search view has no group-by {filter_name}")
        return safe_eval(node.get("context"))["group_by"]

    def test_console_fields_filters_and_group_bys(self):
        provider = f"openai-{uuid.uuid4().hex[:8]}"
        chat, fp = self.occurrence(
            minutes_ago=60,
            gen_ai_provider="azure.ai.openai",
            gen_ai_request_model="gpt-4",
            environment="staging",
            release="1.1.0",
        )
        self.occurrence(
            fp,
            minutes_ago=2,
            gen_ai_provider=provider,
            gen_ai_operation="chat",
            gen_ai_request_model="gpt-4o",
            gen_ai_response_model="gpt-4o-2024-08-06",
            environment="production",
            release="1.2.0",
        )
        other, __ = self.occurrence(gen_ai_provider=provider, gen_ai_request_model="o3-mini", environment="staging")
        plain, __ = self.occurrence(environment="production", release="1.2.0")
        mine = [("id", "in", [chat, other, plain])]

        error = self.Error.browse(chat)
        # the latest occurrence's context: the model that answered over the one asked for
        self.assertEqual(
            (error.last_gen_ai_provider, error.last_gen_ai_model, error.last_environment, error.last_service_version),
            (provider, "gpt-4o-2024-08-06", "production", "1.2.0"),
        )
        self.assertFalse(self.Error.browse(plain).last_gen_ai_provider)

        # the search view's filters and group-bys, as the console runs them
        gen_ai = self.view_domain("ipai.agent.error", "filter_gen_ai")
        self.assertEqual(sorted(self.Error.search([*mine, *gen_ai]).ids), sorted([chat, other]))
        self.assertEqual(
            sorted(self.Error.search([*mine, ("last_gen_ai_provider", "=", provider)]).ids), sorted([chat, other])
        )
        self.assertEqual(sorted(self.Error.search([*mine, ("last_environment", "=", "staging")]).ids), [other])
        self.assertEqual(sorted(self.Error.search([*mine, ("last_gen_ai_model", "ilike", "gpt-4o")]).ids), [chat])
        expected = {
            "group_provider": {provider: 2, False: 1},
            "group_model": {"gpt-4o-2024-08-06": 1, "o3-mini": 1, False: 1},
            "group_environment": {"production": 2, "staging": 1},
            "group_release": {"1.2.0": 2, False: 1},
        }
        for name, counts in expected.items():
            field = self.view_group_by("ipai.agent.error", name)
            groups = dict(self.Error._read_group(mine, [field], ["__count"]))
            self.assertEqual(groups, counts, name)
        # the occurrences keep their own context (the Occurrences tab's model, where installed)
        if "ipai.agent.error.occurrence" not in self.env:
            return
        rows = self.env["ipai.agent.error.occurrence"].search([("error_id", "=", chat)], order="occurred_at asc")
        self.assertEqual(rows.mapped("environment"), ["staging", "production"])
        self.assertEqual(rows.mapped("gen_ai_provider"), ["azure.ai.openai", provider])

    def test_provider_health_last_hour_and_day(self):
        provider = f"anthropic-{uuid.uuid4().hex[:8]}"
        mine = [("provider", "=", provider)]
        self.assertFalse(self.Health.search(mine))
        first, fp = self.occurrence(
            minutes_ago=5,
            gen_ai_provider=provider,
            gen_ai_operation="chat",
            gen_ai_request_model="claude-sonnet",
            gen_ai_input_tokens=100,
            gen_ai_output_tokens=7,
            environment="production",
        )
        for minutes in (10, 20):  # the same error twice more in the last hour
            self.occurrence(
                fp,
                minutes_ago=minutes,
                gen_ai_provider=provider,
                gen_ai_operation="chat",
                gen_ai_request_model="claude-sonnet",
                gen_ai_input_tokens=50,
                environment="production",
            )
        second, __ = self.occurrence(  # another error, same provider and model, earlier today
            minutes_ago=300,
            gen_ai_provider=provider,
            gen_ai_operation="embeddings",
            gen_ai_request_model="claude-sonnet",
            environment="production",
        )
        self.occurrence(  # yesterday: outside the day
            minutes_ago=30 * 60,
            gen_ai_provider=provider,
            gen_ai_request_model="claude-sonnet",
            environment="production",
        )
        self.occurrence(
            minutes_ago=120, gen_ai_provider=provider, gen_ai_request_model="claude-haiku", environment="staging"
        )
        self.occurrence(minutes_ago=5, environment="production")  # no GenAI call: not a provider's error

        rows = self.Health.search(mine)
        by_model = {(row.model, row.environment): row for row in rows}
        self.assertEqual(set(by_model), {("claude-sonnet", "production"), ("claude-haiku", "staging")})
        sonnet = by_model[("claude-sonnet", "production")]
        self.assertEqual((sonnet.errors_last_hour, sonnet.errors_last_day, sonnet.error_groups), (3, 4, 2))
        self.assertAlmostEqual(sonnet.errors_per_minute, 0.05)
        self.assertEqual((sonnet.input_tokens, sonnet.output_tokens), (200, 7))
        self.assertEqual(sonnet.operations, "chat, embeddings")
        self.assertEqual(sonnet.latest_error_id.id, first)
        self.assertNotEqual(second, first)
        haiku = by_model[("claude-haiku", "staging")]
        self.assertEqual((haiku.errors_last_hour, haiku.errors_last_day), (0, 1))
        # the first row is the one on fire now (_order), and ids are stable between search and read
        self.assertEqual(rows[0], sonnet)
        self.assertEqual(self.Health.browse(sonnet.id).errors_last_day, 4)

        # the search view's filter and group-by, and the per-provider totals
        last_hour = self.view_domain("ipai.provider.health", "filter_last_hour")
        self.assertEqual(self.Health.search([*mine, *last_hour]), sonnet)
        field = self.view_group_by("ipai.provider.health", "group_provider")
        totals = self.Health._read_group(mine, [field], ["errors_last_hour:sum", "errors_last_day:sum"])
        self.assertEqual(totals, [(provider, 3, 5)])

    def test_provider_health_views_menu_and_access(self):
        action = self.env.ref("ipai_reliability.ipai_provider_health_action")
        menu = self.env.ref("ipai_reliability.menu_ipai_reliability_provider_health")
        self.assertEqual(menu.action, action)
        self.assertEqual(menu.parent_id, self.env.ref("ipai_reliability.menu_ipai_reliability_reporting"))
        provider = f"mistral-{uuid.uuid4().hex[:8]}"
        self.occurrence(gen_ai_provider=provider, gen_ai_request_model="mistral-large")
        for user in (self.rel_user, self.rel_manager):
            Health = self.Health.with_user(user)
            views = Health.get_views([(False, "list"), (False, "graph"), (False, "pivot"), (False, "search")])
            self.assertEqual(set(views["views"]), {"list", "graph", "pivot", "search"})
            rows = Health.web_search_read([("provider", "=", provider)], {"model": {}, "errors_last_day": {}})
            self.assertEqual(rows["records"][0]["errors_last_day"], 1)
        with self.assertRaises(AccessError):
            self.Health.with_user(self.plain_user).search([])
