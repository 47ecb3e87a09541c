"""What failed, readable: the error form's failure panel, occurrences, sparklines and trace links.

The panel is rendered on the server from the latest envelope (``sample``): exception type
and message, the stack frames of ``evidence.stderr_tail`` (the traceback the reporters and
the bridge keep there), the classification's evidence lines and captures. Every value is
the sender's: QWeb's ``t-out`` escapes it and the field is sanitized as well.

In-app frames: envelope 1.x carries the traceback as text and no per-frame flag, so the
panel applies the project's one in-app rule to each frame's path
(``ipai_ops.record.is_app_path``: not the standard library, installed packages, generated
code or the Odoo server's framework and standard addons, as this process sees them), and,
for tracebacks from other machines and runtimes, the same rule by the path's shape
(``site-packages``, ``dist-packages``, ``lib/pythonX.Y``, ``node_modules``, ``node:``).
"""

import functools
import json
import os
import re

import odoo
from markupsafe import Markup
from odoo import api, fields, models
from odoo.tools import SQL

try:
    from ipai_ops.record import is_app_path
except ImportError:  # pragma: no cover
    is_app_path = None

from .ipai_agent_error import capture_rows, classification_of, evidence_rows
from .ipai_agent_error_occurrence import trace_link, trace_url

# The sample is sender-controlled: bound what one form renders.
_MAX_FRAMES = 100
_MAX_NOTES = 20
_MAX_LINE = 300
_MAX_OUTPUT = 8192
_MAX_STACK_TEXT = 65536
_MAX_SCAN_LINE = 1500

_PY_FRAME = re.compile(r'^\s*File "(?P<path>[^"]{1,1000})", line (?P<line>\d{1,9}), in (?P<func>.{1,300})$')
_JS_FRAME = re.compile(
    r"^\s+at (?:(?P<func>[^()]{1,300}?) \()?(?P<path>[^()\s]{1,1000}?):(?P<line>\d{1,9})(?::\d{1,9})?\)?$"
)
_LIBRARY = re.compile(
    r"(?:^|[/\\])(?:site-packages|dist-packages|node_modules)[/\\]"
    r"|[/\\]lib[/\\]python\d+(?:\.\d+)?[/\\]"
    r"|^<frozen |^node:|^internal[/\\]"
)

SPARK_WINDOWS = {
    # name: (buckets, seconds per bucket)
    "24h": (24, 3600),
    "30d": (30, 86400),
}


def _cut(text, limit=_MAX_LINE):
    text = text if isinstance(text, str) else ""
    return text if len(text) <= limit else text[:limit] + "…"


@functools.lru_cache(maxsize=1)
def _odoo_roots():
    """The Odoo server's framework and standard addons folders. Odoo 19's ``odoo`` is a
    namespace package (no ``__file__``, which ``is_app_path`` looks for), so from its path."""
    roots = set()
    for entry in getattr(odoo, "__path__", ()):
        package = os.path.normpath(entry).replace("\\", "/")
        roots |= {package + "/", os.path.dirname(package) + "/addons/"}
    return tuple(sorted(roots))


def is_library_frame(path):
    path = path or ""
    if _LIBRARY.search(path) or path.replace("\\", "/").startswith(_odoo_roots()):
        return True
    return is_app_path is not None and not is_app_path(path)


def stack_items(text):
    """A traceback's text as display items, in the order printed: ``frame`` items
    (path, line, function, code, in_app) and ``note`` items (the exception lines and the
    chaining sentences). Python (``File "...", line N, in f``) and Node (``at f (file:N:C)``)
    frames; text before the first frame is left to the evidence lines. Empty when no frame."""
    if not isinstance(text, str) or not text:
        return []
    items, frames, notes = [], 0, 0
    started = False
    # bounded work whatever the sender wrote: the tail (where the raising frames are), and
    # lines no frame could be are never given to the patterns
    lines = [line if len(line) <= _MAX_SCAN_LINE else "" for line in text[-_MAX_STACK_TEXT:].splitlines()]
    index = 0
    while index < len(lines):
        raw = lines[index]
        index += 1
        match = _PY_FRAME.match(raw) or _JS_FRAME.match(raw)
        if match:
            started = True
            if frames >= _MAX_FRAMES:
                continue
            frames += 1
            code = ""
            if match.re is _PY_FRAME and index < len(lines):
                following = lines[index]
                if following.startswith("    ") and not _PY_FRAME.match(following) and following.strip():
                    code = following.strip()
                    index += 1
                    # Python 3.11+ marks the failing expression with a line of ^ and ~
                    if index < len(lines) and lines[index].strip() and set(lines[index].strip()) <= set("^~"):
                        index += 1
            path = match.group("path")
            items.append(
                {
                    "kind": "frame",
                    "path": _cut(path),
                    "line": int(match.group("line")),
                    "func": _cut((match.group("func") or "").strip()) or "<anonymous>",
                    "code": _cut(code),
                    "in_app": not is_library_frame(path),
                }
            )
            continue
        stripped = raw.strip()
        if raw.startswith("Traceback (most recent call last)"):
            started = True
            continue
        if not started or not stripped or notes >= _MAX_NOTES:
            continue
        notes += 1
        items.append({"kind": "note", "text": _cut(stripped)})
    return items if frames else []


