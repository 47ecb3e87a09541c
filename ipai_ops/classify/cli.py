"""``ipai-ops classify``: which failure code an error gets and why; ``classify eval``: how well."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ipai_ops import config
from ipai_ops.cli import EXIT_CHECK_FAILED, CliError, add_format_argument, emit_json, float_in

_RATIO = float_in(0, 1)


def register(subparsers: argparse._SubParsersAction) -> None:
    cls = subparsers.add_parser(
        "classify",
        help="which failure code an error or a log gets, and why (evidence lines, captures)",
        description="Classify one error (--type/--message) or one log (--text-file, any size; '-' reads stdin). "
        "'classify eval CORPUS' measures the classifier on a labelled corpus.",
    )
    cls.add_argument("--registry", default=None, help=f"registry YAML (env {config.IPAI_OPS_REGISTRY})")
    cls.add_argument("--code", help="an explicit code or legacy alias")
    cls.add_argument("--type", dest="error_type", help="exception/error type")
    cls.add_argument("--message")
    cls.add_argument("--text-file", type=Path, help="log/output text ('-' for stdin); any size, its tail is kept")
    add_format_argument(cls)
    cls.set_defaults(handler=cmd_classify)
    sub = cls.add_subparsers(dest="classify_command", metavar="ACTION")
    ev = sub.add_parser(
        "eval",
        help="measure classification on a labelled corpus (JSONL file or folder)",
        description="Coverage, family and code accuracy, fallback and false-positive rates, per-family "
        "precision/recall, a confusion table and the evidence hit rate, for the corpus and each split.",
    )
    ev.add_argument("corpus", type=Path, help="a .jsonl file or a folder of them (tests/classify/corpus/README.md)")
    ev.add_argument("--registry", default=None, help=f"registry YAML (env {config.IPAI_OPS_REGISTRY})")
    ev.add_argument(
        "--split", choices=("all", "dev", "holdout", "check"), default="all", help="evaluate one split only"
    )
    ev.add_argument("--misses", type=int, default=0, metavar="N", help="list up to N cases answered wrong")
    ev.add_argument("--min-family-accuracy", type=_RATIO, metavar="R", help="fail (exit 1) below this")
    ev.add_argument("--min-code-accuracy", type=_RATIO, metavar="R", help="fail (exit 1) below this")
    ev.add_argument("--min-evidence-hit", type=_RATIO, metavar="R", help="fail (exit 1) below this")
    ev.add_argument("--max-fallback", type=_RATIO, metavar="R", help="fail (exit 1) above this")
    ev.add_argument("--max-false-positive", type=_RATIO, metavar="R", help="fail (exit 1) above this")
    add_format_argument(ev)
    ev.set_defaults(handler=cmd_classify_eval)


# --------------------------------------------------------------------------- classify


def _read_log(path: Path):
    from ipai_ops.classify import LogUnreadable, read_file

    try:
        log = read_file(path)
    except LogUnreadable as exc:
        raise CliError(f"{path}: {exc}") from None
    except OSError as exc:
        raise CliError(f"cannot read text file {path}: {exc.strerror}") from None
    if not log.data.strip():
        raise CliError(f"{path}: the text is empty: nothing to classify")
    return log


def cmd_classify(args: argparse.Namespace) -> int:
    from ipai_ops.classify import classify
    from ipai_ops.fingerprint import fingerprint, normalize_message
    from ipai_ops.taxonomy import load_registry

    log = _read_log(args.text_file) if args.text_file is not None else None
    if not any((args.code, args.error_type, args.message, log)):
        raise CliError("give at least one of --code, --type, --message, --text-file")
    registry = load_registry(args.registry)
    result = classify(registry, explicit_code=args.code, error_type=args.error_type, message=args.message, log=log)
    message = args.message or result.headline
    out: dict[str, Any] = {
        "code": result.code,
        "family": result.family,
        "matched_by": result.matched_by,
        "signature": result.signature,
        "severity": result.mode.severity,
        "retryable": result.mode.retryable,
        "runbook": result.mode.runbook,
        "headline": result.headline,
        "evidence": [e.as_dict() for e in result.evidence],
        "captures": result.captures,
        "also": list(result.also),
        "normalized_message": normalize_message(message),
        "fingerprint": fingerprint(code=result.code, error_type=args.error_type, message=message),
    }
    if log is not None:
        out["input"] = {
            "bytes": log.total_bytes,
            "lines_read": log.line_count,
            "lines_skipped": log.skipped_lines,
            "invalid_utf8_bytes": log.invalid_bytes,
        }
    if args.format == "json":
        emit_json(out)
        return 0
    how = f"{result.matched_by} {result.signature or ''}".strip()
    print(f"{result.code}  family {result.family}  ({how})")
    print(f"  severity {out['severity']}, retryable {str(out['retryable']).lower()}, runbook {out['runbook']}")
    if result.evidence:
        print("  evidence:")
        width = max(len(str(e.line or "")) for e in result.evidence)
        for e in result.evidence:
            where = str(e.line) if e.line is not None else e.role
            role = f"   ({e.role})" if e.role not in ("signature", "message", "type") else ""
            print(f"    {where:>{max(width, 4)}} | {e.text}{role}")
    if result.captures:
        shown = ", ".join(f"{k}={_short(v)}" for k, v in sorted(result.captures.items()))
        print(f"  captures: {shown}")
    if result.also:
        print(f"  also matched: {', '.join(result.also)}")
    print(f"  fingerprint {out['fingerprint']}")
    if log is not None and (log.skipped_lines or log.invalid_bytes):
        notes = []
        if log.skipped_lines:
            notes.append(f"read the head and tail of {log.total_bytes:,} bytes ({log.skipped_lines:,} lines skipped)")
        if log.invalid_bytes:
            were = "byte was" if log.invalid_bytes == 1 else "bytes were"
            notes.append(f"{log.invalid_bytes:,} {were} not UTF-8 (shown as U+FFFD)")
        print(f"  note: {'; '.join(notes)}")
    return 0


def _short(value: Any) -> str:
    if isinstance(value, list):
        head = ", ".join(str(v) for v in value[:3])
        return f"[{head}{', ...' if len(value) > 3 else ''}]"
    return str(value)


# --------------------------------------------------------------------------- eval


def cmd_classify_eval(args: argparse.Namespace) -> int:
    from ipai_ops.classify import evaluate
    from ipai_ops.taxonomy import load_registry

    registry = load_registry(args.registry)
    try:
        cases = evaluate.load_corpus(args.corpus, registry)
    except evaluate.CorpusError as exc:
        for problem in exc.problems[:50]:
            print(problem, file=sys.stderr)
        raise CliError(f"corpus {args.corpus}: {len(exc.problems)} bad case(s)") from None
    if args.split != "all":
        cases = [c for c in cases if c.split == args.split]
        if not cases:
            raise CliError(f"corpus {args.corpus}: no case in the {args.split} split")
    outcomes = evaluate.run(registry, cases)
    report = {name: evaluate.figures(part).as_dict() for name, part in evaluate.groups(outcomes)}
    misses = [o for o in outcomes if not o.family_right or o.code_right is False][: max(0, args.misses)]
    failed = _floors(args, report["all"])
    if args.format == "json":
        emit_json(
            {
                "corpus": str(args.corpus),
                "registry": registry.path,
                "figures": report,
                "misses": [_miss(o) for o in misses],
                "floors_failed": failed,
            }
        )
    else:
        _print_report(report)
        for o in misses:
            m = _miss(o)
            print(f"  miss {m['id']}: expected {m['expected']}, got {m['got']} ({m['headline'] or '-'})")
        for line in failed:
            print(f"floor failed: {line}", file=sys.stderr)
    return EXIT_CHECK_FAILED if failed else 0


def _miss(o: Any) -> dict[str, Any]:
    return {
        "id": o.case.id,
        "where": o.case.where,
        "expected": o.case.code or o.case.family,
        "got": f"{o.code} ({o.predicted_family})",
        "headline": (o.headline or "")[:160] or None,
        "error": o.error,
    }


def _floors(args: argparse.Namespace, figures: dict[str, Any]) -> list[str]:
    checks = (
        ("family_accuracy", args.min_family_accuracy, "min"),
        ("code_accuracy", args.min_code_accuracy, "min"),
        ("evidence_hit_rate", args.min_evidence_hit, "min"),
        ("fallback_rate", args.max_fallback, "max"),
        ("false_positive_rate", args.max_false_positive, "max"),
    )
    failed = []
    for name, bound, kind in checks:
        value = figures.get(name)
        if bound is None or value is None:
            continue
        if (kind == "min" and value < bound) or (kind == "max" and value > bound):
            failed.append(f"{name} {value:.3f} {'<' if kind == 'min' else '>'} {bound:.3f}")
    return failed


def _pct(value: float | None) -> str:
    return "   -  " if value is None else f"{100 * value:5.1f}%"


def _print_report(report: dict[str, dict[str, Any]]) -> None:
    print(
        f"{'group':<10} {'cases':>6} {'coverage':>9} {'family':>8} {'code':>8} {'fallback':>9} "
        f"{'false+':>8} {'evidence':>9} {'ms/case':>8}"
    )
    for name, f in report.items():
        print(
            f"{name:<10} {f['cases']:>6} {_pct(f['coverage']):>9} {_pct(f['family_accuracy']):>8} "
            f"{_pct(f['code_accuracy']):>8} {_pct(f['fallback_rate']):>9} {_pct(f['false_positive_rate']):>8} "
            f"{_pct(f['evidence_hit_rate']):>9} {f['mean_ms'] if f['mean_ms'] is not None else '-':>8}"
        )
    every = report["all"]
    print("\nper family (all):   cases  precision  recall")
    for family, row in every["per_family"].items():
        print(f"  {family:<16} {row['cases']:>6}  {_pct(row['precision']):>9}  {_pct(row['recall']):>6}")
    families = sorted({k for row in every["confusion"].values() for k in row} | set(every["confusion"]))
    print("\nconfusion (rows: expected, columns: answered):")
    short = {f: f[:5] for f in families}
    print("  " + " " * 15 + " ".join(f"{short[f]:>5}" for f in families))
    for expected in families:
        row = every["confusion"].get(expected, {})
        if not row:
            continue
        print(f"  {expected:<15}" + " ".join(f"{row.get(f, 0) or '.':>5}" for f in families))
