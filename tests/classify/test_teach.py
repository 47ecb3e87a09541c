"""Taught examples: stored in the ops schema, refused when they cannot be right, learned by
the next training, and applied by the bridge without a restart (end to end).

The error texts are invented (unit tests): a kind of error no signature reads.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import pytest

from ipai_ops.classify import classify
from ipai_ops.classify.model import Model
from ipai_ops.classify.teach import TeachError, check_example
from ipai_ops.registry import Registry
from tests.bridge.conftest import BridgeProcess, error_rows, post, unique_letters
from tests.bridge.otlp_factory import span, traces
from tests.conftest import query_rows

CODE = "INTENT.STATE_CONFLICT"


def _kind(n: int, word: str) -> str:
    return f"zorblax spool {n} tipped over on shard {word}; sweeper gave up after {n * 3} passes"


def _corpus(tmp_path: Path) -> Path:
    """A small corpus (training stays fast): texts of no code and two other kinds."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    texts = [(f"nightly export {n} finished, {n} files written to the archive", None) for n in range(10)]
    texts += [(f"KeyError: 'STRIPE_KEY_{n}' while loading settings", "ENV.KEY_MISSING") for n in range(5)]
    lines = []
    for i, (text, code) in enumerate(texts):
        case = {
            "id": f"t-ops-{i:03d}",
            "kind": "ops",
            "ecosystem": "ops",
            "text": text,
            "family": "config" if code else "none",
            "source": f"https://github.com/example/unit{i}/blob/0/x#L1",
            "licence": "MIT",
        }
        if code:
            case["code"] = code
        lines.append(json.dumps(case))
    (corpus / "t.jsonl").write_text("\n".join(lines) + "\n")
    return corpus


def test_teach_stores_who_taught_what_and_refuses_what_cannot_be_right(run_cli, ops_dsn, registry):
    ok = run_cli("classify", "teach", "--dsn", ops_dsn, "--code", CODE, "--message", _kind(1, "kappa"), "--by", "ana")
    assert ok.code == 0, ok.err
    [row] = query_rows(ops_dsn, "SELECT code, text, taught_by, error_type FROM ops.classification_examples")
    assert (row["code"], row["taught_by"], row["error_type"]) == (CODE, "ana", None)
    assert row["text"] == _kind(1, "kappa")
    for args, why in [
        (("--code", "NOPE.NOT_A_CODE", "--message", "x"), "not a code of the registry"),
        (("--code", "UNCLASSIFIED.UNKNOWN", "--message", "x"), "is the fallback"),
        (("--code", CODE, "--message", "   "), "the example's text is empty"),
        (("--code", CODE), "exactly one of --message, --text-file"),
    ]:
        result = run_cli("classify", "teach", "--dsn", ops_dsn, *args)
        assert result.code == 2 and why in result.err, (args, result.err)
    assert len(query_rows(ops_dsn, "SELECT id FROM ops.classification_examples")) == 1  # nothing else stored


def test_a_deprecated_code_is_refused_with_its_replacement(registry):
    mode = registry[CODE]
    modes = tuple(
        replace(m, lifecycle="deprecated", replaced_by="INTENT.LEASE_EXPIRED") if m is mode else m for m in registry
    )
    old = Registry(modes=modes, path=registry.path)
    with pytest.raises(TeachError, match=r"deprecated: only an active code can be taught; teach INTENT\.LEASE_EXPIRED"):
        check_example(old, CODE, "x")


def test_training_learns_taught_examples_and_skips_codes_no_longer_active(run_cli, ops_dsn, registry, tmp_path):
    corpus = _corpus(tmp_path)
    for n, word in ((1, "kappa"), (2, "lambda"), (3, "sigma")):
        assert run_cli("classify", "teach", "--dsn", ops_dsn, "--code", CODE, "--message", _kind(n, word)).code == 0
    # an example whose code was active when taught and is not any more stays stored, unused
    query_rows(
        ops_dsn,
        "INSERT INTO ops.classification_examples (code, text, taught_by) VALUES ('GONE.AWAY', 'x', 'bo') RETURNING id",
    )
    out = tmp_path / "m.json.gz"
    result = run_cli(
        "classify",
        "train",
        "--taught",
        "--dsn",
        ops_dsn,
        "--corpus",
        str(corpus),
        "--out",
        str(out),
        "--format",
        "json",
    )
    assert result.code == 0, result.err
    manifest = json.loads(result.out)["manifest"]
    assert {"taught": 3, "skipped_inactive_code": 1} in manifest["inputs"] and manifest["taught"] == 3
    # a signature suggested from the taught examples: matches them and no other labelled text
    suggested = run_cli(
        "classify", "suggest", "--code", CODE, "--dsn", ops_dsn, "--corpus", str(corpus), "--format", "json"
    )
    assert suggested.code == 0, suggested.err
    pattern = json.loads(suggested.out)["pattern"]
    assert "zorblax" in pattern and "kappa" not in pattern
    assert run_cli("classify", "suggest", "--code", "ENV.KEY_MISSING", "--dsn", ops_dsn).code == 2  # none taught
    model = Model.load(out)
    new = classify(registry, message=_kind(77, "omega"), model=model)
    assert (new.code, new.matched_by) == (CODE, "model")
    assert new.model["taught"] is True and new.model["nearest"]["source"].startswith("taught:")
    # other texts are not pulled in by the taught ones
    assert classify(registry, message="nightly export 5 finished, 5 files written", model=model).is_fallback


def test_after_three_taught_examples_the_bridge_gives_the_next_occurrences_the_code(
    run_cli, ops_dsn, registry, tmp_path
):
    corpus = _corpus(tmp_path)
    artifact = tmp_path / "model.json.gz"
    base = run_cli("classify", "train", "--corpus", str(corpus), "--out", str(artifact))
    assert base.code == 0, base.err
    service = f"svc-{unique_letters()}"
    bridge = BridgeProcess(ops_dsn, env={"IPAI_OPS_MODEL": str(artifact)}).start()
    try:

        def send(message: str) -> None:
            body = traces([span(error=message)], resource={"service.name": service})
            status, _, answer = post(bridge.url + "/v1/traces", body.SerializeToString())
            assert status == 200, answer

        send(_kind(5, "tau"))
        assert [r["code"] for r in error_rows(ops_dsn, service=service)] == ["UNCLASSIFIED.UNKNOWN"]
        for n, word in ((1, "kappa"), (2, "lambda"), (3, "sigma")):
            assert run_cli("classify", "teach", "--dsn", ops_dsn, "--code", CODE, "--message", _kind(n, word)).code == 0
        retrained = run_cli(
            "classify", "train", "--taught", "--dsn", ops_dsn, "--corpus", str(corpus), "--out", str(artifact)
        )
        assert retrained.code == 0, retrained.err
        time.sleep(2.5)  # the bridge checks the artifact every 2 s; no restart
        send(_kind(6, "tau"))  # the same shape as the first: the bridge's template must not answer
        # the same group (its previous key attaches it, migration 0006), which takes the code
        [group] = error_rows(ops_dsn, service=service)
        assert (group["code"], group["count"]) == (CODE, 2)
        block = group["sample"]["evidence"]["classification"]
        assert block["matched_by"] == "model" and block["model"]["taught"] is True
    finally:
        bridge.stop()
