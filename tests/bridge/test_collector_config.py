"""otel/collector/config.yaml is a consistent Collector pipeline for the bridge.

The real Collector validates the file in CI (the `collector-config` job of
.github/workflows/ci.yml runs `otelcol-contrib validate` with the image pinned in
docker-compose.yml); these tests check what validation cannot: that batches stay below the
bridge's limits, that the queue is durable and compacted, and that the memory_limiter
matches the container's memory limit.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "otel" / "collector" / "config.yaml"
COMPOSE = REPO / "docker-compose.yml"
CI = REPO / ".github" / "workflows" / "ci.yml"
KINDS = ("receivers", "processors", "exporters")
OPS_EXPORTER = "otlp_http/ops_bridge"
JAEGER_EXPORTER = "otlp_grpc/jaeger"
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def config() -> dict:
    return yaml.safe_load(CONFIG.read_text())


@pytest.fixture(scope="module")
def collector_service() -> dict:
    return yaml.safe_load(COMPOSE.read_text())["services"]["otel-collector"]


@pytest.fixture(scope="module")
def bridge_limits():
    from ipai_ops.bridge.settings import Settings

    return Settings()


def compose_bytes(value: str | int) -> int:
    """A compose byte value (compose-spec: 1024, "512m", "1g", "1gb", "300kb")."""
    match = re.fullmatch(r"(\d+)\s*([bkmg]?)b?", str(value).strip().lower())
    assert match, value
    return int(match[1]) * 1024 ** "bkmg".index(match[2] or "b")


def go_bytes(value: str) -> int:
    """A GOMEMLIMIT value (Go runtime: a number with an optional B, KiB, MiB, GiB or TiB)."""
    match = re.fullmatch(r"(\d+)(B|KiB|MiB|GiB|TiB)?", value.strip())
    assert match, value
    return int(match[1]) * 1024 ** ["B", "KiB", "MiB", "GiB", "TiB"].index(match[2] or "B")


def test_byte_value_parsers():
    assert compose_bytes("1g") == compose_bytes("1024m") == compose_bytes("1gb") == 1024 * MIB
    assert compose_bytes(2048) == 2048 and compose_bytes("300kb") == 300 * 1024
    assert go_bytes("819MiB") == 819 * MIB and go_bytes("1GiB") == 1024 * MIB and go_bytes("4096") == 4096
    with pytest.raises(AssertionError):
        go_bytes("819M")


def smallest_error_records() -> dict[str, int]:
    """Serialized size of the smallest records the ops pipelines keep, with their place in
    the request: a bare ERROR log line and an ERROR span with ids, name and times."""
    from opentelemetry.proto.logs.v1 import logs_pb2
    from opentelemetry.proto.trace.v1 import trace_pb2

    log = logs_pb2.LogRecord(time_unix_nano=1_765_000_000_000_000_000, severity_number=17, severity_text="ERROR")
    log.body.string_value = "db down"
    span = trace_pb2.Span(trace_id=b"\1" * 16, span_id=b"\2" * 8, name="GET /", kind=2)
    span.start_time_unix_nano, span.end_time_unix_nano = 1_765_000_000_000_000_000, 1_765_000_000_100_000_000
    span.status.code = trace_pb2.Status.STATUS_CODE_ERROR
    # +2: the field tag and length prefix of the record inside its scope.
    return {"logs": log.ByteSize() + 2, "traces": span.ByteSize() + 2}


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
    ops = [p for p in pipelines.values() if OPS_EXPORTER in p["exporters"]]
    # No batch processor: it would hold accepted data in memory in front of the persistent
    # queue; the exporters batch after it (sending_queue::batch).
    assert {tuple(p["processors"]) for p in ops} == {
        ("memory_limiter", "transform/ops_mark_exceptions", "filter/ops_errors"),  # traces
        ("memory_limiter", "filter/ops_errors"),  # logs
    }
    assert len(ops) == 2  # traces and logs
    assert "batch" not in (config.get("processors") or {})
    exporter = config["exporters"][OPS_EXPORTER]
    assert exporter["sending_queue"]["enabled"] is True
    assert exporter["sending_queue"]["storage"] in config["service"]["extensions"]
    assert exporter["sending_queue"]["storage"].startswith("file_storage")
    assert exporter["retry_on_failure"]["enabled"] is True
    # Every trace still reaches Jaeger, unfiltered.
    assert any(
        p["exporters"] == [JAEGER_EXPORTER] and "filter/ops_errors" not in p["processors"] for p in pipelines.values()
    )


def test_memory_limiter_is_first_in_every_pipeline(config):
    pipelines = config["service"]["pipelines"]
    assert pipelines
    for name, pipeline in pipelines.items():
        assert pipeline["processors"][:1] == ["memory_limiter"], name


def _check_batch_rules(queue: dict) -> dict:
    """The rules the pinned Collector's exporterhelper (queuebatch.Config.Validate) applies
    to sending_queue::batch, so a mistake shows here before the CI validate job."""
    batch = queue["batch"]
    assert set(batch) <= {"flush_timeout", "sizer", "min_size", "max_size", "partition"}, set(batch)
    assert batch["sizer"] in ("items", "bytes")
    assert re.fullmatch(r"[1-9]\d*(ms|s)", str(batch["flush_timeout"])), batch["flush_timeout"]
    assert 0 <= batch["min_size"] <= batch["max_size"], batch
    if queue.get("storage"):
        assert not queue.get("wait_for_result")
    return batch


def test_ops_batches_stay_below_the_bridge_limits(config, bridge_limits):
    exporter = config["exporters"][OPS_EXPORTER]
    # The bytes sizer measures protobuf; JSON bodies would be larger (and have their own,
    # lower limit max_json_bytes).
    assert exporter["encoding"] == "proto" and exporter["compression"] == "gzip"
    batch = _check_batch_rules(exporter["sending_queue"])
    assert batch["sizer"] == "bytes"
    max_size = batch["max_size"]
    assert max_size > 0, "max_size 0 means unbounded batches"
    # Even if gzip gains nothing: deflate's stored blocks add 5 bytes per 64 KiB, gzip 18.
    worst_gzip = max_size + 5 * (max_size // 65535 + 1) + 18
    assert worst_gzip < bridge_limits.max_body_bytes
    assert max_size < bridge_limits.max_decompressed_bytes
    # One sizer per batch in the pinned Collector: records are bounded by the flush
    # trigger. A batch is sent once it holds min_size bytes, so merging alone gathers at
    # most min_size / (smallest record) records; keep that under half of max_records.
    smallest = min(smallest_error_records().values())
    assert smallest < 64, smallest
    assert batch["min_size"] // smallest <= bridge_limits.max_records // 2


def test_jaeger_batches_stay_below_grpc_default_message_limit(config):
    queue = config["exporters"][JAEGER_EXPORTER]["sending_queue"]
    batch = _check_batch_rules(queue)
    assert batch["sizer"] == "bytes" and 0 < batch["max_size"] < 4 * MIB


def test_the_queue_is_file_backed_and_compacted(config, collector_service):
    queue = config["exporters"][OPS_EXPORTER]["sending_queue"]
    storage = queue["storage"]
    assert storage.split("/")[0] == "file_storage" and storage in config["service"]["extensions"]
    extension = config["extensions"][storage]
    assert extension["create_directory"] is True
    compaction = extension["compaction"]
    assert compaction["on_start"] is True and compaction["on_rebound"] is True
    # Rebound compaction needs a positive check interval (the extension refuses it otherwise)
    # and only makes sense when the trigger is below the threshold that arms it.
    assert re.fullmatch(r"[1-9]\d*(ms|s|m)", str(compaction["check_interval"]))
    assert 0 < compaction["rebound_trigger_threshold_mib"] < compaction["rebound_needed_threshold_mib"]
    # The queue and compaction's temporary file live on the collector's volume, not in the
    # container's writable layer (the contrib image has no /tmp).
    volume_targets = [v.split(":")[1] for v in collector_service["volumes"] if not v.startswith("./")]
    for directory in (extension["directory"], compaction["directory"]):
        assert any(directory.startswith(target + "/") for target in volume_targets), directory
    assert compaction["directory"] != extension["directory"]
    # A persistent queue counted in requests; the queue must be able to hold a batch.
    assert queue.get("sizer", "requests") == "requests" and queue["queue_size"] > 0
    assert queue["num_consumers"] > 0


def test_memory_limiter_matches_the_container_memory_limit(config, collector_service):
    limiter = config["processors"]["memory_limiter"]
    container = compose_bytes(collector_service["mem_limit"])
    if "limit_percentage" in limiter:
        # Percentages of the cgroup limit, i.e. of mem_limit.
        assert 50 <= limiter["limit_percentage"] <= 90
        assert 0 < limiter["spike_limit_percentage"] < limiter["limit_percentage"]
        hard = container * limiter["limit_percentage"] // 100
        soft = container * (limiter["limit_percentage"] - limiter["spike_limit_percentage"]) // 100
    else:
        hard, soft = limiter["limit_mib"] * MIB, (limiter["limit_mib"] - limiter["spike_limit_mib"]) * MIB
    assert 0 < soft < hard < container
    # GOMEMLIMIT: the Go runtime collects harder before the limiter refuses data; at the
    # limiter's hard limit (the Collector's guidance: 80 % of the container limit).
    gomemlimit = go_bytes(collector_service["environment"]["GOMEMLIMIT"])
    assert soft < gomemlimit <= hard and hard - gomemlimit < MIB
    # What the ops consumers hold while sending (a decoded batch takes several times its
    # serialized size) fits well within the soft limit.
    queue = config["exporters"][OPS_EXPORTER]["sending_queue"]
    assert queue["num_consumers"] * queue["batch"]["max_size"] * 8 < soft


def test_ci_validates_the_config_with_the_compose_image(collector_service, tmp_path):
    jobs = yaml.safe_load(CI.read_text())["jobs"]
    (job,) = [j for j in jobs.values() if any("validate --config" in s.get("run", "") for s in j["steps"])]
    image_step = next(s for s in job["steps"] if s.get("id") == "image")
    validate = next(s for s in job["steps"] if "validate --config" in s.get("run", ""))
    assert (
        "docker run" in validate["run"]
        and "otel/collector/config.yaml:/etc/otelcol-contrib/config.yaml" in (validate["run"])
    )
    assert validate["env"]["IMAGE"] == "${{ steps.image.outputs.image }}" and '"$IMAGE"' in validate["run"]
    # The step that finds the image, run on the real docker-compose.yml, finds the pinned one.
    out = tmp_path / "github_output"
    subprocess.run(
        ["bash", "-euo", "pipefail", "-c", image_step["run"]],
        cwd=REPO,
        env={"GITHUB_OUTPUT": str(out), "PATH": "/usr/bin:/bin"},
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    )
    found = out.read_text().strip()
    name, default = re.fullmatch(r"(\S+):\$\{OTELCOL_VERSION:-([^}]+)\}", collector_service["image"]).groups()
    assert found == f"image={name}:{default}"


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


def _documented_exporters() -> list[tuple[str, str, dict]]:
    """The exporters of the Collector snippets in docs/bridge.md and docs/deploy.md."""
    found = []
    for doc in (REPO / "docs" / "bridge.md", REPO / "docs" / "deploy.md"):
        for block in re.findall(r"^( *)```yaml\n(.*?)^\1```", doc.read_text(), flags=re.S | re.M):
            indent, body = block
            snippet = yaml.safe_load("\n".join(line[len(indent) :] for line in body.splitlines()))
            for name, exporter in ((snippet or {}).get("exporters") or {}).items():
                found.append((doc.name, name, exporter))
    return found


def test_documented_collector_snippets_match_the_config(config):
    """What the docs tell people to copy has the tested batch caps and the durable queue."""
    documented = [(doc, name, e) for doc, name, e in _documented_exporters() if "ops_bridge" in name]
    assert {doc for doc, _, _ in documented} == {"bridge.md", "deploy.md"}
    assert {name.split("/")[0] for _, name, _ in documented} == {"otlp_http", "otlp_grpc"}
    queue = config["exporters"][OPS_EXPORTER]["sending_queue"]
    for doc, name, exporter in documented:
        assert exporter["sending_queue"]["batch"] == queue["batch"], (doc, name)
        assert exporter["sending_queue"]["storage"] == queue["storage"], (doc, name)
        assert exporter["retry_on_failure"]["enabled"] is True, (doc, name)
        if name.startswith("otlp_grpc/"):
            assert exporter["endpoint"].startswith("dns:///") and exporter["balancer_name"] == "round_robin"
    assert not [name for _, name, _ in _documented_exporters() if name.startswith("loadbalancing")]


def test_every_metric_reaches_the_prometheus_exporter(config):
    """Odoo exports OTLP metrics to the collector: a metrics pipeline must take them (without
    one the collector answers 404 and the ipai.intent* metrics are lost) and expose them,
    unfiltered, on the port Prometheus scrapes (otel/prometheus/prometheus.yml)."""
    metrics = {name: p for name, p in config["service"]["pipelines"].items() if name.split("/")[0] == "metrics"}
    assert len(metrics) == 1
    (pipeline,) = metrics.values()
    assert pipeline["receivers"] == ["otlp"] and pipeline["processors"] == ["memory_limiter"]
    assert pipeline["exporters"] == ["prometheus"]
    exporter = config["exporters"]["prometheus"]
    port = exporter["endpoint"].rsplit(":", 1)[1]
    scrape = yaml.safe_load((REPO / "otel" / "prometheus" / "prometheus.yml").read_text())
    targets = [t for job in scrape["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]]
    assert f"otel-collector:{port}" in targets
    # Metric names are the contract of the dashboards: no namespace prefix, no resource labels.
    assert "namespace" not in exporter
    assert exporter["resource_to_telemetry_conversion"]["enabled"] is False


def test_audit_events_have_their_own_durable_pipeline(config):
    """run.state / run.cancel are INFO: the ops filter drops them (the bridge never counts
    them as errors), so a pipeline of their own keeps exactly them, on a persistent queue."""
    from ipai_ops.semconv import AUDIT_EVENTS, EVENT_NAME

    pipelines = config["service"]["pipelines"]
    (audit,) = [p for name, p in pipelines.items() if name == "logs/audit"]
    assert audit["processors"] == ["memory_limiter", "filter/audit_events"]
    (rule,) = config["processors"]["filter/audit_events"]["logs"]["log_record"]
    assert rule.startswith("not (")
    for event in AUDIT_EVENTS:
        # the Python logging bridge promotes event.name to the record's EventName field
        assert f'event_name == "{event}"' in rule and f'attributes["{EVENT_NAME}"] == "{event}"' in rule
    assert rule.count("==") == 2 * len(AUDIT_EVENTS)
    (exporter_name,) = audit["exporters"]
    assert OPS_EXPORTER not in audit["exporters"]
    exporter = config["exporters"][exporter_name]
    assert exporter["sending_queue"]["storage"] in config["service"]["extensions"]
    assert exporter["retry_on_failure"]["enabled"] is True
    assert exporter["endpoint"].endswith("/otlp}")  # Loki's native OTLP endpoint
    # INFO records never pass the ops filter: its first rule drops every known severity below ERROR
    ops_rules = config["processors"]["filter/ops_errors"]["logs"]["log_record"]
    assert "severity_number < SEVERITY_NUMBER_ERROR" in ops_rules[0]
