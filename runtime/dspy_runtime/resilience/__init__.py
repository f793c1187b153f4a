"""Guards around the LM call: circuit breaker, retries, rate limits and the daily budget."""

from .breaker import BreakerRegistry, BreakerState, CircuitBreaker
from .budget import Budget, Hold
from .global_ratelimit import GlobalRateLimiter
from .ratelimit import Limiter, RateLimiter
from .retry import call_with_retries

__all__ = [
    "BreakerRegistry", "BreakerState", "Budget", "CircuitBreaker", "GlobalRateLimiter", "Hold", "Limiter",
    "RateLimiter", "call_with_retries",
]
