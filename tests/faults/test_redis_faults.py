"""redis loses the data (FLUSHALL; a restart with an empty data directory) under a whole gateway
(issue 8 point 2): the agent restores every live workload's DNS and proxy entries by reconciling
what should exist against what does (level-triggered: no new explorer event is involved), the
real coredns-tfgw and tfrouter serve them again within a bounded time, and the explorer sees no
new result and no delete. The restart that keeps the data is in tests/e2e and
tests/integration/test_agent.py.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable

import dns.rcode
import pytest

from tests.support.gateway import (
    BACKEND_ADDR,
    BACKEND_HTTP_PORT,
    BACKEND_TLS_PORT,
    GW_CLIENT_ADDR,
    MANAGED_DOMAIN,
    Gateway,
    wait_for,
)

pytestmark = pytest.mark.integration

SITES = 12
ZONES = 4
RESTORE_BOUND = 20.0  # seconds; the agent reconciles every second here (conftest)


@pytest.fixture(scope="module")
def live(gateway: Gateway) -> list[str]:
    """SITES names with a subdomain and a proxy each, ZONES delegated zones, three users."""
    users = [gateway.add_user() for _ in range(3)]
    ids = []
    names = []
    for i in range(SITES):
        user = users[i % 3]
        name = f"live{i}.{MANAGED_DOMAIN}"
        ids.append(gateway.create("subdomain", user, domain=name, ips=[GW_CLIENT_ADDR]))
        ids.append(gateway.create("proxy", user, domain=name, addr=BACKEND_ADDR,
                                  port=BACKEND_HTTP_PORT, port_tls=BACKEND_TLS_PORT))  # fmt: skip
        names.append(name)
    for i in range(ZONES):
        gateway.publish_proof(f"zone{i}.example", users[i % 3])
        ids.append(gateway.create("domain_delegate", users[i % 3], domain=f"zone{i}.example"))
    for wid in ids:
        assert gateway.wait_result(wid).state == "ok"
    return names


def everything_served(gateway: Gateway, names: list[str]) -> Callable[[], bool]:
    def check() -> bool:
        gateway.check_alive()
        for name in names:
            answer = gateway.dns(name, "A")
            if {rd.to_text() for rs in answer.answer for rd in rs} != {GW_CLIENT_ADDR}:
                return False
            if gateway.http(name).headers.get("x-site") != "backend":
                return False
        return all(
            gateway.dns(f"zone{i}.example", "SOA").rcode() == dns.rcode.NOERROR
            for i in range(ZONES)
        )

    return check


def history_counts(gateway: Gateway) -> tuple[int, int]:
    state = gateway.call(gateway.admin.state())
    return len(state["result_puts"]), len(state["deletes"])


def in_redis(gateway: Gateway, names: list[str]) -> Callable[[], bool]:
    """Every entry CoreDNS and the router read is back in redis."""

    def check() -> bool:
        gateway.check_alive()
        services = set(gateway.redis_keys("/tcprouter/service/*"))
        managed = set(gateway.redis_cli("--raw", "HKEYS",
                                     "managed_domains").split())  # fmt: skip
        owners = set(gateway.redis_cli("--raw", "HKEYS",
                                    f"{MANAGED_DOMAIN}.").split())  # fmt: skip
        zones = set(gateway.redis_cli("--raw", "HKEYS", "zone").split())
        return (
            {f"/tcprouter/service/{n}" for n in names} <= services
            and set(names) <= managed
            and {n.removesuffix(f".{MANAGED_DOMAIN}") for n in names} | {"@"} <= owners
            and {f"zone{i}.example" for i in range(ZONES)} <= zones
        )

    return check


def assert_restored(gateway: Gateway, names: list[str], lost_at: float, what: str) -> float:
    """redis restored within the bound, and the data plane serves it: also a CoreDNS and a
    router started afresh, which know only what redis holds."""
    wait_for(in_redis(gateway, names), timeout=RESTORE_BOUND + 10, what=what)
    took = time.monotonic() - lost_at
    assert took <= RESTORE_BOUND, f"{what} took {took:.1f}s"
    wait_for(everything_served(gateway, names), timeout=20, what=f"{what}: served")
    gateway.stop("coredns")
    gateway.stop("router")
    gateway.start_dns()
    gateway.start_router()
    wait_for(everything_served(gateway, names), timeout=20, what=f"{what}: served by new ones")
    return took


def test_flushall_is_restored_without_new_results(gateway: Gateway, live: list[str]) -> None:
    wait_for(everything_served(gateway, live), timeout=30, what="served before")
    before = history_counts(gateway)
    gateway.redis_cli("FLUSHALL")
    lost_at = time.monotonic()
    # The data plane notices (zones gone at its next resync at the latest) and the agent
    # re-applies everything from its own state, with no explorer involvement.
    # The data plane keeps serving from memory meanwhile.
    assert everything_served(gateway, live)()
    took = assert_restored(gateway, live, lost_at, "restored after FLUSHALL")
    # Polls go on; nothing new was reported to the explorer (no duplicate, no contradiction).
    wait_for(everything_served(gateway, live), timeout=10, what="still served")
    assert history_counts(gateway) == before
    print(f"\nFLUSHALL: {SITES} sites and {ZONES} zones served again after {took:.1f}s")


def test_restart_with_lost_data_is_restored(gateway: Gateway, live: list[str]) -> None:
    wait_for(everything_served(gateway, live), timeout=30, what="served before")
    before = history_counts(gateway)
    gateway.stop("redis")
    data = gateway.workdir / "redis"
    shutil.rmtree(data)
    data.mkdir()
    gateway.start_redis()
    lost_at = time.monotonic()
    took = assert_restored(gateway, live, lost_at, "restored after losing the data")
    assert history_counts(gateway) == before
    gateway.check_alive()
    print(f"\nredis restarted empty: everything served again after {took:.1f}s")


def test_redis_killed_while_bursts_are_applied(gateway: Gateway, live: list[str]) -> None:
    """redis dies (SIGKILL: the last second of its append-only file may be lost) right after
    bursts of workloads arrive, while the agent's concurrent jobs have pipelines in flight:
    a pipeline whose connection breaks fails every command it carried, though redis may
    have applied some of them. Everything still converges: every workload answered ok (an
    error result would be a transient failure blamed on the user), every name served."""
    users = [gateway.add_user() for _ in range(2)]
    names: list[str] = []
    ids: list[int] = []
    for burst in range(3):
        specs: list[dict[str, object]] = []
        for i in range(40):
            name = f"burst{burst}-{i}.{MANAGED_DOMAIN}"
            base = {"node_id": gateway.node_id, "customer_tid": users[i % 2].id, "domain": name}
            specs.append({**base, "type": "subdomain", "ips": [GW_CLIENT_ADDR]})
            specs.append({**base, "type": "proxy", "addr": BACKEND_ADDR,
                          "port": BACKEND_HTTP_PORT, "port_tls": BACKEND_TLS_PORT})  # fmt: skip
            names.append(name)
        ids += [info.id for info in gateway.call(gateway.admin.create_workloads(specs))]
        # Killed as soon as the agent has written the burst's first name: mid-burst.
        first = specs[0]["domain"]
        wait_for(lambda first=first: gateway.redis_cli(  # type: ignore[misc]
            "HEXISTS", "managed_domains", first).strip() == "1",
            timeout=20, interval=0.002, what="the burst under way")  # fmt: skip
        gateway.kill("redis")
        gateway.start_redis()
    states = {gateway.wait_result(wid, timeout=60).state for wid in ids}
    assert states == {"ok"}
    wait_for(everything_served(gateway, live + names), timeout=60, what="bursts served")
    gateway.check_alive()
    log = gateway.procs["agent"].log.read_text(errors="replace")
    print(f"\nredis killed 3 times mid-burst: {log.count('waits for redis')} jobs waited for it")
