"""Log lines for operators and machines, as text (default) or one JSON object per line.

Text: UTC timestamp, level, logger, then the message. Job lines are `key=value` pairs (`job
id=… type=… outcome=… duration_ms=…`), so `grep`/`awk` split them without a JSON parser.

JSON (`--log-format json`, for log shippers): `time` (RFC 3339, UTC), `level`, `logger`,
`message` (the text line's message, unchanged), `exception` when there is one. A message built
with `Fields` also gives `event` and one key per field with its JSON type (numbers stay
numbers), so nothing has to parse `key=value` text back. `Fields` renders itself as the same
`key=value` text, so every other handler (pytest's caplog, a plain `basicConfig`) sees exactly
what it saw before.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import re
import sys
import time
from typing import Any, Final, Literal, get_args

__all__ = ["LOG_FORMATS", "Fields", "JSONFormatter", "LogFormat", "TextFormatter", "setup_logging"]

LogFormat = Literal["text", "json"]
LOG_FORMATS: Final[tuple[str, ...]] = get_args(LogFormat)
# Keys of every JSON line; a field with one of these names is written as `<name>_`.
_RESERVED: Final = frozenset({"time", "level", "logger", "message", "event", "exception", "stack"})
_QUOTE_IF: Final = re.compile("[ \t\r\n\"'=]")


def _text_value(value: object) -> str:
    """A field as text: bare when it is one plain token, else Python-quoted (as `%r`)."""
    if isinstance(value, str):
        if value and _QUOTE_IF.search(value) is None:
            return value
        return repr(value)
    return str(value)


class Fields:
    """A log message made of an event name and named fields: `log.info(Fields("job", id=…))`.

    `str()` is the text line's message, `event k=v k=v`, built only if the record is emitted.
    """

    __slots__ = ("event", "fields")

    def __init__(self, event: str, /, **fields: object) -> None:
        self.event = event
        self.fields = fields

    def __str__(self) -> str:
        parts = [self.event]
        parts.extend(f"{key}={_text_value(value)}" for key, value in self.fields.items())
        return " ".join(parts)

    def __repr__(self) -> str:
        return f"Fields({self!s})"


@functools.lru_cache(maxsize=4)
def _utc_second(second: int) -> str:
    """`YYYY-MM-DDTHH:MM:SS` of a whole second, made once for all the lines within it."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


def utc_timestamp(record: logging.LogRecord) -> str:
    """RFC 3339 UTC with milliseconds: `2026-11-25T22:37:37.123Z`."""
    return f"{_utc_second(int(record.created))}.{int(record.msecs):03d}Z"


class TextFormatter(logging.Formatter):
    """`<time> <LEVEL> <logger> <message>`, the format the agent always had."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return utc_timestamp(record)


def _json_value(value: object) -> Any:
    """JSON-native values as they are; non-finite floats and anything else as text."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    return str(value)


class JSONFormatter(logging.Formatter):
    """One JSON object per line (no newline inside: JSON escapes them)."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": utc_timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if isinstance(record.msg, Fields) and not record.args:
            doc["event"] = record.msg.event
            for key, value in record.msg.fields.items():
                doc[f"{key}_" if key in _RESERVED else key] = _json_value(value)
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            doc["exception"] = record.exc_text
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        return json.dumps(doc, ensure_ascii=False)


def setup_logging(debug: bool = False, log_format: LogFormat = "text") -> None:
    """Configure the root logger once (stderr; journald adds its own metadata)."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format {log_format!r} is not one of {', '.join(LOG_FORMATS)}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    # Neither format shows the caller, thread or process: not looking them up for every
    # record (a frame walk and three lookups) is a tenth of what a job's line costs.
    logging._srcfile = None  # the documented switch for this
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    for noisy in ("httpx", "httpcore", "aiohttp.access", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
