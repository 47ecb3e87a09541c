"""The failure-mode registry: load, validate and look up failure codes.

The registry is ``ssot/errors/failure_modes.yaml``; its entry contract is
``ssot/schemas/failure_mode.schema.json``. :func:`check_registry` reports every
problem at once (file, line, code, message) instead of stopping at the first.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema
import re2
import yaml

from ipai_ops import config
from ipai_ops._yaml import line_of, load_with_lines, parse_error, strip_lines
from ipai_ops.text import re2_options

CODE_RE = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z][A-Z0-9_]*)+$")
SEVERITIES = ("critical", "high", "medium", "low")
#: What a signature is matched against (ssot/errors/error_codes.md, "Signatures"): the
#: exception type, the message, any log/output text, the command that failed.
SIGNATURE_SUBJECTS = ("type", "message", "text", "command")
#: Kept for callers of the first registry version.
SIGNATURE_TIERS = SIGNATURE_SUBJECTS

#: The closed set of failure families (ssot/errors/error_codes.md, "Families"). Every
#: active code declares one; the fallback code alone is ``unknown``.
FAMILIES = (
    "test",
    "compile",
    "lint",
    "dependency",
    "network",
    "timeout",
    "resource",
    "permission",
    "config",
    "infrastructure",
    "auth",
    "data",
    "provider",
    "runtime",
)
FALLBACK_FAMILY = "unknown"

#: Named groups a signature may use; what they capture travels as the classification's
#: ``captures`` (``name__2`` repeats a name where a pattern needs the group twice).
CAPTURE_NAMES = frozenset(
    {
        "test",
        "file",
        "line",
        "column",
        "package",
        "version",
        "variable",
        "name",
        "host",
        "model",
        "tool",
        "rule",
        "compiler_code",
        "constraint",
        "table",
        "action",
        "program",
        "command",
        "status",
        "exit_code",
    }
)
_GROUP_NAME_RE = re.compile(r"\(\?P<([^>]+)>")


def capture_name(group: str) -> str:
    """The capture a named group feeds: ``package__2`` feeds ``package``."""
    return group.split("__", 1)[0]


#: Registry flag names and their inline RE2 form.
_FLAG_PREFIX = {"IGNORECASE": "i", "MULTILINE": "m"}


def inline_flags(pattern: str, flags: tuple[str, ...] | list[str] = ()) -> str:
    """``pattern`` with its registry flags as an RE2 inline group, e.g. ``(?im)...``."""
    letters = "".join(_FLAG_PREFIX[name] for name in flags if name in _FLAG_PREFIX)
    return f"(?{letters}){pattern}" if letters else pattern


def compile_pattern(pattern: str, flags: tuple[str, ...] | list[str] = ()) -> re2._Regexp:
    """Compile a registry pattern with RE2 (linear time); raise ``ValueError`` with RE2's reason.

    RE2 has no backtracking, so it cannot run look-around or back-references: such a
    pattern is refused here rather than run by a backtracking engine on sender text.
    """
    try:
        return re2.compile(inline_flags(pattern, flags), re2_options())
    except re2.error as exc:
        reason = exc.args[0].decode("utf-8", "replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise ValueError(f"RE2 (linear-time engine) cannot run it: {reason}") from None


class RegistryError(Exception):
    """The registry cannot be used; ``problems`` lists every reason."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(p.format() for p in problems))


@dataclass(frozen=True)
class Problem:
    file: str
    line: int | None
    code: str | None
    message: str
    #: ``error`` fails the check; ``warning`` fails it only under ``ssot check --strict``.
    severity: str = "error"

    def format(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        who = f" [{self.code}]" if self.code else ""
        level = " warning:" if self.severity == "warning" else ""
        return f"{where}:{who}{level} {self.message}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "code": self.code,
            "message": self.message,
            "severity": self.severity,
        }


