"""The learned layer: training, the artifact, abstention, degradation, the CLI.

Training texts here are invented (unit tests); the corpus figures come from `classify eval`.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import time
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from ipai_ops import config
from ipai_ops.classify import classify
from ipai_ops.classify import model as learned
from ipai_ops.classify.model import Example, Model, ModelError, model_text, train

SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "ssot/schemas/failure_envelope.schema.json").read_text())

# Three kinds of text no signature of the shipped registry reads, and texts of no code.
QUEUE = [f"worker {n}: frobnicator queue wedged, {n} jobs stuck behind lease" for n in range(12)]
GLACIER = [f"glacier restore of tape {n} refused by vault policy zeta" for n in range(12)]
NONE = [f"deployment {n} finished, all {n} replicas healthy and serving" for n in range(12)]


def _examples(queue_code: str = "INTENT.STATE_CONFLICT", glacier_code: str = "PERMISSION.DENIED") -> list[Example]:
    return (
        [Example(model_text(message=t), queue_code, f"test:queue:{i}") for i, t in enumerate(QUEUE)]
        + [Example(model_text(message=t), glacier_code, f"test:glacier:{i}") for i, t in enumerate(GLACIER)]
        + [Example(model_text(message=t), "none", f"test:none:{i}") for i, t in enumerate(NONE)]
    )


@pytest.fixture(scope="module")
def artifact() -> bytes:
    return train(_examples(), inputs=[{"test": "invented texts"}])


@pytest.fixture(scope="module")
def trained(artifact) -> Model:
    return Model.from_bytes(artifact, threshold=0.3)


def test_training_is_deterministic_and_the_manifest_says_what_went_in(artifact):
    assert train(_examples(), inputs=[{"test": "invented texts"}]) == artifact
    assert train(list(reversed(_examples())), inputs=[{"test": "invented texts"}]) == artifact  # order-free
    manifest = Model.from_bytes(artifact).manifest
    assert manifest["examples"] == 36 and manifest["per_label"]["none"] == 12
    assert manifest["inputs"] == [{"test": "invented texts"}]
    assert manifest["cross_validated"]["folds"] == 5 and manifest["cross_validated"]["table"]
    assert len(manifest["sha256_of_model"]) == 64


def test_the_model_answers_only_where_no_signature_matched(registry, trained):
    result = classify(registry, message="worker 99: frobnicator queue wedged, 7 jobs stuck behind lease", model=trained)
    assert (result.code, result.matched_by) == ("INTENT.STATE_CONFLICT", "model")
    assert 0.3 <= result.model["score"] <= 1.0
    assert result.model["nearest"]["source"].startswith("test:queue:")
    assert "frobnicator" in result.model["nearest"]["text"]
    # a signature match is never overridden, and the model is not asked
    signed = classify(registry, message="KeyError: 'OPENAI_API_KEY'", model=trained)
    assert (signed.code, signed.matched_by) == ("ENV.KEY_MISSING", "signature")
    # signatures only
    assert classify(registry, message=QUEUE[0], model=None).is_fallback


def test_it_abstains_below_its_threshold_on_texts_of_no_code_and_on_codes_gone_from_the_registry(
    registry, artifact, trained
):
    assert classify(registry, message="deployment 5 finished, all 5 replicas healthy", model=trained).is_fallback
    strict = Model.from_bytes(artifact, threshold=1.0)
    assert classify(registry, message=QUEUE[3], model=strict).is_fallback
    assert trained.predict(QUEUE[3], allowed=frozenset({"PERMISSION.DENIED"})) is None
    assert trained.predict("   ") is None


def test_a_model_answer_travels_in_the_envelope_and_validates(registry, trained):
    from ipai_ops.envelope import build_envelope

    result = classify(registry, message=GLACIER[2], model=trained)
    env = build_envelope(result, message=GLACIER[2], context={"source": "test", "service": "svc"})
    jsonschema.validate(env, SCHEMA)
    block = env["evidence"]["classification"]
    assert block["matched_by"] == "model" and set(block["model"]) == {"score", "nearest"}
    assert env["error"]["matched_by"] == "model"


def test_a_log_gets_the_lines_the_model_read_as_evidence(registry, trained):
    log = "\n".join(["setting up", "pulling cache", QUEUE[5], 'The command "./ops.sh" exited with 3.'])
    result = classify(registry, text=log, model=trained)
    assert result.matched_by == "model"
    assert [(e.line, e.role) for e in result.evidence] == [(3, "context"), (4, "marker")]
    assert result.captures == {"command": "./ops.sh", "exit_code": 3}


@pytest.mark.parametrize(
    ("mangle", "why"),
    [
        (lambda data: b"not gzip at all", "not a gzip'd JSON artifact"),
        (lambda data: gzip.compress(b"{}", mtime=0), "not a classification model"),
        (lambda data: data[: len(data) // 2], "not a gzip'd JSON artifact"),
        (
            lambda data: gzip.compress(
                json.dumps({**json.loads(gzip.decompress(data)), "labels": ["a"]}).encode(), mtime=0
            ),
            "shapes do not agree",
        ),
    ],
)
def test_a_corrupt_artifact_is_refused_with_a_clear_error(artifact, mangle, why):
    with pytest.raises(ModelError, match=why):
        Model.from_bytes(mangle(artifact))


def test_training_needs_two_labels():
    with pytest.raises(ModelError, match="at least two labels"):
        train([Example("x", "none", "t")])


@pytest.fixture
def active_env(monkeypatch, tmp_path):
    path = tmp_path / "model.json.gz"
    monkeypatch.setenv(config.IPAI_OPS_MODEL, str(path))
    monkeypatch.delenv(config.IPAI_OPS_MODEL_THRESHOLD, raising=False)
    monkeypatch.setattr(learned, "RELOAD_CHECK_SECONDS", 0.0)
    learned.reset_active_model()
    yield path
    learned.reset_active_model()


def test_the_active_model_degrades_to_signatures_with_one_warning_and_picks_up_a_new_artifact(
    registry, artifact, active_env, caplog
):
    caplog.set_level(logging.WARNING)
    active_env.write_bytes(b"garbage")
    assert classify(registry, message=QUEUE[1]).is_fallback
    assert classify(registry, message=QUEUE[2]).is_fallback
    warnings = [r for r in caplog.records if "unusable" in r.getMessage()]
    assert len(warnings) == 1  # one warning, not one per error
    # a new artifact is picked up without a restart (atomic replace, as `classify train` does)
    tmp = active_env.with_name("next.tmp")
    tmp.write_bytes(artifact)
    os.utime(tmp, ns=(time.time_ns(), time.time_ns() + 10**9))
    tmp.replace(active_env)
    result = classify(registry, message=QUEUE[1] + " now")
    assert result.matched_by in ("model", "fallback")  # the artifact's own threshold decides
    assert learned.active_model() is not None


def test_an_artifact_removed_and_put_back_is_loaded_again(registry, artifact, active_env):
    active_env.write_bytes(artifact)
    stamp = os.stat(active_env).st_mtime_ns
    assert learned.active_model() is not None
    active_env.unlink()
    assert learned.active_model() is None
    active_env.write_bytes(artifact)
    os.utime(active_env, ns=(stamp, stamp))  # the very same file again: same mtime and size
    assert learned.active_model() is not None


def test_a_missing_configured_artifact_warns_once(registry, active_env, caplog):
    caplog.set_level(logging.WARNING)
    for _ in range(3):
        assert classify(registry, message=QUEUE[0]).is_fallback
    assert len([r for r in caplog.records if "not found" in r.getMessage()]) == 1


def test_a_bad_threshold_setting_is_refused_clearly(monkeypatch):
    monkeypatch.setenv(config.IPAI_OPS_MODEL_THRESHOLD, "high")
    with pytest.raises(ValueError, match="not a number"):
        config.model_threshold()
    monkeypatch.setenv(config.IPAI_OPS_MODEL_THRESHOLD, "1.5")
    with pytest.raises(ValueError, match="not between 0 and 1"):
        config.model_threshold()


def test_off_disables_the_model(monkeypatch):
    monkeypatch.setenv(config.IPAI_OPS_MODEL, "off")
    assert config.model_path() is None


# --------------------------------------------------------------------------- CLI


def test_train_writes_an_artifact_and_eval_compares_signatures_with_the_model(run_cli, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    lines = []
    for i, text in enumerate(QUEUE + GLACIER + NONE):
        kind = "queue" if text in QUEUE else "glacier" if text in GLACIER else "none"
        code = {"queue": "INTENT.STATE_CONFLICT", "glacier": "PERMISSION.DENIED"}.get(kind)
        case = {
            "id": f"t-ops-{i:03d}",
            "kind": "ops",
            "ecosystem": "ops",
            "text": text,
            "family": {"queue": "data", "glacier": "permission"}.get(kind, "none"),
            "source": f"https://github.com/example/repo{i % 3}/blob/0/x#L1",
            "licence": "MIT",
        }
        if code:
            case["code"] = code
        lines.append(json.dumps(case))
    (corpus / "t.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "m.json.gz"
    result = run_cli("classify", "train", "--corpus", str(corpus), "--splits", "dev,holdout", "--out", str(out))
    assert result.code == 0, result.err
    assert out.exists() and f"wrote {out}" in result.out
    again = run_cli("classify", "train", "--corpus", str(corpus), "--splits", "dev,holdout", "--out", str(out))
    assert again.out.split("sha256 ")[1][:16] == result.out.split("sha256 ")[1][:16]
    report = json.loads(run_cli("classify", "eval", str(corpus), "--model", str(out), "--format", "json").out)
    assert report["with_model"]["all"]["cases"] == 36
    assert report["figures"]["all"]["fallback_rate"] == 1.0  # no signature reads these texts
    assert report["with_model"]["all"]["family_accuracy"] > report["figures"]["all"]["family_accuracy"]
    off = json.loads(run_cli("classify", "eval", str(corpus), "--model", "off", "--format", "json").out)
    assert off["with_model"] is None


def test_train_and_eval_refuse_bad_input_in_one_line(run_cli, tmp_path):
    bad = tmp_path / "bad.json.gz"
    bad.write_bytes(b"nope")
    result = run_cli("classify", "eval", str(Path(__file__).parent / "corpus" / "check.jsonl"), "--model", str(bad))
    assert result.code != 0 and "not a gzip'd JSON artifact" in result.err
    result = run_cli("classify", "train", "--splits", "everything", "--out", str(tmp_path / "m"))
    assert result.code != 0 and "--splits: everything" in result.err
    # a corpus log that cannot be read is named, not silently left out of the training
    corpus = tmp_path / "corpus"
    (corpus / "logs").mkdir(parents=True)
    (corpus / "logs" / "t-ci-001.log").write_bytes(b"\x00\x01\x02binary" * 100)
    case = {
        "id": "t-ci-001",
        "kind": "ci_log",
        "ecosystem": "python",
        "file": "logs/t-ci-001.log",
        "family": "test",
        "code": "BUILD.TEST_FAILED",
        "evidence": [1],
        "source": "https://github.com/example/unit/blob/0/x#L1",
        "licence": "MIT",
    }
    (corpus / "t.jsonl").write_text(json.dumps(case) + "\n")
    result = run_cli("classify", "train", "--corpus", str(corpus), "--out", str(tmp_path / "m"))
    assert result.code == 2 and "cannot train: corpus case t-ci-001:" in result.err


def test_the_score_is_calibrated_on_cross_validated_answers_and_keeps_their_order():
    from ipai_ops.classify.model import _calibrate, _platt

    rng = np.random.default_rng(0)
    score = rng.uniform(0.3, 1.0, 400)
    right = rng.uniform(0, 1, 400) < score**2  # right more often as the score grows
    calibration = _platt(score, right)
    assert calibration is not None and calibration[0] > 0
    calibrated = [_calibrate(s, calibration) for s in (0.4, 0.6, 0.8, 0.95)]
    assert calibrated == sorted(calibrated)  # monotone: the same answers are given
    high = score >= 0.9
    assert abs(_calibrate(0.95, calibration) - right[high].mean()) < 0.1  # says how often it is right
    assert _platt(score[:10], right[:10]) is None and _platt(score, np.ones(400, bool)) is None


def test_a_calibration_that_is_not_increasing_is_refused(artifact):
    doc = json.loads(gzip.decompress(artifact))
    doc["calibration"] = [-1.0, 0.0]
    with pytest.raises(ModelError, match="calibration"):
        Model.from_bytes(gzip.compress(json.dumps(doc).encode(), mtime=0))


def test_measure_reports_how_often_each_score_band_was_right(trained):
    examples = [Example(model_text(message=t), "INTENT.STATE_CONFLICT", "q") for t in QUEUE[:4]]
    examples += [Example(model_text(message=t), "none", "n") for t in NONE[:2]]
    figures = trained.measure(examples)
    bands = figures["by_score"]
    assert sum(b["answered"] for b in bands.values()) == figures["answered"] > 0
    assert all(0 <= b["right"] <= b["answered"] for b in bands.values())
    assert all(len(name) == 9 and name[4] == "-" for name in bands)  # "0.85-0.90"


# --------------------------------------------------------------------------- features

CORPUS = Path(__file__).resolve().parent / "corpus"


def _reference_tokens(text: str) -> list[str]:
    """What scikit-learn's char_wb 3-5-gram analyzer and a word 1-2-gram analyzer (the
    model's features until artifact format 2) produce: the numpy hashing must see the same."""
    from sklearn.feature_extraction.text import CountVectorizer

    chars = CountVectorizer(analyzer="char_wb", ngram_range=(3, 5), lowercase=True).build_analyzer()
    words = CountVectorizer(
        analyzer="word", ngram_range=(1, 2), token_pattern=r"[A-Za-z_][A-Za-z_.]+", lowercase=True
    ).build_analyzer()
    return chars(text) + ["\x00" + w for w in words(text)]


