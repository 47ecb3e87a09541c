"""otel/grafana: every dashboard loads, names provisioned datasources, and queries only what
exists: PromQL over metrics (and labels) the product exposes, SQL that PostgreSQL plans
against the real ops schema. tests/metrics/test_prometheus_scrape.py also runs every PromQL
query against a real Prometheus."""

from __future__ import annotations

import re

import psycopg2
import pytest
import yaml

from tests.metrics.common import (
    DASHBOARDS,
    GRAFANA,
    dashboards,
    datasources,
    family_of,
    label_names,
    metric_names,
    panels,
    product_families,
    targets,
)

#: The dashboards the issue asks for: intents and errors.
REQUIRED = {"ipai-intents", "ipai-errors"}
#: Grafana's SQL macros (grafana-postgresql-datasource), as PostgreSQL sees them expanded.
SQL_MACROS = [
    (re.compile(r"\$__timeFilter\(([^)]+)\)"), r"\1 BETWEEN now() - interval '6 hours' AND now()"),
    (re.compile(r"\$__timeGroupAlias\(([^,]+),\s*'[^']+'\)"), r"date_trunc('hour', \1) AS time"),
    (re.compile(r"\$__timeGroup\(([^,]+),\s*'[^']+'\)"), r"date_trunc('hour', \1)"),
]


@pytest.fixture(scope="module")
def families() -> dict[str, set[str]]:
    return product_families()


def test_provisioning_files():
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "ipai.yaml").read_text())
    (only,) = provider["providers"]
    assert only["type"] == "file" and only["options"]["path"] == "/var/lib/grafana/dashboards"
    sources = datasources()
    assert {ds["type"] for ds in sources.values()} == {"prometheus", "grafana-postgresql-datasource", "loki"}
    assert [uid for uid, ds in sources.items() if ds.get("isDefault")] == ["ipai-prometheus"]
    # no secret in the file: the ops password arrives from the container's environment
    pg = sources["ipai-ops-postgres"]
    assert pg["secureJsonData"]["password"].startswith("${") and pg["user"].startswith("${")


def test_every_dashboard_loads_with_unique_ids():
    found = dashboards()
    assert len(found) == len(DASHBOARDS) >= 2
    assert {d["uid"] for d in found.values()} >= REQUIRED
    assert len({d["uid"] for d in found.values()}) == len(found)
    for name, dashboard in found.items():
        assert dashboard["title"] and dashboard["schemaVersion"] >= 36, name
        ids = [p["id"] for p in panels(dashboard)]
        assert len(ids) == len(set(ids)), f"{name}: duplicate panel ids"
        for panel in panels(dashboard):
            assert panel.get("targets"), f"{name}: {panel['title']} has no query"
            refs = [t["refId"] for t in panel["targets"]]
            assert len(refs) == len(set(refs)), f"{name}: {panel['title']}"


def test_every_datasource_reference_is_provisioned():
    sources = datasources()
    for name, dashboard in dashboards().items():
        for panel in panels(dashboard):
            for ref in [panel.get("datasource"), *(t.get("datasource") for t in panel["targets"])]:
                assert ref, f"{name}: {panel['title']} relies on a default datasource"
                assert ref["uid"] in sources, f"{name}: {panel['title']}: unknown datasource {ref['uid']}"
                assert ref["type"] == sources[ref["uid"]]["type"], f"{name}: {panel['title']}"


def test_promql_references_metrics_and_labels_that_exist(families):
    checked = 0
    for name, dashboard in dashboards().items():
        for title, target in targets(dashboard, "prometheus"):
            expr = target["expr"]
            names = metric_names(expr)
            assert names, f"{name}: {title}: no metric in {expr}"
            labels = set()
            for series in names:
                family = family_of(series, families)
                assert family, f"{name}: {title}: {series} is not a metric the product exposes"
                labels |= families[family]
                if series.endswith("_bucket"):
                    assert "le" in families[family], f"{name}: {title}: {series} is not a histogram"
            missing = label_names(expr) - labels - {"le"}
            assert not missing, f"{name}: {title}: labels {missing} not on {names}"
            legend_labels = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")))
            assert legend_labels <= labels, f"{name}: {title}: legend {legend_labels - labels}"
            checked += 1
    assert checked >= 15


def test_the_checks_catch_a_wrong_name(families):
    """The name check can fail: the old pulser_* names and an unknown label are refused."""
    assert family_of("pulser_intents_total", families) is None
    assert family_of("ipai_intent_cancel_latency_seconds_bucket", families) == "ipai_intent_cancel_latency_seconds"
    assert "source" not in families["ipai_intent_cancel_latency_seconds"]
    assert "ipai_intent_id" not in families["ipai_intents"]  # ids are never metric labels


