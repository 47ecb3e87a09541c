"""The learned layer: a local model for what the signatures miss.

Signatures decide first; only where none matched does the model answer, and only above a
confidence threshold (below it the fallback stands). The model is a linear classifier
(scikit-learn's ``SGDClassifier`` with logistic loss, one-vs-rest, fixed seed) over
character 3-5-grams and word 1-2-grams (hashed in numpy, :func:`_features`) of the *model
text*: the error-looking lines of a log's failure region (or the message), digits masked.
It answers a code, its probability (scikit-learn's one-vs-rest probabilities, normalised)
and the nearest labelled example, so a person always sees why.

The artifact is one gzip'd JSON document, deterministic (same inputs, same bytes): the
hashing parameters, the kept feature columns with their idf, the weights (int8 with a
scale per label), the labels and their families, the threshold and the score's calibration
(global, and per family where the cross-validated answers support one; both chosen by
cross-validation on the training examples), a few prototype vectors per label for the
nearest example, and a
manifest (inputs and their digests, counts, metrics on a held-back split). It holds no
pickle: loading it runs no code from the file. A missing or corrupt artifact degrades to
signatures only, with one warning (:func:`active_model`).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import logging
import os
import re
import threading
import time
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.special import expit
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.model_selection import KFold
from sklearn.preprocessing import normalize

from ipai_ops import config

log = logging.getLogger(__name__)

#: Artifact format. Format 3 adds each label's family and a calibration per family; a format-2
#: artifact (the same features, one global calibration) is still read; another is refused.
FORMAT = "ipai-ops-classify-model/3"
FORMAT_2 = "ipai-ops-classify-model/2"
_READABLE = (FORMAT, FORMAT_2)
#: Label of texts that belong to no code (the corpus' ``none``).
NONE = "none"
#: What the model reads of one error, at most.
MODEL_TEXT_CHARS = 6000
#: Error-looking lines of the failure region the model text keeps (the last ones), and the
#: region's last lines kept whatever they say.
ERROR_LINES = 40
TAIL_LINES = 8
#: Hashing space and the columns kept (the most frequent ones seen in >= 2 examples).
HASH_BITS = 20
HASH_FEATURES = 2**HASH_BITS
MAX_COLUMNS = 20_000
#: Prototypes kept per label (nearest example), and non-zero columns kept per prototype.
PROTOTYPES_PER_LABEL = 12
PROTOTYPE_COLUMNS = 96
#: Regularisation strength and passes of the SGD classifier.
ALPHA = 1e-5
EPOCHS = 15
#: The threshold is the lowest probability at which the cross-validated answers the model
#: would give (on examples it did not see) are right this often, and push at most this share
#: of the texts of no code into a code.
TARGET_PRECISION = 0.85
MAX_FALSE_POSITIVE = 0.02
CV_FOLDS = 5
#: The threshold's cross-validation runs on at most this many examples (a fixed-seed sample):
#: the threshold needs the shape of the probabilities, not every example, and training on
#: 10,000 stays within a minute.
CV_MAX_EXAMPLES = 3000
#: Taught examples kept (the newest), the columns kept per taught vector, and the cosine
#: similarity at which a taught example answers for a text on its own: the same error
#: with other ids, numbers or paths is well above it, another error well below.
MAX_TAUGHT = 5000
TAUGHT_COLUMNS = 256
TAUGHT_SIMILARITY = 0.8
THRESHOLDS = tuple(round(0.30 + 0.05 * i, 2) for i in range(13))  # 0.30 .. 0.90
#: A family gets a calibration of its own from this many cross-validated answers of its codes
#: (of both outcomes); below it, its codes use the global one. Chosen by nested cross-validation
#: on the development split (20, 30 and 40 answers: 30 kept the false positives lowest).
MIN_FAMILY_ANSWERS = 30

_ERROR_LINE = re.compile(
    r"(?i)error|fail|exception|cannot|could not|can't|unable|not found|denied|refused|timed? ?out|killed"
    r"|fatal|invalid|missing|undefined|expected|panic|abort|exit(?:ed)? (?:with|code|status)"
)
_DIGITS = re.compile(r"\d+")


class ModelError(ValueError):
    """An artifact that cannot be used (missing, corrupt, another format)."""


@dataclass(frozen=True)
class Example:
    """One labelled text: its model text, its code (or ``none``), where it came from, and
    its family where known (a code's family comes from any of its examples that says it)."""

    text: str
    label: str
    source: str
    family: str = ""


@dataclass(frozen=True)
class Prediction:
    code: str
    #: The probability that ``code`` is right: the classifier's score calibrated on
    #: cross-validated answers (Platt scaling, for the code's family where it has enough
    #: answers), or a taught example's similarity.
    score: float
    #: The labelled example nearest to the text, of the same code: its source and an excerpt.
    nearest_source: str
    nearest_text: str
    #: Answered by a taught example nearly identical to the text (``score`` is then their
    #: cosine similarity), not by the classifier's probability.
    taught: bool = False

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "score": round(self.score, 3),
            "nearest": {"source": self.nearest_source[:1000], "text": self.nearest_text[:300]},
        }
        if self.taught:
            out["taught"] = True
        return out


