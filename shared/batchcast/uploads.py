"""Putting an upload into ``raw/``: the one path the CLI, the ingest endpoint and tests share."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from batchcast import layout
from batchcast.ports import BlobStore, PreconditionFailed

CONTENT_TYPES = {"csv": "text/csv", "avro": "application/avro"}


class UploadConflict(RuntimeError):
    """An upload id was reused for different content (raw uploads are immutable)."""


def new_upload_id(now: datetime, data: bytes) -> str:
    """A time-sortable id that is the same for the same bytes at the same second (retries dedupe)."""
    return f"{now.astimezone(UTC):%Y%m%dT%H%M%SZ}-{hashlib.sha256(data).hexdigest()[:12]}"


def store_upload(
    blobs: BlobStore,
    data: bytes,
    *,
    ext: str,
    now: datetime,
    dataset: str | None = None,
    mapping: str | None = None,
    upload_id: str | None = None,
) -> str:
    """Write ``data`` to ``raw/dt=<UTC date>/<upload_id>.<ext>`` once and return the object name.

    Re-sending the same bytes under the same id is a no-op (no second event); different bytes under
    an existing id raise :class:`UploadConflict` rather than overwrite what was uploaded.
    """
    if ext not in layout.RAW_EXTENSIONS:
        raise ValueError(f"uploads must be one of {', '.join(layout.RAW_EXTENSIONS)}, not .{ext}")
    upload_id = upload_id or new_upload_id(now, data)
    name = layout.raw_object(now.astimezone(UTC).date(), upload_id, ext)
    metadata = {k: v for k, v in {"dataset": dataset, "mapping": mapping}.items() if v}
    try:
        blobs.write(name, data, if_generation_match=0, metadata=metadata, content_type=CONTENT_TYPES[ext])
    except PreconditionFailed:
        if blobs.read(name) != data:
            raise UploadConflict(f"{name} already holds a different upload") from None
    return name
