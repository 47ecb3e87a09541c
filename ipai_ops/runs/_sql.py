"""Where the runs package keeps its named queries: ``ipai_ops/runs/sql/<name>.sql`` (private)."""

from __future__ import annotations

from ipai_ops.store import NamedQueries

sql = NamedQueries("ipai_ops.runs", "sql")
