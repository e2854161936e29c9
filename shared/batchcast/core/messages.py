"""Message contracts: the JSON bodies and attributes that travel on the bus.

Every message carries ``schema_version`` and a ``kind``; its attributes are ``kind``, ``dataset``,
``city`` (when it applies), ``run_id`` and ``idempotency_key``. The idempotency key is derived from
what the message *means* (never from when it was sent or by whom), so a redelivered or replayed
message has the same key and consumers can recognise it.

Messages carry object names and small facts, never data.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, ClassVar, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from batchcast.core.errors import PermanentError

SCHEMA_VERSION = 1
CITY_PATTERN = r"^[a-z][a-z0-9_-]{0,62}$"


UNKNOWN_DATASET = "unknown"  # the dataset of a message that cannot know it (a raw upload)


class Topic(StrEnum):
    """Every topic of the system; each has a dead-letter twin named ``<topic>-dlq``, whose messages
    wait in the pull subscription ``<topic>-dlq--hold``."""

    RAW_OBJECTS = "raw-objects"  # GCS notifications for raw/ (OBJECT_FINALIZE)
    PARTITIONS_READY = "partitions-ready"
    SCHEDULE = "schedule"
    PREDICT_REQUESTS = "predict-requests"
    PREDICTIONS_READY = "predictions-ready"

    @property
    def dead_letter(self) -> str:
        """The dead-letter topic that receives this topic's undeliverable messages."""
        return f"{self.value}-dlq"

    @property
    def dead_letter_subscription(self) -> str:
        """The pull subscription that keeps the dead-letter topic's messages until an operator acts
        (Terraform and the emulator stack create it; ``batchcast status`` reads it)."""
        return f"{self.dead_letter}--hold"


class InvalidMessage(PermanentError, ValueError):
    """A message body or its attributes do not follow the contract. Not worth retrying."""


class _Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION
    dataset: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,62}$")
    # The time the work is *for* (the scheduled tick, the upload's finalize time). Outputs derive
    # their as-of from it, never from the wall clock, so a replay writes the same bytes.
    logical_time: AwareDatetime
    # The run that published this message, for lineage in run records. Not part of the identity.
    run_id: str = ""
    # Set by ``batchcast rerun`` and carried by every message that descends from it: a rerun is new
    # work (a new idempotency key), where a redelivery or a replay of the original is not.
    rerun: str = Field(default="", pattern=r"^[A-Za-z0-9_.:-]{0,64}$")

    @property
    def city(self) -> str | None:
        """The city the message is about, when it is about one."""
        return getattr(self, "city_", None)

    def identity(self) -> str:
        """A readable string naming what this message means; hashed into the idempotency key."""
        raise NotImplementedError

    @property
    def idempotency_key(self) -> str:
        """Stable across redelivery and replay: a hash of :meth:`identity` (and the rerun tag)."""
        identity = self.identity() + (f"@rerun={self.rerun}" if self.rerun else "")
        return hashlib.sha256(identity.encode()).hexdigest()[:32]


class ObjectFinalized(_Message):
    """An object was created in the bucket (GCS OBJECT_FINALIZE / Eventarc storage event)."""

    kind: Literal["object-finalized"] = "object-finalized"
    topic: ClassVar[Topic] = Topic.RAW_OBJECTS
    dataset: str = UNKNOWN_DATASET  # a raw upload's dataset is not known until partition reads it
    bucket: str
    name: str
    generation: int
    size: int = 0
    metadata: dict[str, str] = Field(default_factory=dict)

    def identity(self) -> str:
        return f"object-finalized/{self.bucket}/{self.name}#{self.generation}"


class PartitionsReady(_Message):
    """An upload was validated and its good rows Hive-partitioned."""

    kind: Literal["partitions-ready"] = "partitions-ready"
    topic: ClassVar[Topic] = Topic.PARTITIONS_READY
    upload_id: str
    raw_object: str
    raw_generation: int
    cities: list[str]
    # city -> the entities this upload carried rows for: an upload re-forecasts just these.
    entities: dict[str, list[str]] = {}
    rows_accepted: int
    rows_rejected: int

    def identity(self) -> str:
        return f"partitions-ready/{self.dataset}/{self.raw_object}#{self.raw_generation}"


Action = Literal["train", "predict", "notify"]


class ScheduleTick(_Message):
    """Cloud Scheduler's (or ``batchcast tick``'s) call to train, predict and/or check freshness."""

    kind: Literal["schedule"] = "schedule"
    topic: ClassVar[Topic] = Topic.SCHEDULE
    actions: list[Action] = Field(min_length=1)
    # Empty: every city with data (Cloud Scheduler's ticks); a rerun may name a few.
    cities: list[Annotated[str, Field(pattern=CITY_PATTERN)]] = []

    def identity(self) -> str:
        actions, cities = ",".join(sorted(self.actions)), ",".join(sorted(self.cities))
        return f"schedule/{self.dataset}/{actions}/{instant(self.logical_time)}" + (
            f"/{cities}" if cities else ""
        )


