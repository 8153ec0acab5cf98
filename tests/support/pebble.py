"""Pebble, Let's Encrypt's ACME test server, for the router's certificates in tests and the demo.

Built from the Go module proxy into $TFGW_BIN (tests/tools). It runs in the client namespace,
so its validation requests reach the gateway from outside as Let's Encrypt's would, and it
resolves names with the gateway's own CoreDNS (`-dnsserver`), so a name validates only if the
gateway's DNS points it at the gateway (HTTP-01, TLS-ALPN-01) or serves its `_acme-challenge`
TXT record (DNS-01). Its HTTPS API has a certificate of the harness's test CA, which the
router is told to trust (`acme_ca_root`); the certificates it issues chain to a root it makes
at start, fetched from its management API for clients to verify against.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import trustme

from tests.support.netns import Namespace

ACME_PORT = 14000
MANAGEMENT_PORT = 15000

# Validations as Let's Encrypt does them, without Pebble's testing noise: no random sleeps
# before validating, no rejected nonces, no reuse of valid authorizations (every order is
# validated again, so a name that stopped pointing at the gateway fails).
ENV = {"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0", "PEBBLE_AUTHZREUSE": "0"}

# Certificate profiles: 90 days, and a short-lived one the renewal test asks for. Pebble picks
# one at random for an order that names none, so the router always names one.
DEFAULT = "default"
SHORT_LIVED = "shortlived"
SHORT_LIFETIME = 30  # seconds


@dataclass(frozen=True)
class Pebble:
    """Where Pebble listens and the files the gateway's parts need from it."""

    address: str
    config: Path

    @property
    def directory(self) -> str:
        return f"https://{self.address}:{ACME_PORT}/dir"

    @property
    def management(self) -> str:
        return f"https://{self.address}:{MANAGEMENT_PORT}"

    def args(self, binary: str, dns_server: str) -> list[str]:
        return [binary, "-config", str(self.config), "-dnsserver", dns_server]


def write_config(workdir: Path, address: str, ca: trustme.CA) -> Pebble:
    """Pebble's JSON configuration and its API certificate (for `address`) from `ca`."""
    cert = ca.issue_cert(address)
    cert_file, key_file = workdir / "pebble.pem", workdir / "pebble.key"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    config = workdir / "pebble.json"
    config.write_text(
        json.dumps(
            {
                "pebble": {
                    "listenAddress": f"{address}:{ACME_PORT}",
                    "managementListenAddress": f"{address}:{MANAGEMENT_PORT}",
                    "certificate": str(cert_file),
                    "privateKey": str(key_file),
                    "httpPort": 80,
                    "tlsPort": 443,
                    "ocspResponderURL": "",
                    "externalAccountBindingRequired": False,
                    "retryAfter": {"authz": 1, "order": 1},
                    "keyAlgorithm": "ecdsa",
                    "profiles": {
                        DEFAULT: {"description": "90 days", "validityPeriod": 7776000},
                        SHORT_LIVED: {
                            "description": "for the renewal test",
                            "validityPeriod": SHORT_LIFETIME,
                        },
                    },
                }
            },
            indent=2,
        )
    )
    return Pebble(address, config)


def fetch_root(ns: Namespace, pebble: Pebble, ca_file: Path, out: Path) -> None:
    """Save the root Pebble issues under (made at its start) for clients to verify against."""
    pem = ns.run(
        "curl", "-sS", "--fail", "--max-time", "5", "--cacert", str(ca_file),
        f"{pebble.management}/roots/0",
    )  # fmt: skip
    if "BEGIN CERTIFICATE" not in pem:
        raise RuntimeError(f"Pebble gave no root certificate: {pem[:200]!r}")
    out.write_text(pem)
