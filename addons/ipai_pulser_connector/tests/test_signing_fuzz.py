"""Fuzzing the signature verifier (bounded: CI runs it every time): whatever the headers,
path, query and body, it answers a typed refusal or accepts only a correctly signed request."""

import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from odoo.tests import BaseCase, tagged

from ..services import signing
from ..services.exceptions import AuthMissing, SignatureInvalid, TimestampStale

KEY = "k" * 64
NOW = 1_800_000_000
TYPED = (AuthMissing, SignatureInvalid, TimestampStale)
# Any text a client or a proxy could put in a header or a path, lone surrogates included
# (a WSGI server hands undecodable bytes over as surrogate escapes).
TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=200)
HEADER_VALUES = st.one_of(
    TEXT,
    st.from_regex(r"v2=[0-9a-fA-F]{64}", fullmatch=True),
    st.from_regex(r"[0-9]{1,12}", fullmatch=True),
    st.text(string.ascii_letters + string.digits + "_-", min_size=16, max_size=64),
)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@tagged("post_install", "-at_install")
class TestSigningFuzz(BaseCase):
    @FUZZ
    @given(
        headers=st.dictionaries(
            st.sampled_from(
                [signing.HEADER_KEY_ID, signing.HEADER_TIMESTAMP, signing.HEADER_SIGNATURE, signing.HEADER_NONCE]
            ),
            HEADER_VALUES,
        ),
        method=st.sampled_from(["GET", "POST", "get", "DELETE", ""]),
        path=TEXT,
        query=st.one_of(TEXT, st.lists(st.tuples(TEXT, TEXT), max_size=5)),
        body=st.binary(max_size=512),
    )
    def test_any_request_gets_a_typed_answer(self, headers, method, path, query, body):
        try:
            signed = signing.parse_headers(headers)
            signing.verify(signed, body, KEY, now=NOW, method=method, path=path, query=query)
        except TYPED:
            return
        # accepted: then it was signed with the key over exactly this request
        self.assertEqual(
            signed.signature,
            signing.expected_signature(signed, body, KEY, method=method, path=path, query=query),
        )

    @FUZZ
    @given(method=st.sampled_from(["GET", "POST"]), path=TEXT, query=TEXT, body=st.binary(max_size=256))
    def test_a_signed_request_verifies_and_any_change_is_refused(self, method, path, query, body):
        nonce = "n" * 16
        canonical = signing.canonical_string_v2(
            method=method, path=path, query=query, key_id="client", timestamp=NOW, nonce=nonce, body=body
        )
        headers = {
            signing.HEADER_KEY_ID: "client",
            signing.HEADER_TIMESTAMP: str(NOW),
            signing.HEADER_NONCE: nonce,
            signing.HEADER_SIGNATURE: "v2=" + signing.sign_v2(KEY, canonical),
        }
        signed = signing.parse_headers(headers)
        signing.verify(signed, body, KEY, now=NOW, method=method, path=path, query=query)
        with self.assertRaises(SignatureInvalid):
            signing.verify(signed, body + b"x", KEY, now=NOW, method=method, path=path, query=query)
        with self.assertRaises(SignatureInvalid):
            signing.verify(signed, body, KEY, now=NOW, method=method, path=path + "/other", query=query)
