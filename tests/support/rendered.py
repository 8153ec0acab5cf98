"""The NixOS module's kept renderings (tests/nixos/rendered/) as the harness runs them.

The files are what `services.tfgateway` generates for tests/nixos/rendered/gateway.nix
(checked against the module by scripts/eval-nix-offline.sh and the flake's `rendered-files`
check). Only paths and addresses are substituted here: store paths become the harness's
binaries and files, `%d` (systemd's credentials directory) the harness's credentials folder,
the explorer the development explorer, the upstream resolver an address inside the test.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path

from tests.support.processes import agent_program, binary

RENDERED = Path(__file__).resolve().parents[1] / "nixos" / "rendered"

# Addresses of the reference configuration that only make sense on a real host.
EXPLORER = "http://explorer.test:8080/api/v1"
UPSTREAM = "192.0.2.53"
PROOF_RESOLVER = "192.0.2.54"
SEED = "/var/lib/tfgateway/identity.seed"
# The standalone reference (rendered/standalone.nix): its workloads file and where systemd
# hands the agent its credentials.
WORKLOADS = "/etc/tfgateway/workloads.toml"
CREDENTIALS = "/run/credentials/tfgateway.service/"


class RenderedError(ValueError):
    """A kept file no longer has the shape the harness substitutes into."""


@dataclass(frozen=True)
class Rendered:
    """Substitutes into the kept files; `upstream` replaces the reference's resolver."""

    upstream: str = "127.0.0.1:9"
    folder: Path = RENDERED

    def text(self, name: str) -> str:
        return (self.folder / name).read_text()

    def redis_conf(self, data: Path, password_file: Path) -> str:
        """redis.conf as nixpkgs' redis module writes it from the module's settings (the
        requirePassFile's content appended as `requirepass`, as its ExecStartPre does)."""
        r = json.loads(self.text("redis.json"))
        if r["requirePassFile"] != "/var/lib/tfgateway-secrets/redis-password":
            raise RenderedError(f"redis.json: unexpected requirePassFile {r['requirePassFile']}")
        lines = [
            f"port {r['port']}",
            f"bind {r['bind']}",
            f"dir {data}",
            f"appendonly {'yes' if r['appendOnly'] else 'no'}",
            f"appendfsync {r['appendFsync']}",
            *(f"save {seconds} {changes}" for seconds, changes in r["save"]),
            *(f"{key} {value}" for key, value in r["settings"].items()),
            f"requirepass {password_file.read_text().strip()}",
        ]
        return "\n".join(lines) + "\n"

    def corefile(self) -> str:
        text = self.text("Corefile")
        if f"forward . {UPSTREAM}\n" not in text:
            raise RenderedError(f"Corefile: no 'forward . {UPSTREAM}' to point at {self.upstream}")
        return text.replace(f"forward . {UPSTREAM}\n", f"forward . {self.upstream}\n")

    def dns_args(self, corefile: Path) -> list[str]:
        return self._command("dns.cmdline", {"@store:Corefile@": str(corefile)})

    def router_args(self) -> list[str]:
        return self._command(
            "router.cmdline", {"@store:router.toml@": str(self.folder / "router.toml")}
        )

    def agent_args(
        self, explorer: str, seed: Path, credentials: Path, proof_resolver: str
    ) -> list[str]:
        """The agent's command line; `proof_resolver` replaces the reference's resolver of
        proofs of control (the harness's world DNS: never the Internet)."""
        args = self._command(
            "agent.cmdline",
            {EXPLORER: explorer, SEED: str(seed), PROOF_RESOLVER: proof_resolver},
        )
        return [a.replace("%d/", f"{credentials}/") for a in args]

    def standalone_agent_args(
        self, seed: Path, credentials: Path, workloads: Path, proof_resolver: str
    ) -> list[str]:
        """The standalone reference's agent (no explorer, `--workloads`). Its 4to6 flags are
        left out: kernel WireGuard exists only in the VM test, so here the file's 4to6 peer
        gets the error of a gateway without `--endpoint` and every other entry is served."""
        args = self._command(
            "standalone-agent.cmdline",
            {SEED: str(seed), WORKLOADS: str(workloads), PROOF_RESOLVER: proof_resolver},
        )
        for flag in ("--endpoint", "--wg-iface"):
            if flag not in args:
                raise RenderedError(f"standalone-agent.cmdline: no {flag} to leave out")
            i = args.index(flag)
            del args[i : i + 2]
        return [a.replace("%d/", f"{credentials}/") for a in args]

    def workloads(self, credentials: Path) -> str:
        """The generated workloads file, its secret files in the harness's credentials."""
        text = self.text("workloads.toml")
        if CREDENTIALS not in text:
            raise RenderedError(f"workloads.toml: no secret_file under {CREDENTIALS}")
        return text.replace(CREDENTIALS, f"{credentials}/")

    def standalone_credentials(self) -> list[str]:
        """Names of the credentials the standalone unit loads besides the redis password."""
        unit = json.loads(self.text("standalone-unit.json"))
        names = [c.partition(":")[0] for c in unit["LoadCredential"]]
        return [n for n in names if n != "redis-password"]

    def _command(self, name: str, substitutions: dict[str, str]) -> list[str]:
        """A unit's ExecStart as a list: the program from the harness, arguments swapped
        exactly where they equal a substitution's key."""
        args = shlex.split(self.text(name))
        program = args[0]
        if not program.startswith("@store@/bin/"):
            raise RenderedError(f"{name}: the program is not a package's: {program}")
        missing = set(substitutions) - set(args)
        if missing:
            raise RenderedError(f"{name}: no argument {sorted(missing)} to substitute")
        return [_program(program.removeprefix("@store@/bin/"))] + [
            substitutions.get(a, a) for a in args[1:]
        ]


def _program(name: str) -> str:
    return agent_program(name) if name == "tfgateway" else binary(name)
