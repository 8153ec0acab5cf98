"""4to6 addressing, keys and result data: the spec §11 vectors (byte-compatible with Go)."""

from __future__ import annotations

import ipaddress
import json

import nacl.signing
import pytest

from tfgateway.model.reservation import Reservation
from tfgateway.primitives import fourtosix
from tfgateway.primitives.provisioner import ProvisionError

SEED = b"a" * 32
EXAMPLE_DATA = (
    b'{"ips":["fd5e:ca9b:d3eb:7c0:2ffd:7e52:ea26:4419"],"peers":[{"public_key":'
    b'"QElQLbksojQsP5LaxdbefIXbXfVAeltJls458u+36Cc=","endpoint":"gw.example.com:51820",'
    b'"allowed_ips":["::/0"]}]}'
)


def test_subnet_and_gateway_address_vectors() -> None:
    assert fourtosix.subnet(SEED) == ipaddress.IPv6Network("fd5e:ca9b:d3eb:7c0::/64")
    assert str(fourtosix.gateway_interface(SEED)) == "fd5e:ca9b:d3eb:7c0::1/64"


@pytest.mark.parametrize(
    ("user", "address"),
    [
        ("hello", "fd5e:ca9b:d3eb:7c0:17a8:6758:763b:e8b5"),
        ("user1", "fd5e:ca9b:d3eb:7c0:b51a:eb:8acd:14a5"),
        ("user2", "fd5e:ca9b:d3eb:7c0:17a2:2514:f5d3:c8c3"),
        ("42", "fd5e:ca9b:d3eb:7c0:2ffd:7e52:ea26:4419"),
    ],
)
def test_user_address_vectors(user: str, address: str) -> None:
    got = fourtosix.user_address(SEED, user)
    assert str(got) == address
    assert got in fourtosix.subnet(SEED)


def test_wireguard_key_vectors() -> None:
    assert fourtosix.wireguard_private_key(SEED) == "YWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWE="
    assert fourtosix.wireguard_public_key(SEED) == "QElQLbksojQsP5LaxdbefIXbXfVAeltJls458u+36Cc="


def test_public_key_is_that_of_the_clamped_scalar() -> None:
    # The kernel clamps the unclamped seed it is given; the public key must match what it derives.
    seed = bytes(range(32))
    clamped = bytearray(seed)
    clamped[0] &= 248
    clamped[31] = (clamped[31] & 127) | 64
    assert fourtosix.wireguard_public_key(seed) == fourtosix.wireguard_public_key(bytes(clamped))


def test_result_data_vector_and_its_signature() -> None:
    data = fourtosix.result_data(SEED, "42", "gw.example.com:51820")
    assert data == EXAMPLE_DATA
    # spec §7: state 1, empty message, this data, signed by the seed's ed25519 key.
    signature = nacl.signing.SigningKey(SEED).sign(b"\x01" + data).signature
    assert signature.hex() == (
        "bc51f8c190bd0795a83dc8836a09af9017bba7c40770e58af4c0770e29bbd1c5"
        "b12903a39df65839d3edcb066004a4f444707f4032f961ac6a5d5f909f26fb03"
    )


def test_result_data_escapes_like_go() -> None:
    data = fourtosix.result_data(SEED, "42", "a&b:1")
    assert b'"endpoint":"a\\u0026b:1"' in data
    assert json.loads(data)["peers"][0]["endpoint"] == "a&b:1"


def test_seed_must_be_32_bytes() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        fourtosix.subnet(b"short")


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        ("gw.example.com:51820", ("gw.example.com", 51820)),
        ("10.0.0.1:1", ("10.0.0.1", 1)),
        ("[2001:db8::1]:65535", ("2001:db8::1", 65535)),
    ],
)
def test_parse_endpoint(endpoint: str, expected: tuple[str, int]) -> None:
    assert fourtosix.parse_endpoint(endpoint) == expected


@pytest.mark.parametrize(
    "endpoint",
    ["", "host", "host:", ":51820", "host:0", "host:65536", "host:x1", "2001:db8::1:5", "[::1]5"],
)
def test_parse_endpoint_rejects(endpoint: str) -> None:
    with pytest.raises(ValueError, match="invalid endpoint"):
        fourtosix.parse_endpoint(endpoint)


def _r(data: bytes) -> Reservation:
    return Reservation(id="1-1", user_id="42", type="gateway4to6", data=data)


def test_user_public_key_accepts_a_valid_key() -> None:
    key = "QElQLbksojQsP5LaxdbefIXbXfVAeltJls458u+36Cc="
    assert fourtosix.user_public_key(_r(json.dumps({"public_key": key}).encode())) == key


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not json", "not JSON"),
        (b"[]", "JSON object"),
        (b"{}", "public_key is missing"),
        (b'{"public_key": 5}', "public_key is missing"),
        (b'{"public_key": "c2hvcnQ="}', "decodes to 5 bytes"),
        (b'{"public_key": "QElQLbksojQsP5LaxdbefIXbXfVAeltJls458u+36Cc"}', "not standard base64"),
        (b'{"public_key": "QElQLbksojQsP5LaxdbefIXbXfVAeltJls458u-36Cc="}', "not standard base64"),
        (b'{"public_key": "\xc3\xa9"}', "not standard base64"),
    ],
)
def test_user_public_key_rejects_with_a_clear_message(data: bytes, message: str) -> None:
    with pytest.raises(ProvisionError, match=message):
        fourtosix.user_public_key(_r(data))
