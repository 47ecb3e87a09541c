"""A real Prometheus scrapes the product's real metrics and answers the dashboards' questions.

* Odoo's intent instruments (the connector's telemetry module, its real instrument names,
  bucket boundaries and attributes) through an OpenTelemetry SDK MeterProvider with the
  Prometheus reader: the Collector-less path, with the naming the Collector's prometheus
  exporter applies (docs/specs/telemetry_v1.md, "Metrics"). The queue depth is read by the
  module's own SQL from a real PostgreSQL table.
* A real ``ipai-ops bridge serve`` on a migrated ops database: errors sent as OTLP, its /metrics.

Prometheus (Debian package ``prometheus``; CI installs it) scrapes both every 200 ms; the
test then asks it for p50/p95 cancel latency and compares with the value
``histogram_quantile`` must give for the recorded values, and runs every PromQL query of the
Grafana dashboards and alert rules.
"""

from __future__ import annotations

import json
import math
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

import psycopg2
import pytest
import yaml

from tests.bridge.conftest import BridgeProcess, free_port, post, unique_letters
from tests.bridge.otlp_factory import span, traces
from tests.metrics.common import (
    RULES_DIR,
    binary,
    cumulative,
    dashboards,
    histogram_quantile,
    load_telemetry,
    promql,
    record_one_of_each,
    targets,
)

PROMETHEUS = binary("prometheus")
pytestmark = pytest.mark.skipif(
    PROMETHEUS is None, reason="prometheus not installed (Debian package `prometheus`; CI installs it)"
)

#: Cancel latencies in seconds, by path, of cancels acknowledged by a worker; sub-second on purpose.
COOPERATIVE = {
    "api": [0.012, 0.08, 0.12, 0.3, 0.45, 0.8, 1.5, 3.0, 7.0, 12.0],
    "odoo_ui": [0.2, 0.22, 0.6, 0.9, 1.1],
    "agent": [0.04, 0.06],
}
INSTANT = {"api": 4, "odoo_ui": 3}
ERRORS_SENT = 3
COOP_BUCKETS = 'ipai_intent_cancel_latency_seconds_bucket{ipai_intent_cancel_instant="false"}'


