"""The demo's content digest (``ipai-ops demo --content-digest``), which ``scripts/run.sh``
keeps in ``var/demo-<db>.done`` to run the demo again on a database when its content changed:
any change to the demo's code or sample PRs changes it, and nothing else does."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ipai_ops import demo
from ipai_ops.cli import main
from ipai_ops.demo import samples

REPO = Path(__file__).resolve().parents[2]


def test_the_content_is_the_demo_package_and_the_prs_it_scores():
    files = demo.content_files()
    package = sorted((REPO / "ipai_ops" / "demo").glob("*.py"))
    assert package and set(package) <= set(files)
    assert set(samples.fixture_files()) <= set(files)
    assert len(samples.fixture_files()) == 3
    assert set(files) == set(package) | set(samples.fixture_files())


@pytest.fixture
def copy(tmp_path) -> list[Path]:
    """The demo's content in another checkout (same folder names, another root)."""
    copied = []
    for path in demo.content_files():
        target = tmp_path / "elsewhere" / path.parent.name / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        copied.append(target)
    return copied


def test_the_same_content_elsewhere_has_the_same_digest(copy):
    assert demo.content_digest(copy) == demo.content_digest()
    assert demo.content_digest(list(reversed(copy))) == demo.content_digest()


def test_any_change_to_the_content_changes_the_digest(copy):
    before = demo.content_digest(copy)
    seen = {before}
    for path in copy:
        original = path.read_bytes()
        path.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))  # one bit, same length
        changed = demo.content_digest(copy)
        assert changed not in seen, f"a change to {path.name} left the digest at {changed}"
        seen.add(changed)
        path.write_bytes(original)
    assert demo.content_digest(copy) == before
    # a new sample file, or a file renamed, is new content too
    extra = copy[0].with_name("new_samples.py")
    extra.write_text("ROWS = ()\n")
    assert demo.content_digest([*copy, extra]) != before
    renamed = copy[0].rename(copy[0].with_name("renamed.py"))
    assert demo.content_digest([renamed, *copy[1:]]) != before


def test_the_cli_prints_the_digest_and_sends_nothing(capsys, monkeypatch):
    # nothing listens here: the flag must not reach the bridge, the database or Odoo
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("IPAI_OPS_DSN", "postgresql://127.0.0.1:9/nothing")
    monkeypatch.setenv("IPAI_ODOO_URL", "http://127.0.0.1:9")
    assert main(["demo", "--content-digest"]) == 0
    assert capsys.readouterr().out == demo.content_digest() + "\n"


def _run_sh_demo_block() -> str:
    """run.sh's demo step, as it is in the script: from the digest to its closing ``fi``."""
    lines = (REPO / "scripts" / "run.sh").read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("demo_digest="))
    end = next(i for i in range(start, len(lines)) if lines[i] == "fi")
    return "\n".join(lines[start : end + 1])


def test_run_sh_runs_the_demo_once_per_database_and_again_when_the_digest_changes(tmp_path):
    # run.sh's own lines in bash; ipai-ops is a stand-in that prints $DIGEST for
    # --content-digest and logs every demo run (the real flag is tested above)
    venv_bin = tmp_path / "venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "ipai-ops").write_text(
        '#!/bin/sh\nif [ "$2" = "--content-digest" ]; then echo "$DIGEST"; exit 0; fi\n'
        'echo "$*" >>"$RUNS"\nexit "${DEMO_EXIT:-0}"\n'
    )
    (venv_bin / "ipai-ops").chmod(0o755)
    var = tmp_path / "var"
    var.mkdir()
    script = "say() { :; }\n" + _run_sh_demo_block()
    runs = tmp_path / "runs.log"

    def run_sh(digest: str, *, demo_exit: int = 0) -> int:
        env = {"PATH": os.environ["PATH"], "VENV": str(tmp_path / "venv"), "VAR": str(var), "DB": "ipai",
               "HTTP_PORT": "4318", "ODOO_PORT": "8069", "src": "", "DIGEST": digest, "RUNS": str(runs),
               "DEMO_EXIT": str(demo_exit)}  # fmt: skip
        subprocess.run(["bash", "-euo", "pipefail", "-c", script], env=env, check=True)
        return len(runs.read_text().splitlines()) if runs.exists() else 0

    marker = var / "demo-ipai.done"
    marker.touch()  # the marker of a database demoed before markers were versioned
    assert run_sh("aaaa") == 1
    assert marker.read_text() == "aaaa\n"
    assert run_sh("aaaa") == 1  # unchanged demo: not again
    assert run_sh("bbbb", demo_exit=1) == 2  # changed: again; it failed, so the marker stays
    assert marker.read_text() == "aaaa\n"
    assert run_sh("bbbb") == 3
    assert run_sh("bbbb") == 3
    assert marker.read_text() == "bbbb\n"
    assert "--no-intents" in runs.read_text().splitlines()[-1]
