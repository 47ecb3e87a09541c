"""ipai_ops: the framework-free core of the reliability layer.

Taxonomy (the failure-mode registry), classification, fingerprints, failure
envelopes, retry policy and the ``ops`` PostgreSQL schema. Nothing here imports
``odoo``: the Odoo addons, the OTLP bridge and the CLI all share this code.
"""

from __future__ import annotations

__version__ = "0.1.0"
