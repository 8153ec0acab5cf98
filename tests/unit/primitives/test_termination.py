"""Route options: tfrouter's optional keys appear only in records that use them."""

from __future__ import annotations

import base64
import json

from tfgateway.primitives.tcprouter import (
    PASSTHROUGH,
    RouteOptions,
    decode_service,
    encode_service,
)
from tfgateway.primitives.termination import NO_TERMINATION, TerminationPolicy


def inner(value: bytes) -> bytes:
    return base64.b64decode(json.loads(value)["Value"])


def test_options_follow_user_and_only_when_set() -> None:
    plain = encode_service("a.example", addr="10.0.0.5", http_port=80, user="7")
    assert plain == encode_service(
        "a.example", addr="10.0.0.5", http_port=80, user="7", options=PASSTHROUGH
    )
    assert inner(plain) == (
        b'{"addr":"10.0.0.5","clientsecret":"","tlsport":0,"httpport":80,"user":"7"}'
    )
    full = encode_service(
        "a.example", addr="10.0.0.5", http_port=80, user="7",
        options=RouteOptions(terminate="http", redirect=True, proxy_protocol=2),
    )  # fmt: skip
    assert inner(full) == (
        b'{"addr":"10.0.0.5","clientsecret":"","tlsport":0,"httpport":80,"user":"7",'
        b'"terminate":"http","redirect":true,"proxyprotocol":2}'
    )
    assert decode_service(full) == {
        "addr": "10.0.0.5", "clientsecret": "", "tlsport": 0, "httpport": 80, "user": "7",
        "terminate": "http", "redirect": True, "proxyprotocol": 2,
    }  # fmt: skip
    only_pp = encode_service(
        "a.example", secret="7:s", user="7", options=RouteOptions(proxy_protocol=1)
    )
    assert inner(only_pp).endswith(b'"user":"7","proxyprotocol":1}')


def test_policy_by_domain() -> None:
    policy = TerminationPolicy(("gw.example",), redirect=True)
    http = RouteOptions(terminate="http", redirect=True)
    assert policy.options("gw.example", plain_backend=True) == http
    assert policy.options("a.b.gw.example", plain_backend=True) == http
    assert policy.options("agw.example", plain_backend=True) == PASSTHROUGH
    assert policy.options("gw.example.org", plain_backend=True) == PASSTHROUGH
    # a proxy whose backend has only a TLS port stays passthrough
    assert policy.options("a.gw.example", plain_backend=False) == PASSTHROUGH
    assert NO_TERMINATION.options("a.gw.example", plain_backend=True) == PASSTHROUGH
