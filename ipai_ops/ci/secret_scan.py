"""``ipai-ops gate secrets``: no secret-looking value added, no secret used without an entry
in the secrets registry (``ssot/secrets/registry.yaml``, :mod:`ipai_ops.secrets_registry`).

Values are found by Yelp's detect-secrets (its default plugins: cloud keys, private keys,
JWTs, basic-auth URLs, high-entropy strings, ``password = "..."``); what was already there
and reviewed is listed in ``.secrets.baseline`` (detect-secrets' own format, so
``detect-secrets audit .secrets.baseline`` works on it), and only findings not in it fail.
Names are read from the files that consume secrets (product code, deployment and workflow
files): a name that says it holds a secret (``*_TOKEN``, ``*_PASSWORD``, ``*_KEY``, ...)
must be in the registry, as a secret or under ``not_secrets`` with the reason.

Two modes: the files of the repository (or the ones named), or a pull request's unified
diff, where only added lines count. Problems are phrased so the registry's signatures of
``CI.SECRET_DETECTED`` match them when the gate's log is ingested.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ipai_ops.ci.gates import GateProblem, GateResult
from ipai_ops.secrets_registry import REGISTRY_PATH, SECRET_NAME, WORKFLOW_SECRET, SecretsRegistry
from ipai_ops.secrets_registry import load as load_registry

FAILURE_CODE = "CI.SECRET_DETECTED"
BASELINE = Path(".secrets.baseline")
#: Never scanned for values: real public CI logs kept as test data (hashes and ids galore,
#: no secret of ours), vendored minified assets, and the baseline (hashes of reviewed findings).
EXCLUDED = re.compile(r"^(?:tests/classify/corpus/|addons/[^/]+/static/lib/|\.secrets\.baseline$)")
#: Files that consume secrets, where a secret-looking name must have a registry entry:
#: product code outside tests, deployment and workflow files.
NAME_SCOPE = re.compile(
    r"^(?:(?:ipai_ops|addons/[^/]+)/(?!(?:.*/)?tests/).*\.py"
    r"|scripts/[^/]+\.(?:sh|py)"
    r"|docker/.*|docker-compose[^/]*\.ya?ml|\.env\.example"
    r"|\.github/workflows/[^/]+\.ya?ml|otel/.*\.ya?ml)$"
)


@contextmanager
def _inside(root: Path) -> Iterator[None]:
    before = os.getcwd()
    os.chdir(root)
    try:
        yield
    finally:
        os.chdir(before)


#: A quoted name in code: what ``os.environ["X"]``, ``getenv("X")`` and settings tables read.
_QUOTED = re.compile(r"""["']([A-Za-z][A-Za-z0-9_]{1,99})["']""")
#: A file larger than this is not scanned (a generated or data file; say so).
MAX_FILE_BYTES = 2 * 1024 * 1024


class GateInputError(ValueError):
    """Input the gate cannot read (no checkout, unreadable diff or baseline)."""


def _tracked_files(root: Path) -> list[str]:
    out = subprocess.run(["git", "-C", str(root), "ls-files", "-z"], capture_output=True, check=False, timeout=60)
    if out.returncode != 0:
        raise GateInputError(f"{root}: not a git checkout (git ls-files failed); name the files to scan")
    return [name for name in out.stdout.decode("utf-8", "replace").split("\0") if name]


def _scannable(root: Path, names: Iterable[str], *, named: bool = False) -> tuple[list[str], list[str]]:
    """(files to scan, files left out for their size) of ``names``: not :data:`EXCLUDED`, and
    regular files; a file named on the command line (``named``) that is not one is an error."""
    scanned, too_big = [], []
    for name in names:
        if EXCLUDED.match(name):
            continue
        path = root / name
        if not path.is_file():
            if named:
                raise GateInputError(f"{name}: no such file in {root}")
            continue
        (too_big if path.stat().st_size > MAX_FILE_BYTES else scanned).append(name)
    return scanned, too_big


def _baseline(root: Path):
    from detect_secrets import SecretsCollection

    path = root / BASELINE
    if not path.is_file():
        return SecretsCollection()
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        return SecretsCollection.load_from_baseline(doc)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise GateInputError(f"{BASELINE}: not a detect-secrets baseline: {exc}") from None


def _value_problems(found, baseline) -> list[GateProblem]:
    new = found - baseline
    problems = []
    for filename, secret in sorted(new, key=lambda item: (item[0], item[1].line_number or 0, item[1].type)):
        problems.append(
            GateProblem(
                filename,
                secret.line_number,
                f"secret detected: {secret.type} (a value that looks like a credential was added; "
                f"remove it and rotate it, or mark a test fixture with '# pragma: allowlist secret')",
            )
        )
    return problems


def _name_problems(lines: Iterable[tuple[str, int, str]], registry: SecretsRegistry) -> list[GateProblem]:
    problems = []
    seen: set[tuple[str, str]] = set()
    for filename, number, text in lines:
        if not NAME_SCOPE.match(filename) or "allowlist secret" in text:
            continue
        names = [m.group() for m in SECRET_NAME.finditer(text)]
        if filename.endswith(".py"):  # in code a use is a quoted name (os.environ[...]), not a constant
            names = [m.group(1) for m in _QUOTED.finditer(text) if SECRET_NAME.fullmatch(m.group(1))]
        if filename.startswith(".github/workflows/"):
            names += [m.group(1) for m in WORKFLOW_SECRET.finditer(text)]
        for name in names:
            if registry.knows(name) or (filename, name) in seen:
                continue
            seen.add((filename, name))
            problems.append(
                GateProblem(
                    filename,
                    number,
                    f"secret {name} is used without a registry entry: add it to {REGISTRY_PATH} "
                    "(where it lives, owner, rotation), or under not_secrets with the reason",
                )
            )
    return problems


def _file_lines(root: Path, names: Iterable[str]) -> Iterator[tuple[str, int, str]]:
    for name in names:
        try:
            text = (root / name).read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise GateInputError(f"{name}: cannot read: {exc.strerror or exc}") from None
        for number, line in enumerate(text.splitlines(), start=1):
            yield name, number, line


def _added_lines(diff_text: str) -> Iterator[tuple[str, int, str]]:
    from unidiff import PatchSet
    from unidiff.errors import UnidiffParseError

    try:
        patch = PatchSet(diff_text)
    except UnidiffParseError as exc:
        raise GateInputError(f"not a unified diff: {exc}") from None
    for patched in patch:
        name = patched.path
        for hunk in patched:
            for line in hunk:
                if line.is_added and line.target_line_no is not None:
                    yield name, line.target_line_no, line.value.rstrip("\n")


def check_secrets(root: Path, *, files: Iterable[str] | None = None, diff_text: str | None = None) -> GateResult:
    """Scan ``files`` (default: every tracked file) or the added lines of ``diff_text``."""
    from detect_secrets import SecretsCollection
    from detect_secrets.settings import default_settings

    root = root.resolve()
    registry, registry_problems = load_registry(root, required=True)
    problems = [GateProblem(p.file, p.line, p.message) for p in registry_problems]
    baseline = _baseline(root)
    # Inside the checkout, with relative names: findings name files the way the baseline
    # does, wherever the checkout lives (a root= would put absolute paths in both).
    found = SecretsCollection()
    if diff_text is not None:
        added = list(_added_lines(diff_text))
        subject = f"the diff ({len({name for name, _, _ in added})} files)"
        with default_settings(), _inside(root):  # detect-secrets skips files it cannot see from the cwd
            if added:
                found.scan_diff(diff_text)
        for name in [n for n in list(found.files) if EXCLUDED.match(n)]:
            del found.data[name]
        lines: Iterable[tuple[str, int, str]] = added
    else:
        names = sorted(files) if files is not None else _tracked_files(root)
        scanned, too_big = _scannable(root, names, named=files is not None)
        subject = f"{len(scanned)} files"
        if too_big:
            subject += f"; {len(too_big)} over {MAX_FILE_BYTES // 2**20} MiB not scanned: {', '.join(too_big[:5])}"
        with default_settings(), _inside(root):
            found.scan_files(*scanned, num_processors=1)
        lines = _file_lines(root, scanned)
    problems += _value_problems(found, baseline)
    if registry is not None:
        problems += _name_problems(lines, registry)
    return GateResult("secrets", FAILURE_CODE, subject, problems)


def write_baseline(root: Path) -> int:
    """Record every finding of the tracked files in ``.secrets.baseline`` (after review:
    test fixtures and documented examples); returns how many."""
    from detect_secrets import SecretsCollection
    from detect_secrets.core.baseline import format_for_output
    from detect_secrets.settings import default_settings

    root = root.resolve()
    names, _ = _scannable(root, _tracked_files(root))
    found = SecretsCollection()
    with default_settings(), _inside(root):
        found.scan_files(*names, num_processors=1)
        doc = format_for_output(found)
    doc.pop("generated_at", None)  # the same findings, the same bytes
    (root / BASELINE).write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return sum(1 for _ in found)
