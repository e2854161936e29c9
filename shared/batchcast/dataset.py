"""Reading the Hive-partitioned ``batch_data/`` back: which entities exist, their rows, a fingerprint.

An entity's rows may be spread over several upload files. When two uploads carry the same entity
and period, the later upload wins (ordered by ingestion time, then upload id), so a corrected
re-upload replaces what it corrects.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

import pandas as pd

from batchcast import layout, schemas
from batchcast.config import Profile
from batchcast.ports import BlobInfo, BlobStore


@dataclass(frozen=True)
class EntityFiles:
    """The partition files of one entity and how many rows they hold."""

    entity_id: str
    files: tuple[BlobInfo, ...]

    @property
    def rows(self) -> int:
        """Rows over all files (from object metadata, without reading them)."""
        return sum(int(info.metadata.get("rows", 0) or 0) for info in self.files)

    @property
    def last(self) -> str:
        """The latest period any file covers (ISO), or '' when unknown."""
        return max((info.metadata.get("last", "") for info in self.files), default="")


def entity_files(blobs: BlobStore, profile: Profile, city: str) -> dict[str, EntityFiles]:
    """Every entity of ``city`` with its partition files."""
    by_entity: dict[str, list[BlobInfo]] = defaultdict(list)
    for info in blobs.list(layout.batch_data_prefix(profile.name, city)):
        try:
            parsed = layout.parse_batch_data(info.name)
        except layout.LayoutError:
            continue  # not a partition file (a stray object); never fatal for a reader
        by_entity[parsed.entity_id].append(info)
    return {e: EntityFiles(e, tuple(files)) for e, files in sorted(by_entity.items())}


def cities_with_data(blobs: BlobStore, profile: Profile) -> list[str]:
    """The configured cities that have partitioned data."""
    return [
        c for c in profile.cities if next(iter(blobs.list(layout.batch_data_prefix(profile.name, c))), None)
    ]


def fingerprint(files: dict[str, EntityFiles], profile: Profile) -> str:
    """A hash of exactly which data (object names and contents) and which model settings a
    training would see: equal fingerprints mean retraining would learn the same model, wherever
    the bucket is (content checksums, not generations, so a replayed bucket gets the same one)."""
    digest = hashlib.sha256()
    settings = profile.model_dump_json(include={"features", "training", "backtest", "horizon", "covariates"})
    digest.update(settings.encode())
    for entity in files.values():
        for info in entity.files:
            digest.update(f"{info.name}#{info.checksum or info.generation}\n".encode())
    return digest.hexdigest()


def _ends_before(info: BlobInfo, since: datetime) -> bool:
    last = info.metadata.get("last")
    return bool(last) and pd.Timestamp(last) < pd.Timestamp(since)


def read_rows(
    blobs: BlobStore,
    profile: Profile,
    files: dict[str, EntityFiles],
    entities: list[str] | None = None,
    since: datetime | None = None,
) -> pd.DataFrame:
    """The merged rows of ``entities`` (all when None), skipping files that end before ``since``."""
    wanted = files if entities is None else {e: files[e] for e in entities if e in files}
    schema = schemas.observation(profile)  # the profile's schema: its declared covariates included
    frames = []
    for entity in wanted.values():
        for info in entity.files:
            if since is not None and _ends_before(info, since):
                continue
            records, metadata = schemas.read_records(blobs.read(info.name), schema)
            frame = schemas.records_to_frame(records, schema)
            frame["_order"] = f"{metadata.get('batchcast.ingested_at', '')}|{info.name}"
            frames.append(frame)
    columns = list(schemas.fields(schema))
    if not frames:
        return schemas.records_to_frame([], schema)
    rows = pd.concat(frames, ignore_index=True).sort_values("_order", kind="stable")
    rows = rows.drop_duplicates([profile.entity_key, profile.time_column], keep="last")
    if since is not None:
        rows = rows[rows[profile.time_column] >= pd.Timestamp(since)]
    return rows.sort_values([profile.entity_key, profile.time_column])[columns].reset_index(drop=True)
