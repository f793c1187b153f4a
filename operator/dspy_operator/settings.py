"""Operator settings, read from the environment once at startup and kept in kopf's memo.

Built by `OperatorSettings.from_env()` in the startup handler and by `__main__` (which
needs the namespace scope before kopf starts); never a module-level instance.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from dspy_operator import api

# Images for resources that do not pin one (the CRD leaves both unset on purpose, so that
# upgrading the operator moves unpinned resources to the runtime released with it).
DEFAULT_RUNTIME_IMAGE = "ghcr.io/dspy-operator/runtime:0.1.0"
DEFAULT_REDIS_IMAGE = "redis:7.4-alpine"
DEFAULT_METRICS_PORT = 8081
"""The operator's own Prometheus metrics (`metrics.py`); kopf's liveness endpoint is another port."""


@dataclass(frozen=True, slots=True)
class OperatorSettings:
    """What an operator deployment may tune; everything else comes from the resource."""

    namespaces: tuple[str, ...] = ()
    """Namespaces to serve; empty means all namespaces (cluster-wide)."""
    runtime_image: str = DEFAULT_RUNTIME_IMAGE
    """Runtime image used when `spec.runtime.image` is not set."""
    redis_image: str = DEFAULT_REDIS_IMAGE
    field_manager: str = api.FIELD_MANAGER
    """Server-side-apply field manager: the name every child's owned fields are recorded under."""
    metrics_port: int = DEFAULT_METRICS_PORT
    """Port of `GET /metrics`; 0 turns the exporter off."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OperatorSettings:
        """Read `DSPY_OPERATOR_*` variables; unset or empty ones keep the defaults."""
        env = os.environ if environ is None else environ
        namespaces = tuple(
            part.strip() for part in env.get("DSPY_OPERATOR_NAMESPACES", "").split(",") if part.strip()
        )
        return cls(
            namespaces=namespaces,
            runtime_image=env.get("DSPY_OPERATOR_RUNTIME_IMAGE") or DEFAULT_RUNTIME_IMAGE,
            redis_image=env.get("DSPY_OPERATOR_REDIS_IMAGE") or DEFAULT_REDIS_IMAGE,
            field_manager=env.get("DSPY_OPERATOR_FIELD_MANAGER") or api.FIELD_MANAGER,
            metrics_port=_port(env.get("DSPY_OPERATOR_METRICS_PORT") or str(DEFAULT_METRICS_PORT)),
        )

    @property
    def clusterwide(self) -> bool:
        return not self.namespaces


def _port(text: str) -> int:
    """A TCP port number or 0; anything else stops the operator at startup with the fix."""
    try:
        port = int(text.strip())
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise ValueError(f"DSPY_OPERATOR_METRICS_PORT={text!r}: give a port number (1-65535), or 0 to turn "
                         "the metrics exporter off")
    return port