# --------------------------------------------------------------------------- model text


def model_lines(log: Any) -> list[int]:
    """Line indexes of a log the model reads: the error-looking lines of its failure
    region(s) (the last :data:`ERROR_LINES`) and the region's last :data:`TAIL_LINES`."""
    if log is None or not log.line_count:
        return []
    regions = log.region or ((max(0, log.line_count - 300), log.line_count - 1),)
    indexes: list[int] = []
    for start, end in regions:
        indexes.extend(range(max(start, end - 400), end + 1))
    errors = [i for i in indexes if _ERROR_LINE.search(log.line(i)[:300])]
    return sorted(set(errors[-ERROR_LINES:] + indexes[-TAIL_LINES:]))


def looks_like_error(line: str) -> bool:
    return _ERROR_LINE.search(line[:300]) is not None


def model_text(*, message: str | None = None, log: Any = None) -> str:
    """What the model reads of one error: the message and a log's :func:`model_lines`,
    digits masked, capped at :data:`MODEL_TEXT_CHARS`."""
    parts: list[str] = []
    if message:
        parts.append(message[:MODEL_TEXT_CHARS])
    if log is not None:
        parts.append("\n".join(log.line(i)[:300] for i in model_lines(log)))
    return _DIGITS.sub("0", "\n".join(parts))[:MODEL_TEXT_CHARS]


# --------------------------------------------------------------------------- features


#: Polynomial hashing of character windows (mod 2**64; the base is odd, so invertible).
_BASE = 0x100000001B3
_BASE_INV = pow(_BASE, -1, 2**64)
_CHAR_NGRAMS = (3, 4, 5)
_WORD = re.compile(r"[a-z_][a-z_.]+")
#: Every character ``str.isspace`` says is white space, as a space (same length).
_SPACES = {c: " " for c in range(0x3001) if chr(c).isspace()}
_SALT_WORD = np.uint64(0x9E3779B97F4A7C15)
_SALT_PAIR = np.uint64(0xC2B2AE3D27D4EB4F)


@lru_cache(maxsize=1)
def _powers() -> tuple[np.ndarray, np.ndarray]:
    """``_BASE ** k`` and its inverse ``** k`` for k up to the longest model text (mod 2**64)."""
    size = MODEL_TEXT_CHARS + 3
    with np.errstate(over="ignore"):
        up = np.cumprod(np.full(size, _BASE, dtype=np.uint64))
        down = np.cumprod(np.full(size, _BASE_INV, dtype=np.uint64))
    return np.concatenate([[np.uint64(1)], up]), np.concatenate([[np.uint64(1)], down])


