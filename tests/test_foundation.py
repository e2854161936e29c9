"""The seams: bucket layout, message contracts, profiles, the embedded backend's promises."""

from __future__ import annotations

import base64
import json
from datetime import UTC, date, datetime

import pytest
from factories import predict_request

from batchcast.core import layout
from batchcast.core.config import load_profile, parse_profile
from batchcast.core.errors import ConfigError
from batchcast.core.events import PUBSUB_PUBLISHED, STORAGE_FINALIZED, message_from_event
from batchcast.core.messages import (
    InvalidMessage,
    ObjectFinalized,
    ScheduleTick,
    Topic,
    decode,
    encode,
)
from batchcast.core.schemas.frames import read_frame, write_frame
from batchcast.core.settings import Settings
from batchcast.data import storage
from batchcast.data.sharding import plan_shards
from batchcast.ports import PreconditionFailed, chunks_stream

T0 = datetime(2026, 3, 2, tzinfo=UTC)


# -- layout ----------------------------------------------------------------------------------------


def test_raw_names_round_trip_and_bad_names_are_explained():
    name = layout.raw_object(date(2026, 3, 1), "up-1", "csv")
    assert name == "raw/dt=2026-03-01/up-1.csv"
    assert layout.parse_raw(name) == layout.RawName(date(2026, 3, 1), "up-1", "csv")
    with pytest.raises(layout.LayoutError, match="does not follow"):
        layout.parse_raw("raw/file.csv")
    with pytest.raises(layout.LayoutError, match="extension"):
        layout.parse_raw("raw/dt=2026-03-01/x.parquet")
    with pytest.raises(layout.LayoutError, match="not a date"):
        layout.parse_raw("raw/dt=2026-13-40/x.csv")


@pytest.mark.parametrize(
    "bad", ["../etc", "a/b", ".hidden", "", "x" * 200, "a\x00b", "%2e%2e", "7\n", "7\r\n"]
)
def test_ids_that_would_escape_a_path_segment_are_refused(bad):
    with pytest.raises(layout.LayoutError):
        layout.results_object("retail", "store_id", bad)
    with pytest.raises(layout.LayoutError):
        layout.check_id(bad)


def test_names_with_a_trailing_newline_do_not_parse():
    """``$`` would match before a final newline; every layout pattern must refuse it."""
    names = {
        layout.parse_raw: layout.raw_object(date(2026, 3, 1), "up-1", "csv"),
        layout.parse_batch_data: layout.batch_data_object("retail", "berlin", "store_id", "17", "u1"),
        layout.parse_results: layout.results_object("retail", "store_id", "17"),
        layout.parse_outcome: layout.outcome_object("retail", "berlin"),
    }
    for parse, name in names.items():
        parse(name)  # the name itself parses
        with pytest.raises(layout.LayoutError):
            parse(name + "\n")


def test_batch_data_names_parse_back():
    name = layout.batch_data_object("retail", "berlin", "store_id", "17", "u1")
    assert name == "batch_data/dataset=retail/city=berlin/store_id=17/u1.avro"
    assert layout.parse_batch_data(name).entity_id == "17"


def test_intraday_shards_carry_the_window_so_windows_never_collide():
    morning = layout.shard_label(0, datetime(2026, 3, 2, 6), intraday=True)
    noon = layout.shard_label(0, datetime(2026, 3, 2, 12), intraday=True)
    assert morning != noon and morning == "06h-000"
    assert layout.shard_label(3, datetime(2026, 3, 2), intraday=False) == "003"


# -- messages --------------------------------------------------------------------------------------


def test_messages_round_trip_with_attributes():
    message = predict_request()
    data, attributes = encode(message)
    assert attributes["kind"] == "predict-request" and attributes["city"] == "berlin"
    assert json.loads(data)["schema_version"] == 1
    assert decode(data, attributes) == message


def test_idempotency_key_ignores_the_publisher_but_not_the_meaning():
    assert predict_request(run_id="a").idempotency_key == predict_request(run_id="b").idempotency_key
    assert predict_request().idempotency_key != predict_request(shard=1).idempotency_key


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b'{"kind": "nope"}',
        b'{"kind": "schedule", "dataset": "retail"}',
        b'{"kind":"schedule","dataset":"retail","actions":[],"logical_time":"2026-03-02T00:00:00Z"}',
        b'{"kind":"schedule","dataset":"retail","actions":["train"],"logical_time":"2026-03-02T00:00:00"}',
    ],
)
def test_bodies_that_break_the_contract_are_invalid(body):
    with pytest.raises(InvalidMessage):
        decode(body)


