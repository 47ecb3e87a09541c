"""The v2 canonical string, pinned by a known-answer vector (also in readme/CONFIGURE.md),
checked against ``openssl dgst -hmac`` when it was written: clients in other languages
compare their output with it."""

from odoo.tests import BaseCase, tagged

from ..services import signing

VECTOR = {
    "method": "post",
    "path": "/pulser/v1/intents/ü b",
    "query": "b=2&a=x+y&a=1&c=",
    "key_id": "pk_0123456789abcdef",
    "timestamp": 1796659200,
    "nonce": "bm9uY2Utb2YtdGVzdHM",
    "body": b'{"type": "odoo.healthcheck"}',
}
CANONICAL = (
    "PULSER-HMAC-SHA256-V2\n"
    "POST\n"
    "/pulser/v1/intents/%C3%BC%20b\n"
    "a=1&a=x%20y&b=2&c=\n"
    "pk_0123456789abcdef\n"
    "1796659200\n"
    "bm9uY2Utb2YtdGVzdHM\n"
    "a9555f855606c334c172b351b6cf94b3f88685586725cb2921e07e1c16e163d6"
)
KEY = "k" * 64
SIGNATURE = "8f3335e2462240b6b93090ed55c81bc8aafc1a36b18e4b633ce3bf3a30b5dd75"


@tagged("post_install", "-at_install")
class TestSigning(BaseCase):
    def test_known_answer(self):
        self.assertEqual(signing.canonical_string_v2(**VECTOR), CANONICAL)
        self.assertEqual(signing.sign_v2(KEY, CANONICAL), SIGNATURE)

    def test_client_headers_verify_as_the_server_sees_the_request(self):
        """A client signs the path and query as sent; the server has them decoded."""
        headers = signing.signed_headers(
            VECTOR["key_id"],
            KEY,
            method="POST",
            path="/pulser/v1/intents/%C3%BC%20b",
            query=VECTOR["query"],
            body=VECTOR["body"],
            timestamp=VECTOR["timestamp"],
            nonce=VECTOR["nonce"],
        )
        self.assertEqual(headers[signing.HEADER_SIGNATURE], "v2=" + SIGNATURE)
        signed = signing.parse_headers(headers)
        self.assertEqual((signed.scheme, signed.replay_key), ("v2", "v2:" + VECTOR["nonce"]))
        decoded_query = [("b", "2"), ("a", "x y"), ("a", "1"), ("c", "")]
        signing.verify(
            signed,
            VECTOR["body"],
            KEY,
            now=VECTOR["timestamp"],
            method="POST",
            path=VECTOR["path"],
            query=decoded_query,
        )

    def test_an_empty_query_and_body(self):
        canonical = signing.canonical_string_v2(
            method="GET", path="/pulser/v1/intents/0123", query="", key_id="pk_x", timestamp=1, nonce="n" * 16, body=b""
        )
        self.assertEqual(
            canonical.split("\n")[3:],
            ["", "pk_x", "1", "n" * 16, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"],
        )
