"""What the metrics tests share: the product's files, its metric names, PromQL helpers."""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
import os
import re
import shutil
from pathlib import Path
from types import ModuleType

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS_YML = REPO / "otel" / "prometheus" / "prometheus.yml"
RULES_DIR = REPO / "otel" / "prometheus" / "rules"
GRAFANA = REPO / "otel" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "ipai.yaml"
TELEMETRY_PY = REPO / "addons" / "ipai_pulser_connector" / "services" / "telemetry.py"

_counter = itertools.count()
#: Set in CI (.github/workflows/ci.yml): a missing prometheus or promtool fails, not skips.
REQUIRE_PROMETHEUS = "IPAI_REQUIRE_PROMETHEUS"


def binary(name: str) -> str | None:
    """Path of a Prometheus binary (Debian package ``prometheus``), None when absent unless
    ``IPAI_REQUIRE_PROMETHEUS`` is set: then its absence is an error."""
    path = shutil.which(name)
    if path is None and os.environ.get(REQUIRE_PROMETHEUS):
        pytest.fail(f"{name} not installed but {REQUIRE_PROMETHEUS} is set (apt-get install prometheus)", pytrace=False)
    return path


def load_telemetry() -> ModuleType:
    """A fresh copy of the connector's telemetry module (it imports no Odoo at load)."""
    spec = importlib.util.spec_from_file_location(f"_pulser_telemetry_{next(_counter)}", TELEMETRY_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dashboards() -> dict[str, dict]:
    return {path.name: json.loads(path.read_text()) for path in DASHBOARDS}


def datasources() -> dict[str, dict]:
    return {ds["uid"]: ds for ds in yaml.safe_load(DATASOURCES.read_text())["datasources"]}


def panels(dashboard: dict) -> list[dict]:
    out = []
    for panel in dashboard.get("panels", []):
        out.append(panel)
        out.extend(panel.get("panels", []))  # collapsed rows
    return out


def targets(dashboard: dict, datasource_type: str) -> list[tuple[str, dict]]:
    """``(panel title, target)`` of every target whose datasource has ``datasource_type``."""
    return [
        (panel["title"], target)
        for panel in panels(dashboard)
        for target in panel.get("targets", [])
        if (target.get("datasource") or panel.get("datasource") or {}).get("type") == datasource_type
    ]


#: Grafana's PromQL variables, as an instant query over a short test range sees them.
GRAFANA_PROM_VARS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "5m"}


def promql(expr: str) -> str:
    for name, value in GRAFANA_PROM_VARS.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, f"unknown Grafana variable in {expr}"
    return expr


_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')
_IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
_MATCHERS = re.compile(r"\{([^}]*)\}")
_HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")


def metric_names(expr: str) -> set[str]:
    """Series names an expression selects (ours all start with ``ipai_``; ``up`` is Prometheus')."""
    bare = _GROUPING.sub("", _MATCHERS.sub("", _STRINGS.sub('""', expr)))
    return {name for name in _IDENT.findall(bare) if name.startswith("ipai_") or name == "up"}


def label_names(expr: str) -> set[str]:
    """Labels an expression groups by or matches on."""
    bare = _STRINGS.sub('""', expr)
    names = {n.strip() for group in _GROUPING.findall(bare) for n in group.split(",") if n.strip()}
    for matchers in _MATCHERS.findall(bare):
        names |= {m.group(1) for m in re.finditer(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", matchers)}
    return names


def family_of(series: str, families: dict[str, set[str]]) -> str | None:
    if series in families:
        return series
    for suffix in (*_HISTOGRAM_SUFFIXES, "_total"):
        if series.endswith(suffix) and series[: -len(suffix)] in families:
            return series[: -len(suffix)]
    return None


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus' ``histogram_quantile`` (promql/quantile.go, bucketQuantile) over cumulative
    ``(upper bound, count)`` pairs ending with ``+Inf``: linear interpolation inside the
    bucket, the lower bound of the first bucket taken as 0."""
    buckets = sorted(buckets)
    total = buckets[-1][1]
    if total == 0:
        return math.nan
    rank = q * total
    index = next(i for i, (_, count) in enumerate(buckets) if count >= rank)
    if index == len(buckets) - 1:
        return buckets[-2][0]
    start, prior = (0.0, 0.0) if index == 0 else buckets[index - 1]
    end, count = buckets[index]
    if index == 0 and end <= 0:
        return end
    return start + (end - start) * ((rank - prior) / (count - prior))


def cumulative(values: list[float], bounds: tuple[float, ...]) -> list[tuple[float, float]]:
    """The cumulative buckets a histogram with explicit ``bounds`` holds after ``values``
    (OpenTelemetry: a value equal to a bound falls in that bound's bucket, like Prometheus' le)."""
    return [(b, float(sum(1 for v in values if v <= b))) for b in (*bounds, math.inf)]


def product_families() -> dict[str, set[str]]:
    """Prometheus metric families the product exposes, with their label names: Odoo's
    instruments as the Collector's prometheus exporter names them (the SDK's Prometheus
    reader applies the same translation), recorded the way the intent model records them,
    plus the bridge's own /metrics."""
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.sdk.metrics import MeterProvider
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from ipai_ops.bridge import metrics as bridge_metrics

    t = load_telemetry()
    registry = CollectorRegistry()
    provider = MeterProvider(metric_readers=[PrometheusMetricReader(registry=registry)])
    try:
        t.use_providers(None, provider)
        record_one_of_each(t)
        text = generate_latest(registry).decode()
    finally:
        provider.shutdown()
    families: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        labels = {k for sample in family.samples for k in sample.labels}
        families.setdefault(family.name, set()).update(labels)
    for value in vars(bridge_metrics).values():
        name = getattr(value, "_name", None)
        if isinstance(name, str) and name.startswith("ipai_bridge_"):
            labels = set(getattr(value, "_labelnames", ()))
            if getattr(value, "_type", "") == "histogram":
                labels.add("le")
            families[name] = labels
    families["up"] = {"job", "instance"}
    return families


def record_one_of_each(t: ModuleType, queue_rows=(("queued", "odoo.healthcheck", 2),)) -> None:
    """One data point of every Odoo instrument, with the attributes the connector's worker
    passes (addons/ipai_pulser_connector/worker/: attempt.py, cancel.py, runner.py)."""
    attrs = {t.ATTR_INTENT_TYPE: "odoo.healthcheck"}
    t.observe("attempt_duration", 0.02, {**attrs, t.ATTR_OUTCOME: "succeeded"})
    t.count("intents", 1, {**attrs, t.ATTR_OUTCOME: "succeeded"})
    t.observe("attempt_duration", 0.5, {**attrs, t.ATTR_OUTCOME: "error"})
    t.count("retries", 1, {**attrs, t.ATTR_FAILURE_CODE: "INTENT.TIMEOUT"})
    t.count("intents", 1, {**attrs, t.ATTR_OUTCOME: "dead", t.ATTR_FAILURE_CODE: "INTENT.TIMEOUT"})
    t.count("dead_letters", 1, {**attrs, t.ATTR_FAILURE_CODE: "INTENT.TIMEOUT"})
    t.observe("cancel_latency", 0.0, {**attrs, **t.cancel_attributes("ui", instant=True)})
    t.count("intents", 1, {**attrs, t.ATTR_OUTCOME: "cancelled"})
    t.watch_queue("static", lambda: list(queue_rows))
    t.instruments()