def _mix(h: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: every input bit moves every output bit."""
    h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


def _features(text: str) -> tuple[np.ndarray, np.ndarray]:
    """(hash columns, counts) of ``text``: character 3-5-grams within words (each word padded
    with a space on both sides, as scikit-learn's ``char_wb``) and word 1-2-grams (words as
    ``[a-z_][a-z_.]+``), lowercased, hashed into ``HASH_FEATURES`` columns.

    All in numpy over the text's code points (a 1,000-character text in ~0.1 ms, where
    scikit-learn's analyzer and hasher took ~1 ms): a window's hash is read off prefix sums
    of ``code[j] * BASE**(L-1-j)`` and scaled by the inverse power, mod 2**64. Deterministic
    on every platform (same inputs, same artifact bytes).
    """
    padded = " " + text[:MODEL_TEXT_CHARS].lower().translate(_SPACES) + " "
    codes = np.frombuffer(padded.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    length = len(codes)
    up, down = _powers()
    with np.errstate(over="ignore"):
        weighted = codes * up[length - 1 :: -1][:length]
        prefix = np.concatenate([[np.uint64(0)], np.cumsum(weighted, dtype=np.uint64)])

        def window(start: np.ndarray, size: np.ndarray | int) -> np.ndarray:
            """Hash of ``padded[start:start + size]`` (equal windows, equal hashes)."""
            return (prefix[start + size] - prefix[start]) * down[length - start - size]

        spaces = np.concatenate([[0], np.cumsum(codes == 32)])
        parts = []
        for n in _CHAR_NGRAMS:
            if length < n:
                continue
            start = np.arange(length - n + 1)
            inside = spaces[start + n - 1] - spaces[start + 1] == 0  # no space but at the ends
            start = start[inside & (codes[start + 1] != 32)]
            parts.append(window(start, n))
        spans = np.array([m.span() for m in _WORD.finditer(padded)], dtype=np.int64).reshape(-1, 2)
        if len(spans):
            words = _mix(window(spans[:, 0], spans[:, 1] - spans[:, 0]) ^ _SALT_WORD)
            parts.append(words)
            parts.append(words[:-1] * np.uint64(_BASE) + words[1:] ^ _SALT_PAIR)
        if not parts:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        hashes = _mix(np.concatenate(parts))
    columns, counts = np.unique((hashes >> np.uint64(64 - HASH_BITS)).astype(np.int64), return_counts=True)
    return columns, counts.astype(np.float64)


def _hashed(texts: Sequence[str]) -> sp.csr_matrix:
    """One row per text: its hash columns with sublinear term frequency (1 + log count)."""
    indptr = [0]
    indices: list[np.ndarray] = []
    data: list[np.ndarray] = []
    for text in texts:
        columns, counts = _features(text)
        indices.append(columns)
        data.append(1.0 + np.log(counts))
        indptr.append(indptr[-1] + len(columns))
    return sp.csr_matrix(
        (
            np.concatenate(data) if data else np.zeros(0),
            np.concatenate(indices) if indices else np.zeros(0, dtype=np.int64),
            np.array(indptr),
        ),
        shape=(len(texts), HASH_FEATURES),
    )


def _lookup(columns: np.ndarray, hashed: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """``(keep, where)``: which entries of ``hashed`` fall in the kept ``columns`` (sorted),
    and each entry's position among them, found by binary search (cost grows with the
    text, not with the hash space)."""
    hashed.sort_indices()
    where = np.searchsorted(columns, hashed.indices)
    clipped = np.minimum(where, len(columns) - 1)
    return (where < len(columns)) & (columns[clipped] == hashed.indices), where


def _weighted(hashed: sp.csr_matrix, columns: np.ndarray, idf: np.ndarray) -> sp.csr_matrix:
    """The kept ``columns`` of ``hashed``, idf-weighted and L2-normalised."""
    keep, where = _lookup(columns, hashed)
    rows = np.repeat(np.arange(hashed.shape[0]), np.diff(hashed.indptr))[keep]
    data = hashed.data[keep] * idf[where[keep]]
    kept = sp.csr_matrix((data, (rows, where[keep])), shape=(hashed.shape[0], len(columns)))
    return normalize(kept)


# --------------------------------------------------------------------------- training


def train(
    examples: Sequence[Example],
    *,
    taught: Sequence[Example] = (),
    held_back: Sequence[Example] = (),
    inputs: Iterable[dict] = (),
    min_family_answers: int | None = MIN_FAMILY_ANSWERS,
) -> bytes:
    """The artifact for ``examples`` and the ``taught`` ones (deterministic: same examples,
    same bytes, whatever their order). Taught examples train the classifier too, and each
    also answers for texts nearly identical to it (:data:`TAUGHT_SIMILARITY`), so a few
    examples of a new kind of error are enough. ``held_back`` examples are only measured.
    ``min_family_answers=None`` calibrates globally only (the format-2 model; benchmarks)."""
    taught = sorted(taught, key=lambda e: (e.label, e.source, e.text))[-MAX_TAUGHT:]
    examples = sorted([*examples, *taught], key=lambda e: (e.label, e.source, e.text))
    labels = sorted({e.label for e in examples})
    if len(labels) < 2:
        raise ModelError("training needs examples of at least two labels")
    families = _families(examples, labels)
    texts = [e.text for e in examples]
    y = np.array([labels.index(e.label) for e in examples])
    hashed = _hashed(texts)
    df = np.asarray((hashed > 0).sum(axis=0)).ravel()
    seen = np.flatnonzero(df >= 2)
    order = np.lexsort((seen, -df[seen]))  # most frequent first, ties by column
    columns = seen[order[:MAX_COLUMNS]]
    if taught:  # what tells a taught kind apart is rare by nature: its columns are always kept
        taught_hashed = _hashed([e.text for e in taught])
        columns = np.union1d(columns, taught_hashed.indices)
    columns = np.sort(columns)
    n = len(texts)
    idf = (np.log((1 + n) / (1 + df[columns])) + 1.0).astype(np.float32)
    X = _weighted(hashed, columns, idf)
    threshold, cv, calibration, by_family = _threshold(X, y, labels, families, min_family_answers)
    clf = _fit(X, y)
    scale = (np.abs(clf.coef_).max(axis=1) / 127.0).astype(np.float32)
    scale[scale == 0] = 1.0
    coef = np.round(clf.coef_ / scale[:, None]).astype(np.int8)
    intercept = clf.intercept_.astype(np.float32)
    prototypes = _prototypes(X, y, labels, examples)
    model = {
        "format": FORMAT,
        "hash_features": HASH_FEATURES,
        "labels": labels,
        "families": families,
        "columns": _b64(columns.astype(np.int32)),
        "idf": _b64(idf),
        "coef": _b64(coef),
        "coef_scale": _b64(scale),
        "intercept": _b64(intercept),
        "threshold": threshold,
        "calibration": calibration,
        "calibration_by_family": by_family,
        "prototypes": prototypes,
        "taught": _taught_vectors(taught, columns, idf),
    }
    manifest: dict[str, Any] = {
        "inputs": list(inputs),
        "examples": n,
        "per_label": {label: int((y == i).sum()) for i, label in enumerate(labels)},
        "columns": len(columns),
        "taught": len(taught),
        "threshold": threshold,
        "cross_validated": cv,
    }
    if held_back:
        manifest["held_back"] = Model(model).measure(held_back)
    model["manifest"] = manifest
    raw = json.dumps(model, sort_keys=True, separators=(",", ":")).encode()
    model["manifest"]["sha256_of_model"] = hashlib.sha256(raw).hexdigest()
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0, compresslevel=9) as gz:
        gz.write(json.dumps(model, sort_keys=True, separators=(",", ":")).encode())
    return buffer.getvalue()


def _families(examples: Sequence[Example], labels: list[str]) -> list[str]:
    """Each label's family: the one its examples name most often (ties by name), ``none``
    for ``none``, ``""`` where no example names one (a code known only from taught examples)."""
    named: dict[str, Counter[str]] = {}
    for e in examples:
        if e.family:
            named.setdefault(e.label, Counter())[e.family] += 1
    out = []
    for label in labels:
        counts = named.get(label)
        out.append(
            NONE if label == NONE else min(counts, key=lambda f: (-counts[f], f)) if counts else ""  # type: ignore[arg-type]
        )
    return out


def _threshold(
    X: sp.csr_matrix, y: np.ndarray, labels: list[str], families: list[str], min_family_answers: int | None
) -> tuple[float, dict[str, Any], list[float] | None, dict[str, list[float]]]:
    """The lowest threshold whose cross-validated accepted answers reach TARGET_PRECISION
    and accept at most MAX_FALSE_POSITIVE of the ``none`` examples (an answer of ``none``,
    or below the threshold, is an abstention), the global calibration of the score and the
    calibrations per family.

    Calibration (Platt scaling of the top score): on the same cross-validated answers, a
    logistic fit of "the answer is right" on the classifier's score; the model then reports
    that probability, and the threshold is expressed in it. A family with at least
    ``min_family_answers`` answers (of both outcomes) gets a fit of its own, so a score means
    the same for a family the classifier knows well and one it confuses; the others keep the
    global fit. The candidate thresholds are the grid's scores under the global fit; with no
    family fit this is the global threshold on the raw score, the same answers. A family with a
    fit of its own must also reach TARGET_PRECISION on its own accepted answers."""
    if len(y) > CV_MAX_EXAMPLES:
        sample = np.sort(np.random.default_rng(0).choice(len(y), CV_MAX_EXAMPLES, replace=False))
        X, y = X[sample], y[sample]
    folds = min(CV_FOLDS, len(y))
    if folds < 2:
        return 0.9, {"folds": 0}, None, {}
    probs = np.zeros((len(y), len(labels)))
    for fit_rows, test_rows in KFold(n_splits=folds, shuffle=True, random_state=0).split(np.arange(len(y))):
        clf = _fit(X[fit_rows], y[fit_rows])
        probs[np.ix_(test_rows, clf.classes_)] = clf.predict_proba(X[test_rows])
    none = labels.index(NONE) if NONE in labels else -1
    answer, score = probs.argmax(axis=1), probs.max(axis=1)
    answered, right, nones = answer != none, answer == y, y == none
    calibration = _platt(score[answered], right[answered])
    by_family: dict[str, list[float]] = {}
    family_of = np.array(families, dtype=object)[answer]
    if calibration is not None and min_family_answers is not None:
        for family in sorted(set(family_of[answered]) - {"", NONE}):
            chosen = answered & (family_of == family)
            if chosen.sum() >= min_family_answers:
                fit = _platt(score[chosen], right[chosen])
                if fit is not None:
                    by_family[family] = fit
    calibrated = np.array(
        [_calibrate(s, by_family.get(f, calibration)) for s, f in zip(score.tolist(), family_of.tolist(), strict=True)]
    )
    best, table = 0.9, []
    for raw in THRESHOLDS:
        t = _calibrate(raw, calibration)
        accepted = (calibrated >= t) & answered
        precision = float((accepted & right).sum() / accepted.sum()) if accepted.sum() else 1.0
        false_positive = float((accepted & nones).sum() / nones.sum()) if nones.sum() else 0.0
        row = {
            "threshold": raw,
            "answered": int(accepted.sum()),
            "precision": round(precision, 3),
            "false_positive": round(false_positive, 3),
        }
        if calibration is not None:
            row["calibrated"] = round(t, 3)
        # a family calibrated apart is held to the precision on its own: the others' right
        # answers must not carry its wrong ones past the threshold
        below = [
            family
            for family in by_family
            if (accepted & (family_of == family)).sum()
            and (accepted & right & (family_of == family)).sum() / (accepted & (family_of == family)).sum()
            < TARGET_PRECISION
        ]
        if below:
            row["families_below_target"] = below
        table.append(row)
        if precision >= TARGET_PRECISION and false_positive <= MAX_FALSE_POSITIVE and not below and raw < best:
            best = raw
    best = round(_calibrate(best, calibration), 6)
    cv: dict[str, Any] = {"folds": folds, "examples": len(y), "table": table}
    if calibration is not None:
        accepted = answered & (calibrated >= best)
        cv["by_family"] = _reliability(
            calibrated, answered=answered, accepted=accepted, right=right, family_of=family_of, by_family=by_family
        )
    return best, cv, calibration, by_family


def _reliability(
    calibrated: np.ndarray,
    *,
    answered: np.ndarray,
    accepted: np.ndarray,
    right: np.ndarray,
    family_of: np.ndarray,
    by_family: dict,
) -> dict[str, dict[str, Any]]:
    """Per family, its cross-validated answers (how many, how many right, their mean
    calibrated score: close to the share right when the calibration is honest), those given
    at the threshold, and whether the family has a calibration of its own."""
    out: dict[str, dict[str, Any]] = {}
    for family in sorted({str(f) for f in family_of[answered]}):
        mine = answered & (family_of == family)
        out[family or "?"] = {
            "answers": int(mine.sum()),
            "right": int((mine & right).sum()),
            "mean_score": round(float(calibrated[mine].mean()), 3),
            "at_threshold": int((mine & accepted).sum()),
            "right_at_threshold": int((mine & accepted & right).sum()),
            "own_calibration": family in by_family,
        }
    return out


def _platt(score: np.ndarray, right: np.ndarray) -> list[float] | None:
    """``[a, b]`` with P(right) = expit(a * score + b), or None (too few answers, one outcome,
    or a fit that would not be increasing)."""
    if len(score) < 20 or right.all() or not right.any():
        return None
    fit = LogisticRegression(C=1e4).fit(score.reshape(-1, 1), right.astype(int))
    a, b = float(fit.coef_[0, 0]), float(fit.intercept_[0])
    return [round(a, 6), round(b, 6)] if a > 0 else None


def _calibration(value: Any) -> list[float] | None:
    """A calibration read from an artifact: ``[a, b]`` with ``a > 0`` (increasing), or None."""
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != 2 or float(value[0]) <= 0:
        raise ModelError("corrupt artifact: calibration must be [a > 0, b]")
    return [float(v) for v in value]


def _calibrate(raw: float, calibration: list[float] | None) -> float:
    if not calibration:
        return raw
    a, b = calibration
    return float(expit(a * raw + b))


def _fit(X: sp.csr_matrix, y: np.ndarray) -> SGDClassifier:
    """A fixed number of passes (deterministic; no early stop), so scikit-learn's warning
    that it did not converge to a tolerance says nothing here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return _classifier().fit(X, y)


