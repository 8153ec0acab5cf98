"""Reservations into data-plane state: DNS zones and names, proxy routes, 4to6 WireGuard peers.

Knows the redis layouts the data plane reads (`coredns_redis`, `tcprouter`), who holds a name
(`ownership`), the rules for names and targets (`validation`) and netlink (`wireguard`);
nothing of HTTP or of the explorer. Every primitive implements `provisioner.Provisioner`.
"""
