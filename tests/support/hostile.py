"""A deterministic corpus of hostile workloads (issue 8 point 4), as development-explorer specs.

Every case is something a paying user could make the explorer relay to a gateway, and that the
gateway must refuse with an error result: oversized or invalid domains, IPs and keys, wrong JSON
types, unicode and punycode tricks, reverse-proxy secrets that are short, not hex or do not
decrypt, proxies to loopback / the redis port / the gateway's own addresses, unknown types, and
attempts to take over a victim's domain, subdomain, delegated zone, proxy or reverse proxy (also
through a `reference`). `corpus()` returns at least `size` cases; the same seed gives the same
corpus. Cases that cannot even be addressed (no usable id) are in `unanswerable()`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from tfgateway_devexplorer.user_crypto import UserKeys, encrypt_secret

WRONG_TYPES: tuple[Any, ...] = (42, -1, 4.5, True, False, None, [], {}, ["x"], {"a": 1})


@dataclass(frozen=True)
class Victim:
    """What another user owns on the gateway; nothing of it may change."""

    tid: int
    subdomain: str  # subdomain + proxy on the same name
    dns_only: str  # a subdomain without proxy
    proxy_only: str  # a proxy on a name without gateway DNS
    zone: str  # a delegated domain
    reverse: str  # a reverse proxy
    gwids: tuple[str, ...] = ()  # the victim's workloads, for reference takeovers


@dataclass(frozen=True)
class Setting:
    node_id: str
    managed: str  # the managed domain, e.g. gw.example.com
    nameserver: str  # e.g. ns1.gw.example.com
    own_address: str  # an address of the gateway (global-looking), passed to --gateway-address
    attacker: int
    attacker_keys: UserKeys
    victim: Victim
    unknown_user: int = 999_999  # not in the phonebook


@dataclass(frozen=True)
class Case:
    why: str
    spec: dict[str, Any] = field(default_factory=dict)


def _bad_domains(s: Setting, rng: random.Random) -> list[Any]:
    m = s.managed
    fixed: list[Any] = [
        "",
        " ",
        ".",
        "..",
        f"a..{m}",
        f"-a.{m}",
        f"a-.{m}",
        f"*.{m}",
        f"*x.{m}",
        f"_x.{m}",
        f"a_b.{m}",
        f"{'x' * 64}.{m}",
        "a." * 130 + m,
        "a" * 100_000,
        f"{'b' * 63}." * 5 + m,
        f"ümlaut.{m}",
        f"\u0430pp.{m}",
        f"a\u200b.{m}",
        f"a\u202e.{m}",
        f"app\u3002{m}",
        f"\uff41pp.{m}",
        f"a\u0000.{m}",
        f"a\n.{m}",
        f"a b.{m}",
        f"a/b.{m}",
        f"a:80.{m}",
        f"ab--c.{m}",
        f"xn--.{m}",
        f"xn--a-.{m}",
        f"xn--{'9' * 20}-.{m}",
        "1.2.3.4",
        f"{m}.123",
        "com",
        "localhost",
        f"a@b.{m}",
        f"a%2e.{m}",
        f"[::1].{m}",
        f"a\t.{m}",
        f"\u2028.{m}",
        f"é.{m}",
        f"xn--\u00e9.{m}",
        "\ud7ff" * 10,
    ]
    fixed += list(WRONG_TYPES)
    for _ in range(40):  # random oversized labels and names, random unicode
        n = rng.randrange(64, 400)
        fixed.append(f"{'q' * n}.{m}")
        fixed.append(".".join("z" * rng.randrange(40, 63) for _ in range(rng.randrange(6, 20)))
                     + "." + m)  # fmt: skip
        fixed.append(f"{chr(rng.randrange(0x80, 0x2FFF))}{rng.randrange(1000)}.{m}")
    return fixed


def _bad_record_ips(rng: random.Random) -> list[Any]:
    values: list[Any] = [
        "185.69.166.1", "", [], [""], ["999.1.1.1"], ["1.2.3"], ["::g"], ["fe80::1%eth0"],
        ["0.0.0.0"], ["::"], ["224.0.0.1"], ["ff02::1"], ["240.0.0.1"], ["1.2.3.4/24"],
        [" 1.2.3.4"], ["01.2.3.4"], [42], [None], [["1.2.3.4"]], [{"ip": "1.2.3.4"}],
        ["1.2.3.4", "nope"], ["185.69.166.1"] * 65, ["185.69.166.1"] * 10_000, 42, None,
        {"a": "1.2.3.4"}, ["1.2.3.4\x00"], ["١٢٣.1.1.1"],
    ]  # fmt: skip
    for _ in range(20):
        values.append([f"{rng.randrange(224, 256)}.{rng.randrange(256)}.0.1"])
        values.append([f"{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256, 999)}.1"])
    return values


def _bad_targets(s: Setting, rng: random.Random) -> list[Any]:
    own = s.own_address
    values: list[Any] = [
        "127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1", "0.0.0.0", "::", "169.254.169.254",
        "fe80::1", "224.0.0.1", "ff02::1", "240.0.0.1", "255.255.255.255", "10.0.0.1",
        "192.168.1.1", "172.16.0.1", "100.64.0.1", "fc00::1", "fd12::1", own, f"::ffff:{own}",
        f"64:ff9b::{own}", "localhost", "redis", "example.com", "",
        "185.69.166.2:80", "http://185.69.166.2", "0x7f000001", "2130706433", "017700000001",
        "127.1", "[::1]", "fec0::1",
    ]  # fmt: skip
    values += list(WRONG_TYPES)
    for _ in range(25):
        values.append(f"127.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}")
        values.append(f"169.254.{rng.randrange(256)}.{rng.randrange(1, 255)}")
        values.append(f"fe80::{rng.randrange(1, 0xFFFF):x}")
        values.append(f"::ffff:127.0.{rng.randrange(256)}.{rng.randrange(1, 255)}")
    return values


def _bad_ports() -> list[tuple[Any, Any]]:
    return [
        (-1, 443), (65536, 443), (80, 70000), ("80", 443), (80, "443"), (8.5, 443), (True, 443),
        (0, 0), (None, None), ([80], 443), ({"p": 80}, 443), (2**63, 443), (-(2**63), 0),
    ]  # fmt: skip


def _bad_secrets(s: Setting, rng: random.Random) -> list[tuple[Any, int]]:
    """(secret, version) pairs that must not give a valid `<attacker>:…` secret."""
    out: list[tuple[Any, int]] = []
    for version in (0, 2):
        out += [
            ("", version), ("zz", version), ("abc", version), ("00" * 10, version),
            ("00" * 23, version), ("00" * 24, version), ("é" * 50, version),
            ("g" * 96, version), ("0" * 200_001, version),
        ]  # fmt: skip
        out += [(v, version) for v in WRONG_TYPES if v not in ("", None)]
        for _ in range(12):
            out.append((rng.randbytes(rng.randrange(1, 200)).hex(), version))
    victim_tid = s.victim.tid
    keys = s.attacker_keys
    # Valid encryptions of plaintexts the rules refuse: another user's id, no id, empty.
    for plain in (f"{victim_tid}:stolen", "nocolon", f":{s.attacker}", f"{s.attacker}"):
        out.append((encrypt_secret(plain, s.node_id, version=0), 0))
        out.append((encrypt_secret(plain, s.node_id, version=2, user=keys), 2))
    # Encrypted with a key that is not the attacker's phonebook key (version 2).
    other = UserKeys(bytes(range(32)))
    out.append((encrypt_secret(f"{s.attacker}:x", s.node_id, version=2, user=other), 2))
    # Encrypted to another gateway.
    out.append((encrypt_secret(f"{s.attacker}:x", UserKeys(b"g" * 32).public_key, version=0), 0))
    return out


TAKEOVER_IP = "185.69.166.66"


def _name_takeovers(s: Setting, name: Callable[[str], str], secret: str) -> list[Case]:
    """The attacker's workloads on the victim's names and the gateway's own, each name written
    as `name` gives it (case, trailing dot, blanks)."""
    v, m = s.victim, s.managed

    def sub(d: str) -> dict[str, Any]:
        return {"type": "subdomain", "domain": name(d), "ips": [TAKEOVER_IP]}

    def proxy(d: str, **tls: int) -> dict[str, Any]:
        return {"type": "proxy", "domain": name(d), "addr": TAKEOVER_IP, "port": 80, **tls}

    def reverse(d: str) -> dict[str, Any]:
        return {"type": "reverse_proxy", "domain": name(d), "secret": secret}

    def delegate(d: str) -> dict[str, Any]:
        return {"type": "domain_delegate", "domain": name(d)}

    return [
        Case("takeover: subdomain of the victim", sub(v.subdomain)),
        Case("takeover: subdomain on the victim's proxy name", sub(v.proxy_only)),
        Case("takeover: subdomain on the victim's reverse-proxy name", sub(v.reverse)),
        Case("takeover: proxy on the victim's subdomain", proxy(v.dns_only, port_tls=443)),
        Case("takeover: proxy of the victim", proxy(v.subdomain, port_tls=443)),
        Case("takeover: proxy on the victim's reverse proxy", proxy(v.reverse)),
        Case("takeover: reverse proxy of the victim's proxy", reverse(v.proxy_only)),
        Case("takeover: reverse proxy of the victim", reverse(v.reverse)),
        Case("takeover: delegation of the victim's zone", delegate(v.zone)),
        Case("takeover: delegation inside the victim's zone", delegate(f"www.{v.zone}")),
        Case("takeover: delegation of a victim's subdomain", delegate(v.subdomain)),
        Case("takeover: delegation of the managed domain", delegate(m)),
        Case("takeover: delegation of the gateway's nameserver", delegate(s.nameserver)),
        Case("takeover: subdomain on the gateway's nameserver", sub(s.nameserver)),
        Case("takeover: proxy on the managed domain's apex", proxy(m)),
    ]


# How a name may be written in a takeover attempt: as it is, fully qualified, upper case, padded.
SPELLINGS: tuple[Callable[[str], str], ...] = (
    str,
    lambda d: f"{d}.",
    str.upper,
    lambda d: f" {d} ",
)


def _takeovers(s: Setting, keys_secret: str) -> Iterator[Case]:
    v = s.victim
    for spelling in SPELLINGS:
        yield from _name_takeovers(s, spelling, keys_secret)
    for gwid in v.gwids:  # a reference to the victim's workload, with the attacker's data
        yield Case(
            "takeover: reference to the victim's workload",
            {"type": "subdomain", "domain": v.subdomain, "ips": [TAKEOVER_IP], "reference": gwid},
        )
        yield Case(
            "takeover: reference to the victim's workload (proxy)",
            {"type": "proxy", "domain": v.subdomain, "addr": TAKEOVER_IP, "port": 80,
             "reference": gwid},
        )  # fmt: skip


def _domain_cases(s: Setting, rng: random.Random) -> Iterator[Case]:
    m = s.managed
    for d in _bad_domains(s, rng):
        yield Case("bad domain (subdomain)",
                   {"type": "subdomain", "domain": d, "ips": ["185.69.166.1"]})  # fmt: skip
        yield Case("bad domain (delegate)", {"type": "domain_delegate", "domain": d})
        yield Case("bad domain (proxy)",
                   {"type": "proxy", "domain": d, "addr": "185.69.166.2", "port": 80})  # fmt: skip
    for d in ("app.other.example", m, "example.com", f"evil{m}", f"{m}.evil.example"):
        yield Case("subdomain outside the managed domains",
                   {"type": "subdomain", "domain": d, "ips": ["185.69.166.1"]})  # fmt: skip
    for i, ips in enumerate(_bad_record_ips(rng)):
        yield Case("bad record IPs", {"type": "subdomain", "domain": f"ips{i}.{m}", "ips": ips})


def _proxy_cases(s: Setting, rng: random.Random) -> Iterator[Case]:
    m = s.managed
    for i, addr in enumerate(_bad_targets(s, rng)):
        yield Case("forbidden proxy target",
                   {"type": "proxy", "domain": f"t{i}.{m}", "addr": addr, "port": 80,
                    "port_tls": 443})  # fmt: skip
    for port in (6379, 22, 53, 18000):
        yield Case("proxy to a gateway service port",
                   {"type": "proxy", "domain": f"svc{port}.{m}", "addr": s.own_address,
                    "port": port, "port_tls": port})  # fmt: skip
    for i, (http, tls) in enumerate(_bad_ports()):
        yield Case("bad proxy ports",
                   {"type": "proxy", "domain": f"port{i}.{m}", "addr": "185.69.166.2",
                    "port": http, "port_tls": tls})  # fmt: skip


def _reverse_proxy_cases(
    s: Setting, rng: random.Random, domain_seed: int, good_secret: str
) -> Iterator[Case]:
    m = s.managed
    for i, (secret, version) in enumerate(_bad_secrets(s, rng)):
        yield Case("bad reverse-proxy secret",
                   {"type": "reverse_proxy", "domain": f"sec{i}.{m}", "secret": secret,
                    "version": version})  # fmt: skip
    for d in _bad_domains(s, random.Random(domain_seed))[:60]:
        yield Case("bad domain (reverse proxy)",
                   {"type": "reverse_proxy", "domain": d, "secret": good_secret,
                    "version": 2})  # fmt: skip
    yield Case("reverse proxy of a user missing from the phonebook",
               {"type": "reverse_proxy", "domain": f"ghost.{m}", "secret": good_secret,
                "version": 2, "customer_tid": s.unknown_user})  # fmt: skip


def _type_cases(s: Setting) -> Iterator[Case]:
    m = s.managed
    for t in (0, 1, 2, 3, 9, 10, 11, 12, 13, 100, 200, 255):
        yield Case("unsupported workload type",
                   {"type": t, "domain": f"type{t}.{m}", "ips": ["185.69.166.1"]})  # fmt: skip
    for key in ["", "short", "A" * 43 + "=", "!" * 44, "A" * 10_000, 42, None]:
        yield Case("gateway4to6 with a bad key (4to6 not enabled here)",
                   {"type": "gateway4to6", "public_key": key})  # fmt: skip


def _wrong_json_type_cases(s: Setting, good_secret: str) -> Iterator[Case]:
    m = s.managed
    # The type's own fields, in every position.
    for kind, fields in (
        ("subdomain", {"domain": f"wt.{m}", "ips": ["185.69.166.1"]}),
        ("proxy", {"domain": f"wt.{m}", "addr": "185.69.166.2", "port": 80, "port_tls": 443}),
        ("domain_delegate", {"domain": "wt.example.org"}),
        ("reverse_proxy", {"domain": f"wt.{m}", "secret": good_secret}),
    ):
        for key in fields:
            for bad in WRONG_TYPES:
                if key in ("port", "port_tls") and (bad is None or bad is False or bad == 42):
                    continue  # "no port" and port 42 are valid values
                yield Case(f"wrong JSON type of {kind}.{key}", {"type": kind, **fields, key: bad})
            if kind == "proxy" and key in ("port", "port_tls"):
                continue  # one port is enough
            yield Case(f"{kind} without {key}", {"type": kind, **fields, "remove": [key]})
    # The explorer's common fields.
    for key, bad in (("customer_tid", "abc"), ("customer_tid", None), ("customer_tid", 1.5),
                     ("customer_tid", [1]), ("version", "x"),
                     ("epoch", "yesterday"), ("epoch", 2**70), ("reference", 42),
                     ("reference", "not-a-ref"), ("metadata", {"a": 1}),
                     ("customer_signature", [1])):  # fmt: skip
        yield Case(f"wrong JSON type of {key}",
                   {"type": "subdomain", "domain": f"common-{key}.{m}",
                    "ips": ["185.69.166.1"], "overrides": {key: bad}})  # fmt: skip


def _padded(cases: list[Case], size: int, rng: random.Random) -> list[Case]:
    """`cases`, then random variants of them (combining marks on the domain) up to `size`."""
    out = list(cases)
    i = 0
    while len(out) < size:
        extra = dict(cases[i % len(cases)].spec)
        if "domain" in extra and isinstance(extra["domain"], str):
            extra["domain"] = extra["domain"] + "\u0301" * rng.randrange(1, 4)
        out.append(Case(cases[i % len(cases)].why + " (+ combining marks)", extra))
        i += 1
    return out


def corpus(s: Setting, *, seed: int = 8, size: int = 1000) -> list[Case]:
    """At least `size` hostile cases (workload specs without node_id/customer_tid: the caller
    adds the attacker's); shuffled with `seed`."""
    rng = random.Random(seed)
    good_secret = encrypt_secret(f"{s.attacker}:mine", s.node_id, version=2, user=s.attacker_keys)
    # one generator after the other: they draw from `rng` in this order
    cases = [
        *_domain_cases(s, rng),
        *_proxy_cases(s, rng),
        *_reverse_proxy_cases(s, rng, seed + 1, good_secret),
        *_takeovers(s, good_secret),
        *_type_cases(s),
        *_wrong_json_type_cases(s, good_secret),
    ]
    rng.shuffle(cases)
    return _padded(cases, size, rng)


def unanswerable() -> list[dict[str, Any]]:
    """Poll items a gateway cannot even address a result to (`raw` bodies); they must be
    skipped without stopping the batch."""
    return [
        {"raw": "{}"},
        {"raw": '"a string"'},
        {"raw": "[1,2,3]"},
        {"raw": '{"id":"x","workload_id":"y","workload_type":6}'},
        {"raw": '{"id":-5,"workload_id":1,"workload_type":6,"next_action":3}'},
        {"raw": '{"workload_type":6,"next_action":3,"domain":"x.gw.example.com"}'},
    ]
