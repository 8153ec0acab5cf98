"""What the NixOS module renders for a standalone gateway (tests/nixos/rendered/standalone.nix,
kept as standalone-agent.cmdline and workloads.toml, checked against the module by
scripts/eval-nix-offline.sh) is what the agent accepts: its command line parses to a
standalone configuration, and every entry of the generated file is served, none refused."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from tfgateway.cli import parse_config
from tfgateway.declared.file import KINDS, parse

RENDERED = Path(__file__).resolve().parents[1] / "nixos" / "rendered"
CREDENTIAL = "/run/credentials/tfgateway.service/home-tunnel"


@pytest.mark.timeout(10)
def test_the_rendered_command_line_is_a_standalone_agent(tmp_path: Path) -> None:
    args = shlex.split((RENDERED / "standalone-agent.cmdline").read_text())
    assert args[0] == "@store@/bin/tfgateway"
    # %d: systemd's credentials directory, with the redis password the agent reads at start.
    (tmp_path / "redis-password").write_text("secret\n")
    config = parse_config([a.replace("%d/", f"{tmp_path}/") for a in args[1:]])
    assert config.explorer == ""
    assert config.workloads == "/etc/tfgateway/workloads.toml"


@pytest.mark.timeout(10)
def test_every_generated_entry_is_accepted(tmp_path: Path) -> None:
    text = (RENDERED / "workloads.toml").read_text()
    # The credential systemd would hand over (LoadCredential of standalone-unit.json).
    assert f'secret_file = "{CREDENTIAL}"' in text
    secret = tmp_path / "home-tunnel"
    secret.write_text("0:" + "s" * 32 + "\n")
    declared = parse(text.replace(CREDENTIAL, str(secret)), "workloads.toml", allow_private=True)
    assert [str(e) for e in declared.errors] == []
    assert {e.kind for e in declared.entries} == set(KINDS)
    assert len(declared.entries) == text.count("[[")
    assert {e.name for e in declared.entries if e.kind == "reverse_proxy"} == {"home"}
    tunnel = next(e for e in declared.entries if e.kind == "reverse_proxy")
    assert tunnel.secret == "0:" + "s" * 32
    assert "s" * 32 not in repr(tunnel.fields)


@pytest.mark.timeout(10)
def test_the_credential_is_the_one_the_unit_loads() -> None:
    unit = (RENDERED / "standalone-unit.json").read_text()
    assert '"home-tunnel:/var/lib/secrets/tfgateway/home-tunnel"' in unit
    assert '"ExecReload": "@store@/bin/kill -HUP $MAINPID"' in unit
