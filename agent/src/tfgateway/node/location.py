"""Where the gateway is, for its registration (explorer spec §3.1).

Upstream asks https://geoip.grid.tf and aborts start-up if that fails. The real explorer rejects
a registration without a location, but a gateway must also start without network (development
explorer, air-gapped tests), so: `--location` wins; otherwise geoip with a short timeout; if
that fails, a clear warning and the "Unknown" location upstream uses for missing keys (the
registration keeps being retried, and its error says to pass `--location`). A loopback explorer
means a development set-up: geoip is not asked at all then.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp

__all__ = [
    "DEFAULT_GEOIP",
    "Location",
    "LocationError",
    "fetch_location",
    "is_loopback_url",
    "parse_location",
    "resolve_location",
]

log = logging.getLogger(__name__)

DEFAULT_GEOIP = "https://geoip.grid.tf"


@dataclass(frozen=True)
class Location:
    """The registration's `location` (fields in the explorer's key order)."""

    city: str = "Unknown"
    country: str = "Unknown"
    continent: str = "Unknown"
    latitude: float = 0.0
    longitude: float = 0.0

    @property
    def is_zero(self) -> bool:
        return self.latitude == 0 and self.longitude == 0


UNKNOWN = Location()


class LocationError(ValueError):
    """`--location` text that cannot be used."""


def parse_location(text: str) -> Location:
    """`lat,lon[,city[,country[,continent]]]`, e.g. `51.05,3.72,Ghent,Belgium,Europe`."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) < 2 or len(parts) > 5:
        raise LocationError(
            f"--location {text!r}: expected 'lat,lon[,city[,country[,continent]]]', "
            "e.g. '51.05,3.72,Ghent,Belgium,Europe'"
        )
    try:
        lat, lon = float(parts[0]), float(parts[1])
    except ValueError:
        raise LocationError(
            f"--location {text!r}: latitude and longitude must be numbers"
        ) from None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise LocationError(
            f"--location {text!r}: latitude must be in -90..90, longitude in -180..180"
        )
    if lat == 0 and lon == 0:
        raise LocationError(f"--location {text!r}: 0,0 is what the explorer treats as no location")
    names = [*parts[2:], "Unknown", "Unknown", "Unknown"][:3]
    city, country, continent = (n or "Unknown" for n in names)
    return Location(city=city, country=country, continent=continent, latitude=lat, longitude=lon)


def is_loopback_url(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _number(doc: dict[str, object], key: str) -> float:
    value = doc.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    return float(value)


def _text(doc: dict[str, object], key: str) -> str:
    value = doc.get(key)
    return value if isinstance(value, str) and value else "Unknown"


async def fetch_location(url: str = DEFAULT_GEOIP, *, request_timeout: float = 3.0) -> Location:
    """Ask the geoip service (keys of ZOS `geoip.Fetch`); raises on any failure."""
    timeout = aiohttp.ClientTimeout(total=request_timeout)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as response:
        if response.status != 200:
            raise RuntimeError(f"geoip {url} answered HTTP {response.status}")
        body = await response.read()
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise RuntimeError(f"geoip {url} answered invalid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise RuntimeError(f"geoip {url} answered a JSON {type(doc).__name__}, not an object")
    return Location(
        city=_text(doc, "city"),
        country=_text(doc, "country_name"),
        continent=_text(doc, "continent"),
        latitude=_number(doc, "latitude"),
        longitude=_number(doc, "longitude"),
    )


async def resolve_location(
    given: Location | None, explorer_url: str, geoip_url: str = DEFAULT_GEOIP
) -> Location:
    """The registration's location; never raises (see the module docstring)."""
    if given is not None:
        return given
    if is_loopback_url(explorer_url):
        log.info("explorer %s is local: not asking geoip; location 'Unknown'", explorer_url)
        return UNKNOWN
    try:
        location = await fetch_location(geoip_url)
    except (aiohttp.ClientError, TimeoutError, RuntimeError, OSError) as exc:
        log.warning(
            "cannot get this gateway's location from %s (%s); registering with an unknown "
            "location, which the public explorer may refuse: pass --location "
            "'lat,lon[,city,country,continent]'",
            geoip_url,
            exc or type(exc).__name__,
        )
        return UNKNOWN
    log.info(
        "location from geoip: %s, %s (%s, %s)",
        location.city,
        location.country,
        location.latitude,
        location.longitude,
    )
    return location