def _classifier() -> SGDClassifier:
    return SGDClassifier(loss="log_loss", alpha=ALPHA, max_iter=EPOCHS, tol=None, random_state=0, n_jobs=2)


def _prototypes(X: sp.csr_matrix, y: np.ndarray, labels: list[str], examples: Sequence[Example]) -> list[dict]:
    """Up to PROTOTYPES_PER_LABEL examples per label, each as its strongest columns."""
    out: list[dict] = []
    for i, label in enumerate(labels):
        if label == NONE:
            continue
        rows = np.flatnonzero(y == i)[:PROTOTYPES_PER_LABEL]
        for row in rows:
            vec = X[row]
            top = np.argsort(-vec.data, kind="stable")[:PROTOTYPE_COLUMNS]
            out.append(
                {
                    "label": i,
                    "source": examples[row].source,
                    "text": _excerpt(examples[row].text),
                    "cols": _b64(vec.indices[top].astype(np.int32)),
                    "vals": _b64(vec.data[top].astype(np.float16)),
                }
            )
    return out


def _taught_vectors(taught: Sequence[Example], columns: np.ndarray, idf: np.ndarray) -> list[dict]:
    if not taught:
        return []
    X = _weighted(_hashed([e.text for e in taught]), columns, idf)
    out = []
    for row, example in enumerate(taught):
        vec = X[row]
        top = np.argsort(-vec.data, kind="stable")[:TAUGHT_COLUMNS]
        out.append(
            {
                "code": example.label,
                "source": example.source,
                "text": _excerpt(example.text),
                "cols": _b64(vec.indices[top].astype(np.int32)),
                "vals": _b64(vec.data[top].astype(np.float16)),
            }
        )
    return out


