"""``IndexRanges``: a bounded record of frame numbers (dropped, late, damaged frames), kept as
sorted inclusive ranges."""

from __future__ import annotations

import bisect
import threading


class IndexRanges:
    """A set of frame numbers kept as sorted inclusive ranges (``[[1, 3], [7, 7]]`` for 1, 2,
    3, 7), for frames dropped or skipped over a stream of any length: ``len()`` counts every
    number added; at most ``limit`` ranges are listed (the first ones; ``complete`` says
    whether all are), so what is held stays bounded however scattered the numbers. ``append``
    is thread-safe (a reader thread adds, the consumer reads)."""

    def __init__(self, limit: int | None = 1000):
        self.limit = limit
        self.count = 0
        self._ranges: list[list[int]] = []
        self._complete = True
        self._lock = threading.Lock()

    def append(self, i: int) -> None:
        i = int(i)
        with self._lock:
            self.count += 1
            r = self._ranges
            k = bisect.bisect_right(r, [i, float("inf")])  # first range starting after i
            if k and r[k - 1][1] >= i - 1:  # joins (or lies in) the range before
                r[k - 1][1] = max(r[k - 1][1], i)
                if k < len(r) and r[k][0] <= r[k - 1][1] + 1:  # and closes the gap to the next
                    r[k - 1][1] = r.pop(k)[1]
            elif k < len(r) and r[k][0] == i + 1:
                r[k][0] = i
            elif self.limit is None or len(r) < self.limit:
                r.insert(k, [i, i])
            else:
                self._complete = False

    def __len__(self) -> int:
        return self.count

    def __contains__(self, i) -> bool:
        with self._lock:
            k = bisect.bisect_right(self._ranges, [i, float("inf")])
            return bool(k) and self._ranges[k - 1][1] >= i

    @property
    def complete(self) -> bool:
        """Whether every number added is in ``ranges()`` (False once ``limit`` was reached)."""
        return self._complete

    def ranges(self) -> list[list[int]]:
        """A copy of the listed ranges, ``[[first, last], ...]`` in order."""
        with self._lock:
            return [list(r) for r in self._ranges]

    def __iter__(self):
        return (i for a, b in self.ranges() for i in range(a, b + 1))

    def __repr__(self):
        return f"IndexRanges({self.ranges()}, count={self.count})"
