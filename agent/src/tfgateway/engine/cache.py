"""The reservation cache: redis hash `tfgateway_reservations`, shared with the Go daemon.

Field = reservation id, value = `encode_cache_value` bytes. Unlike upstream, one undecodable
entry does not make the whole listing fail: it is logged and reported back so the engine can
go on (a failed listing at start-up was fatal in the Go daemon).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import redis.asyncio

from tfgateway.model.reservation import (
    CacheDecodeError,
    Reservation,
    decode_cache_value,
    encode_cache_value,
)
from tfgateway.store.batch import AutoPipeline, as_batch

__all__ = ["RESERVATIONS_KEY", "ReservationCache"]

RESERVATIONS_KEY = "tfgateway_reservations"

log = logging.getLogger(__name__)


def _as_bytes(value: bytes | str) -> bytes:
    return value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value


class ReservationCache:
    """Async access to the cached reservations (the live state the gateway has applied)."""

    def __init__(
        self, redis_client: redis.asyncio.Redis | AutoPipeline, key: str = RESERVATIONS_KEY
    ) -> None:
        self._batch = as_batch(redis_client)  # single reads and writes of concurrent jobs
        self._redis = self._batch.client
        self._key = key

    async def get(self, reservation_id: str) -> Reservation | None:
        """The cached reservation, None if absent; CacheDecodeError if the entry is corrupt."""
        value = await self._batch.hget(self._key, reservation_id)
        if value is None:
            return None
        return self.decode(reservation_id, _as_bytes(value))

    async def get_many(self, reservation_ids: Sequence[str]) -> list[bytes | None]:
        """The raw entries of several reservations in one command (a page of jobs), in order;
        `decode` each."""
        if not reservation_ids:
            return []
        return [
            None if v is None else _as_bytes(v)
            for v in await self._batch.hmget(self._key, reservation_ids)
        ]

    def decode(self, reservation_id: str, value: bytes) -> Reservation:
        """A raw entry of `get_many`; CacheDecodeError if it is corrupt."""
        try:
            return decode_cache_value(value)
        except CacheDecodeError as exc:
            raise CacheDecodeError(f"cache entry {reservation_id!r}: {exc}") from exc

    async def put(self, reservation: Reservation) -> None:
        await self._batch.hset(*self.entry(reservation))

    def entry(self, reservation: Reservation) -> tuple[str, str, bytes]:
        """(key, field, value) of the reservation's entry, for a writer that makes the write
        part of its own redis call (the outbox, with the result it queues)."""
        return self._key, reservation.id, encode_cache_value(reservation)

    async def remove(self, reservation_id: str) -> None:
        await self._batch.hdel(self._key, reservation_id)

    async def exists(self, reservation_id: str) -> bool:
        return bool(await self._redis.hexists(self._key, reservation_id))

    async def ids(self) -> list[str]:
        keys = await self._redis.hkeys(self._key)
        return [k.decode("utf-8", "replace") if isinstance(k, bytes) else str(k) for k in keys]

    async def list(self) -> tuple[list[Reservation], list[str]]:
        """All decodable reservations, and the ids of the entries that could not be decoded."""
        reservations: list[Reservation] = []
        bad_ids: list[str] = []
        async for field, value in self._redis.hscan_iter(self._key, count=500):
            rid = field.decode("utf-8", "replace") if isinstance(field, bytes) else str(field)
            try:
                reservations.append(decode_cache_value(_as_bytes(value)))
            except CacheDecodeError as exc:
                log.error("cache entry %r in %s cannot be decoded: %s", rid, self._key, exc)
                bad_ids.append(rid)
        return reservations, bad_ids
