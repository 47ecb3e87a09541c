"""ipai_ops.problem: the framework-free RFC 9457 builder that the Odoo connector's moves to."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from ipai_ops import problem as problems
from ipai_ops.problem import ProblemInvalid, problem, problem_errors, validate_problem

REPO = Path(__file__).resolve().parents[2]


def test_the_connector_answers_with_this_builder():
    """One implementation: the Odoo connector imports the core's builder (no module of its own)."""
    addon = REPO / "addons" / "ipai_pulser_connector"
    assert not (addon / "services" / "problems.py").exists()
    tree = ast.parse((addon / "controllers" / "main.py").read_text(encoding="utf-8"))
    imported = {
        (node.module, alias.name) for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) for alias in node.names
    }
    assert {("ipai_ops.problem", "problem"), ("ipai_ops.problem", "PROBLEM_CONTENT_TYPE")} <= imported


def test_schema_is_the_ssot_file():
    schema = problems.problem_schema()
    assert schema["$id"] == "urn:ipai:schema:problem:1"
    assert schema["properties"]["type"]["pattern"].startswith("^urn:ipai:failure:")


def test_status_comes_from_the_mode_else_500(registry):
    assert problem(registry, "WEBHOOK.DELIVERY_DUPLICATE", detail="", instance="/")["status"] == 409
    assert problem(registry, "UNCLASSIFIED.UNKNOWN", detail="", instance="/")["status"] == 500
    assert problem(registry, "WEBHOOK.DELIVERY_DUPLICATE", detail="", instance="/", status=422)["status"] == 422


def test_alias_becomes_the_canonical_code(registry):
    doc = problem(registry, "SIGNATURE_INVALID", detail="bad", instance="/hook", correlation_id="abc")
    assert doc["type"] == "urn:ipai:failure:WEBHOOK.SIGNATURE_INVALID"
    assert doc["ipai"] == {"code": "WEBHOOK.SIGNATURE_INVALID", "retryable": False, "correlation_id": "abc"}
    validate_problem(doc)


def test_invalid_documents_name_every_violation(registry):
    doc = problem(registry, "WEBHOOK.SIGNATURE_INVALID", detail="bad", instance="/hook")
    doc["type"] = "about:blank"
    doc["status"] = 200
    del doc["ipai"]["retryable"]
    errors = problem_errors(doc)
    assert len(errors) == 3
    assert any(e.startswith("/type:") for e in errors) and any(e.startswith("/status:") for e in errors)
    with pytest.raises(ProblemInvalid) as err:
        validate_problem(doc)
    assert err.value.errors == errors