def expand(sql: str) -> str:
    for pattern, replacement in SQL_MACROS:
        sql = pattern.sub(replacement, sql)
    assert "$" not in sql, f"unexpanded Grafana macro in {sql}"
    return sql


def test_sql_targets_plan_against_the_ops_schema(ops_dsn):
    checked = 0
    with psycopg2.connect(ops_dsn) as conn, conn.cursor() as cur:
        for name, dashboard in dashboards().items():
            for title, target in targets(dashboard, "grafana-postgresql-datasource"):
                assert target["rawQuery"] and target["format"] in ("table", "time_series"), title
                sql = expand(target["rawSql"])
                cur.execute("EXPLAIN " + sql)  # a wrong column or table fails here
                cur.execute(sql)
                columns = [c.name for c in cur.description]
                if target["format"] == "time_series":
                    assert columns[0] == "time" and "value" in columns, f"{name}: {title}: {columns}"
                checked += 1
        with pytest.raises(psycopg2.errors.UndefinedColumn):
            cur.execute(expand("SELECT count(*) FROM ops.agent_errors WHERE $__timeFilter(first_seen_at)"))
    assert checked >= 6


def _sql_panel(title: str) -> str:
    (target,) = [
        t for name, d in dashboards().items() for ti, t in targets(d, "grafana-postgresql-datasource") if ti == title
    ]
    return expand(target["rawSql"])


def test_error_panels_count_new_and_regressed_groups_by_code_and_source(ops_dsn):
    """The errors dashboard's SQL over rows the real writer made: two new groups, then one
    resolved group that comes back (ops.next_status marks it regressed)."""
    from datetime import UTC, datetime

    from ipai_ops import store

    def occurrence(code: str, source: str, n: int) -> store.ErrorOccurrence:
        return store.ErrorOccurrence(
            source=source,
            occurrence_id=f"dash-{code}-{n}",
            fingerprint=f"fp1:dash{code.lower().replace('.', '')}",
            code=code,
            severity="high",
            message=f"dashboard probe {code}",
            occurred_at=datetime.now(UTC),
        )

    conn = store.connect(ops_dsn)
    try:
        store.upsert_error(conn, occurrence("INTENT.TIMEOUT", "odoo", 1))
        store.upsert_error(conn, occurrence("DB.CONNECTION_REFUSED", "otlp", 1))
        with conn.cursor() as cur:
            cur.execute(
                "UPDATE ops.agent_errors SET status = 'resolved', resolved_at = now() WHERE code = 'INTENT.TIMEOUT'"
            )
        conn.commit()
        store.upsert_error(conn, occurrence("INTENT.TIMEOUT", "odoo", 2))
        with conn.cursor() as cur:
            cur.execute(_sql_panel("New error groups (range)"))
            assert cur.fetchone()[0] == 2
            cur.execute(_sql_panel("Regressed (range)"))
            assert cur.fetchone()[0] == 1
            cur.execute(_sql_panel("Open or regressed now"))
            assert cur.fetchone() == (1, 1)
            cur.execute(_sql_panel("Occurrences by code and source"))
            rows = {(code, source): (n, groups) for code, source, n, groups, _last in cur.fetchall()}
            assert rows == {("INTENT.TIMEOUT", "odoo"): (2, 1), ("DB.CONNECTION_REFUSED", "otlp"): (1, 1)}
            cur.execute(_sql_panel("Regressions by code"))
            assert [(metric, value) for _time, metric, value in cur.fetchall()] == [("INTENT.TIMEOUT", 1)]
    finally:
        conn.close()


def test_dashboards_answer_the_questions_they_exist_for():
    """Intents: outcome rates, retries, dead letters, cancel latency p50/p95, queue depth.
    Errors: new, regressed, by code and by source. Panels are Grafana core types."""
    found = {d["uid"]: d for d in dashboards().values()}
    intents = " ".join(t["expr"] for _, t in targets(found["ipai-intents"], "prometheus"))
    for needle in (
        "rate(ipai_intents_total",
        "ipai_intent_retries_total",
        "ipai_intent_dead_letters_total",
        "histogram_quantile(0.5, sum by (le, ipai_intent_cancel_path) (rate(ipai_intent_cancel_latency_seconds_bucket",
        "histogram_quantile(0.95, sum by (le, ipai_intent_cancel_path) (rate(ipai_intent_cancel_latency_seconds_bucket",
        "ipai_intent_queue_depth",
    ):
        assert needle in intents, needle
    errors = " ".join(t["rawSql"] for _, t in targets(found["ipai-errors"], "grafana-postgresql-datasource"))
    for needle in ("$__timeFilter(first_seen)", "$__timeFilter(regressed_at)", "code AS metric", "source AS metric"):
        assert needle in errors, needle
    for dashboard in found.values():
        for panel in panels(dashboard):
            assert panel["type"] in {"timeseries", "stat", "table", "row", "logs"}, panel["type"]
