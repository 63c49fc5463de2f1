"""Values built from a server{}'s settings once, not once per session (reply lines that only
depend on the configuration)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def per_server(build: Callable[[object], T]) -> Callable[[object], T]:
    """Cache ``build(conf)`` by the settings object's identity (settings are frozen; hashing
    them would cost more than building). The conf is kept with its value, so a reloaded
    worker's freed settings whose id is reused never get a stale value."""
    cache: dict[int, tuple[object, T]] = {}

    @functools.wraps(build)
    def cached(conf):
        hit = cache.get(id(conf))
        if hit is None or hit[0] is not conf:
            hit = cache[id(conf)] = (conf, build(conf))
        return hit[1]

    return cached
