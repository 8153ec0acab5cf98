"""Shell commands the local run prints, each with a piece of output that shows it worked."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    """A shell command as printed, and a piece of its output that shows it worked."""

    what: str
    line: str
    expect: str

    def works(self) -> bool:
        try:
            out = self.run()
        except subprocess.TimeoutExpired:
            return False
        return out.returncode == 0 and self.expect in out.stdout

    def run(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-c", self.line], capture_output=True, text=True, timeout=10, check=False
        )

    def output(self) -> str:
        """What it prints now (stdout and stderr), for an error message."""
        try:
            out = self.run()
        except subprocess.TimeoutExpired:
            return "(timed out)"
        return f"exit {out.returncode}: {out.stdout}{out.stderr}".strip()
