"""RFC 9457 problem documents for every error the JSON API returns.

One implementation for every ipai HTTP surface: the builder and its schema live in the
framework-free core (:mod:`ipai_ops.problem`, contract ``ssot/schemas/problem.schema.json``),
which the Python service middleware uses too, so an agent parses one shape everywhere.
"""

from ipai_ops.problem import PROBLEM_CONTENT_TYPE, TYPE_PREFIX, problem, problem_errors, problem_schema

__all__ = ["PROBLEM_CONTENT_TYPE", "TYPE_PREFIX", "problem", "problem_errors", "problem_schema"]