def _excerpt(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    picked = next((line for line in lines if _ERROR_LINE.search(line)), lines[0] if lines else "")
    return picked.strip()[:200]


def _b64(array: np.ndarray) -> dict[str, Any]:
    data = np.ascontiguousarray(array)
    return {
        "dtype": data.dtype.str,
        "shape": list(data.shape),
        "data": base64.b64encode(data.tobytes()).decode(),
    }


def _array(obj: Any) -> np.ndarray:
    try:
        raw = base64.b64decode(obj["data"], validate=True)
        array = np.frombuffer(raw, dtype=np.dtype(obj["dtype"]))
        return array.reshape(obj["shape"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"corrupt array in the artifact: {exc}") from None


# --------------------------------------------------------------------------- training examples


def registry_examples(registry: Any) -> list[Example]:
    """The ``examples:`` of every active failure mode, labelled with its code."""
    out: list[Example] = []
    for mode in registry.active():
        if mode.fallback:
            continue
        for text in mode.examples:
            out.append(Example(model_text(message=text), mode.code, f"registry:{mode.code}", mode.family))
    return out


def corpus_examples(cases: Iterable[Any]) -> list[Example]:
    """Labelled examples from corpus cases (:mod:`ipai_ops.classify.evaluate`): the expected
    code, or ``none``; a case labelled with a family only is skipped (no code to learn). A
    case whose text cannot be read is a :class:`ModelError` naming it, not a silent gap."""
    from ipai_ops.classify.reading import LogUnreadable, read_file, read_text

    out: list[Example] = []
    for case in cases:
        label = case.code or (NONE if case.family == NONE else None)
        if label is None:
            continue
        try:
            log = read_file(case.file) if case.file is not None else read_text(case.text or "")
        except (OSError, LogUnreadable) as exc:
            raise ModelError(f"corpus case {case.id}: {exc}") from None
        out.append(Example(model_text(log=log), label, case.id, case.family))
    return out


# --------------------------------------------------------------------------- the model


class Model:
    """A loaded artifact: :meth:`predict` answers a code or abstains."""

    def __init__(self, doc: dict[str, Any], *, threshold: float | None = None) -> None:
        if not isinstance(doc, dict) or doc.get("format") not in _READABLE:
            found = doc.get("format") if isinstance(doc, dict) else None
            raise ModelError(
                f"not a classification model of a readable format (found {found!r}, expected {FORMAT!r}"
                f" or {FORMAT_2!r}): train it again with `ipai-ops classify train`"
            )
        try:
            self._read(doc, threshold)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            if isinstance(exc, ModelError):
                raise
            raise ModelError(f"corrupt artifact: {exc!r}") from None

    def _read(self, doc: dict[str, Any], threshold: float | None) -> None:
        self.labels: list[str] = [str(label) for label in doc["labels"]]
        self.columns = _array(doc["columns"]).astype(np.int64)
        self.idf = _array(doc["idf"]).astype(np.float64)
        scale = _array(doc["coef_scale"]).astype(np.float64)
        coef = _array(doc["coef"]).astype(np.float64)
        self.intercept = _array(doc["intercept"]).astype(np.float64)
        self.threshold = float(threshold if threshold is not None else doc["threshold"])
        self.calibration = _calibration(doc.get("calibration"))
        k, width = len(self.labels), len(self.columns)
        self.manifest: dict[str, Any] = dict(doc.get("manifest") or {})
        rows = k if k > 2 else 1
        if (
            int(doc["hash_features"]) != HASH_FEATURES
            or coef.shape != (rows, width)
            or scale.shape != (rows,)
            or self.intercept.shape != (rows,)
            or self.idf.shape != (width,)
        ):
            raise ModelError("corrupt artifact: array shapes do not agree")
        if width and (
            self.columns.min() < 0 or self.columns.max() >= HASH_FEATURES or np.any(np.diff(self.columns) <= 0)
        ):
            raise ModelError("corrupt artifact: feature columns out of range")
        # format 2 has neither: every label then uses the global calibration
        self.families: list[str] = [str(f) for f in doc.get("families") or [""] * k]
        by_family = doc.get("calibration_by_family") or {}
        if len(self.families) != k or not isinstance(by_family, dict):
            raise ModelError("corrupt artifact: families do not agree with the labels")
        self.calibration_by_family = {str(f): _calibration(c) for f, c in by_family.items()}
        #: The calibration each label's score goes through: its family's, else the global one.
        self.label_calibration = [self.calibration_by_family.get(f) or self.calibration for f in self.families]
        self.coef_t = (coef * scale[:, None]).T.copy()
        self._protos_by_label: dict[int, tuple[sp.csr_matrix, list[tuple[str, str]]]] = {}
        grouped: dict[int, list[dict]] = {}
        for proto in doc["prototypes"]:
            label = int(proto["label"])
            if not 0 <= label < k:
                raise ModelError("corrupt artifact: prototype label out of range")
            grouped.setdefault(label, []).append(proto)
        self._taught: tuple[sp.csr_matrix, list[tuple[str, str, str]]] | None = None
        taught = doc.get("taught") or []
        if taught:
            t_rows, t_cols, t_vals, t_meta = [], [], [], []
            for r, item in enumerate(taught):
                c = _array(item["cols"]).astype(np.int64)
                v = _array(item["vals"]).astype(np.float64)
                if c.shape != v.shape or (len(c) and (c.min() < 0 or c.max() >= width)):
                    raise ModelError("corrupt artifact: taught columns out of range")
                t_rows.extend([r] * len(c))
                t_cols.extend(c.tolist())
                t_vals.extend(v.tolist())
                t_meta.append((str(item["code"]), str(item["source"]), str(item["text"])))
            matrix = sp.csr_matrix((t_vals, (t_rows, t_cols)), shape=(len(taught), width))
            self._taught = (matrix, t_meta)
        for label, items in grouped.items():
            rows_, cols, vals = [], [], []
            for r, proto in enumerate(items):
                c = _array(proto["cols"]).astype(np.int64)
                v = _array(proto["vals"]).astype(np.float64)
                if c.shape != v.shape or (len(c) and (c.min() < 0 or c.max() >= width)):
                    raise ModelError("corrupt artifact: prototype columns out of range")
                rows_.extend([r] * len(c))
                cols.extend(c.tolist())
                vals.extend(v.tolist())
            matrix = sp.csr_matrix((vals, (rows_, cols)), shape=(len(items), width))
            self._protos_by_label[label] = (matrix, [(str(p["source"]), str(p["text"])) for p in items])

    @classmethod
    def from_bytes(cls, data: bytes, *, threshold: float | None = None) -> Model:
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(data)) as gz:
                raw = gz.read(64 * 1024 * 1024 + 1)
            if len(raw) > 64 * 1024 * 1024:
                raise ModelError("artifact larger than 64 MiB uncompressed")
            doc = json.loads(raw)
        except (OSError, EOFError, ValueError) as exc:
            if isinstance(exc, ModelError):
                raise
            raise ModelError(f"not a gzip'd JSON artifact: {exc}") from None
        return cls(doc, threshold=threshold)

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, threshold: float | None = None) -> Model:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise ModelError(f"cannot read {path}: {exc.strerror}") from None
        return cls.from_bytes(data, threshold=threshold)

    def _probs(self, scores: np.ndarray) -> np.ndarray:
        probs = expit(scores)
        if probs.shape[-1] == 1:  # two labels: one column of weights (scikit-learn's binary case)
            return np.concatenate([1.0 - probs, probs], axis=-1)
        return probs / probs.sum(axis=-1, keepdims=True)  # one-vs-rest, normalised

    def _vector(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """One text's kept columns (sorted) and their weights: the same as a row of
        :func:`_weighted`, in plain numpy (one error at a time pays no sparse-matrix set-up)."""
        hashed = _hashed([text])
        keep, where = _lookup(self.columns, hashed)
        cols = where[keep]
        weights = hashed.data[keep] * self.idf[cols]
        norm = np.sqrt(weights @ weights)
        return cols, (weights / norm if norm else weights)

    def predict(self, text: str, *, allowed: frozenset[str] | None = None) -> Prediction | None:
        """The code for ``text``, or None (abstain: below the threshold, ``none``, or a code
        not in ``allowed``, e.g. one removed from the registry since training)."""
        if not text.strip() or not len(self.columns):
            return None
        cols, weights = self._vector(text)
        if self._taught is not None and len(cols):
            # a taught example nearly identical to the text answers first: people's choices win
            query = np.zeros(len(self.columns))
            query[cols] = weights
            sims = self._taught[0] @ query
            for index in np.argsort(-sims, kind="stable")[:5]:
                code, source, excerpt = self._taught[1][int(index)]
                if sims[index] < TAUGHT_SIMILARITY:
                    break
                if allowed is None or code in allowed:
                    return Prediction(code, float(min(1.0, sims[index])), source, excerpt, taught=True)
        probs = self._probs(weights @ self.coef_t[cols] + self.intercept)
        best = int(probs.argmax())
        label, score = self.labels[best], _calibrate(float(probs[best]), self.label_calibration[best])
        if label == NONE or score < self.threshold or (allowed is not None and label not in allowed):
            return None
        source, excerpt = "", ""
        protos = self._protos_by_label.get(best)
        if protos is not None:
            query = np.zeros(len(self.columns))
            query[cols] = weights
            sims = protos[0] @ query
            source, excerpt = protos[1][int(np.argmax(sims))]
        return Prediction(label, score, source, excerpt)

    def measure(self, examples: Sequence[Example]) -> dict[str, Any]:
        """Answered share and precision on ``examples`` (the manifest's held-back figures)."""
        if not examples:
            return {"examples": 0}
        answered = right = false_positive = nones = 0
        scores: list[float] = []
        bins: dict[str, list[int]] = {}
        for example in examples:
            found = self.predict(example.text)
            nones += example.label == NONE
            if found is None:
                continue
            answered += 1
            scores.append(found.score)
            low = min(int(found.score * 20), 19) / 20  # 0.05-wide bins of the score
            tally = bins.setdefault(f"{low:.2f}-{low + 0.05:.2f}", [0, 0])
            tally[0] += 1
            tally[1] += found.code == example.label
            right += found.code == example.label
            false_positive += example.label == NONE
        return {
            "examples": len(examples),
            "answered": answered,
            "precision": round(right / answered, 3) if answered else None,
            # a calibrated score's mean is close to the precision of the answers it was given to
            "mean_score": round(sum(scores) / len(scores), 3) if scores else None,
            # reliability: per score bin, how many answers and how many of them were right
            "by_score": {k: {"answered": n, "right": r} for k, (n, r) in sorted(bins.items())},
            "false_positives_of_none": f"{false_positive}/{nones}",
        }


# --------------------------------------------------------------------------- the active model

_lock = threading.Lock()
_state: dict[str, Any] = {"key": None, "model": None, "checked": 0.0, "warned": set(), "path": None, "generation": 0}
#: How often (seconds) the artifact's file is checked for a new version.
RELOAD_CHECK_SECONDS = 2.0


def active_model() -> Model | None:
    """The model of ``IPAI_OPS_MODEL`` (default ``var/classify/model.json.gz`` of the
    repository), reloaded when the file changes (checked every RELOAD_CHECK_SECONDS); None
    when it is missing or unusable (one warning per path and state), or ``IPAI_OPS_MODEL=off``."""
    path = config.model_path()
    if path is None:
        return None
    now = time.monotonic()
    with _lock:
        if _state["model"] is not None and now - _state["checked"] < RELOAD_CHECK_SECONDS and _state["path"] == path:
            return _state["model"]
        _state["checked"] = now
        _state["path"] = path
        try:
            stat = path.stat()
        except OSError:
            _state["model"] = None
            _state["key"] = None  # the same file put back later is loaded again
            _warn_once((str(path), "missing"), "classification model %s not found: signatures only", path)
            return None
        key = (str(path), stat.st_mtime_ns, stat.st_size)
        if key == _state["key"]:
            return _state["model"]
        _state["key"] = key
        _state["generation"] += 1
        try:
            _state["model"] = Model.load(path, threshold=config.model_threshold())
        except ValueError as exc:  # ModelError, or a bad IPAI_OPS_MODEL_THRESHOLD
            _state["model"] = None
            _warn_once(key, "classification model %s unusable (%s): signatures only", path, exc)
        return _state["model"]


def generation() -> int:
    """How many times an artifact was (re)loaded in this process: changes with the model."""
    return int(_state["generation"])


def _warn_once(key: Any, message: str, *args: Any) -> None:
    if key in _state["warned"]:
        return
    _state["warned"].add(key)
    # a missing default artifact is the normal state of a fresh checkout: not worth a warning
    level = logging.INFO if key[1] == "missing" and not os.environ.get(config.IPAI_OPS_MODEL) else logging.WARNING
    log.log(level, message, *args)


def reset_active_model() -> None:
    """Forget the loaded model (tests)."""
    with _lock:
        _state.update({"key": None, "model": None, "checked": 0.0, "warned": set(), "path": None})


def describe(model: Model) -> str:
    manifest = model.manifest
    held = manifest.get("held_back") or {}
    own = f", {len(model.calibration_by_family)} families calibrated apart" if model.calibration_by_family else ""
    return (
        f"{manifest.get('examples', '?')} examples, {len(model.labels)} labels, threshold {model.threshold:.2f}{own}"
        + (f"; held back: {held.get('answered')}/{held.get('examples')} answered" if held else "")
    )
