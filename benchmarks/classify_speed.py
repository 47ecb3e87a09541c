#!/usr/bin/env python3
"""What classification costs, each figure against a baseline measured in the same run.

    python benchmarks/classify_speed.py [--rounds 5]

(a) A failed CI log: read (normalise, find where it failed) and classify the real logs of
    the development corpus (tests/classify/corpus/logs), scaled to ms per 256 KiB.
    Baseline: one RE2 search over the same bytes (reading the text once). Target <= 10 ms.
(b) A storm of same-shaped errors: SDK exceptions of 100 kinds (10-frame traces, ids drawn
    anew each round, as in benchmarks/bridge_throughput.py figure d) through the bridge's
    extractor, whose shape templates are the shape cache (``classify()`` itself decides every
    call from scratch: for one short error, verifying a cached decision costs what deciding
    does). Per event with templates warm against each event classified and enveloped from
    scratch. Target <= 50 us per cached shape.
(c) Registry size: the cost of (a) with the registry cut to 50 codes and grown to 300
    (copies of real codes under other names). Target: 300 codes <= 1.5x 50 codes.
(d) Hostile text: classify() on 32 KiB and 64 KiB texts built from the registry's own
    literal characters (the usual backtracking triggers) and on one 64 KiB line. Growth per
    doubling (linear: 2x), and the cost against a linear regex over the same text.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import re2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ipai_ops.classify import classify, matching, read_text  # noqa: E402
from ipai_ops.registry import Registry, load_registry  # noqa: E402
from ipai_ops.text import re2_options  # noqa: E402

CORPUS = ROOT / "tests" / "classify" / "corpus"
KIB256 = 256 * 1024


def best_of(rounds: int, work) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)


def corpus_logs(min_bytes: int = 16 * 1024) -> list[bytes]:
    return [p.read_bytes() for p in sorted(CORPUS.glob("logs/*/*.log")) if p.stat().st_size >= min_bytes]


def figure_a(registry: Registry, logs: list[bytes], rounds: int) -> tuple[float, float, float]:
    """(ms per 256 KiB classified, ms per 256 KiB baseline, total MiB)."""
    baseline = re2.compile(rb"\bnever-there-xyz\b", re2_options())
    for log in logs:  # warm: the matcher compiles once per registry, RE2 caches DFA states
        classify(registry, log=read_text(log))
    total = sum(map(len, logs))
    cost = best_of(rounds, lambda: [classify(registry, log=read_text(log)) for log in logs])
    base = best_of(rounds, lambda: [baseline.search(log) for log in logs])
    return cost * 1000 * KIB256 / total, base * 1000 * KIB256 / total, total / 2**20


def figure_b(registry: Registry, rounds: int) -> tuple[float, float, int]:
    """(us per event through the bridge's extractor with its shape templates warm, us per
    event when each is classified and enveloped from scratch, events per round).

    SDK exceptions of 100 kinds (benchmarks/bridge_throughput.py, figure d), ids drawn anew
    for every round: no exact repeat, only repeated shapes."""
    from bridge_throughput import sdk_workload
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from ipai_ops.bridge.extract import SAMPLE_CAPS, Extractor
    from ipai_ops.envelope import clean_text

    def requests(seed: int) -> list[Any]:
        out = []
        for body in sdk_workload(2000, 100, 0.0, seed=seed):
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            out.append(request)
        return out

    warm_up, *timed = [requests(seed) for seed in range(1, rounds + 2)]
    events = sum(len(ss.spans) for r in warm_up for rs in r.resource_spans for ss in rs.scope_spans)

    class FromScratch(Extractor):
        def _classified(self, inputs: dict[str, Any], resource: Any, producer_fingerprint: str | None) -> Any:
            template = self._make_template(inputs, frozenset(), producer_fingerprint)
            return template, True, clean_text(inputs["message"], SAMPLE_CAPS)[0]

    def run(extractor: Extractor, batches: list[list[Any]]) -> float:
        for request in warm_up:
            extractor.traces(request)
        times = []
        for batch in batches:
            started = time.perf_counter()
            for request in batch:
                extractor.traces(request)
            times.append(time.perf_counter() - started)
        return min(times)

    cached = run(Extractor(registry), timed)
    plain = run(FromScratch(registry), timed)
    return cached * 1e6 / events, plain * 1e6 / events, events


def resized(registry: Registry, codes: int) -> Registry:
    """The registry cut to ``codes`` active codes, or grown with renamed copies of them."""
    base = [m for m in registry.modes if m.active and not m.fallback]
    modes = []
    for i in range(codes):
        mode = base[i % len(base)]
        if i >= len(base):
            mode = replace(
                mode, code=f"COPY{i // len(base)}.{mode.code.replace('.', '_')}", category=f"COPY{i // len(base)}"
            )
        modes.append(mode)
    return Registry((*modes, registry.fallback), path=f"<{codes} codes>")


def figure_c(registry: Registry, logs: list[bytes], rounds: int) -> tuple[float, float, int, int]:
    small, large = resized(registry, 50), resized(registry, 300)
    a50 = figure_a(small, logs, rounds)[0]
    a300 = figure_a(large, logs, rounds)[0]
    return a50, a300, matching.matcher_for(small).signature_count, matching.matcher_for(large).signature_count


def hostile(registry: Registry, size: int) -> list[str]:
    literals = sorted({c for m in registry.modes for s in m.signatures for c in s.pattern if c.isprintable()})
    out = ["".join(literals[i % len(literals)] for i in range(size))]  # every literal, one long line
    for char in ("=", "-", " ", "a", ":", "/", "'", "."):
        out.append(char * size)
        out.append((char * 79 + "\n") * (size // 80))
    out.append(("error: " + "a-" * 40 + "\n") * (size // 88))
    return out


def figure_d(registry: Registry, rounds: int) -> tuple[float, float, float]:
    """(ms at 64 KiB, growth 32 -> 64 KiB, x a linear regex over the same texts)."""
    linear = re.compile(r"\bnever-there-xyz\b")
    t64, t32 = hostile(registry, 64 * 1024), hostile(registry, 32 * 1024)
    for text in t64:
        classify(registry, text=text)
    c64 = best_of(rounds, lambda: [classify(registry, text=t) for t in t64])
    c32 = best_of(rounds, lambda: [classify(registry, text=t) for t in t32])
    base = best_of(rounds, lambda: [linear.search(t) for t in t64])
    return c64 * 1000 / len(t64), c64 / c32, c64 / base


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="best of N rounds per timing")
    args = parser.parse_args(argv)
    registry = load_registry()
    logs = corpus_logs()
    cost, base, mib = figure_a(registry, logs, args.rounds)
    print(f"(a) {len(logs)} real CI logs ({mib:.1f} MiB): {cost:.2f} ms per 256 KiB read + classified;")
    print(f"    one RE2 search over the same bytes: {base:.3f} ms per 256 KiB ({cost / base:.0f}x); target <= 10 ms")
    cached, plain, events = figure_b(registry, args.rounds)
    print(
        f"(b) a storm of {events:,} SDK exceptions of 100 shapes (new ids each): {cached:.1f} us per event through"
        f" the bridge's shape templates vs {plain:.1f} us classified and enveloped from scratch"
        f" ({plain / cached:.1f}x faster); target <= 50 us per cached shape"
    )
    a50, a300, s50, s300 = figure_c(registry, logs, args.rounds)
    print(
        f"(c) registry size: 300 codes ({s300} signatures) {a300:.2f} ms vs 50 codes ({s50} signatures)"
        f" {a50:.2f} ms per 256 KiB: {a300 / a50:.2f}x; target <= 1.5x"
    )
    per, growth, vs_linear = figure_d(registry, args.rounds)
    print(
        f"(d) hostile 64 KiB texts: {per:.2f} ms each, {growth:.2f}x per doubling (linear 2x),"
        f" {vs_linear:.0f}x a linear regex over the same text"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
