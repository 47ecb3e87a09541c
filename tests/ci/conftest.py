"""Fixtures of the engineering-loop tests: a fake GitHub, a CLI runner, a migrated database."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from ipai_ops.cli import main

from .fake_github import FakeGitHub, serve


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def run_cli(capsys):
    """Run ``ipai-ops ARGS...`` in-process; return exit code, stdout and stderr."""

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        code = main(list(args))
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture
def fake_github() -> Iterator[FakeGitHub]:
    fake = FakeGitHub()
    server, thread = serve(fake)
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
