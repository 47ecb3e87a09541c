#!/usr/bin/env python3
"""Worst-case time of every registry signature on hostile text, and how it grows with the text.

    python benchmarks/classify_worst_case.py [--chars 65536] [--top 10]

The bridge classifies text that anyone who can reach its OTLP port controls, up to
``MAX_CLASSIFY_CHARS`` per tier. A signature that backtracks (``=+ x`` on a run of ``=``,
nested quantifiers) turns one request into seconds of CPU. For each signature this runs
``search`` over adversarial subjects of ``--chars`` characters built from the pattern's
own literal characters (runs of one character, of two alternating ones, lines of them),
at ``--chars`` and at half that, and prints the slowest signatures with their growth
factor: a linear search takes 2x as long on twice the text, a backtracking one 4x. The
baseline is a linear regex (``\bnever-there\b``) over the same subject. Target: no
signature grows faster than 3x per doubling once it takes over a millisecond.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ipai_ops.classify import MAX_CLASSIFY_CHARS  # noqa: E402
from ipai_ops.registry import load_registry  # noqa: E402

#: Growth per doubling above which a signature counts as super-linear (linear: 2, quadratic: 4).
TARGET_GROWTH = 3.0
#: Below this a timing is too small to read a growth factor from.
NOISE_FLOOR_S = 0.001


def subjects(pattern: str, size: int) -> list[str]:
    """Runs of the characters the pattern names literally, the usual ReDoS triggers."""
    literals = {c for c in re.sub(r"\\[a-zA-Z]", "", pattern) if c.isprintable()} | {" ", "a", "1", ":", "\n"}
    out = []
    for char in sorted(literals):
        out.append(char * size)
        out.append((char + " ") * (size // 2))
        out.append((char * 79 + "\n") * (size // 80))
    return out


def timed(regex: re.Pattern[str], subject: str) -> float:
    started = time.perf_counter()
    regex.search(subject)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chars", type=int, default=MAX_CLASSIFY_CHARS, help="subject length (the classify cap)")
    parser.add_argument("--top", type=int, default=10)
    args = parser.parse_args(argv)
    registry = load_registry()
    baseline = re.compile(r"\bnever-there\b")
    results = []
    for mode in registry:
        for sig in mode.signatures:
            worst = (0.0, 1.0, 0.0, "")
            for subject in subjects(sig.pattern, args.chars):
                full = min(timed(sig.regex, subject) for _ in range(2))
                if full <= worst[0]:
                    continue
                half = min(timed(sig.regex, subject[: len(subject) // 2]) for _ in range(2)) or 1e-9
                base = min(timed(baseline, subject) for _ in range(2)) or 1e-9
                worst = (full, full / half, full / base, subject[:12])
            results.append((*worst, mode.code, sig.pattern))
    results.sort(reverse=True)
    print(f"{len(results)} signatures, subjects of {args.chars:,} characters; slowest first:")
    print("      time   growth/2x  x linear regex  code / pattern / subject")
    for full, growth, vs_base, subject, code, pattern in results[: args.top]:
        print(f"  {full * 1e3:7.2f} ms  {growth:6.1f}x  {vs_base:10.1f}x     {code} {pattern[:60]!r} on {subject!r}...")
    over = [r for r in results if r[0] > NOISE_FLOOR_S and r[1] > TARGET_GROWTH]
    print(
        f"worst {results[0][0] * 1e3:.2f} ms ({results[0][2]:.1f}x the linear regex); {len(over)} signature(s) grow"
        f" faster than {TARGET_GROWTH:.0f}x per doubling (target 0)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
