"""``ipai-ops demo``: a small instrumented agent that fills every view with real data.

Four parts, each usable alone:

* :mod:`ipai_ops.demo.agent` runs a handful of agent tasks under the real OpenTelemetry
  SDK, some of which fail, and exports their traces (ERROR spans with ``exception``
  events) and error logs over OTLP/HTTP to the bridge (or a collector in front of it);
  it then reads ``ops.agent_errors`` back and reports what arrived per failure code.
* :mod:`ipai_ops.demo.samples` records agent runs (``ipai-ops run``'s recorder), scores
  three real public PRs and the runs (``ipai-ops bench score``) and compares two sample
  variants, and the real PRs by whether they touch a risky path (``ipai-ops bench compare``);
* :mod:`ipai_ops.demo.intents` submits signed intents to Odoo's Pulser API
  (``POST /pulser/v1/intents``), some of which fail with different codes;
* :mod:`ipai_ops.demo.resolution` creates a sample resolution record linked to a demo
  error through Odoo's RPC API.

Running it again doubles nothing (see each module).

Environment variables (each shares its name with a ``--flag`` of ``ipai-ops demo``):
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

#: OTLP/HTTP base URL the demo agent exports to (the standard OTel variable; ``/v1/traces``
#: and ``/v1/logs`` are appended). Default: the local bridge.
OTEL_EXPORTER_OTLP_ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"
#: Bearer token for the bridge (the bridge's own variable: one value for both sides).
IPAI_BRIDGE_TOKEN = "IPAI_BRIDGE_TOKEN"
#: Odoo base URL for the intents part.
IPAI_ODOO_URL = "IPAI_ODOO_URL"
#: Odoo database (needed only to provision a Pulser client through Odoo's RPC API).
IPAI_ODOO_DB = "IPAI_ODOO_DB"
#: Odoo login and password used only to provision the demo's Pulser client and to
#: run the intent worker right away (local defaults: admin / admin).
IPAI_ODOO_LOGIN = "IPAI_ODOO_LOGIN"
IPAI_ODOO_PASSWORD = "IPAI_ODOO_PASSWORD"
#: An existing Pulser client's key id and signing key (skips provisioning).
IPAI_PULSER_KEY_ID = "IPAI_PULSER_KEY_ID"
IPAI_PULSER_SECRET = "IPAI_PULSER_SECRET"

DEFAULT_OTLP_ENDPOINT = "http://127.0.0.1:4318"
DEFAULT_ODOO_URL = "http://127.0.0.1:8069"
DEFAULT_ODOO_DB = "ipai"
DEFAULT_SERVICE_NAME = "demo-agent"
#: ``ipai.source`` of the demo's telemetry: its ops rows are keyed (and findable) under it.
DEMO_SOURCE = "demo"


def content_files() -> list[Path]:
    """What decides the rows the demo writes: this package's modules (tasks, intents, runs,
    the resolution) and the real PRs it scores (:func:`ipai_ops.demo.samples.fixture_files`)."""
    from ipai_ops.demo.samples import fixture_files

    return sorted(Path(__file__).resolve().parent.glob("*.py")) + fixture_files()


def content_digest(files: Sequence[Path] | None = None) -> str:
    """A digest of the demo's content (``ipai-ops demo --content-digest``): ``scripts/run.sh``
    runs the demo again on a database when it changed. Files are named by their folder and
    name, so the same demo in another checkout has the same digest."""
    digest = hashlib.sha256()
    for path in sorted(files if files is not None else content_files(), key=lambda p: (p.parent.name, p.name)):
        data = path.read_bytes()
        digest.update(f"{path.parent.name}/{path.name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()[:16]
