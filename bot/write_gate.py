"""One installation's writes spaced across every worker process, through Redis.

GitHub asks integrations to send mutating requests one at a time, at least a second apart, and
to hold them all after a secondary rate limit. ``bot.github.WriteGate`` does
that inside one process; with several Celery workers each would keep its own pace and together
they would not. ``RedisWriteGate`` keeps the pace in Redis: a lock that one write holds while it
runs, the earliest time the next write may start, and the queue of waiting writers (first come,
first served). Times are Redis's own clock (``TIME``), so workers on hosts with skewed clocks
still agree.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

# Take the lock when it is free, the slot has come and no one has waited longer; else answer
# how many microseconds to wait. Waiters queue in a sorted set by arrival (first come, first
# served: a process writing in a loop must not starve the others) and say they are alive in a
# hash each time they ask; one that stopped asking (its process died) loses its place.
# KEYS: lock, next-write time, queue, last-asked; ARGV: owner, lock TTL (ms), poll (us),
# stale after (us), longest wait answered (us).
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local owner, poll, cap = ARGV[1], tonumber(ARGV[3]), tonumber(ARGV[5])
if not redis.call('ZSCORE', KEYS[3], owner) then redis.call('ZADD', KEYS[3], now, owner) end
redis.call('HSET', KEYS[4], owner, now)
local head = redis.call('ZRANGE', KEYS[3], 0, 0)[1]
while head ~= owner do
  if tonumber(redis.call('HGET', KEYS[4], head) or '0') >= now - tonumber(ARGV[4]) then break end
  redis.call('ZREM', KEYS[3], head)
  redis.call('HDEL', KEYS[4], head)
  head = redis.call('ZRANGE', KEYS[3], 0, 0)[1]
end
local keep = math.floor(tonumber(ARGV[4]) / 1000) * 2
redis.call('PEXPIRE', KEYS[3], keep)
redis.call('PEXPIRE', KEYS[4], keep)
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= owner then
  local left = redis.call('PTTL', KEYS[1])
  if left < 1 then left = 1 end
  return math.min(left * 1000, poll)
end
local due = tonumber(redis.call('GET', KEYS[2]) or '0') - now
if head ~= owner then return math.min(math.max(due, 0) + poll, cap) end
if due > 0 then return math.min(due, cap) end
redis.call('SET', KEYS[1], owner, 'PX', ARGV[2])
redis.call('ZREM', KEYS[3], owner)
redis.call('HDEL', KEYS[4], owner)
return 0
"""

# The write is over: the next one may start ``interval`` from now (or later, after a deferral);
# then free the lock if this owner still holds it. ARGV: owner, interval (us).
_RELEASE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local next_at = math.max(tonumber(redis.call('GET', KEYS[2]) or '0'), now + tonumber(ARGV[2]))
redis.call('SET', KEYS[2], string.format('%d', next_at), 'PX', math.floor((next_at - now) / 1000) + 60000)
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
"""

# Nobody writes before ``seconds`` from now (a rate limit seen by one worker applies to all).
_DEFER = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local next_at = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), now + tonumber(ARGV[1]))
redis.call('SET', KEYS[1], string.format('%d', next_at), 'PX', math.floor((next_at - now) / 1000) + 60000)
return 0
"""


class RedisWriteGate:
    """``bot.github.Gate`` for one installation, shared by every process using the same Redis keys.

    ``lock_seconds`` bounds how long a worker that died mid-write blocks the others; keep it
    above the request timeout. ``poll_seconds`` is the longest nap while another process writes.
    A waiter asks again at least every ``MAX_NAP_SECONDS`` (a long deferral is slept in steps),
    so one that has not asked for ``STALE_SECONDS`` is taken for dead and leaves the queue.
    """

    MAX_NAP_SECONDS = 1.0
    STALE_SECONDS = 10.0

    def __init__(self, client: Any, key: str, min_interval: float, *, lock_seconds: float = 60.0,
                 poll_seconds: float = 0.05) -> None:
        if min_interval < 0 or lock_seconds <= 0 or poll_seconds <= 0:
            raise ValueError("min_interval must be >= 0, lock_seconds and poll_seconds > 0")
        self.client, self.min_interval = client, min_interval
        self._keys = (f"{key}:lock", f"{key}:next", f"{key}:queue", f"{key}:asked")
        self._lock_ms = int(lock_seconds * 1000)
        self._poll_us = int(poll_seconds * 1_000_000)
        self._acquire = client.register_script(_ACQUIRE)
        self._release = client.register_script(_RELEASE)
        self._defer = client.register_script(_DEFER)

    @classmethod
    def factory(cls, client: Any, api_url: str, min_interval: float, prefix: str = "ptbot:writes:",
                **kwargs: Any) -> Callable[[int], RedisWriteGate]:
        """``GitHubApp(write_gate=...)``: one gate per installation on ``api_url``."""
        return lambda installation_id: cls(client, f"{prefix}{api_url.rstrip('/')}|{installation_id}",
                                           min_interval, **kwargs)

    def defer(self, seconds: float) -> None:
        """Hold every write of the installation, in every process, for ``seconds``."""
        self._defer(keys=[self._keys[1]], args=[int(max(0.0, seconds) * 1_000_000)])

    def run(self, fn: Callable[[], T], sleep: Callable[[float], None]) -> T:
        owner = uuid.uuid4().hex
        while True:
            wait_us = int(self._acquire(keys=list(self._keys), args=[
                owner, self._lock_ms, self._poll_us, int(self.STALE_SECONDS * 1_000_000),
                int(self.MAX_NAP_SECONDS * 1_000_000)]))
            if wait_us <= 0:
                break
            sleep(wait_us / 1_000_000)
        try:
            return fn()
        finally:
            self._release(keys=list(self._keys[:2]), args=[owner, int(self.min_interval * 1_000_000)])

