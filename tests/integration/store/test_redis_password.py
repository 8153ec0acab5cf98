"""The agent with a redis that requires a password: given in a file (a systemd credential on
the appliance), and refusing to run, loudly, when it does not have the right one."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.redis_server import RedisServer

PASSWORD = "correct horse battery staple"


@pytest.fixture
def locked_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis", password=PASSWORD)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def tfgateway(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tfgateway", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def agent(redis: RedisServer, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """The daemon pointed at a dead explorer: only its redis start-up matters here."""
    return tfgateway(
        "--seed", str(tmp_path / "seed"), "--explorer", "http://127.0.0.1:9/api/v1",
        "--location", "50.85,4.35", "--redis", redis.url, *extra,
    )  # fmt: skip


def secret_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "redis-password"
    path.write_text(text)
    path.chmod(0o400)
    return str(path)


def test_agent_without_the_password_exits_with_the_cause(
    locked_redis: RedisServer, tmp_path: Path
) -> None:
    run = agent(locked_redis, tmp_path)
    assert run.returncode == 1, run.stderr
    assert "wants a password and none is configured" in run.stderr


def test_agent_with_a_wrong_password_exits_with_the_cause(
    locked_redis: RedisServer, tmp_path: Path
) -> None:
    run = agent(locked_redis, tmp_path, "--redis-password-file", secret_file(tmp_path, "nope\n"))
    assert run.returncode == 1, run.stderr
    assert "refuses the configured password" in run.stderr
    assert "nope" not in run.stderr  # the password itself is never printed


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "cannot read the redis password"), ("\n", "is empty: no redis password in it")],
)
def test_unusable_password_file_is_a_flag_error(
    locked_redis: RedisServer, tmp_path: Path, content: str | None, message: str
) -> None:
    path = str(tmp_path / "missing") if content is None else secret_file(tmp_path, content)
    run = agent(locked_redis, tmp_path, "--redis-password-file", path)
    assert run.returncode == 2, run.stderr
    assert "--redis-password-file" in run.stderr
    assert message in run.stderr


def test_password_in_url_and_file_is_refused(locked_redis: RedisServer, tmp_path: Path) -> None:
    url = f"tcp://:other@127.0.0.1:{locked_redis.port}"
    run = tfgateway(
        "--redis", url, "--redis-password-file", secret_file(tmp_path, PASSWORD),
        "--seed", str(tmp_path / "seed"),
    )  # fmt: skip
    assert run.returncode == 2
    assert "the --redis URL has a password too" in run.stderr


def test_status_reads_a_locked_redis_with_the_password_file(
    locked_redis: RedisServer, tmp_path: Path
) -> None:
    path = secret_file(tmp_path, PASSWORD + "\n")
    ok = tfgateway("status", "--redis", locked_redis.url, "--redis-password-file", path, "--json")
    assert ok.returncode == 0, ok.stderr
    refused = tfgateway("status", "--redis", locked_redis.url)
    assert refused.returncode == 1
    assert "wants a password and none is configured" in refused.stderr
