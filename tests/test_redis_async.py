"""The request path's Redis connections (``serving/redis_async.py``) against a real
``redis-server`` on loopback: at most ``max_connections`` open at once, a burst's extra
requests waiting for one, the idle ones trimmed, and a Redis that hangs sent no more than
the cap while the waiting requests are refused within the timeout."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable

import numpy as np
import pandas as pd
from serving_helpers import timed_step

from serving.redis_async import MAX_IDLE, LoopConnections
from serving.redis_state import CLIENT_OPTIONS, RedisOnlineState

DAY = 86_400_000


def test_a_burst_shares_at_most_max_connections_and_keeps_max_idle(redis_url):
    """40 requests at once on a cap of 4: four connections serve them all (each request
    sees one of four client ids); with a cap above the burst, each request its own, and
    only :data:`MAX_IDLE` are kept afterwards. A request cancelled while it waits for a
    connection leaves the count right."""

    async def main() -> tuple[set[int], int, set[int], int, int]:
        capped = LoopConnections(redis_url, CLIENT_OPTIONS, max_connections=4)
        # BLPOP on a missing key holds its connection 50 ms: the requests overlap
        hold = [("BLPOP", "fraudops-tests:none", "0.05"), ("CLIENT", "ID")]
        replies = await asyncio.gather(*(capped.exchange(hold) for _ in range(40)))
        seen = {client for _, client in replies}
        waiting = [asyncio.create_task(capped.exchange(hold)) for _ in range(8)]
        await asyncio.sleep(0.01)
        for task in waiting[4:]:  # these wait for a connection
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        after_cancel = capped.opened
        await capped.aclose()

        wide = LoopConnections(redis_url, CLIENT_OPTIONS, max_connections=30)
        replies = await asyncio.gather(*(wide.exchange(hold) for _ in range(20)))
        opened = {client for _, client in replies}
        kept = wide.opened
        (again,) = await wide.exchange([("CLIENT", "ID")])
        await wide.aclose()
        return seen, after_cancel, opened, kept, again

    seen, after_cancel, opened, kept, again = asyncio.run(main())
    assert len(seen) == 4  # no cap: up to 40
    assert after_cancel == 4
    assert len(opened) == 20 and kept == MAX_IDLE
    assert again in opened  # an idle one, not a new one


def test_a_hanging_redis_is_sent_no_more_connections_than_the_cap(own_redis, monkeypatch):
    """20 requests against a stopped Redis with a cap of 3: three wait on Redis and time
    out; the other 17, come 0.3 s later, wait for a connection and are refused once the
    breaker opens, with the connections the three gave back unused: every request is
    answered within about one timeout, not two."""
    monkeypatch.setattr("serving.redis_async.MAX_CONNECTIONS", 3)
    process, url = own_redis
    state = RedisOnlineState(url, "tests", "v1", 31)
    state.seed(pd.DataFrame())
    count = lambda history: len(history.customers)  # noqa: E731

    def request(i: int) -> tuple:
        c, t = [f"c{i}"], [f"t{i}"]
        return (c, t, c, t, np.array([DAY + i]), np.ones(1), [f"{i}"], count)

    def timed(i: int) -> Awaitable[tuple[float, str]]:
        return timed_step(state.score_and_add_async(*request(i)))

    async def main() -> tuple[list[tuple[float, str]], int, list[tuple[float, str]]]:
        assert (await timed(0))[1] == "scored"
        process.send_signal(signal.SIGSTOP)
        first = [asyncio.create_task(timed(i)) for i in range(1, 4)]
        await asyncio.sleep(0.3)  # the others wait for a connection from 0.3 s to 1.3 s
        during = await asyncio.gather(*first, *(timed(i) for i in range(4, 21)))
        opened = state._on_loop.opened
        process.send_signal(signal.SIGCONT)
        await asyncio.sleep(1.1)  # the breaker's second
        after = [await timed(i) for i in range(21, 24)]
        return during, opened, after

    try:
        during, opened, after = asyncio.run(main())
    finally:
        state.close()
    assert opened == 3
    assert not any(outcome == "scored" for _, outcome in during)
    timed_out = [o for _, o in during if "Timeout reading" in o and "tried again" not in o]
    assert len(timed_out) == 3  # the others refused: "(tried again within 1 s)"
    assert max(seconds for seconds, _ in during) < 1.5  # none waited a second timeout
    assert sum("tried again within" in outcome for _, outcome in during) >= 14
    assert [outcome for _, outcome in after] == ["scored"] * 3
