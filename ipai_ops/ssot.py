"""The full SSOT check: registry + every active code's runbook, all problems at once."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ipai_ops import benchmark_config, config, runbooks, secrets_registry
from ipai_ops.registry import Problem, RegistryError, load_registry


@dataclass(frozen=True)
class Report:
    registry: str
    problems: list[Problem]
    codes: int
    runbooks: int
    #: Warnings (e.g. a runbook still holding TODO placeholders) fail the check too.
    strict: bool = False

    @property
    def failures(self) -> list[Problem]:
        return [p for p in self.problems if self.strict or p.severity != "warning"]

    @property
    def ok(self) -> bool:
        return not self.failures

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "strict": self.strict,
            "registry": self.registry,
            "codes": self.codes,
            "runbooks_checked": self.runbooks,
            "problems": [p.as_dict() for p in self.problems],
        }


def check(
    *, registry_path: str | Path | None = None, repo_root: str | Path | None = None, strict: bool = False
) -> Report:
    path = config.registry_path(registry_path)
    root = config.repo_root(repo_root, registry=path)
    try:
        registry = load_registry(path)
    except RegistryError as exc:
        return Report(str(path), exc.problems, 0, 0, strict)
    problems = runbooks.check_all(registry, root)
    problems.extend(_benchmark_problems(root))
    problems.extend(secrets_registry.load(root)[1])
    return Report(str(path), problems, len(registry), len(registry.active()), strict)


def _benchmark_problems(root: Path) -> list[Problem]:
    """The agent benchmark config lives in ssot/ too: the same check validates it."""
    path = root / benchmark_config.CONFIG_PATH
    if not path.is_file():
        return []
    _, found = benchmark_config.parse_config(path.read_text(encoding="utf-8"), source=str(path.relative_to(root)))
    return found
