"""One whole gateway (namespaces, redis, CoreDNS, router, explorer, agent) per test module.

Starting it takes a few seconds, so tests of one module share it and use names of their own.
The programs are the gateway's own: CoreDNS with the gatewaydns plugin and the tfrouter router.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.gateway import Gateway


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with Gateway(tmp_path_factory.mktemp("gateway")) as gw:
        yield gw
