"""Cache warm-up: a new pod, or a new revision, starts with its cache full.

At start, before ``/ready`` turns 200 (``Warmup.ready``), in this order:

1. L1 from L2's hottest: with Redis and ``MEMORY_CACHE_WARM_ENTRIES`` > 0, the most hit
   entries of the served variants (``cache/hot.py``) are copied into memory.
2. ``CACHE_WARMUP_PATH``: every line (one inputs object, like ``inputs`` of
   ``/v1/predict``) for every served variant whose signature it fits (shadow targets
   excepted: they answer sampled copies, not users). What Redis holds is copied into
   L1 in a few MGETs; the rest is computed through the normal path (``service.warm``:
   cache, breaker, daily budget, retries, accounting), ``CACHE_WARMUP_CONCURRENCY`` at a
   time.

Across replicas each entry is paid once: the replica that computes it holds the Redis
lock ``<base>cache-warmup:<key>`` (``SET NX`` with a TTL covering the LM call and its
retries, released when the answer is stored). A replica that finds an entry locked
leaves it for later and, once it has tried every other entry, polls Redis for the
answers until they appear or the lock goes (the holder failed or died: it then tries
itself). So two pods starting together split the work, and a pod starting later finds
everything in Redis and makes no LM call. Without Redis each pod computes for itself.

A bad line (not JSON, not an object, or fitting no served signature) is logged with its
number, skipped and counted; nothing in the file can stop the pod from starting. The whole
warm-up is bounded by ``CACHE_WARMUP_TIMEOUT_SECS``: then ``/ready`` turns 200 anyway and
``/health`` says ``incomplete`` with the counts.

Later, when the routing table brings variants not warmed yet (a canary's new revision), they
are warmed the same way in the background; the pod stays ready meanwhile. The router has no
subscription, so the table is looked at every ``FOLLOW_SECS``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson
from redis.asyncio.lock import Lock

from .cache import TieredCache, cache_key
from .cache.keys import CacheNames, variant_scope
from .cache.redis import REDIS_FAILURES
from .errors import InvalidInput, ServiceError
from .logs import request_id_var
from .metrics import Metrics
from .routing import Router, Variant
from .service import PredictionService
from .settings import RuntimeSettings

log = logging.getLogger(__name__)

State = Literal["disabled", "running", "complete", "incomplete"]
STATE_VALUES = {"disabled": 0, "complete": 0, "running": 1, "incomplete": 2}
"""Encoding of ``dspy_cache_warmup_state``."""
POLL_SECS = 0.1
"""How often a replica waiting for another's entries looks in Redis."""
FOLLOW_SECS = 1.0
LOCK_MARGIN_SECS = 5.0


@dataclass(frozen=True)
class Entry:
    """One (variant, inputs) to warm, from line ``line`` of the file."""

    line: int
    key: str
    variant: Variant
    inputs: dict[str, Any]


@dataclass
class Progress:
    """The current (or last) round, as ``/health`` shows it."""

    state: State = "running"
    lines: int = 0
    invalid: int = 0
    entries: int = 0
    redis: int = 0
    lm: int = 0
    failed: int = 0
    hot: int = 0
    seconds: float | None = None
    failures: Counter[str] = field(default_factory=Counter)
    """Failed entries by error type."""

    @property
    def pending(self) -> int:
        return self.entries - self.redis - self.lm - self.failed

    def public(self) -> dict[str, Any]:
        return {
            "state": self.state, "lines": self.lines, "invalid_lines": self.invalid, "entries": self.entries,
            "from_redis": self.redis, "from_lm": self.lm, "failed": self.failed, "pending": self.pending,
            "hot_loaded": self.hot, "seconds": self.seconds, "failures": dict(self.failures),
        }


