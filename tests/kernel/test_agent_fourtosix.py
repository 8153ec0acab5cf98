"""The agent program (`python -m tfgateway`, in namespace gw) with the dev explorer and redis,
on the real kernel: a gateway4to6 workload becomes a working tunnel for an IPv4-only client that
knows nothing but the result data the explorer received; deleting it cuts the reach; the peer set
on the interface equals what the explorer says is live — after provision, F10 refusal, delete,
kill -9 with changes while down, and a clean stop (tunnels stay up while the agent is away).
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nacl.public
import pytest

from tests.kernel.topology import GW_V4, Topology, run, wg_dump
from tests.support.agent_process import AgentProcess
from tests.support.devexplorer import devexplorer_in_process, wait_until_async
from tfgateway.node.identity import load_or_create
from tfgateway.primitives import fourtosix
from tfgateway_devexplorer.admin_client import AdminClient, WorkloadInfo
from tfgateway_devexplorer.server import DevExplorer

IFACE = "wg-tfgateway"
ENDPOINT = f"{GW_V4}:51820"
START = 120.0  # seconds: Python starts slowly under software emulation


class Client:
    def __init__(self) -> None:
        key = nacl.public.PrivateKey.generate()
        self.private = base64.b64encode(bytes(key)).decode()
        self.public = base64.b64encode(bytes(key.public_key)).decode()


@pytest.fixture
def agent(tmp_path: Path, redis_url: str) -> Iterator[AgentProcess]:
    proc = AgentProcess(
        seed=tmp_path / "identity.seed",
        explorer_url="",
        redis_url=redis_url,
        log_file=tmp_path / "agent.log",
        extra=["--endpoint", ENDPOINT, "--wg-iface", IFACE],
    )
    load_or_create(proc.seed)
    yield proc
    proc.stop()


@pytest.fixture
def topo() -> Iterator[Topology]:
    t = Topology()
    t.up()
    t.nat66(IFACE)
    yield t
    t.down()
    run("ip", "link", "del", IFACE, check=False)


@pytest.fixture
async def explorer() -> AsyncIterator[DevExplorer]:
    async with devexplorer_in_process() as e:
        yield e


async def live_peers(admin: AdminClient, node: str) -> dict[str, tuple[str, int]]:
    """The peer set the explorer's view implies: every live, successfully answered gateway4to6
    workload's key with the address the gateway told its user (25 s keepalive)."""
    peers = {}
    for w in await admin.list_workloads(node_id=node, workload_type="gateway4to6"):
        if w.next_action in (4, 6) or w.state != 1:
            continue
        (ip,) = json.loads(w.result["data_json"])["ips"]
        peers[w.wire["public_key"]] = (f"{ip}/128", 25)
    return peers


async def answered(admin: AdminClient, agent: AgentProcess, w: WorkloadInfo) -> WorkloadInfo:
    async def check() -> bool:
        assert agent.alive(), agent.log()[-3000:]
        return (await admin.get_workload(w.id)).answered

    try:
        await wait_until_async(check, timeout=START, interval=0.2, what=f"result of {w.id}")
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}; agent log:\n{agent.log()[-3000:]}") from None
    return await admin.get_workload(w.id)


async def refusal(admin: AdminClient, w: WorkloadInfo) -> str:
    """The message of the error result the gateway PUT (it DELETEs refused workloads next)."""
    (put,) = [p for p in (await admin.state())["result_puts"] if p["gwid"] == w.gwid]
    assert put["result"]["state"] == 0, put
    message: str = put["result"]["message"]
    return message


async def converged(admin: AdminClient, node: str, what: str) -> None:
    async def check() -> bool:
        return wg_dump(IFACE) == await live_peers(admin, node)

    await wait_until_async(check, timeout=START, interval=0.3, what=what)


@pytest.mark.timeout(600)
async def test_agent_4to6_end_to_end(
    agent: AgentProcess, topo: Topology, explorer: DevExplorer, tmp_path: Path
) -> None:
    identity = load_or_create(agent.seed)
    node, seed = identity.node_id, identity.seed
    agent.explorer_url = explorer.url
    async with AdminClient(explorer.url) as admin:
        alice, bob = Client(), Client()
        agent.start()
        w1 = await answered(admin, agent, await admin.gateway4to6(node, 42, alice.public))
        assert w1.state == 1, w1.result
        data = w1.result["data_json"].encode()  # raw, as the gateway PUT it
        assert data == fourtosix.result_data(seed, "42", ENDPOINT)  # upstream bytes
        assert (
            wg_dump(IFACE)
            == await live_peers(admin, node)
            == {alice.public: (f"{fourtosix.user_address(seed, '42')}/128", 25)}
        )
        assert run("wg", "show", IFACE, "listen-port").strip() == "51820"

        # The client knows only what the explorer holds.
        topo.client_tunnel(data, alice.private, tmp_path)
        await wait_until_async(lambda: reaches(topo), timeout=30, interval=0.5, what="reach")

        # F10: the same user's second workload gets an error result; nothing changes.
        w2 = await answered(admin, agent, await admin.gateway4to6(node, 42, bob.public))
        assert "already has a live gateway4to6 workload" in await refusal(admin, w2)
        # A broken key gets an error result too.
        bad = await answered(admin, agent, await admin.gateway4to6(node, 43, "bm90IGEga2V5"))
        assert "32 bytes in standard base64" in await refusal(admin, bad)
        w3 = await answered(admin, agent, await admin.gateway4to6(node, 44, bob.public))
        await converged(admin, node, "peers = explorer after provisions")
        assert len(wg_dump(IFACE)) == 2

        # Delete: reach lost, peer gone.
        await admin.delete_workload(w1.id)
        await admin.wait_for_deleted(w1.id, timeout=START)
        await converged(admin, node, "peers = explorer after delete")
        assert alice.public not in wg_dump(IFACE)
        assert not await reaches(topo)

        # Alice comes back; then the agent crashes and, while it is down, bob's workload is
        # deleted and carol's created: the restarted agent converges.
        w4 = await answered(admin, agent, await admin.gateway4to6(node, 42, alice.public))
        assert w4.state == 1
        await wait_until_async(lambda: reaches(topo), timeout=30, interval=0.5, what="reach")
        agent.kill9()
        assert await reaches(topo)  # the kernel keeps forwarding without the agent
        await admin.delete_workload(w3.id)
        carol = Client()
        w5 = await admin.gateway4to6(node, 45, carol.public)
        agent.start()
        await admin.wait_for_deleted(w3.id, timeout=START)
        await answered(admin, agent, w5)
        await converged(admin, node, "peers = explorer after kill -9 and restart")
        assert set(wg_dump(IFACE)) == {alice.public, carol.public}

        # Clean stop: interface and peers stay, the tunnel works while the agent is away.
        assert agent.terminate(timeout=60) == 0, agent.log()[-3000:]
        assert set(wg_dump(IFACE)) == {alice.public, carol.public}
        assert await reaches(topo)
        # A peer nobody owns appears while the agent is away: the restart removes it.
        stray = Client().public
        run("wg", "set", IFACE, "peer", stray, "allowed-ips", "fd00::99/128")
        agent.start()
        await converged(admin, node, "peers = explorer after clean restart")
        assert stray not in wg_dump(IFACE)
        assert await reaches(topo)


async def reaches(topo: Topology) -> bool:
    return await asyncio.to_thread(topo.client_reaches_inet)
