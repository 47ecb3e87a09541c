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
    assert {tuple(p["processors"]) for p in ops} == {
        ("memory_limiter", "transform/ops_mark_exceptions", "filter/ops_errors", "batch"),  # traces
        ("memory_limiter", "filter/ops_errors", "batch"),  # logs
    }
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


def test_the_ops_filter_keeps_what_the_bridge_counts(config):
    """The collector must not drop what the bridge would store: spans with an exception
    event whatever their status, and logs with any severity text the bridge calls an error."""
    import re

    from ipai_ops.bridge.extract import _ERROR_SEVERITY_TEXTS
    from ipai_ops.semconv import EXCEPTION_EVENT

    mark = config["processors"]["transform/ops_mark_exceptions"]["trace_statements"]
    (statement,) = [s for group in mark if group["context"] == "spanevent" for s in group["statements"]]
    flag = re.search(r'span\.attributes\["([^"]+)"\], true\) where name == "([^"]+)"', statement)
    assert flag and flag.group(2) == EXCEPTION_EVENT
    (span_rule,) = config["processors"]["filter/ops_errors"]["traces"]["span"]
    assert f'attributes["{flag.group(1)}"] != true' in span_rule and "STATUS_CODE_ERROR" in span_rule

    (text_rule,) = [r for r in config["processors"]["filter/ops_errors"]["logs"]["log_record"] if "IsMatch" in r]
    pattern = re.search(r'IsMatch\(severity_text, "(.*)"\)', text_rule).group(1).replace("\\\\", "\\")
    regex = re.compile(pattern)
    for text in _ERROR_SEVERITY_TEXTS:
        assert regex.search(text) and regex.search(f" {text.lower()} "), text
    for text in ("WARN", "INFO", "ERRORS", "error-ish", "debug"):
        assert not regex.search(text), text
