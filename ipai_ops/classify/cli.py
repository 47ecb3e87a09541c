"""``ipai-ops classify``: which failure code an error gets and why; ``classify eval``: how well."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ipai_ops import config
from ipai_ops.cli import EXIT_CHECK_FAILED, CliError, add_dsn_argument, add_format_argument, emit_json, float_in

_RATIO = float_in(0, 1)


def _registry_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--registry", default=None, help=f"registry YAML (env {config.IPAI_OPS_REGISTRY})")


def register(subparsers: argparse._SubParsersAction) -> None:
    cls = subparsers.add_parser(
        "classify",
        help="which failure code an error or a log gets, and why (evidence lines, captures)",
        description="Classify one error (--type/--message) or one log (--text-file, any size; '-' reads stdin). "
        "'classify eval CORPUS' measures the classifier on a labelled corpus.",
    )
    _registry_argument(cls)
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
    _registry_argument(ev)
    ev.add_argument(
        "--split", choices=("all", "dev", "holdout", "check"), default="all", help="evaluate one split only"
    )
    ev.add_argument("--misses", type=int, default=0, metavar="N", help="list up to N cases answered wrong")
    ev.add_argument("--min-family-accuracy", type=_RATIO, metavar="R", help="fail (exit 1) below this")
    ev.add_argument("--min-code-accuracy", type=_RATIO, metavar="R", help="fail (exit 1) below this")
    ev.add_argument("--min-evidence-hit", type=_RATIO, metavar="R", help="fail (exit 1) below this")
    ev.add_argument("--max-fallback", type=_RATIO, metavar="R", help="fail (exit 1) above this")
    ev.add_argument("--max-false-positive", type=_RATIO, metavar="R", help="fail (exit 1) above this")
    ev.add_argument(
        "--model",
        default=None,
        metavar="PATH",
        help=f"also measure signatures + this model artifact (default: the active one, env {config.IPAI_OPS_MODEL}; "
        "'off': signatures only). Floors apply to the signatures alone.",
    )
    add_format_argument(ev)
    ev.set_defaults(handler=cmd_classify_eval)
    tr = sub.add_parser(
        "train",
        help="build the model for what signatures miss (deterministic artifact with a manifest)",
        description="Train the learned layer on the registry's examples and the corpus' development split "
        "(cases with a code, and texts of no code as 'none'); the other splits are held back and measured. "
        "Same inputs, same bytes.",
    )
    _registry_argument(tr)
    tr.add_argument(
        "--corpus",
        type=Path,
        default=None,
        help="labelled corpus (default: tests/classify/corpus of the repository)",
    )
    tr.add_argument(
        "--splits",
        default="dev",
        help="comma-separated corpus splits to train on (default: dev; the rest is held back and measured)",
    )
    tr.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"artifact path (default: env {config.IPAI_OPS_MODEL}, else var/classify/model.json.gz)",
    )
    tr.add_argument(
        "--taught",
        action="store_true",
        help="also train on the examples people taught (ops.classification_examples of --dsn)",
    )
    add_dsn_argument(tr)
    add_format_argument(tr)
    tr.set_defaults(handler=cmd_classify_train)
    te = sub.add_parser(
        "teach",
        help="store a labelled example: this text is this code (ops.classification_examples)",
        description="Teach the learned layer: the text of an error and the code it should have. The next "
        "'classify train --taught' learns it; a taught example answers for texts nearly identical to it.",
    )
    te.add_argument("--code", required=True, help="an active code of the registry (an alias resolves)")
    te.add_argument("--message", help="the error's message or text")
    te.add_argument("--text-file", type=Path, help="the text, from a file ('-' for stdin)")
    te.add_argument("--type", dest="error_type", help="the error's type, if any")
    te.add_argument("--error-id", type=int, default=None, help="the ops.agent_errors row it was taught from")
    te.add_argument("--by", default=None, help="who teaches it (default: the OS user)")
    _registry_argument(te)
    add_dsn_argument(te)
    add_format_argument(te)
    te.set_defaults(handler=cmd_classify_teach)
    sg = sub.add_parser(
        "suggest",
        help="suggest a signature from the taught examples of one code (matches them, no other labelled text)",
        description="A linear-time (RE2) pattern built from what the taught examples of CODE share, checked "
        "against them (all match) and every other labelled text (taught, corpus, registry examples: none may). "
        "Nothing is written: add it to ssot/errors/failure_modes.yaml and quote it in the code's runbook.",
    )
    sg.add_argument("--code", required=True)
    _registry_argument(sg)
    sg.add_argument("--corpus", type=Path, default=None, help="labelled corpus (default: tests/classify/corpus)")
    add_dsn_argument(sg)
    add_format_argument(sg)
    sg.set_defaults(handler=cmd_classify_suggest)


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
    from ipai_ops.registry import load_registry

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
        "model": result.model,
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
    if result.model:
        how = f"model, probability {result.model['score']:.2f}"
    print(f"{result.code}  family {result.family}  ({how})")
    if result.model:
        nearest = result.model["nearest"]
        print(f"  nearest labelled example: {nearest['text']}  ({nearest['source']})")
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
    from ipai_ops.registry import load_registry

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
    learned, with_model = _eval_model(args), None
    if learned is not None:
        with_model = {
            name: evaluate.figures(part).as_dict()
            for name, part in evaluate.groups(evaluate.run(registry, cases, learned))
        }
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
                "with_model": with_model,
            }
        )
    else:
        _print_report(report)
        if with_model is not None:
            from ipai_ops.classify.model import describe

            print(f"\nsignatures + model ({describe(learned)}):")
            _print_table(with_model)
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


def _eval_model(args: argparse.Namespace) -> Any:
    """The model eval also measures: --model PATH, else the active artifact if there is one;
    None for 'off'."""
    path = config.model_path(args.model)
    if path is None or (args.model is None and not path.exists()):
        return None
    from ipai_ops.classify.model import Model, ModelError

    try:
        threshold = config.model_threshold()
    except ValueError as exc:
        raise CliError(str(exc)) from None
    try:
        return Model.load(path, threshold=threshold)
    except ModelError as exc:
        raise CliError(f"model {path}: {exc}") from None


def cmd_classify_train(args: argparse.Namespace) -> int:
    from ipai_ops.classify import evaluate
    from ipai_ops.classify.model import Model, ModelError, corpus_examples, describe, registry_examples, train
    from ipai_ops.registry import load_registry

    registry = load_registry(args.registry)
    corpus = args.corpus or config.repo_root() / "tests" / "classify" / "corpus"
    try:
        cases = evaluate.load_corpus(corpus, registry)
    except evaluate.CorpusError as exc:
        raise CliError(f"corpus {corpus}: {len(exc.problems)} bad case(s); first: {exc.problems[0]}") from None
    splits = {s.strip() for s in args.splits.split(",") if s.strip()}
    unknown = splits - {"dev", "holdout", "check"}
    if not splits or unknown:
        raise CliError(f"--splits: {', '.join(sorted(unknown)) or 'none given'}: use dev, holdout, check")
    chosen = [c for c in cases if c.split in splits]
    held = [c for c in cases if c.split not in splits]
    try:
        examples = registry_examples(registry) + corpus_examples(chosen)
        held_back = corpus_examples(held)
    except ModelError as exc:
        raise CliError(f"cannot train: {exc}") from None
    taught, skipped = _taught(args, registry) if args.taught else ([], 0)
    inputs = [
        {"registry": str(registry.path), "sha256": _sha256(Path(registry.path))},
        *({"corpus": f.name, "sha256": _sha256(f)} for f in evaluate.corpus_files(Path(corpus))),
        {"splits": sorted(splits)},
        *([{"taught": len(taught), "skipped_inactive_code": skipped}] if args.taught else []),
    ]
    try:
        data = train(examples, taught=taught, held_back=held_back, inputs=inputs)
    except ModelError as exc:
        raise CliError(f"cannot train: {exc}") from None
    out = args.out or config.model_path() or config.repo_root() / "var" / "classify" / "model.json.gz"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(out)  # atomic: a running bridge or Odoo never reads half a file
    model = Model.from_bytes(data)
    summary = {"artifact": str(out), "bytes": len(data), "sha256": _sha256(out), "manifest": model.manifest}
    if args.format == "json":
        emit_json(summary)
    else:
        print(f"wrote {out} ({len(data)} bytes, sha256 {summary['sha256'][:16]}...): {describe(model)}")
        held_back = model.manifest.get("held_back") or {}
        if held_back:
            print(
                f"held back ({held_back['examples']} cases of {', '.join(sorted({c.split for c in held}))}): "
                f"answered {held_back['answered']}, precision {held_back['precision']}, "
                f"false positives {held_back['false_positives_of_none']} of the texts of no code"
            )
    return 0


def _taught(args: argparse.Namespace, registry: Any) -> tuple[list[Any], int]:
    """Taught examples whose code is active, and how many were skipped (their code is not)."""
    from ipai_ops.classify.model import Example, model_text
    from ipai_ops.classify.teach import taught_examples

    active = {m.code for m in registry.active() if not m.fallback}
    rows = taught_examples(args.dsn)
    kept = [
        Example(model_text(message=f"{r.error_type}: {r.text}" if r.error_type else r.text), r.code, f"taught:{r.id}")
        for r in rows
        if r.code in active
    ]
    return kept, len(rows) - len(kept)


def cmd_classify_teach(args: argparse.Namespace) -> int:
    import getpass

    from ipai_ops import store
    from ipai_ops.classify.teach import TeachError, check_example, teach
    from ipai_ops.registry import load_registry

    if (args.message is None) == (args.text_file is None):
        raise CliError("give the text with exactly one of --message, --text-file")
    if args.text_file is not None:
        try:
            raw = sys.stdin.buffer.read() if str(args.text_file) == "-" else args.text_file.read_bytes()
        except OSError as exc:
            raise CliError(f"cannot read text file {args.text_file}: {exc.strerror}") from None
        if b"\x00" in raw[:8192]:
            raise CliError(f"{args.text_file}: binary input (NUL bytes): teach a text")
        text = raw.decode("utf-8", "replace")
    else:
        text = args.message
    registry = load_registry(args.registry)
    try:
        code = check_example(registry, args.code, text)
    except TeachError as exc:
        raise CliError(str(exc)) from None
    by = args.by or getpass.getuser()
    conn = store.connect(args.dsn, application_name="ipai-ops classify teach")
    try:
        with conn:
            example_id = teach(
                conn, registry, code=code, text=text, taught_by=by, error_type=args.error_type, error_id=args.error_id
            )
    except TeachError as exc:
        raise CliError(str(exc)) from None
    finally:
        conn.close()
    if args.format == "json":
        emit_json({"id": example_id, "code": code, "taught_by": by, "chars": len(text)})
    else:
        print(f"taught example {example_id}: {code} (by {by}); 'ipai-ops classify train --taught' learns it")
    return 0


def cmd_classify_suggest(args: argparse.Namespace) -> int:
    from ipai_ops.classify import evaluate
    from ipai_ops.classify.suggest import SuggestError, suggest_signature
    from ipai_ops.classify.teach import taught_examples
    from ipai_ops.registry import load_registry

    registry = load_registry(args.registry)
    mode = registry.get(args.code)
    if mode is None:
        raise CliError(f"{args.code!r} is not a code of the registry")
    taught = taught_examples(args.dsn)
    mine = [t.text for t in taught if t.code == mode.code]
    if not mine:
        raise CliError(f"no taught example of {mode.code}: teach some first (ipai-ops classify teach)")
    others = [t.text for t in taught if t.code != mode.code]
    others += [text for m in registry.active() if m.code != mode.code for text in m.examples]
    corpus = args.corpus or config.repo_root() / "tests" / "classify" / "corpus"
    if Path(corpus).exists():
        for case in evaluate.load_corpus(corpus, registry):
            if case.code == mode.code:
                continue
            if case.text is not None:
                others.append(case.text)
            elif case.file is not None:
                others.append(case.file.read_text("utf-8", "replace"))
    try:
        found = suggest_signature(mine, others)
    except (SuggestError, ValueError) as exc:
        raise CliError(f"{mode.code}: {exc}", code=EXIT_CHECK_FAILED) from None
    if args.format == "json":
        emit_json(
            {
                "code": mode.code,
                "on": "message",
                "pattern": found.pattern,
                "examples": found.examples,
                "others_checked": found.others_checked,
            }
        )
    else:
        print(
            f"{mode.code}: matches its {found.examples} taught example(s) and none of {found.others_checked} "
            "other labelled texts:"
        )
        print(f"      - \"on\": message\n        pattern: '{found.pattern.replace(chr(39), chr(39) * 2)}'")
    return 0


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def _print_report(report: dict[str, dict[str, Any]]) -> None:
    _print_table(report)
    _print_breakdown(report)


def _print_table(report: dict[str, dict[str, Any]]) -> None:
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


def _print_breakdown(report: dict[str, dict[str, Any]]) -> None:
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