@dataclass(frozen=True)
class Signature:
    on: str
    pattern: str
    #: The pattern compiled with RE2 (for ``str`` subjects); the classifier compiles its own
    #: byte-level matcher from ``pattern`` and ``flags``.
    regex: Any = field(compare=False, repr=False)
    flags: tuple[str, ...] = ()
    #: Overrides the code's priority for this signature (``None``: the code's).
    priority: int | None = None

    def describe(self) -> str:
        return f"{self.on}:{self.pattern}"


@dataclass(frozen=True)
class FailureMode:
    code: str
    title: str
    category: str
    severity: str
    description: str
    runbook: str
    retryable: bool
    http_status: int | None
    signatures: tuple[Signature, ...]
    lifecycle: str = "active"
    #: One of :data:`FAMILIES` (``unknown`` for the fallback).
    family: str = FALLBACK_FAMILY
    #: Added to the family's rank when signatures of several codes match (error_codes.md).
    priority: int = 0
    #: Real texts this code is for; each must classify to this code (tests, and the learned layer).
    examples: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    ci_behavior: str | None = None
    max_attempts: int | None = None
    owner: str | None = None
    fallback: bool = False
    replaced_by: str | None = None
    line: int | None = field(default=None, compare=False)

    @property
    def active(self) -> bool:
        return self.lifecycle == "active"

    def as_dict(self) -> dict[str, Any]:
        """The YAML entry for this mode (stable key order, optional keys omitted)."""
        out: dict[str, Any] = {
            "code": self.code,
            "title": self.title,
            "category": self.category,
            "severity": self.severity,
            "description": self.description,
            "runbook": self.runbook,
            "retryable": self.retryable,
            "http_status": self.http_status,
            "signatures": [_signature_dict(s) for s in self.signatures],
            "lifecycle": self.lifecycle,
            "family": self.family,
        }
        if self.priority:
            out["priority"] = self.priority
        for key in ("replaced_by", "ci_behavior", "max_attempts", "owner"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.examples:
            out["examples"] = list(self.examples)
        if self.aliases:
            out["aliases"] = list(self.aliases)
        if self.fallback:
            out["fallback"] = True
        return out


def _signature_dict(sig: Signature) -> dict[str, Any]:
    out: dict[str, Any] = {"on": sig.on, "pattern": sig.pattern}
    if sig.flags:
        out["flags"] = list(sig.flags)
    if sig.priority is not None:
        out["priority"] = sig.priority
    return out


@dataclass(frozen=True)
class Registry:
    """An immutable, validated set of failure modes, in file order."""

    modes: tuple[FailureMode, ...]
    path: str = "<memory>"
    _by_code: dict[str, FailureMode] = field(default_factory=dict, compare=False, repr=False)
    #: Derived, immutable views other modules build once per registry (the classifier's
    #: compiled matcher lives here), so a registry and what is compiled from it age together.
    derived: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        index: dict[str, FailureMode] = {}
        for mode in self.modes:
            index[mode.code] = mode
            for alias in mode.aliases:
                index.setdefault(alias, mode)
        object.__setattr__(self, "_by_code", index)

    def __iter__(self) -> Iterator[FailureMode]:
        return iter(self.modes)

    def __len__(self) -> int:
        return len(self.modes)

    def __contains__(self, code: object) -> bool:
        return code in self._by_code

    def get(self, code: str | None) -> FailureMode | None:
        """The mode for a code or a legacy alias (e.g. ``ARGS_INVALID``)."""
        if not code:
            return None
        return self._by_code.get(code.strip())

    def __getitem__(self, code: str) -> FailureMode:
        mode = self.get(code)
        if mode is None:
            raise KeyError(code)
        return mode

    @property
    def fallback(self) -> FailureMode:
        for mode in self.modes:
            if mode.fallback and mode.active:
                return mode
        raise LookupError("registry has no active fallback failure mode")

    def active(self) -> list[FailureMode]:
        return [m for m in self.modes if m.active]

    def to_yaml_document(self) -> dict[str, Any]:
        return {"schema_version": 1, "failure_modes": [m.as_dict() for m in self.modes]}


# --------------------------------------------------------------------------- loading


@lru_cache(maxsize=1)
def _schema() -> dict[str, Any]:
    path = config.data_path("ssot", "schemas", "failure_mode.schema.json")
    return json.loads(path.read_text(encoding="utf-8"))


def parse_registry(text: str, *, source: str = "<memory>") -> tuple[Registry | None, list[Problem]]:
    """Parse and validate registry YAML text without touching the filesystem."""
    problems: list[Problem] = []
    try:
        raw = load_with_lines(text)
    except yaml.YAMLError as exc:
        line, message = parse_error(exc)
        return None, [Problem(source, line, None, message)]
    if not isinstance(raw, dict):
        return None, [Problem(source, 1, None, "registry must be a mapping with 'failure_modes'")]

    plain = strip_lines(raw)
    validator = jsonschema.Draft202012Validator(_schema())
    bad_entries: set[int] = set()
    for err in sorted(validator.iter_errors(plain), key=lambda e: list(map(str, e.path))):
        path = list(err.absolute_path)
        line = line_of(raw, path)
        code = None
        if len(path) >= 2 and path[0] == "failure_modes" and isinstance(path[1], int):
            bad_entries.add(path[1])
            entry = plain["failure_modes"][path[1]]
            code = entry.get("code") if isinstance(entry, dict) else None
        where = "/".join(str(p) for p in path[2:]) or "entry"
        problems.append(Problem(source, line, code, f"schema: {where}: {err.message}"))

    entries = raw.get("failure_modes") if isinstance(raw.get("failure_modes"), list) else []
    modes: list[FailureMode] = []
    seen: dict[str, int | None] = {}
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            continue
        line = entry.get("__line__")
        code = entry.get("code")
        if isinstance(code, str):
            if code in seen:
                problems.append(Problem(source, line, code, f"duplicate code (first defined at line {seen[code]})"))
            seen.setdefault(code, line)
            category = entry.get("category")
            if isinstance(category, str) and CODE_RE.match(code) and code.split(".")[0] != category:
                problems.append(
                    Problem(source, line, code, f"category {category!r} must equal the code's first segment")
                )
        signatures: list[Signature] = []
        for sig_index, sig in enumerate(entry.get("signatures") or ()):
            if not isinstance(sig, dict) or not isinstance(sig.get("pattern"), str):
                continue
            flags = tuple(f for f in sig.get("flags") or () if isinstance(f, str))
            try:
                regex = compile_pattern(sig["pattern"], flags)
            except ValueError as exc:
                problems.append(
                    Problem(
                        source,
                        sig.get("__line__", line),
                        code,
                        f"signatures[{sig_index}]: pattern {sig['pattern']!r} does not compile: {exc}",
                    )
                )
                bad_entries.add(index)
                continue
            unknown = sorted({capture_name(g) for g in _GROUP_NAME_RE.findall(sig["pattern"])} - CAPTURE_NAMES)
            if unknown:
                problems.append(
                    Problem(
                        source,
                        sig.get("__line__", line),
                        code,
                        f"signatures[{sig_index}]: named group(s) {', '.join(unknown)} are not captures "
                        f"(use one of {', '.join(sorted(CAPTURE_NAMES))})",
                    )
                )
                bad_entries.add(index)
                continue
            priority = sig.get("priority")
            signatures.append(
                Signature(
                    on=sig.get("on", "text"),
                    pattern=sig["pattern"],
                    regex=regex,
                    flags=flags,
                    priority=priority if isinstance(priority, int) and not isinstance(priority, bool) else None,
                )
            )
        if index in bad_entries:
            continue
        modes.append(
            FailureMode(
                code=code,
                title=entry["title"],
                category=entry["category"],
                severity=entry["severity"],
                description=entry["description"],
                runbook=entry["runbook"],
                retryable=entry["retryable"],
                http_status=entry["http_status"],
                signatures=tuple(signatures),
                lifecycle=entry["lifecycle"],
                aliases=tuple(entry.get("aliases") or ()),
                ci_behavior=entry.get("ci_behavior"),
                max_attempts=entry.get("max_attempts"),
                owner=entry.get("owner"),
                fallback=bool(entry.get("fallback", False)),
                replaced_by=entry.get("replaced_by"),
                family=entry["family"],
                priority=entry.get("priority", 0),
                examples=tuple(entry.get("examples") or ()),
                line=line,
            )
        )

    problems.extend(_cross_checks(modes, source))
    problems.sort(key=lambda p: p.line or 0)
    if problems:
        return None, problems
    return Registry(tuple(modes), path=source), []


def _cross_checks(modes: list[FailureMode], source: str) -> list[Problem]:
    problems: list[Problem] = []
    by_code = {m.code: m for m in modes}
    alias_owner: dict[str, str] = {}
    for mode in modes:
        for alias in mode.aliases:
            if alias in by_code:
                problems.append(Problem(source, mode.line, mode.code, f"alias {alias} is also a code"))
            elif alias in alias_owner:
                problems.append(
                    Problem(source, mode.line, mode.code, f"alias {alias} already belongs to {alias_owner[alias]}")
                )
            alias_owner.setdefault(alias, mode.code)
        if mode.replaced_by:
            target = by_code.get(mode.replaced_by)
            if target is None:
                problems.append(
                    Problem(source, mode.line, mode.code, f"replaced_by {mode.replaced_by} is not a known code")
                )
            elif not target.active:
                problems.append(
                    Problem(
                        source,
                        mode.line,
                        mode.code,
                        f"replaced_by {mode.replaced_by} is deprecated; point to an active code",
                    )
                )
        if mode.active and mode.replaced_by:
            problems.append(Problem(source, mode.line, mode.code, "an active code cannot have replaced_by"))
        if mode.fallback and mode.signatures:
            problems.append(Problem(source, mode.line, mode.code, "the fallback code must have no signatures"))
        if mode.fallback and mode.family != FALLBACK_FAMILY:
            problems.append(
                Problem(source, mode.line, mode.code, f"the fallback code's family must be {FALLBACK_FAMILY}")
            )
        if not mode.fallback and mode.family == FALLBACK_FAMILY:
            problems.append(
                Problem(
                    source,
                    mode.line,
                    mode.code,
                    f"family {FALLBACK_FAMILY} is the fallback's; pick one of the families",
                )
            )
        if mode.active and not mode.fallback and not mode.signatures:
            problems.append(Problem(source, mode.line, mode.code, "an active code needs at least one signature"))
    fallbacks = [m for m in modes if m.fallback and m.active]
    if modes and len(fallbacks) != 1:
        names = ", ".join(m.code for m in fallbacks) or "none"
        problems.append(
            Problem(source, None, None, f"exactly one active entry must have fallback: true (found {names})")
        )
    return problems


def load_registry(path: str | Path | None = None) -> Registry:
    """Load and validate a registry file; raise :class:`RegistryError` listing every problem."""
    file = config.registry_path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise RegistryError([Problem(str(file), None, None, f"cannot read registry: {exc.strerror}")]) from None
    except UnicodeDecodeError as exc:
        reason = f"cannot read registry: not UTF-8 text ({exc.reason} at byte {exc.start})"
        raise RegistryError([Problem(str(file), None, None, reason)]) from None
    registry, problems = parse_registry(text, source=str(file))
    if registry is None:
        raise RegistryError(problems)
    return registry


@lru_cache(maxsize=4)
def _cached(path: str, mtime_ns: int) -> Registry:
    return load_registry(path)


def default_registry(path: str | Path | None = None) -> Registry:
    """The registry at ``path`` (or the configured one), re-read when the file changes."""
    file = config.registry_path(path)
    return _cached(str(file), file.stat().st_mtime_ns)
