"""Reading a log like an engineer: normalise it, keep its line numbers, find where it failed.

Everything here works on UTF-8 bytes (RE2 and ``re`` both scan bytes without the
character-offset bookkeeping ``str`` needs) and never adds or removes a line, so the
line numbers the classifier reports are the numbers of the original text.

Normalisation, per line:

* ``\\r\\n`` becomes ``\\n``; a carriage-return progress bar keeps only what was drawn last
  (the text after the line's last ``\\r``): Travis ``travis_fold``/``travis_time`` and GitLab
  ``section_start``/``section_end`` markers are written that way and vanish with it;
* ANSI escapes (colours, cursor moves, OSC hyperlinks) are removed;
* a leading timestamp (GitHub Actions' RFC 3339 prefix, ``[2024-01-01T00:00:00Z]``,
  ``[12:00:00]``, Netlify's ``7:51:34 PM:``) is removed;
* Docker BuildKit's step prefix (``#19 11.02 ``: step number and seconds) is removed, so
  what a ``docker build`` inside a CI job printed reads like any other line;
* Go's standard log timestamp (``2026/08/07 06:03:50 ``), often a second prefix under the
  CI's, is removed;
* the CI systems' own markers are removed after being read: GitHub Actions
  ``##[group]``/``##[endgroup]``/``##[error]``... and ``::error ...::`` workflow commands
  (an error annotation marks its line), Azure Pipelines ``##[section]``.

Then the log is read for structure:

* **failure markers**: the lines where a CI system or a build tool says a command failed
  (``The command "npm test" exited with 1.``, ``##[error]Process completed with exit code 2.``,
  ``ERROR: Job failed: exit code 1``, ``make: *** [all] Error 2``, ...), with the exit code
  and, where the line names it, the command;
* **steps**: where each command's output starts (GitHub Actions ``Run ...`` groups, Travis
  and GitLab ``$ cmd`` echo lines, Buildkite ``---``/``+++``/``~~~`` headers, Jenkins
  ``+ cmd`` lines), so a failure marker can be traced back to its command;
* **the failure region**: from the start of each failed step to its marker; without
  markers, the whole text. Lines after the last marker (post-job clean-up) are outside.

A long log is never cut at its end: :func:`read_log` streams any size, keeps its first
:data:`HEAD_BYTES` and its last :data:`TAIL_BYTES`, and counts the lines it skipped, so the
tail keeps its true line numbers.
"""

from __future__ import annotations

import io
import re
from bisect import bisect_right
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path
from typing import Any, BinaryIO

import re2

from ipai_ops.text import re2_options

#: What classification reads of a long text: its head and its tail (bounded work).
HEAD_BYTES = 64 * 1024
TAIL_BYTES = 448 * 1024
MAX_LOG_BYTES = HEAD_BYTES + TAIL_BYTES
#: A line longer than this is cut for matching (minified bundles, base64 blobs).
MAX_LINE_BYTES = 4096
#: How far back from a failure marker the region reaches when no step start is known.
REGION_LINES_WITHOUT_STEP = 2000
#: Without any failure marker, the region is the log's last lines.
TAIL_REGION_LINES = 1000
_CHUNK = 1 << 20


_BOUNDED_REPEAT = re.compile(rb"(?<!\\)\{(\d+),(\d+)\}")


def _re(pattern: bytes) -> Any:
    """A structure pattern, compiled with RE2: linear time on whatever a sender wrote.

    Large bounded repeats (``{1,500}``) become open ones: RE2 needs no bound to stay linear,
    and unrolled bounds make its DFA too big, which sends it to the much slower NFA."""
    relaxed = _BOUNDED_REPEAT.sub(lambda m: m.group(0) if int(m.group(2)) <= 16 else b"{%s,}" % m.group(1), pattern)
    return re2.compile(relaxed, re2_options())


def _sub_re(pattern: bytes) -> re.Pattern[bytes]:
    """A pattern that matches on (nearly) every line (a normalisation for ``sub``, a step
    start): Python's ``re`` handles each match in C, RE2's binding calls back into Python per
    match. These patterns have no nested or unbounded quantifier, so they stay linear
    (benchmarks/classify_worst_case.py)."""
    re2.compile(pattern, re2_options())  # refuse anything RE2 could not run linearly
    return re.compile(pattern)


