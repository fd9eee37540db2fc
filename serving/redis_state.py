"""The online state in Redis, shared by every replica of one model version.

:class:`RedisOnlineState` is the :class:`~serving.state.OnlineState` of a model version served
by several replicas: each scored transaction goes into Redis before the response leaves, so
the next request, whichever replica takes it, sees it in its customer's and terminal's
windows. It keeps the rows exactly as :class:`~serving.state.InMemoryOnlineState` does (a test
runs the same operations on both and compares), so the features do not depend on the state
behind them.

Layout, under the prefix ``fraudops:{<model>/<version>}:`` (one hash tag: the keys of a version
would share one Redis Cluster slot, though this client is for a standalone Redis):

- ``c:<customer_id>``, ``t:<terminal_id>``: the entity's rows sorted by time, 24 bytes each
  (time in ms as a big-endian unsigned integer, the value as a little-endian double, and
  8 bytes of BLAKE2b of the transaction id, zeros when not known). A request's entities are
  read and its transactions added in one atomic step (one round trip), so replicas score as
  one server would; numpy views the bytes without a loop over rows.
- ``idx:c``, ``idx:t``: sorted sets, entity -> time of its oldest row (each append cuts the
  rows past the retention of the few entities whose oldest row is due, as the in-memory
  state does); ``rows:c``, ``rows:t``: row counters (metrics); ``watermark``: the newest
  transaction time seen.
- ``seeded``: written last by the replica that seeded the version from the bundle's snapshot
  (the others wait for it); ``seeding``: that replica's lock.
- ``served``: set every minute by each replica that has the version loaded, for 10 minutes
  (``fraudops state prune`` drops the states of versions no alias names and no replica serves).

Every change is one Lua script, atomic in Redis: two replicas that add the same transaction
(a retry on each, or both following another version's log) add it once; a late label finds
its row while other replicas append. A Redis that cannot be reached, or that lost the data
(restarted without persistence: no ``seeded`` key), raises :class:`StateUnavailable`; the
server answers 503 with the reason, never 500, and never scores on an empty history (nor on
a snapshot whose logged traffic is not replayed yet: the mark comes after the replay).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np
import pandas as pd
import redis
from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    NoScriptError,
    OutOfMemoryError,
    RedisError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from components.features.windows import MS_PER_DAY
from serving.redis_async import LoopConnections
from serving.state import (
    EntityRows,
    History,
    LabelsSet,
    StateUnavailable,
    frame_columns,
)

__all__ = [
    "ROW",
    "RedisOnlineState",
    "StateUnavailable",
    "drop_if_retired",
    "drop_version",
    "failure_of",
    "id_digests",
    "kept_because",
    "namespace",
    "stored_versions",
    "without_password",
]

log = logging.getLogger("fraudops.serving")

R = TypeVar("R")
_Step = tuple[Sequence[str], Sequence[str], Sequence[str], Sequence[str], np.ndarray, np.ndarray]
"""A request's customers, terminals, customer and terminal ids, times and amounts."""

ROW = np.dtype([("time", ">u8"), ("value", "<f8"), ("id", "S8")])
"""One row as stored: 24 bytes."""
NO_ID = b"\0" * 8
"""The id of a row whose transaction id is not known."""
CHUNK = 1_000
"""Rows per script or pipeline while seeding and replaying, and per script of a request of
more transactions (a few ms of Redis each)."""
SEED_LOCK_SECONDS = 30
"""The seeding lock's time to live, renewed by the seeding replica at every chunk: a replica
that dies while seeding frees it within this."""
SEED_WAIT_SECONDS = 600
"""How long a replica waits for another one's seeding before its load fails (and is retried)."""
SERVED_SECONDS = 600
"""A loaded replica marks its version served every :data:`HEARTBEAT_SECONDS`, the mark living
this long: ``fraudops state prune`` never drops a version whose mark is there."""
HEARTBEAT_SECONDS = 60
READ_IN_SCRIPT = 64
"""A request whose customers and terminals are at most this many keys has them read by the
append script itself; a larger one by an ``MGET`` beside it (see ``_read_and_append``)."""
CLIENT_OPTIONS: dict[str, Any] = {
    "socket_connect_timeout": 0.5,
    "socket_timeout": 1.0,
    "health_check_interval": 30,
}
"""The synchronous client's and the request path's asyncio connections': a Redis that hangs
costs a request one second, then the breaker refuses at once."""
BREAK_SECONDS = 1.0
"""After Redis failed to answer, requests are refused at once for this long; then one request
tries Redis again while the others are still refused (see ``_check_breaker``): a Redis that
hangs must not cost every request a timeout."""
TRYING_SECONDS = 2.0
"""How long the request trying Redis again keeps the others refused at most (its connect and
socket timeouts); it lets them through at once when Redis answers."""

_LUA_COMMON = """
local W = 24
local NO_ID = string.rep('\\0', 8)
local function t_at(v, i)
  local b1, b2, b3, b4, b5, b6, b7, b8 = string.byte(v, i * W + 1, i * W + 8)
  return ((((((b1 * 256 + b2) * 256 + b3) * 256 + b4) * 256 + b5) * 256 + b6) * 256 + b7)
    * 256 + b8
end
local function first_at_or_after(v, n, t)
  local lo, hi = 0, n
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if t_at(v, mid) < t then lo = mid + 1 else hi = mid end
  end
  return lo
end
local function first_after(v, n, t)
  local lo, hi = 0, n
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if t_at(v, mid) <= t then lo = mid + 1 else hi = mid end
  end
  return lo
end
"""

