"""HTTP signature vector of explorer spec §2.1, byte for byte."""

from __future__ import annotations

import base64
from email.utils import parsedate_to_datetime

import nacl.signing

from tfgateway.explorer.signatures import http_date, sign_headers, signing_string
from tfgateway.node.identity import Identity

SEED = b"helloworldhelloworldhelloworld12"
NODE = "FkUfMueBVSK6V1DCHVAtzzaqPqCPVzGguDzCQxq7Ep85"
SIG = "bnEQfoEuL43oSTHAmqFnjwPaeL01s1Q7DmnXxYFz34KvInjcbyekhxtkkKgfPRTcohvDkRCzZpCS0kKeko9DDg=="


def test_http_date_is_go_time_format() -> None:
    assert http_date(1610000000) == "Thu, 07 Jan 2021 06:13:20 GMT"


def test_spec_vector_headers_byte_for_byte() -> None:
    identity = Identity(SEED)
    headers = sign_headers(identity, created=1610000000, date=http_date(1610000000))
    assert headers == {
        "Threebot-Id": NODE,
        "Date": "Thu, 07 Jan 2021 06:13:20 GMT",
        "Authorization": (
            f'Signature keyId="{NODE}",algorithm="ed25519",created="1610000000",'
            'expires="%!q(int64=1610000060)",headers="(created) date threebot-id",'
            f'signature="{SIG}"'
        ),
    }


def test_signature_verifies_over_signing_string() -> None:
    identity = Identity(SEED)
    text = signing_string(1610000000, "Thu, 07 Jan 2021 06:13:20 GMT", NODE)
    assert text == (
        b"(created): 1610000000\ndate: Thu, 07 Jan 2021 06:13:20 GMT\n"
        b"threebot-id: FkUfMueBVSK6V1DCHVAtzzaqPqCPVzGguDzCQxq7Ep85"
    )
    nacl.signing.VerifyKey(identity.public_key).verify(text, base64.b64decode(SIG))


def test_default_created_and_date_are_consistent_now() -> None:
    headers = sign_headers(Identity(SEED))
    created = int(headers["Authorization"].split('created="')[1].split('"')[0])
    date_seconds = parsedate_to_datetime(headers["Date"]).timestamp()
    assert abs(date_seconds - created) <= 1
    assert f'expires="%!q(int64={created + 60})"' in headers["Authorization"]


class CountingSigner:
    def __init__(self) -> None:
        self.identity = Identity(SEED)
        self.signed = 0

    @property
    def node_id(self) -> str:
        return self.identity.node_id

    def sign(self, message: bytes) -> bytes:
        self.signed += 1
        return self.identity.sign(message)


def test_headers_of_one_second_are_signed_once() -> None:
    """Only the second and the key id are signed: every request of one second carries the same
    headers, so they are made once (a signature per result PUT cost more than the PUT)."""
    signer = CountingSigner()
    date = http_date(1610000000)
    first = sign_headers(signer, created=1610000000, date=date)
    first["Date"] = "mutated by a caller"
    again = sign_headers(signer, created=1610000000, date=date)
    assert signer.signed == 1
    assert again["Date"] == date  # callers get their own copy
    later = sign_headers(signer, created=1610000001, date=http_date(1610000001))
    assert signer.signed == 2
    assert later["Authorization"] != again["Authorization"]
    assert sign_headers(CountingSigner(), created=1610000001, date=http_date(1610000001)) == later
