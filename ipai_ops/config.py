"""Every environment variable ipai_ops reads, in one place.

A CLI flag and its variable share a name: ``--dsn`` <-> ``IPAI_OPS_DSN``.
"""

from __future__ import annotations

import os
from pathlib import Path

#: PostgreSQL DSN of the database holding the ``ops`` schema (often Odoo's own).
IPAI_OPS_DSN = "IPAI_OPS_DSN"
#: Path of the failure-mode registry YAML.
IPAI_OPS_REGISTRY = "IPAI_OPS_REGISTRY"
#: Repository root used to resolve runbook paths (defaults to the registry's repo).
IPAI_OPS_REPO_ROOT = "IPAI_OPS_REPO_ROOT"

#: Maintenance database that tests and benchmarks create throwaway databases from.
IPAI_TEST_PG = "IPAI_TEST_PG"

DEFAULT_DSN = "postgresql://127.0.0.1:5432/ipai_ops"
DEFAULT_TEST_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"

#: The source checkout this package was installed from (editable installs) or None.
_PACKAGE_REPO = Path(__file__).resolve().parent.parent


def dsn(explicit: str | None = None) -> str:
    return explicit or os.environ.get(IPAI_OPS_DSN) or DEFAULT_DSN


def test_admin_dsn(explicit: str | None = None) -> str:
    return explicit or os.environ.get(IPAI_TEST_PG) or DEFAULT_TEST_ADMIN_DSN


def repo_root(explicit: str | os.PathLike[str] | None = None) -> Path:
    if explicit:
        return Path(explicit).resolve()
    env = os.environ.get(IPAI_OPS_REPO_ROOT)
    if env:
        return Path(env).resolve()
    return _PACKAGE_REPO


def registry_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    if explicit:
        return Path(explicit)
    env = os.environ.get(IPAI_OPS_REGISTRY)
    if env:
        return Path(env)
    return repo_root() / "ssot" / "errors" / "failure_modes.yaml"
