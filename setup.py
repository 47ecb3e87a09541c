"""Build step pyproject.toml cannot express: the wheel carries the registry, the JSON Schemas
and the runbooks the core needs (``ssot/`` and the markdown of ``docs/``: the runbooks and the
pages they link to), under ``ipai_ops/_data/`` in the same layout, so an installed ``ipai-ops``
works with no checkout around it (``ipai_ops.config.repo_root`` falls back to them). Everything
else is in pyproject.toml; the sdist carries the same files (MANIFEST.in)."""

from __future__ import annotations

import fnmatch
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
#: Checkout trees copied into the package, relative to the checkout and to ``ipai_ops/_data``,
#: with the file names kept (None: every file).
DATA_TREES = {"ssot": None, "docs": "*.md"}


class BuildPyWithData(build_py):
    def run(self) -> None:
        super().run()
        # An editable install reads the checkout itself (config.repo_root finds it first).
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib) / "ipai_ops" / "_data"
        for tree, keep in DATA_TREES.items():
            source = ROOT / tree
            if not source.is_dir():
                raise SystemExit(f"setup.py: {source} is missing: the wheel cannot carry the registry and runbooks")
            shutil.rmtree(target / tree, ignore_errors=True)
            shutil.copytree(source, target / tree, ignore=_ignore(keep))
        # A tree left empty by the filter (docs/img) is not worth a directory.
        for folder in sorted(target.rglob("*"), reverse=True):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()


def _ignore(keep: str | None):
    def ignore(folder: str, names: list[str]) -> set[str]:
        skipped = {n for n in names if n == "__pycache__" or n.endswith(".pyc")}
        if keep is not None:
            skipped |= {n for n in names if not (Path(folder) / n).is_dir() and not fnmatch.fnmatch(n, keep)}
        return skipped

    return ignore


setup(cmdclass={"build_py": BuildPyWithData})
