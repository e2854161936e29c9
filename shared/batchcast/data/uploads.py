"""Putting an upload into ``raw/``: the one path the CLI, the ingest endpoint and tests share."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

from batchcast.core import layout
from batchcast.data import storage
from batchcast.ports import BlobStore

CONTENT_TYPES = {"csv": "text/csv", "avro": "application/avro"}


class UploadConflict(RuntimeError):
    """An upload id was reused for different content (raw uploads are immutable)."""


def new_upload_id(now: datetime, data: bytes | Path) -> str:
    """A time-sortable id that is the same for the same bytes at the same second (retries dedupe)."""
    digest = hashlib.sha256()
    if isinstance(data, Path):
        with data.open("rb") as stream:
            while piece := stream.read(1 << 20):
                digest.update(piece)
    else:
        digest.update(data)
    return f"{now.astimezone(UTC):%Y%m%dT%H%M%SZ}-{digest.hexdigest()[:12]}"


def store_upload(
    blobs: BlobStore,
    data: bytes | Path,
    *,
    ext: str,
    now: datetime,
    dataset: str | None = None,
    mapping: str | None = None,
    upload_id: str | None = None,
) -> str:
    """Write ``data`` (bytes, or a local file streamed from disk, however large) to
    ``raw/dt=<UTC date>/<upload_id>.<ext>`` once and return the object name.

    Re-sending the same bytes under the same id is a no-op (no second event); different bytes under
    an existing id raise :class:`UploadConflict` rather than overwrite what was uploaded.
    """
    if ext not in layout.RAW_EXTENSIONS:
        raise ValueError(f"uploads must be one of {', '.join(layout.RAW_EXTENSIONS)}, not .{ext}")
    upload_id = upload_id or new_upload_id(now, data)
    name = layout.raw_object(now.astimezone(UTC).date(), upload_id, ext)
    metadata = {k: v for k, v in {"dataset": dataset, "mapping": mapping}.items() if v}
    options = {"metadata": metadata, "content_type": CONTENT_TYPES[ext]}
    try:
        if isinstance(data, Path):
            storage.write_once_from(blobs, name, lambda: data.open("rb"), **options)
        else:
            storage.write_once(blobs, name, data, **options)
    except storage.ConflictingWrite:
        raise UploadConflict(f"{name} already holds a different upload") from None
    return name