@pytest.mark.parametrize("case_file", ["ci_fresh/ci_fresh-go-001.log", "ci_jobs/ci_jobs-python-001.log"])
def test_features_are_the_character_and_word_grams_scikit_learn_reads(case_file):
    text = model_text(message=(CORPUS / "logs" / case_file).read_text(errors="replace")[-4000:])
    text += "\n  tabs\tand ünïcode wörds, a b c .dotted.name x"
    columns, counts = learned._features(text)
    tokens = _reference_tokens(text)
    assert counts.sum() == len(tokens)
    # distinct tokens land in distinct columns but for rare hash collisions
    assert len(set(tokens)) - 10 <= len(columns) <= len(set(tokens))
    assert np.all(np.diff(columns) > 0) and columns.min() >= 0 and columns.max() < learned.HASH_FEATURES


def test_a_gram_hashes_the_same_wherever_it_stands():
    alone, _ = learned._features("timeout")
    inside, counts = learned._features("error: timeout while waiting; timeout again")
    assert set(alone) <= set(inside)
    # " timeout " (char grams and the word) appears twice: its columns count 2
    assert counts[np.isin(inside, alone)].min() == 2


def test_empty_and_space_only_texts_have_no_features():
    for text in ("", " ", "\n\t ", "a"):
        columns, counts = learned._features(text)
        assert len(columns) == len(counts) == 0 or text == "a"
