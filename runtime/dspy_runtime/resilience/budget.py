"""The daily spend limit (``DAILY_BUDGET_USD``), shared by every replica and never overshot.

Reserve, call, settle. Before an LM call the caller reserves the call's worst-case cost
(``reserve``: its prompt's tokens at the prompt price plus ``max_tokens`` at the completion
price, for every LM call a prediction may make); the reservation is admitted only while
``spent + reserved + worst <= limit``. After the call, ``settle`` replaces the reservation by
what the call really cost (0 when it failed). Checking "is anything left?" before a call and
charging after it let every call that started before the limit was reached through: two
replicas with 16 concurrent new questions paid for 24 calls on a budget for 8. With
reservations the fleet's spend stays within the limit, whatever the number of replicas and
calls in flight, up to the error of one call's token estimate.

The decision is one Lua script on Redis, atomic for the whole fleet. Per UTC day it keeps
``<prefix>:<day>`` (USD spent, a float string: what the budget's readers ``GET``),
``<prefix>:<day>:held`` (a hash: reservation id -> USD, and their ``total``) and
``<prefix>:<day>:deadlines`` (a sorted set: reservation id -> deadline in ms by Redis' own
clock). A reservation whose pod died before settling lapses at its deadline, so a crash
cannot shrink the budget for the rest of the day.

Spend must survive Redis, which it did not: a restart forgot it and an ``allkeys-lru``
eviction could take it. So (1) the budget's keys carry no TTL, which the managed Redis'
``volatile-lru`` policy never evicts (cache entries all have TTLs; a day's keys get one when
a replica rolls over to the next day); (2) the managed Redis persists (append-only file,
``reconcile/desired.py``); and (3) every write carries this replica's floor, the highest
total it has seen today, and the script raises a lower stored total to it: after a Redis
that lost data, the replicas' own counts put the spend back on their next write.

A replica makes one script call at a time, and each call carries everything settled here
since the last one (spend to add, reservations to release). Concurrent calls finishing
together thus cost a round trip or two on one connection, not one new connection each: that
connection storm, on a busy machine, made connects exceed the short Redis timeout.

Without Redis, the same rules hold in the process, on this replica's share of the limit,
``limit / replicas`` (``RUNTIME_REPLICAS``). While Redis is down, each replica reserves
locally out of its share of what was left when it last saw the total, ``(limit - seen) /
replicas``. Either way the fleet together stays within the limit (while it runs at most
that many replicas); spend made during an outage is added to Redis when it is back. The budget never raises: a
money guard that breaks serving is worse than one that is briefly cautious.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from redis.asyncio import Redis

from ..cache.redis import REDIS_FAILURES, FailureWindow
from ..clock import Clock

RETIRED_DAY_TTL_SECONDS = 24 * 3600
"""The previous day's keys expire this long after a replica rolls over to a new day."""

# A foreign non-number under our key is a ValueError; treat it like an outage, not a crash.
_FAILURES: tuple[type[BaseException], ...] = (*REDIS_FAILURES, ValueError)

# KEYS: spent, held (hash: id -> usd, and 'total'), deadlines (sorted set: id -> ms).
# ARGV: floor, usd to add, limit ('' for none), worst, new reservation id ('' for none),
#       its lifetime in ms, then the ids of reservations to release.
# Returns {admitted, spent, reserved}; amounts as strings (a Lua number reply is truncated).
_SYNC_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function release(id)
  local usd = redis.call('HGET', KEYS[2], id)
  if usd then
    redis.call('HDEL', KEYS[2], id)
    redis.call('HINCRBYFLOAT', KEYS[2], 'total', '-' .. usd)
  end
  redis.call('ZREM', KEYS[3], id)
end
for i = 7, #ARGV do release(ARGV[i]) end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)) do release(id) end
if redis.call('ZCARD', KEYS[3]) == 0 then redis.call('DEL', KEYS[2]) end
local spent = redis.call('GET', KEYS[1])
if not spent or tonumber(spent) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1])
  spent = ARGV[1]