def fold_library_frames(items):
    """Consecutive library frames become one ``fold`` item (``frames``: the folded ones)."""
    out = []
    for item in items:
        if item["kind"] == "frame" and not item["in_app"]:
            if out and out[-1]["kind"] == "fold":
                out[-1]["frames"].append(item)
            else:
                out.append({"kind": "fold", "frames": [item]})
        else:
            out.append(item)
    for item in out:
        if item["kind"] == "fold":
            item["count"] = len(item["frames"])
    return out


def failure_panel_values(sample, *, error_type=None, message=None):
    """The failure panel's QWeb values from an envelope's JSON text (the row's type and
    message when the envelope has none)."""
    envelope = {}
    if sample:
        try:
            envelope = json.loads(sample)
        except ValueError:
            envelope = {}
    envelope = envelope if isinstance(envelope, dict) else {}
    error = envelope.get("error") if isinstance(envelope.get("error"), dict) else {}
    evidence = envelope.get("evidence") if isinstance(envelope.get("evidence"), dict) else {}
    env_type, env_message = error.get("error_type"), error.get("message")
    stderr = evidence.get("stderr_tail") if isinstance(evidence.get("stderr_tail"), str) else ""
    stdout = evidence.get("stdout_tail") if isinstance(evidence.get("stdout_tail"), str) else ""
    items = stack_items(stderr)
    classification = classification_of(sample) or {}
    return {
        "error_type": _cut(env_type if isinstance(env_type, str) and env_type else error_type or "", 512),
        "message": _cut(env_message if isinstance(env_message, str) and env_message else message or "", 4096),
        "items": fold_library_frames(items),
        "frame_count": sum(1 for item in items if item["kind"] == "frame"),
        "in_app_count": sum(1 for item in items if item["kind"] == "frame" and item["in_app"]),
        # the raw tails only where no frames were read from them (a CI log, a plain stderr)
        "stderr": "" if items else stderr[-_MAX_OUTPUT:],
        "stdout": stdout[-_MAX_OUTPUT:],
        "rows": evidence_rows(classification.get("lines")),
        "captures": capture_rows(classification.get("captures")),
    }


def sparkline_svg(counts, *, window):
    """A small bar chart (inline SVG) of ``counts`` (oldest first). Only numbers go in;
    ``Markup.format`` escapes them anyway.

    The newest bucket is the rightmost bar, so a container narrower than the chart (a list
    column, which clips its cells) would hide exactly the bars that matter: the chart scales
    down to its container (``max-width: 100%``, the viewBox keeps the proportions) instead."""
    width, height, gap = 3, 18, 1
    peak = max(counts) if counts else 0
    total = sum(counts)
    label = f"{total} occurrence{'s' if total != 1 else ''} in the last {'24 hours' if window == '24h' else '30 days'}"
    bars = []
    for index, value in enumerate(counts):
        bar = 0 if not peak else max(1, round(value * height / peak)) if value else 0
        bars.append(
            Markup('<rect x="{}" y="{}" width="{}" height="{}"><title>{}</title></rect>').format(
                index * (width + gap), height - bar, width, bar, value
            )
        )
    return Markup(
        '<svg class="o_ipai_sparkline" data-window="{}" data-counts="{}" width="{}" height="{}" viewBox="0 0 {} {}" '
        'style="max-width: 100%; height: auto;" role="img" aria-label="{}" fill="currentColor"><title>{}</title>'
        '<line x1="0" y1="{}" x2="{}" y2="{}" stroke="currentColor" stroke-opacity="0.3"/>{}</svg>'
    ).format(
        window,
        ",".join(str(c) for c in counts),
        len(counts) * (width + gap),
        height,
        len(counts) * (width + gap),
        height,
        label,
        label,
        height - 0.5,
        len(counts) * (width + gap),
        height - 0.5,
        Markup("").join(bars),
    )


