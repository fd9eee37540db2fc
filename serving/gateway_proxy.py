"""Forwarding one HTTP request to one backend, unchanged (the gateway's proxy primitive).

The request body and its end-to-end headers go to the backend as they came; the backend's
status, headers and body come back as they are (the raw bytes: a compressed body stays
compressed). Hop-by-hop headers (RFC 9110 section 7.6.1) are not forwarded in either direction,
``host`` and ``content-length`` are set for the new connection. A failure to get a complete
answer is an :class:`Attempt` without a status, not an exception.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

import httpx

from serving.gateway_stats import Outcome, classify

__all__ = ["Attempt", "ProxyRequest", "forward_headers", "send"]

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
_NOT_FORWARDED = HOP_BY_HOP | {b"host", b"content-length"}
# httpx adds these to every request unless the client sent its own; drop its defaults
_CLIENT_DEFAULTS = ("accept", "accept-encoding", "user-agent")


@dataclass(frozen=True)
class ProxyRequest:
    """A client's request as the gateway received it.

    Attributes:
        method: ``GET``, ``POST``...
        path: The path, e.g. ``/v1/models/fraud:predict``.
        query: The raw query string without ``?`` (may be empty).
        headers: The raw header pairs (lower-case names).
        body: The whole body.
    """

    method: str
    path: str
    query: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes


@dataclass(frozen=True)
class Attempt:
    """What one backend made of one request.

    Attributes:
        outcome: Classification for the stats.
        seconds: From sending to the end of the answer (or the failure).
        finished_at: Wall-clock time at the end.
        status: The backend's status code; None when no complete answer came.
        headers: The backend's end-to-end response headers.
        body: The backend's response body, raw.
        error: Why no complete answer came.
    """

    outcome: Outcome
    seconds: float
    finished_at: float
    status: int | None = None
    headers: tuple[tuple[bytes, bytes], ...] = ()
    body: bytes = b""
    error: str = ""


def forward_headers(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The end-to-end headers of a request or a response (lower-case names)."""
    out = []
    for key, value in headers:
        name = key.lower()
        if name not in _NOT_FORWARDED:
            out.append((name, value))
    return out


async def send(client: httpx.AsyncClient, base_url: str, request: ProxyRequest) -> Attempt:
    """Send ``request`` to the backend at ``base_url`` and read the whole answer.

    Args:
        client: The gateway's HTTP client (no redirects followed, no environment proxies).
        base_url: The backend, e.g. ``http://127.0.0.1:43121``.
        request: What the client sent.

    Returns:
        The attempt: status, headers and body, or the failure (``connection_error`` or
        ``timeout``).
    """
    url = base_url + request.path
    if request.query:
        url += "?" + request.query.decode("latin-1")
    headers = forward_headers(request.headers)
    started = time.perf_counter()
    try:
        outgoing = client.build_request(request.method, url, headers=headers, content=request.body)
        sent = {k for k, _ in headers}
        for name in _CLIENT_DEFAULTS:
            if name.encode() not in sent and name in outgoing.headers:
                del outgoing.headers[name]
        response = await client.send(outgoing, stream=True)
        try:
            chunks = [chunk async for chunk in response.aiter_raw()]
        finally:
            await response.aclose()
    except httpx.TimeoutException as e:
        return _failure(Outcome.TIMEOUT, started, e)
    except httpx.TransportError as e:
        return _failure(Outcome.CONNECTION_ERROR, started, e)
    seconds = time.perf_counter() - started
    return Attempt(
        outcome=classify(response.status_code),
        seconds=seconds,
        finished_at=time.time(),
        status=response.status_code,
        headers=tuple(forward_headers(response.headers.raw)),
        body=b"".join(chunks),
    )


def _failure(outcome: Outcome, started: float, error: Exception) -> Attempt:
    text = str(error) or "no details"
    return Attempt(
        outcome=outcome,
        seconds=time.perf_counter() - started,
        finished_at=time.time(),
        error=f"{type(error).__name__}: {text}",
    )
