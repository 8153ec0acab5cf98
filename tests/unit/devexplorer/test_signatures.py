"""Server-side HTTP signature checks of the development explorer (spec §2, §2.1 vector)."""

from __future__ import annotations

import base64

import pytest
from nacl.signing import SigningKey

from tfgateway.explorer.signatures import sign_headers
from tfgateway.node.identity import Identity
from tfgateway_devexplorer.signatures import Headers, SignatureError, signing_string, verify

NODE = "FkUfMueBVSK6V1DCHVAtzzaqPqCPVzGguDzCQxq7Ep85"
DATE = "Thu, 07 Jan 2021 06:13:20 GMT"
SIG = "bnEQfoEuL43oSTHAmqFnjwPaeL01s1Q7DmnXxYFz34KvInjcbyekhxtkkKgfPRTcohvDkRCzZpCS0kKeko9DDg=="
AUTH = (
    f'Signature keyId="{NODE}",algorithm="ed25519",created="1610000000",'
    f'expires="%!q(int64=1610000060)",headers="(created) date threebot-id",signature="{SIG}"'
)


def headers(**changes: str | None) -> Headers:
    base: dict[str, str | None] = {"Threebot-Id": NODE, "Date": DATE, "Authorization": AUTH}
    base.update(changes)
    return Headers([(k, v) for k, v in base.items() if v is not None])


def test_vector_verifies_and_returns_the_key_id() -> None:
    assert verify(headers()) == NODE


def test_signing_string_of_the_vector() -> None:
    text = signing_string(headers(), ["(created)", "date", "threebot-id"], 1610000000, 0)
    assert text == (
        b"(created): 1610000000\ndate: Thu, 07 Jan 2021 06:13:20 GMT\n"
        b"threebot-id: FkUfMueBVSK6V1DCHVAtzzaqPqCPVzGguDzCQxq7Ep85"
    )
    assert SigningKey(b"helloworldhelloworldhelloworld12").sign(text).signature == (
        base64.b64decode(SIG)
    )


def test_parameter_order_and_spacing_do_not_matter() -> None:
    shuffled = (
        f'Signature signature="{SIG}", headers="(created) date threebot-id" ,'
        f'created="1610000000",algorithm="ed25519",keyId="{NODE}"'
    )
    assert verify(headers(Authorization=shuffled)) == NODE


def test_last_wellformed_authorization_header_wins() -> None:
    h = Headers(
        [
            ("Threebot-Id", NODE),
            ("Date", DATE),
            ("Authorization", AUTH),
            ("Authorization", "Basic x"),
        ]
    )
    assert verify(h) == NODE


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"Authorization": None}, "no params present"),
        ({"Authorization": "Bearer abc"}, "no params present"),
        ({"Authorization": AUTH.replace(f'keyId="{NODE}"', 'keyId=""')}, "keyId is required"),
        ({"Authorization": AUTH.replace("ed25519", "ed448")}, "algorithm is required"),
        ({"Authorization": AUTH.replace(SIG, "%%%")}, "signature is required"),
        ({"Authorization": AUTH.replace(" threebot-id", "")}, "missing required header"),
        ({"Threebot-Id": None}, "expected threebot-id to exists"),
        ({"Date": "Thu, 07 Jan 2021 06:13:21 GMT"}, "verification failed"),
        ({"Authorization": AUTH.replace('"1610000000"', '"1610000001"')}, "verification failed"),
        ({"Authorization": AUTH.replace('"1610000000"', '"x"')}, "verification failed"),
        ({"Authorization": AUTH.replace(f'keyId="{NODE}"', 'keyId="abc"')}, "wrong size"),
        ({"Authorization": AUTH.replace(f'keyId="{NODE}"', 'keyId="0OIl"')}, "wrong size"),
        ({"Authorization": AUTH.replace("ed25519", "hmac-sha256")}, "not supported"),
    ],
)
def test_rejections_have_the_httpsig_reason(changes: dict[str, str | None], message: str) -> None:
    with pytest.raises(SignatureError, match=message):
        verify(headers(**changes))


def test_no_freshness_check_like_upstream() -> None:
    # created/Date from 2021 still verify: the explorer has no replay window (spec F7)
    assert verify(headers()) == NODE


def test_the_agents_signer_is_accepted() -> None:
    """Cross-check with the agent's own signer (`explorer.signatures`), fresh and at the vector."""
    identity = Identity(b"helloworldhelloworldhelloworld12")
    assert verify(Headers.from_mapping(sign_headers(identity))) == NODE
    vector = sign_headers(identity, created=1610000000, date=DATE)
    assert vector["Authorization"] == AUTH
    other = Identity(b"a" * 32)
    forged = {**sign_headers(other), "Threebot-Id": NODE}
    with pytest.raises(SignatureError):
        verify(Headers.from_mapping(forged))
