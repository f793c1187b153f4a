"""The components one app runs with, built by the app's lifespan and read by the routes."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from .cache import RedisCache, TieredCache
from .cache.hot import HotKeys
from .cache.invalidation import Invalidator
from .costs import CostTracker
from .metrics import Metrics
from .resilience import BreakerRegistry, Budget, Limiter
from .routing import Router
from .routing_wire import RoutingWire, ServedTableReport
from .service import PredictionService
from .settings import RuntimeSettings
from .warmup import Warmup
from .windows import WindowFlusher

BackgroundJob = RoutingWire | ServedTableReport | WindowFlusher | Warmup | Invalidator | HotKeys


@dataclass
class Runtime:
    settings: RuntimeSettings
    metrics: Metrics
    router: Router
    cache: TieredCache | None
    redis: RedisCache | None
    breakers: BreakerRegistry
    budget: Budget
    limiter: Limiter
    costs: CostTracker
    service: PredictionService
    fleet_redis: Redis | None = None
    """The resource's Redis for what pods and operator exchange (not the cache's client)."""
    routing_wire: RoutingWire | None = None
    pods_report: ServedTableReport | None = None
    window_flusher: WindowFlusher | None = None
    warmup: Warmup | None = None
    """Gates ``/ready`` until the cache is warm (or the warm-up timed out)."""
    invalidator: Invalidator | None = None
    """``DELETE /v1/cache``, and this pod's L1 following every pod's invalidations."""
    ready: bool = False

    def background_jobs(self) -> list[tuple[str, BackgroundJob]]:
        """The configured loops that run beside serving, by task name."""
        jobs = (
            ("routing-wire", self.routing_wire),
            ("served-table-report", self.pods_report),
            ("window-flusher", self.window_flusher),
            ("cache-warmup", self.warmup),
            ("cache-invalidation", self.invalidator),
            ("cache-hit-counts", self.cache.hot if self.cache is not None else None),
        )
        return [(name, job) for name, job in jobs if job is not None]
