"""Settings from flags and environment; the CLI refuses bad setups with one clear line."""

from __future__ import annotations

import argparse
import os
import socket
import subprocess

import pytest

from ipai_ops.bridge import settings
from ipai_ops.bridge.server import check_protobuf_backend, ports_in_use
from tests.bridge.conftest import IPAI_OPS


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    settings.add_arguments(parser)
    return parser.parse_args(argv)


def test_every_setting_has_one_variable_and_one_flag():
    fields = [f.name for f in settings.fields(settings.Settings)]
    assert sorted(settings.ENV_VARS) == sorted(fields)
    assert len(set(settings.ENV_VARS.values())) == len(fields)
    for name, var in settings.ENV_VARS.items():
        if name != "dsn":
            assert var == "IPAI_BRIDGE_" + name.upper()


def test_flags_override_environment_which_overrides_defaults():
    env = {"IPAI_BRIDGE_HTTP_PORT": "5000", "IPAI_BRIDGE_MAX_INFLIGHT": "7", "IPAI_OPS_DSN": "postgresql:///x"}
    got = settings.from_args(_parse(["--http-port", "6000", "--allow-python-protobuf"]), env)
    assert (got.http_port, got.max_inflight, got.dsn, got.allow_python_protobuf) == (6000, 7, "postgresql:///x", True)
    assert got.grpc_port == 4317 and got.validate() == []
    assert settings.Settings(max_decompressed_bytes=1, max_body_bytes=2).validate()


def test_python_protobuf_backend_is_refused_unless_allowed():
    assert check_protobuf_backend(allow_python=False) is None  # this venv runs upb
    env = {**os.environ, "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python"}
    cmd = [*IPAI_OPS, "bridge", "serve", "--http-port", "1", "--grpc-port", "0"]
    result = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "pure-Python backend" in result.stderr and "Traceback" not in result.stderr


def test_invalid_settings_are_one_line():
    env = {**os.environ, "IPAI_BRIDGE_MAX_INFLIGHT": "lots"}
    cmd = [*IPAI_OPS, "bridge", "serve"]
    result = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "IPAI_BRIDGE_MAX_INFLIGHT" in result.stderr


def test_a_port_already_listened_on_is_refused_not_shared():
    # Workers bind with SO_REUSEPORT: without the probe a second bridge would silently
    # join the first one's port and take half its traffic.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cmd = [*IPAI_OPS, "bridge", "serve", "--host", "127.0.0.1", "--http-port", str(port), "--grpc-port", "0"]
        result = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert f"OTLP/HTTP port {port} on 127.0.0.1" in result.stderr and "Traceback" not in result.stderr


def test_nonsense_values_are_problems_not_crashes_later():
    problems = settings.Settings(
        http_port=0, workers=-1, log_level="loud", dsn="postgresql://ops:s3cret@[::1"
    ).validate()
    assert problems[:3] == [
        "http_port must be 1..65535",
        "workers must be >= 0 (0 = one per CPU)",
        "log_level must be DEBUG, INFO, WARNING, ERROR or CRITICAL",
    ]
    assert problems[3].startswith("dsn is not a PostgreSQL connection string") and "s3cret" not in problems[3]
    assert settings.Settings(log_level="debug", workers=0, grpc_port=0).validate() == []


def test_boolean_variables_refuse_nonsense():
    assert settings.from_env({"IPAI_BRIDGE_ALLOW_PYTHON_PROTOBUF": " Off "}).allow_python_protobuf is False
    assert settings.from_env({"IPAI_BRIDGE_ALLOW_PYTHON_PROTOBUF": "yes"}).allow_python_protobuf is True
    with pytest.raises(ValueError, match="IPAI_BRIDGE_ALLOW_PYTHON_PROTOBUF: 'maybe' is not a boolean"):
        settings.from_env({"IPAI_BRIDGE_ALLOW_PYTHON_PROTOBUF": "maybe"})


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--log-level", "LOUD"], "log_level must be"),
        (["--dsn", "not a dsn"], "dsn is not a PostgreSQL connection string"),
    ],
)
def test_bad_flags_are_one_line_before_serving(argv: list[str], expected: str):
    cmd = [*IPAI_OPS, "bridge", "serve", "--host", "127.0.0.1", "--grpc-port", "0", *argv]
    result = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert expected in result.stderr and result.stderr.strip().count("\n") == 0, result.stderr


def test_an_unresolvable_host_is_not_blamed_on_another_bridge():
    [problem] = ports_in_use(settings.Settings(host="256.0.0.1", http_port=4318, grpc_port=0))
    assert problem.startswith("OTLP/HTTP port 4318 on 256.0.0.1: ") and "another bridge" not in problem
