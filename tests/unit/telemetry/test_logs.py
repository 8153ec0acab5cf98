"""Log output: the text lines operators grep (unchanged) and `--log-format json` (one object per
line, RFC 3339 UTC time, structured fields as typed keys)."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tfgateway.telemetry.logs import Fields, JSONFormatter, TextFormatter, setup_logging

TEXT_LINE = re.compile(
    r"(?P<time>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (?P<level>[A-Z]+) (?P<logger>\S+) "
    r"(?P<message>.*)"
)
RFC3339_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def record(msg: object, *args: object, level: int = logging.INFO) -> logging.LogRecord:
    return logging.LogRecord("tfgateway.engine.engine", level, __file__, 1, msg, args or None, None)


def job_line() -> Fields:
    return Fields(
        "job", id="4521-1", type="subdomain", action="provision", outcome="ok", duration_ms=1.5
    )


def test_fields_render_as_the_historical_key_value_text() -> None:
    assert str(job_line()) == (
        "job id=4521-1 type=subdomain action=provision outcome=ok duration_ms=1.5"
    )
    # values that are not one plain token are quoted the way `%r` quoted them
    assert str(Fields("job", id="1-1 (ref 2-1)", message="bad 'x'", empty="", n=None)) == (
        "job id='1-1 (ref 2-1)' message=\"bad 'x'\" empty='' n=None"
    )


def test_text_format_is_unchanged(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging()
    log = logging.getLogger("tfgateway.engine.engine")
    log.info(job_line())
    log.warning("job %s waits for redis: %s", "7-1", "connection refused")
    log.debug("not shown without --debug")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    first, second = (TEXT_LINE.fullmatch(line) for line in lines)
    assert first, lines
    assert second, lines
    assert (first["level"], first["logger"], first["message"]) == (
        "INFO",
        "tfgateway.engine.engine",
        "job id=4521-1 type=subdomain action=provision outcome=ok duration_ms=1.5",
    )
    assert (second["level"], second["message"]) == (
        "WARNING",
        "job 7-1 waits for redis: connection refused",
    )


def test_json_format_one_object_per_line(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging(debug=True, log_format="json")
    log = logging.getLogger("tfgateway.engine.engine")
    log.info(job_line())
    log.debug("poll from %d:\nnext line", 12)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("job %s crashed", "9-1")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3
    job, poll, crash = (json.loads(line) for line in lines)
    assert RFC3339_UTC.fullmatch(job.pop("time"))
    assert job == {
        "level": "INFO",
        "logger": "tfgateway.engine.engine",
        "message": "job id=4521-1 type=subdomain action=provision outcome=ok duration_ms=1.5",
        "event": "job",
        "id": "4521-1",
        "type": "subdomain",
        "action": "provision",
        "outcome": "ok",
        "duration_ms": 1.5,
    }
    assert (poll["level"], poll["message"]) == ("DEBUG", "poll from 12:\nnext line")
    assert "event" not in poll
    assert crash["message"] == "job 9-1 crashed"
    assert crash["exception"].startswith("Traceback")
    assert "RuntimeError: boom" in crash["exception"]


def test_json_reserved_names_and_odd_values_never_break_the_line() -> None:
    line = JSONFormatter().format(
        record(
            Fields(
                "job",
                message="malformed",
                level=3,
                took=float("nan"),
                tags=("a", 1),
                obj=object,
                ok=True,
            )
        )
    )
    doc = json.loads(line)  # strict JSON: no NaN literal
    assert doc["level"] == "INFO"
    assert (doc["message_"], doc["level_"], doc["took"]) == ("malformed", 3, "nan")
    assert (doc["tags"], doc["obj"], doc["ok"]) == (["a", 1], "<class 'object'>", True)
    assert "\n" not in line


def test_text_and_json_agree_on_time_and_message() -> None:
    rec = record("job %s type=%s", "1-1", "proxy", level=logging.WARNING)
    text = TEXT_LINE.fullmatch(TextFormatter().format(rec))
    doc = json.loads(JSONFormatter().format(rec))
    assert text is not None
    assert (doc["time"], doc["level"], doc["message"]) == (
        text["time"],
        text["level"],
        text["message"],
    )


def test_unknown_log_format_is_refused() -> None:
    with pytest.raises(ValueError, match="log format 'xml' is not one of text, json"):
        setup_logging(log_format="xml")  # type: ignore[arg-type]


@given(st.text(max_size=20, alphabet=st.sampled_from(list(" \t\r\n\"'=ab-é\x00"))))
def test_field_values_quoted_exactly_when_not_one_plain_token(value: str) -> None:
    plain = bool(value) and not any(c in " \t\r\n\"'=" for c in value)
    assert str(Fields("e", v=value)) == f"e v={value if plain else repr(value)}"
