"""What Odoo's telemetry must not carry: secrets in URLs and in exception text.

Odoo puts credentials in URLs: reset-password and signup ``token``, portal
``access_token``, ``hash`` of unsubscribe links, OAuth ``code``/``state``. The WSGI
instrumentation records the request's URL (``url.query``; ``http.target`` / ``http.url``
with the old semantic conventions), and an exception's message and traceback repeat
whatever the code had in hand. Everything this addon exports passes through the switch
processors of ``_pipeline``, which call :func:`clean_span` and :func:`clean_log_record`
before any exporter sees a span or a log record, whoever created it (this addon, another
addon's ``start_as_current_span``, the SDK's automatic ``record_exception``):

- URL attributes keep their parameter *names*; the value of a sensitive parameter
  (:func:`is_sensitive_param`, also inside an encoded ``redirect=`` URL) becomes
  ``REDACTED``, and ``user:password@`` goes;
- a path whose route template has a token placeholder (``/survey/<string:survey_token>``)
  is exported as the template;
- exception messages, tracebacks, span status descriptions and log bodies go through the failure envelope's
  redactor (``ipai_ops.text.redact``: passwords, keys, bearer tokens, URL passwords,
  random-looking tokens), then the same query-parameter rule on the URLs they quote.

All of it is linear time: plain splitting for URLs, RE2 for text.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, unquote_plus

import re2

REDACTED = "REDACTED"
#: Parameter names whose values are credentials (compared lower-case, ``-`` as ``_``).
SENSITIVE_PARAMS = frozenset(
    {
        "token",
        "access_token",
        "refresh_token",
        "id_token",
        "auth_token",
        "signature",
        "sig",
        "password",
        "passwd",
        "pwd",
        "key",
        "api_key",
        "apikey",
        "secret",
        "client_secret",
        "code",
        "state",
        "hash",
        "otp",
        "pin",
        "session_id",
        "sid",
        "auth",
        "authorization",
        "credential",
        "credentials",
        "x_amz_signature",
        "x_amz_credential",
        "x_amz_security_token",
        "x_goog_signature",
        "awsaccesskeyid",
    }
)
#: ... and any name containing one of these.
_SENSITIVE_PARTS = ("token", "secret", "password", "passwd", "signature", "apikey", "api_key", "credential")
#: Attributes holding a URL or a request target, and those holding only a query string.
URL_ATTRIBUTES = frozenset({"http.url", "url.full", "http.target"})
QUERY_ATTRIBUTES = frozenset({"url.query"})
#: Attributes holding free text an exception or a log wrote.
TEXT_ATTRIBUTES = frozenset({"exception.message", "exception.stacktrace"})
_PATH_ATTRIBUTES = ("url.path",)
_ROUTE = "http.route"

# A URL query parameter in free text: ``?name=value`` / ``&name=value``. RE2: linear.
_TEXT_PARAM = re2.compile(rb"[?&;]([A-Za-z0-9_.~%-]{1,64})=([^&#\s\"'<>]*)")


def is_sensitive_param(name: str) -> bool:
    key = unquote_plus(name).strip().lower().replace("-", "_")
    return key in SENSITIVE_PARAMS or any(part in key for part in _SENSITIVE_PARTS)


def clean_query(query: str, _depth: int = 0) -> str:
    """``query`` with the values of sensitive parameters replaced; everything else byte for byte."""
    if not query:
        return query
    parts = query.split("&")
    changed = False
    for index, part in enumerate(parts):
        name, sep, value = part.partition("=")
        if not sep:
            continue
        if is_sensitive_param(name):
            if value != REDACTED:
                parts[index] = f"{name}={REDACTED}"
                changed = True
        elif _depth < 2 and ("%3F" in value or "%3f" in value or "?" in value):
            # A URL inside a parameter (redirect=/my/orders/7%3Faccess_token%3D...).
            inner = unquote_plus(value)
            cleaned = clean_url(inner, _depth + 1)
            if cleaned != inner:
                parts[index] = f"{name}={quote(cleaned, safe='/:')}"
                changed = True
    return "&".join(parts) if changed else query


def clean_url(url: str, _depth: int = 0) -> str:
    """A URL or request target without credentials: userinfo and sensitive parameter values
    (query and fragment: OAuth puts ``access_token`` after ``#``)."""
    if not url:
        return url
    base, hash_sep, fragment = url.partition("#")
    base, query_sep, query = base.partition("?")
    scheme_end = base.find("://")
    if scheme_end >= 0:
        host_start = scheme_end + 3
        slash = base.find("/", host_start)
        authority = base[host_start : slash if slash >= 0 else len(base)]
        if "@" in authority:
            host = authority.rpartition("@")[2]
            base = base[:host_start] + f"{REDACTED}:{REDACTED}@" + host + (base[slash:] if slash >= 0 else "")
    if query_sep:
        query = clean_query(query, _depth)
    if hash_sep and "=" in fragment:
        fragment = clean_query(fragment, _depth)
    return base + query_sep + query + hash_sep + fragment


def _clean_text_params(text: str) -> str:
    data = text.encode("utf-8", "surrogatepass")
    out, last = [], 0
    for match in _TEXT_PARAM.finditer(data):
        name = match.group(1).decode("utf-8", "surrogatepass")
        if is_sensitive_param(name) and match.group(2) != REDACTED.encode():
            out += (data[last : match.start(2)], REDACTED.encode())
            last = match.end(2)
    if not out:
        return text
    out.append(data[last:])
    return b"".join(out).decode("utf-8", "surrogatepass")


def clean_text(text: str) -> str:
    """Exception text or a log body: the envelope's redaction, then sensitive URL parameters."""
    if not text:
        return text
    from ipai_ops.text import redact

    return _clean_text_params(redact(text) or "")


def _route_has_secret(route: Any) -> bool:
    if not isinstance(route, str) or "<" not in route:
        return False
    for placeholder in route.split("<")[1:]:
        name = placeholder.partition(">")[0].rpartition(":")[2]
        if is_sensitive_param(name) or name.endswith(("_token", "token", "hash")):
            return True
    return False


def clean_attributes(attributes: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A cleaned copy of ``attributes``, or ``None`` when nothing needed cleaning."""
    if not attributes:
        return None
    changes: dict[str, Any] = {}
    for key, value in attributes.items():
        if not isinstance(value, str):
            continue
        if key in URL_ATTRIBUTES:
            cleaned = clean_url(value)
        elif key in QUERY_ATTRIBUTES:
            cleaned = clean_query(value)
        elif key in TEXT_ATTRIBUTES:
            cleaned = clean_text(value)
        else:
            continue
        if cleaned != value:
            changes[key] = cleaned
    route = attributes.get(_ROUTE)
    if _route_has_secret(route):
        for key in _PATH_ATTRIBUTES:
            if key in attributes and attributes[key] != route:
                changes[key] = route
        target = changes.get("http.target", attributes.get("http.target"))
        if isinstance(target, str):
            query = target.partition("?")[2]
            changes["http.target"] = route + (f"?{query}" if query else "")
    if not changes:
        return None
    return {**attributes, **changes}


def _bounded(original: Any, attributes: dict[str, Any]) -> Any:
    from opentelemetry.attributes import BoundedAttributes

    out = BoundedAttributes(maxlen=None, attributes=attributes, immutable=True, max_value_len=None)
    out.dropped = getattr(original, "dropped", 0)
    return out


def clean_span(span: Any) -> Any:
    """``span`` itself when it carries nothing to clean, else a cleaned ``ReadableSpan`` copy
    (an ended span's attributes are immutable)."""
    attributes = clean_attributes(span.attributes)
    events = list(span.events)
    changed = attributes is not None
    for index, event in enumerate(events):
        cleaned = clean_attributes(event.attributes)
        if cleaned is not None:
            from opentelemetry.sdk.trace import Event

            events[index] = Event(event.name, _bounded(event.attributes, cleaned), event.timestamp)
            changed = True
    # The SDK describes the status of a span an exception left as "Type: message".
    status = span.status
    description = getattr(status, "description", None)
    if description:
        cleaned_description = clean_text(description)
        if cleaned_description != description:
            from opentelemetry.trace import Status

            status = Status(status.status_code, cleaned_description)
            changed = True
    if not changed:
        return span
    from opentelemetry.sdk.trace import ReadableSpan

    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=_bounded(span.attributes, attributes) if attributes is not None else span.attributes,
        events=events,
        links=span.links,
        kind=span.kind,
        status=status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


def clean_log_record(log_data: Any) -> None:
    """Clean a log record in place (an SDK log record is mutable until it is exported)."""
    record = getattr(log_data, "log_record", log_data)
    body = getattr(record, "body", None)
    if isinstance(body, str):
        cleaned = clean_text(body)
        if cleaned != body:
            record.body = cleaned
    attributes = getattr(record, "attributes", None)
    changes = clean_attributes(attributes)
    if changes:
        for key, value in changes.items():
            if attributes.get(key) != value:
                attributes[key] = value
