"""What the operator gets back for declared workloads (what the explorer would receive as
results): each entry's state, and what a client needs: the WireGuard configuration of a 4to6
peer, the `tftunnel` command line of a tunnel. Never a secret: the tunnel command reads the
secret file."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from tfgateway.declared.records import FileState, Record, read_all, read_file_state

__all__ = ["Declared", "collect", "render", "tunnel_command", "wireguard_config"]


@dataclass(frozen=True)
class Declared:
    file: FileState | None
    records: dict[str, Record]

    def to_json(self) -> dict[str, Any]:
        return {
            "file": None if self.file is None else self.file.__dict__,
            "workloads": [
                {
                    "name": name,
                    "kind": rec.kind,
                    "state": rec.state,
                    "message": rec.message,
                    "domain": rec.data.get("domain", ""),
                    "client": client_text(rec),
                }
                for name, rec in sorted(self.records.items())
            ],
        }


async def collect(client: aioredis.Redis) -> Declared:
    return Declared(await read_file_state(client), await read_all(client))


def wireguard_config(rec: Record) -> str:
    """The client's wg-quick configuration for a 4to6 peer (its private key is its own)."""
    result = rec.result or {}
    ips = result.get("ips") or []
    peers = result.get("peers") or []
    if not ips or not peers:
        return ""
    peer = peers[0]
    return "\n".join(
        [
            "[Interface]",
            "PrivateKey = <the private key of " + str(rec.data.get("public_key", "")) + ">",
            f"Address = {ips[0]}/128",
            "",
            "[Peer]",
            f"PublicKey = {peer.get('public_key', '')}",
            f"Endpoint = {peer.get('endpoint', '')}",
            "AllowedIPs = " + ", ".join(peer.get("allowed_ips") or ["::/0"]),
            "PersistentKeepalive = 25",
        ]
    )


def tunnel_command(rec: Record, pin: str | None = None) -> str:
    """The `tftunnel` command line for the host behind NAT (secret read from the file); with the
    router's pin, the authenticated protocol (the secret never crosses the wire)."""
    remote = str(rec.client.get("remote", ""))
    secret_file = str(rec.client.get("secret_file", ""))
    if not remote or not secret_file:
        return ""
    pinned = f" --pin {shlex.quote(pin)}" if pin else ""
    return (
        f'TRC_SECRET="$(cat {shlex.quote(secret_file)})" tftunnel '
        f"--remote {shlex.quote(remote)}{pinned} --local 127.0.0.1:80 --local-tls 127.0.0.1:443"
    )


def client_text(rec: Record, pin: str | None = None) -> str:
    if rec.state != "ok":
        return ""
    if rec.kind == "fourtosix":
        return wireguard_config(rec)
    if rec.kind == "reverse_proxy":
        return tunnel_command(rec, pin)
    return ""


def render(declared: Declared, pin: str | None = None) -> list[str]:
    """Lines for `tfgateway status`."""
    if declared.file is None and not declared.records:
        return []
    lines: list[str] = []
    if declared.file is not None:
        lines.append(f"workloads file {declared.file.path}:")
        if declared.file.error:
            lines.append(
                f"  NOT APPLIED (what was applied before is served): {declared.file.error}"
            )
    header = ("KIND", "NAME", "DOMAIN", "STATE")
    rows = [
        (rec.kind, name, str(rec.data.get("domain") or rec.data.get("public_key") or ""), rec.state)
        for name, rec in sorted(declared.records.items(), key=lambda kv: (kv[1].kind, kv[0]))
    ]
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)
    ]
    for line in [header, *rows]:
        lines.append(
            "  " + "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
        )
    counts = {
        s: sum(r.state == s for r in declared.records.values()) for s in ("ok", "error", "pending")
    }
    lines.append("  " + ", ".join(f"{n} {s}" for s, n in counts.items()) + " declared workloads")
    for name, rec in sorted(declared.records.items()):
        if rec.state != "ok" and rec.message:
            lines.append(f"  {rec.state.upper()} {name}: {rec.message}")
        text = client_text(rec, pin)
        if text:
            what = "WireGuard config for the client" if rec.kind == "fourtosix" else "tunnel client"
            lines.append(f"  {rec.kind} {name}: {what}:")
            lines += ["    " + t if t else "" for t in text.splitlines()]
    return lines
