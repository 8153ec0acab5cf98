"""The development explorer in process (same event loop) with a plain HTTP client on its
explorer API and its admin client."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.devexplorer import devexplorer_in_process
from tests.support.http import AsyncHTTP
from tfgateway_devexplorer.admin_client import AdminClient
from tfgateway_devexplorer.server import DevExplorer


@pytest.fixture
async def explorer() -> AsyncIterator[DevExplorer]:
    async with devexplorer_in_process() as server:
        yield server


@pytest.fixture
async def http(explorer: DevExplorer) -> AsyncIterator[AsyncHTTP]:
    """Requests to the explorer API (`/reservations/...`), as a gateway makes them."""
    async with AsyncHTTP(explorer.url, timeout=10) as client:
        yield client


@pytest.fixture
async def admin(explorer: DevExplorer) -> AsyncIterator[AdminClient]:
    async with AdminClient(explorer.admin_url) as client:
        yield client
