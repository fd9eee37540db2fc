"""A TCP proxy that delays every chunk, each way: a Redis across a network, on one machine.

``python -m benchmarks.delay_proxy LISTEN_PORT TARGET_PORT DELAY_SECONDS`` forwards
connections on loopback, holding each chunk of bytes ``DELAY_SECONDS`` before passing it on
(in order). It prints ``ready`` once it listens. A Python proxy costs CPU and timer slack of
its own, so the round trip it adds is measured (the serving benchmark's concurrency-1
latency), not assumed from the delay.
"""

from __future__ import annotations

import asyncio
import sys


async def _forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float):
    loop = asyncio.get_running_loop()
    try:
        while data := await reader.read(65_536):
            loop.call_later(delay, writer.write, data)
    finally:
        loop.call_later(2 * delay, writer.close)


async def _serve(listen: int, target: int, delay: float) -> None:
    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", target)
        await asyncio.gather(
            _forward(reader, upstream_writer, delay),
            _forward(upstream_reader, writer, delay),
            return_exceptions=True,
        )

    server = await asyncio.start_server(connection, "127.0.0.1", listen)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    listen_port, target_port, delay_seconds = sys.argv[1:4]
    asyncio.run(_serve(int(listen_port), int(target_port), float(delay_seconds)))
