"""tests/metrics: the metrics pipeline (Prometheus config, Grafana dashboards, a real Prometheus)."""

from __future__ import annotations

import pytest


# pytest-odoo (installed for the Odoo addons' tests) autouses fixtures that need an Odoo
# database. These tests have none: these no-ops shadow them for tests/metrics only.
@pytest.fixture(scope="session", autouse=True)
def load_registry() -> None:
    return None


@pytest.fixture(scope="session", autouse=True)
def load_http() -> None:
    return None
