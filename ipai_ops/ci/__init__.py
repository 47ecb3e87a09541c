"""Engineering-loop tooling: CI gates, GitHub Actions failure ingest, benchmark scoring,
A/B comparisons and dataset export. Everything writes to the same ``ops`` schema.

Command wiring is in :mod:`ipai_ops.ci.cli`; each concern has its own module
(``gates``, ``github_actions``, ``bench``, ``ab``, ``dataset``).
"""

from __future__ import annotations
