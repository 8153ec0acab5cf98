"""Which explorer names the router terminates TLS for (`--terminate-tls`).

An explorer workload cannot ask for termination (its JSON has no such field), so the operator
chooses by domain: a proxy or reverse proxy on a name equal to or under one of the domains gets
`terminate: "http"` (and `redirect` with `--terminate-tls-redirect`) in its route record. A
proxy without a plain port (`port` 0) is left as it is: its backend speaks TLS only.
"""

from __future__ import annotations

from dataclasses import dataclass

from tfgateway.primitives.tcprouter import PASSTHROUGH, RouteOptions

__all__ = ["NO_TERMINATION", "TerminationPolicy"]


@dataclass(frozen=True)
class TerminationPolicy:
    domains: tuple[str, ...] = ()
    redirect: bool = False

    def options(self, domain: str, *, plain_backend: bool) -> RouteOptions:
        """The route options of a proxy on `domain` (lowercase, no trailing dot)."""
        if plain_backend and any(domain == d or domain.endswith("." + d) for d in self.domains):
            return RouteOptions(terminate="http", redirect=self.redirect)
        return PASSTHROUGH


NO_TERMINATION = TerminationPolicy()
