"""The layers of ipai_ops hold (docs/architecture.md, "Layers"): import-linter keeps the
contracts of ``.importlinter`` (the store on the ground floor, the core without the CI
tooling, no Odoo), and the core reads no table of the Odoo addons."""

from __future__ import annotations

import re
from pathlib import Path

from importlinter import api  # configures import-linter before its use cases run
from importlinter.application import use_cases

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / ".importlinter"

#: A statement naming a table it reads or writes (SQL comments are removed first).
_TABLE_USE = re.compile(
    r"\b(?:FROM|JOIN|INTO|UPDATE|TABLE)\s+(?:ONLY\s+)?\"?((?:[a-z_][a-z0-9_]*\.)?[a-z_][a-z0-9_]*)", re.I
)
_SQL_COMMENT = re.compile(r"--[^\n]*")
_PY_IMPORT = re.compile(r"^\s*from\s+[\w.]+\s+import\b.*$", re.M)
_MODEL_TABLE = re.compile(r"^\s*_(?:name|table)\s*=\s*[\"']([a-z0-9_.]+)[\"']", re.M)


def test_the_import_contracts_are_kept(capsys):
    kept = use_cases.lint_imports(config_filename=str(CONFIG), cache_dir=None, no_logo=True)
    assert kept, capsys.readouterr().out


def addon_tables() -> set[str]:
    """The tables of the addons' models (``_name`` with dots as underscores, or ``_table``)."""
    return {
        name.replace(".", "_")
        for path in ROOT.glob("addons/*/models/*.py")
        for name in _MODEL_TABLE.findall(path.read_text(encoding="utf-8"))
    }


def tables_used(text: str) -> set[str]:
    """The tables ``text`` names after FROM, JOIN, INTO, UPDATE or TABLE (``public.`` dropped)."""
    text = _PY_IMPORT.sub("", _SQL_COMMENT.sub("", text))
    return {name.lower().removeprefix("public.") for name in _TABLE_USE.findall(text)}


def core_files() -> list[Path]:
    """The Python and SQL files of the core: the source modules of the core-without-ci contract."""
    contracts = api.read_configuration(str(CONFIG))["contracts_options"]
    contract = next(c for c in contracts if c["id"] == "core-without-ci")
    files = []
    for module in contract["source_modules"]:
        path = ROOT.joinpath(*module.split("."))
        files += sorted(p for p in path.rglob("*") if p.suffix in (".py", ".sql")) if path.is_dir() else []
        files += [path.with_suffix(".py")] if path.with_suffix(".py").is_file() else []
    return files


def test_the_detector_knows_the_addon_tables_and_finds_a_read():
    tables = addon_tables()
    assert {"ipai_pulser_intent", "ipai_agent_error", "ipai_failure_mode"} <= tables
    assert tables_used("SELECT i.id FROM ipai_pulser_intent i JOIN public.ipai_failure_mode m ON true") == {
        "ipai_pulser_intent",
        "ipai_failure_mode",
    }
    assert tables_used("from ipai_ops import config\n") == set()
    assert tables_used("-- the Odoo view ipai_agent_error reads FROM ipai_agent_error\nSELECT 1 FROM ops.x") == {
        "ops.x"
    }


def test_the_core_reads_no_addon_table():
    tables = addon_tables()
    files = core_files()
    assert ROOT / "ipai_ops" / "store" / "schema.sql" in files and ROOT / "ipai_ops" / "text.py" in files
    found = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in files
        for name in tables_used(path.read_text(encoding="utf-8")) & tables
    }
    assert not found, "the core reads tables of the Odoo addons (read them outside the core): " + ", ".join(
        sorted(found)
    )
