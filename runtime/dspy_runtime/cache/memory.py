"""L1: a bounded, TTL-limited cache inside the process.

``cachetools.TTLCache`` does exactly this (LRU eviction at ``maxsize``, per-entry
expiry, injectable timer), so this class only pins the runtime's types on it. It is
not thread-safe, which is fine: the runtime touches it from its event loop only.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable

from cachetools import TTLCache

from ..clock import Clock
from .keys import scope_of


class MemoryCache:
    """Maps cache keys to encoded answers for ``ttl_seconds``, at most ``max_entries`` of them."""

    def __init__(self, max_entries: int, ttl_seconds: float, clock: Clock = time.monotonic) -> None:
        if max_entries < 1 or ttl_seconds <= 0:
            raise ValueError("a memory cache needs max_entries >= 1 and ttl_seconds > 0; pass None to disable it")
        self._entries: TTLCache[str, bytes] = TTLCache(maxsize=max_entries, ttl=ttl_seconds, timer=clock)

    def get(self, key: str) -> bytes | None:
        # Indexing, not ``TTLCache.get``: ``get`` checks ``key in self`` first and so
        # runs the expiry check twice on every hit.
        try:
            return self._entries[key]
        except KeyError:
            return None

    def set(self, key: str, value: bytes) -> None:
        self._entries[key] = value

    def discard(self, keys: Iterable[str]) -> int:
        """Remove ``keys``; how many were here."""
        return sum(self._entries.pop(key, None) is not None for key in keys)

    def discard_scopes(self, scopes: Collection[str]) -> int:
        """Remove every entry of ``scopes`` (keys start with their scope, see ``keys.py``).

        A walk over at most ``max_entries`` keys: an operator's action, never a request's.
        """
        doomed = [key for key in self._entries if scope_of(key) in scopes]
        return self.discard(doomed)

    def clear(self) -> int:
        """Remove everything; how many entries there were (expired ones not counted)."""
        self._entries.expire()
        count = len(self._entries)
        self._entries.clear()
        return count

    def __len__(self) -> int:
        return len(self._entries)
