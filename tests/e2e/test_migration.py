"""Moving an Ubuntu gateway of the Go daemon onto the appliance, as docs/operators.md says:
its seed and its redis dump (dump.rdb: redis on Ubuntu writes no append-only file), imported
with tfgateway-redis-import into a redis that runs with the append-only file on, then the
gateway started with the old seed. Nothing is lost: every name and route is served, every
cached reservation is kept, no result is sent again, and a later delete is carried out."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from pathlib import Path

from tests.support.gateway import (
    BACKEND_ADDR,
    BACKEND_HTTP_PORT,
    BACKEND_TLS_PORT,
    GW_CLIENT_ADDR,
    MANAGED_DOMAIN,
    Gateway,
    wait_for,
)

REPO = Path(__file__).resolve().parents[2]
IMPORT = REPO / "nixos-modules" / "tfgateway-redis-import.sh"
# The keys the Go daemon writes (data-plane spec §0); everything else is the agent's own.
GO_DAEMON_HASHES = {"zone", "managed_domains", "tfgateway_reservations"}


def written_by_the_go_daemon(key: str) -> bool:
    return key.endswith(".") or key in GO_DAEMON_HASHES or key.startswith("/tcprouter/service/")


def shape_like_an_old_gateway(gw: Gateway) -> list[str]:
    """Leave in redis only what the Go daemon wrote: its keys, and in the zones no apex
    SOA/NS (the Go daemon never wrote one the plugins serve)."""
    keys = gw.redis_keys("*")
    for key in keys:
        if not written_by_the_go_daemon(key):
            gw.redis_cli("DEL", key)
        elif key.endswith("."):
            gw.redis_cli("HDEL", key, "@")
    kept = sorted(gw.redis_keys("*"))
    assert kept, "no data to migrate"
    assert all(written_by_the_go_daemon(k) for k in kept)
    return kept


def test_an_old_gateway_moves_over_without_losing_anything(tmp_path: Path) -> None:
    # The Go daemon asked no proof of control: the old gateway serves first come.
    with Gateway(tmp_path / "gw", agent_extra_args=("--name-proof", "first-come")) as gw:
        user = gw.add_user()
        web, home = f"web-old.{MANAGED_DOMAIN}", f"home-old.{MANAGED_DOMAIN}"
        zone, inside = "old-delegated.example", "www.old-delegated.example"
        secret = f"{user.id}:{secrets.token_hex(8)}"
        ids = {
            "web": gw.create("subdomain", user, domain=web, ips=[GW_CLIENT_ADDR]),
            "proxy": gw.create(
                "proxy",
                user,
                domain=web,
                addr=BACKEND_ADDR,
                port=BACKEND_HTTP_PORT,
                port_tls=BACKEND_TLS_PORT,
            ),
            "home": gw.create("subdomain", user, domain=home, ips=[GW_CLIENT_ADDR]),
            "tunnel": gw.create(
                "reverse_proxy", user, domain=home, secret=gw.encrypt_secret(user, secret)
            ),
            "zone": gw.create("domain_delegate", user, domain=zone),
        }
        for wid in ids.values():
            assert gw.wait_result(wid).state == "ok"
        ids["inside"] = gw.create("subdomain", user, domain=inside, ips=["198.51.100.21"])
        assert gw.wait_result(ids["inside"]).state == "ok"
        gw.start_natc_site()
        gw.start_tunnel(secret)
        wait_for(lambda: gw.http(home).status == 200, timeout=20, what="tunnel before")
        puts = {name: len(gw.results_put(wid)) for name, wid in ids.items()}

        # The old gateway, switched off: its redis as the Go daemon left it, in dump.rdb.
        for component in ("agent", "coredns", "router"):
            gw.stop(component)
        old_keys = shape_like_an_old_gateway(gw)
        cache = gw.redis_cli("--raw", "HKEYS", "tfgateway_reservations").split()
        assert len(cache) == len(ids)
        gw.redis_cli("SAVE")
        dump = tmp_path / "old-dump.rdb"
        shutil.copy(gw.redis_dir / "dump.rdb", dump)

        # The new host: its redis already ran (append-only file on) and holds nothing of it.
        gw.stop("redis")
        shutil.rmtree(gw.redis_dir)
        gw.start_redis()
        assert gw.redis_cli("DBSIZE").strip() == "0"
        gw.stop("redis")

        # The procedure: import the dump with redis stopped, start everything, old seed.
        env = {**os.environ, "REDIS_DIR": str(gw.redis_dir), "REDIS_USER": ""}
        out = subprocess.run(
            ["bash", str(IMPORT), str(dump)], env=env, capture_output=True, text=True,
            timeout=60, check=False,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert f"imported {len(old_keys)} keys" in out.stdout
        gw.start_redis()
        assert sorted(gw.redis_keys("*")) == old_keys  # loaded from the append-only file
        gw.start_dns()
        gw.start_router()
        gw.agent_extra_args = ()  # the appliance's default: proofs required
        gw.start_agent()  # the same seed: the same node id, so the explorer's workloads

        # Everything is served again, with the apex records the Go daemon never wrote.
        wait_for(lambda: gw.http(web).status == 200, what="proxy after")
        assert gw.https(web).reply.body == f"backend https host={web}\n".encode()
        wait_for(lambda: gw.http(home).status == 200, timeout=30, what="tunnel after")
        assert gw.http(home).headers["x-site"] == "natc-site"
        assert "198.51.100.21" in gw.dns(inside).answer[0].to_text()
        # The delegation without proof is kept: grandfathered, said in the log.
        line = f"zone {zone} of user {user.id} grandfathered"
        wait_for(lambda: line in gw.procs["agent"].log.read_text(), what="grandfathered")
        assert gw.dns(zone, "SOA").answer
        wait_for(lambda: bool(gw.dns(MANAGED_DOMAIN, "SOA").answer), what="apex SOA restored")
        assert set(old_keys) <= set(gw.redis_keys("*"))
        assert sorted(gw.redis_cli("--raw", "HKEYS", "tfgateway_reservations").split()) == sorted(
            cache
        )

        # A new workload answered means the agent polled past the old ones: none was
        # answered again (the cache said they are live), so the explorer saw no change.
        fresh = gw.create("subdomain", user, domain=f"new.{MANAGED_DOMAIN}", ips=[GW_CLIENT_ADDR])
        assert gw.wait_result(fresh).state == "ok"
        assert {name: len(gw.results_put(wid)) for name, wid in ids.items()} == puts

        # And the old workloads are the agent's now: a delete is carried out.
        gw.delete(ids["proxy"])
        gw.wait_result(ids["proxy"], state="deleted")
        wait_for(lambda: gw.refused(web), what="proxy removed")
