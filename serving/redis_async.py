"""Round trips to Redis that leave the event loop free: the request path of the Redis state.

A synchronous call holds the server's event loop until Redis answers: on loopback about a
third of a request's time, across a network most of it. Awaiting the reply instead lets the
server parse and score other requests meanwhile.

Why not ``redis.asyncio.Redis``: its client costs about 50 µs of CPU more per command than
the synchronous one (an asyncio lock around its pool, a readiness check, bookkeeping per
command), as much as the wait it saves on loopback. Its ``Connection`` alone costs what the
synchronous client does, once its commands are packed by hiredis, as the synchronous client
packs them. So :class:`LoopConnections` keeps the idle connections of one event loop in a
list: a request takes one (a new one when all are busy, up to :data:`MAX_CONNECTIONS`; then it
waits for one), sends its commands, reads their replies and gives it back. Timeouts,
reconnects and the parsing stay redis-py's.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import hiredis
import redis.asyncio as aredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["MAX_CONNECTIONS", "MAX_IDLE", "LoopConnections"]

MAX_IDLE = 8
"""Idle connections kept per event loop; those a burst opened beyond it are closed."""
MAX_CONNECTIONS = 32
"""Connections open at once per event loop: a burst's other requests wait for one (on
loopback a round trip takes a fraction of a millisecond), and a Redis that hangs is not sent
a connection per request in flight."""


class LoopConnections:
    """Connections to one Redis for the event loop that made this object.

    Args:
        url: ``redis://`` or ``rediss://`` URL, with its credentials.
        options: Connection options (timeouts, health checks) as redis-py takes them.
        max_connections: Most connections open at once (default :data:`MAX_CONNECTIONS`).
    """

    def __init__(
        self, url: str, options: dict[str, Any], max_connections: int | None = None
    ) -> None:
        self.loop = asyncio.get_running_loop()
        # only to make connections from the URL (credentials, TLS, database), never to lend them
        self._pool = aredis.ConnectionPool.from_url(url, **options)
        self._wait_seconds = float(options.get("socket_timeout") or 1.0)
        self.max_connections = max_connections or MAX_CONNECTIONS
        self.opened = 0
        """Connections made and not yet dropped (in use or idle)."""
        self._idle: list[aredis.Connection] = []
        self._waiting: deque[asyncio.Future[aredis.Connection]] = deque()
        self._closed = False

    async def exchange(
        self, commands: Sequence[tuple[Any, ...]], ready: Callable[[], object] | None = None
    ) -> list[Any]:
        """Send ``commands`` at once and read a reply for each, in order.

        Args:
            commands: Redis commands, each a tuple of its words.
            ready: Called once a connection is had, before anything is sent: it may raise to
                send nothing (e.g. the breaker opened while this request waited).

        Returns:
            The replies; a command that Redis refused has its ``ResponseError`` (or subclass,
            e.g. ``NoScriptError``) in its place, for the caller to raise.

        Raises:
            redis.exceptions.ConnectionError: Redis could not be reached, or the connection
                broke. Never tried again: once the commands are written, Redis may have run
                them (a step run twice would see its own rows), so the caller answers 503.
            redis.exceptions.TimeoutError: Redis did not answer within the socket timeout,
                or no connection came free within it (all :data:`MAX_CONNECTIONS` busy).
        """
        # the common cases without a coroutine more (a few µs a request)
        if self._idle:
            connection = self._idle.pop()
        elif self.opened < self.max_connections:
            self.opened += 1
            connection = self._pool.make_connection()
        else:
            connection = await self._wait_for_one()
        if ready is not None:
            try:
                ready()
            except BaseException:  # nothing sent: the connection is in step
                if not self._hand_back(connection):
                    await self._drop(connection)
                raise
        try:
            # an idle connection that Redis closed (a restart) is at EOF once the loop has
            # seen it: open a new one rather than lose this request
            if connection.is_connected and await connection.can_read():
                await connection.disconnect(nowait=True)
            return await self._send_and_read(connection, commands)
        except BaseException:
            # redis-py disconnects on a failed read or write; also after a cancellation
            # between them, whose reply the next request would otherwise read as its own
            await connection.disconnect(nowait=True)
            raise
        finally:
            if not self._hand_back(connection):
                await self._drop(connection)

    async def _wait_for_one(self) -> aredis.Connection:
        """All :attr:`max_connections` in use: the first one given back, waiting at most the
        socket timeout for it."""
        waiter: asyncio.Future[aredis.Connection] = self.loop.create_future()
        self._waiting.append(waiter)
        try:
            return await asyncio.wait_for(waiter, self._wait_seconds)
        except TimeoutError:
            raise RedisTimeoutError(
                f"no connection to Redis came free within {self._wait_seconds:g} s: all "
                f"{self.max_connections} of this server's are waiting for Redis"
            ) from None
        except BaseException:  # cancelled: a connection handed over meanwhile goes back
            if waiter.done() and not waiter.cancelled() and not self._hand_back(waiter.result()):
                await self._drop(waiter.result())
            raise

    def _hand_back(self, connection: aredis.Connection) -> bool:
        """Give ``connection`` to the longest waiting request, or keep it idle; False when
        it is to be dropped instead (closed, or :data:`MAX_IDLE` kept already)."""
        while self._waiting and not self._closed:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(connection)
                return True
        if self._closed or len(self._idle) >= MAX_IDLE:  # a burst's extra ones go
            return False
        self._idle.append(connection)
        return True

    async def _drop(self, connection: aredis.Connection) -> None:
        self.opened -= 1
        await connection.disconnect(nowait=True)

    @staticmethod
    async def _send_and_read(
        connection: aredis.Connection, commands: Sequence[tuple[Any, ...]]
    ) -> list[Any]:
        # hiredis packs in C what the asyncio Connection packs in Python (a batch's 4,000
        # keys and rows: milliseconds)
        await connection.send_packed_command(b"".join(map(hiredis.pack_command, commands)))
        replies: list[Any] = []
        for _ in commands:
            try:
                replies.append(await connection.read_response())
            except ResponseError as e:  # the whole reply was read: the connection is in step
                replies.append(e)
        return replies

    async def aclose(self) -> None:
        """Disconnect the idle connections; those in use disconnect when given back, and
        requests waiting for one fail at once."""
        self._closed = True
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_exception(RedisConnectionError("closed by a reload: try again"))
        idle, self._idle = self._idle, []
        self.opened -= len(idle)
        for connection in idle:
            await connection.disconnect()

    def close(self) -> None:
        """:meth:`aclose` from synchronous code: on the loop when it runs (this thread's or
        another's); else the sockets are aborted (those of a closed loop wait for the
        garbage collector: their transports can no longer be closed)."""
        loop = self.loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            task = loop.create_task(self.aclose())
            _closing.add(task)
            task.add_done_callback(_closing.discard)
        elif loop.is_running():
            asyncio.run_coroutine_threadsafe(self.aclose(), loop)
        else:
            self._closed = True
            idle, self._idle = self._idle, []
            for connection in idle:
                writer = connection._writer  # redis-py's StreamWriter: no public sync close
                if writer is not None and not loop.is_closed():
                    writer.transport.abort()


_closing: set[asyncio.Task] = set()
"""Closing tasks, referenced until done (the event loop keeps only weak references)."""
