"""Measuring classification on labelled corpora (``ipai-ops classify eval``).

A corpus is JSON Lines (one case per line) or a folder of ``*.jsonl`` files; the format
is documented in ``tests/classify/corpus/README.md``:

* ``text`` or ``file`` (a path relative to the JSONL file's folder): what to classify;
* ``code`` and/or ``family`` (aliases ``expected_code``, ``expected_family``): the right
  answer; family ``none`` marks a text that belongs to no code (the fallback is right);
* ``evidence`` (alias ``evidence_lines``): 1-based line numbers a person would point at;
* ``id``, ``kind``, ``ecosystem``, ``source``, ``licence``: descriptive.

Figures: coverage (share of failure cases given a code other than the fallback), family
accuracy, code accuracy (where a code is labelled), fallback rate, false positives (share
of ``none`` cases pushed into a code), per-family precision and recall, a confusion table,
and the evidence hit rate (share of cases with labelled lines where the answer's evidence
includes one of them). Figures are given for the whole corpus and per split: a case's
split (``dev`` or ``holdout``) is a hash of its source repository, so all cases of one
project land in the same split, and signatures are written looking at ``dev`` only.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ipai_ops.classify import LogUnreadable, classify, read_file, read_text
from ipai_ops.registry import FALLBACK_FAMILY, FAMILIES, Registry

NONE = "none"
#: Share of source repositories whose cases form the holdout split.
HOLDOUT_BUCKETS = 64  # of 256: a quarter
_REPO_RE = re.compile(r"github\.com/([^/\s]+/[^/\s#?]+)")
#: A corpus file may not be larger than this; a case's text file is streamed (any size).
MAX_CORPUS_BYTES = 64 * 1024 * 1024


class CorpusError(ValueError):
    """The corpus cannot be used; ``problems`` holds one ``file:line: reason`` per bad case."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems[:3]) + (f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""))


@dataclass(frozen=True)
class Case:
    id: str
    family: str
    code: str | None
    text: str | None
    file: Path | None
    evidence: tuple[int, ...]
    kind: str
    ecosystem: str
    source: str
    where: str
    #: ``dev``, ``holdout``, or a split named by the case (``check``: collected after the
    #: signatures were written, measured once); None = by source repository.
    declared_split: str | None = None

    @property
    def split(self) -> str:
        return self.declared_split or split_of(self.source)


def split_of(source: str) -> str:
    """``holdout`` or ``dev``: a hash of the source's repository (``owner/name``), else of the source."""
    match = _REPO_RE.search(source or "")
    key = (match.group(1).lower().removesuffix(".git") if match else (source or "")).encode()
    return "holdout" if hashlib.sha256(key).digest()[0] < HOLDOUT_BUCKETS else "dev"


def _first(raw: dict[str, Any], *names: str) -> Any:
    for name in names:
        if raw.get(name) not in (None, ""):
            return raw[name]
    return None


def corpus_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(path.glob("*.jsonl"))
        if not files:
            raise CorpusError([f"{path}: no *.jsonl files in this folder"])
        return files
    if not path.exists():
        raise CorpusError([f"{path}: no such file or folder"])
    return [path]


def load_corpus(path: str | Path, registry: Registry) -> list[Case]:
    """Every case of a corpus file or folder; :class:`CorpusError` lists every bad line."""
    cases: list[Case] = []
    problems: list[str] = []
    seen: set[str] = set()
    for file in corpus_files(Path(path)):
        try:
            if file.stat().st_size > MAX_CORPUS_BYTES:
                problems.append(f"{file}: larger than {MAX_CORPUS_BYTES // (1024 * 1024)} MiB; split it")
                continue
            lines = file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(f"{file}: cannot read: {getattr(exc, 'strerror', None) or exc}")
            continue
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{file}:{number}"
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as exc:
                problems.append(f"{where}: not JSON: {exc.msg}")
                continue
            if not isinstance(raw, dict):
                problems.append(f"{where}: a case must be a JSON object")
                continue
            case, problem = _case(raw, file, where, registry)
            if problem:
                problems.append(f"{where}: {problem}")
                continue
            assert case is not None
            if case.id in seen:
                problems.append(f"{where}: duplicate id {case.id!r}")
                continue
            seen.add(case.id)
            cases.append(case)
    if problems:
        raise CorpusError(problems)
    if not cases:
        raise CorpusError([f"{path}: no cases"])
    return cases


def _case(raw: dict[str, Any], file: Path, where: str, registry: Registry) -> tuple[Case | None, str | None]:
    text = raw.get("text")
    rel = raw.get("file")
    if (text is None) == (rel is None):
        return None, "give exactly one of 'text' and 'file'"
    if text is not None and not isinstance(text, str):
        return None, "'text' must be a string"
    path = None
    if rel is not None:
        if not isinstance(rel, str) or not rel:
            return None, "'file' must be a path"
        path = (file.parent / rel).resolve()
        if not path.is_file():
            return None, f"file {rel} does not exist"
    code = _first(raw, "code", "expected_code")
    family = _first(raw, "family", "expected_family")
    if code is not None:
        if not isinstance(code, str) or registry.get(code) is None:
            return None, f"code {code!r} is not in the registry"
        mode = registry[code]
        if not mode.active and mode.replaced_by:
            mode = registry[mode.replaced_by]
        code = mode.code
        if family is None:
            family = NONE if mode.fallback else mode.family
    if family is None:
        return None, "give 'family' or 'code' (the expected answer)"
    if family not in (*FAMILIES, NONE):
        return None, f"family {family!r} is not one of {', '.join((*FAMILIES, NONE))}"
    evidence = _first(raw, "evidence", "evidence_lines") or []
    if not isinstance(evidence, list) or not all(isinstance(n, int) and n >= 1 for n in evidence):
        return None, "'evidence' must be a list of 1-based line numbers"
    case_id = str(raw.get("id") or where)
    return (
        Case(
            id=case_id,
            family=family,
            code=code,
            text=text,
            file=path,
            evidence=tuple(evidence),
            kind=str(raw.get("kind") or ""),
            ecosystem=str(raw.get("ecosystem") or ""),
            source=str(raw.get("source") or ""),
            where=where,
            declared_split=str(raw["split"]) if raw.get("split") else None,
        ),
        None,
    )


