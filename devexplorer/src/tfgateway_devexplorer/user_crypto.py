"""What a *user* does before reserving a reverse proxy: encrypt its secret for one gateway.

The gateway decrypts with its identity key (spec §9); this module is the mirror image, used by
tests, the demo and operators to publish reverse-proxy workloads on the development explorer:

- version 0: libsodium sealed box to the gateway's curve25519 key (derived from its ed25519
  public key, i.e. its node id);
- version >= 1: X25519(user curve private, gateway curve public) → BLAKE2b-256 → secretbox, with
  the 24-byte nonce prepended; the gateway uses the user's phonebook key for the mirror step.

The plaintext must be `<customer_tid>:<anything>` for the gateway to accept it.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import base58
from nacl.bindings import (
    crypto_scalarmult,
    crypto_scalarmult_base,
    crypto_sign_ed25519_pk_to_curve25519,
    crypto_sign_ed25519_sk_to_curve25519,
)
from nacl.public import Box, PrivateKey, PublicKey, SealedBox
from nacl.secret import SecretBox
from nacl.signing import SigningKey


class UserCryptoError(ValueError):
    """Bad key material or parameters (the message says which)."""


@dataclass(frozen=True)
class UserKeys:
    """A user's ed25519 key pair, as the phonebook knows it (`pubkey` = hex)."""

    seed: bytes

    def __post_init__(self) -> None:
        if len(self.seed) != 32:
            raise UserCryptoError(f"user seed must be 32 bytes, got {len(self.seed)}")

    @classmethod
    def generate(cls) -> UserKeys:
        return cls(os.urandom(32))

    @property
    def public_key(self) -> bytes:
        return bytes(SigningKey(self.seed).verify_key)

    @property
    def public_key_hex(self) -> str:
        return self.public_key.hex()

    @property
    def curve_private_key(self) -> bytes:
        return crypto_sign_ed25519_sk_to_curve25519(self.seed + self.public_key)


def gateway_public_key(gateway: str | bytes) -> bytes:
    """The gateway's ed25519 public key from its node id (base58), hex, or raw 32 bytes."""
    if isinstance(gateway, bytes):
        key = gateway
    elif len(gateway) == 64 and all(c in "0123456789abcdefABCDEF" for c in gateway):
        key = bytes.fromhex(gateway)
    else:
        try:
            key = base58.b58decode(gateway)
        except ValueError:
            raise UserCryptoError(f"{gateway!r} is neither a node id nor a hex key") from None
    if len(key) != 32:
        raise UserCryptoError(f"gateway public key must be 32 bytes, got {len(key)}")
    return key


def gateway_curve_public_key(gateway: str | bytes) -> bytes:
    """curve25519 public key the gateway decrypts with (libsodium ed25519 → curve25519)."""
    try:
        return crypto_sign_ed25519_pk_to_curve25519(gateway_public_key(gateway))
    except Exception as exc:  # libsodium rejects keys that are not valid points
        raise UserCryptoError(f"gateway key is not a valid ed25519 point: {exc}") from None


def seal_v0(
    plaintext: bytes, gateway: str | bytes, *, ephemeral_private: bytes | None = None
) -> bytes:
    """Version 0: sealed box (ephemeral pk ‖ box ciphertext, nonce = BLAKE2b-24(epk ‖ rpk)).

    `ephemeral_private` makes it deterministic for vectors; leave it None otherwise.
    """
    recipient = gateway_curve_public_key(gateway)
    if ephemeral_private is None:
        return bytes(SealedBox(PublicKey(recipient)).encrypt(plaintext))
    if len(ephemeral_private) != 32:
        raise UserCryptoError("ephemeral private key must be 32 bytes")
    ephemeral_public = crypto_scalarmult_base(ephemeral_private)
    nonce = hashlib.blake2b(ephemeral_public + recipient, digest_size=24).digest()
    box = Box(PrivateKey(ephemeral_private), PublicKey(recipient))
    return ephemeral_public + box.encrypt(plaintext, nonce).ciphertext


def seal_ecdh(
    plaintext: bytes, user: UserKeys, gateway: str | bytes, *, nonce: bytes | None = None
) -> bytes:
    """Version >= 1: nonce ‖ secretbox(plaintext) under BLAKE2b-256(X25519(user, gateway))."""
    shared = crypto_scalarmult(user.curve_private_key, gateway_curve_public_key(gateway))
    key = hashlib.blake2b(shared, digest_size=32).digest()
    nonce = nonce if nonce is not None else os.urandom(SecretBox.NONCE_SIZE)
    if len(nonce) != SecretBox.NONCE_SIZE:
        raise UserCryptoError(f"nonce must be {SecretBox.NONCE_SIZE} bytes")
    return nonce + SecretBox(key).encrypt(plaintext, nonce).ciphertext


def encrypt_secret(
    plaintext: str | bytes,
    gateway: str | bytes,
    *,
    version: int = 2,
    user: UserKeys | None = None,
) -> str:
    """Hex secret for a reverse-proxy workload of `version` (the workload's `version` field).

    Version 0 needs only the gateway; any other version needs the user's keys (the gateway
    fetches the user's public key from the phonebook to decrypt).
    """
    data = plaintext.encode() if isinstance(plaintext, str) else plaintext
    if version == 0:
        return seal_v0(data, gateway).hex()
    if user is None:
        raise UserCryptoError(f"version {version} secrets need the user's keys (user=...)")
    return seal_ecdh(data, user, gateway).hex()


def reverse_proxy_plaintext(customer_tid: int, secret: str) -> str:
    """The plaintext the gateway expects: `<customer_tid>:<secret>`."""
    return f"{customer_tid}:{secret}"
