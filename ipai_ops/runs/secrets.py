"""What a run may keep of its environment, and the secret values it must never keep.

Two rules, specified in docs/agent_runs.md ("Settings recorded, and secrets masked by
value") and docs/security.md ("What is stored, and what never is"): a variable's value is
kept only when its name is in :data:`SETTINGS_ALLOWLIST` (others of the families in
:data:`SETTINGS_PREFIXES`, and secret-named ones, as ``[set]``/``[empty]``); the values of
secret-named variables (:func:`is_secret_name`) are masked wherever they appear
(:class:`SecretValues`). An allowlist fails closed; a list of secret names never is complete.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

#: Variables recorded with their value (redacted all the same): none holds a credential.
SETTINGS_ALLOWLIST = frozenset(
    {
        # the process
        "CI",
        "PATH",
        "VIRTUAL_ENV",
        "NODE_ENV",
        "LANG",
        "TZ",
        # model providers: where and what, never who
        "OPENAI_BASE_URL",
        "OPENAI_API_BASE",
        "OPENAI_API_VERSION",
        "OPENAI_MODEL",
        "OPENAI_ORGANIZATION",
        "OPENAI_ORG_ID",
        "OPENAI_PROJECT_ID",
        "ANTHROPIC_BASE_URL",
        "ANTHROPIC_MODEL",
        "AZURE_OPENAI_ENDPOINT",
        "AZURE_OPENAI_API_VERSION",
        "AZURE_OPENAI_DEPLOYMENT",
        "AZURE_OPENAI_DEPLOYMENT_NAME",
        "GEMINI_MODEL",
        "GOOGLE_CLOUD_PROJECT",
        "GOOGLE_CLOUD_LOCATION",
        "GOOGLE_CLOUD_REGION",
        "MISTRAL_MODEL",
        "OLLAMA_HOST",
        "OLLAMA_MODEL",
        "OPENROUTER_BASE_URL",
        "LITELLM_BASE_URL",
        "LITELLM_MODEL",
        "LITELLM_LOG",
        # OpenTelemetry (never the headers: they carry tokens)
        "OTEL_SERVICE_NAME",
        "OTEL_RESOURCE_ATTRIBUTES",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
        "OTEL_TRACES_EXPORTER",
        "OTEL_LOGS_EXPORTER",
        "OTEL_METRICS_EXPORTER",
        "OTEL_TRACES_SAMPLER",
        "OTEL_TRACES_SAMPLER_ARG",
        "OTEL_SDK_DISABLED",
        # this project
        "IPAI_OPS_DSN",
        "IPAI_OPS_REGISTRY",
        "IPAI_OPS_REPO_ROOT",
        "IPAI_OPS_RUN_ARTIFACTS",
        "IPAI_OPS_RUN_MAX_OUTPUT_BYTES",
        "IPAI_OPS_RUN_RETENTION_DAYS",
        "IPAI_OPS_RUN_RETRY_DELAY_CAP",
        "IPAI_OPS_RUN_VARIANT_ID",
        "IPAI_ODOO_URL",
        "IPAI_ODOO_DB",
        "IPAI_ODOO_LOGIN",
        "IPAI_PULSER_KEY_ID",
        "ODOO_SRC",
        "ODOO_DB_HOST",
        "ODOO_DB_PORT",
        "ODOO_DB_USER",
        # PostgreSQL client
        "PGHOST",
        "PGPORT",
        "PGDATABASE",
        "PGUSER",
        "PGSSLMODE",
        "PGAPPNAME",
        # CI coordinates
        "GITHUB_ACTIONS",
        "GITHUB_REPOSITORY",
        "GITHUB_RUN_ID",
        "GITHUB_RUN_ATTEMPT",
        "GITHUB_RUN_NUMBER",
        "GITHUB_SHA",
        "GITHUB_REF",
        "GITHUB_REF_NAME",
        "GITHUB_HEAD_REF",
        "GITHUB_BASE_REF",
        "GITHUB_WORKFLOW",
        "GITHUB_JOB",
        "GITHUB_EVENT_NAME",
        "GITHUB_SERVER_URL",
        "GITHUB_API_URL",
        "GITHUB_ACTOR",
        "RUNNER_OS",
        "RUNNER_ARCH",
        "RUNNER_NAME",
        "RUNNER_ENVIRONMENT",
    }
)
#: Families whose other variables are recorded as set/unset only.
SETTINGS_PREFIXES = (
    "OPENAI_",
    "ANTHROPIC_",
    "AZURE_OPENAI_",
    "GEMINI_",
    "GOOGLE_",
    "MISTRAL_",
    "OLLAMA_",
    "OPENROUTER_",
    "LITELLM_",
    "GROQ_",
    "COHERE_",
    "DEEPSEEK_",
    "HF_",
    "AWS_",
    "OTEL_",
    "IPAI_",
    "ODOO_",
    "PG",
    "GITHUB_",
    "RUNNER_",
    # coding-agent harness settings (AGENT_MODEL, AGENT_TIMEOUT, AGENT_PROVIDER, ...)
    "AGENT_",
)
#: Other variables recorded as set/unset only: a command line may embed a key.
SETTINGS_NAMES = frozenset({"CODING_AGENT_CMD"})
SET = "[set]"
EMPTY = "[empty]"
#: Shorter values are not masked by value (``PGPASSWORD=x`` would mask every "x"); the
#: pattern rules still see them. Nor are values of letters only shorter than
#: :data:`MIN_WORD_SECRET_CHARS`: a development ``PGPASSWORD=postgres`` would otherwise
#: turn every "postgresql://" of a CI log into a marker.
MIN_SECRET_CHARS = 8
MIN_WORD_SECRET_CHARS = 16
_MAX_SETTINGS = 200
_MAX_SETTING_CHARS = 2000
#: Name parts that make a variable a secret: whole ``_``-separated words ...
_SECRET_WORDS = frozenset(
    {"KEY", "KEYS", "PASS", "PWD", "PAT", "SALT", "DSN", "SIG", "PIN", "OTP", "JWT", "HMAC", "AUTH", "OAUTH"}
)
#: ... or anywhere in the name.
_SECRET_PARTS = re.compile(
    r"SECRET|TOKEN|PASSWORD|PASSWD|PASSPHRASE|PEPPER|CREDENTIAL|PRIVATE|COOKIE|SESSION|SIGNATURE|APIKEY|AUTHORIZATION|HEADERS",
    re.I,
)
#: Secret-looking names that are not secrets (the shell's working directories).
_NOT_SECRET = frozenset({"PWD", "OLDPWD"})


def is_secret_name(name: str) -> bool:
    """Whether a variable's name says it holds a credential (its value is then masked everywhere)."""
    if name in SETTINGS_ALLOWLIST or name.upper() in _NOT_SECRET:
        return False
    if _SECRET_PARTS.search(name):
        return True
    return any(word in _SECRET_WORDS for word in re.split(r"[^A-Z0-9]+", name.upper()))


