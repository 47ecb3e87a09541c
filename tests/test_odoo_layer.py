"""scripts/odoo_layer.py: the test command's --only option (the Reliability app alone)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "odoo_layer.py"
_spec = importlib.util.spec_from_file_location("odoo_layer", SCRIPT)
odoo_layer = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(odoo_layer)


def test_without_only_both_addons_and_every_argument_goes_to_pytest():
    assert odoo_layer.split_only(["-k", "sync", "-q"]) == (odoo_layer.OUR_ADDONS, ["-k", "sync", "-q"])


@pytest.mark.parametrize(
    "args",
    [
        ["--only", "ipai_reliability", "-q"],
        ["-q", "--only=ipai_reliability"],
    ],
)
def test_only_installs_that_addon_and_the_rest_goes_to_pytest(args):
    assert odoo_layer.split_only(args) == (("ipai_reliability",), ["-q"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--only"], "--only needs an addon name"),
        (["--only", "sale"], "--only sale: not one of ipai_reliability, ipai_pulser_connector"),
    ],
)
def test_a_bad_only_is_refused_with_the_reason(args, message):
    with pytest.raises(ValueError, match=message):
        odoo_layer.split_only(args)


def test_the_command_refuses_an_unknown_addon_before_touching_a_database():
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "test", "--only", "sale"], capture_output=True, text=True, check=False
    )
    if "Odoo 19 not found" in done.stderr:
        pytest.skip("Odoo 19 is not installed here")
    assert done.returncode == 2
    assert "odoo_layer: --only sale: not one of ipai_reliability, ipai_pulser_connector" in done.stderr
    assert "installing" not in done.stdout
