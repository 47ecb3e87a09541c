"""Fixtures of the agent-run tests: a recorder on a throwaway ops database, real subprocesses."""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ipai_ops.runs.recorder import RunRecorder
from tests.conftest import query_rows

PY = sys.executable
#: The child pytest runs without the plugins of this virtualenv (pytest-odoo imports Odoo).
CHILD_ENV = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    return tmp_path / "runs"


@pytest.fixture
def make_recorder(artifacts: Path, ops_dsn: str) -> Callable[..., RunRecorder]:
    """A quiet recorder that retries at once, on the test's own database and artifacts directory."""

    def make(**options: Any) -> RunRecorder:
        settings: dict[str, Any] = {
            "dsn": ops_dsn,
            "artifacts_dir": artifacts,
            "quiet": True,
            "retry_delay_cap": 0,
            "kill_grace": 1.0,
        }
        settings.update(options)
        return RunRecorder(**settings)

    return make


@pytest.fixture
def closed_dsn() -> str:
    """A DSN whose port nobody listens on (connection refused at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"postgresql://postgres@127.0.0.1:{port}/nowhere"


def fetch_one(dsn: str, sql: str, *params: Any) -> dict[str, Any] | None:
    return next(iter(query_rows(dsn, sql, params)), None)


def run_row(dsn: str, run_id: str) -> dict[str, Any] | None:
    return fetch_one(dsn, "SELECT * FROM ops.agent_runs WHERE run_id = %s", run_id)


def error_row(dsn: str, error_id: int) -> dict[str, Any] | None:
    return fetch_one(dsn, "SELECT * FROM ops.agent_errors WHERE id = %s", error_id)


def dump(value: Any) -> str:
    return json.dumps(value, default=str)
