"""docker-compose.yml, .env.example and the images they build, checked without a Docker engine."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
SCHEMA = Path(__file__).resolve().parent / "compose-spec.json"
COLLECTOR_CONFIG = REPO / "otel" / "collector" / "config.yaml"
ODOO_CONF = REPO / "docker" / "odoo" / "odoo.conf"

# Compose interpolation (compose-spec "Interpolation"): $$ escapes; ${VAR}, ${VAR:-default},
# ${VAR-default}, ${VAR:?error}, ${VAR?error}, ${VAR:+alt}, ${VAR+alt}; and bare $VAR.
_VAR = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


def _interpolate(text: str, env: dict[str, str]) -> str:
    def sub(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["braced"] or match["bare"]
        op, arg = match["op"], match["arg"] or ""
        value = env.get(name)
        unset_or_empty = value is None or (value == "" and op and op.startswith(":"))
        if op in (":-", "-"):
            return arg if unset_or_empty else value
        if op in (":?", "?"):
            if unset_or_empty:
                raise KeyError(f"{name}: {arg}")
            return value
        if op in (":+", "+"):
            return "" if unset_or_empty else _interpolate(arg, env)
        return value or ""

    return _VAR.sub(sub, text)


def _interpolate_tree(node: Any, env: dict[str, str]) -> Any:
    if isinstance(node, dict):
        return {key: _interpolate_tree(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [_interpolate_tree(value, env) for value in node]
    if isinstance(node, str):
        return _interpolate(node, env)
    return node


def env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value
    return values


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def schema() -> dict:
    return json.loads(SCHEMA.read_text())


@pytest.fixture(scope="module")
def collector_config() -> dict:
    return yaml.safe_load(COLLECTOR_CONFIG.read_text())


@pytest.fixture(scope="module")
def compose(raw) -> dict:
    """The model `docker compose config` would see with .env copied from .env.example."""
    return _interpolate_tree(raw, env_example())


@pytest.fixture(scope="module")
def services(compose) -> dict[str, dict]:
    return compose["services"]


def _strings(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [s for key, value in node.items() for s in (*_strings(key), *_strings(value))]
    if isinstance(node, list):
        return [s for value in node for s in _strings(value)]
    return [node] if isinstance(node, str) else []


def referenced_variables(raw: dict) -> set[str]:
    """Variables compose interpolates: in values (and keys) of the parsed file, not comments."""
    return {m["braced"] or m["bare"] for text in _strings(raw) for m in _VAR.finditer(text) if not m["escaped"]}


def published(service: dict) -> list[tuple[str | None, int, int]]:
    """(host ip, host port, container port) of every published port (short or long syntax)."""
    out = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            out.append((port.get("host_ip"), int(port["published"]), int(port["target"])))
            continue
        parts = str(port).split("/")[0].split(":")
        ip = parts[0] if len(parts) == 3 else None
        out.append((ip, int(parts[-2]), int(parts[-1])))
    return out


def env_of(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def depends(service: dict) -> dict[str, str]:
    dep = service.get("depends_on") or {}
    if isinstance(dep, list):
        return dict.fromkeys(dep, "service_started")
    return {name: spec.get("condition", "service_started") for name, spec in dep.items()}


# --------------------------------------------------------------------------- the specification


def test_schema_is_the_vendored_compose_spec(schema):
    assert schema["title"] == "Compose Specification"
    assert schema["$id"] == "compose_spec.json"
    jsonschema.Draft7Validator.check_schema(schema)


@pytest.mark.parametrize("stage", ["as written", "interpolated"])
def test_valid_against_compose_spec(stage, schema, raw, compose):
    document = raw if stage == "as written" else compose
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(document), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


def test_the_validator_catches_mistakes(schema, raw):
    broken = json.loads(json.dumps(raw))
    broken["services"]["odoo"]["depends_on"]["postgres"]["condition"] = "service_ready"
    broken["services"]["bridge"]["healthcheck"]["intervall"] = "5s"
    assert len(list(jsonschema.Draft7Validator(schema).iter_errors(broken))) >= 2


# --------------------------------------------------------------------------- variables


def test_every_variable_is_documented_in_env_example(raw):
    documented = env_example()
    referenced = referenced_variables(raw)
    missing = referenced - set(documented)
    assert not missing, f"add to .env.example (with a comment): {sorted(missing)}"
    unused = set(documented) - referenced
    assert not unused, f".env.example documents variables docker-compose.yml does not use: {sorted(unused)}"


def test_every_env_example_entry_has_a_comment():
    """Each variable sits under a comment (a pair such as the two ports of one service may share one)."""
    lines = ENV_EXAMPLE.read_text().splitlines()
    for i, line in enumerate(lines):
        if line.strip() and not line.startswith("#"):
            assert re.match(r"^[A-Z][A-Z0-9_]*=", line), line
            above = i - 1
            while above >= 0 and re.match(r"^[A-Z][A-Z0-9_]*=", lines[above]):
                above -= 1
            assert above >= 0 and lines[above].startswith("#"), f"{line.split('=')[0]} needs a comment above it"


#: Settings whose names contain TOKEN but hold no secret (which sources, whether one is needed).
NOT_SECRETS = {"IPAI_BRIDGE_TOKEN_SOURCES", "IPAI_BRIDGE_ALLOW_NO_TOKEN"}


def test_no_secret_is_committed(raw):
    documented = env_example()
    for name, value in documented.items():
        if re.search(r"PASSWORD|TOKEN|PEPPER|SECRET", name) and value:
            assert value in ("admin",) or "local" in value, f"{name} must be empty or an obvious local placeholder"
    # Secrets in the compose file only arrive through variables.
    text = COMPOSE.read_text()
    for match in re.finditer(r"(?im)^\s*([\w-]*(PASSWORD|TOKEN|PEPPER|SECRET)[\w-]*):\s*(\S.*)$", text):
        assert match[1] in NOT_SECRETS or match[3].startswith("${"), match[0]
    assert not (REPO / ".env").exists() or ".env" in (REPO / ".gitignore").read_text().split()


def test_required_password_fails_loudly_when_unset(raw):
    env = env_example()
    del env["POSTGRES_PASSWORD"]
    with pytest.raises(KeyError, match="POSTGRES_PASSWORD"):
        _interpolate_tree(raw, env)


# --------------------------------------------------------------------------- files


def test_build_contexts_dockerfiles_and_copied_files_exist(services):
    built = {name: svc["build"] for name, svc in services.items() if "build" in svc}
    assert {"odoo", "bridge"} <= set(built)
    for name, build in built.items():
        context = (REPO / build.get("context", ".")).resolve()
        assert context.is_dir(), name
        dockerfile = context / build.get("dockerfile", "Dockerfile")
        assert dockerfile.is_file(), f"{name}: {dockerfile}"
        for line in dockerfile.read_text().splitlines():
            words = shlex.split(line) if line.startswith(("COPY ", "ADD ")) else []
            sources = [w for w in words[1:-1] if not w.startswith("--")]
            if any(w.startswith("--from") for w in words):
                continue
            for src in sources:
                assert (context / src).exists(), f"{name}: {dockerfile.name} copies missing {src}"


def test_odoo_image_build_context_keeps_what_it_copies():
    lines = (REPO / "docker" / "odoo" / "Dockerfile.dockerignore").read_text().splitlines()
    ignore = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    # Exclude everything first: each later "!path" then lets exactly that path in.
    assert ignore[0] == "*", ignore
    kept = {p.lstrip("!").rstrip("/") for p in ignore if p.startswith("!")}
    for line in (REPO / "docker" / "odoo" / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            for src in shlex.split(line)[1:-1]:
                assert any(src == k or src.startswith(k + "/") for k in kept), f"{src} is excluded from the context"


def test_mounted_files_exist_and_volumes_are_declared(compose, services):
    declared = set(compose.get("volumes") or {})
    used = set()
    for name, svc in services.items():
        for volume in svc.get("volumes", []):
            source = volume["source"] if isinstance(volume, dict) else volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (REPO / source).exists(), f"{name}: bind mount {source} does not exist"
            else:
                assert source in declared, f"{name}: named volume {source} is not declared"
                used.add(source)
    assert declared == used, f"declared but unused volumes: {declared - used}"
    assert {"pgdata", "odoo-data", "otelcol-queue"} <= declared


def test_collector_mounts_the_project_config(services, collector_config):
    collector = services["otel-collector"]
    assert collector["image"].startswith("otel/opentelemetry-collector-contrib:")
    mounts = dict(v.split(":")[:2] for v in collector["volumes"])
    target = mounts["./otel/collector/config.yaml"]
    assert f"--config={target}" in collector["command"]
    # file_storage directory of the bridge exporter's queue is on a volume.
    extensions = collector_config["extensions"]
    queue_dir = next(v["directory"] for k, v in extensions.items() if k.startswith("file_storage"))
    assert any(queue_dir.startswith(target) for target in mounts.values()), queue_dir


def test_entrypoint_script_is_executable_bash():
    script = REPO / "docker" / "odoo" / "ipai-entrypoint.sh"
    assert os.access(script, os.X_OK)
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    assert "ipai_reliability,ipai_pulser_connector" in text and "--with-demo" in text
    assert (REPO / "addons" / "ipai_reliability" / "__manifest__.py").is_file()
    assert (REPO / "addons" / "ipai_pulser_connector" / "__manifest__.py").is_file()


# --------------------------------------------------------------------------- ports and wiring


def test_services_and_images(services):
    assert {"postgres", "odoo", "otel-collector", "bridge", "jaeger"} <= set(services)
    assert re.fullmatch(r"postgres:16(\..*)?", services["postgres"]["image"])
    assert services["jaeger"]["image"].startswith("jaegertracing/all-in-one:")
    assert "odoo:19" in (REPO / "docker" / "odoo" / "Dockerfile").read_text()


def test_published_ports_are_unique_and_match_listeners(services, collector_config):
    host_ports = [(ip or "0.0.0.0", host) for svc in services.values() for ip, host, _ in published(svc)]
    assert len(host_ports) == len(set(host_ports)), f"duplicate host ports: {host_ports}"
    just_ports = [port for _, port in host_ports]
    assert len(just_ports) == len(set(just_ports)), "one host port per listener, whatever the address"

    def targets(name: str) -> set[int]:
        return {target for _, _, target in published(services[name])}

    bridge_env = env_of(services["bridge"])
    assert targets("bridge") == {int(bridge_env["IPAI_BRIDGE_HTTP_PORT"]), int(bridge_env["IPAI_BRIDGE_GRPC_PORT"])}
    assert targets("bridge") == {4317, 4318}
    assert {host for _, host, _ in published(services["bridge"])} == {4317, 4318}

    protocols = collector_config["receivers"]["otlp"]["protocols"]
    receiver_ports = {int(p["endpoint"].rsplit(":", 1)[1]) for p in protocols.values()}
    assert targets("otel-collector") == receiver_ports == {4317, 4318}
    collector_host = {host for _, host, _ in published(services["otel-collector"])}
    assert not collector_host & {4317, 4318}, "the collector's host ports must differ from the bridge's"

    odoo_conf = {
        k.strip(): v.strip() for k, _, v in (line.partition("=") for line in ODOO_CONF.read_text().splitlines()) if v
    }
    assert targets("odoo") == {int(odoo_conf["http_port"])} == {8069}
    assert targets("jaeger") == {16686}
    assert published(services["postgres"]) == [("127.0.0.1", 5433, 5432)]


def test_collector_environment_matches_its_config(services):
    config_text = COLLECTOR_CONFIG.read_text()
    needed = set(re.findall(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)", config_text))
    env = env_of(services["otel-collector"])
    assert needed <= set(env), f"collector config reads {sorted(needed - set(env))}, compose does not set them"
    bridge = re.fullmatch(r"http://([\w-]+):(\d+)", env["IPAI_BRIDGE_ENDPOINT"])
    assert (
        bridge and bridge[1] == "bridge" and int(bridge[2]) == int(env_of(services["bridge"])["IPAI_BRIDGE_HTTP_PORT"])
    )
    jaeger_host, jaeger_port = env["JAEGER_OTLP_ENDPOINT"].split(":")
    assert jaeger_host in services and jaeger_port == "4317"
    assert env["IPAI_BRIDGE_TOKEN"] == env_of(services["bridge"])["IPAI_BRIDGE_TOKEN"]


def test_odoo_and_demo_send_telemetry_to_the_collector(services):
    for name in ("odoo", "demo"):
        endpoint = env_of(services[name])["OTEL_EXPORTER_OTLP_ENDPOINT"]
        assert endpoint == "http://otel-collector:4318", name
    assert env_of(services["demo"])["IPAI_ODOO_URL"] == "http://odoo:8069"
    assert services["demo"]["profiles"] == ["demo"], "the demo never starts with a plain `up`"


def test_bridge_and_odoo_share_the_ops_database(services):
    dsn = env_of(services["bridge"])["IPAI_OPS_DSN"]
    assert re.fullmatch(r"postgresql://[^:@]+:[^@]+@postgres:5432/[\w-]+", dsn), dsn
    assert dsn.rsplit("/", 1)[1] == env_of(services["odoo"])["ODOO_DB"] == env_of(services["postgres"])["POSTGRES_DB"]
    assert env_of(services["odoo"])["HOST"] == "postgres"
    assert env_of(services["demo"])["IPAI_OPS_DSN"] == dsn
    entry = " ".join(services["bridge"]["entrypoint"])
    assert entry.index("ipai-ops db migrate") < entry.index("exec ipai-ops bridge serve")


# --------------------------------------------------------------------------- health and order


def test_healthchecks(services):
    for name in ("postgres", "odoo", "bridge"):
        check = services[name].get("healthcheck")
        assert check and check.get("test") and not check.get("disable"), f"{name} needs a healthcheck"
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert "/web/health" in " ".join(services["odoo"]["healthcheck"]["test"])
    assert "/healthz" in " ".join(services["bridge"]["healthcheck"]["test"])


def test_start_order(services):
    for name, svc in services.items():
        for target, condition in depends(svc).items():
            assert target in services, f"{name} depends on unknown {target}"
            if condition == "service_healthy":
                assert services[target].get("healthcheck"), f"{name} waits for {target} to be healthy: it has no check"
    must = {
        ("bridge", "postgres"): "service_healthy",
        ("odoo", "postgres"): "service_healthy",
        ("odoo", "bridge"): "service_healthy",
        ("otel-collector", "bridge"): "service_healthy",
        ("otel-collector", "otel-collector-init"): "service_completed_successfully",
        ("demo", "odoo"): "service_healthy",
    }
    for (name, target), condition in must.items():
        assert depends(services[name]).get(target) == condition, f"{name} -> {target}"

    # No cycles.
    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, " -> ".join((*path, name))
        for target in depends(services[name]):
            visit(target, (*path, name))

    for name in services:
        visit(name, ())


# --------------------------------------------------------------------------- exposure


def test_bridge_collector_and_jaeger_are_published_on_loopback_only(services):
    for name in ("bridge", "otel-collector", "jaeger"):
        addresses = {ip for ip, _, _ in published(services[name])}
        assert addresses == {"127.0.0.1"}, f"{name} publishes on {addresses}"


def test_the_compose_bridge_starts_and_lets_the_collector_forward_odoo(services):
    from ipai_ops.bridge.auth import Senders
    from ipai_ops.bridge.settings import exposure_problem, from_env

    env = env_of(services["bridge"])
    for token in ("", "a-token-from-dot-env-0123456789"):
        settings = from_env({**env, "IPAI_BRIDGE_TOKEN": token})
        assert settings.host == "0.0.0.0"
        assert exposure_problem(settings) is None, "the bridge would refuse to start in its container"
        senders = Senders.from_settings(settings)
        [sender] = senders.senders
        assert senders.decide(sender, "odoo").allowed, "Odoo's telemetry reaches the bridge through the collector"
