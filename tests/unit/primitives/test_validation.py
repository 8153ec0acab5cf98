"""Domain names, proxy targets and subdomain record addresses."""

from __future__ import annotations

import ipaddress
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tfgateway.primitives import validation
from tfgateway.primitives.validation import (
    ValidationError,
    is_public_suffix,
    normalize_domain,
    validate_proxy_target,
    validate_record_ips,
)


@pytest.mark.parametrize(
    ("given_", "expected"),
    [
        ("Example.COM", "example.com"),
        ("www.example.com.", "www.example.com"),
        ("  app.gateway.example.com ", "app.gateway.example.com"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("XN--BCHER-KVA.example", "xn--bcher-kva.example"),
        ("a-b.c1.io", "a-b.c1.io"),
        ("1.2.3.example", "1.2.3.example"),
        ("a" * 63 + ".com", "a" * 63 + ".com"),
    ],
)
def test_valid_domains_are_normalized(given_: str, expected: str) -> None:
    assert normalize_domain(given_) == expected


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("", "cannot be empty"),
        ("com", "at least 2 labels"),
        ("a..b.com", "empty label"),
        (".example.com", "empty label"),
        ("example.com..", "empty label"),
        ("*.example.com", "wildcards"),
        ("_acme.example.com", "underscores"),
        ("-a.example.com", "hyphens"),
        ("a-.example.com", "hyphens"),
        ("a b.example.com", "letters, digits"),
        ("a/b.example.com", "letters, digits"),
        ("bücher.example", "punycode"),
        ("ab--cd.example.com", "reserved for IDNA"),
        ("xn--.example.com", "xn--"),
        ("xn--abc-.example.com", "hyphens"),
        ("xn--zzzzzzzzz9.example.com", "xn--"),
        ("a" * 64 + ".com", "longer than 63"),
        (".".join(["a" * 60] * 5), "too long"),
        ("1.2.3.4", "all digits"),
        ("example.com\n.evil", "letters, digits"),
    ],
)
def test_invalid_domains_are_refused_with_a_reason(bad: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        normalize_domain(bad)


def test_non_string_domain() -> None:
    with pytest.raises(ValidationError, match="must be a string"):
        normalize_domain(5)


def test_unicode_hint_suggests_punycode() -> None:
    with pytest.raises(ValidationError, match=r"xn--bcher-kva\.example"):
        normalize_domain("bücher.example")


_LABEL = st.from_regex(r"[a-z0-9]([a-z0-9]{0,10})?", fullmatch=True)


@given(st.lists(_LABEL, min_size=2, max_size=5), st.booleans())
def test_normalize_is_idempotent_and_lowercase(labels: list[str], upper: bool) -> None:
    if labels[-1].isdigit():
        labels[-1] += "x"
    name = ".".join(labels)
    out = normalize_domain(name.upper() if upper else name)
    assert out == name
    assert normalize_domain(out) == out
    assert normalize_domain(out + ".") == out


@given(st.text(max_size=80))
def test_arbitrary_text_is_normalized_or_refused(text: str) -> None:
    try:
        out = normalize_domain(text)
    except ValidationError:
        return
    assert out == out.lower()
    assert set(out) <= set(string.ascii_lowercase + string.digits + "-.")
    assert not out.endswith(".")
    assert len(out) <= 253


# ----- proxy targets -----


@pytest.mark.parametrize("addr", ["8.8.8.8", "185.69.166.1", "2a02:1802:5e::1", " 1.1.1.1 "])
def test_public_targets_are_accepted(addr: str) -> None:
    assert validate_proxy_target(addr) == ipaddress.ip_address(addr.strip())


@pytest.mark.parametrize(
    ("addr", "message"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("::ffff:127.0.0.1", "loopback|reserved"),
        ("64:ff9b::7f00:1", "loopback|reserved"),
        ("fec0::1", "site-local|reserved"),
        ("localhost", "not an IP address"),
        ("example.com", "not an IP address"),
        ("8.8.8.8:80", "not an IP address"),
        ("[::1]", "not an IP address"),
        ("fe80::1%eth0", "scoped|link-local"),
        ("", "cannot be empty"),
        ("10.0.0.5", "private"),
        ("192.168.1.1", "private"),
        ("172.16.0.1", "private"),
        ("100.64.0.1", "private"),
        ("fd00::1", "private"),
        ("192.0.2.1", "private"),
    ],
)
def test_forbidden_targets(addr: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        validate_proxy_target(addr)


def test_private_targets_only_when_allowed() -> None:
    for addr in ["10.0.0.5", "192.168.1.1", "172.16.0.1", "100.64.0.1", "fd00::1"]:
        assert validate_proxy_target(addr, allow_private=True) == ipaddress.ip_address(addr)
    for addr in ["127.0.0.1", "169.254.1.1", "::", "224.0.0.1"]:
        with pytest.raises(ValidationError):
            validate_proxy_target(addr, allow_private=True)


def test_own_addresses_are_refused() -> None:
    own = ["185.69.166.1", ipaddress.ip_address("2a02:1802:5e::1"), "10.1.0.1"]
    for addr in ["185.69.166.1", "2a02:1802:5e::1", "2a02:1802:5e:0:0:0:0:1"]:
        with pytest.raises(ValidationError, match="address of this gateway"):
            validate_proxy_target(addr, own_addresses=own)
    with pytest.raises(ValidationError, match="address of this gateway"):
        validate_proxy_target("10.1.0.1", own_addresses=own, allow_private=True)
    assert validate_proxy_target("185.69.166.2", own_addresses=own)


@given(st.ip_addresses())
def test_any_accepted_target_is_global_and_not_loopback(ip: ipaddress.IPv4Address) -> None:
    try:
        out = validate_proxy_target(str(ip))
    except ValidationError:
        return
    assert out.is_global
    assert not out.is_loopback
    assert not out.is_link_local
    assert not out.is_multicast
    assert not out.is_unspecified


# ----- subdomain record addresses -----


def test_record_ips_dedup_and_map_v4() -> None:
    out = validate_record_ips(
        ["185.69.166.1", "2a02:1802:5e::1", "::ffff:185.69.166.1", "10.0.0.1"]
    )
    assert [str(ip) for ip in out] == ["185.69.166.1", "2a02:1802:5e::1", "10.0.0.1"]
    assert validate_record_ips(["127.0.0.1"]) == [ipaddress.ip_address("127.0.0.1")]


@pytest.mark.parametrize(
    ("ips", "message"),
    [
        ([], "at least one"),
        ("1.2.3.4", "must be a list"),
        ([""], "cannot be empty"),
        (["nope"], "not an IP address"),
        ([5], "must be a string"),
        (["0.0.0.0"], "unspecified"),
        (["::"], "unspecified"),
        (["224.1.1.1"], "multicast"),
        (["255.255.255.255"], "reserved"),
        (["1.1.1.1"] * 65, "at most 64"),
    ],
)
def test_bad_record_ips(ips: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        validate_record_ips(ips)


@pytest.mark.parametrize(
    ("name", "public"),
    [
        ("co.uk", True),  # ICANN section
        ("github.io", True),  # private section
        ("s3.amazonaws.com", True),
        ("anything.ck", True),  # wildcard rule *.ck
        ("www.ck", False),  # its exception !www.ck
        ("com", True),
        ("unknown-tld", True),  # a top-level label the list does not know
        ("example.co.uk", False),
        ("someone.github.io", False),
        ("gw.example", False),
        ("xn--p1ai", True),  # .рф in its A-label form
        ("xn--80aswg.xn--p1ai", False),
    ],
)
def test_public_suffixes(name: str, public: bool) -> None:
    assert is_public_suffix(name) is public


@given(
    st.text(alphabet="aZ09-.x_*é ", max_size=30)
    | st.lists(st.text(alphabet="ab9-", min_size=0, max_size=70), min_size=1, max_size=5).map(
        ".".join
    ),
    st.integers(1, 3),
)
def test_fast_path_agrees_with_every_check(text: str, min_labels: int) -> None:
    """The one-expression path for common names returns what the label-by-label checks
    return, and nothing they refuse."""
    fast = validation._fast_domain(text.strip(), min_labels)
    try:
        slow: str | None = validation._checked_domain(text, min_labels=min_labels)
    except ValidationError:
        slow = None
    if fast is not None:
        assert fast == slow