else
  redis.call('PERSIST', KEYS[1])
end
if tonumber(ARGV[2]) > 0 then spent = redis.call('INCRBYFLOAT', KEYS[1], ARGV[2]) end
local held = redis.call('HGET', KEYS[2], 'total') or '0'
if ARGV[5] == '' then return {1, spent, held} end
if tonumber(spent) + tonumber(held) + tonumber(ARGV[4]) > tonumber(ARGV[3]) then return {0, spent, held} end
redis.call('HSET', KEYS[2], ARGV[5], ARGV[4])
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[6]), ARGV[5])
return {1, spent, redis.call('HINCRBYFLOAT', KEYS[2], 'total', ARGV[4])}
"""


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Hold:
    """A reservation of ``usd`` on ``day``: in Redis under ``id`` when ``shared``, else in this
    process's count. An unlimited budget's holds are empty (0 USD, nothing held anywhere)."""

    day: str
    id: str
    usd: float
    shared: bool


class Budget:
    """Daily USD budget; ``daily_usd`` None or 0 means unlimited (spend is still counted)."""

    def __init__(
        self,
        daily_usd: float | None,
        redis: Redis | None,
        *,
        key_prefix: str = "dspy:budget",
        now: Callable[[], datetime] = _utc_now,
        backoff_seconds: float = 1.0,
        clock: Clock = time.monotonic,
        replicas: int = 1,
    ) -> None:
        self.daily_usd = daily_usd if daily_usd and daily_usd > 0 else None
        self._redis = redis
        self._script = redis.register_script(_SYNC_SCRIPT) if redis is not None else None
        self._prefix = key_prefix
        self._now = now
        self._window = FailureWindow(backoff_seconds, clock)
        self._replicas = max(1, replicas)
        self._day = ""
        self._seen = 0.0  # the day's shared total as last read or written; never lowered within a day
        self._reserved = 0.0  # the fleet's reservations as last read
        self._pending = 0.0  # spent here but not yet added to Redis
        self._releases: list[str] = []  # reservations settled here but not yet released in Redis
        self._local_held = 0.0  # reservations in this process's count (no Redis, or Redis down)
        self._refusing = False  # the last reservation was refused
        self._retire: str | None = None  # the previous day, whose keys get a TTL with the next write
        self._writing = asyncio.Lock()  # one script call at a time (see the module docstring)

    @property
    def healthy(self) -> bool:
        """False while the shared counter is unreachable and the local count is used."""
        return self._redis is None or self._window.healthy

    @property
    def known_today(self) -> float:
        """Today's spend as last known here (the shared total last read or written, plus what is
        pending), without any I/O: what ``dspy_budget_spent_today_usd`` exports."""
        if self._now().strftime("%Y-%m-%d") != self._day:
            return 0.0
        return self._seen + self._pending

    @property
    def reserved_today(self) -> float:
        """Reservations of calls in flight, the fleet's as last read from Redis plus this process's own."""
        return self._reserved + self._local_held

    @property
    def refusing(self) -> bool:
        """The last reservation today was refused: too little is left for another call."""
        return self._refusing and self._now().strftime("%Y-%m-%d") == self._day

    async def exhausted(self) -> bool:
        if self.daily_usd is None:
            return False
        return await self.spent_today() >= self.daily_usd or self.refusing

    async def reserve(self, usd: float, hold_seconds: float) -> Hold | None:
        """Hold ``usd`` (a call's worst case) for at most ``hold_seconds``; None when it does not fit.

        Admitted while today's spend, plus every reservation in flight, plus ``usd`` stays
        within the limit: decided in Redis for the fleet, or locally (see the module docstring).
        """
        day = self._roll()
        if self.daily_usd is None:
            return Hold(day, "", 0.0, shared=False)
        limit = self.daily_usd / self._replicas  # no shared counter: this replica's share
        if self._redis is not None:
            async with self._writing:
                day = self._roll()
                if self._window.may_try():
                    hold = Hold(day, uuid.uuid4().hex, usd, shared=True)
                    admitted = await self._sync(day, hold, math.ceil(hold_seconds * 1000))
                    if admitted is not None:
                        self._refusing = not admitted
                        return hold if admitted else None
            # Redis is down: this replica's share of what was left when it last saw the total.
            limit = self._seen + max(0.0, self.daily_usd - self._seen) / self._replicas
        if self._seen + self._pending + self._local_held + usd > limit:
            self._refusing = True
            return None
        self._refusing = False
        self._local_held += usd
        return Hold(day, "", usd, shared=False)

    async def settle(self, hold: Hold, usd: float) -> float:
        """Replace ``hold`` by what the call cost (0 when it failed); returns the day's total as best known.

        A reservation of a day that has ended is dropped (its keys expire); the cost counts today.
        """
        if hold.day == self._roll() and hold.usd > 0:
            if hold.shared:
                self._releases.append(hold.id)
            else:
                self._local_held = max(0.0, self._local_held - hold.usd)
        return await self.spend(usd)

    async def spend(self, usd: float) -> float:
        """Add ``usd`` to today's spend; returns the day's total as best known.

        When Redis is reachable, the amount is in Redis by the time this returns:
        written by this call, or by the call before it, which took everything
        pending when its turn came.
        """
        self._roll()
        if usd > 0:
            self._pending += usd
        if self._redis is None:
            return self._seen + self._pending
        async with self._writing:
            day = self._roll()
            if (self._pending > 0 or self._releases) and self._window.may_try():
                await self._sync(day)
        return self._seen + self._pending

    async def spent_today(self) -> float:
        day = self._roll()
        if self._redis is not None and self._window.may_try():
            try:
                raw = await self._redis.get(self._keys(day)[0])
                if raw is not None:
                    self._seen = max(self._seen, float(raw))  # a Redis that lost data does not lower it
            except _FAILURES:
                self._window.failed()
            else:
                self._window.succeeded()
        return self._seen + self._pending

    async def _sync(self, day: str, hold: Hold | None = None, hold_ms: int = 0) -> bool | None:
        """One script call carrying everything pending (and ``hold``, to admit or refuse); whether
        ``hold`` was admitted (True without one), or None when Redis failed. Call under ``_writing``."""
        assert self._redis is not None and self._script is not None
        amount, releases = self._pending, self._releases
        self._pending, self._releases = 0.0, []
        limit = "" if self.daily_usd is None else repr(self.daily_usd)
        args = [repr(self._seen), repr(amount), limit, repr(hold.usd if hold else 0.0),
                hold.id if hold else "", hold_ms, *releases]  # fmt: skip
        try:
            if self._retire is not None:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for key in self._keys(self._retire):
                        pipe.expire(key, RETIRED_DAY_TTL_SECONDS)
                    await pipe.execute()
                self._retire = None
            admitted, spent, reserved = await self._script(keys=self._keys(day), args=args)
            self._seen = max(self._seen, float(spent))  # a read may have stored a newer total
            self._reserved = float(reserved)
        except (*_FAILURES, asyncio.CancelledError) as exc:
            # Kept for the next write. A cancelled call may have run: counting it twice is the safe error.
            self._pending += amount
            self._releases = releases + self._releases
            if isinstance(exc, asyncio.CancelledError):
                raise
            self._window.failed()
            return None
        self._window.succeeded()
        return bool(admitted)

    def _keys(self, day: str) -> tuple[str, str, str]:
        """Spent, reservations and their deadlines, for ``day``."""
        spent = f"{self._prefix}:{day}"
        return spent, f"{spent}:held", f"{spent}:deadlines"

    def _roll(self) -> str:
        """Today's date; a new UTC day starts from zero (yesterday's unsynced spend no longer counts)."""
        day = self._now().strftime("%Y-%m-%d")
        if day != self._day:
            if self._day:
                self._retire = self._day
            self._day, self._seen, self._pending, self._reserved = day, 0.0, 0.0, 0.0
            self._releases, self._local_held, self._refusing = [], 0.0, False
        return day
