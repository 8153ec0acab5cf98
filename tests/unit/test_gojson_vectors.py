"""The Go encoding/json vectors (tests/vectors/gojson/) are what Go writes, and what is said of
their differences is true: the generator run with this machine's Go reproduces the newest file,
Go 1.15.15 and Go 1.21.13 wrote the same bytes, and newer Go differs only in `\\b`/`\\f`."""

from __future__ import annotations

import json
import os
import re
import subprocess
from typing import Any

from tests.support import gojson_vectors

OLD = gojson_vectors.old()
NEW = gojson_vectors.newest()


def test_generator_with_this_go_reproduces_the_committed_vectors() -> None:
    """Vectors cannot drift from gen.go or from Go: same content (the patch version may
    differ from the one that wrote the committed file; the content may not)."""
    env = {**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod"}
    proc = subprocess.run(
        ["go", "run", "."],
        cwd=gojson_vectors.VECTORS,
        env=env,
        capture_output=True,
        timeout=100,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    fresh = json.loads(proc.stdout)
    committed = json.loads(NEW.path.read_text(encoding="utf-8"))
    assert fresh["go_version"].startswith("go1."), fresh["go_version"]
    version = fresh.pop("go_version")
    committed.pop("go_version")
    assert fresh == committed, (
        f"{version} writes other vectors than {NEW.path.name}: "
        "run scripts/gen-gojson-vectors.sh and say in tests/vectors/gojson/README.md what changed"
    )


def test_go_1_15_and_go_1_21_wrote_the_same_bytes() -> None:
    """So the encoder rules did not change from 1.15 to 1.21; the agent and the dev explorer
    are held to go1.15.15.json, the Go closest to the daemon's 1.14."""
    assert gojson_vectors.load(gojson_vectors.OLD_GO_PROXY).content() == OLD.content()


_ESCAPE = re.compile(r"\\(?:\\|u0008|u000c)")


def _as_go_1_22(out: bytes) -> bytes:
    # every backslash of Go's output starts an escape; `\\` is taken whole so only escapes match
    new = {"\\\\": "\\\\", "\\u0008": "\\b", "\\u000c": "\\f"}
    return _ESCAPE.sub(lambda m: new[m.group()], out.decode("utf-8", "surrogateescape")).encode(
        "utf-8", "surrogateescape"
    )


def _has_b_or_f(desc: Any) -> bool:
    """Whether a value holds a string (or map key) with byte 0x08 or 0x0c."""
    kind = desc[0]
    if kind == "str":
        return bool({0x08, 0x0C} & set(bytes.fromhex(desc[1])))
    if kind in ("array", "object", "map") and desc[1] is not None:
        items: list[Any] = desc[1] if kind == "array" else [item for _, item in desc[1]]
        keys: list[Any] = [["str", key] for key, _ in desc[1]] if kind == "map" else []
        return any(_has_b_or_f(item) for item in items + keys)
    return False


def test_newer_go_differs_only_in_b_and_f() -> None:
    """Go 1.22 writes U+0008 and U+000C as `\\b` and `\\f` (before: `\\u0008`, `\\u000c`); no
    other output or error changed, and only the cases with those characters differ."""
    assert [(c.name, c.api, c.value) for c in OLD.cases] == [
        (c.name, c.api, c.value) for c in NEW.cases
    ]
    differing = set()
    for old, new in zip(OLD.cases, NEW.cases, strict=True):
        assert new.error == old.error, old.name
        if new.out != old.out:
            differing.add(old.name)
            assert old.out is not None, old.name
            assert new.out == _as_go_1_22(old.out), old.name
    expected = {c.name for c in OLD.cases if _has_b_or_f(c.value) and c.out is not None}
    assert differing == expected
    assert {"string/control-08", "string/control-0c", "string/mixed"} <= differing
