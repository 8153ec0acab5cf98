"""Reverse-proxy secret decryption (explorer spec §9 vectors, F2)."""

from __future__ import annotations

import hashlib

import nacl.bindings
import nacl.public
import nacl.secret
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tfgateway.node.crypto import (
    DecryptError,
    decrypt_secret,
    ed25519_private_to_curve25519,
    ed25519_public_to_curve25519,
)
from tfgateway.node.identity import Identity

GW_V0 = Identity(b"12345678901234567890123456789012")
GW_V1 = Identity(b"2" * 32)
USER_V1 = Identity(b"1" * 32)


def test_curve25519_conversion_vectors() -> None:
    assert ed25519_private_to_curve25519(GW_V0).hex() == (
        "f0106660c3dda23f16daa9ac5b811b963077f5bc0af89f85804f0de8e424f050"
    )
    assert ed25519_public_to_curve25519(GW_V0.public_key).hex() == (
        "f22aa4a9ec6ff1e591d83dc97d8cdfceea8f7cd7453281e07672d415b9637454"
    )


def test_v0_upstream_vector() -> None:
    secret = (
        "0bfe9e3b9ce17fe6d570b165ea2a01034326b8c81d5f2c5384c8fe886552f074ec43017465598c4f"
        "5a857b495b445be46c3df48d14878bd0b1b907"
    )
    assert decrypt_secret(secret, 0, GW_V0) == b"hello world"
    assert decrypt_secret(secret.upper(), 0, GW_V0) == b"hello world"


def test_v0_deterministic_vector() -> None:
    eph_sk = hashlib.sha256(b"ephemeral").digest()
    assert eph_sk.hex() == "8341425cafede9d24b0599aefdfdeff1c1526ed75b07217eb99bf8c0b7498b81"
    eph_pk = nacl.bindings.crypto_scalarmult_base(eph_sk)
    assert eph_pk.hex() == "e29d7521911498b837ed692d12a81587898e0ac3f6208eac1069bca82fb6b633"
    recipient = ed25519_public_to_curve25519(GW_V0.public_key)
    nonce = hashlib.blake2b(eph_pk + recipient, digest_size=24).digest()
    assert nonce.hex() == "f4322f616e1420da665de824d9141f8b99f52ad4ce9e2090"
    secret = (
        "e29d7521911498b837ed692d12a81587898e0ac3f6208eac1069bca82fb6b63358c0f9d94c24e683a72d5e"
        "415062431167a11d6635f1145adbe41c434b4a12a775d7a6590556439367d8"
    )
    box = nacl.public.Box(nacl.public.PrivateKey(eph_sk), nacl.public.PublicKey(recipient))
    assert (
        eph_pk.hex() + box.encrypt(b"42:my-reverse-proxy-secret", nonce).ciphertext.hex() == secret
    )
    assert decrypt_secret(secret, 0, GW_V0) == b"42:my-reverse-proxy-secret"


def test_v1_key_derivation_vector() -> None:
    assert GW_V1.public_key_hex == (
        "5e212c0980e4b39fc09721134aa02109374edfd260c0d3d03cb501c8d65457a9"
    )
    assert USER_V1.public_key_hex == (
        "48075a597e721a156e2e0799de5cc0c5324dc6e7eaf1cdd46250868ec53215dd"
    )
    shared = nacl.bindings.crypto_scalarmult(
        ed25519_private_to_curve25519(GW_V1), ed25519_public_to_curve25519(USER_V1.public_key)
    )
    assert shared.hex() == "e7add3c0056789752ff195aeacd3017835138a4a900a9b22f7715026ed6c3773"
    key = hashlib.blake2b(shared, digest_size=32).digest()
    assert key.hex() == "0c7dd32915522b0b382669ab24827ba60e3f3c74a3883d8a354eaff66f94d672"
    mirror = nacl.bindings.crypto_scalarmult(
        ed25519_private_to_curve25519(USER_V1), ed25519_public_to_curve25519(GW_V1.public_key)
    )
    assert mirror == shared


