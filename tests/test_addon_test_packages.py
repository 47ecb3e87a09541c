"""Odoo's own test runner (odoo-bin --test-enable) finds an addon's tests only through its
tests/__init__.py; pytest-odoo finds them by file name. Every test file must be in both."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ADDONS = Path(__file__).resolve().parent.parent / "addons"


@pytest.mark.parametrize("tests", sorted(ADDONS.glob("*/tests")), ids=lambda p: p.parent.name)
def test_every_test_module_is_imported_by_the_test_package(tests: Path):
    imported = set(re.findall(r"^from \. import (test_\w+)$", (tests / "__init__.py").read_text(), re.M))
    modules = {p.stem for p in tests.glob("test_*.py")}
    assert modules - imported == set(), f"add to {tests / '__init__.py'}"
    assert imported - modules == set(), "imports of test modules that do not exist"
