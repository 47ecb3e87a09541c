"""A bridge reachable from other hosts refuses to start without a token."""

from __future__ import annotations

import os
import subprocess

import pytest

from ipai_ops.bridge.settings import Settings, exposure_problem
from tests.bridge.conftest import IPAI_OPS, BridgeProcess, free_port, post
from tests.bridge.otlp_factory import span, traces

_TOKEN_VARS = ("IPAI_BRIDGE_TOKEN", "IPAI_BRIDGE_TOKENS", "IPAI_BRIDGE_TOKENS_FILE", "IPAI_BRIDGE_ALLOW_NO_TOKEN")


def _env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in _TOKEN_VARS}
    return {**env, **extra}


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "::1"])
def test_loopback_needs_no_token(host: str):
    assert exposure_problem(Settings(host=host)) is None


@pytest.mark.parametrize("host", ["0.0.0.0", "::", ""])
def test_other_addresses_need_a_token(host: str):
    problem = exposure_problem(Settings(host=host))
    assert problem is not None and "without a token" in problem and "IPAI_BRIDGE_TOKEN" in problem
    assert exposure_problem(Settings(host=host, token="t")) is None
    assert exposure_problem(Settings(host=host, tokens="a:x:0123456789abcdef")) is None
    assert exposure_problem(Settings(host=host, allow_no_token=True)) is None


def test_serve_on_all_interfaces_needs_a_token_or_being_told(ops_dsn: str):
    port = free_port()
    cmd = [*IPAI_OPS, "bridge", "serve", "--host", "0.0.0.0", "--http-port", str(port), "--grpc-port", "0"]
    result = subprocess.run(cmd, check=False, env=_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    assert "refusing to listen on 0.0.0.0 without a token" in result.stderr

    for env in ({"IPAI_BRIDGE_TOKEN": "a-token-0123456789"}, {"IPAI_BRIDGE_ALLOW_NO_TOKEN": "1"}):
        proc = BridgeProcess(ops_dsn, grpc_port=0, env=_env(**env), host="0.0.0.0").start()
        try:
            headers = {"Authorization": "Bearer a-token-0123456789"}
            body = traces([span(error="hi")]).SerializeToString()
            status, _, _ = post(proc.url + "/v1/traces", body, headers=headers)
        finally:
            proc.stop()
        assert status == 200, env
