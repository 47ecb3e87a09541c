"""Suggest a signature from taught examples: a linear-time pattern that matches every example
of one code and none of the other labelled texts.

The pattern is built from what the examples share: the longest common sequence of their
words and punctuation (numbers and id-like tokens never count: they vary), literal runs
joined by a bounded wildcard, whitespace as ``\\s+``. It is checked with RE2 against the
examples (all must match) and the other labelled texts (none may). A person accepts it into
the registry; nothing is added on its own.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ipai_ops.registry import compile_pattern

#: Between two literal runs: bounded and lazy (the registry asks for linear patterns).
WILDCARD = ".{1,200}?"
#: Examples and tokens looked at (the common-sequence search is quadratic in tokens).
MAX_EXAMPLES = 50
MAX_TOKENS = 120
#: A run shorter than this (characters) is too weak to anchor on its own.
MIN_LITERAL = 4

_TOKEN = re.compile(r"\w+|[^\w\s]")
#: Tokens that vary between instances of one error: numbers, and ids mixing digits in.
_VARIABLE = re.compile(r"\d+|(?=\w*\d)\w{8,}")


class SuggestError(ValueError):
    """No pattern can be suggested (no examples, nothing shared, or it would match others)."""


@dataclass(frozen=True)
class Suggestion:
    pattern: str
    #: Examples matched (all of them) and other labelled texts matched (none).
    examples: int
    others_checked: int


def _tokens(text: str) -> list[tuple[str, bool]]:
    """(token, followed by whitespace) of a text's first line(s)."""
    out: list[tuple[str, bool]] = []
    for match in _TOKEN.finditer(text):
        spaced = match.end() < len(text) and text[match.end()].isspace()
        out.append((match.group(0), spaced))
        if len(out) >= MAX_TOKENS:
            break
    return out


def _lcs(a: list[str], b: list[str]) -> list[int]:
    """Indexes into ``a`` of a longest common subsequence of ``a`` and ``b``."""
    rows = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(len(a) - 1, -1, -1):
        for j in range(len(b) - 1, -1, -1):
            rows[i][j] = rows[i + 1][j + 1] + 1 if a[i] == b[j] else max(rows[i + 1][j], rows[i][j + 1])
    out, i, j = [], 0, 0
    while i < len(a) and j < len(b):
        if a[i] == b[j]:
            out.append(i)
            i, j = i + 1, j + 1
        elif rows[i + 1][j] >= rows[i][j + 1]:
            i += 1
        else:
            j += 1
    return out


def suggest_signature(examples: Sequence[str], others: Sequence[str]) -> Suggestion:
    """The pattern for ``examples`` (texts of one code) that matches none of ``others``."""
    examples = [e for e in examples if e and e.strip()][:MAX_EXAMPLES]
    if not examples:
        raise SuggestError("no example text to learn a signature from")
    first = _tokens(examples[0])
    kept = list(range(len(first)))
    for other in examples[1:]:
        words = [t for t, _ in _tokens(other)]
        common = _lcs([first[i][0] for i in kept], words)
        kept = [kept[i] for i in common]
    runs: list[str] = []
    current = ""
    previous = -2
    for index in kept:
        token = first[index][0]
        if _VARIABLE.fullmatch(token):
            previous = -2  # a variable part: the run ends here
            continue
        if index != previous + 1 and current:
            runs.append(current)
            current = ""
        if current and first[index - 1][1]:
            current += " "
        current += token
        previous = index
    if current:
        runs.append(current)
    runs = [r.strip() for r in runs if len(r.strip()) >= MIN_LITERAL]
    if not runs:
        raise SuggestError("the examples share no literal text to anchor a signature on")
    pattern = WILDCARD.join(re.sub(r"(?:\\ )+", r"\\s+", re.escape(run)) for run in runs)
    regex = compile_pattern(pattern)
    missed = [e for e in examples if not regex.search(e)]
    if missed:
        raise SuggestError(f"the suggested pattern {pattern!r} misses {len(missed)} example(s): write one by hand")
    matched = [o for o in others if o and regex.search(o)]
    if matched:
        raise SuggestError(
            f"{pattern!r} also matches {len(matched)} other labelled text(s) (e.g. {matched[0][:120]!r}): "
            "teach more examples or write a pattern by hand"
        )
    return Suggestion(pattern, len(examples), len(others))