def test_v1_upstream_vector() -> None:
    secret = (
        "8a246cd20d2d29b8f45d7a32e469cd914707bf3abed5747bcd9b54383e56e9be97b940df5a6826400f36a8"
        "29ce10c618979ee2"
    )
    for version in (1, 2, 7):
        assert decrypt_secret(secret, version, GW_V1, USER_V1.public_key) == b"hello world"


def test_v1_deterministic_vector() -> None:
    secret = (
        "000102030405060708090a0b0c0d0e0f10111213141516170c90e2aa60e26282e5a6a3cf7f9e826c63d5d877"
        "4fb6c210acde6b97b8bcc06fa72c7949ef44d457ae4e"
    )
    key = bytes.fromhex("0c7dd32915522b0b382669ab24827ba60e3f3c74a3883d8a354eaff66f94d672")
    nonce = bytes(range(24))
    assert (
        nonce.hex()
        + nacl.secret.SecretBox(key).encrypt(b"42:my-reverse-proxy-secret", nonce).ciphertext.hex()
        == secret
    )
    assert decrypt_secret(secret, 1, GW_V1, USER_V1.public_key) == b"42:my-reverse-proxy-secret"


def test_empty_secret_is_empty_plaintext() -> None:
    assert decrypt_secret("", 0, GW_V0) == b""
    assert decrypt_secret("", 1, GW_V1, USER_V1.public_key) == b""


@pytest.mark.parametrize(
    ("secret", "version", "message"),
    [
        ("00", 0, "invalid cipher text too short"),
        ("00" * 47, 0, "invalid cipher text too short"),
        ("00", 1, "invalid cipher text too short"),  # upstream panics here (F2)
        ("00" * 23, 1, "invalid cipher text too short"),
        ("00" * 39, 2, "invalid cipher text too short"),
        ("00" * 48, 0, "decryption error"),
        ("00" * 60, 1, "decryption error"),
        ("zz", 0, "not valid hex"),
        ("abc", 1, "odd length"),
        ("ab cd", 0, "not valid hex"),
    ],
)
def test_hostile_secrets_give_decrypt_error(secret: str, version: int, message: str) -> None:
    with pytest.raises(DecryptError, match=message):
        decrypt_secret(secret, version, GW_V1, USER_V1.public_key)


def test_tampered_v1_secret_is_decryption_error() -> None:
    secret = bytearray.fromhex(
        "8a246cd20d2d29b8f45d7a32e469cd914707bf3abed5747bcd9b54383e56e9be97b940df5a6826400f36a8"
        "29ce10c618979ee2"
    )
    secret[-1] ^= 1
    with pytest.raises(DecryptError, match=r"^decryption error$"):
        decrypt_secret(secret.hex(), 1, GW_V1, USER_V1.public_key)


def test_v1_needs_valid_user_key() -> None:
    with pytest.raises(DecryptError, match="user's public key"):
        decrypt_secret("00" * 60, 1, GW_V1, None)
    with pytest.raises(DecryptError, match="invalid public key"):
        decrypt_secret("00" * 60, 1, GW_V1, b"short")
    with pytest.raises(DecryptError):
        decrypt_secret("00" * 60, 1, GW_V1, b"\x00" * 32)  # small-order point


@given(
    st.binary(max_size=120),
    st.integers(min_value=0, max_value=5),
    st.binary(min_size=32, max_size=32),
)
@settings(max_examples=200, deadline=None)
def test_random_input_never_raises_anything_but_decrypt_error(
    cipher: bytes, version: int, user_key: bytes
) -> None:
    try:
        decrypt_secret(cipher.hex(), version, GW_V1, user_key)
    except DecryptError as exc:
        message = str(exc)
    else:
        message = "decrypted"
    assert message