def _groups(match: Any) -> dict[str, bytes | None]:
    """A match's named groups with ``str`` names (RE2 names them in bytes for bytes patterns)."""
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in match.groupdict().items()}


class LogUnreadable(ValueError):
    """The input is not a text log (binary data); the message is one line for a person."""


# --------------------------------------------------------------------------- normalisation

_ANSI_RE = _sub_re(rb"\x1b(?:\[[0-?]{0,64}[ -/]{0,8}[@-~]|\][^\x07\x1b\n]{0,1000}(?:\x07|\x1b\\)?|[@-Z\\-_])")
_TIMESTAMP_RE = _sub_re(
    rb"(?m)^(?:\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?Z ?"
    rb"|\[\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:[.,]\d{1,9})?(?:Z|[+-]\d\d:?\d\d)?\] ?"
    rb"|\[\d\d:\d\d:\d\d(?:\.\d{1,9})?\] "
    rb"|\d{1,2}:\d\d:\d\d (?:AM|PM): "
    # Jenkins' Timestamper ("11:02:14  "), OpenStack/Zuul consoles ("2013-09-27 18:47:11.720 | ")
    rb"|\d\d:\d\d:\d\d(?:\.\d{1,3})?  "
    rb"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d{1,6})? \| )"
)
# ``gh run view --log`` (and --log-failed): every line is "<job>\t<step>\t<timestamp> <text>",
# the way GitHub Actions logs are most often copied into issues and repositories. The job
# and step columns go; the timestamp (after a byte-order mark on a job's first line) stays
# for the timestamp rule.
_GH_CLI_RE = _sub_re(rb"(?m)^[^\t\n]{1,300}\t[^\t\n]{0,300}\t(?:\xef\xbb\xbf)?(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)")
# Docker BuildKit's plain progress ("#19 11.02 error CS0023: ..."): a build step's number and
# the seconds since it started, before each line a step printed (`docker build` inside a CI
# job). The step's own header and verdict lines ("#19 [build 4/6] RUN ...", "#19 ERROR: ...",
# "#19 DONE 3.2s") keep theirs.
_BUILDKIT_RE = _sub_re(rb"(?m)^#\d{1,4} \d{1,6}\.\d{1,3} ")
# Go's standard logger ("2026/08/07 06:03:50 " and its microseconds form) before what a Go
# tool (a test runner, a provisioner) printed, often under a CI timestamp: a second one.
_GO_LOG_RE = _sub_re(rb"(?m)^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d(?:\.\d{1,6})? ")
# GitHub Actions / Azure Pipelines logging commands and workflow commands.
_CI_MARKER_RE = _sub_re(rb"(?m)^[ \t]{0,8}(?:##\[[a-z]{3,12}\]|::[a-z-]{3,20}(?: [^\n:]{0,500})?::)")
_ANNOTATION_RE = _re(rb"(?m)^[ \t]{0,8}(?:##\[error\]|::error(?: [^\n:]{0,500})?::)")
_GROUP_RUN_RE = _re(rb"(?m)^[ \t]{0,8}(?:##\[group\]|::group::)Run (?P<cmd>[^\n]{1,500})")


def _after_newline(pattern: re.Pattern[bytes]) -> re.Pattern[bytes]:
    """``(?m)^X`` as ``\nX``: a literal first byte lets ``re`` jump from newline to newline
    instead of trying every position (about 3x faster on a log whose every line has a prefix)."""
    assert pattern.pattern.startswith(b"(?m)^")
    return re.compile(b"\n" + pattern.pattern[len(b"(?m)^") :])


def _strip_line_starts(after_newline: re.Pattern[bytes], data: bytes) -> bytes:
    """Remove what ``after_newline`` (see :func:`_after_newline`) matches at line starts."""
    return after_newline.sub(b"\n", b"\n" + data)[1:]


_TIMESTAMP_AFTER_NEWLINE_RE = _after_newline(_TIMESTAMP_RE)
_GH_CLI_AFTER_NEWLINE_RE = _after_newline(_GH_CLI_RE)
_CI_MARKER_AFTER_NEWLINE_RE = _after_newline(_CI_MARKER_RE)
_BUILDKIT_AFTER_NEWLINE_RE = _after_newline(_BUILDKIT_RE)
_GO_LOG_AFTER_NEWLINE_RE = _after_newline(_GO_LOG_RE)


