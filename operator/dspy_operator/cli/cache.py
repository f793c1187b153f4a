"""`kubectl dspy cache clear NAME [--variant V] [--revision R]`: invalidate cached answers.

The plugin runs outside the cluster, where neither the runtime Service nor the resource's Redis
is reachable, so it goes through the API server like kubectl does: it reads the token from the
Secret `spec.cache.adminTokenSecretRef` names, and sends `DELETE /v1/cache` to the runtime
Service through the API server's service proxy (`.../services/<name>:http/proxy/v1/cache`).
The pod that answers clears Redis and tells every other pod by pub/sub (the runtime's
`cache/invalidation.py`). The user needs `get` on that Secret and `delete` on `services/proxy`.

Unlike the rollout verbs, this acts on the pods, not through an annotation: an invalidation
changes no state the operator keeps, and the caller wants the count it removed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dspy_operator import api
from dspy_operator.cli.client import CliError, DSPyApi

SERVICE_PORT_NAME = "http"


def clear(dspy: DSPyApi, namespace: str, name: str, *, variant: str | None, revision: str | None) -> str:
    """Clear the cache of `name` (narrowed to a variant and/or revision); the line to print."""
    body = dspy.get(namespace, name)
    spec = body.get("spec") or {}
    cache = spec.get("cache") or {}
    ref = cache.get("adminTokenSecretRef")
    if not ref:
        raise CliError(f"{name} has no spec.cache.adminTokenSecretRef: cache invalidation is off "
                       "(point it at a Secret key holding a token of at least 16 characters)")
    if cache.get("enabled") is False:
        raise CliError(f"{name} has spec.cache.enabled false: there is no cache to clear")
    token = dspy.secret_value(namespace, ref["name"], ref.get("key") or api.DEFAULT_ADMIN_TOKEN_KEY)
    query = {key: value for key, value in (("variant", variant), ("revision", revision)) if value}
    status, answer = dspy.delete_through_service(namespace, api.runtime_name(name), SERVICE_PORT_NAME, "/v1/cache",
                                                 query, {api.CACHE_ADMIN_TOKEN_HEADER: token})
    if status != 200:
        raise CliError(_refusal(status, answer))
    redis_mode = (spec.get("redis") or {}).get("mode") or "Disabled"
    return cleared_text(name, answer, variant=variant, revision=revision, redis_mode=redis_mode)


def _refusal(status: int, answer: Mapping[str, Any]) -> str:
    """The runtime's error (`{error: {type, message}}`), else the API server's Status message."""
    error = answer.get("error")
    if isinstance(error, Mapping):
        return f"the runtime refused: {error.get('message', '')} (HTTP {status}, {error.get('type', '')})"
    message = answer.get("message") or "no message"
    hint = " (are the runtime pods ready?)" if status == 503 else ""
    return f"the API server refused: {message} (HTTP {status}){hint}"


def cleared_text(name: str, answer: Mapping[str, Any], *, variant: str | None, revision: str | None,
                 redis_mode: str) -> str:
    removed = answer.get("removed") or {}
    scope = " ".join(part for part in (f"variant {variant}" if variant else "",
                                       f"revision {revision}" if revision else "") if part) or "all entries"
    text = (f"{name}: cache cleared ({scope}): {removed.get('redis', 0)} entries removed from Redis, "
            f"{removed.get('memory', 0)} from the answering pod's memory; "
            f"{answer.get('replicas_notified', 0)} runtime(s) notified")
    if redis_mode == "Disabled":
        text += ("\nwarning: spec.redis.mode is Disabled: only the pod that answered was cleared; the others keep "
                 "their entries until spec.cache.memory.ttlSeconds passes")
    return text