# --------------------------------------------------------------------------- running


@dataclass
class Outcome:
    case: Case
    code: str
    family: str
    matched_by: str
    lines: tuple[int, ...]
    headline: str | None
    seconds: float
    error: str | None = None

    @property
    def predicted_family(self) -> str:
        return NONE if self.family == FALLBACK_FAMILY else self.family

    @property
    def family_right(self) -> bool:
        return self.predicted_family == self.case.family

    @property
    def code_right(self) -> bool | None:
        if self.case.code is None:
            return None
        return self.code == self.case.code

    @property
    def evidence_hit(self) -> bool | None:
        if not self.case.evidence:
            return None
        return bool(set(self.lines) & set(self.case.evidence))


def run_case(registry: Registry, case: Case, model: Any = None) -> Outcome:
    """One case, by the signatures alone (``model`` None) or with the learned layer."""
    started = time.perf_counter()
    try:
        log = read_file(case.file) if case.file is not None else read_text(case.text or "")
    except (OSError, LogUnreadable) as exc:
        fallback = registry.fallback
        return Outcome(case, fallback.code, fallback.family, "fallback", (), None, 0.0, error=str(exc))
    result = classify(registry, log=log, model=model)
    lines = tuple(e.line for e in result.evidence if e.line is not None)
    return Outcome(
        case,
        result.code,
        result.family,
        result.matched_by,
        lines,
        result.headline,
        time.perf_counter() - started,
    )


def run(registry: Registry, cases: list[Case], model: Any = None) -> list[Outcome]:
    return [run_case(registry, case, model) for case in cases]


# --------------------------------------------------------------------------- figures


def _ratio(num: int, den: int) -> float | None:
    return round(num / den, 4) if den else None


@dataclass
class Figures:
    cases: int
    failures: int
    none_cases: int
    coverage: float | None
    family_accuracy: float | None
    code_accuracy: float | None
    code_cases: int
    fallback_rate: float | None
    false_positive_rate: float | None
    evidence_hit_rate: float | None
    evidence_cases: int
    per_family: dict[str, dict[str, Any]] = field(default_factory=dict)
    confusion: dict[str, dict[str, int]] = field(default_factory=dict)
    mean_ms: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def figures(outcomes: list[Outcome]) -> Figures:
    failures = [o for o in outcomes if o.case.family != NONE]
    nones = [o for o in outcomes if o.case.family == NONE]
    coded = [o for o in outcomes if o.case.code is not None]
    with_evidence = [o for o in outcomes if o.case.evidence]
    confusion: dict[str, Counter[str]] = defaultdict(Counter)
    for o in outcomes:
        confusion[o.case.family][o.predicted_family] += 1
    per_family: dict[str, dict[str, Any]] = {}
    for family in sorted({o.case.family for o in outcomes} | {o.predicted_family for o in outcomes}):
        true_pos = sum(1 for o in outcomes if o.case.family == family and o.predicted_family == family)
        predicted = sum(1 for o in outcomes if o.predicted_family == family)
        actual = sum(1 for o in outcomes if o.case.family == family)
        per_family[family] = {
            "cases": actual,
            "precision": _ratio(true_pos, predicted),
            "recall": _ratio(true_pos, actual),
        }
    timed = [o.seconds for o in outcomes if o.error is None]
    return Figures(
        cases=len(outcomes),
        failures=len(failures),
        none_cases=len(nones),
        coverage=_ratio(sum(1 for o in failures if o.matched_by != "fallback"), len(failures)),
        family_accuracy=_ratio(sum(1 for o in failures if o.family_right), len(failures)),
        code_accuracy=_ratio(sum(1 for o in coded if o.code_right), len(coded)),
        code_cases=len(coded),
        fallback_rate=_ratio(sum(1 for o in failures if o.matched_by == "fallback"), len(failures)),
        false_positive_rate=_ratio(sum(1 for o in nones if o.matched_by != "fallback"), len(nones)),
        evidence_hit_rate=_ratio(sum(1 for o in with_evidence if o.evidence_hit), len(with_evidence)),
        evidence_cases=len(with_evidence),
        per_family=per_family,
        confusion={k: dict(v) for k, v in sorted(confusion.items())},
        mean_ms=round(1000 * sum(timed) / len(timed), 3) if timed else None,
    )


def groups(outcomes: list[Outcome]) -> Iterator[tuple[str, list[Outcome]]]:
    """The whole corpus, then each split, then each kind group (CI logs vs ops/agent texts)."""
    yield "all", outcomes
    for split in ("dev", "holdout", "check"):
        part = [o for o in outcomes if o.case.split == split]
        if part:
            yield split, part
    logs = [o for o in outcomes if o.case.kind in ("ci_log", "tool_output")]
    ops = [o for o in outcomes if o.case.kind in ("ops", "agent")]
    if logs:
        yield "ci_logs", logs
    if ops:
        yield "ops_agent", ops
