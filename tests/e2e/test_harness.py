"""The namespace harness itself: isolation as documented, and nothing left behind after close."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.gateway import (
    BACKEND_ADDR,
    BACKEND_HTTP_PORT,
    GW_BACKEND_ADDR,
    GW_CLIENT_ADDR,
    GW_NATC_ADDR,
    HTTP_PORT,
    NATC_ADDR,
    NATC_HTTP_PORT,
    TUNNEL_PORT,
    Gateway,
)
from tests.support.netns import NETNS_DIR
from tests.support.processes import wait_until


def test_topology_isolation_and_clean_teardown(tmp_path: Path) -> None:
    gw = Gateway(tmp_path, with_agent=False)
    gw.start()
    try:
        names = [ns.name for ns in gw.netns.namespaces.values()]
        pids = [p.popen.pid for p in gw.procs.values()]
        # The NATed client reaches the gateway and nothing else; nobody reaches it.
        assert gw.natc.port_open(GW_NATC_ADDR, TUNNEL_PORT)
        assert not gw.natc.port_open(BACKEND_ADDR, BACKEND_HTTP_PORT)
        gw.start_natc_site()
        assert gw.natc.port_open(NATC_ADDR, NATC_HTTP_PORT)
        assert not gw.gw.port_open(NATC_ADDR, NATC_HTTP_PORT)
        assert not gw.client.port_open(NATC_ADDR, NATC_HTTP_PORT)
        # The client sees the gateway's public services, but the gateway does not forward.
        assert gw.client.port_open(GW_CLIENT_ADDR, HTTP_PORT)
        assert not gw.client.port_open(BACKEND_ADDR, BACKEND_HTTP_PORT)
        assert gw.gw.port_open(BACKEND_ADDR, BACKEND_HTTP_PORT)
        # The addresses exist only inside the namespaces: the host has none of them.
        host = subprocess.run(["ip", "addr"], capture_output=True, text=True, check=True).stdout
        host += subprocess.run(["ip", "route"], capture_output=True, text=True, check=True).stdout
        assert GW_BACKEND_ADDR.rsplit(".", 2)[0] not in host
        pids.append(gw.procs["natc-site"].popen.pid)
    finally:
        gw.close()
    for name in names:
        assert not (NETNS_DIR / name).exists(), f"namespace {name} left behind"
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists(), f"process {pid} left behind"


def test_start_failure_leaves_nothing_behind(tmp_path: Path) -> None:
    gw = Gateway(tmp_path, dns_program="no-such-coredns", with_agent=False)
    with pytest.raises(RuntimeError, match="no-such-coredns"):
        gw.start()
    assert not [
        p for p in NETNS_DIR.iterdir() if p.name.startswith(gw.netns.prefix + gw.netns.run_id)
    ]


def test_redis_keeps_its_data_across_restarts_like_the_appliance(tmp_path: Path) -> None:
    with Gateway(tmp_path, with_agent=False) as gw:
        gw.redis_cli("SET", "persisted", "yes")
        gw.restart_redis()
        assert gw.redis_cli("GET", "persisted").strip() == "yes"
        gw.redis_cli("SET", "after-kill", "yes")
        gw.redis_cli("BGREWRITEAOF")  # what everysec fsync gives within a second
        wait_until(
            lambda: (
                "aof_rewrite_in_progress:0" in gw.redis_cli("INFO", "persistence")
                and "aof_rewrite_scheduled:0" in gw.redis_cli("INFO", "persistence")
            ),
            what="AOF rewritten",
        )
        gw.kill("redis")
        gw.start_redis()
        assert gw.redis_cli("GET", "after-kill").strip() == "yes"
