"""The extractor's shape templates: fast on a storm of one error, and never at the cost of a
wrong code, a wrong message or another occurrence's evidence (which samples are built:
tests/bridge/test_samples.py)."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from ipai_ops.bridge.extract import _TEMPLATES, SAMPLE_CAPS, Extractor
from ipai_ops.envelope import clean_text, envelope_errors
from ipai_ops.fingerprint import normalize_message
from tests.bridge.otlp_factory import span, traces

STACK = (
    "Traceback (most recent call last):\n"
    '  File "/srv/app/orders/views.py", line 42, in confirm\n'
    "    order = load(order_id)\n"
    '  File "/srv/app/orders/store.py", line 7, in load\n'
    "    raise OrderMissing(message)\n"
    "app.orders.OrderMissing: {message}\n"
)


def exception_span(message: str, *, error_type: str = "app.orders.OrderMissing", stack: str = STACK, n: int = 0):
    return span(
        trace_id=n.to_bytes(16, "big") or b"\x01" * 16,
        span_id=(n + 1).to_bytes(8, "big"),
        exceptions=[
            {
                "exception.type": error_type,
                "exception.message": message,
                "exception.stacktrace": stack.format(message=message),
            }
        ],
    )


class CountingExtractor(Extractor):
    """Counts how often the exact (uncached) classification runs."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.made = 0

    def _make_template(self, *args, **kwargs):
        self.made += 1
        return super()._make_template(*args, **kwargs)


def test_a_storm_of_one_error_is_classified_once_but_keeps_each_message_and_evidence(registry):
    extractor = CountingExtractor(registry)
    stack = (
        'Traceback (most recent call last):\n  File "/srv/app/sync.py", line 3, in push\n    post()\n'
        "requests.exceptions.ConnectionError: {message}\n"
    )
    messages = [
        f"HTTPSConnectionPool(host='api{n}.example.com', port=443): Max retries exceeded with url: /v1/items/{n} "
        "(Caused by NewConnectionError('Failed to establish a new connection: [Errno 111] Connection refused'))"
        for n in (1, 22, 333)
    ]
    batch = [
        exception_span(m, error_type="requests.exceptions.ConnectionError", stack=stack, n=i)
        for i, m in enumerate(messages)
    ]
    out = extractor.traces(traces(batch)).occurrences
    assert extractor.made == 1
    assert {o.code for o in out} == {"TRANSPORT.CONNECTION_FAILED"}
    assert len({o.fingerprint for o in out}) == 1
    assert [o.message for o in out] == messages
    for occ, message, n in zip(out, messages, (1, 22, 333), strict=True):
        sample = occ.stored_sample()
        assert envelope_errors(sample) == []
        assert sample["error"]["message"] == message
        assert message in sample["evidence"]["stderr_tail"]
        deciding = [line for line in sample["evidence"]["classification"]["lines"] if line["role"] == "signature"]
        assert deciding and all(f"api{n}.example.com" in line["text"] for line in deciding)


def test_a_shape_never_hides_what_a_signature_reads(registry):
    """``KeyError: 'OPENAI_API_KEY'`` and ``KeyError: 'sku'`` have one shape, not one code."""
    extractor = CountingExtractor(registry)
    stack = 'Traceback (most recent call last):\n  File "/srv/app/x.py", line 3, in f\n    c[k]\nKeyError: {message}\n'
    first, second = (
        extractor.traces(traces([exception_span(m, error_type="KeyError", stack=stack, n=i)])).occurrences[0]
        for i, m in enumerate(["'OPENAI_API_KEY'", "'sku_name'"])
    )
    assert first.code == "ENV.KEY_MISSING"
    assert second.code != "ENV.KEY_MISSING"
    assert extractor.made == 2


def test_the_same_error_again_is_an_exact_hit(registry):
    extractor = CountingExtractor(registry)
    for n in range(3):
        extractor.traces(traces([exception_span("order 1 not found", n=n)]))
    assert extractor.made == 1


def test_a_message_on_a_frame_line_keeps_its_own_frames(registry):
    """The message taken out of the stack must not take the frames with it."""
    extractor = CountingExtractor(registry)
    stack = 'Traceback (most recent call last):\n  File "/srv/{message}/x.py", line 3, in f\n    g()\nE: boom\n'
    a, b = (
        extractor.traces(traces([exception_span(m, error_type="E", stack=stack, n=i)])).occurrences[0]
        for i, m in enumerate(["alpha", "bravo"])
    )
    assert a.fingerprint != b.fingerprint
    assert extractor.made == 2


def test_caches_stay_bounded_whatever_the_sender_writes(registry):
    extractor = Extractor(registry)
    for chunk in range(0, _TEMPLATES + 300, 300):
        batch = [exception_span("x", error_type=f"E{n}", n=n) for n in range(chunk, chunk + 300)]
        extractor.traces(traces(batch))
    assert len(extractor._templates) <= _TEMPLATES and len(extractor._exact) <= _TEMPLATES


# ---------------------------------------------------------------- digit-blind template keys

_PIECES = st.sampled_from(
    [
        " ",
        "order ",
        "id=",
        "0x",
        "-",
        ":",
        ".",
        "/",
        "'",
        '"',
        "@",
        "://",
        "T",
        "Z",
        "e",
        "+",
        "abc",
        "sk-",
        "AKIA",
        "token=",
        "Bearer ",
        "v",
        "_",
        "https://h.example/",
        "user@x.io",
        "2026-01-02",
        "12:30:45",
        "\n",
    ]
)
_DIGITS = st.text(alphabet="0123456789", min_size=1, max_size=12)


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.one_of(_PIECES, _DIGITS, st.text(alphabet="abcdefXYZ", max_size=6)), max_size=12), st.randoms())
def test_messages_that_differ_only_in_digits_share_a_digitless_normalised_message(parts, rng):
    """What the extractor's digit-blind key relies on: redaction, capping and normalisation
    treat the digits 1-9 alike (0 is special: "0x"), so when the normalised message keeps no
    digit, every message that differs only in the values of its digits 1-9 has the same
    normalised message."""
    first = "".join(parts)
    second = "".join(rng.choice("123456789") if c in "123456789" else c for c in first)
    shape = normalize_message(clean_text(first, SAMPLE_CAPS)[0])
    if not re.search(r"[0-9]", shape):
        assert normalize_message(clean_text(second, SAMPLE_CAPS)[0]) == shape


def test_a_digit_blind_hit_keeps_codes_that_read_digits(registry):
    """'503' and '404' are one digit shape but two codes: the signatures present decide."""
    extractor = CountingExtractor(registry)
    stack = (
        'Traceback (most recent call last):\n  File "/srv/app/x.py", line 3, in f\n    get()\nHTTPError: {message}\n'
    )
    codes = [
        extractor.traces(traces([exception_span(m, error_type="HTTPError", stack=stack, n=i)])).occurrences[0].code
        for i, m in enumerate(["upstream answered 503 Service Unavailable", "upstream answered 404 Not Found"])
    ]
    assert codes[0] == "TRANSPORT.UPSTREAM_5XX" and codes[1] != codes[0]
