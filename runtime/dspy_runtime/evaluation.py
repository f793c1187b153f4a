"""The runtime side of the evaluation gate: score revisions on the operator's examples.

The operator writes a request ``P eval:<id>`` (JSON), SADDs ``<id>`` to
``P eval:pending`` and PUBLISHes it on channel ``P eval`` (``P`` is the resource's
key prefix ``dspy:{<namespace>/<name>}:``). Exactly one pod of the fleet runs it:

1. every pod hears the id on the channel, and every ``scan_interval`` (5 s) also
   reads the pending set, which catches what pub/sub lost (a reconnect, a pod that
   started late): pub/sub is the fast path, the set the level-based truth;
2. a pod that is idle, sees neither a result nor a lock, and serves every
   revision of the request takes ``SET P eval:<id>:lock <pod> NX EX 600``;
3. the winner runs every example through each revision (``Predict``, the normal
   prediction path with the revision pinned), ``EVAL_CONCURRENCY`` predictions at
   a time, scores them with the metric, and writes ``P eval:<id>:result`` and the
   SREM from the pending set in one transaction, then releases the lock.

The lock's value is the pod name, so the operator can show who runs it. While a
run lasts, the pod extends its lock every third of the TTL (a long run on a slow
LM would otherwise outlive it and a second pod would start a duplicate); a pod that
dies stops extending, the lock expires, and another pod retries the request. A
pod runs one evaluation at a time, so a burst of requests spreads over the fleet.

Redis being down never breaks serving: the loop logs once per distinct problem,
backs off and reconnects; a finished run keeps retrying its result write.

Pure parts (tested without Redis): the metrics (``scoring.py``), request
parsing (``parse_request``), the result documents (``result_document``,
``failed_document``) and ``score_request``, which takes the prediction path as a
``Predict`` callable; ``make_predict`` adapts ``PredictionService`` to it, and
``build_evaluator`` wires this pod's evaluator from its settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from redis.asyncio import Redis

from .cache.redis import REDIS_FAILURES
from .errors import RateLimited, ServiceError, validation_problems
from .logs import ProblemLog, request_id_var
from .scoring import METRICS, MetricName, score_example
from .service import PredictCall, PredictionService
from .state import Runtime

log = logging.getLogger(__name__)

EVAL_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
"""The operator's ids are 16 hex; anything with ``:`` could name another request's lock or result key."""

# ---- the request and the result document (pure) ------------------------------------------------


class EvaluationRequestError(ValueError):
    """A request that cannot be run; the message says why and becomes the ``Failed`` result's message."""


class Example(BaseModel):
    # Unknown keys are ignored: an operator newer than this runtime may add fields.
    model_config = ConfigDict(extra="ignore", frozen=True)

    inputs: dict[str, Any]
    expected: dict[str, Any] = Field(min_length=1)


class EvaluationRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str = Field(pattern=EVAL_ID_PATTERN)
    revisions: list[str] = Field(min_length=1)
    metric: MetricName
    examples: list[Example] = Field(min_length=1)

    @field_validator("revisions")
    @classmethod
    def _named_and_unique(cls, revisions: list[str]) -> list[str]:
        if any(not name.strip() for name in revisions):
            raise ValueError("revision names must not be empty")
        duplicates = sorted({name for name in revisions if revisions.count(name) > 1})
        if duplicates:
            raise ValueError(f"duplicate revisions: {', '.join(duplicates)}")
        return revisions


def parse_request(raw: bytes | str, eval_id: str) -> EvaluationRequest:
    """The request stored under ``P eval:<eval_id>``, or ``EvaluationRequestError`` saying what is wrong."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise EvaluationRequestError(f"invalid evaluation request: not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise EvaluationRequestError("invalid evaluation request: must be a JSON object")
    try:
        request = EvaluationRequest.model_validate(data)
    except ValidationError as exc:
        raise EvaluationRequestError(f"invalid evaluation request: {'; '.join(validation_problems(exc))}") from None
    if request.id != eval_id:
        raise EvaluationRequestError(f"invalid evaluation request: its id {request.id!r} is not the id of its key")
    return request


@dataclass
class RevisionTally:
    """One revision's running totals while a request runs."""

    examples: int = 0
    errors: int = 0
    score_sum: float = 0.0
    cost_usd: float = 0.0
    first_error: str | None = None

    def scored(self, score: float, cost_usd: float) -> None:
        self.examples += 1
        self.score_sum += score
        self.cost_usd += cost_usd

    def failed(self, description: str) -> None:
        self.examples += 1
        self.errors += 1
        if self.first_error is None:
            self.first_error = description

    def public(self) -> dict[str, Any]:
        return {
            "score": self.score_sum / self.examples if self.examples else 0.0,
            "examples": self.examples,
            "errors": self.errors,
            "costUsd": round(self.cost_usd, 10),
        }


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def result_document(
    request: EvaluationRequest, tallies: Mapping[str, RevisionTally], finished: datetime
) -> dict[str, Any]:
    """The ``Succeeded`` result (the contract's shape). Failed predictions are scored, not fatal:
    the message names how many failed and the first reason, for the operator to show."""
    message = f"{len(request.examples)} example(s) x {len(request.revisions)} revision(s) scored by {request.metric}"
    failures = [
        f"{name}: {t.errors} of {t.examples} predictions failed (first: {t.first_error})"
        for name, t in tallies.items()
        if t.errors
    ]
    if failures:
        message += "; " + "; ".join(failures)
    return {
        "id": request.id,
        "state": "Succeeded",
        "message": message,
        "scores": {name: tally.public() for name, tally in tallies.items()},
        "finishedAt": rfc3339(finished),
    }


