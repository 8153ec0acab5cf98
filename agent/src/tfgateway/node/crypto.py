"""Reverse-proxy secret decryption, compatible with ZOS `pkg/crypto` (explorer spec §9).

Version 0 secrets are libsodium sealed boxes to the gateway's curve25519 key; version ≥ 1 secrets
are secretboxes under BLAKE2b-256(X25519(gateway, user)) with the nonce in the first 24 bytes.
Every failure is a `DecryptError` with a clear message: a hostile secret must never take down the
agent (upstream panics on short version ≥ 1 ciphertexts, spec F2).
"""

from __future__ import annotations

import hashlib

import nacl.bindings
import nacl.exceptions
import nacl.public
import nacl.secret

from tfgateway.node.identity import Identity

__all__ = [
    "DecryptError",
    "decrypt_secret",
    "ed25519_private_to_curve25519",
    "ed25519_public_to_curve25519",
]

_SEALED_OVERHEAD = 32 + 16  # ephemeral public key + Poly1305 tag
_NONCE_SIZE = 24
_MAC_SIZE = 16


class DecryptError(Exception):
    """The secret cannot be decrypted; the message is fit for an explorer result."""


def ed25519_private_to_curve25519(identity: Identity) -> bytes:
    """Curve25519 private key: clamped SHA-512(seed)[:32] (libsodium sk_to_curve25519)."""
    return bytes(
        nacl.bindings.crypto_sign_ed25519_sk_to_curve25519(identity.seed + identity.public_key)
    )


def ed25519_public_to_curve25519(public_key: bytes) -> bytes:
    """Curve25519 public key (Montgomery u of the Edwards point); DecryptError if invalid."""
    if len(public_key) != 32:
        raise DecryptError(f"invalid public key: {len(public_key)} bytes, need 32")
    try:
        return bytes(nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(public_key))
    except (nacl.exceptions.RuntimeError, nacl.exceptions.ValueError) as exc:
        raise DecryptError("invalid public key: not a valid ed25519 point") from exc


_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


def _decode_hex(secret_hex: str) -> bytes:
    """Strict hex like Go's `hex.DecodeString` (no whitespace, even length, any case)."""
    bad = next((ch for ch in secret_hex if ch not in _HEX_DIGITS), None)
    if bad is not None:
        raise DecryptError(f"secret is not valid hex: invalid byte {bad!r}")
    if len(secret_hex) % 2:
        raise DecryptError("secret is not valid hex: odd length hex string")
    return bytes.fromhex(secret_hex)


def decrypt_secret(
    secret_hex: str, version: int, identity: Identity, user_public_key: bytes | None = None
) -> bytes:
    """Plaintext of a reverse-proxy secret (empty secret → empty plaintext, as upstream).

    `user_public_key` (the user's ed25519 key from the phonebook) is needed for version ≥ 1.
    """
    cipher = _decode_hex(secret_hex)
    if not cipher:
        return b""
    gateway_private = ed25519_private_to_curve25519(identity)
    if version == 0:
        if len(cipher) < _SEALED_OVERHEAD:
            raise DecryptError("invalid cipher text too short")
        box = nacl.public.SealedBox(nacl.public.PrivateKey(gateway_private))
        try:
            return bytes(box.decrypt(cipher))
        except nacl.exceptions.CryptoError as exc:
            raise DecryptError("decryption error") from exc
    if user_public_key is None:
        raise DecryptError(f"secret version {version} needs the user's public key")
    if len(cipher) < _NONCE_SIZE + _MAC_SIZE:
        raise DecryptError("invalid cipher text too short")
    user_curve = ed25519_public_to_curve25519(user_public_key)
    try:
        shared = nacl.bindings.crypto_scalarmult(gateway_private, user_curve)
    except nacl.exceptions.CryptoError as exc:
        raise DecryptError("decryption error: invalid user key") from exc
    key = hashlib.blake2b(shared, digest_size=32).digest()
    try:
        return bytes(nacl.secret.SecretBox(key).decrypt(cipher[_NONCE_SIZE:], cipher[:_NONCE_SIZE]))
    except nacl.exceptions.CryptoError as exc:
        raise DecryptError("decryption error") from exc
