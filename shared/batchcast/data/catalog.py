"""The per-city data manifest: which ``batch_data/`` files hold each entity's rows.

``batch_data/`` grows by one file per entity and upload: a store uploading daily for three years
leaves more than a thousand files. Listing them for every training, prediction or freshness check
would make each run cost more every day, so readers never list ``batch_data/``; they read the
manifest, which partition extends after writing an upload's files and compaction rewrites when it
swaps many small upload files for a few segments (see :mod:`batchcast.data.dataset`).

A city's manifest is split into :data:`PARTS` objects, ``manifests/dataset=<d>/city=<c>/part-NN.json``,
an entity's part chosen by a hash of its id. Every change is a compare-and-swap of one part, so a
thousand stores uploading within minutes contend for sixteen objects, not one (GCS sustains about one
write per second per object), and a reader of a few entities reads only their parts.

A part holds ``{"entities": {<id>: [<file>, ...]}}``; a file is :class:`DataFile` as JSON.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Literal

from batchcast.core import layout
from batchcast.core.config import Profile
from batchcast.data import storage
from batchcast.ports import BlobStore

PARTS = 16  # fixed: an entity's part is part of where its files are found

Kind = Literal["upload", "segment"]


@dataclass(frozen=True)
class DataFile:
    """One ``batch_data/`` file of one entity, described without reading it."""

    name: str
    kind: Kind
    first: str  # ISO start of its first period (the city's wall clock)
    last: str  # ISO start of its last period
    rows: int
    checksum: str  # md5 of its bytes: fingerprints and replays recognise equal content

    def object_metadata(self) -> dict[str, str]:
        """What the file's object carries about itself, so :func:`rebuild` can list it again."""
        return {"rows": str(self.rows), "first": self.first, "last": self.last}

    def reaches(self, since: datetime | None, until: datetime | None) -> bool:
        """Whether the file may hold periods in ``[since, until)`` (None: unbounded)."""
        after = since is None or datetime.fromisoformat(self.last) >= since
        before = until is None or datetime.fromisoformat(self.first) < until
        return after and before


@dataclass(frozen=True)
class EntityData:
    """The files of one entity, in the order they were recorded."""

    entity_id: str
    files: tuple[DataFile, ...]

    @property
    def rows(self) -> int:
        """Rows over all files (a period held by two files counts twice)."""
        return sum(f.rows for f in self.files)

    @property
    def last(self) -> str:
        """The latest period any file covers (ISO), or '' when there is none."""
        return max((f.last for f in self.files), default="")

    @property
    def uploads(self) -> tuple[DataFile, ...]:
        """The files not compacted yet."""
        return tuple(f for f in self.files if f.kind == "upload")

    def rows_reaching(self, since: datetime | None, until: datetime | None = None) -> int:
        """Rows of the files a reader of ``[since, until)`` reads."""
        return sum(f.rows for f in self.files if f.reaches(since, until))


CityData = dict[str, EntityData]


def part_of(entity_id: str) -> int:
    """The manifest part that lists ``entity_id`` (stable across processes and versions)."""
    return int(hashlib.sha256(entity_id.encode()).hexdigest()[:8], 16) % PARTS


def read(blobs: BlobStore, profile: Profile, city: str, entities: Iterable[str] | None = None) -> CityData:
    """Every entity of ``city`` with its files, or only ``entities`` (reading only their parts)."""
    wanted = None if entities is None else set(entities)
    parts = range(PARTS) if wanted is None else sorted({part_of(e) for e in wanted})
    names = [layout.manifest_object(profile.name, city, part) for part in parts]
    documents = storage.concurrently(lambda name: storage.read_json(blobs, name), names)
    return _entities(documents, wanted)


def _entities(documents: list[dict | None], wanted: set[str] | None) -> CityData:
    """The entities (all, or ``wanted``) that manifest part documents list, with their files."""
    found: CityData = {}
    for document in documents:
        for entity, files in (document or {}).get("entities", {}).items():
            if wanted is None or entity in wanted:
                found[entity] = EntityData(entity, tuple(DataFile(**f) for f in files))
    return dict(sorted(found.items()))


