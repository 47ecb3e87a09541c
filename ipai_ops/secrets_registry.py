"""The secrets registry (``ssot/secrets/registry.yaml``): which secrets exist, where they
live, who rotates them and how often -- names, never values.

``ipai-ops ssot check`` validates it (schema ``ssot/schemas/secrets_registry.schema.json``,
one entry per name, no name both a secret and not one); ``ipai-ops gate secrets``
(:mod:`ipai_ops.ci.secret_scan`) holds the code and the deployment files to it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from ipai_ops import _yaml, config
from ipai_ops.registry import Problem

#: Where the registry lives in a repository, and its schema.
REGISTRY_PATH = Path("ssot") / "secrets" / "registry.yaml"
SCHEMA_PATH = Path("ssot") / "schemas" / "secrets_registry.schema.json"
#: A name that says it holds a secret: an environment variable (or its ``_FILE`` pointer)
#: ending in TOKEN, SECRET, PASSWORD, PEPPER, KEY or DSN (a DSN may carry a password), or
#: naming credentials.
SECRET_NAME = re.compile(
    r"\b[A-Z][A-Z0-9_]*(?:TOKENS?|SECRETS?|PASSWORD|PASSWD|PEPPER|CREDENTIALS?|_KEY|_DSN)(?:_FILE)?\b"
)
#: A GitHub Actions secret a workflow reads (``${{ secrets.NAME }}``): registered whatever its name.
WORKFLOW_SECRET = re.compile(r"\bsecrets\.([A-Za-z_][A-Za-z0-9_]*)")


@dataclass(frozen=True)
class SecretsRegistry:
    secrets: dict[str, dict[str, Any]]
    #: Names that look like secrets but hold none (``not_secrets:``), with the reason.
    not_secrets: dict[str, str]

    def knows(self, name: str) -> bool:
        return name in self.secrets or name in self.not_secrets


@lru_cache(maxsize=1)
def _validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(config.data_path(SCHEMA_PATH).read_text(encoding="utf-8"))
    return jsonschema.Draft202012Validator(schema)


def parse(text: str, *, source: str) -> tuple[SecretsRegistry | None, list[Problem]]:
    """The registry in ``text``, or None and every problem (file:line: message)."""
    try:
        doc = _yaml.load_with_lines(text)
    except yaml.YAMLError as exc:
        line, message = _yaml.parse_error(exc)
        return None, [Problem(source, line, None, message)]
    problems = [Problem(source, line, None, message) for line, message in _yaml.schema_errors(_validator(), doc)]
    if problems:
        return None, problems
    secrets: dict[str, dict[str, Any]] = {}
    not_secrets: dict[str, str] = {}
    for entry in doc["secrets"]:
        name = entry["name"]
        if name in secrets:
            problems.append(Problem(source, entry.get("__line__"), None, f"secret {name!r} is listed twice"))
        secrets[name] = _yaml.strip_lines(entry)
    for entry in doc.get("not_secrets") or []:
        name = entry["name"]
        if name in secrets:
            problems.append(
                Problem(source, entry.get("__line__"), None, f"{name!r} is listed as a secret and as not a secret")
            )
        elif name in not_secrets:
            problems.append(Problem(source, entry.get("__line__"), None, f"{name!r} is listed twice in not_secrets"))
        not_secrets[name] = entry["why"]
    if problems:
        return None, problems
    return SecretsRegistry(secrets, not_secrets), []


def load(root: Path, *, required: bool = False) -> tuple[SecretsRegistry | None, list[Problem]]:
    """The registry of the repository at ``root``; a missing file is a problem only when
    ``required`` (the secrets gate), not for ``ssot check`` of a checkout without one."""
    path = root / REGISTRY_PATH
    source = str(REGISTRY_PATH)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, [Problem(source, None, None, "the secrets registry is missing")] if required else []
    except (OSError, UnicodeDecodeError) as exc:
        return None, [Problem(source, None, None, f"cannot read: {getattr(exc, 'strerror', None) or exc}")]
    return parse(text, source=source)
