"""Resolution records: the ``docs/resolutions/`` markdown format, read and written losslessly.

A record is YAML front matter (every value a string or a list of strings: read with
PyYAML's ``BaseLoader``, so ``1.10`` stays ``"1.10"`` and ``2026-11-22`` stays a string),
a ``# <CODE>: <title>`` heading and the template's sections in a fixed order, each body
kept verbatim. :func:`dumps` writes the one canonical form and :func:`loads` reads it
back: ``loads(dumps(r)) == r`` for every valid record and ``dumps(loads(t)) == t`` for
every canonical text (``docs/resolutions/_template.md`` is the format for people).

:func:`load_directory` reads a whole ``docs/resolutions`` tree for the Odoo sync: each
bad file (no front matter, unknown key or code, duplicate id, oversized, not canonical)
becomes one :class:`FileProblem`, and the other files are still returned.

Nothing here imports Odoo.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable
from datetime import date, datetime
from pathlib import Path

import yaml

__all__ = [
    "FRONT_KEYS",
    "MAX_FILE_BYTES",
    "SECTIONS",
    "FileProblem",
    "LoadedRecord",
    "Resolution",
    "ResolutionFormatError",
    "dumps",
    "load_directory",
    "loads",
]

#: A record larger than this is refused unread (the template filled in is ~3 KiB).
MAX_FILE_BYTES = 256 * 1024
STAGES = ("draft", "review", "done")
STATUSES = ("resolved", "mitigated")
#: Front matter keys in their canonical order.
FRONT_KEYS = (
    "id",
    "code",
    "stage",
    "status",
    "fingerprints",
    "pr",
    "resolved_in_version",
    "regression_test",
    "date",
    "author",
    "owner",
    "incident_start",
    "incident_end",
)
#: (heading, attribute) in the canonical order of ``docs/resolutions/_template.md``.
SECTIONS = (
    ("Summary", "summary"),
    ("Timeline (UTC)", "timeline"),
    ("Root cause", "root_cause"),
    ("Fix", "fix"),
    ("Evidence", "evidence"),
    ("Regression test", "regression_notes"),
    ("Follow-ups", "follow_ups"),
)
_HEADINGS = frozenset(f"## {name}" for name, _attr in SECTIONS)
# Same shape as the registry's code contract (ssot/schemas), so an id or code that passes
# here is one the Odoo failure modes can hold.
_CODE_RE = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z][A-Z0-9_]*)+$")
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
_DATETIME_FORMAT = "%Y-%m-%d %H:%M:%S"
_URL_RE = re.compile(r"^https?://\S+$")
_FRONT_RE = re.compile(r"\A---\n(.*?\n)?---\n", re.S)
# A value written plain (unquoted) must read back as the same string under BaseLoader:
# no leading indicator, no ": " or " #", no trailing ":" and nothing YAML folds.
_PLAIN_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-/+@=~]*(?::+[A-Za-z0-9_.\-/+@=~]+)*$")
# Characters a YAML double-quoted scalar must carry escaped: outside YAML's printable set,
# or line breaks YAML 1.1 would fold (NEL, LS, PS), or the BOM.
_YAML_UNSAFE_RE = re.compile("[^\x20-\x7e\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]|[\x85\u2028\u2029\ufeff]")


class ResolutionFormatError(ValueError):
    """A text that is not a resolution record (or a record that cannot be written)."""


@dataclasses.dataclass(frozen=True)
class Resolution:
    """One resolution record; every text is kept exactly (``""`` = empty)."""

    id: str
    code: str
    title: str
    stage: str = "done"
    status: str = "resolved"
    fingerprints: tuple[str, ...] = ()
    pr: str = ""
    resolved_in_version: str = ""
    regression_test: str = ""
    date: str = ""
    author: str = ""
    owner: str = ""
    incident_start: str = ""
    incident_end: str = ""
    summary: str = ""
    timeline: str = ""
    root_cause: str = ""
    fix: str = ""
    evidence: str = ""
    regression_notes: str = ""
    follow_ups: str = ""

    def problems(self) -> list[str]:
        """What keeps this record from being valid (empty when it is)."""
        out = []
        if not _ID_RE.match(self.id or ""):
            out.append(f"id {self.id!r} must be 1-200 letters, digits, '.', '_' or '-' (the file's name)")
        if not _CODE_RE.match(self.code or ""):
            out.append(f"code {self.code!r} is not a dotted failure code such as WEBHOOK.SIGNATURE_INVALID")
        if not self.title.strip() or "\n" in self.title or "\r" in self.title:
            out.append("the title (the '# CODE: title' heading) must be one non-empty line")
        elif self.code and self.title.startswith(f"{self.code}: "):
            out.append("the heading names the code once: '# CODE: title', not '# CODE: CODE: title'")
        if self.stage not in STAGES:
            out.append(f"stage {self.stage!r} is not one of {', '.join(STAGES)}")
        if self.status not in STATUSES:
            out.append(f"status {self.status!r} is not one of {', '.join(STATUSES)}")
        for fp in self.fingerprints:
            if not fp or fp != fp.strip() or any(c.isspace() for c in fp):
                out.append(f"fingerprint {fp!r} must be one word")
        if len(set(self.fingerprints)) != len(self.fingerprints):
            out.append("a fingerprint is listed twice")
        if self.pr and not _URL_RE.match(self.pr):
            out.append(f"pr {self.pr!r} must be an http(s) URL or empty")
        if self.date:
            try:
                date.fromisoformat(self.date)
                if len(self.date) != 10:
                    raise ValueError
            except ValueError:
                out.append(f"date {self.date!r} must be YYYY-MM-DD or empty")
        window = []
        for key in ("incident_start", "incident_end"):
            value = getattr(self, key)
            if value:
                try:
                    window.append(datetime.strptime(value, _DATETIME_FORMAT))
                except ValueError:
                    out.append(f"{key} {value!r} must be 'YYYY-MM-DD HH:MM:SS' (UTC) or empty")
        if len(window) == 2 and window[1] < window[0]:
            out.append("incident_end is before incident_start")
        for key in ("resolved_in_version", "regression_test", "author", "owner"):
            if "\n" in getattr(self, key) or "\r" in getattr(self, key):
                out.append(f"{key} must be one line")
        for name, attr in SECTIONS:
            body = getattr(self, attr)
            if "\r" in body:
                out.append(f"section {name!r} holds a carriage return (line ends are \\n)")
            clash = next((line for line in body.split("\n") if line.rstrip() in _HEADINGS), None)
            if clash is not None:
                out.append(f"section {name!r} holds the line {clash!r}, which starts a section of its own")
        return out


# --------------------------------------------------------------------------- writing


def _scalar(value: str) -> str:
    if _PLAIN_RE.match(value):
        return value
    text = json.dumps(value, ensure_ascii=False)
    return _YAML_UNSAFE_RE.sub(lambda m: f"\\u{ord(m.group()):04x}" if ord(m.group()) < 0x10000 else m.group(), text)


def dumps(record: Resolution) -> str:
    """The record's canonical markdown. Raises :class:`ResolutionFormatError` when invalid."""
    problems = record.problems()
    if problems:
        raise ResolutionFormatError("; ".join(problems))
    lines = ["---"]
    for key in FRONT_KEYS:
        if key == "fingerprints":
            if record.fingerprints:
                lines.append("fingerprints:")
                lines.extend(f"  - {_scalar(fp)}" for fp in record.fingerprints)
            else:
                lines.append("fingerprints: []")
            continue
        value = getattr(record, key)
        lines.append(f"{key}: {_scalar(value)}" if value else f'{key}: ""')
    lines += ["---", "", f"# {record.code}: {record.title}"]
    text = "\n".join(lines) + "\n"
    for name, attr in SECTIONS:
        body = getattr(record, attr)
        text += f"\n## {name}\n" + (f"\n{body}\n" if body else "")
    return text


