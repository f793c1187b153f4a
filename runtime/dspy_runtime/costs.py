"""What predictions cost: token usage times per-model prices, totals for ``GET /costs``.

Prices come from litellm's bundled price map (``litellm.model_cost``, the table
DSPy's LM layer already uses), overridden by ``LM_PRICING`` and, for one variant,
by its ``lm.pricing`` in the routing table. A model with no known price costs 0
and is listed as unpriced, so a missing price shows up in ``/costs`` instead of
silently passing as free.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

TOKENS_PER_MILLION = 1_000_000


@dataclass(frozen=True, slots=True)
class Pricing:
    """US dollars per million tokens, the unit provider price pages use."""

    prompt_per_million: float
    completion_per_million: float


def default_pricing(model: str) -> Pricing | None:
    """litellm's price for ``model`` (``provider/name`` or bare name), or None if unknown.

    litellm is imported here, not at module level: the operator-side tests and
    tools import this package without it, and its import takes seconds. (In a pod
    DSPy has imported it already.) The environment variable keeps litellm on its
    bundled price map instead of downloading one at import time.
    """
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "true")
    import litellm

    table: Mapping[str, Mapping[str, Any]] = litellm.model_cost
    # litellm keys most OpenAI/Anthropic models without the provider prefix that
    # DSPy model names carry ("openai/gpt-4o-mini" -> "gpt-4o-mini").
    for name in (model, model.partition("/")[2]):
        entry = table.get(name) if name else None
        if entry is None:
            continue
        prompt, completion = entry.get("input_cost_per_token"), entry.get("output_cost_per_token")
        if prompt is None and completion is None:
            continue
        return Pricing(
            round(float(prompt or 0.0) * TOKENS_PER_MILLION, 9),
            round(float(completion or 0.0) * TOKENS_PER_MILLION, 9),
        )
    return None


@dataclass(slots=True)
class _Usage:
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0

    def add(self, input_tokens: int, output_tokens: int, cost_usd: float) -> None:
        self.requests += 1
        self.input_tokens += input_tokens
        self.output_tokens += output_tokens
        self.cost_usd += cost_usd

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": round(self.cost_usd, 9),
        }


class CostTracker:
    """Running totals since process start, in total, per model and per variant.

    ``overrides`` win over litellm's prices. Each model's price is resolved once and
    remembered. The lock makes ``record`` safe from DSPy worker threads too; it is
    uncontended on the event loop and costs well under a microsecond.
    """

    def __init__(self, overrides: Mapping[str, Pricing] | None = None) -> None:
        self._overrides = dict(overrides or {})
        self._prices: dict[str, Pricing | None] = {}
        self._total = _Usage()
        self._models: dict[str, _Usage] = {}
        self._variants: dict[str, _Usage] = {}
        self._priced_by_variant: set[str] = set()
        self._lock = threading.Lock()

    def pricing(self, model: str) -> Pricing | None:
        """The price used for ``model``; call it at startup to resolve prices off the request path."""
        if model not in self._prices:
            self._prices[model] = self._overrides.get(model) or default_pricing(model)
        return self._prices[model]

    def cost(self, model: str, input_tokens: int, output_tokens: int, pricing: Pricing | None = None) -> float:
        """USD for the tokens, at ``pricing`` when given, else at the model's price."""
        price = pricing or self.pricing(model)
        if price is None:
            return 0.0
        return (
            input_tokens * price.prompt_per_million + output_tokens * price.completion_per_million
        ) / TOKENS_PER_MILLION

    def record(
        self, model: str, variant: str, input_tokens: int, output_tokens: int, pricing: Pricing | None = None
    ) -> float:
        """Count one computed prediction; returns its cost in USD.

        ``pricing`` is the variant's own price for ``model`` (a routing table's ``lm.pricing``),
        which wins over the model's; a model priced that way is not listed as unpriced.
        """
        usd = self.cost(model, input_tokens, output_tokens, pricing)
        with self._lock:
            if pricing is not None:
                self._priced_by_variant.add(model)
            self._total.add(input_tokens, output_tokens, usd)
            self._models.setdefault(model, _Usage()).add(input_tokens, output_tokens, usd)
            self._variants.setdefault(variant, _Usage()).add(input_tokens, output_tokens, usd)
        return usd

    def snapshot(self) -> dict[str, Any]:
        """The body of ``GET /costs``: ``total``, ``models`` (with their price), ``variants``, ``unpriced_models``."""
        with self._lock:
            models = {}
            for model, usage in self._models.items():
                price = self._prices.get(model)
                models[model] = {
                    **usage.as_dict(),
                    "priced": price is not None or model in self._priced_by_variant,
                    "pricing": None
                    if price is None
                    else {
                        "prompt_per_million": price.prompt_per_million,
                        "completion_per_million": price.completion_per_million,
                    },
                }
            return {
                "currency": "USD",
                "total": self._total.as_dict(),
                "models": models,
                "variants": {variant: usage.as_dict() for variant, usage in self._variants.items()},
                "unpriced_models": sorted(m for m, info in models.items() if not info["priced"]),
            }
