"""The authenticated ingest endpoint: store an upload in ``raw/`` and say at once what is wrong.

The upload is kept whatever its content (nothing is lost; partition quarantines what is bad). The
response previews the validation partition will do, so a store's integration learns about a
broken file in the same request instead of from a report in the bucket.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass

from batchcast import uploads
from batchcast.ports import BlobStore, Clock
from batchcast.validation import validate_upload

MAX_BYTES = 32 * 1024 * 1024  # the Cloud Functions HTTP request limit
PREVIEW_ERRORS = 50


@dataclass(frozen=True)
class Response:
    """An HTTP status and a JSON body."""

    status: int
    body: dict


def authorized(authorization: str | None, token_hashes: frozenset[str]) -> bool:
    """True when the bearer token's SHA-256 is one of the configured digests (constant time)."""
    if not authorization or not authorization.startswith("Bearer ") or not token_hashes:
        return False
    digest = hashlib.sha256(authorization.removeprefix("Bearer ").strip().encode()).hexdigest()
    return any(hmac.compare_digest(digest, known) for known in token_hashes)


def handle_upload(
    blobs: BlobStore,
    clock: Clock,
    token_hashes: frozenset[str],
    *,
    method: str,
    headers: Mapping[str, str],
    args: Mapping[str, str],
    body: bytes,
) -> Response:
    """Authenticate, store the body under ``raw/`` and return the validation preview."""
    if method != "POST":
        return Response(405, {"error": "POST the file as the request body"})
    if not authorized(headers.get("Authorization"), token_hashes):
        return Response(401, {"error": "missing or invalid bearer token"})
    if not body:
        return Response(400, {"error": "the request body is empty: send the file's bytes"})
    if len(body) > MAX_BYTES:
        return Response(413, {"error": f"uploads are limited to {MAX_BYTES} bytes; upload to the bucket"})
    ext = args.get("format", "csv").lower()
    if ext not in uploads.CONTENT_TYPES:
        return Response(400, {"error": f"format must be one of {', '.join(uploads.CONTENT_TYPES)}"})
    now = clock.now()
    dataset, mapping = args.get("dataset"), args.get("mapping")
    try:
        name = uploads.store_upload(
            blobs,
            body,
            ext=ext,
            now=now,
            dataset=dataset,
            mapping=mapping,
            upload_id=headers.get("Idempotency-Key"),
        )
    except uploads.UploadConflict as error:
        return Response(409, {"error": str(error)})
    except ValueError as error:  # an Idempotency-Key that is not a valid id
        return Response(400, {"error": str(error)})
    preview = validate_upload(body, ext, logical_time=now, dataset=dataset, mapping=mapping)
    report = {
        "object": name,
        "dataset": preview.profile.name if preview.profile else None,
        "mapping": preview.mapping,
        "rows_read": preview.rows_read,
        "rows_accepted": len(preview.good),
        "rows_rejected": len(preview.row_errors),
        "file_errors": preview.file_errors,
        "row_errors": preview.row_errors[:PREVIEW_ERRORS],
        "warnings": preview.warnings,
    }
    return Response(422 if preview.file_errors else 202, report)
