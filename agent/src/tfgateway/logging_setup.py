"""Log lines for operators and machines: UTC timestamp, level, logger, then the message.

Job lines are written as `key=value` pairs by the engine (`job id=… type=… outcome=…
duration_ms=…`), so `grep`/`awk` and log shippers can split them without a JSON parser.
"""

from __future__ import annotations

import logging
import sys
import time

__all__ = ["setup_logging"]


class _UTCFormatter(logging.Formatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        return f"{base}.{int(record.msecs):03d}Z"


def setup_logging(debug: bool = False) -> None:
    """Configure the root logger once (stderr; journald adds its own metadata)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_UTCFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    for noisy in ("httpx", "httpcore", "aiohttp.access", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
