"""The operator's only Redis I/O: the routing table out, the runtime pods' reports in.

Keys follow the operator <-> runtime contract: every key of one resource starts with the prefix
`api.redis_prefix(namespace, name)`, `dspy:{<namespace>/<name>}:` (a Redis Cluster hash tag: one shard, so a MULTI over them works).
The client is the synchronous one: kopf runs sync handlers in its thread pool, and a call here
is a handful of round trips.

Failure handling: every method raises `BusUnavailable` (one domain error) when Redis cannot be
reached or answers with an error, never a redis-py exception and never after minutes of retries.
An exception rather than an "unavailable" return value because the caller's reaction is the same
for every call (hold the rollout where it is and report it in a condition), so one `except`
around a whole pass is simpler and safer than checking each result; a missed check would read
"no data" as "nothing happened" and advance a rollout on it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Final

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from dspy_operator.rollout.analysis import bucket_starts
from dspy_operator.status.pods import PodReport, parse_report

SOCKET_TIMEOUT_SECONDS: Final = 2.0
"""Longest a handler thread waits on one Redis call; a longer stall is reported, not waited out."""
HEALTH_CHECK_SECONDS: Final = 30
"""A pooled connection idle this long is PINGed before use, so a restarted Redis costs no error."""
EVALUATION_TTL_SECONDS: Final = 86400
"""Lifetime of an evaluation request and of the pending set (the contract's EX 86400)."""


class BusUnavailable(Exception):
    """Redis could not be reached or refused a command; the message says which call and why."""


class RuntimeBus:
    """The Redis a resource's runtime pods share, seen from the operator (methods take the prefix).

    Build it with `RuntimeBus.from_url` (or through `RuntimeBuses`) or around any client that
    decodes responses, e.g. a test double."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client

    @classmethod
    def from_url(cls, url: str) -> RuntimeBus:
        """A client with short timeouts and a single immediate retry: redis-py's default of ten
        retries with exponential backoff would park a kopf worker thread for many seconds while
        Redis is down; one retry still covers a connection Redis closed while it sat idle."""
        client = redis.Redis.from_url(
            url,
            socket_timeout=SOCKET_TIMEOUT_SECONDS,
            socket_connect_timeout=SOCKET_TIMEOUT_SECONDS,
            health_check_interval=HEALTH_CHECK_SECONDS,
            retry=Retry(NoBackoff(), 1),
            decode_responses=True,
        )
        return cls(client)

    def close(self) -> None:
        self._client.close()

    def publish_table(self, key: str, table_json: str, serial: int) -> None:
        """Store the routing table at `key` (`api.routing_redis_key`: one per color) with its serial
        and announce the serial, all in one MULTI, so a pod that hears the announcement reads the
        table it announces."""
        with _unavailable_as("publish the routing table"):
            pipe = self._client.pipeline(transaction=True)
            pipe.set(key, table_json)
            pipe.set(f"{key}:serial", serial)
            pipe.publish(key, str(serial))
            pipe.execute()

    def table_serial(self, key: str) -> int | None:
        """The serial of the table last published at `key`; None when none was (or it is unreadable)."""
        with _unavailable_as("read the routing serial"):
            value = self._client.get(f"{key}:serial")
        return _int_or_none(value)

    def read_buckets(self, prefix: str, start: float, end: float) -> dict[int, dict[str, str]]:
        """The window buckets whose whole span lies in [start, end), by bucket start, in one
        round trip. Buckets nobody wrote to (or that expired) are left out."""
        starts = bucket_starts(start, end)
        with _unavailable_as("read the window buckets"):
            pipe = self._client.pipeline(transaction=False)
            for bucket in starts:
                pipe.hgetall(f"{prefix}win:{bucket}")
            hashes = pipe.execute()
        return {bucket: fields for bucket, fields in zip(starts, hashes) if fields}

    def served_tables(self, prefix: str) -> dict[str, PodReport]:
        """Pod name -> its latest report (`status.pods`: the table it serves, when, and its
        degradation level). Reports that do not parse are left out: such a pod counts as not
        reporting."""
        with _unavailable_as("read the pods' served tables"):
            reports = self._client.hgetall(f"{prefix}pods")
        parsed = {pod: parse_report(str(text)) for pod, text in reports.items()}
        return {pod: report for pod, report in parsed.items() if report is not None}

    def request_evaluation(self, prefix: str, request: Mapping[str, Any]) -> None:
        """Post an evaluation request (its `id` is the content hash) and wake the pods.

        SET NX keeps a request already posted as it is (same id, same content) rather than
        restarting its TTL on every pass; SADD to the pending set lets a pod that missed the
        PUBLISH find it; the set expires with the last request so it cannot grow forever."""
        evaluation_id = str(request["id"])
        with _unavailable_as("post the evaluation request"):
            pipe = self._client.pipeline(transaction=True)
            pipe.set(f"{prefix}eval:{evaluation_id}", json.dumps(request, separators=(",", ":")),
                     nx=True, ex=EVALUATION_TTL_SECONDS)
            pipe.sadd(f"{prefix}eval:pending", evaluation_id)
            pipe.expire(f"{prefix}eval:pending", EVALUATION_TTL_SECONDS)
            pipe.publish(f"{prefix}eval", evaluation_id)
            pipe.execute()

    def evaluation_result(self, prefix: str, evaluation_id: str) -> dict[str, Any] | None:
        """The result a pod wrote, or None while there is none.

        A result that is not a JSON object reads as a Failed result saying so: waiting for a
        readable one would hold the rollout until the gate's timeout for nothing."""
        with _unavailable_as("read the evaluation result"):
            text = self._client.get(f"{prefix}eval:{evaluation_id}:result")
        if text is None:
            return None
        try:
            result = json.loads(text)
        except ValueError:
            result = None
        if isinstance(result, dict):
            return result
        return {"id": evaluation_id, "state": "Failed", "message": "the runtime wrote an unreadable evaluation result"}

    def evaluation_runner(self, prefix: str, evaluation_id: str) -> str | None:
        """The pod that holds the evaluation's lock (it runs the examples); None when no pod took it."""
        with _unavailable_as("read the evaluation lock"):
            runner = self._client.get(f"{prefix}eval:{evaluation_id}:lock")
        return None if runner is None else str(runner)


class RuntimeBuses:
    """One `RuntimeBus` per Redis URL, shared by every resource that uses that Redis.

    Built at startup and kept in kopf's memo; the lock is there because handlers of different
    resources run in parallel threads and must not each open a pool for the same URL."""

    def __init__(self) -> None:
        self._buses: dict[str, RuntimeBus] = {}
        self._lock = threading.Lock()

    def for_url(self, url: str) -> RuntimeBus:
        with self._lock:
            bus = self._buses.get(url)
            if bus is None:
                bus = self._buses[url] = RuntimeBus.from_url(url)
            return bus

    def close(self) -> None:
        """Close every pool (operator shutdown)."""
        with self._lock:
            buses, self._buses = list(self._buses.values()), {}
        for bus in buses:
            bus.close()


@contextmanager
def _unavailable_as(action: str) -> Iterator[None]:
    try:
        yield
    except redis.RedisError as error:
        raise BusUnavailable(f"cannot {action}: {error}") from error


def _int_or_none(value: Any) -> int | None:
    try:
        return None if value is None else int(value)
    except ValueError:
        return None