_APPEND = (
    _LUA_COMMON
    + """
-- KEYS: watermark, idx:c, idx:t, rows:c, rows:t, seeded, then n customer and n terminal keys,
--       then r entity keys to read
-- ARGV: retention_ms, slack_ms, sweep, n, prefix, the n customer rows, the n terminal rows
--       (each n * W bytes; a row holds its time and its transaction's id), r
-- returns: the positions (from 0) of the transactions there already, and the r entities'
--          rows as they were before (a request's history: read and added in one step)
if redis.call('EXISTS', KEYS[6]) == 0 then
  return redis.error_reply('NOTSEEDED the online state of this version is not seeded')
end
local retention, slack, sweep = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local n, prefix, customer_rows, terminal_rows = tonumber(ARGV[4]), ARGV[5], ARGV[6], ARGV[7]
local read = {}
for i = 1, tonumber(ARGV[8]) do read[i] = redis.call('GET', KEYS[6 + 2 * n + i]) or '' end
local watermark = tonumber(redis.call('GET', KEYS[1]) or '0')
for i = 0, n - 1 do
  local t = t_at(customer_rows, i)
  if t > watermark then watermark = t end
end
redis.call('SET', KEYS[1], string.format('%.0f', watermark))
local floor = watermark - retention
local keep_from = floor - slack
local delta = {0, 0}  -- rows added minus rows cut, per table (customers, terminals)

-- add one row; false when `once` and its transaction is a row there already. idx holds each
-- entity's oldest row time: only a new entity or a row before its oldest changes it
local function add(key, tbl, entity, t, row, id, once)
  local last = redis.call('GETRANGE', key, -W, -1)
  if last == '' then  -- a new entity
    if t >= keep_from then  -- else added and cut at once, as in memory
      redis.call('SET', key, row)
      redis.call('ZADD', KEYS[1 + tbl], t, entity)
      delta[tbl] = delta[tbl] + 1
    end
    return true
  end
  if t > t_at(last, 0) then  -- the common case: the entity's newest row
    redis.call('APPEND', key, row)
    delta[tbl] = delta[tbl] + 1
    return true
  end
  local v = redis.call('GET', key)
  local n_rows = #v / W
  if once and id ~= NO_ID then
    for i = first_at_or_after(v, n_rows, t), first_after(v, n_rows, t) - 1 do
      if string.sub(v, i * W + 17, i * W + 24) == id then return false end
    end
  end
  local at = first_after(v, n_rows, t)  -- a late arrival: after the rows of its instant
  redis.call('SETRANGE', key, at * W, row .. string.sub(v, at * W + 1))
  if at == 0 then redis.call('ZADD', KEYS[1 + tbl], t, entity) end
  delta[tbl] = delta[tbl] + 1
  return true
end

local repeated = {}
for i = 0, n - 1 do
  local customer, terminal = KEYS[7 + i], KEYS[7 + n + i]
  local row = string.sub(customer_rows, i * W + 1, (i + 1) * W)
  local t, id = t_at(row, 0), string.sub(row, 17, 24)
  if add(customer, 1, string.sub(customer, #prefix + 3), t, row, id, true) then
    add(terminal, 2, string.sub(terminal, #prefix + 3), t,
      string.sub(terminal_rows, i * W + 1, (i + 1) * W), id, false)
  else
    table.insert(repeated, i)
  end
end

-- entities whose oldest row is `slack` past the floor lose their rows before it (gone
-- entirely when nothing is left), as the in-memory state's cut; a few per call, oldest first
for tbl, kind in ipairs({'c', 't'}) do
  local idx, counter = KEYS[1 + tbl], KEYS[3 + tbl]
  local due = redis.call('ZRANGEBYSCORE', idx, '-inf', '(' .. string.format('%.0f', keep_from),
    'LIMIT', 0, sweep)
  for _, entity in ipairs(due) do
    local key = prefix .. kind .. ':' .. entity
    local v = redis.call('GET', key) or ''
    local n_rows = #v / W
    local k = first_at_or_after(v, n_rows, floor)
    delta[tbl] = delta[tbl] - k
    if k >= n_rows then
      redis.call('DEL', key)
      redis.call('ZREM', idx, entity)
    else
      redis.call('SET', key, string.sub(v, k * W + 1))
      redis.call('ZADD', idx, t_at(v, k), entity)
    end
  end
  if delta[tbl] ~= 0 then redis.call('INCRBY', counter, delta[tbl]) end
end
return {repeated, read}
"""
)

_REMOVE = (
    _LUA_COMMON
    + """
-- KEYS: idx:c, idx:t, rows:c, rows:t, then n customer and n terminal keys
-- ARGV: n, prefix, the n rows (W bytes each: time and id) to take out of both
-- takes out the row of each transaction (its time and id) that an append added: a request
-- that was refused after its history was read and its transactions added in one step. Rows
-- of unknown id (NO_ID) at one instant are told apart by order only (the request path always
-- knows the ids)
local n, prefix, rows = tonumber(ARGV[1]), ARGV[2], ARGV[3]
local removed = 0
local function remove(key, tbl, t, id)
  local v = redis.call('GET', key)
  if not v then return end
  local n_rows = #v / W
  -- the last such row: an append puts a row after the others of its instant
  for i = first_after(v, n_rows, t) - 1, first_at_or_after(v, n_rows, t), -1 do
    if string.sub(v, i * W + 17, i * W + 24) == id then
      local entity = string.sub(key, #prefix + 3)
      if n_rows == 1 then
        redis.call('DEL', key)
        redis.call('ZREM', KEYS[tbl], entity)
      else
        redis.call('SET', key, string.sub(v, 1, i * W) .. string.sub(v, (i + 1) * W + 1))
        if i == 0 then redis.call('ZADD', KEYS[tbl], t_at(v, 1), entity) end
      end
      redis.call('INCRBY', KEYS[2 + tbl], -1)
      removed = removed + 1
      return
    end
  end
end
for i = n - 1, 0, -1 do  -- the last added first
  local t, id = t_at(rows, i), string.sub(rows, i * W + 17, (i + 1) * W)
  remove(KEYS[5 + i], 1, t, id)
  remove(KEYS[5 + n + i], 2, t, id)
end
return removed
"""
)

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