def _line_indexes(data: bytes, offsets: list[int]) -> list[int]:
    """The line index of each (ascending) byte offset, counting newlines once."""
    indexes, line, position = [], 0, 0
    for offset in offsets:
        line += data.count(b"\n", position, offset)
        position = offset
        indexes.append(line)
    return indexes


def _normalise(data: bytes) -> tuple[bytes, list[int], list[tuple[int, str]], bool]:
    """Normalised bytes (same line count), error-annotation line indexes, GitHub ``Run`` steps
    (line index, command). Indexes, not offsets: removing the markers moves offsets."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]  # GitHub Actions logs start with a byte-order mark
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n")
    if b"\x1b" in data:
        data = _ANSI_RE.sub(b"", data)
    if b"\r" in data:
        # Keep what a terminal shows of each line: the text after its last carriage return.
        lines = data.split(b"\n")
        for index, line in enumerate(lines):
            if b"\r" in line:
                # A carriage return at the end of a line overwrites nothing.
                shown = line.rstrip(b"\r")
                lines[index] = shown[shown.rfind(b"\r") + 1 :]
        data = b"\n".join(lines)
    gh_steps: list[tuple[int, str]] = []
    if b"\t" in data[:4096] and _GH_CLI_RE.search(data, 0, 4096):
        gh_steps = _gh_steps(data)
        data = _GH_CLI_AFTER_NEWLINE_RE.sub(rb"\n\1", b"\n" + data)[1:]
    if _TIMESTAMP_RE.search(data, 0, 4096):  # logs either prefix every line or none
        data = _strip_line_starts(_TIMESTAMP_AFTER_NEWLINE_RE, data)
    if (data.startswith(b"#") or b"\n#" in data) and _BUILDKIT_RE.search(data):
        data = _strip_line_starts(_BUILDKIT_AFTER_NEWLINE_RE, data)
    if _GO_LOG_RE.search(data):
        data = _strip_line_starts(_GO_LOG_AFTER_NEWLINE_RE, data)
    annotations: list[int] = []
    runs: list[tuple[int, str]] = []
    if b"##[" in data or data.startswith(b"::") or b"\n::" in data:
        annotations = _line_indexes(data, [m.start() for m in _ANNOTATION_RE.finditer(data)])
        found = [(m.start(), _text(_groups(m)["cmd"] or b"")) for m in _GROUP_RUN_RE.finditer(data)]
        runs = list(zip(_line_indexes(data, [offset for offset, _ in found]), [cmd for _, cmd in found], strict=True))
        data = _strip_line_starts(_CI_MARKER_AFTER_NEWLINE_RE, data)
    if gh_steps:
        # The step column says where each step starts; a "Run <cmd>" group inside a step
        # names its command better than the step's title, so it wins on its own line.
        named = {index for index, _ in runs}
        runs = sorted(runs + [(index, step) for index, step in gh_steps if index not in named])
    # with gh's step column, a "+ x" or "$ x" line inside a step (a diff, an echo) is not a step
    return data, annotations, runs, bool(gh_steps)


_GH_STEP_RE = re.compile(rb"(?m)^[^\t\n]{1,300}\t([^\t\n]{0,300})\t")


def _gh_steps(data: bytes) -> list[tuple[int, str]]:
    """``(line index, step)`` where the step column of ``gh run view --log`` output changes
    (a job's steps, in order; "UNKNOWN STEP", which gh prints when it cannot tell, is none)."""
    changes: list[tuple[int, bytes]] = []
    previous = None
    for match in _GH_STEP_RE.finditer(data):
        step = match.group(1)
        if step != previous:
            changes.append((match.start(), step))
            previous = step
    indexes = _line_indexes(data, [offset for offset, _ in changes])
    out = []
    for index, (_, step) in zip(indexes, changes, strict=True):
        name = _text(step)
        if name and name != "UNKNOWN STEP":
            out.append((index, name.removeprefix("Run ")))
    return out


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace").strip()


# --------------------------------------------------------------------------- structure

# Where a CI system says a step failed: these end a step and bound the failure region.
_STEP_FAILED_RE = _re(
    rb"(?m)^[ \t]{0,8}(?:"
    rb"The command \"(?P<travis>[^\n]{1,500})\" (?:failed and )?exited with (?P<travis_exit>[1-9]\d{0,3})"
    rb"|(?:Error: )?Process completed with exit code (?P<gha_exit>[1-9]\d{0,3})\."
    rb"|ERROR: Job failed: (?:exit code (?P<gitlab_exit>\d{1,4})|[^\n]{1,300})"
    rb"|ERROR: script returned exit code (?P<jenkins_exit>\d{1,4})"
    rb"|Build step '[^'\n]{1,200}' marked build as failure"
    rb"|(?:"
    + "\N{POLICE CARS REVOLVING LIGHT}".encode()
    + rb" )?Error: The command exited with status (?P<bk_exit>-?\d{1,4})"
    rb"|Exited with code (?:exit status )?(?P<circle_exit>[1-9]\d{0,3})"
    rb"|(?:Bash|PowerShell|Cmd\.exe|[\w.]{1,40}) exited with code '(?P<azure_exit>[1-9]\d{0,3})'\."
    rb")"
)
# Where a CI system says the whole job failed (after its steps): an exit code, no region.
_JOB_FAILED_RE = _re(rb"(?m)^(?:Done\. Your build exited with (?P<travis_done>[1-9]\d{0,3})\.|Finished: FAILURE$)")
# Where a CI system says the whole job passed (Travis, Jenkins, GitLab).
_JOB_PASSED_RE = _re(rb"(?m)^(?:Done\. Your build exited with 0\.|Finished: SUCCESS|Job succeeded)\r?$")
# Where a build tool says a command failed, inside a step; ``cmd_*`` groups name what failed
# (a make target, a Gradle task, a Maven goal, an npm script, a tox env, a Dockerfile RUN).
_TOOL_FAILED_RE = _re(
    rb"(?m)(?:"
    rb"^make(?:\[\d{1,3}\])?: \*\*\* \[(?P<cmd_make>[^\]\n]{0,300})\] Error (?P<make_exit>\d{1,4})"
    rb"|\bCommand \"(?P<cmd_quoted>[^\"\n]{1,300})\" exited with (?P<quoted_exit>[1-9]\d{0,3})"
    rb"|\bCommand failed with exit code (?P<failed_exit>[1-9]\d{0,3})"
    # Node's child_process (execSync/exec): "Error: Command failed: npm run test:run"
    rb"|\bCommand failed: (?P<cmd_node>[^\n]{1,300})"
    rb"|\bCommand exited with non-zero status (?P<nonzero_exit>\d{1,4})"
    rb"|\breturned non-zero exit status (?P<py_exit>\d{1,4})"
    rb"|^npm (?:ERR!|error) (?:code ELIFECYCLE|Exit status (?P<npm_exit>\d{1,4}))"
    rb"|^npm (?:ERR!|error) Failed at the (?:\S{1,200} )?(?P<cmd_npm>[\w:.-]{1,100}) script"
    rb"|^npm (?:ERR!|error) Lifecycle script `(?P<cmd_npm7>[\w:.-]{1,100})` failed"
    rb"|^(?:\* What went wrong:\n)?Execution failed for task '(?P<cmd_gradle>[^'\n]{1,200})'\."
    rb"|^(?:> Task )?(?P<cmd_gradle_task>:[\w:-]{1,200}) FAILED$"
    rb"|^FAILURE: Build failed with an exception\."
    rb"|^\[INFO\] BUILD FAILURE"
    rb"|^\[ERROR\] Failed to execute goal (?P<cmd_maven>[\w.:-]{1,200}) \("
    rb"|^\[error\] \((?P<cmd_sbt>[^)\n]{1,200})\) "
    rb"|^Tasks: TOP => (?P<cmd_rake>[\w:]{1,100})"
    rb"|^ERROR: {1,4}(?P<cmd_tox>[\w.-]{1,60}): commands failed"
    rb"|^nox > Session (?P<cmd_nox>\S{1,100}) (?:failed|aborted)"
    rb"|failed to solve: process \"/bin/sh -c (?P<cmd_docker>[^\n]{1,500})\" did not complete successfully: "
    rb"exit code: (?P<docker_exit>\d{1,4})"
    rb"|The command '/bin/sh -c (?P<cmd_docker_old>[^'\n]{1,500})' returned a non-zero code: "
    rb"(?P<docker_old_exit>\d{1,4})"
    rb"|^error: Recipe `(?P<cmd_just>[^`\n]{1,200})` failed on line \d{1,6} with exit code (?P<just_exit>\d{1,4})"
    rb")"
)
# Where a command's output starts. Python's ``re`` (RE2-validated, linear: anchored, no nested
# quantifier): a log holds thousands of these lines and RE2's binding pays per match.
_STEP_START_RE = _sub_re(
    rb"(?m)^(?:\$ (?P<dollar>[^\n]{1,500})"
    rb"|\[[^\]\n]{1,200}\] \$ (?P<jenkins>[^\n]{1,500})"
    rb"|(?:---|\+\+\+|~~~) (?P<bk>[^\n]{1,300})"
    rb"|\+ (?P<xtrace>[^\n]{1,500})"
    rb"|Starting: (?P<azure>[^\n]{1,300})"
    # Azure Pipelines prints a script step's command under "Script contents:"
    rb"|Script contents:\n(?P<azure_script>[^\n]{1,500}))"
)


@dataclass(frozen=True)
class Marker:
    """A line where a CI system (``step``) or a build tool (``tool``) says a command failed."""

    index: int
    kind: str
    exit_code: int | None
    command: str | None


@dataclass
class Log:
    """A normalised log: bytes with the original line structure, and what was read from it."""

    data: bytes
    #: Byte offset of each line start in ``data``.
    line_starts: list[int]
    #: Line number (1-based, of the original input) of each index below ``gap_index``; lines
    #: from ``gap_index`` on are numbered from ``tail_first_number``.
    gap_index: int | None = None
    tail_first_number: int = 0
    annotations: frozenset[int] = frozenset()
    markers: tuple[Marker, ...] = ()
    #: ``(line index, command)`` of every step start.
    steps: tuple[tuple[int, str], ...] = ()
    #: Line index of the CI system's verdict that the whole job passed, if the log has one.
    passed: int | None = None
    #: Line index ranges ``[start, end]`` (inclusive) where the log failed; empty = everywhere.
    region: tuple[tuple[int, int], ...] = ()
    #: Bytes that were not UTF-8 (decoded as U+FFFD), and lines skipped between head and tail.
    invalid_bytes: int = 0
    skipped_lines: int = 0
    total_bytes: int = 0
    _region_mask: list[bool] | None = field(default=None, repr=False)

    @property
    def line_count(self) -> int:
        return len(self.line_starts)

    def number(self, index: int) -> int:
        """The original 1-based line number of line ``index``."""
        if self.gap_index is not None and index >= self.gap_index:
            return self.tail_first_number + (index - self.gap_index)
        return index + 1

    def index_at(self, offset: int) -> int:
        """The line index holding byte ``offset``."""
        return bisect_right(self.line_starts, offset) - 1

    def line_bytes(self, index: int) -> bytes:
        start = self.line_starts[index]
        end = self.line_starts[index + 1] - 1 if index + 1 < len(self.line_starts) else len(self.data)
        return self.data[start:end]

    def line(self, index: int) -> str:
        return self.line_bytes(index).decode("utf-8", "replace").rstrip()

    def in_region(self, index: int) -> bool:
        if not self.region:
            return True
        if self._region_mask is None:
            mask = [False] * len(self.line_starts)
            for start, end in self.region:
                for i in range(max(0, start), min(end, len(mask) - 1) + 1):
                    mask[i] = True
            self._region_mask = mask
        return 0 <= index < len(self._region_mask) and self._region_mask[index]

    def commands(self) -> list[tuple[Marker, str]]:
        """``(marker, command)`` for every failure marker that names what failed, or whose step
        does (a GitHub Actions ``Run`` group, a ``$ cmd`` echo line), in log order."""
        found: list[tuple[Marker, str]] = []
        for marker in self.markers:
            command = marker.command
            if command is None and marker.kind == "step":
                step = self.step_of(marker.index)
                command = step[1] if step is not None else None
            if command:
                found.append((marker, command))
        return found

    @property
    def failed_commands(self) -> list[str]:
        """The commands the log shows failing, deduplicated, in log order."""
        found: list[str] = []
        for _, command in self.commands():
            if command not in found:
                found.append(command)
        return found

    def region_number(self, index: int) -> int | None:
        """Which failure region (0 = the first) holds line ``index``, or None."""
        for number, (start, end) in enumerate(self.region):
            if start <= index <= end:
                return number
        return None

    @property
    def exit_code(self) -> int | None:
        for marker in reversed(self.markers):
            if marker.exit_code is not None:
                return marker.exit_code
        return None

    def step_of(self, index: int) -> tuple[int, str] | None:
        """The step (start index, command) that line ``index`` belongs to, if one is known."""
        best = None
        for step in self.steps:
            if step[0] <= index:
                best = step
            else:
                break
        return best


def _line_starts(data: bytes) -> list[int]:
    starts = [0, *accumulate(map((1).__add__, map(len, data.split(b"\n"))))]
    starts.pop()  # the offset past the end
    if len(starts) > 1 and starts[-1] == len(data):
        starts.pop()  # a final newline does not open another line
    return starts


def _exit_of(match: Any) -> int | None:
    for name, value in _groups(match).items():
        if value is not None and (name.endswith("_exit") or name == "travis_done"):
            return int(value)
    return None


#: Literal text every alternative of a structure pattern contains: lines without any of
#: them are never run through the (slower, capturing) pattern.
_STEP_FAILED_HINTS = (
    b'The command "',
    b"Process completed with exit code",
    b"ERROR: Job failed",
    b"ERROR: script returned exit code",
    b"marked build as failure",
    b"Error: The command exited with status",
    b"Exited with code",
    b"exited with code '",
)
_TOOL_FAILED_HINTS = (
    b"*** [",
    b'Command "',
    b"Command failed",  # "... with exit code N", and Node's "Command failed: <cmd>"
    b"Command exited with non-zero status",
    b"returned non-zero exit status",
    b"npm ERR!",
    b"npm error",
    b"Execution failed for task",
    b" FAILED",
    b"FAILURE: Build failed",
    b"BUILD FAILURE",
    b"Failed to execute goal",
    b"[error] (",
    b"Tasks: TOP",
    b"commands failed",
    b"nox > Session",
    b"failed to solve",
    b"returned a non-zero code",
    b"error: Recipe",
)
_JOB_FAILED_HINTS = (b"Done. Your build exited with", b"Finished: FAILURE")
_JOB_PASSED_HINTS = (b"Done. Your build exited with 0.", b"Finished: SUCCESS", b"Job succeeded")


def _hint_re(hints: tuple[bytes, ...]) -> Any:
    return re2.compile(b"|".join(re2.escape(h) for h in hints), re2_options())


_STEP_FAILED_HINT_RE = _hint_re(_STEP_FAILED_HINTS)
_TOOL_FAILED_HINT_RE = _hint_re(_TOOL_FAILED_HINTS)
_JOB_FAILED_HINT_RE = _hint_re(_JOB_FAILED_HINTS)
_JOB_PASSED_HINT_RE = _hint_re(_JOB_PASSED_HINTS)


def _scan(pattern: Any, hints: Any, data: bytes) -> list[Any]:
    """``pattern.finditer(data)``, but only over the lines where ``hints`` (an RE2 alternation
    of literals, one DFA pass) finds one of the literals every alternative contains."""
    starts: list[int] = []
    for hit in hints.finditer(data):
        start = data.rfind(b"\n", 0, hit.start()) + 1
        if not starts or starts[-1] != start:
            starts.append(start)
    found: list[Any] = []
    covered = -1
    for start in starts:
        if start <= covered:
            continue
        end = data.find(b"\n", start)
        end = len(data) if end < 0 else end
        # A pattern may span into the next line (Gradle's "What went wrong:" block).
        window_end = data.find(b"\n", end + 1) if end < len(data) else end
        window_end = len(data) if window_end < 0 else window_end
        for match in pattern.finditer(data, start, window_end):
            if match.start() <= end:
                found.append(match)
        covered = end
    return found


def _structure(log: Log, runs: list[tuple[int, str]], *, steps_known: bool = False) -> None:
    index_at = log.index_at
    markers: list[Marker] = []
    for match in _scan(_STEP_FAILED_RE, _STEP_FAILED_HINT_RE, log.data):
        command = _groups(match)["travis"]
        markers.append(Marker(index_at(match.start()), "step", _exit_of(match), _text(command) if command else None))
    for match in _scan(_JOB_FAILED_RE, _JOB_FAILED_HINT_RE, log.data):
        markers.append(Marker(index_at(match.start()), "job", _exit_of(match), None))
    for match in _scan(_TOOL_FAILED_RE, _TOOL_FAILED_HINT_RE, log.data):
        command = next((v for k, v in _groups(match).items() if v and k.startswith("cmd_")), None)
        markers.append(Marker(index_at(match.start()), "tool", _exit_of(match), _text(command) if command else None))
    markers.sort(key=lambda m: m.index)
    passed = _scan(_JOB_PASSED_RE, _JOB_PASSED_HINT_RE, log.data)
    log.passed = index_at(passed[-1].start()) if passed else None
    steps: dict[int, str] = {}
    for index, command in runs:
        steps[index] = command
    if markers and not steps_known:
        for match in _STEP_START_RE.finditer(log.data):
            command = next((g for g in match.groups() if g), b"")
            steps.setdefault(index_at(match.start()), _text(command))
    log.markers = tuple(markers)
    log.steps = tuple(sorted(steps.items()))
    log.region = _region(log)


def _region(log: Log) -> tuple[tuple[int, int], ...]:
    ends = [m.index for m in log.markers if m.kind == "step"] or [m.index for m in log.markers if m.kind == "tool"]
    if not ends:
        # No marker: the end of the log is where logs fail.
        count = len(log.line_starts)
        return ((count - TAIL_REGION_LINES, count - 1),) if count > TAIL_REGION_LINES else ()
    ranges: list[tuple[int, int]] = []
    previous_end = -1
    for end in ends:
        step = log.step_of(end)
        start = step[0] if step is not None and step[0] > previous_end else max(previous_end + 1, 0)
        start = max(start, end - REGION_LINES_WITHOUT_STEP)
        if ranges and start <= ranges[-1][1]:
            ranges[-1] = (ranges[-1][0], end)
        else:
            ranges.append((start, end))
        previous_end = end
    # A tool marker after the last step marker (a log cut before the CI system's verdict).
    last_tool = max((m.index for m in log.markers if m.kind == "tool"), default=-1)
    if last_tool > ranges[-1][1]:
        ranges.append((ranges[-1][1] + 1, last_tool))
    return tuple(ranges)


# --------------------------------------------------------------------------- entry points


_CONTROL_BYTES = bytes([b for b in range(32) if b not in (9, 10, 12, 13, 27)] + [127])


def _decode_check(head: bytes) -> None:
    """Refuse binary input: a NUL byte, or mostly control/undecodable bytes, in the first 8 KiB."""
    sample = head[:8192]
    nul = sample.find(b"\x00")
    if nul >= 0:
        raise LogUnreadable(f"input looks binary (a NUL byte at offset {nul}); give a text log")
    if len(sample) >= 256:
        control = len(sample) - len(sample.translate(None, _CONTROL_BYTES))
        invalid = sample.decode("utf-8", "replace").count("\ufffd")
        if (control + invalid) * 10 > len(sample) * 3:
            raise LogUnreadable("input looks binary (most of its first bytes are not text); give a text log")


def _count_invalid(data: bytes) -> int:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("utf-8", "replace").count("\ufffd") - data.count(b"\xef\xbf\xbd")
    return 0


def _finish(data: bytes, *, gap: int | None, tail_first: int, skipped: int, total: int) -> Log:
    invalid = _count_invalid(data)
    normalised, annotations, runs, steps_known = _normalise(data)
    log = Log(data=normalised, line_starts=_line_starts(normalised), invalid_bytes=invalid, total_bytes=total)
    if gap is not None:
        # ``gap`` is a byte offset of the raw data; normalising (ANSI, timestamps, progress
        # bars) changes byte offsets but keeps every newline, so the tail's first line is
        # the one after the head's newlines.
        log.gap_index = min(data.count(b"\n", 0, gap), len(log.line_starts))
        log.tail_first_number = tail_first
        log.skipped_lines = skipped
    log.annotations = frozenset(annotations)
    _structure(log, runs, steps_known=steps_known)
    return log


def read_text(text: str | bytes) -> Log:
    """A :class:`Log` of an in-memory text; longer than :data:`MAX_LOG_BYTES`, its head and tail."""
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(text)
    _decode_check(data)
    if len(data) <= MAX_LOG_BYTES:
        return _finish(data, gap=None, tail_first=0, skipped=0, total=len(data))
    return read_stream(io.BytesIO(data))


def read_stream(stream: BinaryIO) -> Log:
    """A :class:`Log` of a stream of any size, read in chunks: head and tail kept, lines counted."""
    head = bytearray()
    tail: deque[bytes] = deque()
    tail_size = 0
    lines_dropped = 0
    total = 0
    first = True
    while True:
        chunk = stream.read(_CHUNK)
        if not chunk:
            break
        if first:
            _decode_check(chunk)
            first = False
        total += len(chunk)
        if len(head) < HEAD_BYTES:
            take = HEAD_BYTES - len(head)
            head += chunk[:take]
            chunk = chunk[take:]
        if chunk:
            tail.append(chunk)
            tail_size += len(chunk)
            while tail_size - len(tail[0]) >= TAIL_BYTES:
                dropped = tail.popleft()
                tail_size -= len(dropped)
                lines_dropped += dropped.count(b"\n")
    if not tail:
        return _finish(bytes(head), gap=None, tail_first=0, skipped=0, total=total)
    tail_bytes = b"".join(tail)
    if len(tail_bytes) > TAIL_BYTES:
        cut = len(tail_bytes) - TAIL_BYTES
        lines_dropped += tail_bytes.count(b"\n", 0, cut)
        tail_bytes = tail_bytes[cut:]
    # Keep the head's complete lines and the tail from just after its first newline: the
    # line that straddles the cut is dropped, so every kept line is whole.
    head_bytes = bytes(head)
    head_bytes = head_bytes[: head_bytes.rfind(b"\n") + 1]
    head_lines = head_bytes.count(b"\n")
    newline = tail_bytes.find(b"\n")
    if newline >= 0:
        tail_bytes = tail_bytes[newline + 1 :]
        lines_before_tail = head_lines + lines_dropped + 1
    else:
        lines_before_tail = head_lines + lines_dropped
    return _finish(
        head_bytes + tail_bytes,
        gap=len(head_bytes),
        tail_first=lines_before_tail + 1,
        skipped=lines_before_tail - head_lines,
        total=total,
    )


def read_file(path: str | Path) -> Log:
    """A :class:`Log` of a file (``-`` is standard input); :class:`OSError` is the caller's."""
    if str(path) == "-":
        import sys

        return read_stream(sys.stdin.buffer)
    with open(path, "rb") as handle:
        return read_stream(handle)


# --------------------------------------------------------------------------- exception types in text

# "Type: message" at the start of a line, Python/Java/JS/.NET style, with the usual
# lead-ins (pytest's "E   ", Java's "Caused by: ", "Exception in thread ... ", "Uncaught ").
_TYPE_LINE_RE = _re(
    rb"(?m)^[ \t>|]{0,16}(?:E {1,8}|Caused by: |Exception in thread \"[^\"\n]{0,100}\" |Uncaught (?:\(in promise\) )?"
    rb"|Unhandled (?:exception|rejection)[.:]? |raise |\[ERROR\] |ERROR:? |error: |Error: |FATAL:? |\*\* \(|thrown )?"
    rb"(?P<type>(?:[A-Za-z_][\w$]{0,80}(?:\.|::|\\)){0,10}[A-Za-z_][\w$]{0,100})\)?(?::[ \t]|:$|$)"
)


_TYPE_GROUP = _TYPE_LINE_RE.groupindex[b"type"]


def exception_types(
    data: bytes, *, limit: int = 200, start: int = 0, end: int | None = None
) -> list[tuple[int, bytes]]:
    """``(byte offset, type)`` of every ``Type: message`` line of ``data[start:end]`` (offsets
    in ``data``; at most ``limit``, the last ones)."""
    # One line without a colon or a quote: only a lone type after at most three words of
    # prefix (past the quote marks and pipes) could match.
    one_line = b"\n" not in data and b":" not in data and b'"' not in data
    if one_line and len(data.lstrip(b" \t>|").split(None, 4)) == 5:
        return []
    found: deque[tuple[int, bytes]] = deque(maxlen=limit)
    for match in _TYPE_LINE_RE.finditer(data, start, len(data) if end is None else end):
        name = match.group(_TYPE_GROUP)
        if len(name) >= 3 and (b"." in name or name[:1].isupper()):
            found.append((match.start(_TYPE_GROUP), name))
    return list(found)


def join_lines(parts: Iterable[bytes]) -> bytes:
    return b"\n".join(parts)
