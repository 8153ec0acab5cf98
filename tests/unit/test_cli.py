"""The `tfgateway` command line: Go defaults, validation with exit status 2, subcommands."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from aiohttp import web

from tests.support.processes import free_port
from tfgateway.app import host_addresses
from tfgateway.cli import build_parser, main, parse_config
from tfgateway.engine.cache import RESERVATIONS_KEY
from tfgateway.engine.outbox import OUTBOX_KEY
from tfgateway.model.reservation import GoTime, Reservation, Result, encode_cache_value
from tfgateway.node.location import Location, resolve_location
from tfgateway.primitives.name_proofs import PROOFS_KEY, ProofMode, ProofRecord, ProofState


def test_go_defaults() -> None:
    c = parse_config([])
    assert (c.seed, c.explorer, c.redis) == (
        "identity.seed",
        "",  # standalone unless --explorer is given
        "tcp://localhost:6379",
    )
    assert (c.farm, c.tcp_client_port, c.endpoint, c.wg_iface, c.free, c.debug) == (
        0,
        18000,
        "",
        "wg-tfgateway",
        False,
        False,
    )
    assert (c.domains, c.nameservers, c.location) == ((), (), None)
    assert not c.fourtosix_enabled
    assert c.poll_interval == 10.0
    assert not c.allow_private_backends
    assert c.request_timeout == 15.0
    assert c.log_format == "text"
    # Safe by default: names outside --domains need proof, looked up with the host's resolvers.
    assert c.name_proof is ProofMode.REQUIRED
    assert c.proof_resolvers == ()
    assert (c.proof_timeout, c.proof_recheck_interval, c.proof_grace) == (5.0, 3600.0, 604800.0)


def test_name_proof_flags() -> None:
    c = parse_config(
        ["--name-proof", "first-come", "--proof-resolver", "10.0.0.53:5353,9.9.9.9",
         "--proof-resolver", "[2620:fe::fe]:53", "--proof-timeout", "2", "--proof-grace", "0",
         "--proof-recheck-interval", "60"]
    )  # fmt: skip
    assert c.name_proof is ProofMode.FIRST_COME
    assert c.proof_resolvers == (("10.0.0.53", 5353), ("9.9.9.9", 53), ("2620:fe::fe", 53))
    assert (c.proof_timeout, c.proof_recheck_interval, c.proof_grace) == (2.0, 60.0, 0.0)


def test_explorer_timeout_and_log_format() -> None:
    c = parse_config(["--explorer-timeout", "2.5", "--log-format", "json"])
    assert (c.request_timeout, c.log_format) == (2.5, "json")
    assert parse_config(["--explorer-timeout=30", "--log-format=text"]).request_timeout == 30.0


def test_go_spellings_repeat_and_commas() -> None:
    c = parse_config(
        [
            "-seed", "/tmp/s", "--domains", "GW.Example.com",
            "--domains=a.example.org,b.example.org",
            "-nameservers", "ns1.example.com", "--free=false", "--debug", "-farm", "7",
            "--endpoint", "gw.example.com:51820",
        ]
    )  # fmt: skip
    assert c.seed == "/tmp/s"
    assert c.domains == ("gw.example.com", "a.example.org", "b.example.org")
    assert c.nameservers == ("ns1.example.com",)
    assert (c.free, c.debug, c.farm) == (False, True, 7)
    assert c.fourtosix_enabled


def test_terminate_tls_domains() -> None:
    c = parse_config(["--terminate-tls", "GW.example.", "--terminate-tls", "a.example,b.example"])
    assert c.terminate_tls == ("gw.example", "a.example", "b.example")
    assert not c.terminate_tls_redirect
    assert parse_config(["--terminate-tls-redirect"]).terminate_tls_redirect
    assert parse_config([]).terminate_tls == ()


def test_location_and_addresses() -> None:
    c = parse_config(
        ["--location", "51.05,3.72,Ghent,Belgium,Europe", "--gateway-address", "2a02::1,1.2.3.4"]
    )
    assert c.location == Location(
        city="Ghent", country="Belgium", continent="Europe", latitude=51.05, longitude=3.72
    )
    assert c.gateway_addresses == ("2a02::1", "1.2.3.4")
    assert parse_config(["--location", "1,2"]).location == Location(latitude=1, longitude=2)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--domains", "bad domain"], "--domains 'bad domain'"),
        (["--domains", "xn--zz--.example.com"], "--domains"),
        (["--nameservers", "ns1"], "--nameservers 'ns1'"),
        (["--redis", "http://x"], "--redis"),
        (["--explorer", "explorer.grid.tf"], "--explorer"),
        (["--tcp-client-port", "70000"], "--tcp-client-port"),
        (["--endpoint", "nohost"], "--endpoint"),
        (["--location", "north"], "--location"),
        (["--location", "0,0"], "0,0"),
        (["--gateway-address", "gw.example.com"], "--gateway-address"),
        (["--metrics-listen", "9100"], "metrics listen"),
        (["--poll-interval", "0"], "--poll-interval"),
        (["--poll-interval", "inf"], "--poll-interval must be a finite number of seconds"),
        (["--explorer-timeout", "0"], "--explorer-timeout must be a finite number of seconds"),
        (["--explorer-timeout", "-3"], "above 0, not -3.0"),
        (["--explorer-timeout", "nan"], "--explorer-timeout must be"),
        (["--explorer-timeout", "inf"], "--explorer-timeout must be"),
        (["--explorer-timeout", "soon"], "--explorer-timeout: 'soon' is not a number of seconds"),
        (["--log-format", "xml"], "--log-format: invalid choice: 'xml'"),
        (["--free=maybe"], "not a boolean"),
        (["--name-proof", "none"], "--name-proof: invalid choice: 'none'"),
        (["--proof-resolver", "dns.google"], "--proof-resolver: resolver 'dns.google'"),
        (["--proof-resolver", "1.1.1.1:99999"], "is not a port"),
        (["--proof-timeout", "0"], "--proof-timeout must be"),
        (["--proof-recheck-interval", "-1"], "--proof-recheck-interval must be"),
        (["--proof-grace", "-1"], "--proof-grace must be a finite number"),
        (["--terminate-tls", "*.gw.example"], "--terminate-tls '*.gw.example'"),
    ],
)
def test_bad_values_exit_2_with_clear_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        parse_config(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_help_mentions_every_flag() -> None:
    text = build_parser().format_help()
    for flag in (
        "--seed", "--explorer", "--redis", "--debug", "--farm", "--nameservers", "--domains",
        "--tcp-client-port", "--endpoint", "--wg-iface", "--free", "--location",
        "--allow-private-backends", "--gateway-address", "--metrics-listen", "--poll-interval",
        "--explorer-timeout", "--log-format", "--name-proof", "--proof-resolver",
        "--proof-timeout", "--proof-recheck-interval", "--proof-grace", "--terminate-tls",
        "--terminate-tls-redirect",
    ):  # fmt: skip
        assert flag in text
    assert "(default 18000)" in text
    assert "{text,json}" in text
    assert " ".join(text.split()).count("(default 15.0)") == 1  # --explorer-timeout


def test_identity_json_matches_spec_vectors(tmp_path: Path) -> None:
    seed = tmp_path / "seed"
    seed.write_bytes(b'"1.0.0"' + b"a" * 32)
    out = subprocess.run(
        [sys.executable, "-m", "tfgateway", "identity", "--seed", str(seed), "--json"],
        capture_output=True,
        check=True,
        timeout=60,
    )
    assert json.loads(out.stdout) == {
        "node_id": "CnEDk9HrMnmiHXEV1WFgbVCRteYnPqsJwrTdcZaNhFVW",
        "public_key_hex": "af06a3e3291714e4f356c19c9b15cd1951ec6e6662aa77be07547f289383341d",
        "wireguard_public_key": "QElQLbksojQsP5LaxdbefIXbXfVAeltJls458u+36Cc=",
        "ipv6_prefix": "fd5e:ca9b:d3eb:7c0::/64",
    }


def test_identity_bad_seed_is_clear(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    seed = tmp_path / "seed"
    seed.write_bytes(b'"9.9.9"xyz')
    assert main(["identity", "--seed", str(seed)]) == 1
    assert "unknown seed version" in capsys.readouterr().err


def test_status_table_and_backlog(
    redis_url: str, redis_db: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    r = Reservation(
        id="4521-1",
        user_id="42",
        type="subdomain",
        data=b'{"domain":"app.gw.example.com","destination":["1.2.3.4"]}',
        created=GoTime.from_unix(1610000000),
        result=Result(type="subdomain", id="4521-1", created=GoTime.now_utc(), state=1),
    )
    redis_db.hset(RESERVATIONS_KEY, r.id, encode_cache_value(r))
    redis_db.hset(RESERVATIONS_KEY, "9-9", b"garbage")
    redis_db.hset(OUTBOX_KEY, f"{7:020d}", json.dumps({"op": "delete", "id": "77-1", "queued": 1}))
    assert main(["status", "--redis", redis_url]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["TYPE", "ID", "DOMAIN", "OWNER", "STATE", "AGE"]
    assert lines[1].split()[:5] == ["subdomain", "4521-1", "app.gw.example.com", "42", "ok"]
    assert "1 undecodable cache entries: 9-9" in out
    assert "delivery backlog: 0 results, 1 deletes" in out
    assert "delete 77-1" in out
    assert "tunnel clients: the router publishes no pin" in out
    pin = "sha256/" + "A" * 43 + "="
    redis_db.set("tfgateway:router:tunnel-pin", pin)
    assert main(["status", "--redis", redis_url]) == 0
    assert f"tunnel clients: tftunnel --pin {pin}" in capsys.readouterr().out
    assert main(["status", "--redis", redis_url, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["tunnel_pin"] == pin
    assert doc["workloads"][0]["domain"] == "app.gw.example.com"
    assert doc["backlog"] == [{"op": "delete", "id": "77-1", "queued": 1.0}]
    assert doc["name_proofs"] == []


def test_status_shows_names_without_proof(
    redis_url: str, redis_db: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    now = time.time()
    records = {
        "proxy www.site.example": ProofRecord("42", ProofState.SUSPENDED, now - 300, now, now + 60,
                                              "no TXT record at _tfgateway.www.site.example"),
        "zone old.example": ProofRecord("7", ProofState.GRANDFATHERED, now, 0, now + 7200, ""),
        "proxy ok.example": ProofRecord("9", ProofState.PROVEN, now, now, now + 3600, ""),
    }  # fmt: skip
    for field, record in records.items():
        redis_db.hset(PROOFS_KEY, field, record.encode())
    redis_db.hset(PROOFS_KEY, "proxy junk.example", b"{")  # unreadable: left out
    assert main(["status", "--redis", redis_url]) == 0
    out = capsys.readouterr().out
    assert "names outside the managed domains: 1 proven, 1 grandfathered, 1 suspended" in out
    assert (
        "SUSPENDED (not served) proxy www.site.example of user 42, for 5m: no TXT record at "
        "_tfgateway.www.site.example" in out
    )
    assert "grandfathered zone old.example of user 7: no proof yet, first check in 119m" in out
    assert "ok.example" not in out
    assert main(["status", "--redis", redis_url, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [(p["kind"], p["name"], p["state"]) for p in doc["name_proofs"]] == [
        ("proxy", "ok.example", "proven"),
        ("zone", "old.example", "grandfathered"),
        ("proxy", "www.site.example", "suspended"),
    ]


def test_status_unreachable_redis(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--redis", "tcp://127.0.0.1:1"]) == 1
    assert "cannot read redis" in capsys.readouterr().err


async def _geoip_server(body: bytes, status: int = 200) -> tuple[web.AppRunner, str]:
    async def handler(_request: web.Request) -> web.Response:
        return web.Response(body=body, status=status, content_type="application/json")

    app = web.Application()
    app.router.add_get("/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}/"


async def test_geoip_keys_of_upstream() -> None:
    runner, url = await _geoip_server(
        b'{"city":"Ghent","country_name":"Belgium","continent":"Europe",'
        b'"latitude":51.05,"longitude":3.7167,"ip":"x"}'
    )
    try:
        location = await resolve_location(None, "https://explorer.example.org", url)
    finally:
        await runner.cleanup()
    assert location == Location(
        city="Ghent", country="Belgium", continent="Europe", latitude=51.05, longitude=3.7167
    )


async def test_geoip_failure_falls_back_with_a_clear_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runner, url = await _geoip_server(b"oops", status=500)
    try:
        location = await resolve_location(None, "https://explorer.example.org", url)
    finally:
        await runner.cleanup()
    assert location == Location()
    assert "pass --location" in caplog.text
    dead = await resolve_location(
        None, "https://explorer.example.org", f"http://127.0.0.1:{free_port()}/"
    )
    assert dead == Location()


async def test_no_geoip_for_a_local_explorer_and_location_wins() -> None:
    # a geoip URL that would fail loudly if asked
    assert await resolve_location(None, "http://127.0.0.1:8080/api/v1", "http://0.0.0.0:1/") == (
        Location()
    )
    given = Location(latitude=1, longitude=2)
    assert (
        await resolve_location(given, "https://explorer.example.org", "http://0.0.0.0:1/") is given
    )


def test_host_addresses_include_loopback() -> None:
    assert "127.0.0.1" in host_addresses()