def test_attributes_that_disagree_with_the_body_are_invalid():
    data, attributes = encode(predict_request())
    with pytest.raises(InvalidMessage, match="disagrees"):
        decode(data, attributes | {"city": "munich"})


def test_every_topic_has_a_dead_letter_twin():
    assert Topic.PREDICT_REQUESTS.dead_letter == "predict-requests-dlq"
    assert Topic.PREDICT_REQUESTS.dead_letter_subscription == "predict-requests-dlq--hold"


# -- events ----------------------------------------------------------------------------------------


def test_eventarc_storage_event_and_gcs_notification_give_the_same_message():
    resource = {
        "bucket": "b",
        "name": "raw/dt=2026-03-01/u.csv",
        "generation": "17",
        "size": "5",
        "updated": "2026-03-01T10:00:00Z",
        "metadata": {"dataset": "retail"},
    }
    direct = message_from_event(STORAGE_FINALIZED, resource)
    wrapped = message_from_event(
        PUBSUB_PUBLISHED,
        {
            "message": {
                "data": base64.b64encode(json.dumps(resource).encode()).decode(),
                "attributes": {
                    "eventType": "OBJECT_FINALIZE",
                    "bucketId": "b",
                    "objectId": resource["name"],
                    "objectGeneration": "17",
                },
            }
        },
    )
    assert isinstance(direct, ObjectFinalized) and direct == wrapped
    assert direct.generation == 17 and direct.metadata == {"dataset": "retail"}


def test_pipeline_message_in_message_published():
    tick = ScheduleTick(dataset="retail", actions=["notify"], logical_time=T0)
    data, attributes = encode(tick)
    event = {"message": {"data": base64.b64encode(data).decode(), "attributes": attributes}}
    assert message_from_event(PUBSUB_PUBLISHED, event) == tick


@pytest.mark.parametrize(
    ("event_type", "data"),
    [
        ("google.cloud.audit.log.v1.written", {}),
        (STORAGE_FINALIZED, {"name": "x"}),
        (PUBSUB_PUBLISHED, {"message": {"data": "!!!"}}),
        (PUBSUB_PUBLISHED, {}),
        (PUBSUB_PUBLISHED, {"message": {"data": "", "attributes": {"eventType": "OBJECT_DELETE"}}}),
    ],
)
def test_events_we_cannot_handle_are_invalid(event_type, data):
    with pytest.raises(InvalidMessage):
        message_from_event(event_type, data)


# -- profiles --------------------------------------------------------------------------------------


def test_builtin_profiles_load_and_windows_follow_the_brief():
    retail, bikes = load_profile("retail"), load_profile("bikeshare")
    midnight = datetime(2026, 7, 1, tzinfo=retail.zone())
    assert retail.target_window(midnight)[0] == datetime(2026, 7, 1)
    eight = datetime(2026, 7, 1, 8, tzinfo=bikes.zone())
    assert bikes.target_window(eight) == (datetime(2026, 7, 1, 12), datetime(2026, 7, 1, 18))
    late = datetime(2026, 7, 1, 19, tzinfo=bikes.zone())
    assert bikes.target_window(late)[0] == datetime(2026, 7, 2, 6)  # nothing in the closed hours
    assert bikes.expected_window(datetime(2026, 7, 1, 5, tzinfo=bikes.zone()))[0] == datetime(2026, 6, 30, 18)


def test_profile_mistakes_are_named():
    with pytest.raises(ConfigError, match="not valid TOML"):
        parse_profile("name = ")
    bad_zone = (
        'name="x"\nschema_name="s"\nentity_key="e"\ntime_column="t"\ntarget="y"\nfrequency="daily"\n'
        'timezone="Mars/Base"\n'
    )
    with pytest.raises(ConfigError, match="unknown time zone"):
        parse_profile(bad_zone)
    with pytest.raises(ConfigError, match="unknown profile"):
        load_profile("nope")


