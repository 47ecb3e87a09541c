"""Runbooks: the markdown files every active failure code links to.

One renderer (markdown-it, CommonMark) serves the validator, the Odoo app and
the CLI, so what is checked here is what people read there.
"""

from __future__ import annotations

import re
from pathlib import Path

from markdown_it import MarkdownIt

from ipai_ops.registry import CODE_RE, FailureMode, Problem, Registry

#: The sections every runbook has, in this order (docs/runbooks/_template.md).
REQUIRED_SECTIONS = (
    "Signatures",
    "What the user sees",
    "Impact and severity",
    "Likely causes",
    "Diagnosis",
    "Recovery",
    "Verify",
    "Escalation",
    "Prevention",
)

_md = MarkdownIt("commonmark").enable("table")
_LINK_RE = re.compile(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_TICKED_CODE_RE = re.compile(r"`([A-Z][A-Z0-9_]*(?:\.[A-Z][A-Z0-9_]*)+)`")
_FENCE_RE = re.compile(r"^\s*(```|~~~)(.*)$")


def render_html(markdown_text: str) -> str:
    """Render runbook markdown to HTML; mermaid blocks stay as ``<pre><code class="language-mermaid">``."""
    return _md.render(markdown_text)


def _fences(lines: list[str]) -> tuple[list[tuple[int, str]], int | None]:
    """(opening line, info) of each fenced block, and the line of an unclosed fence."""
    blocks: list[tuple[int, str]] = []
    open_at: int | None = None
    marker = ""
    for number, line in enumerate(lines, start=1):
        match = _FENCE_RE.match(line)
        if not match:
            continue
        if open_at is None:
            open_at, marker = number, match.group(1)
            blocks.append((number, match.group(2).strip()))
        elif match.group(1) == marker and not match.group(2).strip():
            open_at = None
    return blocks, open_at


def check_runbook(mode: FailureMode, registry: Registry, repo_root: Path) -> list[Problem]:
    """Every problem with ``mode``'s runbook: existence, title, sections, codes, links, fences."""
    rel = mode.runbook
    path = repo_root / rel
    if not path.is_file():
        return [Problem(registry.path, mode.line, mode.code, f"runbook {rel} does not exist")]
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    problems: list[Problem] = []

    def add(line: int | None, message: str) -> None:
        problems.append(Problem(rel, line, mode.code, message))

    first = next((i for i, line in enumerate(lines, 1) if line.strip()), None)
    if first is None:
        return [Problem(rel, None, mode.code, "runbook is empty")]
    if not lines[first - 1].startswith(f"# {mode.code}"):
        add(first, f"first heading must be '# {mode.code}: <title>'")

    blocks, unclosed = _fences(lines)
    if unclosed is not None:
        add(unclosed, "code fence is never closed")
    in_fence = _fence_mask(lines)

    headings = {
        line[3:].strip(): number
        for number, line in enumerate(lines, start=1)
        if line.startswith("## ") and not in_fence[number - 1]
    }
    last = 0
    for section in REQUIRED_SECTIONS:
        at = headings.get(section)
        if at is None:
            add(None, f"missing required section '## {section}'")
            continue
        if at < last:
            add(at, f"section '## {section}' is out of order (expected order: {', '.join(REQUIRED_SECTIONS)})")
        last = max(last, at)
        body = _section_body(lines, at, in_fence)
        if not body.strip():
            add(at, f"section '## {section}' is empty")
        elif placeholder := _placeholder(body):
            problems.append(
                Problem(
                    rel,
                    at,
                    mode.code,
                    f"section '## {section}' is still a placeholder ({placeholder!r}): write what a reader does",
                    severity="warning",
                )
            )

    for number, line in enumerate(lines, start=1):
        for code in _TICKED_CODE_RE.findall(line):
            if CODE_RE.match(code) and code.split(".")[0] in _categories(registry) and code not in registry:
                add(number, f"names unknown failure code {code}")
        if in_fence[number - 1]:
            continue
        for target in _LINK_RE.findall(line):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue
            local = target.split("#", 1)[0]
            if local and not (path.parent / local).exists():
                add(number, f"link target {target} does not exist")

    for number, info in blocks:
        if info == "mermaid":
            body = _block_body(lines, number)
            if not body or not re.match(r"^\s*(flowchart|graph|sequenceDiagram|stateDiagram(-v2)?)\b", body[0]):
                add(number, "mermaid block must start with a diagram type (flowchart, graph, ...)")
            elif re.match(r"^\s*(flowchart|graph)\b", body[0]):
                for at, label in _unsafe_mermaid_labels(lines, number):
                    add(at, f"mermaid label {label!r} needs quotes: it holds a character Mermaid parses as syntax")
    return problems


# A node label in [..], (..) or {..}: Mermaid reads ; ( ) [ ] { } inside an
# unquoted label as syntax (flowchart grammar), so such labels must be "quoted".
_NODE_LABEL_RE = re.compile(
    r"\b[A-Za-z][\w-]*(\[\[|\[\(|\(\[|\(\(|\[|\(|\{)(?!\")(.*?)(\]\]|\)\]|\]\)|\)\)|\]|\)|\})(?=\s*(?:$|-|&|:::|;))"
)
_EDGE_LABEL_RE = re.compile(r"(?:--|==|-\.)\s*(?!\")([^>\n]*?)\s*(?:-->|==>|\.->)")
_MERMAID_SYNTAX_CHARS = set(';()[]{}"')


def _unsafe_mermaid_labels(lines: list[str], opening_line: int) -> list[tuple[int, str]]:
    found = []
    for index in range(opening_line, len(lines)):
        line = lines[index]
        if _FENCE_RE.match(line):
            break
        for match in _NODE_LABEL_RE.finditer(line):
            if _MERMAID_SYNTAX_CHARS & set(match.group(2)):
                found.append((index + 1, match.group(2)))
        for match in _EDGE_LABEL_RE.finditer(line):
            if _MERMAID_SYNTAX_CHARS & set(match.group(1)):
                found.append((index + 1, match.group(1)))
    return found


def _categories(registry: Registry) -> set[str]:
    return {m.category for m in registry}


def _fence_mask(lines: list[str]) -> list[bool]:
    mask, inside, marker = [], False, ""
    for line in lines:
        match = _FENCE_RE.match(line)
        if match and not inside:
            inside, marker = True, match.group(1)
            mask.append(True)
        elif match and inside and match.group(1) == marker and not match.group(2).strip():
            inside = False
            mask.append(True)
        else:
            mask.append(inside)
    return mask


# A stub's "TODO" (the Odoo "Create failure mode" wizard writes them) or a template line
# such as "<Ranked, most likely first. Numbered list.>" left in place.
_PLACEHOLDER_RE = re.compile(r"^\s*(?:(?:\d+\.|[-*]|#)\s*)?(TODO\b.*|<[A-Z][^<>]*>)\s*$", re.MULTILINE)


def _placeholder(body: str) -> str | None:
    match = _PLACEHOLDER_RE.search(body)
    return match.group(1)[:60] if match else None


def _section_body(lines: list[str], heading_line: int, in_fence: list[bool]) -> str:
    body = []
    for index in range(heading_line, len(lines)):
        if lines[index].startswith("## ") and not in_fence[index]:
            break
        body.append(lines[index])
    return "\n".join(body)


def _block_body(lines: list[str], opening_line: int) -> list[str]:
    body = []
    for line in lines[opening_line:]:
        if _FENCE_RE.match(line):
            break
        if line.strip():
            body.append(line)
    return body


def check_all(registry: Registry, repo_root: Path) -> list[Problem]:
    problems: list[Problem] = []
    for mode in registry.active():
        problems.extend(check_runbook(mode, registry, repo_root))
    return problems
