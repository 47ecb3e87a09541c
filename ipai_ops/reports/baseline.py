"""The reliability baseline of the Pulser connector, computed from exported intents.

Input records have the shape ``GET /pulser/v1/intents/<ref>`` returns (extra keys
ignored, missing keys tolerated). Rates are over *finished* intents (succeeded,
failed, dead, cancelled); queued/assigned/running ones are counted as in flight.
Percentiles use the nearest-rank method, so the same input always gives the same
output (no interpolation, no clock, sorted keys, fixed rounding).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

REPORT_VERSION = 1
FINISHED = ("succeeded", "failed", "dead", "cancelled")
IN_FLIGHT = ("queued", "assigned", "running")
TOP_CODES = 10
_ROUND = 3


class InputError(ValueError):
    """The input cannot be read as intent records."""


# --------------------------------------------------------------------------- input


def load_records(path: str | Path, *, text: str | None = None) -> list[dict[str, Any]]:
    """Records from a JSON array, a ``{"intents": [...]}`` object, or JSON Lines."""
    if text is None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise InputError(f"cannot read {path}: {exc.strerror}") from None
        except UnicodeDecodeError as exc:
            raise InputError(f"cannot read {path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    stripped = text.strip()
    if not stripped:
        return []
    if stripped[0] in "[{":
        try:
            doc = json.loads(stripped)
        except ValueError:
            doc = None  # maybe JSON Lines whose first record is an object
        if isinstance(doc, list):
            return [r for r in doc if isinstance(r, dict)]
        if isinstance(doc, dict):
            if isinstance(doc.get("intents"), list):
                return [r for r in doc["intents"] if isinstance(r, dict)]
            return [doc]
    records = []
    for number, line in enumerate(stripped.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise InputError(f"{path}:{number}: not JSON: {exc.msg}") from None
        if isinstance(record, dict):
            records.append(record)
    return records


#: The connector's published view (contract v1, addons/ipai_pulser_connector/data/
#: ops_intent_views.sql), never its tables; names as the API's records.
_SQL = """
SELECT i.id, i.ref, i.intent_type AS type, i.source, i.state, i.attempts, i.max_attempts,
       i.duration_ms, i.failure_code, i.created_at,
       i.cancel_requested_at, i.cancel_acknowledged_at
  FROM ops.pulser_intents_v1 i
 ORDER BY i.id
"""


def load_records_from_db(conn) -> list[dict[str, Any]]:
    """Records straight from an Odoo database, through the connector's ``ops.pulser_intents_v1``."""
    with conn.cursor() as cur:
        cur.execute(_SQL)
        columns = [c[0] for c in cur.description]
        rows = cur.fetchall()
    out = []
    for row in rows:
        record = dict(zip(columns, row, strict=True))
        for key in ("created_at", "cancel_requested_at", "cancel_acknowledged_at"):
            if isinstance(record.get(key), datetime):
                record[key] = record[key].isoformat()
        out.append(record)
    return out


# --------------------------------------------------------------------------- helpers


