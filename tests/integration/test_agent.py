"""The agent as a program (`python -m tfgateway`) against a real redis-server and the
development explorer (also a separate process) over HTTP: every workload type end to end,
explorer outages, redis data loss, SIGTERM and kill -9 restart safety (issue 2 points 2, 4, 5, 8;
issue 8 points 1-3 in small)."""

from __future__ import annotations

import asyncio
import base64
import json
import random
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.support.agent_process import AgentProcess
from tests.support.devexplorer import DevExplorerProcess, wait_until_async
from tests.support.http import AsyncHTTP
from tests.support.processes import free_port
from tests.support.redis_server import RedisServer
from tests.support.workloads import (
    COUNTER_OF,
    MANAGED,
    expected_counts,
    in_redis,
    mixed_workloads,
    reported_counts,
)
from tests.support.world_dns import WorldDNS
from tfgateway.engine.cache import RESERVATIONS_KEY
from tfgateway.engine.outbox import OUTBOX_KEY
from tfgateway.node.identity import load_or_create
from tfgateway_devexplorer.admin_client import AdminClient, WorkloadInfo
from tfgateway_devexplorer.user_crypto import (
    UserKeys,
    encrypt_secret,
    reverse_proxy_plaintext,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def explorer(tmp_path: Path) -> Iterator[DevExplorerProcess]:
    proc = DevExplorerProcess(log_file=tmp_path / "explorer.log", state=tmp_path / "state.json")
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
async def admin(explorer: DevExplorerProcess) -> AsyncIterator[AdminClient]:
    async with AdminClient(explorer.url) as client:
        yield client


@pytest.fixture
def agent(
    tmp_path: Path, explorer: DevExplorerProcess, redis_url: str, world_dns: WorldDNS
) -> Iterator[AgentProcess]:
    proc = AgentProcess(
        seed=tmp_path / "identity.seed",
        explorer_url=explorer.url,
        redis_url=redis_url,
        log_file=tmp_path / "agent.log",
        proof_resolver=world_dns.resolver,
    )
    load_or_create(proc.seed)
    yield proc
    proc.stop()


def node_of(agent: AgentProcess) -> str:
    return load_or_create(agent.seed).node_id


async def registered(admin: AdminClient, node: str) -> None:
    async def check() -> bool:
        return node in (await admin.state())["gateways"]

    await wait_until_async(check, timeout=20, what="registration")


async def start_registered(agent: AgentProcess, admin: AdminClient) -> str:
    """Starts the agent and waits for its registration; returns its node id."""
    node = node_of(agent)
    agent.start()
    await registered(admin, node)
    return node


async def outbox_drained(r: redis.Redis, timeout: float, what: str) -> None:  # noqa: ASYNC109
    """Waits until every result, delete and report is acknowledged (the outbox is empty)."""

    async def check() -> bool:
        return r.hlen(OUTBOX_KEY) == 0

    await wait_until_async(check, timeout=timeout, what=what)


def service(r: redis.Redis, domain: str) -> dict[str, Any]:
    raw = r.get(f"/tcprouter/service/{domain}")
    assert raw is not None, f"no tcprouter service for {domain}"
    outer = json.loads(raw)
    inner: dict[str, Any] = json.loads(base64.b64decode(outer["Value"]))
    return inner


async def all_answered(
    admin: AdminClient, workloads: list[WorkloadInfo], agent: AgentProcess, deadline: float = 60
) -> None:
    ids = {w.id for w in workloads}

    async def check() -> bool:
        assert agent.alive(), agent.log()[-3000:]
        results = (await admin.state())["results"]
        return all(results[str(i)]["workload_id"] for i in ids)

    await wait_until_async(check, timeout=deadline, interval=0.1, what="every result")


@dataclass
class EveryType:
    """One workload of each type (and of each way to be refused) of user `tid`."""

    tid: int
    sub: WorkloadInfo
    dele: WorkloadInfo
    prx: WorkloadInfo
    rev: WorkloadInfo
    bad: WorkloadInfo
    short: WorkloadInfo
    alien: WorkloadInfo
    no4to6: WorkloadInfo

    @property
    def served(self) -> tuple[WorkloadInfo, ...]:
        return (self.sub, self.dele, self.prx, self.rev)

    @property
    def all(self) -> list[WorkloadInfo]:
        return [*self.served, self.bad, self.short, self.alien, self.no4to6]


async def publish_every_type(admin: AdminClient, node: str, world_dns: WorldDNS) -> EveryType:
    user = UserKeys(b"1" * 32)
    tid = (await admin.create_user(user.public_key.hex())).id
    world_dns.publish_proof("customer.example.org", tid)  # the domain's owner proves control
    secret = encrypt_secret(reverse_proxy_plaintext(tid, "s3cret"), node, version=2, user=user)
    return EveryType(
        tid=tid,
        sub=await admin.subdomain(node, tid, f"app.{MANAGED}", ["185.69.166.1", "2a02:1802:5e::1"]),
        dele=await admin.delegate(node, tid, "customer.example.org"),
        prx=await admin.proxy(node, tid, f"web.{MANAGED}", "185.69.166.2", 80, 443),
        rev=await admin.reverse_proxy(node, tid, f"tunnel.{MANAGED}", secret, version=2),
        bad=await admin.proxy(node, tid, f"evil.{MANAGED}", "127.0.0.1", 6379),
        # F2: a version >= 1 secret shorter than a nonce crashed the Go daemon in a loop
        short=await admin.reverse_proxy(node, tid, f"short.{MANAGED}", "00ff", version=2),
        alien=await admin.create_workload(
            "subdomain", node, tid, domain=f"x.{MANAGED}", overrides={"workload_type": 99}
        ),
        # 4to6 is off (no --endpoint): a clear error result, as upstream's missing provisioner
        no4to6=await admin.gateway4to6(node, tid, base64.b64encode(b"k" * 32).decode()),
    )


async def assert_served_ok_and_refusals_clear(admin: AdminClient, w: EveryType) -> None:
    state = await admin.state()
    refused = {
        p["gwid"]: p["result"]["message"]
        for p in state["result_puts"]
        if p.get("result", {}).get("state") == 0
    }
    assert refused[w.short.gwid].startswith("failed to decrypt secret"), refused
    assert refused[w.alien.gwid] == "type of reservation not supported: UNKNOWN", refused
    assert refused[w.no4to6.gwid] == "type of reservation not supported: gateway4to6", refused
    results = state["results"]
    for x in w.served:
        assert results[str(x.id)]["state"] == 1, (x.type, results[str(x.id)])
    (refusal,) = [p for p in state["result_puts"] if p["gwid"] == w.bad.gwid]
    assert refusal["result"]["state"] == 0
    assert "127.0.0.1" in refusal["result"]["message"]
    await admin.wait_for_deleted(w.bad.id)


def assert_redis_as_the_data_plane_reads_it(r: redis.Redis, tid: int) -> None:
    assert r.hget("managed_domains", f"app.{MANAGED}") == str(tid).encode()
    assert json.loads(r.hget(f"{MANAGED}.", "app"))["a"][0]["ip"] == "185.69.166.1"  # type: ignore[arg-type]
    assert json.loads(r.hget("zone", "customer.example.org"))["Owner"] == str(tid)  # type: ignore[arg-type]
    assert service(r, f"web.{MANAGED}")["addr"] == "185.69.166.2"
    assert service(r, f"tunnel.{MANAGED}")["clientsecret"] == f"{tid}:s3cret"
    assert not r.exists(f"/tcprouter/service/evil.{MANAGED}")
    assert r.hlen(RESERVATIONS_KEY) == 4


async def status_output(redis_url: str) -> str:
    """What `python -m tfgateway status` prints (it must exit 0)."""
    status = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tfgateway", "status", "--redis", redis_url,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(60):
        out = (await status.communicate())[0].decode()
    assert status.returncode == 0
    return out


async def decommission_everything(admin: AdminClient, r: redis.Redis, w: EveryType) -> None:
    for x in w.served:
        await admin.delete_workload(x.id)
    for x in w.served:
        await admin.wait_for_deleted(x.id, timeout=30)
    assert r.hlen(RESERVATIONS_KEY) == 0
    assert not r.hexists("managed_domains", f"app.{MANAGED}")
    assert not r.exists(f"/tcprouter/service/web.{MANAGED}")
    assert not r.exists(f"/tcprouter/service/tunnel.{MANAGED}")
    assert not r.hexists("zone", "customer.example.org")


async def test_every_type_end_to_end(
    agent: AgentProcess, admin: AdminClient, redis_db: redis.Redis, world_dns: WorldDNS
) -> None:
    node = await start_registered(agent, admin)
    w = await publish_every_type(admin, node, world_dns)
    await all_answered(admin, w.all, agent)
    await assert_served_ok_and_refusals_clear(admin, w)
    assert_redis_as_the_data_plane_reads_it(redis_db, w.tid)
    # stats after the jobs: the counters the explorer shows
    one_of_each = expected_counts({"type": kind} for kind in COUNTER_OF)

    async def stats_right() -> bool:
        return reported_counts(await admin.state()) == one_of_each

    await wait_until_async(stats_right, timeout=20, what="stats")
    assert (await admin.state())["uptime_posts"], "uptime sent at start"
    out = await status_output(agent.redis_url)  # the status subcommand sees the same
    assert f"app.{MANAGED}" in out
    assert "customer.example.org" in out
    assert "4 workloads served" in out
    await decommission_everything(admin, redis_db, w)
    # SIGTERM: clean stop
    assert agent.terminate() == 0
    log = agent.log()
    assert "job id=" in log
    assert "outcome=ok" in log
    assert "duration_ms=" in log
    assert "stopped" in log


async def test_explorer_down_then_back_results_delivered(
    agent: AgentProcess, admin: AdminClient, redis_db: redis.Redis
) -> None:
    node = await start_registered(agent, admin)
    # Feedback endpoints down: the workloads are served, their results wait in the outbox.
    await admin.set_faults(endpoints=["result", "delete", "reserved_resources"], down=True)
    ws = [await admin.subdomain(node, 42, f"s{i}.{MANAGED}", ["185.69.166.1"]) for i in range(5)]

    async def cached() -> bool:
        return bool(redis_db.hlen(RESERVATIONS_KEY) == 5 and redis_db.hlen(OUTBOX_KEY) >= 5)

    await wait_until_async(cached, timeout=20, what="provisioned with results queued")
    results = (await admin.state())["results"]
    assert not any(results[str(w.id)]["workload_id"] for w in ws)
    # Everything down (polls fail too) for a while: the agent keeps running.
    await admin.set_faults(down=True)

    async def refused_a_while() -> bool:
        return bool(sum((await admin.faults())["applied"].values()) >= 5)

    await wait_until_async(refused_a_while, timeout=30, what="requests refused while down")
    await admin.clear_faults()
    assert agent.alive()
    await all_answered(admin, ws, agent, deadline=30)
    for w in ws:
        assert (await admin.get_workload(w.id)).state == 1

    await outbox_drained(redis_db, timeout=20, what="outbox drained")


async def test_a_backlog_of_results_goes_out_through_the_sender_process(
    agent: AgentProcess, admin: AdminClient, redis_db: redis.Redis
) -> None:
    """300 results held back by the explorer: a backlog, so a child process sends them
    (explorer/sender.py); every one is acknowledged and the outbox drains."""
    node = await start_registered(agent, admin)
    await admin.set_faults(endpoints=["result"], down=True)
    specs: list[dict[str, Any]] = [
        {"node_id": node, "customer_tid": 42, "type": "subdomain",
         "domain": f"b{i}.{MANAGED}", "ips": ["185.69.166.1"]}
        for i in range(300)
    ]  # fmt: skip
    ws = await admin.create_workloads(specs)

    async def held_back() -> bool:
        return bool(redis_db.hlen(OUTBOX_KEY) >= 300)

    await wait_until_async(held_back, timeout=60, what="300 results waiting in the outbox")
    await admin.clear_faults()
    await all_answered(admin, ws, agent, deadline=60)
    for w in ws[::50]:
        assert (await admin.get_workload(w.id)).state == 1
    await outbox_drained(redis_db, timeout=30, what="outbox drained")
    assert "result PUTs of a backlog" in agent.log()


async def test_redis_flushall_restores_without_new_results(
    agent: AgentProcess, admin: AdminClient, redis_db: redis.Redis
) -> None:
    node = await start_registered(agent, admin)
    sub = await admin.subdomain(node, 42, f"app.{MANAGED}", ["185.69.166.1"])
    prx = await admin.proxy(node, 42, f"web.{MANAGED}", "185.69.166.2", 80)
    await all_answered(admin, [sub, prx], agent)

    await outbox_drained(redis_db, timeout=20, what="outbox drained")
    puts = len((await admin.state())["result_puts"])
    redis_db.flushall()

    async def restored() -> bool:
        return bool(
            redis_db.hget("managed_domains", f"app.{MANAGED}") == b"42"
            and redis_db.exists(f"/tcprouter/service/web.{MANAGED}") == 1
            and redis_db.hlen(RESERVATIONS_KEY) == 2
            and redis_db.hexists(f"{MANAGED}.", "@")
        )

    await wait_until_async(restored, timeout=20, what="DNS and proxy entries restored")
    # a later poll replays from 0: acknowledged results are not sent again
    polls = (await admin.state())["polls"]

    async def polled_again() -> bool:
        return bool((await admin.state())["polls"] != polls)

    await wait_until_async(polled_again, timeout=10, what="another poll")
    assert len((await admin.state())["result_puts"]) == puts
    assert agent.alive()


async def kill_mid_provisioning(
    agent: AgentProcess, admin: AdminClient, r: redis.Redis, specs: list[dict[str, Any]]
) -> list[WorkloadInfo]:
    """Publishes `specs`, kills the agent once 40 are provisioned; after the restart every one
    is live exactly once (one cache entry each, applied, one ok result each)."""
    infos = await admin.create_workloads(specs)

    async def mid_way() -> bool:
        return bool(r.hlen(RESERVATIONS_KEY) >= 40)

    await wait_until_async(mid_way, timeout=60, interval=0.005, what="40 provisioned")
    agent.kill9()
    assert r.hlen(RESERVATIONS_KEY) < len(specs), "kill came too late to test anything"
    agent.start()
    await all_answered(admin, infos, agent, deadline=90)
    state = await admin.state()
    for w in infos:
        assert state["results"][str(w.id)]["state"] == 1, state["results"][str(w.id)]
    assert r.hlen(RESERVATIONS_KEY) == len(specs)
    for spec in specs:
        assert in_redis(r, spec) == "live", spec
    oks = [p for p in state["result_puts"] if p.get("result", {}).get("state") == 1]
    assert {p["gwid"] for p in oks} == {w.gwid for w in infos}
    return infos


async def kill_mid_deleting(
    agent: AgentProcess, admin: AdminClient, r: redis.Redis, doomed: list[WorkloadInfo]
) -> None:
    """Deletes `doomed` in one burst, kills the agent once 10 are gone; after the restart every
    delete is done."""
    live_before = r.hlen(RESERVATIONS_KEY)
    await admin.set_faults(endpoints=["poll"], down=True)  # the deletes arrive as one burst
    for w in doomed:
        await admin.delete_workload(w.id)
    await admin.clear_faults()

    async def some_deleted() -> bool:
        return bool(r.hlen(RESERVATIONS_KEY) <= live_before - 10)

    await wait_until_async(some_deleted, timeout=60, interval=0.005, what="10 deleted")
    agent.kill9()
    assert r.hlen(RESERVATIONS_KEY) > live_before - len(doomed), "kill came too late"
    agent.start()

    async def all_deleted() -> bool:
        assert agent.alive(), agent.log()[-3000:]
        nas = (await admin.state())["next_actions"]
        return all(nas[str(w.id)] == 6 for w in doomed)

    await wait_until_async(all_deleted, timeout=90, interval=0.1, what="every delete")


async def test_kill_9_mid_burst_every_workload_live_once(
    agent: AgentProcess, admin: AdminClient, redis_db: redis.Redis, world_dns: WorldDNS
) -> None:
    """200 mixed workloads, kill -9 mid-way through provisioning and again mid-way through
    deleting a quarter of them; after each restart everything converges."""
    node = await start_registered(agent, admin)
    specs = mixed_workloads(node, 200, random.Random(2), users=5)
    world_dns.publish_delegation_proofs(specs)
    infos = await kill_mid_provisioning(agent, admin, redis_db, specs)
    doomed = infos[:50]
    await kill_mid_deleting(agent, admin, redis_db, doomed)
    assert redis_db.hlen(RESERVATIONS_KEY) == 150
    for spec, w in zip(specs, infos, strict=True):
        assert in_redis(redis_db, spec) == ("gone" if w in doomed else "live"), spec

    async def counters_right() -> bool:
        return reported_counts(await admin.state()) == expected_counts(specs[50:])

    await wait_until_async(counters_right, timeout=30, what="counters")

    await outbox_drained(redis_db, timeout=30, what="every result acknowledged")


async def test_metrics_and_uptime(
    tmp_path: Path, agent: AgentProcess, admin: AdminClient, redis_db: redis.Redis
) -> None:
    port = free_port()
    agent.extra += ["--metrics-listen", f"127.0.0.1:{port}", "--uptime-interval", "0.3"]
    node = await start_registered(agent, admin)
    sub = await admin.subdomain(node, 42, f"app.{MANAGED}", ["185.69.166.1"])
    await all_answered(admin, [sub], agent)
    await admin.set_faults(endpoints=["poll"], error_requests=1)

    async def scraped() -> bool:
        async with AsyncHTTP(timeout=5) as http:
            text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
        return (
            'tfgateway_workloads{source="explorer",state="live",type="subdomain"} 1.0' in text
            and 'tfgateway_provision_seconds_count{action="provision",source="explorer",'
            'type="subdomain"} 1.0'
            in text
            and 'tfgateway_jobs_total{outcome="ok",source="explorer",type="subdomain"} 1.0' in text
            and 'tfgateway_explorer_errors_total{call="poll"}' in text
            and "tfgateway_outbox_depth 0.0" in text
        )

    await wait_until_async(scraped, timeout=20, what="metrics")

    async def uptimes() -> bool:
        return len((await admin.state())["uptime_posts"]) >= 3

    await wait_until_async(uptimes, timeout=20, what="repeated uptime reports")


@asynccontextmanager
async def agent_on_persistent_redis(
    tmp_path: Path, explorer: DevExplorerProcess, admin: AdminClient, poll_interval: float = 0.1
) -> AsyncIterator[tuple[RedisServer, AgentProcess, str]]:
    """A registered agent on its own redis with the appliance's persistence (both stopped at
    the end): (redis, agent, node id)."""
    server = RedisServer(tmp_path / "redis", persistent=True)
    server.start()
    try:
        agent = AgentProcess(
            seed=tmp_path / "identity.seed",
            explorer_url=explorer.url,
            redis_url=server.url,
            log_file=tmp_path / "agent.log",
            poll_interval=poll_interval,
        )
        node = load_or_create(agent.seed).node_id
        agent.start()
        try:
            await registered(admin, node)
            yield server, agent, node
        finally:
            agent.stop()
    finally:
        server.stop()


async def test_redis_restart_with_persistence(
    tmp_path: Path, explorer: DevExplorerProcess, admin: AdminClient
) -> None:
    async with agent_on_persistent_redis(tmp_path, explorer, admin) as (server, agent, node):
        first = await admin.subdomain(node, 42, f"a.{MANAGED}", ["185.69.166.1"])
        await all_answered(admin, [first], agent)
        server.save()
        server.stop()
        # While redis is down a new workload arrives: it must wait, not be refused.
        second = await admin.subdomain(node, 42, f"b.{MANAGED}", ["185.69.166.2"])
        polls = (await admin.state())["polls"][node]["count"]

        async def tried() -> bool:
            return bool((await admin.state())["polls"][node]["count"] >= polls + 3)

        await wait_until_async(tried, timeout=20, what="polls while redis is down")
        assert agent.alive()
        assert not (await admin.get_workload(second.id)).answered
        server.start()
        await all_answered(admin, [second], agent, deadline=30)
        assert (await admin.get_workload(second.id)).state == 1
        r = server.client()
        assert r.hget("managed_domains", f"a.{MANAGED}") == b"42"
        assert r.hget("managed_domains", f"b.{MANAGED}") == b"42"
        assert agent.alive()
        puts = [p["gwid"] for p in (await admin.state())["result_puts"]]
        assert sorted(puts) == sorted([first.gwid, second.gwid])  # nothing sent twice


async def test_redis_coming_back_wakes_the_engine(
    tmp_path: Path, explorer: DevExplorerProcess, admin: AdminClient
) -> None:
    """A workload that arrived while redis was down is applied as soon as redis is back, not
    after the engine's back-off or poll interval (60 s here, longer than the deadline)."""
    async with agent_on_persistent_redis(tmp_path, explorer, admin, poll_interval=60) as (
        server,
        agent,
        node,
    ):
        await wait_until_async(
            lambda: _log_has(agent, "reconcile: 0 live"), timeout=20, what="agent ready"
        )
        server.stop()
        await wait_until_async(
            lambda: _log_has(agent, "redis unreachable"), timeout=20, what="redis noticed"
        )
        late = await admin.subdomain(node, 42, f"late.{MANAGED}", ["185.69.166.3"])
        server.start()
        await all_answered(admin, [late], agent, deadline=20)
        assert (await admin.get_workload(late.id)).state == 1


async def _log_has(agent: AgentProcess, text: str) -> bool:
    return text in agent.log()