_SET_LABELS = (
    _LUA_COMMON
    + """
-- KEYS: seeded, then n terminal keys; ARGV: n, then per label: time, value (8 bytes), id
if redis.call('EXISTS', KEYS[1]) == 0 then
  return redis.error_reply('NOTSEEDED the online state of this version is not seeded')
end
local n = tonumber(ARGV[1])
local changed, unchanged, not_found = 0, 0, 0
for i = 1, n do
  local key, t = KEYS[1 + i], tonumber(ARGV[2 + (i - 1) * 3])
  local value, id = ARGV[3 + (i - 1) * 3], ARGV[4 + (i - 1) * 3]
  local v = redis.call('GET', key)
  local outcome = nil
  if v then
    local n_rows = #v / W
    local s, e = first_at_or_after(v, n_rows, t), first_after(v, n_rows, t)
    local candidates = {}
    local own = nil
    for r = s, e - 1 do
      local rid = string.sub(v, r * W + 17, r * W + 24)
      if id ~= NO_ID and rid == id and own == nil then own = r end
      if id == NO_ID or rid == NO_ID then table.insert(candidates, r) end
    end
    if own ~= nil then candidates = {own} end
    local target = nil
    for _, r in ipairs(candidates) do
      if string.sub(v, r * W + 9, r * W + 16) == value then outcome = 'unchanged' break end
      if target == nil then target = r end
    end
    if outcome == nil and target ~= nil then
      redis.call('SETRANGE', key, target * W + 8, value)
      outcome = 'changed'
    end
  end
  if outcome == 'changed' then changed = changed + 1
  elseif outcome == 'unchanged' then unchanged = unchanged + 1
  else not_found = not_found + 1 end
end
return {changed, unchanged, not_found}
"""
)


def namespace(model: str, version: str) -> str:
    """The key prefix of one model version's state (one Redis Cluster hash slot)."""
    return f"fraudops:{{{model}/{version}}}:"


def id_digests(transaction_ids: Sequence[str] | None, n: int) -> list[bytes]:
    """8 bytes of BLAKE2b per transaction id: the same in every replica (Python's ``hash``
    is salted per process); :data:`NO_ID` for each when None."""
    if transaction_ids is None:
        return [NO_ID] * n
    return [hashlib.blake2b(t.encode(), digest_size=8).digest() for t in transaction_ids]


def _rows(time_ms: np.ndarray, value: np.ndarray, ids: list[bytes]) -> np.ndarray:
    time_ms = np.asarray(time_ms, np.int64)
    if len(time_ms) and time_ms.min() < 0:
        raise ValueError("the online state keeps times from 1970 on (a negative time in ms)")
    rows = np.empty(len(time_ms), ROW)
    rows["time"] = time_ms
    rows["value"] = np.asarray(value, np.float64)
    rows["id"] = ids
    return rows


def failure_of(e: Exception, url: str) -> StateUnavailable:
    """What a Redis error means for the server, and what to do."""
    # "NOTSEEDED ..." from a script; inside a MULTI redis-py puts "Command # 2 (...)" before it
    if isinstance(e, ResponseError) and "NOTSEEDED" in str(e):
        return StateUnavailable(
            f"the online state in Redis at {url} has lost its data (was Redis restarted "
            "without persistence?): the servers seed it again from the bundle's snapshot and "
            "the inference log, and score again once that is done",
            lost=True,
        )
    if isinstance(e, AuthenticationError | AuthorizationError):
        return StateUnavailable(
            f"Redis at {url} refused the credentials ({e}): check the user and password in "
            "FRAUDOPS_STATE_REDIS_URL (the fraudops-redis Secret)"
        )
    if isinstance(e, ResponseError):
        # inside a MULTI redis-py quotes the command first: its keys hold customer ids
        detail = str(e).split(" caused error: ", 1)[-1]
        hint = (
            "Redis is full: give it more memory (maxmemory), keep its policy noeviction"
            if isinstance(e, OutOfMemoryError) or "maxmemory" in str(e)
            else "check the Redis version (7.0 or newer) and its ACL"
        )
        return StateUnavailable(f"Redis at {url} refused a command ({detail}): {hint}")
    return StateUnavailable(
        f"the online state in Redis at {url} cannot be reached ({type(e).__name__}: {e}); "
        "check that Redis is up and FRAUDOPS_STATE_REDIS_URL is right"
    )


