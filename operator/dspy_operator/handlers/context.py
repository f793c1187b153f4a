"""What handlers share through kopf's memo: settings, the API client, remembered reads of
referenced objects, the runtime pods' Redis connections, the per-resource serializer and the
operator's metrics, built at startup."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dspy_operator.handlers.serialize import Serializer
from dspy_operator.kube import KubeClient
from dspy_operator.metrics import OperatorMetrics
from dspy_operator.observe import RedisAddresses, Throttle
from dspy_operator.reconcile.inputs import RecentReads
from dspy_operator.runtimebus import RuntimeBuses
from dspy_operator.settings import OperatorSettings


@dataclass(frozen=True, slots=True)
class Context:
    settings: OperatorSettings
    kube: KubeClient
    references: RecentReads
    redis: RedisAddresses
    buses: RuntimeBuses
    serializer: Serializer
    experiments: Throttle
    """When each resource's A/B statistics were last computed."""
    shadows: Throttle
    """When each resource's shadow figures were last computed."""
    metrics: OperatorMetrics = field(default_factory=OperatorMetrics)
    """The operator's own Prometheus metrics (the API client counts its requests into the same)."""


def from_memo(memo: Any) -> Context:
    """The context the startup handler stored; kopf copies the memo into every object's memo."""
    context: Context = memo.context
    return context