class Prometheus:
    def __init__(self, config: dict, tmp_path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_path = tmp_path / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log = (tmp_path / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"prometheus exited with {self.proc.returncode}"
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError("prometheus did not become ready")

    def api(self, path: str, **params) -> dict:
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:  # 400 bad_data: the answer says why
            return json.loads(exc.read())

    def query(self, expr: str) -> list[dict]:
        answer = self.api("query", query=expr)
        assert answer["status"] == "success", f"{expr}: {answer.get('error')}"
        return answer["data"]["result"]

    def scalar(self, expr: str) -> float:
        (sample,) = self.query(expr)
        return float(sample["value"][1])

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.log.close()


@pytest.fixture(scope="module")
def queue_db(module_ops_dsn):
    """A real table in the shape the queue-depth query reads (the connector's own table
    lives in Odoo's database; its columns ``state`` and ``intent_type`` are what is read)."""
    conn = psycopg2.connect(module_ops_dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE ipai_pulser_intent (id serial PRIMARY KEY, state text, intent_type text)")
        cur.execute(
            "INSERT INTO ipai_pulser_intent (state, intent_type) SELECT s, t FROM (VALUES"
            " ('queued', 'odoo.healthcheck'), ('queued', 'odoo.healthcheck'), ('queued', 'odoo.config.snapshot'),"
            " ('running', 'odoo.healthcheck'), ('succeeded', 'odoo.healthcheck'), ('dead', 'odoo.healthcheck')) v(s, t)"
        )
    yield conn
    conn.close()


@pytest.fixture(scope="module")
def stack(module_ops_dsn, queue_db, tmp_path_factory):
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.sdk.metrics import MeterProvider
    from prometheus_client import CollectorRegistry, start_http_server

    t = load_telemetry()
    registry = CollectorRegistry()
    provider = MeterProvider(metric_readers=[PrometheusMetricReader(registry=registry)])
    t.use_providers(None, provider)

    def read_queue():
        with queue_db.cursor() as cur:
            return t.queue_depth(cur)

    record_one_of_each(t)
    t.watch_queue("ipai_test", read_queue)
    t.unwatch_queue("static")
    kind = {t.ATTR_INTENT_TYPE: "odoo.healthcheck"}
    for path, values in COOPERATIVE.items():
        for value in values:
            t.observe("cancel_latency", value, {**kind, **t.cancel_attributes(path, instant=False)})
    for path, n in INSTANT.items():
        for _ in range(n):
            t.observe("cancel_latency", 0.0, {**kind, **t.cancel_attributes(path, instant=True)})
    sdk_port = free_port()
    server, _thread = start_http_server(sdk_port, addr="127.0.0.1", registry=registry)

    bridge = BridgeProcess(module_ops_dsn, workers=1, grpc_port=0).start()
    for _ in range(ERRORS_SENT):
        body = traces([span(error=f"scrape probe {unique_letters()}")]).SerializeToString()
        assert post(bridge.url + "/v1/traces", body)[0] == 200
    assert post(bridge.url + "/v1/traces", b"\xff not protobuf")[0] == 400  # one rejection

    config = {
        "global": {"scrape_interval": "200ms", "scrape_timeout": "150ms", "evaluation_interval": "1s"},
        "scrape_configs": [
            {"job_name": "odoo", "static_configs": [{"targets": [f"127.0.0.1:{sdk_port}"]}]},
            {"job_name": "ipai-bridge", "static_configs": [{"targets": [f"127.0.0.1:{bridge.http_port}"]}]},
        ],
    }
    prometheus = Prometheus(config, tmp_path_factory.mktemp("prometheus"))
    try:
        prometheus.wait_ready()
        # Enough samples for rate() over the dashboards' 1m windows (two at least per series).
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ups = prometheus.query("count_over_time(up[1m]) >= 5 and up == 1")
            if len(ups) == 2:
                break
            time.sleep(0.3)
        else:
            raise AssertionError(f"targets not scraped: {prometheus.query('up')}")
        yield prometheus
    finally:
        prometheus.stop()
        bridge.stop()
        server.shutdown()
        provider.shutdown()


def expected_quantile(q: float, values: list[float]) -> float:
    from tests.metrics.common import load_telemetry as _load

    return histogram_quantile(q, cumulative(values, _load().CANCEL_LATENCY_BUCKETS))


@pytest.mark.parametrize("q", [0.5, 0.95])
def test_cancel_latency_quantiles_from_prometheus(stack, q):
    coop = [v for values in COOPERATIVE.values() for v in values]
    got = stack.scalar(f"histogram_quantile({q}, sum by (le) ({COOP_BUCKETS}))")
    assert got == pytest.approx(expected_quantile(q, coop), rel=1e-9)
    # sub-second resolution: the p50 of these cancels lies inside (0.25, 1], not in a 5 s bucket
    if q == 0.5:
        assert 0.25 < got <= 1.0
    by_path = {
        s["metric"]["ipai_intent_cancel_path"]: float(s["value"][1])
        for s in stack.query(f"histogram_quantile({q}, sum by (le, ipai_intent_cancel_path) ({COOP_BUCKETS}))")
    }
    assert set(by_path) == set(COOPERATIVE)
    for path, values in COOPERATIVE.items():
        assert by_path[path] == pytest.approx(expected_quantile(q, values), rel=1e-9), path


def test_instant_cancels_are_told_apart(stack):
    counts = {
        (s["metric"]["ipai_intent_cancel_path"], s["metric"]["ipai_intent_cancel_instant"]): float(s["value"][1])
        for s in stack.query(
            "sum by (ipai_intent_cancel_path, ipai_intent_cancel_instant) (ipai_intent_cancel_latency_seconds_count)"
        )
    }
    for path, values in COOPERATIVE.items():
        assert counts[(path, "false")] == len(values)
    # record_one_of_each adds one instant odoo_ui cancel
    assert counts[("api", "true")] == INSTANT["api"]
    assert counts[("odoo_ui", "true")] == INSTANT["odoo_ui"] + 1
    assert stack.scalar('sum(ipai_intent_cancel_latency_seconds_sum{ipai_intent_cancel_instant="true"})') == 0


def test_queue_depth_and_dead_letters(stack):
    depth = {
        s["metric"]["ipai_intent_state"]: float(s["value"][1])
        for s in stack.query("sum by (ipai_intent_state) (ipai_intent_queue_depth)")
    }
    assert depth == {"queued": 3, "running": 1, "assigned": 0}
    assert stack.scalar('sum(ipai_intent_dead_letters_total{error_type="INTENT.TIMEOUT"})') == 1


def test_bridge_error_metrics(stack):
    assert stack.scalar('sum(ipai_bridge_errors_written_total{job="ipai-bridge"})') == ERRORS_SENT
    assert stack.scalar('sum(ipai_bridge_records_rejected_total{reason="malformed"})') == 1


def test_every_dashboard_query_runs_and_finds_data(stack):
    """Every PromQL query of the dashboards parses in a real Prometheus and selects series
    that the real producers expose (an empty answer means a wrong name or label)."""
    queries = [
        (f"{name}: {title}", promql(target["expr"]))
        for name, dashboard in dashboards().items()
        for title, target in targets(dashboard, "prometheus")
    ]
    empty = []
    for where, expr in queries:
        answer = stack.api("query", query=expr)
        assert answer["status"] == "success", f"{where}: {answer.get('error')}"
        if not answer["data"]["result"]:
            empty.append(where)
    assert not empty, f"queries that found no series: {empty}"


def test_every_alert_expression_runs(stack):
    """Alert expressions parse and evaluate (their label values, e.g. reason="db_unavailable",
    need not occur here; their names and labels are checked in test_prometheus_config)."""
    for path in RULES_DIR.glob("*.yml"):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                answer = stack.api("query", query=rule["expr"])
                assert answer["status"] == "success", f"{rule['alert']}: {answer.get('error')}"


def test_a_wrong_name_finds_nothing(stack):
    """The emptiness check above can fail: the old metric names select nothing."""
    assert stack.query("pulser_intents_total") == []
    assert stack.api("query", query="sum(rate(ipai_intents_total[1m])")["status"] == "error"
    nobody = 'ipai_intent_cancel_latency_seconds_bucket{ipai_intent_cancel_path="nobody"}'
    assert math.isnan(stack.scalar(f"histogram_quantile(0.5, sum by (le) ({nobody})) or vector(NaN)"))
