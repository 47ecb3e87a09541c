"""Small helpers shared by the ci modules (private)."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from typing import Any

import yaml


class LineLoader(yaml.SafeLoader):
    """SafeLoader that records each mapping's 1-based line under ``__line__``.

    Booleans follow YAML 1.2 (true/false only), as in the failure-mode registry:
    YAML 1.1 would turn ``on``/``yes``/``no`` into booleans behind the author's back.
    """


LineLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
LineLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _construct_mapping(loader: LineLoader, node: yaml.MappingNode) -> dict[str, Any]:
    mapping = loader.construct_mapping(node, deep=True)
    mapping["__line__"] = node.start_mark.line + 1
    return mapping


LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml_with_lines(text: str) -> Any:
    return yaml.load(text, Loader=LineLoader)


def strip_lines(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: strip_lines(v) for k, v in obj.items() if k != "__line__"}
    if isinstance(obj, list):
        return [strip_lines(v) for v in obj]
    return obj


def line_of(doc: Any, path: list[Any]) -> int | None:
    """The line of the deepest mapping on ``path`` inside a :func:`load_yaml_with_lines` doc."""
    node, line = doc, None
    for part in path:
        if isinstance(node, dict):
            line = node.get("__line__", line)
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            break
    if isinstance(node, dict):
        line = node.get("__line__", line)
    return line


@cache
def sql(name: str) -> str:
    """A named query from ``ipai_ops/ci/sql/<name>.sql``."""
    return resources.files("ipai_ops.ci").joinpath("sql", f"{name}.sql").read_text(encoding="utf-8")


def glob_to_regex(pattern: str) -> re.Pattern[str]:
    """A repository glob as a regex: ``**`` spans directories, ``*`` and ``?`` do not.

    fnmatch lets ``*`` cross ``/``, which would make ``docs/*.md`` match
    ``docs/a/b.md``; risky-path globs need the stricter, gitignore-like reading.
    """
    out = ["^"]
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    out.append("$")
    return re.compile("".join(out))
