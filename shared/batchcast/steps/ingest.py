"""The authenticated ingest endpoint: store an upload in ``raw/`` and say at once what is wrong.

The upload is kept whatever its content (nothing is lost; partition quarantines what is bad). The
response previews the validation partition will do, so a store's integration learns about a
broken file in the same request instead of from a report in the bucket.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from batchcast.data import uploads
from batchcast.data.validation import validate_upload
from batchcast.ops.tokens import TokenMapError, TokenStore
from batchcast.ports import BlobStore, Clock

MAX_BYTES = 32 * 1024 * 1024  # the Cloud Functions HTTP request limit
PREVIEW_ERRORS = 50


@dataclass(frozen=True)
class Response:
    """An HTTP status and a JSON body."""

    status: int
    body: dict


def handle_upload(
    blobs: BlobStore,
    clock: Clock,
    tokens: TokenStore,
    *,
    method: str,
    headers: Mapping[str, str],
    args: Mapping[str, str],
    body: bytes,
) -> Response:
    """Authenticate, store the body under ``raw/`` and return the validation preview.

    Operators may upload anything; an uploader only to its datasets. An uploader that does not
    name the dataset gets its only dataset, or is asked to name one.
    """
    if method != "POST":
        return Response(405, {"error": "POST the file as the request body"})
    try:
        principal = tokens.authenticate(headers.get("Authorization"))
    except TokenMapError:
        return Response(503, {"error": "the token map cannot be read; try again later"})
    if principal is None:
        return Response(401, {"error": "missing or invalid bearer token"})
    if principal.role == "manager":
        return Response(403, {"error": f"{principal.name} is a manager: managers read, they do not upload"})
    dataset, mapping = args.get("dataset"), args.get("mapping")
    if dataset is None and principal.role == "uploader" and len(principal.datasets) == 1:
        dataset = principal.datasets[0]
    if dataset is None and principal.role != "operator":
        return Response(403, {"error": "name the dataset: ?dataset=<one of your datasets>"})
    if dataset is not None and not principal.can_upload(dataset):
        return Response(403, {"error": f"{principal.name} may not upload to dataset {dataset!r}"})
    if not body:
        return Response(400, {"error": "the request body is empty: send the file's bytes"})
    if len(body) > MAX_BYTES:
        return Response(413, {"error": f"uploads are limited to {MAX_BYTES} bytes; upload to the bucket"})
    ext = args.get("format", "csv").lower()
    if ext not in uploads.CONTENT_TYPES:
        return Response(400, {"error": f"format must be one of {', '.join(uploads.CONTENT_TYPES)}"})
    now = clock.now()
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
        "rows_accepted": preview.rows_accepted,
        "rows_rejected": len(preview.row_errors) + preview.rows_unlisted,  # row_errors lists the first
        "file_errors": preview.file_errors,
        "row_errors": preview.row_errors[:PREVIEW_ERRORS],
        "warnings": preview.warnings,
    }
    return Response(422 if preview.file_errors else 202, report)
