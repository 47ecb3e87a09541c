"""Budgets per sender and source: occurrences per clock minute and per clock hour.

One noisy service must not starve the others: each ``(sender, source)`` pair has its own
budget of occurrences (error records the bridge would store) per minute and per hour.
Occurrences beyond it are refused (OTLP partial success, ``quota_exceeded``), the rest of
the request is written; a request none of whose occurrences fit is answered 429 +
``Retry-After`` (gRPC ``RESOURCE_EXHAUSTED`` + ``RetryInfo``). A sender whose every source
is exhausted is refused before its body is read (possible when its grant names its
sources, i.e. has no ``*``).

Windows are clock-aligned (minute ``floor(t / 60)``, hour ``floor(t / 3600)``), so the
``Retry-After`` is exactly the time until the window that blocks turns. Counts are kept
per worker process (docs/bridge.md): only what is accepted is charged, and a write that
does not commit gives its charge back.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

#: (sender, source) pairs tracked per worker; beyond it the least recently used is forgotten.
MAX_KEYS = 4096

Key = tuple[str, str]


@dataclass
class _Usage:
    minute: int = -1
    in_minute: int = 0
    hour: int = -1
    in_hour: int = 0


class Quota:
    """``per_minute`` / ``per_hour`` occurrences per (sender, source); 0 = no limit."""

    def __init__(self, per_minute: int = 0, per_hour: int = 0, *, clock: Callable[[], float] = time.time) -> None:
        self.per_minute = per_minute
        self.per_hour = per_hour
        self._clock = clock
        self._usage: OrderedDict[Key, _Usage] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return bool(self.per_minute or self.per_hour)

    def _current(self, key: Key, now: float) -> _Usage:
        usage = self._usage.get(key)
        if usage is None:
            usage = self._usage[key] = _Usage()
            while len(self._usage) > MAX_KEYS:
                self._usage.popitem(last=False)
        else:
            self._usage.move_to_end(key)
        minute, hour = int(now // 60), int(now // 3600)
        if usage.minute != minute:
            usage.minute, usage.in_minute = minute, 0
        if usage.hour != hour:
            usage.hour, usage.in_hour = hour, 0
        return usage

    def _room(self, usage: _Usage) -> int:
        room = math.inf
        if self.per_minute:
            room = min(room, self.per_minute - usage.in_minute)
        if self.per_hour:
            room = min(room, self.per_hour - usage.in_hour)
        return int(max(room, 0)) if room != math.inf else 1 << 62

    def take(self, key: Key, wanted: int) -> int:
        """Charge up to ``wanted`` occurrences to ``key``; how many fit."""
        if not self.enabled or wanted <= 0:
            return max(wanted, 0)
        usage = self._current(key, self._clock())
        granted = min(wanted, self._room(usage))
        usage.in_minute += granted
        usage.in_hour += granted
        return granted

    def give_back(self, key: Key, count: int) -> None:
        """Occurrences charged but not stored (the write did not commit, or a record was refused)."""
        usage = self._usage.get(key)
        if usage is None or count <= 0:
            return
        now = self._clock()
        if usage.minute == int(now // 60):
            usage.in_minute = max(usage.in_minute - count, 0)
        if usage.hour == int(now // 3600):
            usage.in_hour = max(usage.in_hour - count, 0)

    def retry_after(self, key: Key) -> int:
        """Whole seconds until ``key`` has room again (0 when it has)."""
        if not self.enabled:
            return 0
        now = self._clock()
        usage = self._current(key, now)
        if self._room(usage) > 0:
            return 0
        wait = 0.0
        if self.per_hour and usage.in_hour >= self.per_hour:
            wait = (int(now // 3600) + 1) * 3600 - now
        elif self.per_minute and usage.in_minute >= self.per_minute:
            wait = (int(now // 60) + 1) * 60 - now
        return max(1, math.ceil(wait))

    def exhausted(self, sender: str, sources: Iterable[str]) -> int:
        """Seconds until one of ``sources`` of ``sender`` has room; 0 when one has now (or none is given)."""
        waits = [self.retry_after((sender, source)) for source in sources]
        if not waits or min(waits) == 0:
            return 0
        return min(waits)
