"""Round trips to Redis that leave the event loop free: the request path of the Redis state.

A synchronous call holds the server's event loop until Redis answers: on loopback about a
third of a request's time, across a network most of it. Awaiting the reply instead lets the
server parse and score other requests meanwhile.

Why not ``redis.asyncio.Redis``: its client costs about 50 µs of CPU more per command than
the synchronous one (an asyncio lock around its pool, a readiness check, bookkeeping per
command), as much as the wait it saves on loopback. Its ``Connection`` alone costs what the
synchronous client does, once its commands are packed by hiredis, as the synchronous client
packs them. So :class:`LoopConnections` keeps the idle connections of one event loop in a
list: a request takes one (a new one when all are busy), sends its commands, reads their
replies and gives it back. Timeouts, reconnects and the parsing stay redis-py's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import hiredis
import redis.asyncio as aredis
from redis.exceptions import ResponseError

__all__ = ["MAX_IDLE", "LoopConnections"]

MAX_IDLE = 8
"""Idle connections kept per event loop; those a burst opened beyond it are closed."""


class LoopConnections:
    """Connections to one Redis for the event loop that made this object.

    Args:
        url: ``redis://`` or ``rediss://`` URL, with its credentials.
        options: Connection options (timeouts, health checks) as redis-py takes them.
    """

    def __init__(self, url: str, options: dict[str, Any]) -> None:
        self.loop = asyncio.get_running_loop()
        # only to make connections from the URL (credentials, TLS, database), never to lend them
        self._pool = aredis.ConnectionPool.from_url(url, **options)
        self._idle: list[aredis.Connection] = []
        self._closed = False

    async def exchange(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Send ``commands`` at once and read a reply for each, in order.

        Returns:
            The replies; a command that Redis refused has its ``ResponseError`` (or subclass,
            e.g. ``NoScriptError``) in its place, for the caller to raise.

        Raises:
            redis.exceptions.ConnectionError: Redis could not be reached, or the connection
                broke. Never tried again: once the commands are written, Redis may have run
                them (a step run twice would see its own rows), so the caller answers 503.
            redis.exceptions.TimeoutError: Redis did not answer within the socket timeout.
        """
        connection = self._idle.pop() if self._idle else self._pool.make_connection()
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
            if self._closed or len(self._idle) >= MAX_IDLE:  # a burst's extra ones go
                await connection.disconnect(nowait=True)
            else:
                self._idle.append(connection)

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
        """Disconnect the idle connections; those in use disconnect when given back."""
        self._closed = True
        idle, self._idle = self._idle, []
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
