"""The gateway's ed25519 identity and its seed file, compatible with the Go daemon's.

Seed files are ZOS "versioned" files: `"1.0.0"` + 32 raw seed bytes, or `"1.1.0"` + JSON with a
24-word BIP-39 mnemonic whose *entropy* is the seed; a file without a version header is a raw
seed. Upstream rewrites unversioned files as `"1.1.0"` + raw bytes, which the next start cannot
read (explorer spec F1); we rewrite them atomically as `"1.0.0"` + raw bytes instead, which both
the Go daemon and this agent load.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import base58
import nacl.exceptions
import nacl.signing
from mnemonic import Mnemonic

from tfgateway.model.gojson import split_versioned

__all__ = ["SEED_SIZE", "Identity", "SeedError", "load_or_create", "load_seed", "node_id_of"]

log = logging.getLogger(__name__)

SEED_SIZE = 32
_V100 = (1, 0, 0, "")
_V110 = (1, 1, 0, "")
_HEADER_V100 = b'"1.0.0"'


class SeedError(Exception):
    """The seed file cannot give a usable identity; the message says which file and why."""


def node_id_of(public_key: bytes) -> str:
    """The node id: base58 (Bitcoin alphabet) of the ed25519 public key."""
    return str(base58.b58encode(public_key).decode("ascii"))


@dataclass(frozen=True)
class Identity:
    """An ed25519 key pair derived from a 32-byte seed (Go `ed25519.NewKeyFromSeed`)."""

    seed: bytes = field(repr=False)
    public_key: bytes = field(init=False)
    public_key_hex: str = field(init=False)
    node_id: str = field(init=False)
    _signing_key: nacl.signing.SigningKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.seed) != SEED_SIZE:
            raise SeedError(f"seed has the wrong size: {len(self.seed)} bytes, need {SEED_SIZE}")
        key = nacl.signing.SigningKey(self.seed)
        public = bytes(key.verify_key)
        object.__setattr__(self, "_signing_key", key)
        object.__setattr__(self, "public_key", public)
        object.__setattr__(self, "public_key_hex", public.hex())
        object.__setattr__(self, "node_id", node_id_of(public))

    @classmethod
    def generate(cls) -> Identity:
        return cls(secrets.token_bytes(SEED_SIZE))

    def sign(self, message: bytes) -> bytes:
        """Plain ed25519 signature (64 bytes) of `message`, no pre-hash."""
        return bytes(self._signing_key.sign(message).signature)

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            self._signing_key.verify_key.verify(message, signature)
        except nacl.exceptions.BadSignatureError:
            return False
        return True


def _seed_from_mnemonic(payload: bytes, path: Path) -> bytes:
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SeedError(
            f"seed file {path}: version 1.1.0 payload is not valid JSON: {exc}"
        ) from exc
    if not isinstance(doc, dict):
        raise SeedError(f"seed file {path}: version 1.1.0 payload must be a JSON object")
    words_text = doc.get("mnemonic", "")
    if not isinstance(words_text, str):
        raise SeedError(f"seed file {path}: 'mnemonic' must be a string")
    words = words_text.split()
    if len(words) not in (12, 15, 18, 21, 24):
        raise SeedError(
            f"seed file {path}: mnemonic has {len(words)} words, a BIP-39 mnemonic has "
            "12, 15, 18, 21 or 24 (24 for a gateway seed)"
        )
    wordlist = Mnemonic("english")
    unknown = [w for w in words if w not in wordlist.wordlist]
    if unknown:
        raise SeedError(f"seed file {path}: mnemonic has words not in the BIP-39 English list")
    try:
        entropy = bytes(wordlist.to_entropy(words))
    except (ValueError, LookupError) as exc:
        raise SeedError(f"seed file {path}: invalid mnemonic: {exc}") from exc
    if len(entropy) != SEED_SIZE:
        raise SeedError(
            f"seed file {path}: seed has the wrong size: the mnemonic gives {len(entropy)} bytes, "
            f"need {SEED_SIZE} (24 words)"
        )
    return entropy


def _write_atomic(path: Path, data: bytes, *, replace: bool) -> None:
    """Write `data` to `path` with mode 0400 via a temporary file in the same directory.

    With `replace=False` an existing file is never clobbered (FileExistsError instead).
    """
    directory = path.parent
    tmp = directory / f".{path.name}.{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if replace:
            tmp.replace(path)
        else:
            os.link(tmp, path)
            tmp.unlink()
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    with contextlib.suppress(OSError):
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def load_seed(path: Path) -> bytes:
    """The 32-byte seed stored in `path` (any supported format); SeedError otherwise.

    An unversioned file holding a valid raw seed is upgraded in place to `"1.0.0"` + seed
    (atomically; if that fails the file is left as it was, which loads just as well).
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise SeedError(f"cannot read seed file {path}: {exc.strerror or exc}") from exc
    with contextlib.suppress(OSError):
        if path.stat().st_mode & 0o077:
            log.warning("seed file %s is readable by other users; chmod 0400 it", path)
    version, payload = split_versioned(data)
    if version is None:
        if len(data) != SEED_SIZE:
            raise SeedError(
                f"seed file {path}: seed has the wrong size: unversioned file of {len(data)} "
                f"bytes, need {SEED_SIZE} raw bytes"
            )
        if path.is_symlink():
            log.info("seed file %s has no version header; left as is (symlink)", path)
            return data
        try:
            _write_atomic(path, _HEADER_V100 + data, replace=True)
            log.info("seed file %s had no version header; rewrote it as version 1.0.0", path)
        except OSError as exc:
            log.warning("seed file %s has no version header and cannot be upgraded: %s", path, exc)
        return data
    if version == _V100:
        if len(payload) != SEED_SIZE:
            raise SeedError(
                f"seed file {path}: seed has the wrong size: {len(payload)} bytes after the "
                f'"1.0.0" header, need {SEED_SIZE}'
            )
        return payload
    if version == _V110:
        return _seed_from_mnemonic(payload, path)
    major, minor, patch, pre = version
    text = f"{major}.{minor}.{patch}" + (f"-{pre}" if pre else "")
    raise SeedError(f"seed file {path}: unknown seed version {text} (supported: 1.0.0, 1.1.0)")


def load_or_create(path: str | os.PathLike[str]) -> Identity:
    """Load the identity from `path`, creating a new random `"1.0.0"` seed file if missing."""
    p = Path(path)
    try:
        return Identity(load_seed(p))
    except FileNotFoundError:
        pass
    identity = Identity.generate()
    try:
        _write_atomic(p, _HEADER_V100 + identity.seed, replace=False)
    except FileExistsError:
        return Identity(load_seed(p))  # someone else created it meanwhile: theirs wins
    except OSError as exc:
        raise SeedError(f"cannot create seed file {p}: {exc.strerror or exc}") from exc
    log.info("created new identity %s in %s", identity.node_id, p)
    return identity
