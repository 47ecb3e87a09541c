"""Small helpers shared by the ci modules (private)."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources


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
