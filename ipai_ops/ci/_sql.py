"""Where the ci modules keep their named queries: ``ipai_ops/ci/sql/<name>.sql`` (private)."""

from __future__ import annotations

from ipai_ops.store import NamedQueries

sql = NamedQueries("ipai_ops.ci", "sql")
