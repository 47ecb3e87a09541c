#!/usr/bin/env python3
"""What the learned layer of classification costs, each figure against a baseline measured in
the same run (ipai_ops.classify.model; issue "Classification that learns").

    python benchmarks/classify_model.py [--rounds 3] [--examples 10000]

(a) Load: reading the artifact trained on the registry and the corpus' development split
    (gzip'd JSON, no pickle) into a Model. Baseline: loading the registry YAML (which every
    process does at start). Target <= 200 ms.
(b) Prediction: one error's model text (the message, or the error-looking lines of a log's
    failure region) through the model, per error, for the corpus' texts. Baseline: the
    signatures' decision on the same error (classify() with the model off). Target <= 1 ms.
(c) Training on N examples (default 10,000: the corpus' and the registry's examples repeated
    with their digits changed, so no two are alike), cross-validated threshold included.
    Baseline: the same training on the ~900 real examples. Target <= 60 s for 10k.
(d) Calibration (not a speed figure): per held-back split (holdout, check; the model trains
    on the development split only), family accuracy and false positives (share of the texts
    of no code pushed into a code) of the signatures alone, of signatures + a model with one
    global calibration (artifact format 2's), and of signatures + the model calibrated per
    family (format 3, the default). Same run, same signatures. Skip with --no-calibration.
    With --nested, also the design check: 5-fold cross-validation on the development
    examples alone, each fold trained both ways and measured on the fold it did not see
    (answers, share right, texts of no code pushed into a code).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ipai_ops.classify import classify, evaluate  # noqa: E402
from ipai_ops.classify import model as learned  # noqa: E402
from ipai_ops.classify.reading import read_file, read_text  # noqa: E402
from ipai_ops.registry import load_registry  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from classify_speed import best_of  # noqa: E402  (one timing rule for the classification benchmarks)

CORPUS = ROOT / "tests" / "classify" / "corpus"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--examples", type=int, default=10_000)
    parser.add_argument("--no-calibration", action="store_true", help="skip (d)")
    parser.add_argument("--nested", action="store_true", help="(d) also cross-validated on the development split")
    args = parser.parse_args()

    registry = load_registry()
    cases = evaluate.load_corpus(CORPUS, registry)
    examples = learned.registry_examples(registry) + learned.corpus_examples([c for c in cases if c.split == "dev"])
    started = time.perf_counter()
    artifact = learned.train(examples)
    real_train = time.perf_counter() - started
    path = ROOT / "var" / "bench_model.json.gz"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(artifact)

    # (a) load
    load = best_of(args.rounds, lambda: learned.Model.load(path))
    registry_load = best_of(args.rounds, load_registry)
    model = learned.Model.load(path)
    print(
        f"(a) load: {1000 * load:.1f} ms ({len(artifact) / 1e6:.2f} MB artifact) vs loading the registry "
        f"{1000 * registry_load:.1f} ms: {load / registry_load:.2f}x   target <= 200 ms"
    )

    # (b) prediction per error: ops/agent errors (what the bridge and Odoo see) and CI logs
    for group, kinds in (("ops/agent errors", ("ops", "agent")), ("CI logs", ("ci_log", "tool_output"))):
        chosen = [c for c in cases if c.kind in kinds]
        logs = [read_file(c.file) if c.file else read_text(c.text or "") for c in chosen]
        texts = [learned.model_text(log=log) for log in logs]

        def predict_all(texts=texts) -> None:
            for text in texts:
                model.predict(text)

        def signatures_all(logs=logs) -> None:
            for log in logs:
                classify(registry, log=log, model=None)

        predict = best_of(args.rounds, predict_all) / len(texts)
        signatures = best_of(args.rounds, signatures_all) / len(logs)
        chars = sum(map(len, texts)) / len(texts)
        print(
            f"(b) prediction, {group}: {1e6 * predict:.0f} us per error ({len(texts)} texts, model text "
            f"{chars:.0f} chars on average) vs the signatures' decision {1e6 * signatures:.0f} us: "
            f"{predict / signatures:.2f}x   target <= 1 ms"
        )

    # (c) training on N examples
    grown: list[learned.Example] = []
    round_ = 0
    while len(grown) < args.examples:
        round_ += 1
        for e in examples:
            text = e.text.replace("0", str(round_ % 10)) + f"\nvariant {round_}"
            grown.append(learned.Example(text, e.label, f"{e.source}#{round_}"))
            if len(grown) >= args.examples:
                break
    started = time.perf_counter()
    learned.train(grown)
    big = time.perf_counter() - started
    print(
        f"(c) training: {big:.1f} s on {len(grown):,} examples vs {real_train:.1f} s on the {len(examples)} "
        f"real ones: {big / real_train:.1f}x for {len(grown) / len(examples):.1f}x the examples   "
        f"target <= 60 s for 10k"
    )
    path.unlink()

    if not args.no_calibration:
        _calibration(registry, cases, examples, artifact)
        if args.nested:
            _nested(examples)
    return 0


def _nested(examples) -> None:
    """(d) on the development examples alone: 5 folds, each trained globally and per family."""
    from sklearn.model_selection import KFold

    ordered = sorted(examples, key=lambda e: (e.label, e.source, e.text))
    totals = {"global": [0, 0, 0], "per family": [0, 0, 0]}
    nones = sum(e.label == learned.NONE for e in ordered)
    for fit, test in KFold(n_splits=5, shuffle=True, random_state=1).split(ordered):
        seen, unseen = [ordered[i] for i in fit], [ordered[i] for i in test]
        for name, minimum in (("global", None), ("per family", learned.MIN_FAMILY_ANSWERS)):
            model = learned.Model.from_bytes(learned.train(seen, min_family_answers=minimum))
            for example in unseen:
                found = model.predict(example.text)
                if found is not None:
                    tally = totals[name]
                    tally[0] += 1
                    tally[1] += found.code == example.label
                    tally[2] += example.label == learned.NONE
    for name, (answered, right, false_positive) in totals.items():
        print(
            f"    development, 5-fold, {name:<10}: {answered} answers of {len(ordered)}, "
            f"{100 * right / max(1, answered):.1f}% right, {false_positive}/{nones} texts of no code pushed into a code"
        )


def _calibration(registry, cases, examples, per_family: bytes) -> None:
    """(d): the global and the per-family calibration, side by side, on the held-back splits."""
    models = {
        "signatures alone": None,
        "+ model, global calibration": learned.Model.from_bytes(learned.train(examples, min_family_answers=None)),
        "+ model, per-family calibration": learned.Model.from_bytes(per_family),
    }
    held = [c for c in cases if c.split in ("holdout", "check")]
    print("(d) calibration, held-back splits (family accuracy / false positives of the texts of no code):")
    for name, model in models.items():
        outcomes = evaluate.run(registry, held, model)
        cells = []
        for split in ("holdout", "check"):
            part = [o for o in outcomes if o.case.split == split]
            f = evaluate.figures(part)
            fp = round((f.false_positive_rate or 0.0) * f.none_cases)
            cells.append(
                f"{split} {100 * (f.family_accuracy or 0):.1f}% / {fp}/{f.none_cases} "
                f"({100 * (f.false_positive_rate or 0):.1f}%)"
            )
        extra = "" if model is None else f"   [{learned.describe(model)}]"
        print(f"    {name:<32} " + "   ".join(cells) + extra)


if __name__ == "__main__":
    raise SystemExit(main())
