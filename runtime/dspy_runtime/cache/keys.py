"""Cache keys for predictions, and the Redis names of the cache.

A key must change whenever the answer could: the program version (its content
hash), the model, the A/B variant and the inputs. Inputs are normalized first so
that requests differing only in incidental whitespace or key order share an entry.

A key is ``<scope>:<digest>``: the scope (16 hex digits) names the (program version,
model, variant) the entry belongs to, the digest (32 hex digits) its inputs. With the
scope in front, one variant's or one revision's entries are found by prefix, in L1 by
``startswith`` and in Redis by ``SCAN MATCH <prefix><scope>:*``, which is what
invalidation (``DELETE /v1/cache``) and the per-scope hit counts (``hot.py``) need.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
import xxhash

SCOPE_LENGTH = 16
DEFAULT_BASE_PREFIX = "dspy:"
"""The base of the cache's Redis names for a runtime that does not know its resource."""


def _normalize(value: Any) -> Any:
    # Only top-level strings are normalized: that is where users paste text with
    # stray newlines and double spaces. Nested structures are hashed as given
    # (orjson still sorts nested dict keys).
    if isinstance(value, str):
        return " ".join(value.split())
    return value


@functools.lru_cache(maxsize=1024)
def cache_scope(program_version: str, model: str, variant: str) -> str:
    """16 hex digits (xxh3-64 of the JSON triple) naming one variant's entries.

    Memoized: it is part of every request's key and a pod serves a handful of variants.
    """
    return xxhash.xxh3_64_hexdigest(orjson.dumps((program_version, model, variant)))


def cache_key(program_version: str, model: str, variant: str, inputs: Mapping[str, Any]) -> str:
    """``<scope>:<digest>``: the scope, then xxh3-128 of the inputs' canonical JSON encoding.

    xxh3 is not cryptographic; it does not need to be, since keys are never
    trusted for authorization and 128 bits make accidental collisions negligible.
    Raises ``TypeError`` for inputs JSON cannot encode (they are JSON in the API).
    """
    canonical = orjson.dumps({k: _normalize(v) for k, v in inputs.items()}, option=orjson.OPT_SORT_KEYS)
    return f"{cache_scope(program_version, model, variant)}:{xxhash.xxh3_128_hexdigest(canonical)}"


class Scoped(Protocol):
    """What names a scope (``routing.Variant``)."""

    @property
    def cache_version(self) -> str: ...
    @property
    def model(self) -> str: ...
    @property
    def name(self) -> str: ...


def variant_scope(variant: Scoped) -> str:
    """The scope of a served variant's entries."""
    return cache_scope(variant.cache_version, variant.model, variant.name)


def scope_of(key: str) -> str:
    return key[:SCOPE_LENGTH]


def glob_escape(text: str) -> str:
    """``text`` matched literally by a Redis glob pattern (``SCAN MATCH``)."""
    return "".join("\\" + char if char in "*?[]\\" else char for char in text)


@dataclass(frozen=True)
class CacheNames:
    """The Redis names of the cache under one base prefix (``dspy:{<ns>/<name>}:`` for a resource,
    so that clearing "everything" never touches another resource sharing the Redis)."""

    base: str = DEFAULT_BASE_PREFIX

    @property
    def entries(self) -> str:
        """Prefix of the entries: ``<base>cache:<scope>:<digest>``."""
        return f"{self.base}cache:"

    def hot(self, scope: str) -> str:
        """Sorted set of one scope's hit counts (member: the key)."""
        return f"{self.base}cache-hot:{scope}"

    @property
    def hot_prefix(self) -> str:
        return f"{self.base}cache-hot:"

    def warmup_lock(self, key: str) -> str:
        """Held by the replica that computes one warm-up entry."""
        return f"{self.base}cache-warmup:{key}"

    @property
    def channel(self) -> str:
        """Pub/sub channel of invalidations; every runtime's L1 listens."""
        return f"{self.base}cache-invalidate"

    @property
    def generation(self) -> str:
        """Counter of invalidations, so a replica that missed a message (disconnected) notices."""
        return f"{self.base}cache-generation"
