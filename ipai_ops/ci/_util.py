"""Named queries of the ci modules (private)."""

from __future__ import annotations

from functools import cache
from importlib import resources


@cache
def sql(name: str) -> str:
    """A named query from ``ipai_ops/ci/sql/<name>.sql``."""
    return resources.files("ipai_ops.ci").joinpath("sql", f"{name}.sql").read_text(encoding="utf-8")
