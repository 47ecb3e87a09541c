"""Named queries of the runs package (``ipai_ops/runs/sql/<name>.sql``), private."""

from __future__ import annotations

from functools import cache
from importlib import resources


@cache
def sql(name: str) -> str:
    return resources.files("ipai_ops.runs").joinpath("sql", f"{name}.sql").read_text(encoding="utf-8")
