"""One matching model: the registry compiled into linear-time multi-pattern matchers.

Every signature is compiled with RE2 twice: into one ``re2.Set`` per subject (a single
linear scan answers "which of the N patterns occur in this text", whatever N is) and on its
own (to find where the patterns the set reported occur). Cost grows with the length of
the text, not with the number of codes.

Subjects (``ssot/errors/error_codes.md``, "Signatures"):

* ``type`` signatures see the error type given, and the type of every ``Type: message``
  line of a message or log;
* ``message`` signatures see the message given, and every line of a log (``^``/``$``
  anchor lines);
* ``text`` signatures see the message and the log, each as a whole;
* ``command`` signatures see the commands a CI log shows failing.

Precedence (specificity on a line, root cause across lines by :data:`FAMILY_RANK`, the
failed command last) is specified in ``ssot/errors/error_codes.md``, section 5; the code
below says where each rule is applied.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import re2

from ipai_ops.classify import reading
from ipai_ops.classify.reading import Log
from ipai_ops.classify.result import (
    MAX_CAPTURE_CHARS,
    MAX_CAPTURE_VALUES,
    MAX_EVIDENCE_CHARS,
    MAX_EVIDENCE_LINES,
    Classification,
    EvidenceLine,
)
from ipai_ops.registry import FailureMode, Registry, Signature, capture_name, inline_flags
from ipai_ops.text import re2_options

#: Root-cause order of the families: when failures of several families co-occur in a log,
#: the higher rank is the cause and the others its consequences (error_codes.md).
FAMILY_RANK: dict[str, int] = {
    "infrastructure": 90,
    "timeout": 85,
    "resource": 80,
    "config": 70,
    "dependency": 60,
    "compile": 50,
    "lint": 45,
    "test": 40,
    "auth": 35,
    "permission": 33,
    "network": 30,
    "data": 25,
    "provider": 25,
    "runtime": 20,
    "unknown": 0,
}
#: A signature with this priority or lower marks a consequence line (rule 3).
CONSEQUENCE_PRIORITY = -10
#: Subjects whose patterns see one item per line (``^``/``$`` anchor lines).
_LINE_SUBJECTS = ("type", "message", "command")
_SUBJECT_WEIGHT = {"type": 3, "message": 2, "text": 2, "command": 0}
#: At most this many matches of one pattern are kept (the last ones), and this many looked at.
_MAX_MATCHES_PER_PATTERN = 64
_MAX_SCANNED_PER_PATTERN = 2000


def literal_length(pattern: str) -> int:
    """How many literal characters a pattern requires: its specificity among equals."""
    try:
        from re import _parser as sre_parse  # Python 3.11+
    except ImportError:  # pragma: no cover - Python 3.10
        import sre_parse  # type: ignore[no-redef]
    try:
        parsed = sre_parse.parse(pattern.replace(r"\z", r"\Z"))
    except (re.error, OverflowError, RecursionError):
        return sum(ch.isalnum() for ch in pattern)
    return _literals(parsed)


def _literals(items: Any) -> int:
    total = 0
    for op, arg in items:
        name = str(op)
        if name == "LITERAL":
            total += 1
        elif name == "SUBPATTERN":
            total += _literals(arg[-1])
        elif name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            low, _high, sub = arg
            if low:
                total += min(low, 3) * _literals(sub)
        elif name == "BRANCH":
            total += min((_literals(branch) for branch in arg[1]), default=0)
    return total


@dataclass(eq=False)
class _Sig:
    """A registry signature compiled for bytes, with what ranking needs.

    The pattern is compiled (and its literal length parsed) on first use: most signatures
    never match a given stream, and loading stays fast with hundreds of them.
    """

    index: int
    mode: FailureMode
    signature: Signature
    priority: int
    depth: int
    subject: str

    @cached_property
    def regex(self) -> Any:
        # Relaxed (see relaxed()): RE2 stays linear, and its DFA small enough not to fall
        # back to the NFA on large bounded repeats.
        pattern = inline_flags(relaxed(self.signature.pattern), self.signature.flags)
        if self.subject in _LINE_SUBJECTS:
            pattern = "(?m)" + pattern
        return re2.compile(pattern.encode("utf-8"), re2_options())

    @cached_property
    def literal(self) -> int:
        return literal_length(self.signature.pattern)


@dataclass
class _Candidate:
    sig: _Sig
    #: Line index in the log, or -1 for the error given as type/message.
    line: int
    offset: int
    end: int
    origin: str  # "log", "message", "type", "types", "command"
    groups: dict[str, str]
    #: For a command candidate: 2 when a build tool's marker named it, 1 for the CI step.
    precision: int = 0


_BOUNDED_REPEAT_RE = re.compile(r"(?<!\\)\{(\d+),(\d+)\}")
#: RE2 memory budget for one subject's set (the DFA caches states within it). A budget,
#: not an allocation: at 64 MiB a 300-code registry reading 26 MiB of varied CI logs reset
#: its DFA cache over and over (4.3x the 50-code cost per byte); at 128 MiB, 1.5x, for
#: about 6 MB more peak RSS (benchmarks/classify_speed.py, figure c).
_SET_MAX_MEM = 128 << 20


def relaxed(pattern: str) -> str:
    """``pattern`` with large bounded repeats (``{1,300}``) made open (``{1,}``).

    The bounds keep a backtracking engine linear; RE2 needs none, and unrolling them
    makes a set of hundreds of patterns too big to compile. The relaxed pattern matches
    a superset of the original, so the set only proposes candidates: each is confirmed
    with its exact pattern.
    """
    return _BOUNDED_REPEAT_RE.sub(lambda m: m.group(0) if int(m.group(2)) <= 16 else f"{{{m.group(1)},}}", pattern)


@dataclass
class _Scan:
    """The signatures one subject's set scan found, and how to place their matches."""

    subject: str
    data: bytes
    origin: str
    sigs: list[_Sig]
    #: For exception types read from a log: (offset in the log, type) of each joined line.
    types: list[tuple[int, bytes]] | None = None
    marker: Any = None
    command: str | None = None

    def place(self, cand: _Candidate, log: Log | None) -> None:
        if self.origin == "command":
            cand.line = self.marker.index
            cand.groups.setdefault("command", self.command or "")
            cand.precision = 2 if self.marker.kind == "tool" else 1
        elif self.types is not None and log is not None:
            position = bisect_index(_starts(self.types), cand.offset)
            cand.offset = self.types[position][0]
            cand.line = log.index_at(cand.offset)
        elif self.origin == "log" and log is not None:
            cand.line = log.index_at(cand.offset)

    @property
    def indexes(self) -> frozenset[int]:
        return frozenset(sig.index for sig in self.sigs)


