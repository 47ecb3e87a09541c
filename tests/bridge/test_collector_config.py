"""otel/collector/config.yaml is a consistent Collector pipeline for the bridge."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

CONFIG = Path(__file__).resolve().parents[2] / "otel" / "collector" / "config.yaml"
KINDS = ("receivers", "processors", "exporters")


@pytest.fixture(scope="module")
def config() -> dict:
    return yaml.safe_load(CONFIG.read_text())


def test_every_referenced_component_is_defined(config):
    pipelines = config["service"]["pipelines"]
    assert pipelines
    for name, pipeline in pipelines.items():
        assert pipeline.get("receivers") and pipeline.get("exporters"), name
        for kind in KINDS:
            for component in pipeline.get(kind, []):
                assert component in (config.get(kind) or {}), f"{name}: {kind} {component} is not defined"
    for extension in config["service"].get("extensions", []):
        assert extension in config["extensions"], extension


def test_every_defined_component_is_used(config):
    pipelines = config["service"]["pipelines"].values()
    for kind in KINDS:
        used = {c for p in pipelines for c in p.get(kind, [])}
        assert set(config.get(kind) or {}) <= used, f"unused {kind}: {set(config[kind]) - used}"
    assert set(config.get("extensions") or {}) <= set(config["service"]["extensions"])


def test_ops_pipelines_filter_errors_and_queue_durably(config):
    pipelines = config["service"]["pipelines"]
    ops = [p for p in pipelines.values() if "otlphttp/ops_bridge" in p["exporters"]]
    assert {tuple(p["processors"]) for p in ops} == {("memory_limiter", "filter/ops_errors", "batch")}
    assert len(ops) == 2  # traces and logs
    exporter = config["exporters"]["otlphttp/ops_bridge"]
    assert exporter["sending_queue"]["enabled"] is True
    assert exporter["sending_queue"]["storage"] in config["service"]["extensions"]
    assert exporter["sending_queue"]["storage"].startswith("file_storage")
    assert exporter["retry_on_failure"]["enabled"] is True
    # Every trace still reaches Jaeger, unfiltered.
    assert any(
        p["exporters"] == ["otlp/jaeger"] and "filter/ops_errors" not in p["processors"] for p in pipelines.values()
    )
    for pipeline in pipelines.values():
        assert pipeline["processors"][0] == "memory_limiter"
