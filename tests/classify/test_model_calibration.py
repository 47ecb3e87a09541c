"""The score's calibration per family (artifact format 3), and format 2 still read.

Training texts are invented; the corpus figures come from `benchmarks/classify_model.py` (d).
"""

from __future__ import annotations

import gzip
import json
import logging
import random

import pytest

from ipai_ops import config
from ipai_ops.classify import model as learned
from ipai_ops.classify.model import Example, Model, ModelError, model_text, train

_WORDS = [
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
    "mike",
    "november",
    "oscar",
    "papa",
]
#: Two codes of the same family that read alike: the classifier cannot tell them apart, so
#: about half of its answers in that family are wrong, whatever score it gives them.
BUCKET = "quota of the bucket 77 exhausted for tenant kilo lima"
QUEUE = "frobnicator queue 9 wedged behind lease kilo"


def _examples() -> list[Example]:
    rng = random.Random(0)
    out = []
    for i in range(40):
        w = rng.choice(_WORDS)
        out.append(
            Example(model_text(message=f"frobnicator queue {i} wedged behind lease {w}"), "Q.WEDGED", f"q{i}", "data")
        )
        w = rng.choice(_WORDS)
        out.append(Example(model_text(message=f"glacier tape {i} refused by vault {w}"), "G.REFUSED", f"g{i}", "data"))
        text = f"quota of the bucket {i} exhausted for tenant {rng.choice(_WORDS)} {rng.choice(_WORDS)}"
        code = "B.ONE" if rng.random() < 0.5 else "B.TWO"
        out.append(Example(model_text(message=text), code, f"b{i}", "resource"))
        w = rng.choice(_WORDS)
        out.append(
            Example(model_text(message=f"deployment {i} finished, replicas {w} healthy"), "none", f"n{i}", "none")
        )
    return out


@pytest.fixture(scope="module")
def per_family() -> bytes:
    return train(_examples(), min_family_answers=10)


@pytest.fixture(scope="module")
def global_only() -> bytes:
    return train(_examples(), min_family_answers=None)


def test_a_family_the_classifier_confuses_gets_an_honest_score_and_is_not_answered(per_family, global_only):
    model = Model.from_bytes(per_family)
    assert model.families == ["resource", "resource", "data", "data", "none"]
    assert set(model.calibration_by_family) == {"resource"}  # 'data' is always right: nothing to fit
    table = model.manifest["cross_validated"]["by_family"]
    assert table["resource"]["own_calibration"] and not table["data"]["own_calibration"]
    bucket = table["resource"]  # its cross-validated answers: the score says how often they are right
    assert abs(bucket["mean_score"] - bucket["right"] / bucket["answers"]) < 0.1
    assert bucket["at_threshold"] == 0 and table["data"]["at_threshold"] >= 0.9 * table["data"]["answers"]
    # the global calibration promises ~0.85 for the bucket texts, which are right half the time
    alone = Model.from_bytes(global_only)
    assert alone.calibration_by_family == {}
    wrongly_sure = alone.predict(model_text(message=BUCKET))
    assert wrongly_sure is not None and wrongly_sure.score > 0.8
    # calibrated per family, it says ~0.5 and, below the threshold, abstains ...
    model.threshold = 0.0
    honest = model.predict(model_text(message=BUCKET))
    assert honest is not None and 0.3 < honest.score < 0.65
    assert Model.from_bytes(per_family).predict(model_text(message=BUCKET)) is None
    # ... while the family it knows keeps its answer and its score
    kept = Model.from_bytes(per_family).predict(model_text(message=QUEUE))
    assert kept is not None and kept.code == "Q.WEDGED"
    assert kept.score == pytest.approx(alone.predict(model_text(message=QUEUE)).score)


def test_the_threshold_holds_a_family_calibrated_apart_to_the_target_on_its_own(per_family):
    rows = Model.from_bytes(per_family).manifest["cross_validated"]["table"]
    chosen = Model.from_bytes(per_family).threshold
    # the pooled answers reach 85% at a lower threshold, but only with the bucket family's
    # coin flips carried by the others' right answers: those thresholds are refused
    pooled_ok = [r for r in rows if r["precision"] >= learned.TARGET_PRECISION and r["false_positive"] <= 0.02]
    assert any("resource" in r.get("families_below_target", []) for r in pooled_ok)
    assert chosen == pytest.approx(
        min(r["calibrated"] for r in pooled_ok if not r.get("families_below_target")), abs=1e-3
    )


def test_training_stays_deterministic_with_families(per_family):
    assert train(list(reversed(_examples())), min_family_answers=10) == per_family


def test_a_label_s_family_is_the_one_its_examples_name_most_often():
    examples = [
        Example("a", "X.ONE", "1", "data"),
        Example("b", "X.ONE", "2", "data"),
        Example("c", "X.ONE", "3", "config"),
        Example("d", "T.TAUGHT", "taught:1"),  # a taught code no registry example names
        Example("e", "none", "4"),
    ]
    assert learned._families(examples, ["T.TAUGHT", "X.ONE", "none"]) == ["", "data", "none"]


def _as_format_2(data: bytes) -> bytes:
    doc = json.loads(gzip.decompress(data))
    doc["format"] = learned.FORMAT_2
    del doc["families"], doc["calibration_by_family"]
    return gzip.compress(json.dumps(doc).encode(), mtime=0)


def test_a_format_2_artifact_is_still_read_with_its_global_calibration(global_only, per_family):
    old = Model.from_bytes(_as_format_2(global_only))
    assert old.calibration_by_family == {} and old.families == [""] * len(old.labels)
    same = Model.from_bytes(global_only)
    for text in (BUCKET, QUEUE):
        a, b = old.predict(model_text(message=text)), same.predict(model_text(message=text))
        assert (a.code, a.score) == (b.code, b.score)
    # a format-3 artifact read as format 2 loses its family calibrations, nothing else
    assert Model.from_bytes(_as_format_2(per_family)).calibration == Model.from_bytes(per_family).calibration


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"format": "ipai-ops-classify-model/1"}, r"found 'ipai-ops-classify-model/1'.*classify train"),
        ({"families": ["data"]}, "families do not agree with the labels"),
        ({"calibration_by_family": {"data": [-2.0, 1.0]}}, r"calibration must be \[a > 0, b\]"),
        ({"calibration_by_family": ["data"]}, "families do not agree"),
    ],
)
def test_another_format_or_a_bad_family_calibration_is_refused_clearly(per_family, change, why):
    doc = {**json.loads(gzip.decompress(per_family)), **change}
    with pytest.raises(ModelError, match=why):
        Model.from_bytes(gzip.compress(json.dumps(doc).encode(), mtime=0))


def test_an_artifact_of_another_format_degrades_to_signatures_with_one_warning(
    registry, per_family, monkeypatch, tmp_path, caplog
):
    from ipai_ops.classify import classify

    path = tmp_path / "model.json.gz"
    doc = {**json.loads(gzip.decompress(per_family)), "format": "ipai-ops-classify-model/1"}
    path.write_bytes(gzip.compress(json.dumps(doc).encode(), mtime=0))
    monkeypatch.setenv(config.IPAI_OPS_MODEL, str(path))
    monkeypatch.setattr(learned, "RELOAD_CHECK_SECONDS", 0.0)
    learned.reset_active_model()
    caplog.set_level(logging.WARNING)
    try:
        for _ in range(3):
            assert classify(registry, message=QUEUE).is_fallback
    finally:
        learned.reset_active_model()
    assert len([r for r in caplog.records if "readable format" in r.getMessage()]) == 1