class _SubjectSet:
    """One ``re2.Set`` over every signature of one subject (relaxed patterns, see :func:`relaxed`)."""

    def __init__(self, sigs: list[_Sig]) -> None:
        self.sigs = sigs
        self.global_index = [sig.index for sig in sigs]
        options = re2_options()
        options.max_mem = _SET_MAX_MEM
        self.set = re2.Set.SearchSet(options)
        for sig in sigs:
            pattern = inline_flags(relaxed(sig.signature.pattern), sig.signature.flags)
            if sig.subject in _LINE_SUBJECTS:
                pattern = "(?m)" + pattern
            self.set.Add(pattern.encode("utf-8"))
        self.set.Compile()

    def match(self, data: bytes) -> list[_Sig]:
        if not data or not self.sigs:
            return []
        return [self.sigs[i] for i in self.set.Match(data) or ()]

    def indexes(self, data: bytes, into: list[int]) -> None:
        """Append the registry-wide index of every signature found in ``data``."""
        if data and self.sigs:
            found = self.set.Match(data)
            if found:
                into += map(self.global_index.__getitem__, found)


def _spans(log: Log | None, data: bytes) -> list[tuple[int, int]]:
    """Byte ranges of the failure region(s) (plus annotated lines), or the whole text."""
    if log is None or not log.region or data is not log.data:
        return [(0, len(data))]
    spans = []
    for start, end in log.region:
        first = log.line_starts[max(0, start)]
        last = log.line_starts[end + 1] if end + 1 < log.line_count else len(data)
        spans.append((first, last))
    for index in sorted(log.annotations):
        if not log.in_region(index):
            first = log.line_starts[index]
            spans.append((first, log.line_starts[index + 1] if index + 1 < log.line_count else len(data)))
    return spans


