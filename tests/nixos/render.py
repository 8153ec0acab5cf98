"""Write or check the files in tests/nixos/rendered/ from what the NixOS module renders.

    render.py update EVAL_JSON DIR   write the kept files
    render.py check EVAL_JSON DIR    exit 1 (with a diff) when a kept file differs

EVAL_JSON is the module's rendering of rendered/gateway.nix and rendered/standalone.nix
(the standalone-* files and workloads.toml): from the offline evaluation (`rendered` of
offline-eval.nix: router.toml and the workloads file as settings) or from a real NixOS
evaluation (the flake's `rendered-files` check: router.toml as the generated file named in the
router's command line, the workloads file as the one the module generated). Store paths are
normalised, `@store@` before a `/` (a package: its program follows) and `@store:NAME@`
otherwise (a generated file), so both evaluations compare equal.
Standard library only: the flake check runs it with nixpkgs' plain python3.
"""

from __future__ import annotations

import difflib
import json
import re
import sys
import tomllib
from pathlib import Path
from typing import Any

STORE_PATH = re.compile(r"/nix/store/[0-9a-z]{32}-([^/\"' ]+)(/?)")


def normalize(text: str) -> str:
    return STORE_PATH.sub(lambda m: "@store@/" if m.group(2) else f"@store:{m.group(1)}@", text)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"router.toml: cannot write {value!r}")


def _tables(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def toml_text(table: dict[str, Any], path: tuple[str, ...] = (), array: bool = False) -> str:
    """TOML for router.toml's and the workloads file's shapes: scalars and lists, then
    sub-tables and arrays of tables (keys quoted when needed)."""
    name = ".".join(_key(k) for k in path)
    lines = [f"[[{name}]]" if array else f"[{name}]"] if path else []
    lines += [
        f"{_key(k)} = {toml_value(v)}"
        for k, v in table.items()
        if not isinstance(v, dict) and not _tables(v)
    ]
    text = "\n".join(lines) + ("\n" if lines else "")
    for k, v in table.items():
        if isinstance(v, dict):
            text += toml_text(v, (*path, k))
        elif _tables(v):
            text += "".join(toml_text(item, (*path, k), array=True) for item in v)
    return text


def _key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def router_settings(rendering: dict[str, Any]) -> dict[str, Any]:
    if rendering.get("routerSettings") is not None:
        return dict(rendering["routerSettings"])
    match = re.search(r"/nix/store/[0-9a-z]{32}-router\.toml", rendering["routerCommand"])
    if match is None:
        raise SystemExit("no router.toml in the router's command line")
    return tomllib.loads(Path(match.group(0)).read_text())


def workloads_settings(rendering: dict[str, Any]) -> dict[str, Any]:
    if rendering.get("workloadsSettings") is not None:
        return dict(rendering["workloadsSettings"])
    return tomllib.loads(Path(rendering["workloadsFile"]).read_text())


def nft_text(tables: dict[str, Any]) -> str:
    """The tables as NixOS's nftables module writes them into its ruleset."""
    out = []
    for name, table in sorted(tables.items()):
        body = "".join(f"  {line}\n" if line else "\n" for line in table["content"].splitlines())
        out.append(f"table {table['family']} {name} {{\n{body}}}\n")
    return "\n".join(out)


def files(rendering: dict[str, Any]) -> dict[str, str]:
    """Kept file name -> text (router.toml from the settings, compared as data)."""
    return {
        "Corefile": normalize(rendering["corefile"]),
        "router.toml": toml_text(router_settings(rendering)),
        "agent.cmdline": normalize(rendering["agentCommand"]) + "\n",
        "router.cmdline": normalize(rendering["routerCommand"]) + "\n",
        "dns.cmdline": normalize(rendering["dnsCommand"]) + "\n",
        "redis.json": json.dumps(rendering["redis"], indent=2, sort_keys=True) + "\n",
        "fourtosix.nft": nft_text(rendering["nftables"]),
        "standalone-agent.cmdline": normalize(rendering["standaloneAgentCommand"]) + "\n",
        "standalone-unit.json": normalize(
            json.dumps(rendering["standaloneAgentUnit"], indent=2, sort_keys=True) + "\n"
        ),
        "workloads.toml": toml_text(workloads_settings(rendering)),
    }


def same(name: str, kept: str, new: str) -> bool:
    if name.endswith(".toml"):  # remarshal and this writer format TOML differently
        return tomllib.loads(kept) == tomllib.loads(new)
    return kept == new


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] not in ("update", "check"):
        print(__doc__, file=sys.stderr)
        return 2
    mode, source, folder = argv[0], Path(argv[1]), Path(argv[2])
    rendering = json.loads(source.read_text())
    stale = []
    for name, text in files(rendering).items():
        path = folder / name
        if mode == "update":
            path.write_text(text)
            continue
        kept = path.read_text() if path.exists() else ""
        if not same(name, kept, text):
            stale.append(name)
            sys.stderr.writelines(
                difflib.unified_diff(
                    kept.splitlines(keepends=True),
                    text.splitlines(keepends=True),
                    f"kept {path}",
                    "what the module renders",
                )
            )
    if stale:
        print(
            f"the module renders something else than the kept {', '.join(stale)}: review the "
            "diff, then refresh them (docs/nixos.md, 'Kept renderings')",
            file=sys.stderr,
        )
        return 1
    print(f"{'wrote' if mode == 'update' else 'kept renderings match'}: {folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
