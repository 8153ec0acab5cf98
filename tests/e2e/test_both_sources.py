"""A gateway serving the operator's workloads file AND explorer users' workloads at once
(issue 14 point 6), seen from outside through the real redis, CoreDNS, router, agent and
development explorer: both are served, and names are shared through the ownership records in
both directions (docs/workloads.md, "Explorer users and the file"). One gateway for the module;
tests use names of their own (`label`), and those that edit the file add and remove their own
entries only.

The same rules below the data plane: tests/integration/declared/test_source.py
(test_names_are_shared_with_explorer_users_through_ownership)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.gateway import (
    BACKEND_ADDR,
    BACKEND_HTTP_PORT,
    BACKEND_TLS_PORT,
    MANAGED_DOMAIN,
    Gateway,
    wait_for,
)
from tests.support.sites import assert_served_by, publish_site, values

pytestmark = pytest.mark.timeout(180)

FILE_IP = "198.51.100.50"  # where the file's names point
USER_IP = "198.51.100.60"  # where explorer users' names point
FILE_SUB = f"file-www.{MANAGED_DOMAIN}"
FILE_SHOP = f"file-shop.{MANAGED_DOMAIN}"

BASE = f"""
[[subdomain]]
name = "www"
domain = "{FILE_SUB}"
addresses = ["{FILE_IP}"]

[[proxy]]
name = "shop"
domain = "{FILE_SHOP}"
address = "{BACKEND_ADDR}"
port = {BACKEND_HTTP_PORT}
port_tls = {BACKEND_TLS_PORT}
"""


def subdomain_entry(name: str, domain: str) -> str:
    return f'\n[[subdomain]]\nname = "{name}"\ndomain = "{domain}"\naddresses = ["{FILE_IP}"]\n'


def proxy_entry(name: str, domain: str) -> str:
    return (
        f'\n[[proxy]]\nname = "{name}"\ndomain = "{domain}"\naddress = "{BACKEND_ADDR}"\n'
        f"port = {BACKEND_HTTP_PORT}\nport_tls = {BACKEND_TLS_PORT}\n"
    )


def write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".new")
    tmp.write_text(text)
    tmp.replace(path)  # an editor that saves by renaming


def workloads_file(gateway: Gateway) -> Path:
    assert gateway.workloads is not None
    return gateway.workloads


def answers(gateway: Gateway, name: str) -> set[str]:
    return values(gateway.dns(name, "A"), "A")


def declared(gateway: Gateway) -> dict[str, dict[str, Any]]:
    """The declared entries as `tfgateway status --json` shows them, by name."""
    doc = json.loads(gateway.status("--json"))
    return {w["name"]: w for w in doc["declared"]["workloads"]}


def route_user(gateway: Gateway, domain: str) -> str | None:
    """The owner the router's route for `domain` carries (None: no route)."""
    raw = gateway.redis_cli("GET", f"/tcprouter/service/{domain}").strip()
    if not raw:
        return None
    service = json.loads(base64.b64decode(json.loads(raw)["Value"]))
    return str(service["user"])


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    workdir = tmp_path_factory.mktemp("both")
    workloads = workdir / "workloads.toml"
    workloads.write_text(BASE)
    with Gateway(workdir, explorer=True, workloads=workloads) as gw:
        wait_for(
            lambda: (
                {w["state"] for w in declared(gw).values()} == {"ok"}
                and set(declared(gw)) == {"www", "shop"}
            ),
            what="the file applied",
        )
        yield gw


def test_both_sources_are_served_at_once(both: Gateway, label: str) -> None:
    gw = both
    assert gw.procs["explorer"].alive()
    user = gw.add_user()
    mine = f"{label}.{MANAGED_DOMAIN}"
    publish_site(gw, user, mine)  # the user's subdomain (to the gateway) and proxy: both ok
    user_sub = f"{label}-dns.{MANAGED_DOMAIN}"
    assert gw.wait_result(gw.create("subdomain", user, domain=user_sub, ips=[USER_IP])).state == (
        "ok"
    )

    wait_for(lambda: answers(gw, FILE_SUB) == {FILE_IP}, what="the file's subdomain")
    wait_for(lambda: answers(gw, user_sub) == {USER_IP}, what="the user's subdomain")
    wait_for(lambda: gw.http(FILE_SHOP).status == 200, what="the file's proxy")
    wait_for(lambda: gw.http(mine).status == 200, what="the user's proxy")
    assert_served_by(gw, FILE_SHOP, site="backend", cert="backend")
    assert_served_by(gw, mine, site="backend", cert="backend")
    assert route_user(gw, FILE_SHOP) == "0"  # the operator
    assert route_user(gw, mine) == str(user.id)
    states = {name: w["state"] for name, w in declared(gw).items()}
    assert states == {"www": "ok", "shop": "ok"}


def test_a_name_in_the_file_cannot_be_taken_by_an_explorer_user(both: Gateway) -> None:
    gw = both
    intruder = gw.add_user()
    sub = gw.create("subdomain", intruder, domain=FILE_SUB, ips=[USER_IP])
    prx = gw.create(
        "proxy", intruder, domain=FILE_SHOP, addr=BACKEND_ADDR, port=BACKEND_HTTP_PORT,
        port_tls=BACKEND_TLS_PORT,
    )  # fmt: skip
    refused_sub, refused_proxy = gw.wait_result(sub), gw.wait_result(prx)
    assert refused_sub.state == "error", refused_sub
    assert refused_sub.message == f"subdomain {FILE_SUB} is already reserved by another user"
    assert refused_proxy.state == "error", refused_proxy
    assert refused_proxy.message == f"cannot add proxy for {FILE_SHOP}: used by another user"
    # The error result makes the explorer ask for the workloads' deletion; tearing them down
    # must leave the file's names alone.
    gw.wait_result(sub, state="deleted")
    gw.wait_result(prx, state="deleted")
    assert answers(gw, FILE_SUB) == {FILE_IP}
    assert route_user(gw, FILE_SHOP) == "0"
    assert_served_by(gw, FILE_SHOP, site="backend", cert="backend")
    assert {name: w["state"] for name, w in declared(gw).items()} == {"www": "ok", "shop": "ok"}


