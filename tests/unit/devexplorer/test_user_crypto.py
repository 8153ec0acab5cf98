"""User-side secret encryption round-trips against the gateway's algorithm (spec §9 vectors)."""

from __future__ import annotations

import hashlib

import base58
import pytest
from nacl.bindings import (
    crypto_scalarmult,
    crypto_sign_ed25519_pk_to_curve25519,
    crypto_sign_ed25519_sk_to_curve25519,
)
from nacl.exceptions import CryptoError
from nacl.public import PrivateKey, SealedBox
from nacl.secret import SecretBox
from nacl.signing import SigningKey

from tfgateway.node.crypto import decrypt_secret
from tfgateway.node.identity import Identity
from tfgateway_devexplorer.user_crypto import (
    UserCryptoError,
    UserKeys,
    encrypt_secret,
    gateway_curve_public_key,
    reverse_proxy_plaintext,
    seal_ecdh,
    seal_v0,
)

GW_SEED_V0 = b"12345678901234567890123456789012"
GW_SEED_V1 = b"2" * 32
USER_SEED = b"1" * 32
PLAINTEXT = b"42:my-reverse-proxy-secret"


def gateway_decrypt(secret_hex: str, version: int, gw_seed: bytes, user_pub: bytes = b"") -> bytes:
    """The gateway side, written from spec §9 (independent of the module under test)."""
    cipher = bytes.fromhex(secret_hex)
    gw_pub = bytes(SigningKey(gw_seed).verify_key)
    curve_sk = crypto_sign_ed25519_sk_to_curve25519(gw_seed + gw_pub)
    if version == 0:
        return SealedBox(PrivateKey(curve_sk)).decrypt(cipher)
    shared = crypto_scalarmult(curve_sk, crypto_sign_ed25519_pk_to_curve25519(user_pub))
    key = hashlib.blake2b(shared, digest_size=32).digest()
    return SecretBox(key).decrypt(cipher[24:], cipher[:24])


def node_id(seed: bytes) -> str:
    return base58.b58encode(bytes(SigningKey(seed).verify_key)).decode()


def test_curve_conversion_matches_the_spec_vector() -> None:
    assert gateway_curve_public_key(node_id(GW_SEED_V0)).hex() == (
        "f22aa4a9ec6ff1e591d83dc97d8cdfceea8f7cd7453281e07672d415b9637454"
    )


def test_v0_deterministic_vector() -> None:
    ephemeral = hashlib.sha256(b"ephemeral").digest()
    secret = seal_v0(PLAINTEXT, node_id(GW_SEED_V0), ephemeral_private=ephemeral)
    assert secret.hex() == (
        "e29d7521911498b837ed692d12a81587898e0ac3f6208eac1069bca82fb6b633"
        "58c0f9d94c24e683a72d5e415062431167a11d6635f1145adbe41c434b4a12a775d7a6590556439367d8"
    )


def test_v1_deterministic_vector() -> None:
    gw_pub = bytes(SigningKey(GW_SEED_V1).verify_key)
    assert gw_pub.hex() == "5e212c0980e4b39fc09721134aa02109374edfd260c0d3d03cb501c8d65457a9"
    secret = seal_ecdh(PLAINTEXT, UserKeys(USER_SEED), gw_pub, nonce=bytes(range(24)))
    assert secret.hex() == (
        "000102030405060708090a0b0c0d0e0f10111213141516170c90e2aa60e26282e5a6a3cf7f9e826c63d5d8"
        "774fb6c210acde6b97b8bcc06fa72c7949ef44d457ae4e"
    )


@pytest.mark.parametrize("version", [0, 1, 2, 7])
def test_random_secrets_round_trip_through_the_gateway_algorithm(version: int) -> None:
    user = UserKeys.generate()
    gateway_seed = b"g" * 32
    plaintext = reverse_proxy_plaintext(42, "s3cret")
    for gateway in (node_id(gateway_seed), bytes(SigningKey(gateway_seed).verify_key)):
        secret = encrypt_secret(plaintext, gateway, version=version, user=user)
        assert gateway_decrypt(secret, version, gateway_seed, user.public_key) == b"42:s3cret"
        # another gateway cannot read it
        with pytest.raises(CryptoError):
            gateway_decrypt(secret, version, b"h" * 32, user.public_key)


def test_ecdh_without_user_keys_is_a_clear_error() -> None:
    with pytest.raises(UserCryptoError, match="need the user's keys"):
        encrypt_secret("42:x", node_id(GW_SEED_V1), version=1)


@pytest.mark.parametrize("gateway", ["not-base58-0OIl", "abc", b"short"])
def test_bad_gateway_keys_are_clear_errors(gateway: str | bytes) -> None:
    with pytest.raises(UserCryptoError):
        encrypt_secret("42:x", gateway, version=0)


@pytest.mark.parametrize("version", [0, 1, 2])
def test_the_agents_decrypt_secret_reads_what_users_encrypt(version: int) -> None:
    """Cross-check with the agent's own implementation (tfgateway.node.crypto)."""
    gateway = Identity(b"g" * 32)
    user = UserKeys(USER_SEED)
    secret = encrypt_secret("42:s3cret", gateway.node_id, version=version, user=user)
    assert decrypt_secret(secret, version, gateway, user.public_key) == b"42:s3cret"
