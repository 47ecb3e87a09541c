"""The agent benchmark's configuration (``ssot/agents/benchmark.yaml``): category weights,
budgets and thresholds, tiers, risky paths and the quality gate's thresholds.

It is an SSOT registry like the failure modes and the secrets: ``ipai-ops ssot check``
(:mod:`ipai_ops.ssot`) validates it with the rest of ``ssot/``, and the CI tooling
(:mod:`ipai_ops.ci.bench`: ``ipai-ops bench``, ``gate quality``) scores with it. Its
schema is ``ssot/schemas/benchmark.schema.json``; the cross-field rules are below.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from ipai_ops import config
from ipai_ops._yaml import line_of, parse_error, schema_errors, strip_lines
from ipai_ops._yaml import load_with_lines as load_yaml_with_lines
from ipai_ops.registry import Problem

#: Where the configuration lives in a repository, and its schema.
CONFIG_PATH = Path("ssot") / "agents" / "benchmark.yaml"
SCHEMA_PATH = Path("ssot") / "schemas" / "benchmark.schema.json"
UNRANKED = "unranked"
DEFAULT_RISK_PENALTY = 25.0
#: ``gate quality`` fails a composite below this unless the config says otherwise.
DEFAULT_QUALITY_THRESHOLD = 70.0


def glob_to_regex(pattern: str) -> re.Pattern[str]:
    """A repository glob as a regex: ``**`` spans directories, ``*`` and ``?`` do not.

    fnmatch lets ``*`` cross ``/``, which would make ``docs/*.md`` match
    ``docs/a/b.md``; risky-path globs need the stricter, gitignore-like reading.
    """
    out = ["^"]
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    out.append("$")
    return re.compile("".join(out))


@dataclass(frozen=True)
class Tier:
    name: str
    min_score: float


@dataclass(frozen=True)
class RiskyPath:
    glob: str
    penalty: float

    def matches(self, path: str) -> bool:
        return _glob(self.glob).match(path) is not None


@lru_cache(maxsize=256)
def _glob(pattern: str):
    return glob_to_regex(pattern)


@dataclass(frozen=True)
class BenchmarkConfig:
    benchmark_version: int
    weights: Mapping[str, float]
    params: Mapping[str, Mapping[str, Any]]
    #: Best first (descending min_score).
    tiers: tuple[Tier, ...]
    risky_paths: tuple[RiskyPath, ...]
    path: str = "<memory>"
    #: ``quality_gate``: the default threshold of ``gate quality`` and per-repository ones.
    quality_threshold: float = DEFAULT_QUALITY_THRESHOLD
    quality_thresholds: Mapping[str, float] = field(default_factory=dict)

    def threshold_for(self, repository: str | None) -> float:
        """The quality gate's threshold for ``repository`` (OWNER/NAME, case-insensitive)."""
        wanted = (repository or "").lower()
        for name, value in self.quality_thresholds.items():
            if name.lower() == wanted:
                return value
        return self.quality_threshold

    def tier_for(self, composite: float) -> str:
        for tier in self.tiers:
            if composite >= tier.min_score:
                return tier.name
        return UNRANKED

    def risk_penalty(self, path: str) -> tuple[float, str | None]:
        for risky in self.risky_paths:
            if risky.matches(path):
                return risky.penalty, risky.glob
        return 0.0, None


@lru_cache(maxsize=1)
def _schema() -> dict[str, Any]:
    path = config.data_path(SCHEMA_PATH)
    return json.loads(path.read_text(encoding="utf-8"))


def default_config_path() -> Path:
    return config.repo_root() / CONFIG_PATH


def parse_config(text: str, *, source: str = "<memory>") -> tuple[BenchmarkConfig | None, list[Problem]]:
    """Validate benchmark YAML (schema + cross-field rules); every problem at once."""
    try:
        doc = load_yaml_with_lines(text)
    except yaml.YAMLError as exc:
        line, message = parse_error(exc)
        return None, [Problem(source, line, None, message)]
    validator = jsonschema.Draft202012Validator(_schema())
    problems = [Problem(source, line, None, message) for line, message in schema_errors(validator, doc)]
    if problems:
        return None, problems
    plain = strip_lines(doc)

    def problem(path: list[Any], message: str) -> None:
        problems.append(Problem(source, line_of(doc, path), None, message))

    categories = plain["categories"]
    weights = {name: float(spec["weight"]) for name, spec in categories.items()}
    total = sum(weights.values())
    if abs(total - 1.0) > 1e-6:
        problem(["categories"], f"category weights sum to {total:g}, not 1")
    ttg = categories.get("time_to_green")
    if ttg and ttg["target_minutes"] >= ttg["max_minutes"]:
        problem(["categories", "time_to_green"], "time_to_green: target_minutes must be below max_minutes")
    raw_tiers = plain["tiers"]
    if isinstance(raw_tiers, dict):
        pairs = [(name, spec["min_score"] if isinstance(spec, dict) else spec) for name, spec in raw_tiers.items()]
    else:
        pairs = [(t["name"], t["min_score"]) for t in raw_tiers]
    tiers = tuple(sorted((Tier(str(n), float(s)) for n, s in pairs), key=lambda t: -t.min_score))
    scores = [t.min_score for t in tiers]
    names = [t.name for t in tiers]
    if len(set(scores)) != len(scores):
        problem(["tiers"], "two tiers share a min_score")
    if len(set(names)) != len(names):
        problem(["tiers"], "two tiers share a name")
    risky = []
    for index, item in enumerate(plain["risky_paths"]):
        glob, penalty = (
            (item, DEFAULT_RISK_PENALTY)
            if isinstance(item, str)
            else (item["glob"], float(item.get("penalty", DEFAULT_RISK_PENALTY)))
        )
        if glob.startswith("/"):
            problem(["risky_paths", index], f"risky glob {glob!r} must be repo-relative")
        risky.append(RiskyPath(glob, penalty))
    if problems:
        return None, problems
    params = {
        name: {k: v for k, v in spec.items() if k not in ("weight", "description")} for name, spec in categories.items()
    }
    return (
        BenchmarkConfig(
            benchmark_version=int(plain["benchmark_version"]),
            weights=weights,
            params=params,
            tiers=tiers,
            risky_paths=tuple(risky),
            path=source,
            quality_threshold=float((plain.get("quality_gate") or {}).get("threshold", DEFAULT_QUALITY_THRESHOLD)),
            quality_thresholds={
                str(k): float(v) for k, v in ((plain.get("quality_gate") or {}).get("repositories") or {}).items()
            },
        ),
        [],
    )
