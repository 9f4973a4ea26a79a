"""Where cost methods keep what they measured once (per-kernel times, machine peaks).

A cache is anything with ``get(namespace, key, default)`` and ``put(namespace,
key, value)``: :class:`hwnas.pipeline.store.ResultStore` in a search,
:class:`MemoryCache` otherwise.
"""

from __future__ import annotations

import json
from typing import Any


class MemoryCache:
    """A process-local cache with the store's ``get``/``put`` interface."""

    def __init__(self) -> None:
        self._data: dict[tuple[str, str], Any] = {}

    def get(self, namespace: str, key: str, default: Any = None) -> Any:
        return self._data.get((namespace, key), default)

    def values(self, namespace: str) -> list[Any]:
        """Every cached value of ``namespace``, in the order they were first written."""
        return [v for (ns, _), v in self._data.items() if ns == namespace]

    def put(self, namespace: str, key: str, value: Any) -> None:
        self._data[(namespace, key)] = json.loads(json.dumps(value))
