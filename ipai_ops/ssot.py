"""The full SSOT check: registry + every active code's runbook, all problems at once."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ipai_ops import config, runbooks
from ipai_ops.taxonomy import Problem, RegistryError, load_registry


@dataclass(frozen=True)
class Report:
    registry: str
    problems: list[Problem]
    codes: int
    runbooks: int

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "registry": self.registry,
            "codes": self.codes,
            "runbooks_checked": self.runbooks,
            "problems": [p.as_dict() for p in self.problems],
        }


def check(*, registry_path: str | Path | None = None, repo_root: str | Path | None = None) -> Report:
    path = config.registry_path(registry_path)
    root = Path(repo_root).resolve() if repo_root else _root_for(path)
    try:
        registry = load_registry(path)
    except RegistryError as exc:
        return Report(str(path), exc.problems, 0, 0)
    problems = runbooks.check_all(registry, root)
    return Report(str(path), problems, len(registry), len(registry.active()))


def _root_for(registry_file: Path) -> Path:
    """The repository a registry file lives in (``<root>/ssot/errors/x.yaml``), else the configured root."""
    resolved = registry_file.resolve()
    if resolved.parent.name == "errors" and resolved.parent.parent.name == "ssot":
        return resolved.parent.parent.parent
    return config.repo_root()