@dataclass(frozen=True)
class Held:
    """What an explorer user holds: a subdomain pointing elsewhere and a proxied site."""

    user_id: str
    sub_name: str
    proxied: str
    workloads: tuple[int, ...]


def hold_and_declare(gw: Gateway, label: str) -> Held:
    """An explorer user holds a subdomain and a proxied name; the operator then adds both
    names to the file. Returns once the agent reported the new entries."""
    user = gw.add_user()
    sub_name, proxied = f"{label}-dns.{MANAGED_DOMAIN}", f"{label}.{MANAGED_DOMAIN}"
    sub = gw.create("subdomain", user, domain=sub_name, ips=[USER_IP])
    assert gw.wait_result(sub).state == "ok"
    site = publish_site(gw, user, proxied)
    wait_for(lambda: answers(gw, sub_name) == {USER_IP}, what="the user's subdomain")
    wait_for(lambda: gw.http(proxied).status == 200, what="the user's proxy")

    path = workloads_file(gw)
    write(
        path,
        path.read_text()
        + subdomain_entry(f"{label}-sub", sub_name)
        + proxy_entry(f"{label}-proxy", proxied),
    )
    wait_for(
        lambda: {f"{label}-sub", f"{label}-proxy"} <= set(declared(gw)),
        what="the new entries in the declared status",
    )
    return Held(str(user.id), sub_name, proxied, (sub, site.sub_id, site.proxy_id))


def test_a_name_an_explorer_user_holds_is_refused_to_the_file(both: Gateway, label: str) -> None:
    gw = both
    held = hold_and_declare(gw, label)
    user_id, sub_name, proxied = held.user_id, held.sub_name, held.proxied
    path = workloads_file(gw)
    entries = declared(gw)
    sub, prx = entries[f"{label}-sub"], entries[f"{label}-proxy"]
    assert sub["state"] == "error", sub
    assert sub["message"] == (
        f"{path}: subdomain \"{label}-sub\": field 'domain': "
        f"subdomain {sub_name} is already reserved by another user"
    )
    assert prx["state"] == "error", prx
    assert prx["message"] == (
        f"{path}: proxy \"{label}-proxy\": field 'domain': "
        f"cannot add proxy for {proxied}: used by another user"
    )
    # The operator's view says the same; the file's other entries are untouched.
    text = gw.status()
    assert f"ERROR {label}-sub: " in text
    assert f"ERROR {label}-proxy: " in text
    assert entries["www"]["state"] == entries["shop"]["state"] == "ok"
    assert answers(gw, FILE_SUB) == {FILE_IP}
    # The user keeps both names.
    assert answers(gw, sub_name) == {USER_IP}
    assert route_user(gw, proxied) == user_id
    assert gw.http(proxied).headers["x-site"] == "backend"
    raw = gw.redis_cli("--raw", "HGET", "tfgateway:declared", f"{label}-proxy")
    assert json.loads(raw)["applied"] is False


def test_removing_the_conflicting_entry_clears_its_error(both: Gateway, label: str) -> None:
    gw = both
    path = workloads_file(gw)
    before = path.read_text()
    held = hold_and_declare(gw, label)
    user_id, sub_name, proxied = held.user_id, held.sub_name, held.proxied
    assert {declared(gw)[f"{label}-{k}"]["state"] for k in ("sub", "proxy")} == {"error"}

    write(path, before)  # the operator removes the conflicting entries
    wait_for(
        lambda: not {f"{label}-sub", f"{label}-proxy"} & set(declared(gw)),
        what="the removed entries gone from the declared status",
    )
    text = gw.status()
    assert f"ERROR {label}-" not in text
    assert gw.redis_cli("HEXISTS", "tfgateway:declared", f"{label}-sub").strip() == "0"
    # Removing a refused entry removes nothing of the user's.
    assert answers(gw, sub_name) == {USER_IP}
    assert route_user(gw, proxied) == user_id
    assert_served_by(gw, proxied, site="backend", cert="backend")
    assert answers(gw, FILE_SUB) == {FILE_IP}


def test_a_name_the_user_let_go_becomes_the_files_on_its_own(both: Gateway, label: str) -> None:
    """Entries refused for a name another owner holds are tried again on their own
    (docs/workloads.md): once the user deleted their workloads, the names are the file's
    without a reload."""
    gw = both
    held = hold_and_declare(gw, label)
    for workload in held.workloads:
        gw.delete(workload)
    for workload in held.workloads:
        gw.wait_result(workload, state="deleted")
    wait_for(lambda: not answers(gw, held.sub_name), what="the user's subdomain removed")
    wait_for(lambda: gw.refused(held.proxied), what="the user's proxy removed")

    wait_for(
        lambda: {declared(gw)[f"{label}-{k}"]["state"] for k in ("sub", "proxy")} == {"ok"},
        timeout=30,
        what="the file's entries applied without a reload",
    )
    assert "for a name another owner held are applied" in gw.procs["agent"].log.read_text()
    assert declared(gw)[f"{label}-sub"]["message"] == ""
    wait_for(lambda: answers(gw, held.sub_name) == {FILE_IP}, what="the file's subdomain")
    assert route_user(gw, held.proxied) == "0"
    assert_served_by(gw, held.proxied, site="backend", cert="backend")