def failed_document(eval_id: str, message: str, finished: datetime) -> dict[str, Any]:
    return {"id": eval_id, "state": "Failed", "message": message, "scores": {}, "finishedAt": rfc3339(finished)}


# ---- running one request ---------------------------------------------------------------------------


@dataclass(frozen=True)
class EvalPrediction:
    """What the evaluator needs of one prediction: its output fields and what it cost (0 when cached)."""

    outputs: Mapping[str, Any]
    cost_usd: float = 0.0


class Predict(Protocol):
    """One prediction of example ``index`` with ``revision`` pinned; raises when the prediction fails."""

    async def __call__(self, eval_id: str, revision: str, inputs: dict[str, Any], index: int) -> EvalPrediction: ...


def describe_failure(exc: Exception) -> str:
    """Caller-safe: a service error's type and message (written for callers), else only the class name."""
    if isinstance(exc, ServiceError):
        return f"{exc.error_type}: {exc.message}"
    return type(exc).__name__


async def score_request(request: EvaluationRequest, predict: Predict, *, concurrency: int) -> dict[str, RevisionTally]:
    """Run and score every (example, revision) pair, at most ``concurrency`` predictions at a time.

    Pairs go out example by example, each example through every revision in turn, so
    anything that changes during the run (a budget running out, a breaker opening)
    hits the revisions alike rather than the last one alone.
    """
    metric = METRICS[request.metric]
    tallies = {name: RevisionTally() for name in request.revisions}
    pairs = iter([(i, example, name) for i, example in enumerate(request.examples) for name in request.revisions])

    async def worker() -> None:
        for index, example, name in pairs:  # one shared iterator: each pair is taken once
            try:
                prediction = await predict(request.id, name, dict(example.inputs), index)
            except Exception as exc:  # any failure scores 0 and counts as an error
                tallies[name].failed(describe_failure(exc))
            else:
                tallies[name].scored(score_example(prediction.outputs, example.expected, metric), prediction.cost_usd)

    async with asyncio.TaskGroup() as group:
        for _ in range(min(concurrency, len(request.examples) * len(request.revisions))):
            group.create_task(worker())
    return tallies


RATE_LIMIT_WAITS = 20
"""How often one evaluation prediction waits out a 429 rate_limited before it counts as failed."""


def make_predict(service: PredictionService) -> Predict:
    """``Predict`` on the normal prediction path: the revision pinned, the variant a sticky choice
    keyed by the example's index (the same variant for that example on every pod and every run).

    A rate-limited prediction waits its Retry-After and tries again: the pod's rate limit
    applies to evaluation traffic too, but refusing it says nothing about the revision, so
    scoring it as an error would fail a good canary.
    """

    async def predict(eval_id: str, revision: str, inputs: dict[str, Any], index: int) -> EvalPrediction:
        request_id = f"eval-{eval_id}-{index}"
        token = request_id_var.set(request_id)  # the service's log lines name the prediction
        waits = 0
        try:
            while True:
                call = PredictCall(
                    request_id=request_id, inputs=inputs, revision=revision, sticky_value=f"eval-{index}",
                    analyzed=False,
                )
                try:
                    result = await service.predict(call)
                except RateLimited as exc:
                    waits += 1
                    if waits > RATE_LIMIT_WAITS:
                        raise
                    await asyncio.sleep(exc.retry_after or 1.0)
                else:
                    return EvalPrediction(result.outputs, result.cost_usd)
        finally:
            request_id_var.reset(token)

    return predict


# ---- the Redis side -------------------------------------------------------------------------------

