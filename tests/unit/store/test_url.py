"""`--redis` URL parsing (Go daemon's redis/pool.go semantics)."""

from __future__ import annotations

import pytest

from tfgateway.store.url import RedisTarget, RedisURLError, parse_redis_url


@pytest.mark.parametrize(
    ("url", "target"),
    [
        ("tcp://localhost:6379", RedisTarget(host="localhost", port=6379)),
        ("tcp://127.0.0.1:7000", RedisTarget(host="127.0.0.1", port=7000)),
        ("tcp://[::1]:7000", RedisTarget(host="::1", port=7000)),
        ("tcp://redis.local", RedisTarget(host="redis.local", port=6379)),
        ("tcp://s3cret@localhost:6379", RedisTarget(host="localhost", password="s3cret")),
        ("tcp://:s3cret@localhost:6379", RedisTarget(host="localhost", password="s3cret")),
        (
            "tcp://alice:s3cret@localhost:6379",
            RedisTarget(host="localhost", username="alice", password="s3cret"),
        ),
        ("tcp://p%40ss@localhost:1", RedisTarget(host="localhost", port=1, password="p@ss")),
        ("unix:///var/run/redis/redis.sock", RedisTarget(unix_path="/var/run/redis/redis.sock")),
        ("unix://pw@/tmp/r.sock", RedisTarget(unix_path="/tmp/r.sock", password="pw")),
    ],
)
def test_valid_urls(url: str, target: RedisTarget) -> None:
    assert parse_redis_url(url) == target


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("localhost:6379", "unknown scheme"),
        ("redis://localhost:6379", "unknown scheme 'redis'"),
        ("tcp://", "missing host"),
        ("tcp://localhost:notaport", "invalid redis URL"),
        ("tcp://localhost:99999", "invalid redis URL"),
        ("tcp://localhost:0", "port 0"),
        ("tcp://localhost:6379/3", "unexpected path"),
        ("unix://", "missing socket path"),
        ("unix://host/tmp/x", "no host"),
        ("", "unknown scheme"),
    ],
)
def test_bad_urls_have_clear_errors(url: str, message: str) -> None:
    with pytest.raises(RedisURLError, match=message) as info:
        parse_redis_url(url)
    assert "tcp://host:port" in str(info.value) or "three slashes" in str(info.value)


def test_describe_hides_password() -> None:
    target = parse_redis_url("tcp://s3cret@[::1]:6379")
    assert target.describe() == "tcp://[::1]:6379"
    assert "s3cret" not in repr(target)
