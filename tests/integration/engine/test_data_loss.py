"""Redis losing its data (a restart without persistence, FLUSHALL) while the engine runs.

The app restores the cache from the engine's memory within a second (`app.restore_after_data_
loss`); a poll that lands before that must not take the cache miss for a new workload: that
would provision it again and send the explorer a second, different result.
"""

from __future__ import annotations

import redis

from tests.support.agent_stack import RecordingProvisioner, dev_explorer, engine_stack
from tfgateway.engine.cache import RESERVATIONS_KEY

NODE = "FkUfMueBVSK6V1DCHVAtzzaqPqCPVzGguDzCQxq7Ep85"


async def test_a_poll_before_the_restore_sends_nothing_new(
    redis_url: str, redis_db: redis.Redis
) -> None:
    rec = RecordingProvisioner()
    kinds = dict.fromkeys(("proxy", "subdomain", "domain_delegate"), rec)
    async with (
        dev_explorer() as (server, admin),
        engine_stack(redis_url, server.url, kinds) as stack,
    ):
        await admin.delegate(NODE, 42, "d.example.org")
        await admin.subdomain(NODE, 42, "s.gw.example.com", ["185.69.166.2"])
        await stack.engine.poll_once()
        while await stack.outbox.deliver_once() and stack.outbox.depth:
            pass
        puts = len((await admin.state())["result_puts"])
        redis_db.flushall()
        rec.calls.clear()
        stack.engine.request_replay()  # the restore asks for everything again
        await stack.engine.poll_once()
        while await stack.outbox.deliver_once() and stack.outbox.depth:
            pass
        assert [c for c in rec.calls if c[0] == "provision"] == []
        assert len((await admin.state())["result_puts"]) == puts
        assert redis_db.hlen(RESERVATIONS_KEY) == 2  # written back from memory
