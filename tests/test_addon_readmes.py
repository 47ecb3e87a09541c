"""Addon README.rst files are generated from readme/*.md and are valid reStructuredText."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import docutils.core
import pytest

REPO = Path(__file__).resolve().parent.parent
ADDONS = sorted(p.parent for p in (REPO / "addons").glob("*/__manifest__.py"))


def test_readmes_are_generated_from_the_fragments():
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "gen_addon_readme.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("addon", ADDONS, ids=lambda p: p.name)
def test_readme_is_valid_restructuredtext(addon):
    warnings = io.StringIO()
    docutils.core.publish_doctree(
        (addon / "README.rst").read_text(encoding="utf-8"),
        settings_overrides={"warning_stream": warnings, "report_level": 2, "halt_level": 5},
    )
    assert warnings.getvalue() == ""
