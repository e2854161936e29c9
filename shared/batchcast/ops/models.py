"""The model registry under ``models/``: which versions exist, what they were trained on, and which
one ``LATEST`` points at.

A model version is named after the logical time it was trained for and the fingerprint of the data
it saw. Its folder holds ``model-<sha256>.skops`` and ``backtest-<sha256>.avro``, written create-only
under names derived from their bytes, then ``metadata.json``, which names them (its presence means
the version is complete). ``LATEST`` moves forward by compare-and-swap, so two trainings racing
cannot move it backwards.

This module only reads and writes pointers and metadata: freshness, alerts, notify and status use it
without loading scikit-learn. Fitting and loading the model itself is :mod:`batchcast.ops.training`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from batchcast.core import layout
from batchcast.core.config import Profile
from batchcast.data import storage
from batchcast.ports import BlobStore

METADATA_FILE = "metadata.json"


@dataclass(frozen=True)
class ModelRef:
    """What ``LATEST`` points at."""

    version: str
    fingerprint: str
    trained_for: str  # ISO logical time of the training run

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelRef:
        return cls(data["version"], data["fingerprint"], data["trained_for"])


def version_name(logical_time: datetime, fingerprint: str) -> str:
    """``<UTC logical time>-<fingerprint prefix>``: sortable, and the same for a redelivery."""
    return f"{logical_time.astimezone(UTC):%Y%m%dT%H%M%SZ}-{fingerprint[:10]}"


def version_folder(profile: Profile, city: str, version: str) -> str:
    """The folder of one model version (ends with ``/``)."""
    return layout.model_dir(profile.name, city, version)


def latest(blobs: BlobStore, profile: Profile, city: str) -> ModelRef | None:
    """The version predictions of ``city`` should use, if any model was trained."""
    data = storage.read_json(blobs, layout.model_latest(profile.name, city))
    return ModelRef.from_json(data) if data else None


def advance_latest(blobs: BlobStore, profile: Profile, city: str, ref: ModelRef) -> bool:
    """Point LATEST at ``ref`` unless it already points at a newer training; True if it moved."""
    pointer = dict(ref.__dict__)

    def forward(current: dict | None) -> dict | None:
        return pointer if current is None or current["trained_for"] < ref.trained_for else None

    return storage.update_json(blobs, layout.model_latest(profile.name, city), forward) == pointer


def read_metadata(blobs: BlobStore, profile: Profile, city: str, version: str) -> dict | None:
    """A version's ``metadata.json`` (which names its model and backtest files), or None."""
    return storage.read_json(blobs, version_folder(profile, city, version) + METADATA_FILE)


def is_complete(blobs: BlobStore, profile: Profile, city: str, version: str) -> bool:
    """Whether the version's ``metadata.json`` exists, i.e. its training finished and registered."""
    return blobs.stat(version_folder(profile, city, version) + METADATA_FILE) is not None


def is_recent(ref: ModelRef, logical_time: datetime, minutes: int) -> bool:
    """Was ``ref`` trained less than ``minutes`` before ``logical_time``? (data-trigger debounce)"""
    return logical_time - datetime.fromisoformat(ref.trained_for) < timedelta(minutes=minutes)


def register(blobs: BlobStore, profile: Profile, city: str, version: str, metadata: dict[str, Any]) -> bool:
    """Write a version's ``metadata.json`` create-only, completing it; False if another training of
    the same version registered first (its files describe a model as good as this one)."""
    path = version_folder(profile, city, version) + METADATA_FILE
    try:
        storage.write_once(blobs, path, storage.dumps(metadata))
    except storage.ConflictingWrite:
        return False
    return True