Trigger = Literal["schedule", "upload"]


def instant(moment: datetime) -> str:
    """A time as it goes into identities: the UTC instant, whatever offset it was written with.

    Cloud Scheduler's ticks carry UTC times, ``batchcast rerun`` the profile's local ones: the same
    instant must be the same work, or a rerun would write a second version of a day's predictions
    (their file name digests the request's identity).
    """
    return moment.astimezone(UTC).isoformat()


def digest(items: list[str]) -> str:
    """A short hash of a list of names (entity ids), for identities that must tell lists apart."""
    return hashlib.sha256("\n".join(items).encode()).hexdigest()[:16]


class _Targeted(_Message):
    city_: str = Field(alias="city", pattern=CITY_PATTERN)
    shard: int = Field(ge=0)
    shards: int = Field(ge=1)
    model_version: str
    # Start and end of the forecast target period, naive wall-clock time in the city's zone.
    target_start: datetime
    target_end: datetime
    # What asked for the forecast: the schedule (the whole city, in shards) or one upload (its
    # entities, right away).
    trigger: Trigger = "schedule"

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    def _target_identity(self, entities: list[str]) -> str:
        # Two uploads of one day ask for the same target with the same model: their entities and
        # logical times tell them apart (and a corrected re-upload of one store is new work).
        return (
            f"{self.dataset}/{self.city_}/{self.target_start.isoformat()}/"
            f"{self.shard}-of-{self.shards}/{self.model_version}/"
            f"{instant(self.logical_time)}/{digest(sorted(entities))}"
        )


class PredictRequest(_Targeted):
    """Forecast some of one city's entities (a shard) for one target period with one model version."""

    kind: Literal["predict-request"] = "predict-request"
    topic: ClassVar[Topic] = Topic.PREDICT_REQUESTS
    entities: list[str] = Field(min_length=1)

    def identity(self) -> str:
        return "predict-request/" + self._target_identity(self.entities)


class PredictionsReady(_Targeted):
    """One predict request's predictions, results and metrics are written."""

    kind: Literal["predictions-ready"] = "predictions-ready"
    topic: ClassVar[Topic] = Topic.PREDICTIONS_READY
    predictions_object: str
    entities: int
    entity_ids: list[str] = []  # which ones: notify re-checks just these

    def identity(self) -> str:
        return "predictions-ready/" + self._target_identity(self.entity_ids)


class TrainRequest(_Message):
    """Train one city's model in a job (``batchcast train``), then publish its predict requests.

    train_trigger hands a training that would not fit in an event-driven function to a job; this
    is what the job is told. It travels as the job's argument, not on a topic.
    """

    kind: Literal["train-request"] = "train-request"
    city_: str = Field(alias="city", pattern=CITY_PATTERN)
    actions: list[Action] = Field(min_length=1)
    fingerprint: str  # the data the job is to train on, as train_trigger saw it
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    def identity(self) -> str:
        actions = ",".join(sorted(self.actions))
        when = instant(self.logical_time)
        return f"train-request/{self.dataset}/{self.city_}/{when}/{actions}/{self.fingerprint}"


Message = Annotated[
    ObjectFinalized | PartitionsReady | ScheduleTick | PredictRequest | PredictionsReady | TrainRequest,
    Field(discriminator="kind"),
]
_adapter: TypeAdapter[Message] = TypeAdapter(Message)


def encode(message: Message) -> tuple[bytes, dict[str, str]]:
    """Return the JSON body and the Pub/Sub attributes of ``message``."""
    body = message.model_dump(mode="json", by_alias=True)
    attributes = {
        "kind": message.kind,
        "dataset": message.dataset,
        "run_id": message.run_id,
        "idempotency_key": message.idempotency_key,
    }
    if message.city:
        attributes["city"] = message.city
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode(), attributes


def decode(data: bytes | str, attributes: dict[str, str] | None = None) -> Message:
    """Parse and validate a message body; check its attributes agree. Raise :class:`InvalidMessage`."""
    try:
        message = _adapter.validate_json(data)
    except ValidationError as error:
        raise InvalidMessage(f"message does not follow the contract: {error}") from error
    for name, value in (attributes or {}).items():
        if name in ("kind", "dataset", "city") and value != getattr(message, name):
            raise InvalidMessage(f"attribute {name}={value!r} disagrees with the body")
    return message


def with_lineage(message: Message, run_id: str, parent: Message) -> Message:
    """Return ``message`` stamped with the run that publishes it and its parent's rerun tag."""
    return message.model_copy(update={"run_id": run_id, "rerun": parent.rerun})
