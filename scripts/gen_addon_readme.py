#!/usr/bin/env python3
"""Generate each addon's README.rst from its readme/*.md fragments (as oca-gen-addon-readme does).

    python scripts/gen_addon_readme.py            # write addons/*/README.rst
    python scripts/gen_addon_readme.py --check    # exit 1 when a README.rst is stale

oca-gen-addon-readme (OCA/maintainer-tools) is not on PyPI; this renders the same
layout (title, maturity and licence badges, DESCRIPTION, table of contents,
CONFIGURE, USAGE, credits) from the manifest and the markdown fragments, parsing
the markdown with markdown-it (the renderer the project already uses).
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

from markdown_it import MarkdownIt
from markdown_it.token import Token

REPO = Path(__file__).resolve().parent.parent
SECTIONS = (("CONFIGURE", "Configuration"), ("USAGE", "Usage"))
UNDERLINES = {1: "=", 2: "-", 3: "~", 4: "^"}
_md = MarkdownIt("commonmark").enable("table")


def _inline(tokens: list[Token]) -> str:
    out: list[str] = []
    href = None
    for tok in tokens:
        if tok.type == "text":
            out.append(tok.content.replace("*", r"\*").replace("`", r"\`"))
        elif tok.type == "code_inline":
            out.append(f"``{tok.content}``")
        elif tok.type in ("strong_open", "strong_close"):
            out.append("**")
        elif tok.type in ("em_open", "em_close"):
            out.append("*")
        elif tok.type == "link_open":
            href = tok.attrGet("href")
            out.append("`")
        elif tok.type == "link_close":
            out.append(f" <{href}>`__")
        elif tok.type in ("softbreak", "hardbreak"):
            out.append(" " if tok.type == "softbreak" else "\n")
        elif tok.type == "image":
            out.append(tok.attrGet("alt") or "")
        else:
            out.append(tok.content)
    return "".join(out)


def md_to_rst(text: str, *, base_level: int = 1) -> str:
    tokens = _md.parse(text)
    lines: list[str] = []
    lists: list[list] = []  # stack of [kind, counter]
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        indent = "   " * max(len(lists) - 1, 0)
        if tok.type == "heading_open":
            title = _inline(tokens[i + 1].children or [])
            level = int(tok.tag[1]) + base_level
            lines += [title, UNDERLINES.get(level, "^") * len(title), ""]
            i += 3
            continue
        if tok.type in ("bullet_list_open", "ordered_list_open"):
            lists.append([tok.type.split("_")[0], 0])
        elif tok.type in ("bullet_list_close", "ordered_list_close"):
            lists.pop()
            if not lists:
                lines.append("")
        elif tok.type == "list_item_open":
            lists[-1][1] += 1
        elif tok.type == "inline":
            content = _inline(tok.children or [])
            if lists and tokens[i - 1].type == "paragraph_open" and tokens[i - 2].type == "list_item_open":
                marker = "-" if lists[-1][0] == "bullet" else f"{lists[-1][1]}."
                pad = " " * (len(marker) + 1)
                body = content.replace("\n", "\n" + indent + pad)
                lines.append(f"{indent}{marker} {body}")
            elif lists:
                lines.append(indent + "  " + content)
            else:
                lines += [content, ""]
        elif tok.type in ("fence", "code_block"):
            lang = (tok.info or "").strip().split(" ")[0]
            lines += [f"{indent}.. code-block:: {lang}" if lang else f"{indent}::", ""]
            lines += [f"{indent}   {line}" if line else "" for line in tok.content.rstrip("\n").split("\n")]
            lines.append("")
        elif tok.type == "table_open":
            j = i
            rows: list[list[str]] = []
            while tokens[j].type != "table_close":
                if tokens[j].type == "tr_open":
                    rows.append([])
                elif tokens[j].type == "inline":
                    rows[-1].append(_inline(tokens[j].children or []))
                j += 1
            lines += [".. list-table::", "   :header-rows: 1", ""]
            for row in rows:
                lines += [f"   * - {row[0]}"] + [f"     - {cell}" for cell in row[1:]]
            lines.append("")
            i = j + 1
            continue
        i += 1
    return "\n".join(lines).rstrip() + "\n"


def render(addon: Path) -> str:
    manifest = ast.literal_eval((addon / "__manifest__.py").read_text(encoding="utf-8"))
    name = manifest["name"]
    status = manifest.get("development_status", "Beta")
    license_ = manifest.get("license", "LGPL-3")
    out = [
        "=" * len(name),
        name,
        "=" * len(name),
        "",
        "..",
        "   !! This file is generated from the readme/ fragments (scripts/gen_addon_readme.py).",
        "   !! Edit readme/*.md instead.",
        "",
        "|badge1| |badge2|",
        "",
        f".. |badge1| image:: https://img.shields.io/badge/maturity-{status}-yellow.png",
        f"    :alt: {status}",
        f".. |badge2| image:: https://img.shields.io/badge/license-{license_.replace('-', '--')}-blue.png",
        "    :target: http://www.gnu.org/licenses/lgpl-3.0-standalone.html",
        f"    :alt: License: {license_}",
        "",
    ]
    desc = addon / "readme" / "DESCRIPTION.md"
    if desc.exists():
        out.append(md_to_rst(desc.read_text(encoding="utf-8"), base_level=1))
    out += ["**Table of contents**", "", ".. contents::", "   :local:", ""]
    for fragment, title in SECTIONS:
        path = addon / "readme" / f"{fragment}.md"
        if path.exists():
            out += [title, "=" * len(title), "", md_to_rst(path.read_text(encoding="utf-8"), base_level=1)]
    out += ["Credits", "=======", "", "Authors", "-------", "", f"* {manifest.get('author', '')}", ""]
    contributors = addon / "readme" / "CONTRIBUTORS.md"
    if contributors.exists():
        out += ["Contributors", "------------", "", md_to_rst(contributors.read_text(encoding="utf-8"), base_level=3)]
    maintainers = manifest.get("maintainers") or []
    if maintainers:
        out += ["Maintainers", "-----------", "", *[f"* {m}" for m in maintainers], ""]
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    stale = []
    for manifest in sorted((REPO / "addons").glob("*/__manifest__.py")):
        addon = manifest.parent
        content = render(addon)
        target = addon / "README.rst"
        if args.check:
            if not target.exists() or target.read_text(encoding="utf-8") != content:
                stale.append(str(target.relative_to(REPO)))
        else:
            target.write_text(content, encoding="utf-8")
            print(f"wrote {target.relative_to(REPO)}")
    if stale:
        print("stale (run python scripts/gen_addon_readme.py): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