def _redact(value: str) -> str:
    from ipai_ops.text import redact

    return (redact(value) or "")[:_MAX_SETTING_CHARS]


def capture_settings(environ: Mapping[str, str]) -> dict[str, str]:
    """The run's provider/environment settings: allowlisted values (redacted), the rest set/unset."""
    picked: dict[str, str] = {}
    for name in sorted(environ):
        if name.startswith("IPAI_RUN_"):
            continue
        if len(picked) >= _MAX_SETTINGS:
            break
        value = environ[name]
        if name in SETTINGS_ALLOWLIST:
            picked[name] = _redact(value)
        elif name.startswith(SETTINGS_PREFIXES) or name in SETTINGS_NAMES or is_secret_name(name):
            picked[name] = SET if value else EMPTY
    return picked


def recorded_settings(variables: Any) -> tuple[dict[str, str], dict[str, str]]:
    """Recorded ``settings.variables`` brought to the allowlist rule, and the values that should
    not have been there (for masking by value).

    Runs recorded before the allowlist kept e.g. ``IPAI_PULSER_PEPPER`` in clear: a bundle of
    such a run shows ``[set]`` instead, and masks that value in every file it holds.
    """
    if not isinstance(variables, Mapping):
        return {}, {}
    kept: dict[str, str] = {}
    leaked: dict[str, str] = {}
    for key, value in variables.items():
        name = str(key)
        if name in SETTINGS_ALLOWLIST:
            kept[name] = _redact(str(value)) if value is not None else ""
            continue
        text = "" if value is None else str(value)
        kept[name] = EMPTY if text in ("", EMPTY) else SET
        if text not in ("", SET, EMPTY) and not text.startswith("[REDACTED"):
            leaked[name] = text
    return kept, leaked


def _maskable(value: str) -> bool:
    if len(value) < MIN_SECRET_CHARS:
        return False
    return len(value) >= MIN_WORD_SECRET_CHARS or not value.isalpha()


class SecretValues:
    """Known secret values, masked as ``[REDACTED:$NAME]`` in text, bytes and JSON-like values.

    Longest values first, so a secret that contains another is masked whole. Plain
    substring replacement: linear in the text per value, whatever the text holds.
    """

    def __init__(self, secrets: Mapping[str, str] | Iterable[tuple[str, str]] = ()):
        pairs = secrets.items() if isinstance(secrets, Mapping) else secrets
        found: dict[str, str] = {}
        for name, value in pairs:
            if not value:
                continue
            # A multi-line value (a PEM key) is also masked line by line: logs are redacted
            # a block of lines at a time.
            parts = [value, *(line.strip() for line in value.splitlines())] if "\n" in value else [value]
            for part in parts:
                if _maskable(part) and part not in found:
                    found[part] = f"[REDACTED:${name}]"
        self._items = sorted(found.items(), key=lambda item: -len(item[0]))
        self._bytes = [(v.encode("utf-8", "surrogateescape"), m.encode()) for v, m in self._items]

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> SecretValues:
        return cls((name, value) for name, value in environ.items() if is_secret_name(name))

    def __bool__(self) -> bool:
        return bool(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def merged(self, other: SecretValues) -> SecretValues:
        out = SecretValues()
        items = dict(other._items)
        items.update(self._items)
        out._items = sorted(items.items(), key=lambda item: -len(item[0]))
        out._bytes = [(v.encode("utf-8", "surrogateescape"), m.encode()) for v, m in out._items]
        return out

    def mask(self, text: str) -> str:
        for value, marker in self._items:
            if value in text:
                text = text.replace(value, marker)
        return text

    def mask_bytes(self, data: bytes) -> bytes:
        for value, marker in self._bytes:
            if value in data:
                data = data.replace(value, marker)
        return data

    def mask_obj(self, value: Any, _depth: int = 0) -> Any:
        """A copy of a JSON-like value with every string (keys too) masked."""
        if not self._items or _depth > 64:
            return value
        if isinstance(value, str):
            return self.mask(value)
        if isinstance(value, Mapping):
            return {(self.mask(k) if isinstance(k, str) else k): self.mask_obj(v, _depth + 1) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.mask_obj(v, _depth + 1) for v in value]
        return value
