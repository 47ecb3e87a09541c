"""Pull-request gates: small, pure checks that say what is wrong and where.

Each gate returns a :class:`GateResult` listing every problem at once (a CI
run that stops at the first problem costs a push per problem). Problem
messages are phrased so the registry signatures of the gate's failure code
match them: a failed gate's log, ingested from GitHub Actions, classifies as
that code.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from ipai_ops import config
from ipai_ops._yaml import load_with_lines as load_yaml_with_lines
from ipai_ops._yaml import parse_error, schema_errors
from ipai_ops.registry import Registry

EVIDENCE_SECTIONS = ("CONTEXT", "CHANGES", "EVIDENCE", "DIFF SUMMARY")
OPTIONAL_SECTIONS = ("ROLLBACK",)


@dataclass(frozen=True)
class GateProblem:
    file: str
    line: int | None
    message: str

    def format(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.message}"

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "message": self.message}


@dataclass(frozen=True)
class GateResult:
    gate: str
    failure_code: str
    subject: str
    problems: list[GateProblem]
    #: Gate-specific facts for machines (sections found, codes claimed, records checked).
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {
            "gate": self.gate,
            "ok": self.ok,
            "failure_code": None if self.ok else self.failure_code,
            "subject": self.subject,
            "problems": [p.as_dict() for p in self.problems],
            **self.facts,
        }


# --------------------------------------------------------------------------- evidence block

# A section header is its own line: ``[EVIDENCE]``, optionally as a markdown heading
# (``## [EVIDENCE]``) or bold (``**[EVIDENCE]**``); text after it on the line is content.
_HEADER_RE = re.compile(
    r"^[ \t]{0,3}(?:#{1,6}[ \t]+)?(?:\*\*|__)?\[(?P<name>[A-Z][A-Z ]*[A-Z])\](?:\*\*|__)?:?(?P<rest>.*)$"
)
_COMMENT_RE = re.compile(r"<!--.*?-->", re.S)
_KNOWN = set(EVIDENCE_SECTIONS) | set(OPTIONAL_SECTIONS)


@dataclass(frozen=True)
class _Section:
    name: str
    line: int
    content: str


def _sections(text: str) -> list[_Section]:
    # Blank out HTML comments but keep their newlines so line numbers stay true:
    # PR templates put their instructions in comments, which are not evidence.
    text = _COMMENT_RE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    found: list[_Section] = []
    current: tuple[str, int, list[str]] | None = None
    in_fence = False
    for number, line in enumerate(text.splitlines(), start=1):
        if line.lstrip().startswith(("```", "~~~")):
            in_fence = not in_fence
        match = None if in_fence else _HEADER_RE.match(line)
        if match and match.group("name") in _KNOWN:
            if current:
                found.append(_Section(current[0], current[1], "\n".join(current[2]).strip()))
            current = (match.group("name"), number, [match.group("rest")])
        elif current:
            current[2].append(line)
    if current:
        found.append(_Section(current[0], current[1], "\n".join(current[2]).strip()))
    return found


def check_evidence_block(text: str, *, source: str = "<body>") -> GateResult:
    """[CONTEXT], [CHANGES], [EVIDENCE], [DIFF SUMMARY] present, in that order, each non-empty."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    sections = _sections(text)
    problems: list[GateProblem] = []
    first_seen: dict[str, _Section] = {}
    for section in sections:
        if section.name in first_seen:
            problems.append(
                GateProblem(
                    source,
                    section.line,
                    f"[{section.name}] appears twice (first at line {first_seen[section.name].line})",
                )
            )
            continue
        first_seen[section.name] = section
    for name in EVIDENCE_SECTIONS:
        if name not in first_seen:
            problems.append(GateProblem(source, None, f"missing section [{name}]"))
        elif not first_seen[name].content:
            problems.append(GateProblem(source, first_seen[name].line, f"[{name}] is empty"))
    # Order: every required section present must come after the previous present one.
    previous: _Section | None = None
    for name in EVIDENCE_SECTIONS:
        section = first_seen.get(name)
        if section is None:
            continue
        if previous is not None and section.line < previous.line:
            problems.append(
                GateProblem(
                    source,
                    section.line,
                    f"[{name}] is out of order: it must come after [{previous.name}] (line {previous.line})",
                )
            )
        else:
            previous = section
    problems.sort(key=lambda p: p.line or 0)
    return GateResult(
        gate="evidence-block",
        failure_code="CI.EVIDENCE_BLOCK_INVALID",
        subject=source,
        problems=problems,
        facts={"sections": [{"name": s.name, "line": s.line, "empty": not s.content} for s in sections]},
    )


# --------------------------------------------------------------------------- resolution reference