# --------------------------------------------------------------------------- reading

_Loader = getattr(yaml, "CBaseLoader", yaml.BaseLoader)


def loads(text: str, *, source: str = "<text>") -> Resolution:
    """Parse one record. Raises :class:`ResolutionFormatError` naming ``source`` and the reason."""

    def fail(reason: str) -> ResolutionFormatError:
        return ResolutionFormatError(f"{source}: {reason}")

    match = _FRONT_RE.match(text)
    if not match:
        raise fail("no front matter: the file must start with a '---' line, the fields, and a closing '---' line")
    try:
        meta = yaml.load(match.group(1) or "", Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (front matter line {mark.line + 1})" if mark else ""
        raise fail(f"invalid YAML front matter{where}: {getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(meta, dict):
        raise fail("the front matter is not a mapping of fields")
    unknown = [key for key in meta if key not in FRONT_KEYS]
    if unknown:
        raise fail(f"unknown front matter field(s) {', '.join(map(str, unknown))}; known: {', '.join(FRONT_KEYS)}")
    missing = [key for key in ("id", "code") if not meta.get(key)]
    if missing:
        raise fail(f"front matter lacks {', '.join(missing)}")
    values: dict[str, object] = {}
    for key in FRONT_KEYS:
        value = meta.get(key, [] if key == "fingerprints" else "")
        if key == "fingerprints":
            if value == "":
                value = []
            if not isinstance(value, list) or not all(isinstance(fp, str) for fp in value):
                raise fail("fingerprints must be a list of strings ('fingerprints: []' when none)")
            values[key] = tuple(value)
        elif not isinstance(value, str):
            raise fail(f"{key} must be a single value, not a list or mapping")
        else:
            values[key] = value
    rest = text[match.end() :]
    heading_prefix = f"\n# {values['code']}: "
    if not rest.startswith(heading_prefix):
        raise fail(f"after the front matter comes a blank line and the heading '# {values['code']}: <title>'")
    end = rest.find("\n", len(heading_prefix))
    if end < 0:
        raise fail("the file ends after its heading; the sections are missing")
    values["title"] = rest[len(heading_prefix) : end]
    rest = rest[end + 1 :]
    for index, (name, attr) in enumerate(SECTIONS):
        marker = f"\n## {name}\n"
        if not rest.startswith(marker):
            found = [line for line in rest.split("\n") if line.startswith("## ")]
            raise fail(
                f"expected the section '## {name}' here (sections in the template's order: "
                f"{', '.join(n for n, _a in SECTIONS)}); found {found[0] if found else 'none'!r}"
            )
        rest = rest[len(marker) :]
        if index + 1 < len(SECTIONS):
            cut = rest.find(f"\n## {SECTIONS[index + 1][0]}\n")
            if cut < 0:
                raise fail(f"section '## {SECTIONS[index + 1][0]}' is missing")
            content, rest = rest[:cut], rest[cut:]
            stray = next((line for line in content.split("\n") if line in _HEADINGS), None)
            if stray is not None:
                raise fail(
                    f"'{stray}' is out of place: sections come in the template's order "
                    f"({', '.join(n for n, _a in SECTIONS)})"
                )
        else:
            content, rest = rest, ""
        if content == "":
            values[attr] = ""
        elif len(content) >= 2 and content.startswith("\n") and content.endswith("\n"):
            values[attr] = content[1:-1]
        else:
            raise fail(f"section '## {name}' must be separated by blank lines and the file end with a newline")
    record = Resolution(**values)  # type: ignore[arg-type]
    problems = record.problems()
    if problems:
        raise fail("; ".join(problems))
    return record


# --------------------------------------------------------------------------- a directory


@dataclasses.dataclass(frozen=True)
class FileProblem:
    path: str
    message: str

    def format(self) -> str:
        return f"{self.path}: {self.message}"


@dataclasses.dataclass(frozen=True)
class LoadedRecord:
    path: str
    record: Resolution
    text: str


def record_files(root: Path) -> list[Path]:
    """The record files under ``root``: ``*.md`` except ``_``-prefixed (the template), sorted."""
    return sorted(p for p in root.rglob("*.md") if not p.name.startswith("_") and p.is_file())


def load_directory(
    root: Path,
    *,
    known_codes: Iterable[str] | None = None,
    max_bytes: int = MAX_FILE_BYTES,
    relative_to: Path | None = None,
) -> tuple[list[LoadedRecord], list[FileProblem]]:
    """Every valid record under ``root`` and one problem per bad file; never raises for a file.

    ``known_codes``: when given, a record whose code is not among them is a problem.
    Records sharing an id are all refused (which one is right is for a person to say).
    A record that parses but is not in canonical form is refused too: importing it
    and writing it back would change the file.
    """
    base = relative_to or root
    codes = set(known_codes) if known_codes is not None else None
    loaded: list[LoadedRecord] = []
    problems: list[FileProblem] = []
    if not root.is_dir():
        return [], [FileProblem(str(root), "the resolutions directory does not exist")]
    for path in record_files(root):
        try:
            name = str(path.relative_to(base))
        except ValueError:
            name = str(path)
        try:
            size = path.stat().st_size
            if size > max_bytes:
                problems.append(FileProblem(name, f"{size} bytes is over the {max_bytes}-byte limit for a record"))
                continue
            with path.open("rb") as handle:
                raw = handle.read(max_bytes + 1)
        except OSError as exc:
            problems.append(FileProblem(name, f"cannot be read: {exc.strerror or exc}"))
            continue
        if len(raw) > max_bytes:
            problems.append(FileProblem(name, f"over the {max_bytes}-byte limit for a record"))
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            problems.append(FileProblem(name, f"not UTF-8 (byte {exc.start})"))
            continue
        try:
            record = loads(text, source=name)
        except ResolutionFormatError as exc:
            problems.append(FileProblem(name, str(exc).removeprefix(f"{name}: ")))
            continue
        if codes is not None and record.code not in codes:
            problems.append(FileProblem(name, f"unknown failure code {record.code}: it is not in the registry"))
            continue
        if dumps(record) != text:
            problems.append(
                FileProblem(
                    name,
                    "not in canonical form: written back it would change (no comments in the front matter, "
                    "fields in the template's order, values quoted only where YAML needs it; "
                    "docs/resolutions/_template.md shows the layout)",
                )
            )
            continue
        loaded.append(LoadedRecord(name, record, text))
    by_id: dict[str, list[LoadedRecord]] = {}
    for item in loaded:
        by_id.setdefault(item.record.id, []).append(item)
    kept = []
    for item in loaded:
        twins = by_id[item.record.id]
        if len(twins) > 1:
            others = ", ".join(t.path for t in twins if t is not item)
            problems.append(FileProblem(item.path, f"duplicate id {item.record.id}: also used by {others}"))
        else:
            kept.append(item)
    problems.sort(key=lambda p: p.path)
    return kept, problems