def _last_matches(regex: Any, data: bytes, spans: list[tuple[int, int]]) -> list[Any]:
    """The last :data:`_MAX_MATCHES_PER_PATTERN` matches of ``regex`` inside ``spans``."""
    found: list[Any] = []
    scanned = 0
    for start, end in spans:
        for match in regex.finditer(data, start, end):
            found.append(match)
            scanned += 1
            if len(found) > _MAX_MATCHES_PER_PATTERN:
                found.pop(0)
            if scanned >= _MAX_SCANNED_PER_PATTERN:
                return found
    return found


class Matcher:
    """The registry compiled once; thread-safe; :func:`matcher_for` caches it on the registry."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        sigs: dict[str, list[_Sig]] = {subject: [] for subject in ("type", "message", "text", "command")}
        index = 0
        for mode in registry.modes:
            if not mode.active:
                continue
            for signature in mode.signatures:
                priority = signature.priority if signature.priority is not None else mode.priority
                sigs.setdefault(signature.on, []).append(
                    _Sig(
                        index=index,
                        mode=mode,
                        signature=signature,
                        priority=priority,
                        depth=mode.code.count("."),
                        subject=signature.on,
                    )
                )
                index += 1
        self.sets = {subject: _SubjectSet(items) for subject, items in sigs.items()}
        self.signature_count = index

    # ------------------------------------------------------------------ matching

    def _expand(self, scan: _Scan, keep: frozenset[str] | None, log: Log | None) -> list[_Candidate]:
        """Where the signatures a scan found match (only codes in ``keep``, when given)."""
        out: list[_Candidate] = []
        spans = _spans(log, scan.data) if scan.origin == "log" else [(0, len(scan.data))]
        for sig in scan.sigs:
            if keep is not None and sig.mode.code not in keep:
                continue
            found = _last_matches(sig.regex, scan.data, spans)
            if not found and spans != [(0, len(scan.data))]:
                found = _last_matches(sig.regex, scan.data, [(0, len(scan.data))])
            for match in found:
                groups = {
                    capture_name(k.decode() if isinstance(k, bytes) else k): v.decode("utf-8", "replace")
                    for k, v in match.groupdict().items()
                    if v is not None
                }
                cand = _Candidate(sig, -1, match.start(), match.end(), scan.origin, groups)
                scan.place(cand, log)
                out.append(cand)
        return out

    def scans(self, *, error_type: str | None, message: str | None, log: Log | None) -> list[_Scan]:
        """Phase 1: one RE2 set scan per subject (message and text signatures share one scan of
        a text); which signatures occur, not yet where."""
        out: list[_Scan] = []

        def scan(subject: str, data: bytes, origin: str, **extra: Any) -> None:
            sigs = self.sets[subject].match(data)
            if sigs:
                out.append(_Scan(subject, data, origin, sigs, **extra))

        def both(data: bytes, origin: str) -> None:
            # message and text signatures in one set scan of the text (one pass, not two)
            found = self._either().match(data)
            for subject in ("message", "text"):
                sigs = [sig for sig in found if sig.subject == subject]
                if sigs:
                    out.append(_Scan(subject, data, origin, sigs))

        if error_type:
            scan("type", _b(error_type)[: reading.MAX_LINE_BYTES], "type")
        if message:
            data = _b(message)[: reading.MAX_LOG_BYTES]
            types = reading.exception_types(data)
            if types:
                scan("type", b"\n".join(t for _, t in types), "types")
            both(data, "message")
        if log is not None and log.data:
            # Type lines of the failure region(s) and annotated lines only: elsewhere (set-up,
            # passing steps) a type line is a candidate that would never win over the region.
            types = [
                found
                for start, end in sorted(_spans(log, log.data))
                for found in reading.exception_types(log.data, start=start, end=end)
            ]
            if types:
                scan("type", b"\n".join(t for _, t in types), "log", types=types)
            both(log.data, "log")
            # Each failed command is its own subject, placed on its failure marker's line; a
            # build tool's marker (a Gradle task, a Maven goal) is more precise than its step's.
            for marker, command in log.commands():
                scan("command", _b(command), "command", marker=marker, command=command)
        return out

    def present(self, *, error_type: str | None, message: str | None, text: str | None) -> frozenset[int]:
        """Which signatures occur anywhere in the raw type, message and text (set scans only).

        A cheap identity for a cached decision: a caller that keys decisions on a shape reuses
        one only while this set is unchanged (the bridge's templates)."""
        found: list[int] = []
        type_set, either = self.sets["type"], self._either()
        if error_type:
            type_set.indexes(_b(error_type)[: reading.MAX_LINE_BYTES], found)
        for subject in (message, text):
            if not subject:
                continue
            data = _b(subject)[: reading.MAX_LOG_BYTES]
            if subject is message:
                types = reading.exception_types(data)
                if types:
                    type_set.indexes(b"\n".join(t for _, t in types), found)
            either.indexes(data, found)
        return frozenset(found)

    def _either(self) -> _SubjectSet:
        """One set over the message and text signatures (what :meth:`present` scans with)."""
        either = self.sets.get("message+text")
        if either is None:
            either = _SubjectSet(self.sets["message"].sigs + self.sets["text"].sigs)
            self.sets["message+text"] = either
        return either

    def expand(self, scans: list[_Scan], log: Log | None, keep: frozenset[str] | None = None) -> list[_Candidate]:
        """Phase 2: the candidates (signature, line, captures) of the scans."""
        found: list[_Candidate] = []
        for scan in scans:
            found += self._expand(scan, keep, log)
        return found

    def candidates(self, *, error_type: str | None, message: str | None, log: Log | None) -> list[_Candidate]:
        return self.expand(self.scans(error_type=error_type, message=message, log=log), log)

    # ------------------------------------------------------------------ deciding

    def decide(
        self,
        candidates: list[_Candidate],
        log: Log | None,
    ) -> tuple[_Candidate | None, list[_Candidate]]:
        """The winning candidate and the per-line best candidates it was preferred to."""
        if not candidates:
            return None, []
        best_per_line: dict[Any, _Candidate] = {}
        for cand in candidates:
            key = ("command",) if cand.origin == "command" else ("line", cand.line)
            current = best_per_line.get(key)
            if current is None or _specificity(cand) > _specificity(current):
                best_per_line[key] = cand
        ranked = sorted(best_per_line.values(), key=lambda c: _cause_rank(c, log), reverse=True)
        return ranked[0], ranked[1:]


def bisect_index(starts: list[int], offset: int) -> int:
    from bisect import bisect_right

    return max(0, bisect_right(starts, offset) - 1)


def _starts(types: list[tuple[int, bytes]]) -> list[int]:
    starts, position = [], 0
    for _, name in types:
        starts.append(position)
        position += len(name) + 1
    return starts


def _b(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _specificity(cand: _Candidate) -> tuple[int, int, int, int, int, int]:
    """Rule 1: only a *signature's* own priority counts on its line (a code's priority is
    about root cause across lines, see :func:`_cause_rank`). Within one failed command, the
    signature that matches nearer its start wins: the program (``flake8 --output-file
    lint-testresults.xml``) says more than its arguments."""
    sig = cand.sig
    own = sig.signature.priority or 0
    first = -cand.offset if cand.origin == "command" else 0
    return (own, sig.depth, _SUBJECT_WEIGHT[sig.subject], first, sig.literal, cand.end - cand.offset)


def _cause_rank(cand: _Candidate, log: Log | None) -> tuple[int, ...]:
    """Root cause over consequences (module docstring, rule 2 and 3)."""
    rank = FAMILY_RANK.get(cand.sig.mode.family, 0) + cand.sig.priority
    if log is None or cand.line < 0:
        return (1, 0, 1, 0, rank, cand.line)
    region = log.region_number(cand.line)
    if region is None and cand.line in log.annotations:
        region = next((n for n, (start, _) in enumerate(log.region) if start > cand.line), len(log.region))
    if region is None and log.region:
        return (0, 0, 1, 0, rank, cand.line)  # outside where the log failed
    # The first failed step is the cause (Travis runs every script command; later failures
    # are often consequences); inside a step a signature beats what the command name says.
    first = -(region or 0)
    if cand.origin == "command":
        return (1, first, 0, cand.precision, rank, cand.line)
    # A consequence line (a signature with priority <= -10, e.g. Vercel's generic
    # 'Command "..." exited with 1') yields to what the failed command's name says.
    strong = 0 if (cand.sig.signature.priority or 0) <= CONSEQUENCE_PRIORITY else 1
    return (1, first, strong, 0, rank, cand.line)


# --------------------------------------------------------------------------- evidence and captures


def build(
    registry: Registry,
    winner: _Candidate,
    others: list[_Candidate],
    candidates: list[_Candidate],
    log: Log | None,
    *,
    message: str | None,
    error_type: str | None,
    also: tuple[str, ...] | None = None,
) -> Classification:
    """The classification ``winner`` makes: evidence, captures, the codes it was preferred to
    (``others``' codes, or ``also`` when the caller already knows them)."""
    code = winner.sig.mode.code
    same = [c for c in candidates if c.sig.mode.code == code]
    evidence: list[EvidenceLine] = []
    captures: dict[str, list[str]] = {}

    def capture(name: str, value: str) -> None:
        values = captures.setdefault(name, [])
        value = value.strip()[:MAX_CAPTURE_CHARS]
        if value and value not in values and len(values) < MAX_CAPTURE_VALUES:
            values.append(value)

    for cand in same:
        for name, value in cand.groups.items():
            capture(name, value)

    if winner.origin in ("type", "types", "message") or log is None:
        if error_type and any(c.origin == "type" for c in same):
            evidence.append(EvidenceLine(None, error_type[:MAX_EVIDENCE_CHARS], "type"))
        if message:
            evidence.append(EvidenceLine(None, reading_first_line(message), "message"))
    if log is not None:
        lines = sorted({c.line for c in same if c.origin == "log" and c.line >= 0})
        home = log.region_number(winner.line) if winner.line >= 0 else None
        own = [i for i in lines if home is not None and log.region_number(i) == home]
        inside = [i for i in lines if log.in_region(i) or i in log.annotations]
        chosen = own or inside or lines
        if len(chosen) > MAX_EVIDENCE_LINES - 1:
            keep = MAX_EVIDENCE_LINES - 1
            chosen = chosen[:2] + chosen[-(keep - 2) :]
        for index in chosen:
            evidence.append(EvidenceLine(log.number(index), log.line(index)[:MAX_EVIDENCE_CHARS], "signature"))
        # A deciding line that ends with a colon announces its reason on the next line
        # ("Could not resolve package dependencies:"): that line is what a person reads.
        if chosen and len(chosen) < MAX_EVIDENCE_LINES - 2:
            last = chosen[-1]
            if log.line(last).endswith(":") and last + 1 < log.line_count and log.line(last + 1).strip():
                evidence.append(EvidenceLine(log.number(last + 1), log.line(last + 1)[:MAX_EVIDENCE_CHARS], "context"))
        if len(chosen) < 2 and winner.line >= 0:
            # Few deciding lines (a code read from the failed command, a one-line summary):
            # add the error lines just above where the step failed, which a person reads next.
            for index in context_lines(
                log, winner.line, exclude=set(chosen), limit=MAX_EVIDENCE_LINES - 2 - len(chosen)
            ):
                evidence.append(EvidenceLine(log.number(index), log.line(index)[:MAX_EVIDENCE_CHARS], "context"))
            evidence.sort(key=lambda e: (e.line is None, e.line or 0))
        if winner.origin == "command":
            marker = _marker_near(log, winner.line)
            if marker is not None:
                evidence.append(
                    EvidenceLine(log.number(marker.index), log.line(marker.index)[:MAX_EVIDENCE_CHARS], "command")
                )
        else:
            marker = _marker_after(log, max(chosen) if chosen else winner.line)
            if marker is not None and len(evidence) < MAX_EVIDENCE_LINES:
                evidence.append(
                    EvidenceLine(log.number(marker.index), log.line(marker.index)[:MAX_EVIDENCE_CHARS], "marker")
                )
        if log.exit_code is not None:
            capture("exit_code", str(log.exit_code))
        commands = log.failed_commands
        if commands:
            capture("command", commands[0])
    out_captures: dict[str, Any] = {}
    for name, values in captures.items():
        if name in ("exit_code", "status", "line", "column") and all(v.lstrip("-").isdigit() for v in values):
            ints = [int(v) for v in values]
            out_captures[name] = ints[0] if len(ints) == 1 else ints
        else:
            out_captures[name] = values[0] if len(values) == 1 else values
    also = list(also or ())
    for cand in others:
        if cand.sig.mode.code != code and cand.sig.mode.code not in also:
            also.append(cand.sig.mode.code)
    matched_by = "command" if winner.origin == "command" else "signature"
    if log is not None and winner.origin in ("log", "command") and 0 <= winner.line < log.line_count:
        headline = log.line(winner.line).strip()
    elif message:
        headline = reading_first_line(message)
    else:
        headline = error_type
    return Classification(
        code=code,
        mode=winner.sig.mode,
        matched_by=matched_by,
        signature=winner.sig.signature.describe(),
        evidence=tuple(evidence[:MAX_EVIDENCE_LINES]),
        captures=out_captures,
        also=tuple(also[:5]),
        headline=(headline or "")[:MAX_EVIDENCE_CHARS] or None,
    )


# RE2 (linear, a DFA): context_lines scans blocks of a log with it.
_ERRORISH_RE = reading._re(
    rb"(?i)(?:\b(?:error|errors|failed|failure|failures|fatal|exception|traceback|panic|cannot|could not|unable to"
    rb"|not found|denied|refused|timed out|killed|aborted|undefined|expected)\b|\xe2\x9c\x95|\xe2\x9c\x97|\xe2\x9c\x96)"
)
_NOT_ERRORISH_RE = re.compile(rb"(?i)\b0 (?:errors?|failures?|failed)\b|\bwarning\b|^\s*\$ |\berror(?:s)?: 0\b")


def context_lines(log: Log, line: int, *, exclude: set[int], limit: int) -> list[int]:
    """Up to ``limit`` error-looking lines of the failure region that holds ``line``, nearest its end."""
    if limit <= 0:
        return []
    number = log.region_number(line)
    start, end = log.region[number] if number is not None else (max(0, line - 200), line)
    markers = {m.index for m in log.markers}
    found: list[int] = []
    # Backwards in blocks of 50 lines: one scan of a block finds its error-looking lines
    # (most answers sit in the first block); only those lines are checked further.
    high = end
    while high >= max(start, end - 400) and len(found) < limit:
        low = max(start, end - 400, high - 49)
        block_end = log.line_starts[high + 1] if high + 1 < log.line_count else len(log.data)
        hits = {log.index_at(m.start()) for m in _ERRORISH_RE.finditer(log.data, log.line_starts[low], block_end)}
        for index in sorted(hits, reverse=True):
            if index in exclude or index in markers:
                continue
            raw = log.line_bytes(index)
            if len(raw) < 4 or _NOT_ERRORISH_RE.search(raw):
                continue
            found.append(index)
            if len(found) >= limit:
                break
        high = low - 1
    return found


def reading_first_line(message: str) -> str:
    stripped = message.strip()
    line = stripped.split("\n", 1)[0] if stripped else ""
    return line[:MAX_EVIDENCE_CHARS]


def _marker_after(log: Log, index: int) -> reading.Marker | None:
    for marker in log.markers:
        if marker.index >= index:
            return marker
    return None


def _marker_near(log: Log, index: int) -> reading.Marker | None:
    for marker in reversed(log.markers):
        if marker.index <= index:
            return marker
    return log.markers[-1] if log.markers else None


def matcher_for(registry: Registry) -> Matcher:
    """The compiled matcher of ``registry``, built on first use."""
    cached = registry.derived.get("matcher")
    if cached is None:
        cached = Matcher(registry)
        registry.derived["matcher"] = cached
    return cached
