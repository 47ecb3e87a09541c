"""Which variables are secrets, what a run records of its settings, and masking by value."""

from __future__ import annotations

import pytest

from ipai_ops.runs.capture import LineRedactor
from ipai_ops.runs.secrets import SecretValues, capture_settings, is_secret_name, recorded_settings


@pytest.mark.parametrize(
    "name",
    [
        "IPAI_PULSER_PEPPER",
        "AZURE_OPENAI_KEY",
        "LITELLM_MASTER_KEY",
        "OPENAI_API_KEY",
        "GITHUB_TOKEN",
        "PGPASSWORD",
        "AWS_SECRET_ACCESS_KEY",
        "SENTRY_DSN",
        "OTEL_EXPORTER_OTLP_HEADERS",
        "SSH_AUTH_SOCK",
        "npm_config__auth",
        "DJANGO_SESSION_SALT",
    ],
)
def test_secret_names(name):
    assert is_secret_name(name)


@pytest.mark.parametrize("name", ["PWD", "OLDPWD", "GIT_AUTHOR_NAME", "KEYBOARD_LAYOUT", "IPAI_PULSER_KEY_ID", "HOME"])
def test_names_that_are_not_secrets(name):
    assert not is_secret_name(name)


def test_settings_keep_values_only_for_allowlisted_names():
    environ = {
        "OPENAI_BASE_URL": "https://llm.example/v1",
        "OPENAI_TIMEOUT": "30",  # a provider setting not on the allowlist: set/unset only
        "IPAI_PULSER_PEPPER": "p" * 40,
        "AWS_SECRET_ACCESS_KEY": "",
        "HOME": "/home/me",  # not a provider setting, not a secret: not recorded
        "IPAI_RUN_ID": "run-x",
        "IPAI_OPS_DSN": "postgresql://ops:hunter2hunter2@db/ops",
    }
    assert capture_settings(environ) == {
        "OPENAI_BASE_URL": "https://llm.example/v1",
        "OPENAI_TIMEOUT": "[set]",
        "IPAI_PULSER_PEPPER": "[set]",
        "AWS_SECRET_ACCESS_KEY": "[empty]",
        "IPAI_OPS_DSN": "postgresql://ops:[REDACTED:password]@db/ops",
    }


def test_recorded_settings_are_brought_to_the_allowlist_and_leaks_reported():
    kept, leaked = recorded_settings({"IPAI_PULSER_PEPPER": "clear-pepper", "PATH": "/bin", "X_KEY": "[set]"})
    assert kept == {"IPAI_PULSER_PEPPER": "[set]", "PATH": "/bin", "X_KEY": "[set]"}
    assert leaked == {"IPAI_PULSER_PEPPER": "clear-pepper"}
    assert recorded_settings("not a mapping") == ({}, {})


def test_values_are_masked_longest_first_and_short_ones_left_to_the_patterns():
    values = SecretValues({"A_TOKEN": "abcd3fgh", "B_TOKEN": "abcd3fgh-longer", "PIN": "1234"})
    assert values.mask("x abcd3fgh-longer y abcd3fgh 1234") == "x [REDACTED:$B_TOKEN] y [REDACTED:$A_TOKEN] 1234"
    masked = values.mask_obj({"k": ["abcd3fgh"], "abcd3fgh": 1})
    assert masked == {"k": ["[REDACTED:$A_TOKEN]"], "[REDACTED:$A_TOKEN]": 1}
    assert values.mask_bytes(b"abcd3fgh") == b"[REDACTED:$A_TOKEN]"


def test_short_dictionary_words_are_not_masked_by_value():
    """PGPASSWORD=postgres in CI must not turn every "postgresql://" of a log into a marker."""
    values = SecretValues({"PGPASSWORD": "postgres", "DB_PASSWORD": "hunter22", "APP_SECRET": "onlylettersbutlong"})
    assert values.mask("postgresql://db hunter22 onlylettersbutlong") == (
        "postgresql://db [REDACTED:$DB_PASSWORD] [REDACTED:$APP_SECRET]"
    )


def test_a_multi_line_secret_is_masked_line_by_line_in_streamed_logs():
    pem = "-----BEGIN CERT-----\nMIIBplainbody0123\n-----END CERT-----"
    redactor = LineRedactor(SecretValues({"TLS_PRIVATE": pem}))
    out = redactor.feed(b"loaded MIIBplainbody0123\n") + redactor.flush()
    assert b"MIIBplainbody0123" not in out and b"[REDACTED:$TLS_PRIVATE]" in out