def test_short_lags_for_a_six_hour_horizon_are_refused():
    from pathlib import Path

    from batchcast.core import config

    text = (Path(config.__file__).parent / "profiles" / "bikeshare.toml").read_text()
    with pytest.raises(ConfigError, match="horizon"):
        parse_profile(text.replace("lags = [6, 12", "lags = [1, 12"))


def test_settings_come_from_the_environment():
    settings = Settings.from_env(
        {
            "BATCHCAST_ROOT": "/tmp/x",
            "BATCHCAST_NOW": "2026-03-02T00:00:00Z",
            "BATCHCAST_API_TOKENS": '{"tokens": []}',
        }
    )
    assert str(settings.root) == "/tmp/x" and settings.now == T0
    assert settings.api_tokens == '{"tokens": []}'
    with pytest.raises(ConfigError):
        Settings.from_env({"BATCHCAST_BACKEND": "azure"})


# -- embedded blob store ---------------------------------------------------------------------------


def test_generations_and_preconditions(deployment):
    blobs = deployment.ports.blobs
    first = blobs.write("a/b.txt", b"1", if_generation_match=0)
    with pytest.raises(PreconditionFailed):
        blobs.write("a/b.txt", b"2", if_generation_match=0)
    second = blobs.write("a/b.txt", b"2", if_generation_match=first)
    assert second > first and blobs.read("a/b.txt") == b"2"
    with pytest.raises(PreconditionFailed):
        blobs.write("a/b.txt", b"3", if_generation_match=first)
    assert [i.name for i in blobs.list("a/")] == ["a/b.txt"]
    assert blobs.stat("a/missing") is None


def test_write_once_accepts_the_same_bytes_and_refuses_others(deployment):
    blobs = deployment.ports.blobs
    assert storage.write_once(blobs, "x.json", b"{}") is True
    assert storage.write_once(blobs, "x.json", b"{}") is False
    with pytest.raises(storage.ConflictingWrite):
        storage.write_once(blobs, "x.json", b"[]")


def test_streamed_writes_and_copies_keep_preconditions_and_content(deployment):
    blobs = deployment.ports.blobs
    seen = []
    blobs.on_finalize("rejected/", seen.append)
    data = b"x" * (3 << 20)
    first = blobs.write_from("a/x.csv", chunks_stream([data[:5], data[5:]]), if_generation_match=0)
    assert blobs.read("a/x.csv") == data and blobs.stat("a/x.csv").generation == first
    with pytest.raises(PreconditionFailed):
        blobs.write_from("a/x.csv", chunks_stream([b"other"]), if_generation_match=0)
    assert blobs.read("a/x.csv") == data and list(blobs.list("a/")) == [blobs.stat("a/x.csv")]  # no leftovers
    blobs.write("a/y.csv", b"y", metadata={"dataset": "retail"}, content_type="text/csv")
    blobs.copy("a/y.csv", "rejected/y.csv", if_generation_match=0)
    assert blobs.read("rejected/y.csv") == b"y" and blobs.stat("rejected/y.csv").metadata == {
        "dataset": "retail"
    }
    assert [info.name for info in seen] == ["rejected/y.csv"]  # a copy is a write like any other
    with pytest.raises(PreconditionFailed):
        blobs.copy("a/x.csv", "rejected/y.csv", if_generation_match=0)
    assert storage.copy_once(blobs, "a/y.csv", "rejected/y.csv") is False
    with pytest.raises(storage.ConflictingWrite):
        storage.copy_once(blobs, "a/x.csv", "rejected/y.csv")
    assert storage.write_once_from(blobs, "b/z.csv", lambda: chunks_stream([b"z"])) is True
    assert storage.write_once_from(blobs, "b/z.csv", lambda: chunks_stream([b"z"])) is False
    with pytest.raises(storage.ConflictingWrite):
        storage.write_once_from(blobs, "b/z.csv", lambda: chunks_stream([b"Z"]))


def test_update_json_retries_when_someone_wrote_in_between(deployment):
    blobs = deployment.ports.blobs
    storage.update_json(blobs, "c.json", lambda cur: {"n": 0})
    interfered = []

    def bump(current):
        if not interfered:  # another writer sneaks in once, after our read
            interfered.append(True)
            storage.update_json(blobs, "c.json", lambda cur: {"n": cur["n"] + 10})
        return {"n": current["n"] + 1}

    assert storage.update_json(blobs, "c.json", bump) == {"n": 11}