def percentile(values: Iterable[float], pct: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    ordered = sorted(values)
    if not ordered:
        return None
    rank = max(1, math.ceil(pct / 100.0 * len(ordered)))
    return round(float(ordered[rank - 1]), _ROUND)


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number >= 0 else None


def _moment(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _failure_code(record: Mapping[str, Any]) -> str | None:
    code = record.get("failure_code")
    if isinstance(code, str) and code:
        return code
    envelope = record.get("failure_envelope")
    if isinstance(envelope, Mapping) and isinstance(envelope.get("error"), Mapping):
        code = envelope["error"].get("code")
        if isinstance(code, str) and code:
            return code
    result = record.get("result")
    if isinstance(result, Mapping) and isinstance(result.get("error"), Mapping):
        code = result["error"].get("code")
        if isinstance(code, str) and code:
            return code
    return None


def _cancel_latency_ms(record: Mapping[str, Any]) -> float | None:
    requested = _moment(record.get("cancel_requested_at"))
    acknowledged = _moment(record.get("cancel_acknowledged_at"))
    if requested is None or acknowledged is None:
        return None
    try:
        delta = (acknowledged - requested).total_seconds() * 1000
    except TypeError:  # naive vs aware
        return None
    return max(delta, 0.0)


def _text(value: Any, default: str = "unknown") -> str:
    return value if isinstance(value, str) and value else default


# --------------------------------------------------------------------------- compute


class _Bucket:
    def __init__(self) -> None:
        self.states: Counter[str] = Counter()
        self.durations: list[float] = []
        self.cancel_latencies: list[float] = []
        self.codes: Counter[str] = Counter()
        self.retries = 0
        self.total = 0

    def add(self, record: Mapping[str, Any]) -> None:
        self.total += 1
        state = _text(record.get("state"))
        self.states[state] += 1
        duration = _number(record.get("duration_ms"))
        if duration is not None and state in ("succeeded", "failed", "dead"):
            self.durations.append(duration)
        latency = _cancel_latency_ms(record)
        if latency is not None:
            self.cancel_latencies.append(latency)
        code = _failure_code(record)
        if code and state in ("failed", "dead", "queued"):
            self.codes[code] += 1
        attempts = _number(record.get("attempts"))
        if attempts is not None:
            self.retries += max(int(attempts) - 1, 0)

    def summary(self) -> dict[str, Any]:
        finished = sum(self.states[s] for s in FINISHED)
        errors = self.states["failed"] + self.states["dead"]
        return {
            "total": self.total,
            "finished": finished,
            "in_flight": sum(self.states[s] for s in IN_FLIGHT),
            "succeeded": self.states["succeeded"],
            "failed": self.states["failed"],
            "dead_letters": self.states["dead"],
            "cancelled": self.states["cancelled"],
            "completion_rate": _rate(self.states["succeeded"], finished),
            "error_rate": _rate(errors, finished),
            "cancel_rate": _rate(self.states["cancelled"], finished),
            "duration_ms": {
                "p50": percentile(self.durations, 50),
                "p95": percentile(self.durations, 95),
                "n": len(self.durations),
            },
            "cancel_latency_ms": {
                "p50": percentile(self.cancel_latencies, 50),
                "p95": percentile(self.cancel_latencies, 95),
                "n": len(self.cancel_latencies),
            },
            "retries": self.retries,
        }


def _top(codes: Counter[str], limit: int = TOP_CODES) -> list[dict[str, Any]]:
    return [{"code": code, "count": count} for code, count in sorted(codes.items(), key=lambda i: (-i[1], i[0]))][
        :limit
    ]


def compute(records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    overall = _Bucket()
    groups: dict[tuple[str, str], _Bucket] = defaultdict(_Bucket)
    skipped = 0
    for record in records:
        if not isinstance(record, Mapping):
            skipped += 1
            continue
        key = (_text(record.get("type") or record.get("intent_type")), _text(record.get("source")))
        overall.add(record)
        groups[key].add(record)
    rows = []
    for (intent_type, source), bucket in sorted(groups.items()):
        rows.append(
            {
                "intent_type": intent_type,
                "source": source,
                **bucket.summary(),
                "top_failure_codes": _top(bucket.codes, 3),
            }
        )
    return {
        "report": "baseline",
        "report_version": REPORT_VERSION,
        "input": {"records": overall.total, "skipped": skipped},
        "overall": overall.summary(),
        "by_type_source": rows,
        "top_failure_codes": _top(overall.codes),
    }


# --------------------------------------------------------------------------- anonymise

#: Fewer bytes than this and the key is refused: a short key can be guessed, and with the
#: key every client id one can guess can be checked against the report.
MIN_KEY_BYTES = 16
#: What :func:`anonymise` replaces: the client ids (``source``, the API key's id). Intent
#: types and failure codes name the product's own vocabulary, not a party.
ANONYMISED_FIELDS = ("source",)


class AnonymisationError(ValueError):
    """The anonymisation key is missing or too short."""


def pseudonym(value: str, key: bytes) -> str:
    """A stable pseudonym of ``value``: the same id under the same key every night, so
    drift compares a client with itself, and no dictionary of ids reverses it without
    the key (a plain hash of a short id would be reversed by trying every id)."""
    return "src-" + hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()[:12]


def anonymise(report: Mapping[str, Any], key: bytes | str) -> dict[str, Any]:
    """A copy of ``report`` whose client ids are pseudonyms (:func:`pseudonym`), rows in the
    same deterministic order; refuses a key shorter than :data:`MIN_KEY_BYTES`."""
    raw = key.encode("utf-8") if isinstance(key, str) else bytes(key)
    if len(raw) < MIN_KEY_BYTES:
        raise AnonymisationError(f"the anonymisation key must have at least {MIN_KEY_BYTES} bytes, it has {len(raw)}")
    out = json.loads(json.dumps(report))
    rows = [{**row, "source": pseudonym(str(row["source"]), raw)} for row in out["by_type_source"]]
    out["by_type_source"] = sorted(rows, key=lambda r: (r["intent_type"], r["source"]))
    out["anonymised"] = {"fields": list(ANONYMISED_FIELDS), "method": "hmac-sha256"}
    return out


# --------------------------------------------------------------------------- render


def render_json(report: Mapping[str, Any]) -> str:
    return json.dumps(report, indent=2, sort_keys=True) + "\n"


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".") if value != int(value) else str(int(value))
    return str(value)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def render_markdown(report: Mapping[str, Any]) -> str:
    o = report["overall"]
    lines = [
        "# Pulser intents: reliability baseline",
        "",
        f"{report['input']['records']} intents ({o['finished']} finished, {o['in_flight']} in flight).",
        "",
        *(["Client ids are pseudonyms (HMAC-SHA256 under the report key).", ""] if report.get("anonymised") else []),
        "| metric | value |",
        "|---|---|",
        f"| completion rate | {_pct(o['completion_rate'])} |",
        f"| error rate | {_pct(o['error_rate'])} |",
        f"| cancel rate | {_pct(o['cancel_rate'])} |",
        f"| duration p50 / p95 (ms) | {_fmt(o['duration_ms']['p50'])} / {_fmt(o['duration_ms']['p95'])} |",
        f"| cancel latency p50 / p95 (ms) | {_fmt(o['cancel_latency_ms']['p50'])} / "
        f"{_fmt(o['cancel_latency_ms']['p95'])} |",
        f"| retries | {o['retries']} |",
        f"| dead letters | {o['dead_letters']} |",
        "",
        "## By intent type and source",
        "",
        "| type | source | total | completion | error | cancel | p50 ms | p95 ms | cancel p50 ms | retries | dead |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in report["by_type_source"]:
        lines.append(
            f"| {row['intent_type']} | {row['source']} | {row['total']} | {_pct(row['completion_rate'])} | "
            f"{_pct(row['error_rate'])} | {_pct(row['cancel_rate'])} | {_fmt(row['duration_ms']['p50'])} | "
            f"{_fmt(row['duration_ms']['p95'])} | {_fmt(row['cancel_latency_ms']['p50'])} | {row['retries']} | "
            f"{row['dead_letters']} |"
        )
    lines += ["", "## Top failure codes", ""]
    if report["top_failure_codes"]:
        lines += ["| code | intents |", "|---|---:|"]
        lines += [f"| {c['code']} | {c['count']} |" for c in report["top_failure_codes"]]
    else:
        lines.append("No failures.")
    return "\n".join(lines) + "\n"
