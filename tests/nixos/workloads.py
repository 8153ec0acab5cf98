"""Publish the NixOS VM test's workloads on the development explorer and wait for the gateway.

Runs on the explorer node with the agent's Python modules:
    python3 workloads.py ADMIN_URL GATEWAY_IP BACKEND_IP WG_PUBLIC_KEY
Prints one JSON object: the gateway's node id, the reverse-proxy plaintext secret that `trc`
needs, and the 4to6 result data (the client's IPv6 address and the gateway's WireGuard peer).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sys
from typing import Any

from tfgateway_devexplorer.admin_client import AdminClient, WorkloadInfo
from tfgateway_devexplorer.user_crypto import UserKeys, encrypt_secret, reverse_proxy_plaintext

RESULT_OK = 1


async def deployed(admin: AdminClient, workload: WorkloadInfo) -> dict[str, Any]:
    """Wait for the gateway's result; any state but ok fails the test with its message."""
    info = await admin.wait_for_result(workload.id, timeout=180)
    if info.state != RESULT_OK:
        raise SystemExit(f"workload {workload.id} ({workload.type}) failed: {info.result}")
    return info.result


async def main(admin_url: str, gateway_ip: str, backend_ip: str, wg_public_key: str) -> None:
    user = UserKeys.generate()
    async with AdminClient(admin_url) as admin:
        gateways = list((await admin.state())["gateways"])
        if len(gateways) != 1:
            raise SystemExit(f"expected one registered gateway, got {gateways}")
        node_id = gateways[0]
        tid = (await admin.create_user(user.public_key_hex, name="vmtest")).id

        plaintext = reverse_proxy_plaintext(tid, secrets.token_hex(16))
        published = [
            await admin.subdomain(node_id, tid, "web.gw.test", [gateway_ip]),
            await admin.subdomain(node_id, tid, "tunnel.gw.test", [gateway_ip]),
            await admin.proxy(node_id, tid, "web.gw.test", backend_ip, 80, 443),
            await admin.reverse_proxy(
                node_id, tid, "tunnel.gw.test", encrypt_secret(plaintext, node_id, user=user)
            ),
        ]
        for workload in published:
            await deployed(admin, workload)

        fourtosix = await deployed(admin, await admin.gateway4to6(node_id, tid, wg_public_key))
        data = fourtosix["data_json"]
        print(
            json.dumps(
                {
                    "node_id": node_id,
                    "trc_secret": plaintext,
                    "fourtosix": json.loads(data) if isinstance(data, str) else data,
                }
            )
        )


if __name__ == "__main__":
    if len(sys.argv) != 5:
        raise SystemExit(__doc__)
    asyncio.run(main(*sys.argv[1:]))
