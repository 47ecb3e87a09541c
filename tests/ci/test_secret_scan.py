"""``ipai-ops gate secrets`` and the secrets registry, on throwaway git checkouts.

The credential-looking values here are invented and assembled at run time, so the
repository's own scan (scripts/test.sh) does not meet them in this file.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from ipai_ops import secrets_registry, ssot
from ipai_ops.classify import classify
from ipai_ops.secrets_registry import REGISTRY_PATH

REPO = Path(__file__).resolve().parents[2]
AWS_KEY = "AKIA" + "Q3EGRWPLTZ7YKMNB"  # the shape of an AWS access key id
GITHUB_PAT = "ghp_" + "x7Rk2Lm9Qw4Tz8Vb3Nc6Yd1Hf5Jg0Ks2Pa4E"


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A git checkout with the real secrets registry and one product file."""
    root = tmp_path / "repo"
    (root / REGISTRY_PATH).parent.mkdir(parents=True)
    shutil.copy(REPO / REGISTRY_PATH, root / REGISTRY_PATH)
    (root / "ipai_ops").mkdir()
    (root / "ipai_ops" / "settings.py").write_text('import os\nTOKEN = os.environ["IPAI_BRIDGE_TOKEN"]\n')
    _git(root, "init", "-q")
    _git(root, "add", ".")
    return root


def test_the_real_registry_is_valid_and_lists_what_the_product_reads():
    registry, problems = secrets_registry.load(REPO)
    assert problems == [] and registry is not None
    assert {"IPAI_BRIDGE_TOKENS", "IPAI_PULSER_PEPPER", "GITHUB_TOKEN"} <= set(registry.secrets)
    assert registry.knows("MAX_TOKENS") and not registry.knows("STRIPE_API_KEY")
    for entry in registry.secrets.values():
        assert 1 <= entry["rotation_days"] <= 730 and entry["owner"] and entry["rotation"]


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("schema_version: 1\nsecrets: [{name: X_TOKEN, value: abc}]\n", "Additional properties"),
        ("schema_version: 1\nsecrets:\n  - {name: X_TOKEN}\n", "'description' is a required property"),
        (
            "schema_version: 1\nsecrets:\n"
            + "  - {name: A_TOKEN, description: the token of A, lives_in: [environment], owner: sre,"
            " rotation_days: 90, rotation: rotate it}\n" * 2,
            "listed twice",
        ),
        (
            "schema_version: 1\nsecrets:\n  - {name: A_TOKEN, description: the token of A, lives_in: [environment],"
            " owner: sre, rotation_days: 90, rotation: rotate it}\nnot_secrets:\n  - {name: A_TOKEN, why: a count}\n",
            "as a secret and as not a secret",
        ),
        ("schema_version: 1\nsecrets: [\n", "invalid YAML"),
        (
            "schema_version: 1\nsecrets:\n  - {name: A_TOKEN, description: the token of A, lives_in: [vault9],"
            " owner: sre, rotation_days: 9999, rotation: rotate it}\n",
            "schema",
        ),
    ],
)
def test_a_broken_registry_is_reported_with_its_line(text, why):
    registry, problems = secrets_registry.parse(text, source="ssot/secrets/registry.yaml")
    assert registry is None
    assert any(why in p.message for p in problems), [p.format() for p in problems]


def test_ssot_check_reports_a_broken_secrets_registry(tmp_path):
    shutil.copytree(REPO / "ssot", tmp_path / "ssot")
    shutil.copytree(REPO / "docs", tmp_path / "docs")
    assert ssot.check(repo_root=tmp_path, registry_path=tmp_path / "ssot/errors/failure_modes.yaml").ok
    (tmp_path / REGISTRY_PATH).write_text("schema_version: 1\nsecrets: []\n")
    report = ssot.check(repo_root=tmp_path, registry_path=tmp_path / "ssot/errors/failure_modes.yaml")
    assert not report.ok
    assert any(p.file == str(REGISTRY_PATH) for p in report.failures)


def test_a_clean_checkout_passes(checkout, run_cli):
    result = run_cli("gate", "secrets", "--repo-root", str(checkout))
    assert result.code == 0, result.err
    assert "ok: secrets passed" in result.out