class RedisOnlineState:
    """An :class:`~serving.state.OnlineState` in Redis, one per model version.

    Args:
        url: ``redis://[user:password@]host:port/db`` (``rediss://`` for TLS); from a Secret,
            never from a manifest.
        model: Model name.
        version: Bundle version (each version keeps its own rows).
        retention_days: As :class:`~serving.state.InMemoryOnlineState`.
        sweep_per_append: Idle entities removed per append, at most.
        client: A client to use instead of one made from ``url`` (tests).
    """

    thread_safe = True  # redis-py's client is; every change is one atomic script

    def __init__(
        self,
        url: str,
        model: str,
        version: str,
        retention_days: float,
        sweep_per_append: int = 8,
        client: redis.Redis | None = None,
    ) -> None:
        self.url = without_password(url)
        self.model, self.version = model, version
        self.prefix = namespace(model, version)
        self.retention_ms = int(retention_days * MS_PER_DAY)
        self.slack_ms = self.retention_ms // 16
        self.sweep_per_append = sweep_per_append
        self.redis = client or redis.Redis.from_url(url, **CLIENT_OPTIONS)
        self._connect_url = url  # for the request path's asyncio connections
        self._on_loop: LoopConnections | None = None
        self._closed = False
        p = self.prefix
        self._meta = [p + k for k in ("watermark", "idx:c", "idx:t", "rows:c", "rows:t")]
        self._seeded, self._lock = p + "seeded", p + "seeding"
        # the key whose absence stops a change: the seeded mark, or this replica's lock while
        # it seeds (its replay is written before the mark)
        self._guard = self._seeded
        self._token: str | None = None
        self._append = self.redis.register_script(_APPEND)
        self._set_labels = self.redis.register_script(_SET_LABELS)
        self._remove = self.redis.register_script(_REMOVE)
        self._renew = self.redis.register_script(_RENEW)
        self.read_in_script = READ_IN_SCRIPT
        self.chunk = CHUNK
        self._heartbeat: threading.Event | None = None
        self.heartbeat_thread: threading.Thread | None = None
        """The thread marking the version served (:meth:`start_heartbeat`); it ends soon
        after :meth:`stop_heartbeat`."""
        self._broken_until = 0.0
        self._broken: StateUnavailable | None = None
        self._trying_until = 0.0
        self._stats_read = -1.0
        self._stats: dict[str, int] = dict.fromkeys(
            ("customers", "terminals", "customer_rows", "terminal_rows"), 0
        )

    # -- the request path -------------------------------------------------------------------

    def _check_breaker(self) -> bool:
        """Refuse at once while the breaker is open (Redis failed to answer less than
        :data:`BREAK_SECONDS` ago); after that, let one call through to try Redis again
        (half-open) and refuse the others until it is answered or fails.

        Returns:
            Whether this call is the one trying Redis again (it must end in
            :meth:`_answered`, :meth:`_failed` or :meth:`_gave_up`).
        """
        broken = self._broken
        if broken is None:
            return False
        self._refuse_while_open()
        now = time.monotonic()
        if now < self._trying_until:
            raise StateUnavailable(f"{broken} (one call is trying it again meanwhile)")
        self._trying_until = now + TRYING_SECONDS
        return True

    def _refuse_while_open(self) -> None:
        """Refuse while the breaker is open (not half-open: a call may be trying)."""
        broken = self._broken
        if broken is not None and time.monotonic() < self._broken_until:
            raise StateUnavailable(f"{broken} (tried again within {BREAK_SECONDS:g} s)")

    def _answered(self) -> None:
        """Redis answered: the breaker closes."""
        self._broken = None

    def _gave_up(self, trying: bool) -> None:
        """A call ended without Redis answering or failing (cancelled): if it was trying
        Redis again, the next call tries."""
        if trying:
            self._trying_until = 0.0

    def _failed(self, e: RedisError) -> StateUnavailable:
        failure = failure_of(e, self.url)
        if isinstance(e, RedisConnectionError | RedisTimeoutError):  # down or hanging, not refusing
            self._broken, self._broken_until = failure, time.monotonic() + BREAK_SECONDS
            self._trying_until = 0.0
        else:  # refused: it answered
            self._answered()
        return failure

    def _sync_call(self, call: Callable[[], R]) -> R:
        """``call()`` (synchronous Redis commands) behind the breaker."""
        trying = self._check_breaker()
        try:
            result = call()
        except RedisError as e:
            raise self._failed(e) from e
        except BaseException:
            self._gave_up(trying)
            raise
        self._answered()
        return result

    def history_for(self, customer_ids: Sequence[str], terminal_ids: Sequence[str]) -> History:
        keys = [self._seeded, *self._entity_keys(customer_ids, terminal_ids)]
        values = self._sync_call(lambda: self.redis.mget(keys))
        if values[0] is None:
            raise failure_of(ResponseError("NOTSEEDED"), self.url)
        k = len(customer_ids)
        return History(_entity_rows(values[1 : 1 + k]), _entity_rows(values[1 + k :]))

    def append(
        self,
        customer_ids: Sequence[str],
        terminal_ids: Sequence[str],
        time_ms: np.ndarray,
        amount: np.ndarray,
        label: np.ndarray | None = None,
        transaction_ids: Sequence[str] | None = None,
    ) -> int:
        n = len(customer_ids)
        if n > self.chunk:  # one script at a time holds Redis: a few ms each, not one long hold
            return sum(
                self.append(
                    customer_ids[k : k + self.chunk],
                    terminal_ids[k : k + self.chunk],
                    time_ms[k : k + self.chunk],
                    amount[k : k + self.chunk],
                    None if label is None else label[k : k + self.chunk],
                    None if transaction_ids is None else transaction_ids[k : k + self.chunk],
                )
                for k in range(0, n, self.chunk)
            )
        if n == 0:
            return 0
        keys, args = self._append_call(
            customer_ids, terminal_ids, time_ms, amount, label, transaction_ids
        )
        repeated, _ = self._call(self._append, keys, [*args, 0])
        return len(repeated)

    def _append_call(
        self,
        customer_ids: Sequence[str],
        terminal_ids: Sequence[str],
        time_ms: np.ndarray,
        amount: np.ndarray,
        label: np.ndarray | None,
        transaction_ids: Sequence[str] | None,
    ) -> tuple[list[str], list[Any]]:
        """The keys and arguments of the append script (without the keys to read)."""
        n = len(customer_ids)
        ids = id_digests(transaction_ids, n)
        labels = np.zeros(n) if label is None else label
        customers = _rows(time_ms, amount, ids).tobytes()
        terminals = _rows(time_ms, labels, ids).tobytes()
        args = [self.retention_ms, self.slack_ms, self.sweep_per_append, n, self.prefix]
        args += [customers, terminals]
        keys = [*self._meta, self._guard, *self._entity_keys(customer_ids, terminal_ids)]
        self._stats_read = -1.0  # the sizes change: read them again
        return keys, args

    def _call(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        return self._sync_call(lambda: script(keys=keys, args=args))

    async def score_and_add_async(
        self,
        customers: Sequence[str],
        terminals: Sequence[str],
        customer_ids: Sequence[str],
        terminal_ids: Sequence[str],
        time_ms: np.ndarray,
        amount: np.ndarray,
        transaction_ids: Sequence[str] | None,
        score: Callable[[History], R],
    ) -> tuple[R, int]:
        """One step reads the history and adds the transactions: one round trip, and atomic,
        so the replicas score as one server would (a request sees every transaction of its
        entities that another replica added before). When ``score`` raises, a second script
        takes out the rows this one added (a refused request leaves no rows; the watermark it
        may have moved stays, as it would for any accepted request).

        The round trips are awaited (see :mod:`serving.redis_async`): while Redis answers, the
        server parses and scores other requests. A batch of over :data:`CHUNK` transactions
        is read, scored, then added :data:`CHUNK` at a time (:meth:`_in_chunks`): not one
        step, so that no request holds Redis for long."""
        step = (customers, terminals, customer_ids, terminal_ids, time_ms, amount)
        trying = self._check_breaker()
        try:
            if not 0 < len(customer_ids) <= self.chunk:
                return await self._in_chunks(step, transaction_ids, score)
            keys, args, reads = self._step(step, transaction_ids)
            commands, in_script = self._read_and_append(keys, args, reads)
            replies = await self._exchange(commands)
        except RedisError as e:
            raise self._failed(e) from e
        except BaseException:  # cancelled (a gRPC deadline), refused, or closed by a reload
            self._gave_up(trying)
            raise
        if in_script:
            repeated, values = replies[0]
        else:
            *_, (values, (repeated, _)) = replies
        k = len(customers)
        try:
            result = score(History(_entity_rows(values[:k]), _entity_rows(values[k:])))
        except BaseException:  # refused: what the step added is taken out
            added = np.ones(len(customer_ids), bool)
            added[repeated] = False
            await self._take_out(customer_ids, terminal_ids, customer_rows=args[5], added=added)
            raise
        return result, len(repeated)

    async def _in_chunks(
        self,
        step: _Step,
        transaction_ids: Sequence[str] | None,
        score: Callable[[History], R],
    ) -> tuple[R, int]:
        """A large request (``step``: :meth:`score_and_add_async`'s first six arguments): its
        history read, scored, then its transactions added :data:`CHUNK` at a time, each a
        script of a few milliseconds (as :meth:`append`)."""
        customers, terminals, customer_ids, terminal_ids, time_ms, amount = step
        reads = [self._seeded, *self._entity_keys(customers, terminals)]
        ((seeded, *values),) = await self._exchange([("MGET", *reads)])
        if seeded is None:
            raise failure_of(ResponseError("NOTSEEDED"), self.url)
        k = len(customers)
        result = score(History(_entity_rows(values[:k]), _entity_rows(values[k:])))
        repeated = 0
        for start in range(0, len(customer_ids), self.chunk):
            part = slice(start, start + self.chunk)
            keys, args = self._append_call(
                customer_ids[part],
                terminal_ids[part],
                time_ms[part],
                amount[part],
                None,
                None if transaction_ids is None else transaction_ids[part],
            )
            evalsha = ("EVALSHA", self._append.sha, len(keys), *keys, *args, 0)
            ((added_before, _),) = await self._exchange([evalsha])
            repeated += len(added_before)
        return result, repeated

    def _step(
        self, step: _Step, transaction_ids: Sequence[str] | None
    ) -> tuple[list[str], list[Any], list[str]]:
        """The append script's keys and arguments, and the entity keys it reads first
        (``step``: :meth:`score_and_add_async`'s first six arguments)."""
        customers, terminals, customer_ids, terminal_ids, time_ms, amount = step
        keys, args = self._append_call(
            customer_ids, terminal_ids, time_ms, amount, None, transaction_ids
        )
        return keys, args, self._entity_keys(customers, terminals)

    def _entity_keys(self, customers: Sequence[str], terminals: Sequence[str]) -> list[str]:
        """The keys of these customers' rows, then of these terminals'."""
        p = self.prefix
        return [*(p + "c:" + c for c in customers), *(p + "t:" + t for t in terminals)]

    def _read_and_append(
        self, keys: list[str], args: list[Any], reads: list[str]
    ) -> tuple[list[tuple[Any, ...]], bool]:
        """The commands of one step: the append script, and the values of ``reads`` just
        before it. The script reads them for a few keys (one command, True); for more,
        ``MGET`` and the script go in one ``MULTI`` (a large Lua reply is slower than
        ``MGET``'s)."""
        sha = self._append.sha
        if len(reads) <= self.read_in_script:
            evalsha = ("EVALSHA", sha, len(keys) + len(reads), *keys, *reads, *args, len(reads))
            return [evalsha], True
        evalsha = ("EVALSHA", sha, len(keys), *keys, *args, 0)
        return [("MULTI",), ("MGET", *reads), evalsha, ("EXEC",)], False

    async def _exchange(self, commands: list[tuple[Any, ...]], script: str = _APPEND) -> list[Any]:
        """``commands`` on this event loop's connections (:class:`LoopConnections`), their
        replies; Redis answering closes the breaker.

        Raises:
            RedisError: Redis refused a command (the first refusal), or could not be reached.
                A ``script`` Redis forgot (restarted or flushed: ``NOSCRIPT``, so nothing ran)
                is loaded again, synchronously as it is rare, and the commands sent once more.
        """
        if self._closed:  # replaced (seeded again, or a new bundle): not to be reopened
            raise StateUnavailable(
                f"the online state in Redis at {self.url} was closed by a reload of this "
                "version: try again"
            )
        loop = asyncio.get_running_loop()
        if self._on_loop is None or self._on_loop.loop is not loop:
            if self._on_loop is not None:
                self._on_loop.close()
            self._on_loop = LoopConnections(self._connect_url, CLIENT_OPTIONS)
        # a request that waited for a connection is refused if Redis failed meanwhile
        ready = self._refuse_while_open
        try:
            replies = _raise_refused(await self._on_loop.exchange(commands, ready))
        except NoScriptError:
            self.redis.script_load(script)
            replies = _raise_refused(await self._on_loop.exchange(commands, ready))
        self._answered()
        return replies

    async def _take_out(
        self,
        customer_ids: Sequence[str],
        terminal_ids: Sequence[str],
        customer_rows: bytes,
        added: np.ndarray,
    ) -> None:
        """Remove the rows of the ``added`` transactions from their customers and terminals
        (``customer_rows``: the rows as the append script took them, time and id each)."""
        if not added.any():
            return
        p = self.prefix
        rows = np.frombuffer(customer_rows, ROW)[added]
        keys = [
            *self._meta[1:],
            *(p + "c:" + c for c, a in zip(customer_ids, added, strict=True) if a),
            *(p + "t:" + t for t, a in zip(terminal_ids, added, strict=True) if a),
        ]
        remove = ("EVALSHA", self._remove.sha, len(keys), *keys, len(rows), p, rows.tobytes())
        try:
            try:
                await self._exchange([remove], _REMOVE)
            except RedisError as e:
                raise self._failed(e) from e
        except StateUnavailable as e:  # the refusal goes on; what stays is logged
            log.error(
                "could not take the rows of %d refused transaction(s) out of the online state "
                "(%s); they stay in their customers' and terminals' windows",
                len(rows),
                e,
            )
        self._stats_read = -1.0

    def set_labels(
        self,
        terminal_ids: Sequence[str],
        time_ms: np.ndarray,
        labels: np.ndarray,
        transaction_ids: Sequence[str] | None = None,
    ) -> LabelsSet:
        n = len(terminal_ids)
        if n == 0:
            return LabelsSet()
        values = np.asarray(labels, "<f8")
        args: list[Any] = [n]
        for t, value, id_ in zip(
            np.asarray(time_ms, np.int64).tolist(),
            values,
            id_digests(transaction_ids, n),
            strict=True,
        ):
            args += [t, value.tobytes(), id_]
        keys = [self._guard, *(self.prefix + "t:" + t for t in terminal_ids)]
        changed, unchanged, not_found = self._call(self._set_labels, keys, args)
        return LabelsSet(int(changed), int(unchanged), int(not_found))

    def stats(self) -> dict[str, int]:
        """Sizes for metrics; the last ones read when Redis cannot be reached or the breaker
        is not closed (a scrape must neither fail nor wait out a timeout for it: a request or
        the follow thread tries Redis again), or when read less than a second ago and not
        changed here since (a scrape asks four times)."""
        if time.monotonic() - self._stats_read < 1.0 or self._broken is not None:
            return dict(self._stats)

        def read() -> list[Any]:
            with self.redis.pipeline(transaction=False) as pipe:
                pipe.zcard(self._meta[1]).zcard(self._meta[2])
                pipe.get(self._meta[3]).get(self._meta[4])
                return pipe.execute()

        try:
            customers, terminals, c_rows, t_rows = self._sync_call(read)
        except StateUnavailable:
            return dict(self._stats)
        self._stats_read = time.monotonic()
        self._stats = {
            "customers": int(customers),
            "terminals": int(terminals),
            "customer_rows": int(c_rows or 0),
            "terminal_rows": int(t_rows or 0),
        }
        return dict(self._stats)

    # -- seeding and replay -----------------------------------------------------------------

    def seed(
        self,
        frame: pd.DataFrame,
        then: Callable[[], object] | None = None,
        wait_seconds: float = SEED_WAIT_SECONDS,
    ) -> int | None:
        """Seed this version's state from the bundle's snapshot, once for all replicas.

        The first replica takes a lock (renewed while it works), clears what a replica that
        died while seeding left, writes every row, runs ``then`` (the inference-log replay)
        and only then marks the state seeded: no replica scores on the snapshot alone. The
        others wait for the mark.

        Args:
            frame: The snapshot (as :meth:`InMemoryOnlineState.load_frame` reads it).
            then: Called by the seeding replica before the mark, e.g. to replay the log.
            wait_seconds: How long to wait for another replica's seeding.

        Returns:
            The rows this replica wrote; None when the version was seeded already, by
            another replica or before (this replica then ran no ``then``).

        Raises:
            StateUnavailable: Redis cannot be reached or evicts keys, this replica lost its
                lock, or another replica's seeding did not finish in ``wait_seconds``.
        """
        token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        deadline = time.monotonic() + wait_seconds
        waiting_for = None
        try:
            self._check_eviction()
            while True:
                if self.redis.exists(self._seeded):
                    return None
                if self.redis.set(self._lock, token, nx=True, ex=SEED_LOCK_SECONDS):
                    # another replica may have marked it and let go of the lock since the
                    # check above: seeding again would clear a state in use
                    if not self.redis.exists(self._seeded):
                        break
                    self._release(token)
                    return None
                holder = self.redis.get(self._lock)
                if holder is not None and holder != waiting_for:
                    waiting_for = holder
                    log.info("waiting for %s to seed the online state in Redis", holder.decode())
                if time.monotonic() > deadline:
                    raise StateUnavailable(
                        f"the online state in Redis at {self.url} is being seeded by "
                        f"{holder!r} for more than {wait_seconds:g} s; check that replica's "
                        f"log, or delete the key {self._lock!r} if it is gone"
                    )
                time.sleep(0.2)
            self._guard, self._token = self._lock, token
            try:
                written = self._write_seed(frame)
                if then is not None:
                    then()
                self._hold()
                self.redis.set(
                    self._seeded,
                    json.dumps({"by": token, "rows": written, "at": datetime.now(UTC).isoformat()}),
                )
            finally:
                self._guard, self._token = self._seeded, None
                self._release(token)
        except RedisError as e:
            raise failure_of(e, self.url) from e
        return written

    def _release(self, token: str) -> None:
        """Delete the seeding lock if this replica (``token``) still holds it."""
        if self.redis.get(self._lock) == token.encode():
            self.redis.delete(self._lock)

    def _hold(self) -> None:
        """Renew this replica's seeding lock, or stop: another replica may be seeding now."""
        if self._token is not None and not self._renew(
            keys=[self._lock], args=[self._token, SEED_LOCK_SECONDS]
        ):
            raise StateUnavailable(
                f"this replica lost its lock on seeding the online state in Redis at {self.url} "
                f"(a pause over {SEED_LOCK_SECONDS} s?); the load is tried again"
            )

    def _check_eviction(self) -> None:
        """Refuse a Redis that evicts keys of any kind: rows would vanish without an error."""
        try:
            policy = self.redis.info("memory").get("maxmemory_policy", "")
        except ResponseError:  # INFO not allowed to this user: cannot tell
            return
        if str(policy).startswith("allkeys"):
            raise StateUnavailable(
                f"Redis at {self.url} evicts keys when full (maxmemory-policy {policy}): rows of "
                "the online state would vanish and the features silently change; set "
                "maxmemory-policy noeviction (or a volatile-* policy) and enough maxmemory"
            )

    def _write_seed(self, frame: pd.DataFrame) -> int:
        self._clear()
        if frame.empty:
            return 0
        times, labels, transaction_ids = frame_columns(frame)
        ids = id_digests(transaction_ids, len(frame))
        watermark = int(times.max())
        floor = watermark - self.retention_ms
        p = self.prefix
        with self.redis.pipeline(transaction=False) as pipe:
            for kind, entities, values in (
                ("c", frame["customer_id"], frame["amount"].to_numpy(np.float64)),
                ("t", frame["terminal_id"], labels),
            ):
                codes, uniques = pd.factorize(entities.astype(str))
                order = np.lexsort((times, codes))
                rows = _rows(times[order], values[order], [ids[i] for i in order])
                bounds = np.flatnonzero(np.diff(codes[order])) + 1
                kept, oldest = 0, {}
                for at, part in zip(
                    np.concatenate([[0], bounds]).tolist(), np.split(rows, bounds), strict=True
                ):
                    entity = str(uniques[codes[order[at]]])
                    part_times = part["time"].astype(np.int64)
                    if part_times[0] < floor - self.slack_ms:  # as the in-memory state's prune
                        part = part[part_times >= floor]
                        if not len(part):
                            continue
                    pipe.set(p + f"{kind}:{entity}", part.tobytes())
                    oldest[entity] = int(part["time"][0])
                    kept += len(part)
                    if len(pipe) >= CHUNK:
                        self._hold()
                        pipe.execute()
                items = list(oldest.items())
                for start in range(0, len(items), CHUNK):
                    pipe.zadd(p + f"idx:{kind}", dict(items[start : start + CHUNK]))
                pipe.set(p + f"rows:{kind}", kept)
            pipe.set(p + "watermark", watermark)
            pipe.execute()
        return len(frame)

    def _clear(self) -> None:
        """Delete every key of this version but the lock (what a failed seeding left)."""
        keys = [
            k
            for k in self.redis.scan_iter(match=_glob_escape(self.prefix) + "*", count=1_000)
            if k != self._lock.encode()
        ]
        for start in range(0, len(keys), CHUNK):
            self.redis.delete(*keys[start : start + CHUNK])

    def load_frame(self, frame: pd.DataFrame) -> int:
        """Add logged transactions (a replay), each once, in chunks: other replicas may have
        added them already. Returns the number of rows read."""
        if frame.empty:
            return 0
        times, labels, transaction_ids = frame_columns(frame)
        columns = (
            frame["customer_id"].astype(str).tolist(),
            frame["terminal_id"].astype(str).tolist(),
            times,
            frame["amount"].to_numpy(np.float64),
            labels,
            transaction_ids,
        )
        for start in range(0, len(frame), CHUNK):
            at = slice(start, start + CHUNK)
            self._hold()
            self.append(*(None if c is None else c[at] for c in columns))
        return len(frame)

    def is_served(self) -> bool:
        """Whether a replica marked this version served in the last :data:`SERVED_SECONDS`."""
        try:
            return bool(self.redis.exists(self.prefix + "served"))
        except RedisError as e:
            raise failure_of(e, self.url) from e

    def mark_served(self) -> None:
        """Mark this version served by this replica, for :data:`SERVED_SECONDS`."""
        mark = {"by": f"{socket.gethostname()}:{os.getpid()}", "at": datetime.now(UTC).isoformat()}
        try:
            self.redis.set(self.prefix + "served", json.dumps(mark), ex=SERVED_SECONDS)
        except RedisError as e:
            raise failure_of(e, self.url) from e

    def start_heartbeat(self, every: float = HEARTBEAT_SECONDS) -> None:
        """Mark the version served now and every ``every`` seconds (a thread), until
        :meth:`stop_heartbeat` or :meth:`close`."""
        if self._heartbeat is not None:
            return
        stop = self._heartbeat = threading.Event()

        def beat() -> None:
            failing = False
            while True:
                try:
                    self.mark_served()
                    failing = False
                except StateUnavailable as e:  # the requests say it (503); once here is enough
                    if not failing:
                        log.warning(
                            "cannot mark %s %s served in Redis: %s", self.model, self.version, e
                        )
                    failing = True
                if stop.wait(every):
                    return

        self.heartbeat_thread = threading.Thread(
            target=beat, name="fraudops-state-served", daemon=True
        )
        self.heartbeat_thread.start()

    def stop_heartbeat(self) -> None:
        """Stop marking the version served (the mark lapses within :data:`SERVED_SECONDS`)."""
        if self._heartbeat is not None:
            self._heartbeat.set()
            self._heartbeat = None

    def close(self) -> None:
        """Stop the heartbeat and close the connections."""
        self.stop_heartbeat()
        self.redis.close()
        self._closed = True
        if self._on_loop is not None:
            self._on_loop.close()
            self._on_loop = None


def stored_versions(client: redis.Redis, model: str) -> list[dict[str, Any]]:
    """The versions of ``model`` that have an online state in this Redis.

    Returns:
        Per version: ``version``, ``seeded`` (the mark's JSON, None while being seeded or
        after a failed seeding), ``seeding`` (a replica holds the seeding lock), ``served``
        (the latest replica's mark, None when no replica marked it in the last
        :data:`SERVED_SECONDS`), ``customers``, ``terminals``, ``rows`` (customer rows) and
        ``keys``.
    """
    pattern = _glob_escape(f"fraudops:{{{model}/") + "*"
    versions: dict[str, int] = {}
    for key in client.scan_iter(match=pattern, count=1_000):
        version = key.decode().split("/", 1)[1].rsplit("}:", 1)[0]
        versions[version] = versions.get(version, 0) + 1
    out = []
    for version, keys in sorted(versions.items()):
        p = namespace(model, version)
        with client.pipeline(transaction=False) as pipe:
            pipe.get(p + "seeded").zcard(p + "idx:c").zcard(p + "idx:t").get(p + "rows:c")
            pipe.exists(p + "seeding").get(p + "served")
            seeded, customers, terminals, rows, seeding, served = pipe.execute()
        out.append(
            {
                "version": version,
                "seeded": _json_or_none(seeded),
                "seeding": bool(seeding),
                "served": _json_or_none(served),
                "customers": int(customers),
                "terminals": int(terminals),
                "rows": int(rows or 0),
                "keys": keys,
            }
        )
    return out


def drop_version(client: redis.Redis, model: str, version: str) -> int:
    """Delete the online state of one version (a retired one); returns the keys deleted."""
    keys = list(client.scan_iter(match=_glob_escape(namespace(model, version)) + "*", count=1_000))
    for start in range(0, len(keys), CHUNK):
        client.delete(*keys[start : start + CHUNK])
    return len(keys)


def kept_because(client: redis.Redis, model: str, version: str, locked: bool = False) -> str | None:
    """Why a version's state must stay although no alias names it: a replica serves it, seeds
    it (unless ``locked``: the caller holds the lock), or seeded it less than
    :data:`SERVED_SECONDS` ago (it marks it served once loaded); None when it is retired."""
    p = namespace(model, version)
    served, seeded, seeding = client.mget(p + "served", p + "seeded", p + "seeding")
    if served is not None:
        mark = _json_or_none(served) or {}
        return f"served by {mark.get('by', '?')} (marked {str(mark.get('at', '?'))[:19]})"
    if seeding is not None and not locked:
        return "being seeded"
    at = (_json_or_none(seeded) or {}).get("at")
    try:
        age = (datetime.now(UTC) - datetime.fromisoformat(at)).total_seconds() if at else None
    except (TypeError, ValueError):
        age = None
    if age is not None and age < SERVED_SECONDS:
        return f"seeded {age:.0f} s ago (a replica is loading it)"
    return None


def drop_if_retired(client: redis.Redis, model: str, version: str, by: str) -> str | None:
    """Delete a version's state unless :func:`kept_because` says why not, holding the seeding
    lock meanwhile: no replica seeds the version while its keys go (one that wants to waits).

    Returns:
        Why the state was kept, or None when it was deleted.
    """
    p = namespace(model, version)
    token = f"prune:{by}:{uuid.uuid4().hex[:8]}"
    if not client.set(p + "seeding", token, nx=True, ex=SEED_LOCK_SECONDS):
        return "being seeded"
    try:
        why = kept_because(client, model, version, locked=True)
        if why is not None:
            return why
        keys = [
            k
            for k in client.scan_iter(match=_glob_escape(p) + "*", count=1_000)
            if k != (p + "seeding").encode()
        ]
        for start in range(0, len(keys), CHUNK):
            client.delete(*keys[start : start + CHUNK])
        return None
    finally:
        if client.get(p + "seeding") == token.encode():
            client.delete(p + "seeding")


def _raise_refused(replies: list[Any]) -> list[Any]:
    """The replies, unless Redis refused a command: then its error, the first one (a command
    refused while queued in a ``MULTI`` says why before ``EXEC``'s EXECABORT; one that failed
    inside the transaction is an error in ``EXEC``'s reply)."""
    for reply in replies:
        if isinstance(reply, ResponseError):
            raise reply
    for reply in replies[-1] if isinstance(replies[-1], list) else ():
        if isinstance(reply, ResponseError):
            raise reply
    return replies


def _json_or_none(raw: bytes | None) -> dict[str, Any] | None:
    """A mark's JSON; None when absent or not JSON (written by hand, or damaged)."""
    try:
        value = json.loads(raw) if raw is not None else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _entity_rows(values: list[bytes | None]) -> EntityRows:
    lengths = [0 if v is None else len(v) // ROW.itemsize for v in values]
    if not any(lengths):
        return EntityRows.empty()
    rows = np.frombuffer(b"".join(v for v in values if v), ROW)
    group = np.repeat(np.arange(len(values), dtype=np.int64), lengths)
    return EntityRows(group, rows["time"].astype(np.int64), rows["value"].astype(np.float64))


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def without_password(url: str) -> str:
    """The URL as logs and error messages may show it (no password, in either form redis-py
    reads: ``user:password@`` or ``?password=``)."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user = userinfo.partition(":")[0]
        netloc = f"{user}:***@{host}" if ":" in userinfo else f"{user}@{host}"
    query = urlencode(
        [(k, "***" if k.lower() == "password" else v) for k, v in parse_qsl(parts.query)],
        safe="*",
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
