"""``metrics/dataset=<d>/dt=<date>/city=<c>.json``: backtest and run metrics, merged by key.

Several writers touch one day's file (a training, each predict shard); each owns one key of one
section, and the merge is a compare-and-swap, so concurrent shards and replays never lose or
duplicate an entry.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from batchcast.core import layout
from batchcast.data import storage
from batchcast.ports import BlobStore


def record(
    blobs: BlobStore, dataset: str, dt: date, city: str, section: str, key: str, entry: dict[str, Any]
) -> None:
    """Set ``document[section][key] = entry`` in the city's metrics file for ``dt``."""

    def merge(current: dict | None) -> dict:
        document = current or {"dataset": dataset, "city": city, "dt": dt.isoformat()}
        return document | {section: dict(document.get(section, {})) | {key: entry}}

    storage.update_json(blobs, layout.metrics_object(dataset, dt, city), merge)
