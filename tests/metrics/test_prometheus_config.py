"""otel/prometheus: `promtool check config` (rules included), and a config that scrapes what
the compose stack really serves."""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml

from tests.metrics.common import (
    PROMETHEUS_YML,
    REPO,
    RULES_DIR,
    binary,
    family_of,
    label_names,
    metric_names,
    product_families,
)

PROMTOOL = binary("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (Debian package `prometheus`; CI installs it)"
)


@pytest.fixture(scope="module")
def config() -> dict:
    return yaml.safe_load(PROMETHEUS_YML.read_text())


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]


@pytest.fixture(scope="module")
def families() -> dict[str, set[str]]:
    return product_families()


@needs_promtool
def test_promtool_check_config():
    result = subprocess.run(
        [PROMTOOL, "check", "config", str(PROMETHEUS_YML)], check=False, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout + result.stderr


@needs_promtool
def test_promtool_rejects_a_broken_config(tmp_path):
    """The check can fail: an unknown key and an alert with a bad expression are refused."""
    broken = tmp_path / "prometheus.yml"
    broken.write_text(PROMETHEUS_YML.read_text().replace("scrape_interval:", "scrape_intervall:", 1))
    assert subprocess.run(
        [PROMTOOL, "check", "config", str(broken)], check=False, capture_output=True, timeout=60
    ).returncode
    rules = tmp_path / "rules.yml"
    rules.write_text("groups: [{name: x, rules: [{alert: X, expr: 'sum(rate(foo[5m]) > '}]}]\n")
    assert subprocess.run(
        [PROMTOOL, "check", "rules", str(rules)], check=False, capture_output=True, timeout=60
    ).returncode


def test_scrape_targets_are_the_compose_services(config, compose):
    collector = yaml.safe_load((REPO / "otel" / "collector" / "config.yaml").read_text())
    exporter_port = collector["exporters"]["prometheus"]["endpoint"].rsplit(":", 1)[1]
    bridge_port = compose["bridge"]["environment"]["IPAI_BRIDGE_HTTP_PORT"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["otel-collector"]["static_configs"] == [{"targets": [f"otel-collector:{exporter_port}"]}]
    assert jobs["ipai-bridge"]["static_configs"] == [{"targets": [f"bridge:{bridge_port}"]}]
    assert jobs["ipai-bridge"].get("metrics_path", "/metrics") == "/metrics"
    # The exporter's job/instance (service.name, service.instance.id) are kept.
    assert jobs["otel-collector"]["honor_labels"] is True
    for host in ("otel-collector", "bridge"):
        assert host in compose
    prometheus = compose["prometheus"]
    assert "./otel/prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    # rule_files are relative to the config file: the same glob here and in the container.
    assert config["rule_files"] == ["rules/*.yml"]


def test_alerts_use_product_metrics_and_name_existing_runbooks(families):
    groups = [g for path in RULES_DIR.glob("*.yml") for g in yaml.safe_load(path.read_text())["groups"]]
    rules = [rule for group in groups for rule in group["rules"]]
    assert len(rules) >= 5
    for rule in rules:
        names = metric_names(rule["expr"])
        assert names, rule["alert"]
        labels = set()
        for name in names:
            family = family_of(name, families)
            assert family, f"{rule['alert']}: {name} is not a metric the product exposes"
            labels |= families[family]
        assert label_names(rule["expr"]) <= labels | {"le"}, rule["alert"]
        assert (REPO / rule["annotations"]["runbook"]).is_file(), rule["annotations"]["runbook"]


def _documented_promql() -> list[tuple[str, str]]:
    """PromQL of the runbooks and the telemetry spec: ```promql blocks and `ipai_...{...}` spans."""
    found = []
    docs = [*sorted((REPO / "docs" / "runbooks").rglob("*.md")), REPO / "docs" / "specs" / "telemetry_v1.md"]
    for doc in docs:
        text = doc.read_text()
        for block in re.findall(r"```promql\n(.*?)```", text, flags=re.S):
            for line in block.splitlines():
                expr = line.split("#", 1)[0].strip()
                if expr:
                    found.append((doc.name, expr))
        for span in re.findall(r"`([^`\n]*\bipai_[a-z_]+[^`\n]*)`", text):
            if "{" in span or "(" in span:
                found.append((doc.name, span))
    return found


def test_runbook_and_spec_queries_use_product_metrics(families):
    documented = _documented_promql()
    assert len(documented) >= 8
    for doc, expr in documented:
        names = metric_names(expr)
        if not names:
            continue
        labels = set()
        for name in names:
            family = family_of(name, families)
            assert family, f"{doc}: {name} is not a metric the product exposes ({expr})"
            labels |= families[family]
        assert label_names(expr) <= labels | {"le"}, f"{doc}: {expr}"


@needs_promtool
def test_alerts_fire_on_the_series_they_watch(tmp_path):
    """`promtool test rules`: the alerts fire on synthetic series with the product's names,
    and the cancel-latency alert ignores instant cancels."""
    bucket = "ipai_intent_cancel_latency_seconds_bucket"
    slow = 'ipai_intent_cancel_instant="false",ipai_intent_cancel_path="api"'
    instant = 'ipai_intent_cancel_instant="true",ipai_intent_cancel_path="odoo_ui"'
    series = [
        {"series": 'ipai_intent_dead_letters_total{error_type="INTENT.TIMEOUT",job="odoo"}', "values": "0 0 1 1 1"},
        # cooperative cancels: all of them between 30 s and 60 s
        *({"series": f'{bucket}{{{slow},le="{le}"}}', "values": "0+0x40"} for le in ("1", "10", "30")),
        *({"series": f'{bucket}{{{slow},le="{le}"}}', "values": "0+2x40"} for le in ("60", "+Inf")),
        # many instant cancels (latency 0) that must not pull the p95 down
        *(
            {"series": f'{bucket}{{{instant},le="{le}"}}', "values": "0+50x40"}
            for le in ("1", "10", "30", "60", "+Inf")
        ),
        {
            "series": 'ipai_intent_queue_depth{ipai_intent_state="queued",ipai_intent_type="x",job="odoo"}',
            "values": "150x40",
        },
    ]
    rules = {r["alert"]: r for g in yaml.safe_load((RULES_DIR / "ipai.yml").read_text())["groups"] for r in g["rules"]}

    def fires(alert: str, at: str, **labels: str) -> dict:
        rule = rules[alert]
        annotations = {
            k: re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m[1]], v) for k, v in rule["annotations"].items()
        }
        expected = {"exp_labels": {**rule["labels"], **labels}, "exp_annotations": annotations}
        return {"eval_time": at, "alertname": alert, "exp_alerts": [expected]}

    tests = {
        "rule_files": [str(RULES_DIR / "ipai.yml")],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "alert_rule_test": [
                    fires("IpaiIntentDeadLetters", "4m", error_type="INTENT.TIMEOUT"),
                    fires("IpaiIntentCancelLatencyHigh", "35m"),
                    {"eval_time": "10m", "alertname": "IpaiIntentCancelLatencyHigh", "exp_alerts": []},
                    fires("IpaiIntentQueueBacklog", "20m"),
                ],
            }
        ],
    }
    path = tmp_path / "alerts_test.yml"
    path.write_text(yaml.safe_dump(tests))
    result = subprocess.run(
        [PROMTOOL, "test", "rules", str(path)], check=False, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