class IpaiAgentError(models.Model):
    _inherit = "ipai.agent.error"

    occurrence_ids = fields.One2many("ipai.agent.error.occurrence", "error_id", string="Occurrence list")
    failure_html = fields.Html(compute="_compute_failure_html", string="What failed", sanitize=True)
    # One compute per window: the list shows the 24 h one by default, and the 30-day scan
    # (most of the cost: every occurrence of the month) runs only where it is shown.
    occurrences_24h = fields.Integer(compute="_compute_sparkline_24h", string="Last 24 h", aggregator=False)
    occurrences_30d = fields.Integer(compute="_compute_sparkline_30d", string="Last 30 days", aggregator=False)
    # Built from integers only (sparkline_svg): not sanitized, since the sanitizer drops SVG.
    sparkline_24h = fields.Html(compute="_compute_sparkline_24h", string="24 h", sanitize=False)
    sparkline_30d = fields.Html(compute="_compute_sparkline_30d", string="30 days", sanitize=False)
    last_trace_link = fields.Html(compute="_compute_last_trace_link", string="Last trace", sanitize=True)

    @api.depends("sample", "error_type", "message")
    def _compute_failure_html(self):
        for error in self:
            values = failure_panel_values(error.sample, error_type=error.error_type, message=error.message)
            error.failure_html = self.env["ir.qweb"]._render("ipai_reliability.ipai_agent_error_failure_panel", values)

    @api.private
    def _occurrence_buckets(self, windows=tuple(SPARK_WINDOWS)):
        """``{error id: {window: [count per bucket, oldest first]}}`` for every error of self,
        from ops.agent_error_occurrences in one grouped query (index-only on the occurrences
        index ``(error_id, occurred_at DESC)``, bounded to the windows)."""
        windows = {name: SPARK_WINDOWS[name] for name in windows}
        result = {error_id: {name: [0] * buckets for name, (buckets, __) in windows.items()} for error_id in self.ids}
        ids = [i for i in self.ids if isinstance(i, int)]
        if not ids or not self.env["ipai.ops"].ops_schema_ready("ops.agent_error_occurrences"):
            return result
        parts = [
            SQL(
                "SELECT error_id, %s AS win,"
                " greatest(0, floor(extract(epoch FROM (statement_timestamp() - occurred_at)) / %s))::int AS ago,"
                " count(*) FROM ops.agent_error_occurrences"
                " WHERE error_id = ANY(%s) AND occurred_at > statement_timestamp() - make_interval(secs => %s)"
                " GROUP BY error_id, ago",
                name,
                step,
                ids,
                buckets * step,
            )
            for name, (buckets, step) in windows.items()
        ]
        self.env.cr.execute(SQL(" UNION ALL ").join(parts))
        for error_id, name, ago, count in self.env.cr.fetchall():
            series = result[error_id][name]
            series[len(series) - 1 - min(ago, len(series) - 1)] += count
        return result

    def _compute_sparkline(self, window):
        buckets = self._occurrence_buckets((window,))
        empty = [0] * SPARK_WINDOWS[window][0]
        for error in self:
            series = buckets.get(error.id, {}).get(window) or empty
            error[f"occurrences_{window}"] = sum(series)
            error[f"sparkline_{window}"] = sparkline_svg(series, window=window)

    def _compute_sparkline_24h(self):
        self._compute_sparkline("24h")

    def _compute_sparkline_30d(self):
        self._compute_sparkline("30d")

    @api.depends("last_trace_id")
    def _compute_last_trace_link(self):
        template = self.env["ipai.agent.error.occurrence"]._trace_url_template()
        for error in self:
            error.last_trace_link = trace_link(trace_url(template, error.last_trace_id), error.last_trace_id)

    def action_view_occurrences(self):
        """Every occurrence of this error in a list of its own (paged on the server, filterable)."""
        self.ensure_one()
        return {
            "type": "ir.actions.act_window",
            "res_model": "ipai.agent.error.occurrence",
            "view_mode": "list",
            "name": self.env._("Occurrences of %(code)s", code=self.code),
            "domain": [("error_id", "=", self.id)],
            "context": {"create": False},
        }
