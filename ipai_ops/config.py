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

#: The source checkout this package runs from (a checkout or an editable install of one).
_PACKAGE_REPO = Path(__file__).resolve().parent.parent
#: The copy of ``ssot/`` and ``docs/runbooks/`` an installed wheel carries, in the same layout
#: (``setup.py`` copies them in at build time), for an ``ipai_ops`` with no checkout around it.
PACKAGE_DATA = Path(__file__).resolve().parent / "_data"


#: Path of the classification model artifact (``ipai-ops classify train``); ``off`` disables it.
IPAI_OPS_MODEL = "IPAI_OPS_MODEL"
#: Probability below which the model abstains (default: the artifact's own threshold).
IPAI_OPS_MODEL_THRESHOLD = "IPAI_OPS_MODEL_THRESHOLD"


def dsn(explicit: str | None = None) -> str:
    return explicit or os.environ.get(IPAI_OPS_DSN) or DEFAULT_DSN


def test_admin_dsn(explicit: str | None = None) -> str:
    return explicit or os.environ.get(IPAI_TEST_PG) or DEFAULT_TEST_ADMIN_DSN


def _data_root() -> Path:
    """This package's checkout when it has one (``ssot/`` beside ``ipai_ops/``), else the wheel's copy."""
    return _PACKAGE_REPO if (_PACKAGE_REPO / "ssot" / "errors").is_dir() else PACKAGE_DATA


def data_path(*parts: str | os.PathLike[str]) -> Path:
    """A file of the product's own data (e.g. ``ssot/schemas/...``): the checkout first, then the
    package data. Unlike :func:`repo_root`, never a user's root: the JSON Schemas are the code's."""
    return _data_root().joinpath(*parts)


def repo_root(
    explicit: str | os.PathLike[str] | None = None, *, registry: str | os.PathLike[str] | None = None
) -> Path:
    """The one rule for the root that registry-relative paths (runbooks, ``ssot/...``) hang off:
    ``explicit``, else the checkout a ``registry`` file lives in (``<root>/ssot/errors/x.yaml``),
    else ``IPAI_OPS_REPO_ROOT``, else this package's checkout, else its package data."""
    if explicit:
        return Path(explicit).resolve()
    if registry is not None:
        resolved = Path(registry).resolve()
        if resolved.parent.name == "errors" and resolved.parent.parent.name == "ssot":
            return resolved.parents[2]
    env = os.environ.get(IPAI_OPS_REPO_ROOT)
    if env:
        return Path(env).resolve()
    return _data_root()


def registry_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    if explicit:
        return Path(explicit)
    env = os.environ.get(IPAI_OPS_REGISTRY)
    if env:
        return Path(env)
    return repo_root() / "ssot" / "errors" / "failure_modes.yaml"


def model_path(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """The classification model artifact: explicit, else ``IPAI_OPS_MODEL``, else
    ``var/classify/model.json.gz`` of the repository; None when set to ``off``."""
    value = str(explicit) if explicit else os.environ.get(IPAI_OPS_MODEL, "")
    if value.strip().lower() == "off":
        return None
    return Path(value) if value else repo_root() / "var" / "classify" / "model.json.gz"


def model_threshold() -> float | None:
    """``IPAI_OPS_MODEL_THRESHOLD`` as a probability in [0, 1], or None (the artifact's own)."""
    value = os.environ.get(IPAI_OPS_MODEL_THRESHOLD)
    if not value:
        return None
    try:
        threshold = float(value)
    except ValueError:
        raise ValueError(f"{IPAI_OPS_MODEL_THRESHOLD}={value!r}: not a number") from None
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"{IPAI_OPS_MODEL_THRESHOLD}={value!r}: not between 0 and 1")
    return threshold


# --------------------------------------------------------------------------- GitHub (ipai-ops ingest github-actions)

#: Token for the REST API. The variable GitHub Actions itself uses (``secrets.GITHUB_TOKEN``).
GITHUB_TOKEN = "GITHUB_TOKEN"
#: REST API base URL; set by GitHub Actions runners (GitHub Enterprise Server differs).
GITHUB_API_URL = "GITHUB_API_URL"
#: ``OWNER/REPO`` of the workflow run; set by GitHub Actions runners (``--repo``).
GITHUB_REPOSITORY = "GITHUB_REPOSITORY"
DEFAULT_GITHUB_API_URL = "https://api.github.com"


# --------------------------------------------------------------------------- agent runs (ipai-ops run)

#: Directory holding one sub-directory of logs and envelopes per recorded run (``--artifacts``).
IPAI_OPS_RUN_ARTIFACTS = "IPAI_OPS_RUN_ARTIFACTS"
#: Bytes of stdout (and, separately, stderr) kept on disk per attempt (``--max-output-bytes``).
IPAI_OPS_RUN_MAX_OUTPUT_BYTES = "IPAI_OPS_RUN_MAX_OUTPUT_BYTES"
#: Run directories older than this many days are deleted (``--retention-days``).
IPAI_OPS_RUN_RETENTION_DAYS = "IPAI_OPS_RUN_RETENTION_DAYS"
#: Upper bound, in seconds, of the sleep before a retry; 0 retries at once (``--retry-delay-cap``).
IPAI_OPS_RUN_RETRY_DELAY_CAP = "IPAI_OPS_RUN_RETRY_DELAY_CAP"
#: The agent variant a run belongs to, stored as ``metadata.variant_id`` (``--variant-id``).
IPAI_OPS_RUN_VARIANT_ID = "IPAI_OPS_RUN_VARIANT_ID"

# --------------------------------------------------------------------------- reports (ipai-ops report)

#: Key of the pseudonyms ``ipai-ops report baseline --anonymise`` gives client ids (HMAC-SHA256;
#: at least 16 bytes). A secret: with it, a guessed id can be checked against the report.
IPAI_OPS_REPORT_KEY = "IPAI_OPS_REPORT_KEY"

# Set BY the recorder for the command it runs (read by the agent, never by ipai_ops):
#: The run id (``ops.agent_runs.run_id``).
IPAI_RUN_ID = "IPAI_RUN_ID"
#: 1-based attempt number of this execution of the command.
IPAI_RUN_ATTEMPT = "IPAI_RUN_ATTEMPT"
#: JSON Lines file the command may append tool-call, usage and metadata events to.
IPAI_RUN_EVENTS = "IPAI_RUN_EVENTS"
#: The attempt's artifact directory (logs, events, envelope).
IPAI_RUN_DIR = "IPAI_RUN_DIR"
#: The agent session id the command resumes, set when known (``--session-id``, or a
#: ``session`` event of an earlier attempt).
IPAI_RUN_SESSION_ID = "IPAI_RUN_SESSION_ID"
#: W3C trace context of the recorder's active span, for the command's own spans
#: (the environment-variable carrier of the OpenTelemetry specification).
TRACEPARENT = "TRACEPARENT"
#: XDG base directory for state; the default artifacts directory lives under it.
XDG_STATE_HOME = "XDG_STATE_HOME"
#: Set to "true" by CI systems (GitHub Actions, GitLab CI, ...): a run's envelope says env "ci".
CI = "CI"


def run_artifacts_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """Where run directories go: flag, env, else ``$XDG_STATE_HOME/ipai-ops/runs``."""
    if explicit:
        return Path(explicit).expanduser().resolve()
    env = os.environ.get(IPAI_OPS_RUN_ARTIFACTS)
    if env:
        return Path(env).expanduser().resolve()
    state = os.environ.get(XDG_STATE_HOME) or str(Path.home() / ".local" / "state")
    return (Path(state) / "ipai-ops" / "runs").resolve()
