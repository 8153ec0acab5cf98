"""The local run cannot rot: `scripts/demo.sh --check` starts it, runs every printed command."""

from __future__ import annotations

import re
import signal
import subprocess
import threading
from pathlib import Path

import pytest

from tests.support.netns import NETNS_DIR
from tests.support.processes import wait_until

REPO = Path(__file__).resolve().parents[2]


def processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.timeout(240)
def test_demo_check_runs_every_printed_command(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    proc = subprocess.run(
        [str(REPO / "scripts/demo.sh"), "--check", "--skip-setup", "--workdir", str(workdir)],
        capture_output=True,
        text=True,
        timeout=200,
        check=False,
    )
    assert proc.returncode == 0, f"demo --check failed:\n{proc.stdout}\n{proc.stderr}"
    assert "check: all printed commands work" in proc.stdout
    for tool in ("dig @10.71.1.1", "curl -sS", "ip netns exec"):
        assert tool in proc.stdout
    match = re.search(r"^Namespaces: (.+)$", proc.stdout, re.MULTILINE)
    assert match, proc.stdout
    names = match.group(1).split(", ")
    assert len(names) == 4
    assert not [n for n in names if (NETNS_DIR / n).exists()], "namespaces left behind"
    assert not processes_mentioning(str(workdir)), "processes left behind"


@pytest.mark.timeout(240)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_demo_stops_cleanly_on_signal(tmp_path: Path, sig: signal.Signals) -> None:
    workdir = tmp_path / "demo"
    proc = subprocess.Popen(
        [str(REPO / "scripts/demo.sh"), "--skip-setup", "--workdir", str(workdir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")))  # type: ignore[union-attr]
    reader.start()
    try:
        wait_until(
            lambda: any("Press Ctrl-C" in line for line in lines) or proc.poll() is not None,
            timeout=180,
            interval=0.1,
            what="the demo to be live",
        )
        assert proc.poll() is None, "".join(lines)
        names = [
            n
            for line in lines
            if line.startswith("Namespaces: ")
            for n in line[12:].strip().split(", ")
        ]
        assert len(names) == 4
        proc.send_signal(sig)
        assert proc.wait(60) == 0, "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(10)
    assert "stopped: all processes ended and namespaces removed" in "".join(lines)
    assert not [n for n in names if (NETNS_DIR / n).exists()], "namespaces left behind"
    assert not processes_mentioning(str(workdir)), "processes left behind"


@pytest.mark.timeout(240)
def test_demo_standalone_check_serves_the_workloads_file(tmp_path: Path) -> None:
    """`scripts/demo.sh --standalone --check`: no explorer, every printed command works, and an
    entry added to the running gateway's file is served."""
    workdir = tmp_path / "demo"
    proc = subprocess.run(
        [str(REPO / "scripts/demo.sh"), "--standalone", "--check", "--skip-setup",
         "--workdir", str(workdir)],
        capture_output=True,
        text=True,
        timeout=200,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, f"demo --standalone --check failed:\n{proc.stdout}\n{proc.stderr}"
    assert "check: all printed commands work" in proc.stdout
    assert "live change: the entry added while running is served" in proc.stdout
    for tool in ("dig @10.71.1.1", "curl -sS", "tfgateway status", "tftunnel"):
        assert tool in proc.stdout, tool
    assert not (workdir / "explorer.log").exists(), "a standalone run starts no explorer"
    match = re.search(r"^Namespaces: (.+)$", proc.stdout, re.MULTILINE)
    assert match, proc.stdout
    assert not [n for n in match.group(1).split(", ") if (NETNS_DIR / n).exists()]
    # The tunnel secret is in its file only: never printed.
    secret = (workdir / "home-tunnel.secret").read_text().strip()
    assert secret not in proc.stdout + proc.stderr
    assert not processes_mentioning(str(workdir)), "processes left behind"
