"""The outbox's persisted entry (`Message.to_json`): written by hand, `json.dumps`' bytes."""

from __future__ import annotations

import json
import math

from hypothesis import given
from hypothesis import strategies as st

from tfgateway.engine.outbox import Message, _stats_json


@given(
    op=st.sampled_from(["result", "delete"]),
    gwid=st.text(max_size=20),
    body=st.binary(max_size=60) | st.text(max_size=30).map(lambda t: t.encode("utf-8", "replace")),
    queued=st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0.0, 1e16, 1e-7]),
)
def test_entry_is_json_dumps_bytes_and_reads_back(
    op: str, gwid: str, body: bytes, queued: float
) -> None:
    message = Message(seq=7, op=op, gwid=gwid, body=body, queued=queued)  # type: ignore[arg-type]
    doc = {"op": op, "id": gwid, "body": body.decode("utf-8", "replace"), "queued": queued}
    assert message.to_json() == json.dumps(doc, separators=(",", ":")).encode()
    back = Message.from_json(7, message.to_json())
    assert (back.op, back.gwid, back.body) == (op, gwid, body.decode("utf-8", "replace").encode())
    assert back.queued == queued or (math.isnan(back.queued) and math.isnan(queued))


@given(st.dictionaries(st.text(max_size=10), st.integers() | st.booleans(), max_size=5))
def test_stats_entry_is_json_dumps(stats: dict[str, int]) -> None:
    assert _stats_json(stats) == json.dumps(stats)
