"""YAML with line numbers, for validators that must say *where* a problem is (private).

Booleans follow YAML 1.2 (only true/false): under PyYAML's default YAML 1.1 rules
the registry's signature key ``on`` (and yes/no/off) would silently turn into a
boolean behind the author's back.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import jsonschema
import yaml

#: libyaml's parser when PyYAML was built with it (the registry parses ~10x faster).
_BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class LineLoader(_BaseLoader):  # type: ignore[misc,valid-type]
    """SafeLoader that records each mapping's 1-based line under ``__line__``."""


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


def load_with_lines(text: str) -> Any:
    """Parse YAML; every mapping carries ``__line__``. Raises ``yaml.YAMLError``."""
    return yaml.load(text, Loader=LineLoader)


def parse_error(exc: yaml.YAMLError) -> tuple[int | None, str]:
    """Where parsing failed (1-based line, when PyYAML knows it) and ``invalid YAML: <why>``."""
    mark = getattr(exc, "problem_mark", None)
    reason = getattr(exc, "problem", None) or str(exc)
    return (mark.line + 1 if mark else None), f"invalid YAML: {reason}"


def schema_errors(validator: jsonschema.protocols.Validator, doc: Any) -> list[tuple[int | None, str]]:
    """Every schema violation of a :func:`load_with_lines` document as
    ``(line, "schema: <json/path>: <message>")``, in path order."""
    out = []
    for err in sorted(validator.iter_errors(strip_lines(doc)), key=lambda e: list(map(str, e.absolute_path))):
        path = list(err.absolute_path)
        where = "/".join(str(p) for p in path) or "document"
        out.append((line_of(doc, path), f"schema: {where}: {err.message}"))
    return out


def strip_lines(obj: Any) -> Any:
    """The same document without the ``__line__`` keys."""
    if isinstance(obj, dict):
        return {k: strip_lines(v) for k, v in obj.items() if k != "__line__"}
    if isinstance(obj, list):
        return [strip_lines(v) for v in obj]
    return obj


def line_of(doc: Any, path: Iterable[Any]) -> int | None:
    """The line of the deepest mapping on ``path`` inside a :func:`load_with_lines` document."""
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
