"""docs/examples/edge-function: a dependency-free Node.js/Deno reporter, run for real against the bridge."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ipai_ops.problem import problem_errors
from tests.bridge.conftest import BridgeProcess, error_rows

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "edge-function"
NODE = shutil.which("node")


def _node_major() -> int:
    out = subprocess.run([NODE, "--version"], capture_output=True, text=True, check=True).stdout
    return int(out.strip().lstrip("v").split(".")[0])


pytestmark = pytest.mark.skipif(
    NODE is None and os.environ.get("CI") != "true", reason="Node.js is not installed (the example needs 18+)"
)


def test_edge_function_reports_like_the_python_services(module_ops_dsn: str):
    assert NODE is not None, "CI runs this example: install Node.js 18+"
    assert _node_major() >= 18, "the example uses fetch/Request/Response globals: Node.js 18+"
    bridge = BridgeProcess(module_ops_dsn, grpc_port=0).start()
    try:
        env = {
            **os.environ,
            "WEBHOOK_SECRET": "whsec-edge-example",
            "OTEL_SERVICE_NAME": "billing-webhooks",
            "OTEL_EXPORTER_OTLP_ENDPOINT": bridge.url,
            "SERVICE_VERSION": "2.3.0",
        }
        run = subprocess.run(
            [NODE, str(EXAMPLE / "smoke.mjs")], env=env, capture_output=True, text=True, timeout=60, check=True
        )
    finally:
        bridge.stop()
    assert "unreachable" not in run.stderr and "answered" not in run.stderr, run.stderr
    answers = {row["case"]: row for row in map(json.loads, run.stdout.splitlines())}

    assert answers["good"]["status"] == 200
    forged, malformed = answers["forged"], answers["malformed"]
    for answer in (forged, malformed):
        assert answer["contentType"] == "application/problem+json"
        assert problem_errors(answer["body"]) == []
        assert answer["correlationId"] == answer["body"]["ipai"]["correlation_id"]
    assert forged["status"] == 401
    assert forged["body"]["type"] == "urn:ipai:failure:WEBHOOK.SIGNATURE_INVALID"
    assert malformed["status"] == 500
    assert "JSON" not in malformed["body"]["detail"]  # an untyped error's text stays server-side

    rows = error_rows(module_ops_dsn, service="billing-webhooks")
    assert len(rows) == 2, rows
    by_code = {row["code"]: row for row in rows}
    signature = by_code["WEBHOOK.SIGNATURE_INVALID"]
    assert signature["source"] == "edge" and signature["count"] == 1
    assert signature["last_service_version"] == "2.3.0"
    assert signature["sample"]["context"]["correlation_id"] == "edge-smoke-forged"
    crash = next(row for code, row in by_code.items() if code != "WEBHOOK.SIGNATURE_INVALID")
    assert crash["error_type"] == "SyntaxError" and crash["source"] == "edge"