# Extend the lock while it is ours; take it again if it expired meanwhile (a Redis
# outage longer than the TTL); 0 when another pod holds it now.
_KEEP_LOCK = """
local owner = redis.call('GET', KEYS[1])
if owner == ARGV[1] then return redis.call('EXPIRE', KEYS[1], ARGV[2]) end
if owner then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""
# Delete the lock only while it is ours (never another pod's that took over).
_RELEASE_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class EvalKeys:
    """The Redis names of the gate under one resource's prefix ``dspy:{<ns>/<name>}:``."""

    prefix: str

    @property
    def channel(self) -> str:
        return f"{self.prefix}eval"

    @property
    def pending(self) -> str:
        return f"{self.prefix}eval:pending"

    def request(self, eval_id: str) -> str:
        return f"{self.prefix}eval:{eval_id}"

    def lock(self, eval_id: str) -> str:
        return f"{self.prefix}eval:{eval_id}:lock"

    def result(self, eval_id: str) -> str:
        return f"{self.prefix}eval:{eval_id}:result"


def _decoded(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Evaluator:
    """Takes evaluation requests from Redis and runs them; see the module docstring.

    ``serves(revision)`` says whether this pod can serve a revision now: a pod that
    has not yet adopted the routing table naming a new revision leaves the request
    to a pod that has (or to itself, on a later scan), rather than scoring a
    revision it cannot run as all errors.
    """

    def __init__(
        self,
        redis: Redis,
        key_prefix: str,
        pod: str,
        predict: Predict,
        *,
        concurrency: int = 4,
        serves: Callable[[str], bool] = lambda revision: True,
        scan_interval: float = 5.0,
        lock_ttl: int = 600,
        result_ttl: int = 86400,
        backoff: tuple[float, float] = (1.0, 30.0),
        now: Callable[[], datetime] = _utc_now,
    ) -> None:
        if concurrency < 1 or lock_ttl < 1 or result_ttl < 1:
            raise ValueError("concurrency, lock_ttl and result_ttl must be >= 1")
        self._redis = redis
        self.keys = EvalKeys(key_prefix)
        self.pod = pod
        self._predict = predict
        self._concurrency = concurrency
        self._serves = serves
        self._scan_interval = scan_interval
        self._lock_ttl = lock_ttl
        self._result_ttl = result_ttl
        self._backoff = backoff
        self._now = now
        self._keep_lock = redis.register_script(_KEEP_LOCK)
        self._release_lock = redis.register_script(_RELEASE_LOCK)
        self._problems = ProblemLog(log)
        self._waiting: dict[str, tuple[str, ...]] = {}  # id -> revisions not served here (logged once)
        self._current: asyncio.Task[None] | None = None
        self._delay = backoff[0]

    async def run(self) -> None:
        """Listen and scan until cancelled; never raises, so serving never depends on it."""
        try:
            while True:
                try:
                    await self._listen()
                except REDIS_FAILURES as exc:
                    self._problems.report(f"evaluations: Redis is unavailable ({type(exc).__name__}: {exc}); retrying")
                except Exception:  # a bug must not end the loop for good
                    log.exception("evaluations: unexpected error; retrying")
                await asyncio.sleep(self._delay)
                self._delay = min(self._delay * 2, self._backoff[1])
        finally:
            await self._stop_current()

    async def _listen(self) -> None:
        loop = asyncio.get_running_loop()
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(self.keys.channel)
            while True:
                await self._scan()
                deadline = loop.time() + self._scan_interval
                while (left := deadline - loop.time()) > 0:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=left)
                    if message is not None and message.get("type") == "message":
                        await self._consider(_decoded(message["data"]).strip())
        finally:
            with contextlib.suppress(*REDIS_FAILURES):
                await pubsub.aclose()

    async def _scan(self) -> None:
        """Every pending id, in order; a full scan is also what proves Redis is back."""
        ids = await self._redis.smembers(self.keys.pending)
        self._problems.clear("evaluations: Redis is reachable again")
        self._delay = self._backoff[0]
        for raw in sorted(ids):
            await self._consider(_decoded(raw))

    async def _consider(self, eval_id: str) -> None:
        """Take and start request ``eval_id`` when this pod should run it; otherwise do nothing."""
        if not re.fullmatch(EVAL_ID_PATTERN, eval_id):
            log.debug("evaluations: ignoring malformed id", extra={"fields": {"eval_id": eval_id[:80]}})
            return
        if self._current is not None and not self._current.done():
            return  # one run at a time per pod; another pod or a later scan takes it
        keys = self.keys
        if await self._redis.exists(keys.result(eval_id), keys.lock(eval_id)):
            return  # finished, or another pod runs it (checked before reading a large request)
        raw = await self._redis.get(keys.request(eval_id))
        if raw is None:
            return  # expired, or not written yet; the pending scan comes back to it
        try:
            request: EvaluationRequest | str = parse_request(raw, eval_id)
        except EvaluationRequestError as exc:
            request = str(exc)  # still taken, so one pod answers it with a Failed result
        else:
            if not self._serves_all(request):
                return
        if not await self._redis.set(keys.lock(eval_id), self.pod, nx=True, ex=self._lock_ttl):
            return
        if await self._redis.exists(keys.result(eval_id)):
            # Another pod finished and released between our first check and the lock.
            await self._release_lock(keys=[keys.lock(eval_id)], args=[self.pod])
            return
        self._current = asyncio.create_task(self._run(eval_id, request), name=f"evaluation-{eval_id}")

    def _serves_all(self, request: EvaluationRequest) -> bool:
        missing = tuple(name for name in request.revisions if not self._serves(name))
        if not missing:
            self._waiting.pop(request.id, None)
            return True
        if self._waiting.get(request.id) != missing:
            self._waiting[request.id] = missing
            log.info(
                "evaluation waits: this pod does not serve revision(s) %s yet",
                ", ".join(missing),
                extra={"fields": {"eval_id": request.id}},
            )
        return False

    async def _run(self, eval_id: str, request: EvaluationRequest | str) -> None:
        """Score (or fail) the request, store the result, release the lock; raises only CancelledError."""
        fields = {"eval_id": eval_id, "pod": self.pod}
        try:
            try:
                if isinstance(request, str):
                    document = failed_document(eval_id, request, self._now())
                else:
                    log.info("evaluation started", extra={"fields": {**fields, "revisions": request.revisions}})
                    tallies = await self._score_holding_lock(eval_id, request)
                    if tallies is None:
                        return
                    document = result_document(request, tallies, self._now())
            except Exception as exc:  # a bug: answer the request rather than leave it to be retried forever
                log.exception("evaluation failed unexpectedly", extra={"fields": fields})
                message = f"internal error while evaluating ({type(exc).__name__})"
                document = failed_document(eval_id, message, self._now())
            await self._store(eval_id, document)
            log.info(
                "evaluation finished",
                extra={"fields": {**fields, "state": document["state"], "scores": document["scores"]}},
            )
        finally:
            # Also on shutdown mid-run: another pod may start at once instead of after the TTL.
            with contextlib.suppress(*REDIS_FAILURES):
                await self._release_lock(keys=[self.keys.lock(eval_id)], args=[self.pod])

    async def _score_holding_lock(self, eval_id: str, request: EvaluationRequest) -> dict[str, RevisionTally] | None:
        """The tallies, extending the lock every third of its TTL meanwhile; None when another pod took it over."""
        scoring = asyncio.create_task(score_request(request, self._predict, concurrency=self._concurrency))
        try:
            while True:
                await asyncio.wait({scoring}, timeout=self._lock_ttl / 3)
                if scoring.done():
                    return scoring.result()
                if not await self._extend_lock(eval_id):
                    fields = {"eval_id": eval_id}
                    log.warning("evaluation taken over by another pod; stopping here", extra={"fields": fields})
                    return None
        finally:
            if not scoring.done():
                scoring.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await scoring

    async def _extend_lock(self, eval_id: str) -> bool:
        """False only when another pod holds the lock; a Redis failure keeps the run going."""
        try:
            return bool(await self._keep_lock(keys=[self.keys.lock(eval_id)], args=[self.pod, self._lock_ttl]))
        except REDIS_FAILURES as exc:
            self._problems.report(f"evaluations: cannot extend the lock ({type(exc).__name__}: {exc})")
            return True

    async def _store(self, eval_id: str, document: dict[str, Any]) -> None:
        """Write the result and drop the id from the pending set together, retrying until Redis takes it."""
        payload = orjson.dumps(document)
        delay = self._backoff[0]
        while True:
            try:
                async with self._redis.pipeline(transaction=True) as pipe:
                    pipe.set(self.keys.result(eval_id), payload, ex=self._result_ttl)
                    pipe.srem(self.keys.pending, eval_id)
                    await pipe.execute()
                return
            except REDIS_FAILURES as exc:
                self._problems.report(f"evaluations: cannot store a result yet ({type(exc).__name__}: {exc}); retrying")
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._backoff[1])

    async def _stop_current(self) -> None:
        """On shutdown: cancel the run in progress (which releases its lock)."""
        task, self._current = self._current, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def build_evaluator(runtime: Runtime) -> Evaluator | None:
    """This pod's evaluator, on the resource's Redis (the client pods and operator talk through);
    None unless REDIS_URL and the resource (DSPY_RESOURCE, or ROUTING_REDIS_KEY) are set."""
    settings = runtime.settings
    prefix = settings.key_prefix
    if runtime.fleet_redis is None or prefix is None:
        return None
    router = runtime.router
    return Evaluator(
        runtime.fleet_redis,
        prefix,
        settings.effective_pod_name,
        make_predict(runtime.service),
        concurrency=settings.eval_concurrency,
        serves=lambda revision: revision in router.state.by_name,
    )
