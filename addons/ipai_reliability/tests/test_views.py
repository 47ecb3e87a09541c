from odoo.tests import tagged

from .common import ReliabilityCase


@tagged("post_install", "-at_install")
class TestViews(ReliabilityCase):
    def _actions(self):
        data = self.env["ir.model.data"].search(
            [("module", "=", "ipai_reliability"), ("model", "=", "ir.actions.act_window")]
        )
        return self.env["ir.actions.act_window"].browse(data.mapped("res_id"))

    def test_every_action_loads_its_views(self):
        self.upsert()
        actions = self._actions()
        self.assertGreaterEqual(len(actions), 6)
        admin = self.env.ref("base.user_admin")
        for user in (self.rel_user, self.rel_manager, admin):
            for action in actions:
                if action.res_model == "res.config.settings" and user != admin:
                    continue  # Settings are for administrators (base.group_system)
                model = self.env[action.res_model].with_user(user)
                modes = [m for m in action.view_mode.split(",") if m]
                views = [(v.view_id.id, v.view_mode) for v in action.view_ids] + [
                    (False, m) for m in modes if m not in action.view_ids.mapped("view_mode")
                ]
                result = model.get_views([*views, (action.search_view_id.id, "search")])
                for mode in modes:
                    self.assertIn(mode, result["views"], f"{action.name}: {mode}")
                if action.res_model == "res.config.settings":
                    continue
                # and the views' fields read real rows
                for mode in ("list", "kanban"):
                    if mode in result["views"]:
                        spec = {
                            name: {}
                            for name in result["models"][action.res_model]["fields"]
                            if model._fields[name].type not in ("one2many", "many2many") and name != "display_name"
                        }
                        model.web_search_read([], spec, limit=5)

    def test_wizard_views_load(self):
        for model in ("ipai.agent.error.wizard", "ipai.failure.mode.propose"):
            views = self.env[model].with_user(self.rel_manager).get_views([(False, "form")])
            self.assertIn("form", views["views"])

    def test_console_aggregates(self):
        self.upsert(source="bridge", service="billing")
        result = (
            self.env["ipai.agent.error"]
            .with_user(self.rel_user)
            .formatted_read_group([], ["code", "source", "service", "last_seen_day:day"], ["count:sum", "__count"])
        )
        self.assertTrue(result)
        pivot = (
            self.env["ipai.benchmark.result"]
            .with_user(self.rel_user)
            .formatted_read_group([], ["category", "variant_id"], ["score:avg"])
        )
        self.assertIsInstance(pivot, list)

    def test_menus_visible_to_reliability_users(self):
        menu = self.env.ref("ipai_reliability.menu_ipai_reliability_root")
        visible = self.env["ir.ui.menu"].with_user(self.rel_user)._visible_menu_ids()
        self.assertIn(menu.id, visible)
        config_menu = self.env.ref("ipai_reliability.menu_ipai_reliability_config")
        self.assertNotIn(config_menu.id, visible)
        self.assertIn(config_menu.id, self.env["ir.ui.menu"].with_user(self.rel_manager)._visible_menu_ids())

    def test_benchmark_results_and_ab_verdicts_read_real_rows(self):
        cr = self.env.cr
        for subject, variant, category, score, tier in (
            ("run-a1", "A", "correctness", 80, "gold"),
            ("run-a2", "A", "correctness", 90, "gold"),
            ("run-b1", "B", "correctness", 60, "silver"),
            ("run-b1", "B", "safety", 70, "silver"),
        ):
            cr.execute(
                "INSERT INTO ops.agent_benchmark_results (subject, variant_id, category, score, tier)"
                " VALUES (%s, %s, %s, %s, %s)",
                (f"test-{subject}", variant, category, score, tier),
            )
        cr.execute(
            "INSERT INTO ops.agent_ab_comparisons (comparison_id, baseline_variant, candidate_variant,"
            " benchmark_version, category, n_baseline, n_candidate, mean_baseline, mean_candidate, delta,"
            " ci_low, ci_high, confidence, resamples, seed, verdict)"
            " VALUES ('cmp-test', 'A', 'B', 1, 'correctness', 2, 1, 85, 60, -25, -30, -20, 0.95, 1000, 7, 'worse')"
        )
        Result = self.env["ipai.benchmark.result"].with_user(self.rel_user)
        groups = Result._read_group([("subject", "like", "test-")], ["category", "variant_id"], ["score:avg"])
        pivot = {(category, variant): avg for category, variant, avg in groups}
        self.assertEqual(pivot[("correctness", "A")], 85)
        self.assertEqual(pivot[("correctness", "B")], 60)
        self.assertEqual(len(Result._read_group([("subject", "like", "test-")], ["category", "tier"], ["__count"])), 3)
        verdict = (
            self.env["ipai.benchmark.comparison"].with_user(self.rel_user).search([("comparison_id", "=", "cmp-test")])
        )
        self.assertEqual((verdict.verdict, verdict.delta), ("worse", -25))