# "fix(CODE)", "fix(CODE):", "fixes CODE", "Resolves: CODE", "closes CODE".
_CODE = r"[A-Za-z][A-Za-z0-9_]*(?:\.[A-Za-z][A-Za-z0-9_]*)+"
_CLAIM_TEXT_RE = re.compile(
    rf"\b(?:fix(?:e[sd])?|resolve[sd]?|close[sd]?)\b(?:\((?P<scoped>{_CODE})\)|:?[ \t]+`?(?P<code>{_CODE})`?)",
    re.I,
)
# Branches: fix/CODE-slug, fix/CODE_slug, fix-CODE, bugfix/code-slug (case-insensitive).
_CLAIM_BRANCH_RE = re.compile(rf"(?:^|/)(?:bug)?fix(?:es)?[/_-](?P<code>{_CODE})", re.I)
# docs/resolutions/YYYY/MM/<YYYY-MM-DD>_<CODE>_<slug>.md; codes hold "_", so the code is
# recognised by prefix against each claimed code rather than by splitting on "_".
_RECORD_RE = re.compile(
    r"docs/resolutions/(?P<y>\d{4})/(?P<m>\d{2})/(?P<date>\d{4}-\d{2}-\d{2})_(?P<rest>[A-Za-z0-9._-]+)\.md"
)
_FRONT_MATTER_RE = re.compile(r"\A---\n(.*?)\n---\n", re.S)


@dataclass(frozen=True)
class PullRequestText:
    title: str = ""
    body: str = ""
    branch: str = ""
    number: int | None = None

    @classmethod
    def from_event(cls, event: dict[str, Any]) -> PullRequestText:
        """From a GitHub ``pull_request`` event payload (``$GITHUB_EVENT_PATH``)."""
        pr = event.get("pull_request") or {}
        return cls(
            title=pr.get("title") or "",
            body=pr.get("body") or "",
            branch=(pr.get("head") or {}).get("ref") or "",
            number=pr.get("number"),
        )


def _claimed_codes(pr: PullRequestText, registry: Registry) -> tuple[dict[str, list[str]], list[str]]:
    """Codes the PR says it fixes -> where it says so; and code-shaped words ignored.

    Only codes the registry knows count: "fixes README.MD" has a code's shape but
    claims nothing.
    """
    claims: dict[str, list[str]] = {}
    ignored: list[str] = []

    def add(raw: str, where: str) -> None:
        mode = registry.get(raw) or registry.get(raw.upper())
        if mode is None:
            if raw not in ignored:
                ignored.append(raw)
            return
        places = claims.setdefault(mode.code, [])
        if where not in places:
            places.append(where)

    for where, text in (("title", pr.title), ("body", pr.body)):
        for match in _CLAIM_TEXT_RE.finditer(text or ""):
            add(match.group("scoped") or match.group("code"), where)
    if pr.branch:
        match = _CLAIM_BRANCH_RE.search(pr.branch)
        if match:
            # Branch names use "-" (or "_") as a word separator: the code ends at the first
            # "-"; trailing "_words" are dropped until the registry knows the code.
            candidate = match.group("code").split("-")[0]
            while (
                not (registry.get(candidate) or registry.get(candidate.upper())) and "_" in candidate.rsplit(".", 1)[-1]
            ):
                candidate = candidate.rsplit("_", 1)[0]
            add(candidate, "branch")
    return claims, ignored


def _record_names_code(text: str, code: str) -> tuple[bool, str | None]:
    """Does a resolution record name ``code``? Front matter ``code:`` decides when present."""
    text = text.replace("\r\n", "\n")
    match = _FRONT_MATTER_RE.match(text)
    if match:
        try:
            meta = yaml.safe_load(match.group(1))
        except yaml.YAMLError:
            meta = None
        if isinstance(meta, dict) and meta.get("code") is not None:
            named = str(meta["code"]).strip()
            return named == code, named
    return re.search(rf"(?<![\w.]){re.escape(code)}(?![\w.])", text) is not None, None


