"""Names belong to whoever can prove them (issue 13 point 5), seen from outside: the agent looks
proofs up in the world's DNS (client namespace), the router and CoreDNS serve or refuse.

Rechecks run every second here (`--proof-recheck-interval 1`); the behaviour is the same as
with the default hour.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.gateway import (
    BACKEND_ADDR,
    BACKEND_HTTP_PORT,
    BACKEND_TLS_PORT,
    NATC_ADDR,
    NATC_HTTP_PORT,
    REDIS_PORT,
    Gateway,
    User,
    wait_for,
)
from tests.support.processes import agent_program

FAST = ("--proof-recheck-interval", "1", "--reconcile-interval", "1", "--max-backoff", "1")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with Gateway(tmp_path_factory.mktemp("gateway"), agent_extra_args=FAST) as gw:
        yield gw


def proxy(gateway: Gateway, user: User, name: str) -> int:
    return gateway.create(
        "proxy", user, domain=name, addr=BACKEND_ADDR, port=BACKEND_HTTP_PORT,
        port_tls=BACKEND_TLS_PORT,
    )  # fmt: skip


def served_by_backend(gateway: Gateway, name: str) -> bool:
    return gateway.http(name).headers.get("x-site") == "backend"


def run_status(gateway: Gateway, *args: str) -> str:
    """`tfgateway status` as the operator runs it on the gateway."""
    return gateway.gw.run(agent_program("tfgateway"), "status", "--redis",
                          f"tcp://127.0.0.1:{REDIS_PORT}", "--redis-password-file",
                          str(gateway.redis_password_file), *args)  # fmt: skip


def status(gateway: Gateway) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(run_status(gateway, "--json"))
    return doc


def proof_state(gateway: Gateway, name: str) -> dict[str, Any] | None:
    return next((p for p in status(gateway)["name_proofs"] if p["name"] == name), None)


def test_squatting_someone_elses_name_is_refused_until_its_owner_proves_it(
    gateway: Gateway, label: str
) -> None:
    """Issue 13: anyone creating a proxy for www.someone-else.com before its owner points
    DNS at the gateway received that traffic. Now the squatter gets a clear error result and
    no route; the owner, once their TXT record is published, gets the name."""
    site = f"{label}.example"
    name = f"www.{site}"
    gateway.world.add_zone(site)  # the name exists out there, hosted elsewhere
    squatter, owner = gateway.add_user(), gateway.add_user()

    for workload in (
        proxy(gateway, squatter, name),
        gateway.create("reverse_proxy", squatter, domain=name,
                       secret=gateway.encrypt_secret(squatter, f"{squatter.id}:x")),
        gateway.create("domain_delegate", squatter, domain=site),  # the zone around it
    ):  # fmt: skip
        result = gateway.wait_result(workload)
        assert result.state == "error", result
        assert "no proof of control" in result.message
        assert f"_tfgateway.{name}" in result.message or f"_tfgateway.{site}" in result.message
        assert f"user id {squatter.id}" in result.message
    assert gateway.refused(name)
    assert gateway.refused(name, tls=True)

    gateway.publish_proof(name, owner)
    assert gateway.wait_result(proxy(gateway, owner, name)).state == "ok"
    wait_for(lambda: served_by_backend(gateway, name), what=f"{name} served for its owner")
    # The squatter still cannot take it, nor shadow it with a tunnel.
    late = gateway.create("proxy", squatter, domain=name, addr=NATC_ADDR, port=NATC_HTTP_PORT)
    assert gateway.wait_result(late).state == "error"
    assert served_by_backend(gateway, name)


def test_a_proof_that_disappears_suspends_the_route_until_it_is_back(
    gateway: Gateway, label: str
) -> None:
    name = f"www.{label}.example"
    owner = gateway.add_user()
    gateway.publish_proof(name, owner)
    pid = proxy(gateway, owner, name)
    assert gateway.wait_result(pid).state == "ok"
    wait_for(lambda: served_by_backend(gateway, name), what="served")

    gateway.world.withdraw_proof(name)  # the domain changed hands, or its owner gave up
    wait_for(lambda: gateway.refused(name), timeout=20, what="route suspended")
    record = proof_state(gateway, name)
    assert record is not None
    assert record["state"] == "suspended"
    assert f"no TXT record at _tfgateway.{name}" in record["reason"]
    table = run_status(gateway)
    assert f"SUSPENDED (not served) proxy {name} of user {owner.id}" in table
    # The workload itself stays live: no error result, no delete.
    assert [r.state for r in gateway.results_put(pid)] == ["ok"]

    gateway.publish_proof(name, owner)
    wait_for(lambda: served_by_backend(gateway, name), timeout=20, what="route restored")
    restored = proof_state(gateway, name)
    assert restored is not None
    assert restored["state"] == "proven"


def test_delegations_need_proof_never_cover_a_public_suffix_or_others_names(
    gateway: Gateway, label: str
) -> None:
    """Whoever first delegated a broad name owned every name under it (issue 13)."""
    zone = f"{label}.example"
    first, owner = gateway.add_user(), gateway.add_user()
    gateway.publish_proof(f"shop.{zone}", first)
    assert gateway.wait_result(proxy(gateway, first, f"shop.{zone}")).state == "ok"

    gateway.publish_proof(zone, owner)
    around = gateway.wait_result(gateway.create("domain_delegate", owner, domain=zone))
    assert around.state == "error"
    assert f"shop.{zone} inside it is served by another user's proxy" in around.message
    wait_for(lambda: served_by_backend(gateway, f"shop.{zone}"), what="first user kept")

    for suffix in ("co.uk", "github.io"):
        gateway.publish_proof(suffix, owner)  # even its "owner" cannot
        refused = gateway.wait_result(gateway.create("domain_delegate", owner, domain=suffix))
        assert refused.state == "error"
        assert "public suffix" in refused.message

    # A proven zone: served, and its proof answered by the gateway itself from now on.
    mine = f"mine-{zone}"
    gateway.publish_proof(mine, owner)
    assert gateway.wait_result(gateway.create("domain_delegate", owner, domain=mine)).state == "ok"

    def proof_from_gateway() -> set[str]:
        answer = gateway.dns(f"_tfgateway.{mine}", "TXT")
        return {rd.to_text().strip('"') for rs in answer.answer for rd in rs}

    wait_for(lambda: proof_from_gateway() == {str(owner.id)}, what="the gateway's own proof")
    # Names in the user's own proven zone need no proof of their own.
    assert gateway.wait_result(proxy(gateway, owner, f"www.{mine}")).state == "ok"


@pytest.mark.timeout(300)  # two agent starts and a 45 s grace, on a loaded machine
def test_upgrade_keeps_unproven_live_names_until_their_first_check_fails(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Explorer-mode compatibility (point 5): a v2 gateway (first come, first served) switched
    to ours keeps every live workload; names without proof are grandfathered, logged, and
    checked after --proof-grace."""
    with Gateway(
        tmp_path_factory.mktemp("upgrade"), agent_extra_args=(*FAST, "--name-proof", "first-come")
    ) as gw:
        user = gw.add_user()
        site = "legacy.example"
        gw.world.add_zone(site)
        name = f"www.{site}"
        assert gw.wait_result(proxy(gw, user, name)).state == "ok"  # no proof asked
        wait_for(lambda: served_by_backend(gw, name), what="served first-come")

        gw.agent_extra_args = (*FAST, "--proof-grace", "45")
        gw.restart_agent()  # proofs required from now on
        wait_for(lambda: proof_state(gw, name) is not None, what="grandfathered record")
        record = proof_state(gw, name)
        assert record is not None
        assert record["state"] == "grandfathered"
        assert served_by_backend(gw, name)
        log = gw.procs["agent"].log.read_text()
        assert "enforced for the first time" in log
        assert f"proxy {name} of user {user.id} grandfathered" in log

        wait_for(lambda: gw.refused(name), timeout=120, what="suspended after the grace")
        after = proof_state(gw, name)
        assert after is not None
        assert after["state"] == "suspended"
        assert "suspended (was grandfathered)" in gw.procs["agent"].log.read_text()
