"""HTTP Signatures (draft-cavage) as the explorer client signs its requests (explorer spec §2).

The explorer checks these only on the uptime and reserved-resources calls, but every call of
the Go client carries them, so we sign every signed call the same way. The `expires` parameter
is the Go 1.14 bad-verb text `%!q(int64=N)` the shipped binary sends; servers ignore it.
"""

from __future__ import annotations

import base64
import functools
import time
from email.utils import formatdate
from typing import Protocol

__all__ = ["SIGNED_HEADERS", "Signer", "http_date", "sign_headers", "signing_string"]

SIGNED_HEADERS = ("(created)", "date", "threebot-id")
_EXPIRES_AFTER = 60


class Signer(Protocol):
    """What signing needs of the gateway identity."""

    @property
    def node_id(self) -> str: ...

    def sign(self, message: bytes) -> bytes: ...

    def __hash__(self) -> int: ...


def http_date(unix_seconds: float) -> str:
    """Go `http.TimeFormat` (`Mon, 02 Jan 2006 15:04:05 GMT`) of a Unix time."""
    return formatdate(unix_seconds, usegmt=True)


@functools.lru_cache(maxsize=4)
def _http_date_of_second(unix_seconds: int) -> str:
    """`http_date` of a whole second, made once for all the requests within it."""
    return http_date(unix_seconds)


def signing_string(created: int, date: str, key_id: str) -> bytes:
    """The three lines that are signed, joined by `\\n`, no trailing newline."""
    return f"(created): {created}\ndate: {date}\nthreebot-id: {key_id}".encode()


def sign_headers(
    signer: Signer, *, created: int | None = None, date: str | None = None
) -> dict[str, str]:
    """Headers to add to a request: `Threebot-Id`, `Date` and `Authorization`.

    `created` and `date` default to now; tests pass them to check the spec vector. The signed
    string holds only the time (in seconds) and the key id, so the headers made for a second
    are reused by every request within it (an ed25519 signature per result PUT otherwise).
    """
    now = int(time.time())
    created_s = now if created is None else created
    date_text = _http_date_of_second(now) if date is None else date
    return dict(_headers(signer, created_s, date_text))


@functools.lru_cache(maxsize=4)
def _headers(signer: Signer, created_s: int, date_text: str) -> tuple[tuple[str, str], ...]:
    key_id = signer.node_id
    signature = base64.b64encode(signer.sign(signing_string(created_s, date_text, key_id)))
    params = ",".join(
        (
            f'keyId="{key_id}"',
            'algorithm="ed25519"',
            f'created="{created_s}"',
            f'expires="%!q(int64={created_s + _EXPIRES_AFTER})"',
            f'headers="{" ".join(SIGNED_HEADERS)}"',
            f'signature="{signature.decode("ascii")}"',
        )
    )
    return (
        ("Threebot-Id", key_id),
        ("Date", date_text),
        ("Authorization", "Signature " + params),
    )