def check_resolution_ref(pr: PullRequestText, *, registry: Registry, repo_root: Path) -> GateResult:
    """A PR claiming to fix CODE references an existing resolution record that names CODE."""
    claims, ignored = _claimed_codes(pr, registry)
    refs = []
    seen_paths: set[str] = set()
    for where, text in (("title", pr.title), ("body", pr.body)):
        for match in _RECORD_RE.finditer(text or ""):
            if match.group(0) not in seen_paths:
                seen_paths.add(match.group(0))
                refs.append((where, match))
    problems: list[GateProblem] = []
    records: list[dict[str, Any]] = []
    subject = f"PR #{pr.number}" if pr.number else "pull request"
    for code, places in claims.items():
        candidates = [
            (w, m) for w, m in refs if m.group("rest").startswith(f"{code}_") and len(m.group("rest")) > len(code) + 1
        ]
        said = " and ".join(places)
        if not candidates:
            problems.append(
                GateProblem(
                    subject,
                    None,
                    f"resolution record missing for {code}: the {said} says it fixes {code}, so reference "
                    f"docs/resolutions/YYYY/MM/<YYYY-MM-DD>_{code}_<slug>.md in the PR body",
                )
            )
            continue
        for _where, match in candidates:
            path = match.group(0)
            record = {"code": code, "path": path, "exists": False, "names_code": False}
            records.append(record)
            try:
                day = date.fromisoformat(match.group("date"))
            except ValueError:
                problems.append(
                    GateProblem(
                        path,
                        None,
                        f"resolution record path has an invalid date {match.group('date')}",
                    )
                )
                continue
            if (match.group("y"), match.group("m")) != (f"{day.year:04d}", f"{day.month:02d}"):
                problems.append(
                    GateProblem(
                        path,
                        None,
                        f"resolution record is filed under {match.group('y')}/{match.group('m')} but dated "
                        f"{day.isoformat()}; move it to docs/resolutions/{day.year:04d}/{day.month:02d}/",
                    )
                )
                continue
            file = repo_root / path
            if not file.is_file():
                problems.append(
                    GateProblem(
                        path,
                        None,
                        f"resolution record not found: {path} does not exist in this branch",
                    )
                )
                continue
            record["exists"] = True
            names, named = _record_names_code(file.read_text(encoding="utf-8", errors="replace"), code)
            if not names:
                detail = f"its front matter says code: {named}" if named else f"it never mentions {code}"
                problems.append(GateProblem(path, 1, f"resolution record for {code} is invalid: {detail}"))
                continue
            record["names_code"] = True
    return GateResult(
        gate="resolution-ref",
        failure_code="CI.RESOLUTION_REF_MISSING",
        subject=subject,
        problems=problems,
        facts={
            "claimed_codes": dict(claims),
            "ignored_code_like": ignored,
            "records": records,
        },
    )


# --------------------------------------------------------------------------- DNS placeholders

#: ``<SERVER_IP>``, ``<dkim public key>``: angle brackets around a name, as templates write them.
PLACEHOLDER_RE = re.compile(r"<[^<>\n]{1,80}>")


@lru_cache(maxsize=1)
def _dns_schema() -> dict[str, Any]:
    path = config.data_path("ssot", "schemas", "dns_registry.schema.json")
    return json.loads(path.read_text(encoding="utf-8"))


def _walk_strings(value: Any, path: tuple[str, ...] = ()) -> Iterable[tuple[str, str]]:
    if isinstance(value, str):
        yield ".".join(path), value
    elif isinstance(value, dict):
        for key, item in value.items():
            if key != "__line__":
                yield from _walk_strings(item, (*path, str(key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _walk_strings(item, (*path, str(index)))


def _record_label(record: dict[str, Any]) -> str:
    name = str(record.get("name", "?"))
    zone = record.get("zone")
    if zone:
        name = str(zone) if name == "@" else f"{name}.{zone}"
    return f"{name} {record.get('type', '?')}"


def check_dns_placeholders(text: str, *, source: str) -> GateResult:
    """No ``lifecycle: active`` record may hold a ``<...>`` placeholder in any field."""
    problems: list[GateProblem] = []
    try:
        doc = load_yaml_with_lines(text)
    except yaml.YAMLError as exc:
        problems.append(GateProblem(source, *parse_error(exc)))
        return GateResult("dns-placeholders", "DNS.PLACEHOLDER_ACTIVE", source, problems)
    validator = jsonschema.Draft202012Validator(_dns_schema())
    problems += [GateProblem(source, line, message) for line, message in schema_errors(validator, doc)]
    records = doc.get("records") if isinstance(doc, dict) else None
    active = 0
    for record in records if isinstance(records, list) else ():
        if not isinstance(record, dict) or record.get("lifecycle") != "active":
            continue
        active += 1
        for field_path, value in _walk_strings(record):
            for match in PLACEHOLDER_RE.finditer(value):
                problems.append(
                    GateProblem(
                        source,
                        record.get("__line__"),
                        f"record {_record_label(record)} is active but {field_path} holds placeholder "
                        f"{match.group(0)}: publish the real value or set lifecycle: planned",
                    )
                )
    problems.sort(key=lambda p: p.line or 0)
    return GateResult(
        "dns-placeholders",
        "DNS.PLACEHOLDER_ACTIVE",
        source,
        problems,
        facts={"records": len(records) if isinstance(records, list) else 0, "active": active},
    )