def test_an_added_credential_and_an_unregistered_secret_name_fail_with_file_and_line(checkout, run_cli):
    (checkout / "ipai_ops" / "payments.py").write_text(
        f'import os\n\nSTRIPE = os.environ["STRIPE_API_KEY"]\nAWS = "{AWS_KEY}"\n'
    )
    (checkout / "docs").mkdir()
    (checkout / "docs" / "notes.md").write_text("STRIPE_API_KEY in a doc is not a use\n")
    _git(checkout, "add", ".")
    result = run_cli("gate", "secrets", "--repo-root", str(checkout))
    assert result.code == 1
    lines = result.err.splitlines()
    assert "ipai_ops/payments.py:4: secret detected: AWS Access Key" in result.err
    assert any(
        line.startswith("ipai_ops/payments.py:3: secret STRIPE_API_KEY is used without a registry entry")
        for line in lines
    )
    assert "docs/notes.md" not in result.err  # names count where secrets are consumed
    assert lines[-1] == "CI.SECRET_DETECTED: 2 problem(s) in 4 files"  # the registry is scanned too
    # the gate's own lines classify as its failure code once ingested
    registry = __import__("ipai_ops.registry", fromlist=["load_registry"]).load_registry()
    assert classify(registry, text=result.err, model=None).code == "CI.SECRET_DETECTED"


def test_reviewed_findings_in_the_baseline_pass_and_a_new_one_does_not(checkout, run_cli):
    fixture = checkout / "tests" / "test_redaction.py"
    fixture.parent.mkdir()
    fixture.write_text(f'SAMPLE = "{AWS_KEY}"\n')
    _git(checkout, "add", ".")
    assert run_cli("gate", "secrets", "--repo-root", str(checkout)).code == 1
    written = run_cli("gate", "secrets", "--repo-root", str(checkout), "--write-baseline")
    assert written.code == 0 and "1 finding(s)" in written.out
    assert AWS_KEY not in (checkout / ".secrets.baseline").read_text()  # hashes only, never the value
    first = (checkout / ".secrets.baseline").read_bytes()
    run_cli("gate", "secrets", "--repo-root", str(checkout), "--write-baseline")
    assert (checkout / ".secrets.baseline").read_bytes() == first  # same findings, same bytes
    _git(checkout, "add", ".")
    assert run_cli("gate", "secrets", "--repo-root", str(checkout)).code == 0
    assert str(checkout) not in (checkout / ".secrets.baseline").read_text()  # names relative to the checkout
    moved = checkout.parent / "elsewhere"
    shutil.copytree(checkout, moved)  # a CI clone lives somewhere else
    assert run_cli("gate", "secrets", "--repo-root", str(moved)).code == 0
    # the reviewed value moved down a line: still reviewed; a second value: new
    fixture.write_text(f'\nSAMPLE = "{AWS_KEY}"\nOTHER = "{GITHUB_PAT}"\n')
    result = run_cli("gate", "secrets", "--repo-root", str(checkout))
    assert result.code == 1
    assert "tests/test_redaction.py:3: secret detected: GitHub Token" in result.err
    assert "tests/test_redaction.py:2:" not in result.err


def test_a_diff_is_judged_by_the_lines_it_adds(checkout, run_cli, tmp_path):
    diff = tmp_path / "pr.diff"
    diff.write_text(
        "diff --git a/ipai_ops/settings.py b/ipai_ops/settings.py\n"
        "--- a/ipai_ops/settings.py\n+++ b/ipai_ops/settings.py\n"
        "@@ -1,3 +1,3 @@\n import os\n"
        f'-OLD = "{GITHUB_PAT}"\n'
        '+KEY = os.environ["SENDGRID_API_KEY"]\n'
        ' TOKEN = os.environ["IPAI_BRIDGE_TOKEN"]\n'
    )
    result = run_cli("gate", "secrets", "--repo-root", str(checkout), "--diff", str(diff))
    assert result.code == 1
    assert "ipai_ops/settings.py:2: secret SENDGRID_API_KEY is used without a registry entry" in result.err
    assert "GitHub Token" not in result.err  # a removed line is not an addition
    diff.write_text(diff.read_text().replace("+KEY = os.environ", f'+KEY = "{AWS_KEY}"  # os.environ'))
    result = run_cli("gate", "secrets", "--repo-root", str(checkout), "--diff", str(diff))
    assert "ipai_ops/settings.py:2: secret detected: AWS Access Key" in result.err


