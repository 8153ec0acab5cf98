"""Fixtures of the engine tests: the development explorer in process (same event loop) and its
admin client; the agent's pieces are built on it by each module."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.agent_stack import dev_explorer
from tfgateway_devexplorer.admin_client import AdminClient
from tfgateway_devexplorer.server import DevExplorer


@pytest.fixture
async def dev() -> AsyncIterator[tuple[DevExplorer, AdminClient]]:
    """A started development explorer and its admin client (both closed at the end)."""
    async with dev_explorer() as pair:
        yield pair


@pytest.fixture
def admin(dev: tuple[DevExplorer, AdminClient]) -> AdminClient:
    return dev[1]


@pytest.fixture
def explorer_url(dev: tuple[DevExplorer, AdminClient]) -> str:
    """The agent's `--explorer` for the development explorer."""
    return dev[0].url