def record(blobs: BlobStore, profile: Profile, city: str, files: dict[str, DataFile]) -> CityData:
    """Add one new file per entity (an upload's partition files); recording twice changes nothing.

    Returns those entities as the manifest now lists them (every file, not only the new one).
    """
    return _add(blobs, profile, city, {entity: [file] for entity, file in files.items()})


def replace(
    blobs: BlobStore, profile: Profile, city: str, swaps: dict[str, tuple[list[DataFile], list[DataFile]]]
) -> set[str]:
    """Swap files per entity (``{entity: (old files, new files)}``), as compaction does.

    An entity's swap happens only if all its old files are still listed: when a concurrent
    compaction got there first, its result stands and this one is dropped. Returns the entities
    swapped.
    """
    swapped: set[str] = set()

    def swap(entities: dict[str, list[dict]], entity: str, old: list[DataFile], new: list[DataFile]) -> None:
        listed = entities.get(entity, [])
        names = {f["name"] for f in listed}
        if not all(f.name in names for f in old):
            swapped.discard(entity)
            return
        gone = {f.name for f in old}
        kept = [f for f in listed if f["name"] not in gone]
        entities[entity] = kept + [asdict(f) for f in new if f.name not in names - gone]
        swapped.add(entity)

    _update_parts(
        blobs,
        profile,
        city,
        {
            entity: (lambda entities, e=entity, o=old, n=new: swap(entities, e, o, n))
            for entity, (old, new) in swaps.items()
        },
    )
    return swapped


def _update_parts(
    blobs: BlobStore,
    profile: Profile,
    city: str,
    changes: dict[str, Callable[[dict[str, list[dict]]], None]],
) -> CityData:
    """Apply each entity's change to its part, one compare-and-swap per part, parts concurrently;
    return the changed entities as the parts now list them."""
    by_part: dict[int, list[Callable[[dict[str, list[dict]]], None]]] = {}
    for entity, change in sorted(changes.items()):
        by_part.setdefault(part_of(entity), []).append(change)

    def update(part: int) -> dict | None:
        def apply(current: dict | None) -> dict:
            document = current or {"dataset": profile.name, "city": city, "part": part, "entities": {}}
            entities = {e: [dict(f) for f in files] for e, files in document["entities"].items()}
            for change in by_part[part]:
                change(entities)
            return document | {"entities": dict(sorted(entities.items()))}

        return storage.update_json(blobs, layout.manifest_object(profile.name, city, part), apply)

    return _entities(storage.concurrently(update, sorted(by_part)), set(changes))


def rebuild(blobs: BlobStore, profile: Profile) -> dict[str, int]:
    """List ``batch_data/`` of ``profile`` once and record every file in its city's manifest.

    For buckets written before manifests existed (or a manifest lost by hand): partition keeps the
    manifest from then on. Files carry what the manifest needs as object metadata (``rows``,
    ``first``, ``last``) and their content checksum; recording is idempotent. Returns files per city.
    """
    found: dict[str, dict[str, list[DataFile]]] = {}
    for info in blobs.list(layout.batch_data_prefix(profile.name)):
        try:
            parsed = layout.parse_batch_data(info.name)
        except layout.LayoutError:
            continue  # a stray object: never fatal for a reader
        meta = info.metadata
        if not {"rows", "first", "last"} <= meta.keys():
            continue  # not written by partition or compaction
        kind: Kind = "segment" if parsed.upload_id.startswith(layout.SEGMENT_PREFIX) else "upload"
        file = DataFile(info.name, kind, meta["first"], meta["last"], int(meta["rows"]), info.checksum)
        found.setdefault(parsed.city, {}).setdefault(parsed.entity_id, []).append(file)
    for city, entities in found.items():
        _add(blobs, profile, city, entities)
    return {city: sum(len(files) for files in entities.values()) for city, entities in sorted(found.items())}


def _add(blobs: BlobStore, profile: Profile, city: str, files: dict[str, list[DataFile]]) -> CityData:
    """List ``files`` under their entities; a file already listed is left as it is."""

    def add(entities: dict[str, list[dict]], entity: str, new: list[DataFile]) -> None:
        listed = entities.setdefault(entity, [])
        names = {f["name"] for f in listed}
        listed.extend(asdict(f) for f in new if f.name not in names)

    changes = {e: (lambda entities, e=e, new=new: add(entities, e, new)) for e, new in files.items()}
    return _update_parts(blobs, profile, city, changes)