def test_bad_input_is_one_clear_line(checkout, run_cli, tmp_path):
    bad = tmp_path / "bad.diff"
    bad.write_text("@@ -1 +1 @@\n+x\n")
    result = run_cli("gate", "secrets", "--repo-root", str(checkout), "--diff", str(bad))
    assert result.code == 2 and "not a unified diff" in result.err
    result = run_cli("gate", "secrets", "--repo-root", str(checkout), "ipai_ops/gone.py")
    assert result.code == 2 and "ipai_ops/gone.py: no such file" in result.err
    result = run_cli("gate", "secrets", "--repo-root", str(tmp_path / "nowhere"))
    assert result.code == 2 and "is not a directory" in result.err
    result = run_cli("gate", "secrets", "--repo-root", str(checkout), "--write-baseline", "x.py")
    assert result.code == 2 and "--write-baseline" in result.err
    (checkout / ".secrets.baseline").write_text("{not json")
    result = run_cli("gate", "secrets", "--repo-root", str(checkout))
    assert result.code == 2 and "not a detect-secrets baseline" in result.err
    plain = tmp_path / "plain"
    plain.mkdir()
    result = run_cli("gate", "secrets", "--repo-root", str(plain))
    assert result.code == 2 and "not a git checkout" in result.err


def test_the_pull_request_template_passes_the_evidence_gate_once_filled(run_cli, tmp_path):
    template = (REPO / ".github" / "pull_request_template.md").read_text()
    empty = tmp_path / "empty.md"
    empty.write_text(template)
    assert run_cli("gate", "evidence-block", str(empty)).code == 1  # comments are not evidence
    filled = tmp_path / "filled.md"
    filled.write_text(
        template.replace("[CONTEXT]\n", "[CONTEXT]\nWhy.\n")
        .replace("[CHANGES]\n", "[CHANGES]\n- what\n")
        .replace("[EVIDENCE]\n", "[EVIDENCE]\n- pytest: 3 passed\n")
        .replace("[DIFF SUMMARY]\n", "[DIFF SUMMARY]\n1 file changed\n")
    )
    result = run_cli("gate", "evidence-block", str(filled))
    assert result.code == 0, result.err


def test_names_in_tests_are_not_uses_and_a_missing_registry_fails_the_gate(checkout, run_cli):
    tests = checkout / "addons" / "shop" / "tests"
    tests.mkdir(parents=True)
    (tests / "test_x.py").write_text('OLD_GUARD_KEY = "k"\n')
    (checkout / "addons" / "shop" / "models.py").write_text('KEY = env["SHOP_API_KEY"]\n')
    _git(checkout, "add", ".")
    result = run_cli("gate", "secrets", "--repo-root", str(checkout))
    assert "addons/shop/models.py:1: secret SHOP_API_KEY" in result.err
    assert "OLD_GUARD_KEY" not in result.err
    (checkout / REGISTRY_PATH).unlink()
    result = run_cli("gate", "secrets", "--repo-root", str(checkout))
    assert result.code == 1 and "the secrets registry is missing" in result.err


def test_every_secret_a_workflow_reads_is_registered_whatever_its_name(checkout, run_cli):
    workflow = checkout / ".github" / "workflows" / "deploy.yml"
    workflow.parent.mkdir(parents=True)
    workflow.write_text("env:\n  DSN: ${{ secrets.IPAI_OPS_DSN }}\n  HOOK: ${{ secrets.SLACK_HOOK_URL }}\n")
    (checkout / "ipai_ops" / "consts.py").write_text('DEFAULT_DSN = "postgresql://localhost/x"\n')
    _git(checkout, "add", ".")
    result = run_cli("gate", "secrets", "--repo-root", str(checkout))
    assert ".github/workflows/deploy.yml:3: secret SLACK_HOOK_URL is used without a registry entry" in result.err
    assert "IPAI_OPS_DSN" not in result.err  # registered
    assert "DEFAULT_DSN" not in result.err  # a constant's name in code is not a use
