"""The demo's resolution record: created through Odoo's own model over its RPC API.

One ``ipai.resolution`` (sample data, and titled so) for the demo agent's
``TRANSPORT.DATABASE_UNAVAILABLE`` error group, linked by its fingerprint and id, with
its analysis filled in and submitted for review the way the form's button does. It is
left in review: marking it done would resolve the demo's error group.

Idempotent: an existing record with the same title and fingerprint is kept as is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ipai_ops.demo import DEFAULT_SERVICE_NAME

CODE = "TRANSPORT.DATABASE_UNAVAILABLE"
TITLE = "Invoice sync lost its database connection (demo sample)"
VALUES = {
    "summary": (
        "Sample record written by `ipai-ops demo`. The demo agent's sync-invoices task could not "
        "reach PostgreSQL (connection refused) on every run."
    ),
    "root_cause": (
        "The agent's database host pointed at a container name ('db') that does not resolve outside "
        "Docker Compose (sample analysis)."
    ),
    "fix": "Read the DSN from IPAI_OPS_DSN instead of a hard-coded host; retry with backoff (sample).",
    "regression_test": "tests/demo/test_demo.py::test_demo_fills_runs_benchmarks_and_resolutions",
    "outcome": "mitigated",
}


@dataclass
class ResolutionReport:
    note: str
    resolution_id: int | None = None
    fingerprint: str | None = None
    created: bool = False


def ensure_resolution(rpc: Any, *, service: str = DEFAULT_SERVICE_NAME) -> ResolutionReport:
    """Create the sample resolution once, linked to the demo's error group (``rpc``: an
    :class:`ipai_ops.demo.intents.OdooRpc`)."""
    errors = rpc.execute(
        "ipai.agent.error",
        "search_read",
        [("code", "=", CODE), ("service", "=", service)],
        ["fingerprint"],
        limit=1,
        order="last_seen desc",
    )
    if not errors:
        return ResolutionReport(f"no {CODE} error of {service} in Odoo yet: resolution not created")
    error_id, fingerprint = errors[0]["id"], errors[0]["fingerprint"]
    found = rpc.execute("ipai.resolution", "search", [("name", "=", TITLE), ("fingerprint", "=", fingerprint)], limit=1)
    if found:
        return ResolutionReport(f"resolution {found[0]} already there for {CODE}", found[0], fingerprint)
    new_id = rpc.execute(
        "ipai.resolution",
        "create",
        [{"name": TITLE, "code": CODE, "fingerprint": fingerprint, "error_id": error_id, **VALUES}],
    )[0]
    rpc.execute("ipai.resolution", "action_submit_review", [new_id])
    return ResolutionReport(f"created resolution {new_id} for {CODE} (in review)", new_id, fingerprint, True)
