"""Splitting a city's entities into predict requests balanced by rows.

Greedy longest-processing-time packing: the heaviest entity first, each into the lightest shard.
One very large store then sits alone in a shard rather than making some shard twice as slow.
"""

from __future__ import annotations

import heapq
import math


def plan_shards(weights: dict[str, int], target_rows: int, max_shards: int) -> list[list[str]]:
    """Return shards (lists of entity ids, each sorted) whose row totals are as even as possible.

    The shard count is ``ceil(total / target_rows)``, at least 1, at most ``max_shards`` and the
    number of entities. The result depends only on the input, never on dict order.
    """
    if not weights:
        return []
    total = sum(max(w, 1) for w in weights.values())
    count = max(1, min(math.ceil(total / target_rows), max_shards, len(weights)))
    heap = [(0, index) for index in range(count)]
    shards: list[list[str]] = [[] for _ in range(count)]
    for entity, weight in sorted(weights.items(), key=lambda item: (-item[1], item[0])):
        load, index = heapq.heappop(heap)
        shards[index].append(entity)
        heapq.heappush(heap, (load + max(weight, 1), index))
    return [sorted(shard) for shard in shards]