def test_object_names_cannot_escape_the_root(deployment):
    with pytest.raises(ValueError):
        deployment.ports.blobs.write("../outside", b"x")


# -- embedded bus ----------------------------------------------------------------------------------


def _tick() -> ScheduleTick:
    return ScheduleTick(dataset="retail", actions=["notify"], logical_time=T0)


def test_bus_retries_with_backoff_then_dead_letters(deployment):
    bus = deployment.bus
    attempts = []

    def always_fails(message):
        attempts.append(message)
        raise RuntimeError("boom")

    bus.subscribe("poison", "sub--poison", always_fails)
    bus.publish("poison", _tick())
    bus.drain()
    assert len(attempts) == bus.max_attempts == 5
    [dead] = bus.dead_letters("poison")
    assert dead["attempts"] == 5 and "boom" in dead["error"]


def test_bus_redelivers_until_the_handler_succeeds(deployment):
    bus = deployment.bus
    calls = []

    def flaky(message):
        calls.append(message)
        if len(calls) < 3:
            raise RuntimeError("transient")

    bus.subscribe("flaky", "sub--flaky", flaky)
    bus.publish("flaky", _tick())
    bus.drain()
    assert len(calls) == 3 and bus.dead_letters("flaky") == []
    assert [entry["topic"] for entry in bus.log()][-1] == "flaky"


def test_plan_shards_balances_rows_and_isolates_the_giant():
    weights = {str(i): 100 for i in range(20)} | {"giant": 1000}
    shards = plan_shards(weights, target_rows=1000, max_shards=8)
    loads = [sum(weights[e] for e in shard) for shard in shards]
    assert len(shards) == 3 and ["giant"] in shards
    assert max(loads) - min(loads) <= 100
    assert sorted(e for shard in shards for e in shard) == sorted(weights)
    assert plan_shards(weights, 1000, 8) == plan_shards(dict(reversed(weights.items())), 1000, 8)
    assert plan_shards({}, 10, 2) == []


# -- Avro schemas ----------------------------------------------------------------------------------


def test_avro_files_declare_logical_types_for_external_readers():
    import io

    import fastavro
    import pandas as pd

    frame = pd.DataFrame(
        {"store_id": ["1"], "city": ["berlin"], "date": [pd.Timestamp("2026-03-01")], "sales": [10.0]}
    )
    data = write_frame("retail_observation", frame)
    header = {f["name"]: f["type"] for f in fastavro.reader(io.BytesIO(data)).writer_schema["fields"]}
    assert header["date"] == {"type": "int", "logicalType": "date"}  # BigQuery reads a DATE, not an INT
    back = read_frame(data, "retail_observation")
    assert back.loc[0, "date"] == pd.Timestamp("2026-03-01") and pd.isna(back.loc[0, "temp"])


def test_a_file_of_an_older_compatible_schema_version_reads_with_defaults():
    import io

    import fastavro

    from batchcast.core import schemas

    older = schemas.schema("retail_observation") | {
        "fields": [
            f for f in schemas.schema("retail_observation")["fields"] if f["name"] not in ("temp", "promo")
        ]
    }
    buffer = io.BytesIO()
    fastavro.writer(
        buffer,
        fastavro.parse_schema(older),
        [
            {
                "store_id": "1",
                "city": "berlin",
                "date": 20513,
                "sales": 5.0,
                "open": True,
                "precipitation": None,
            }
        ],
    )
    frame = read_frame(buffer.getvalue(), "retail_observation")
    assert frame.loc[0, "sales"] == 5.0 and frame["temp"].isna().all() and frame["promo"].isna().all()


def test_a_file_of_an_incompatible_schema_is_refused():
    import io

    import fastavro

    from batchcast.core import schemas

    other = {"type": "record", "name": "X", "fields": [{"name": "store_id", "type": "int"}]}
    buffer = io.BytesIO()
    fastavro.writer(buffer, fastavro.parse_schema(other), [{"store_id": 1}])
    with pytest.raises(schemas.SchemaMismatch):
        read_frame(buffer.getvalue(), "retail_observation")
