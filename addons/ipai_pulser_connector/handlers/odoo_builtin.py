"""The built-in intent handlers: healthcheck, module status, config snapshot."""

from __future__ import annotations

import hashlib
import json
import re
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml
from odoo import release
from odoo.tools import config as odoo_config

from ..services.exceptions import AllowlistProfileUnknown, RedactionModeUnsupported
from ..services.handler_registry import intent_handler

PROFILES_DIR = Path(__file__).resolve().parent.parent / "data" / "profiles"
_PROFILE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")

_TIMEOUT_PROPERTY = {"type": "number", "exclusiveMinimum": 0, "maximum": 600}

#: odoo.conf keys that may leave the server. Everything else (admin_passwd,
#: db_password, smtp_password, smtp_user, proxy_access_token, db_host, paths to keys,
#: ...) is withheld by construction: an allowlist, never a denylist.
SAFE_CONFIG_KEYS = (
    "db_maxconn",
    "db_sslmode",
    "import_partial",
    "limit_memory_hard",
    "limit_memory_soft",
    "limit_request",
    "limit_time_cpu",
    "limit_time_real",
    "limit_time_real_cron",
    "list_db",
    "log_level",
    "max_cron_threads",
    "osv_memory_count_limit",
    "proxy_mode",
    "server_wide_modules",
    "transient_age_limit",
    "unaccent",
    "websocket_keep_alive_timeout",
    "with_demo",
    "workers",
    "x_sendfile",
)
REDACTION_MODES = ("strict", "names_only")


@intent_handler(
    "odoo.healthcheck",
    schema={
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "echo": {"type": "string", "maxLength": 256},
            "timeout_s": _TIMEOUT_PROPERTY,
        },
    },
    timeout=10,
)
def healthcheck(ctx):
    """Database round trip and server identity."""
    started = time.perf_counter()
    ctx.env.cr.execute("SELECT 1")
    ctx.env.cr.fetchone()
    latency_ms = round((time.perf_counter() - started) * 1000, 3)
    ctx.check()
    data = {
        "status": "ok",
        "database": ctx.env.cr.dbname,
        "server_version": release.version,
        "db_latency_ms": latency_ms,
        "checked_at": datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
    }
    if "echo" in ctx.args:
        data["echo"] = ctx.args["echo"]
    return data


def load_profile(name: str) -> dict:
    path = PROFILES_DIR / f"{name}.yaml"
    if not _PROFILE_NAME.match(name) or not path.is_file():
        known = sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))
        raise AllowlistProfileUnknown(
            f"allowlist profile {name!r} is unknown; known profiles: {', '.join(known)}",
            details={"profile": name, "known_profiles": known},
        )
    doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return {"name": doc.get("name", name), "allowlist": sorted(set(doc.get("allowlist") or ()))}


@intent_handler(
    "odoo.modules.status",
    schema={
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "profile": {"type": "string", "minLength": 1, "maxLength": 64},
            "sample_limit": {"type": "integer", "minimum": 1, "maximum": 200},
            "timeout_s": _TIMEOUT_PROPERTY,
        },
    },
    timeout=30,
)
def modules_status(ctx):
    """Installed-module counts, a bounded sample, and the diff against an allowlist profile."""
    profile = load_profile(ctx.args.get("profile", "default"))
    limit = ctx.args.get("sample_limit", 20)
    Module = ctx.env["ir.module.module"].sudo()
    counts = dict(Module._read_group([], ["state"], ["__count"]))
    ctx.check()
    installed = Module.search_read(
        [("state", "in", ("installed", "to upgrade"))], ["name", "latest_version"], order="name"
    )
    installed_names = {m["name"] for m in installed}
    allow = set(profile["allowlist"])
    unexpected = sorted(installed_names - allow)
    ctx.tool_call("ir.module.module.search_read", rows=len(installed))
    return {
        "profile": profile["name"],
        "counts": dict(sorted(counts.items())),
        "installed_count": len(installed_names),
        "sample": [{"name": m["name"], "version": m["latest_version"]} for m in installed[:limit]],
        "sample_truncated": len(installed) > limit,
        "allowlist": {
            "size": len(allow),
            "missing": sorted(allow - installed_names),
            "unexpected": unexpected[:limit],
            "unexpected_count": len(unexpected),
        },
    }


def safe_config(options=None) -> dict:
    source = options if options is not None else odoo_config
    out = {}
    for key in SAFE_CONFIG_KEYS:
        value = source.get(key)
        if isinstance(value, (list, tuple, set)):
            value = sorted(str(v) for v in value)
        elif value is not None and not isinstance(value, (bool, int, float, str)):
            value = str(value)
        out[key] = value
    return out


def config_fingerprint(safe: dict) -> str:
    canonical = json.dumps(safe, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


@intent_handler(
    "odoo.config.snapshot",
    schema={
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "redaction_mode": {"type": "string", "minLength": 1, "maxLength": 32},
            "timeout_s": _TIMEOUT_PROPERTY,
        },
    },
    timeout=10,
)
def config_snapshot(ctx):
    """Allowlisted server configuration; secrets never leave. Fingerprint of the safe part."""
    mode = ctx.args.get("redaction_mode", "strict")
    if mode not in REDACTION_MODES:
        raise RedactionModeUnsupported(
            f"redaction_mode {mode!r} is not supported; use one of {', '.join(REDACTION_MODES)}",
            details={"redaction_mode": mode, "supported": list(REDACTION_MODES)},
        )
    safe = safe_config()
    data = {
        "redaction_mode": mode,
        "server_version": release.version,
        "fingerprint": config_fingerprint(safe),
        "withheld_count": len([k for k in odoo_config.options if k not in safe]),
    }
    if mode == "strict":
        data["config"] = safe
    else:
        data["keys"] = sorted(safe)
    return data
