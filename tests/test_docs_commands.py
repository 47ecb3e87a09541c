"""Every `ipai-ops ...` command written in the docs exists, with the flags it is given.

Runbooks are followed at 3 a.m.: a renamed flag in the CLI must fail CI, not the reader.
"""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest

from ipai_ops.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted(
    [ROOT / "README.md", *ROOT.glob("docs/**/*.md"), *ROOT.glob("addons/*/readme/*.md"), *ROOT.glob("ssot/**/*.md")]
)
_INVOCATION = re.compile(r"ipai-ops((?:\s+[^\s`|;&)]+)+)")


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {opt for action in parser._actions for opt in action.option_strings}


def invocations() -> list[tuple[str, int, list[str]]]:
    found = []
    for path in DOCS:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            for match in _INVOCATION.finditer(line):
                try:
                    words = shlex.split(match.group(1), comments=False)
                except ValueError:
                    words = match.group(1).split()
                found.append((f"{path.relative_to(ROOT)}:{number}", number, words))
    return found


def check(words: list[str]) -> str | None:
    """Why this invocation is wrong, or None. Stops at the first word that is not a command."""
    parser = build_parser()
    path = []
    for word in words:
        subs = _subparsers(parser)
        if not subs:
            break
        if word.startswith("-") or word not in subs:
            if not path and word in ("--version", "--help", "-h"):
                return None
            if word.startswith("<") or word.isupper() or not re.match(r"^[a-z][a-z-]*$", word):
                return None  # a placeholder in prose, e.g. `ipai-ops <group>`
            return f"unknown command {' '.join([*path, word])!r}"
        path.append(word)
        parser = subs[word]
    if _subparsers(parser):
        return None  # a command group named in prose (e.g. "the `ipai-ops gate` commands")
    known = _options(parser)
    for word in words[len(path) :]:
        flag = word.split("=", 1)[0]
        if flag.startswith("--") and re.match(r"^--[a-z][a-z0-9-]*$", flag) and flag not in known:
            return f"{' '.join(path)} has no option {flag}"
    return None


CASES = invocations()


def test_the_docs_name_commands_at_all():
    assert len(CASES) > 50


@pytest.mark.parametrize(("where", "number", "words"), CASES, ids=[c[0] for c in CASES])
def test_documented_command_exists(where, number, words):
    assert check(words) is None, f"{where}: ipai-ops {' '.join(words)}: {check(words)}"