def read_lines(path: Path) -> tuple[list[tuple[int, dict[str, Any]]], list[tuple[int, str]]]:
    """(line number, inputs object) for every usable line, and (line number, problem) for the
    others; blank lines are neither. Raises ``OSError`` when the file cannot be read."""
    objects: list[tuple[int, dict[str, Any]]] = []
    problems: list[tuple[int, str]] = []
    for number, line in enumerate(path.read_bytes().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            problems.append((number, f"not JSON ({exc})"))
            continue
        if not isinstance(value, dict) or not value:
            problems.append((number, "not a JSON object of input fields"))
            continue
        objects.append((number, value))
    return objects, problems


def entries_of(
    objects: Sequence[tuple[int, dict[str, Any]]], variants: Sequence[Variant]
) -> tuple[list[Entry], list[tuple[int, str]]]:
    """The distinct entries of ``objects`` for ``variants``, and the lines fitting none of them
    (with the first variant's reason). Duplicate inputs (after the key's normalization) are one entry."""
    entries: dict[str, Entry] = {}
    problems: list[tuple[int, str]] = []
    for number, inputs in objects:
        reason = None
        fits = False
        for variant in variants:
            try:
                kwargs = variant.program.validate_inputs(inputs)
                key = cache_key(variant.cache_version, variant.model, variant.name, kwargs)
            except (InvalidInput, TypeError) as exc:
                reason = reason or (exc.message if isinstance(exc, InvalidInput) else "inputs must be JSON values")
                continue
            fits = True
            entries.setdefault(key, Entry(number, key, variant, kwargs))
        if not fits and reason is not None:
            problems.append((number, reason))
    return list(entries.values()), problems


def lock_ttl_secs(settings: RuntimeSettings) -> float:
    """Longer than one warm-up LM call can take, retries included, so the lock outlives the work."""
    retries = settings.lm_max_retries
    return settings.lm_timeout_secs * (retries + 1) + settings.lm_retry_max_delay_secs * retries + LOCK_MARGIN_SECS


class Warmup:
    """Runs the warm-up rounds; ``ready`` gates ``/ready``; ``progress`` is what ``/health`` shows."""

    def __init__(
        self,
        settings: RuntimeSettings,
        service: PredictionService,
        router: Router,
        cache: TieredCache | None,
        names: CacheNames,
        metrics: Metrics,
        *,
        poll_secs: float = POLL_SECS,
        follow_secs: float = FOLLOW_SECS,
    ) -> None:
        self._path = settings.cache_warmup_path
        self._timeout = settings.cache_warmup_timeout_secs
        self._concurrency = settings.cache_warmup_concurrency
        self._lock_ttl = lock_ttl_secs(settings)
        self._service = service
        self._router = router
        self._cache = cache if cache is not None and (cache.memory is not None or cache.redis is not None) else None
        self._names = names
        self._metrics = metrics
        self._poll = poll_secs
        self._follow = follow_secs
        self._warmed: set[str] = set()
        """Cache scopes of the variants warmed (or being warmed): each is warmed once per pod."""
        self._ready = asyncio.Event()
        enabled = self._cache is not None and (self._path is not None or self._hot_enabled)
        self.progress = Progress(state="running" if enabled else "disabled")
        if not enabled:
            self._ready.set()
        metrics.cache_warmup_state.set(STATE_VALUES[self.progress.state])

    @property
    def _hot_enabled(self) -> bool:
        cache = self._cache
        return cache is not None and cache.hot is not None and cache.memory is not None

    @property
    def ready(self) -> bool:
        """The first round is over (done, timed out, or there was nothing to warm)."""
        return self._ready.is_set()

    async def run(self) -> None:
        """The first round, then the rounds of new variants until cancelled."""
        if self.progress.state == "disabled":
            return
        try:
            await self._round(self._targets(), hot=True)
        finally:
            self._ready.set()
        if self._path is None:
            return
        state = self._router.state
        while True:
            await asyncio.sleep(self._follow)
            if self._router.state is state:
                continue
            state = self._router.state
            targets = self._targets()
            if targets:
                await self._round(targets, hot=False)

    def _targets(self) -> list[Variant]:
        """Served variants not warmed yet (shadow targets excepted), marked as warmed."""
        state = self._router.state
        shadow_revisions = {r.name for r in state.revisions if r.shadow}
        targets = [v for v in state.variants if not v.shadow and v.revision not in shadow_revisions
                   and variant_scope(v) not in self._warmed]
        self._warmed.update(variant_scope(v) for v in targets)
        return targets

    async def _round(self, variants: list[Variant], *, hot: bool) -> None:
        progress = self.progress = Progress()
        self._metrics.cache_warmup_state.set(STATE_VALUES["running"])
        started = time.monotonic()
        log.info("cache warm-up started", extra={"fields": {"variants": [f"{v.revision}/{v.name}" for v in variants]}})
        try:
            async with asyncio.timeout(self._timeout):
                if hot and self._hot_enabled:
                    await self._load_hottest(variants)
                if self._path is not None:
                    await self._warm_file(self._path, variants)
        except TimeoutError:
            progress.state = "incomplete"
        else:
            progress.state = "incomplete" if progress.failed else "complete"
        progress.seconds = round(time.monotonic() - started, 3)
        self._metrics.cache_warmup_state.set(STATE_VALUES[progress.state])
        level = logging.INFO if progress.state == "complete" else logging.WARNING
        log.log(level, f"cache warm-up {progress.state}", extra={"fields": progress.public()})

    async def _load_hottest(self, variants: list[Variant]) -> None:
        cache = self._cache
        assert cache is not None and cache.hot is not None
        try:
            keys = await cache.hot.hottest({variant_scope(v) for v in variants})
        except REDIS_FAILURES as exc:
            log.warning(f"cache warm-up: cannot read the hit counts from Redis ({type(exc).__name__}: {exc})")
            return
        loaded = len(await cache.preload(keys))
        self.progress.hot = loaded
        self._metrics.bound(self._metrics.cache_warmup_entries_total, "hot").inc(loaded)

    async def _warm_file(self, path: Path, variants: list[Variant]) -> None:
        progress = self.progress
        try:
            objects, problems = read_lines(path)
        except OSError as exc:
            log.error(f"cache warm-up: cannot read CACHE_WARMUP_PATH {path}: {exc.strerror}")
            progress.failures["unreadable_file"] += 1
            progress.failed += 1
            return
        entries, unfit = entries_of(objects, variants)
        bad = sorted(problems + unfit)
        for number, problem in bad:
            log.warning(f"cache warm-up: line {number} of {path} skipped: {problem}")
        progress.lines = len(objects) + len(problems)
        progress.invalid = len(bad)
        progress.entries = len(entries)
        self._metrics.bound(self._metrics.cache_warmup_entries_total, "invalid").inc(len(bad))
        pending = await self._found_in_redis(entries)
        while pending:
            gate = asyncio.Semaphore(self._concurrency)

            async def answer(entry: Entry) -> bool:
                async with gate:
                    return await self._answer(entry)

            done = await asyncio.gather(*(answer(entry) for entry in pending))
            waiting = [entry for entry, finished in zip(pending, done, strict=True) if not finished]
            if waiting:
                await asyncio.sleep(self._poll)  # another replica computes these: look again soon
            pending = await self._found_in_redis(waiting)

    async def _found_in_redis(self, entries: list[Entry]) -> list[Entry]:
        """Copy what Redis holds of ``entries`` into L1; the entries still missing."""
        assert self._cache is not None
        found = await self._cache.preload([entry.key for entry in entries])
        self.progress.redis += len(found)
        self._metrics.bound(self._metrics.cache_warmup_entries_total, "redis").inc(len(found))
        return [entry for entry in entries if entry.key not in found]

    async def _answer(self, entry: Entry) -> bool:
        """Compute one entry under its lock; False when another replica holds the lock."""
        assert self._cache is not None
        redis = self._cache.redis
        lock = None
        if redis is not None:
            lock = Lock(redis.client, self._names.warmup_lock(entry.key), timeout=self._lock_ttl,
                        blocking=False, raise_on_release_error=False)
            try:
                if not await lock.acquire():
                    return False
            except REDIS_FAILURES:
                lock = None  # Redis is down: nobody can coordinate, so this pod computes for itself
        token = request_id_var.set(f"warmup-{entry.line}")
        try:
            result = await self._service.warm(f"warmup-{entry.line}", entry.variant, entry.inputs)
        except ServiceError as exc:
            self._failed(entry, exc.error_type)
            return True
        except Exception:  # a bug must not stop the warm-up of the other entries
            log.exception("cache warm-up: unexpected error", extra={"fields": {"line": entry.line}})
            self._failed(entry, "internal_error")
            return True
        finally:
            request_id_var.reset(token)
            if lock is not None:
                with contextlib.suppress(*REDIS_FAILURES):
                    await lock.release()
        outcome = "redis" if result.cached else "lm"
        if result.cached:
            self.progress.redis += 1
        else:
            self.progress.lm += 1
        self._metrics.bound(self._metrics.cache_warmup_entries_total, outcome).inc()
        return True

    def _failed(self, entry: Entry, error_type: str) -> None:
        progress = self.progress
        progress.failed += 1
        progress.failures[error_type] += 1
        self._metrics.bound(self._metrics.cache_warmup_entries_total, "failed").inc()
        if progress.failures[error_type] == 1:  # the first of each kind; the summary counts the rest
            log.warning(
                f"cache warm-up: line {entry.line} failed ({error_type}); later failures of this kind are only counted",
                extra={"fields": {"line": entry.line, "variant": entry.variant.name, "error_type": error_type}},
            )
