"""The partition step and upload validation, through real embedded ports.

Every kind of bad input has its own test that checks the precise reason and that the good rows of
the same file still reach ``batch_data/``.
"""

from __future__ import annotations

import io
import json
import os
import random
import subprocess
import sys
from datetime import UTC, date, datetime
from importlib import resources
from pathlib import Path

import fastavro
import pandas as pd
import pytest

from batchcast.backends.embedded import finalize_event
from batchcast.core import config, layout, schemas
from batchcast.core.config import Profile
from batchcast.core.messages import InvalidMessage, ObjectFinalized, PartitionsReady, ScheduleTick
from batchcast.core.obs import run_logger
from batchcast.core.schemas.frames import read_frame, records_to_frame
from batchcast.core.settings import Settings
from batchcast.data.validation import validate_upload
from batchcast.entrypoints.runtime import Runtime, embedded
from batchcast.ports import FixedClock, TransientError
from batchcast.steps import RunContext, StepResult, partition
from batchcast.tools import synth

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)  # 13:00 in Berlin, 04:00 in Vancouver
DT = NOW.date()
RUN = RunContext("test-run", "partition", run_logger("partition", "test-run", None, None))
NATIVE = "store_id,city,date,sales,open,promo,temp,precipitation\n"


@pytest.fixture(autouse=True)
def _builtin_profiles(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BATCHCAST_PROFILES", raising=False)
    monkeypatch.delenv("BATCHCAST_PROFILE_DIR", raising=False)


@pytest.fixture
def rt(tmp_path: Path) -> Runtime:
    return embedded(tmp_path / "bucket", clock=FixedClock(NOW))


# -- helpers -------------------------------------------------------------------------------------


def upload(
    rt: Runtime, data: bytes | str, *, name: str | None = None, metadata: dict[str, str] | None = None
) -> ObjectFinalized:
    """Put ``data`` under raw/ and return the finalize message (logical time pinned to NOW)."""
    name = name or layout.raw_object(DT, "u1", "csv")
    payload = data.encode() if isinstance(data, str) else data
    rt.ports.blobs.write(name, payload, if_generation_match=0, metadata=metadata)
    event = finalize_event(rt.ports.blobs.bucket, rt.ports.blobs.stat(name))
    return event.model_copy(update={"logical_time": NOW})


def partition_csv(rt: Runtime, text: str, **kwargs) -> StepResult:
    return partition.run(rt.ports, upload(rt, text, **kwargs), RUN)


def partitions(rt: Runtime, dataset: str = "retail") -> dict[str, pd.DataFrame]:
    """Every batch_data file of ``dataset``, read back."""
    schema = schemas.observation(config.load_profile(dataset))
    return {
        info.name: read_frame(rt.ports.blobs.read(info.name), schema)
        for info in rt.ports.blobs.list(layout.batch_data_prefix(dataset))
    }


def accepted(rt: Runtime, dataset: str = "retail") -> pd.DataFrame:
    frames = list(partitions(rt, dataset).values())
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def report(rt: Runtime, upload_id: str = "u1") -> dict:
    return json.loads(rt.ports.blobs.read(layout.rejected_report(DT, upload_id)))


def reasons(rt: Runtime, upload_id: str = "u1") -> dict[int, list[str]]:
    return {entry["row"]: entry["reasons"] for entry in report(rt, upload_id)["rows"]}


def rejected_rows(rt: Runtime, upload_id: str = "u1") -> pd.DataFrame:
    data = rt.ports.blobs.read(layout.rejected_object(DT, upload_id, "csv"))
    return pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)


def store_ids(rt: Runtime) -> list[str]:
    return sorted(accepted(rt)["store_id"].unique())


def validate(text: str | bytes, ext: str = "csv", **kwargs):
    data = text.encode() if isinstance(text, str) else text
    return validate_upload(data, ext, logical_time=NOW, **kwargs)


def retail_with(replace: str, by: str, name: str = "retail") -> Profile:
    """The built-in retail profile with one piece of its TOML text changed."""
    text = (resources.files("batchcast.core") / "profiles" / "retail.toml").read_text()
    assert replace in text
    return config.parse_profile(text.replace(replace, by).replace('name = "retail"', f'name = "{name}"'))


def avro_bytes(schema: dict, records: list[dict]) -> bytes:
    buffer = io.BytesIO()
    fastavro.writer(buffer, fastavro.parse_schema(schema), records)
    return buffer.getvalue()


# -- the happy path ------------------------------------------------------------------------------


def test_good_rows_become_one_sorted_avro_file_per_store_with_metadata(rt: Runtime) -> None:
    text = NATIVE + (
        "1,berlin,2026-02-28,120.5,1,0,3.5,0.2\n"
        "2,munich,2026-02-27,80,0,1,,\n"
        "1,berlin,2026-02-27,100,true,false,2.5,\n"
    )
    message = upload(rt, text)
    result = partition.run(rt.ports, message, RUN)

    assert result.status == "succeeded"
    assert result.counts == {"rows_read": 3, "rows_accepted": 3, "rows_rejected": 0, "partitions": 2}
    [ready] = result.messages
    assert isinstance(ready, PartitionsReady)
    assert (ready.dataset, ready.upload_id, ready.raw_object) == ("retail", "u1", message.name)
    assert (ready.cities, ready.rows_accepted, ready.rows_rejected) == (["berlin", "munich"], 3, 0)
    assert ready.logical_time == NOW and ready.raw_generation == message.generation

    name = layout.batch_data_object("retail", "berlin", "store_id", "1", "u1")
    records, metadata = schemas.read_records(rt.ports.blobs.read(name), "retail_observation")
    assert metadata == {
        "batchcast.upload_id": "u1",
        "batchcast.ingested_at": NOW.isoformat(),
        "batchcast.raw_object": message.name,
        "batchcast.schema_version": "2",
    }
    frame = records_to_frame(records, "retail_observation")
    assert frame["date"].tolist() == [pd.Timestamp("2026-02-27"), pd.Timestamp("2026-02-28")]  # sorted
    assert frame["sales"].tolist() == [100.0, 120.5]
    assert frame["open"].tolist() == [True, True] and frame["promo"].tolist() == [False, False]
    assert frame["temp"].tolist() == [2.5, 3.5] and pd.isna(frame["precipitation"][0])
    info = rt.ports.blobs.stat(name)
    assert info.metadata == {"rows": "2", "first": "2026-02-27T00:00:00", "last": "2026-02-28T00:00:00"}
    munich = partitions(rt)[layout.batch_data_object("retail", "munich", "store_id", "2", "u1")]
    assert munich["open"].tolist() == [False] and pd.isna(munich["temp"][0])
    assert list(rt.ports.blobs.list(layout.REJECTED)) == []
    assert rt.ports.blobs.read(message.name) == text.encode()  # the raw object is untouched


def test_redelivery_and_replay_write_byte_identical_outputs(rt: Runtime, tmp_path: Path) -> None:
    text = (
        NATIVE + "1,berlin,2026-02-27,100,1,0,,\n2,paris,2026-02-27,abc,1,0,,\n3,munich,2026-02-27,5,,,1,\n"
    )

    def outputs(deployment: Runtime) -> dict[str, bytes]:
        names = [i.name for p in (layout.BATCH_DATA, layout.REJECTED) for i in deployment.ports.blobs.list(p)]
        return {n: deployment.ports.blobs.read(n) for n in names}

    message = upload(rt, text)
    first = partition.run(rt.ports, message, RUN)
    written = outputs(rt)
    again = partition.run(rt.ports, message, RUN)  # redelivery: create-only writes find equal bytes
    assert outputs(rt) == written and len(written) == 4  # two stores, the bad rows and their report
    assert again.messages == first.messages and again.counts == first.counts and again.status == "partial"

    restarted = embedded(rt.settings.root, clock=FixedClock(NOW))  # replay in a new process, same bucket
    assert partition.run(restarted.ports, message, RUN).messages == first.messages
    assert outputs(restarted) == written

    elsewhere = embedded(tmp_path / "elsewhere", clock=FixedClock(NOW))  # the same upload in another bucket
    partition.run(elsewhere.ports, upload(elsewhere, text), RUN)
    assert outputs(elsewhere) == written


@pytest.mark.slow
def test_outputs_do_not_depend_on_the_process_hash_seed(tmp_path: Path) -> None:
    script = (
        "import sys, hashlib; from datetime import datetime, UTC; import pandas as pd\n"
        "from batchcast.core.schemas.frames import write_frame\n"
        "from batchcast.data.validation import validate_upload\n"
        "u = validate_upload(sys.stdin.buffer.read(), 'csv', logical_time=datetime(2026, 3, 2, tzinfo=UTC))\n"
        "print(hashlib.sha256(write_frame('retail_observation', u.good)).hexdigest())\n"
    )
    data = (NATIVE + "1,berlin,2026-02-27,100,1,0,2.5,\n").encode()
    digests = {
        subprocess.run(
            [sys.executable, "-c", script],
            input=data,
            capture_output=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout
        for seed in ("0", "1", "2", "4")
    }
    assert len(digests) == 1


def test_every_synthetic_format_passes_validation() -> None:
    """What ``batchcast generate`` writes must flow whole (before the logical time)."""
    for name in ("retail", "bikeshare"):
        profile = config.load_profile(name)
        for fmt in synth.formats_for(profile):
            frame = synth.generate(profile, entities=4, days=10, seed=3, fmt=fmt, end=date(2026, 2, 28))
            checked = validate(frame.to_csv(index=False))
            assert (checked.profile.name, checked.mapping) == (name, fmt)
            assert checked.file_errors == [] and checked.row_errors == [], (name, fmt)
            assert checked.rows_accepted == len(frame) > 0


# -- which objects and messages ------------------------------------------------------------------


def test_objects_outside_raw_are_skipped_without_writes(rt: Runtime) -> None:
    rt.ports.blobs.write("results/dataset=retail/store_id=1.json", b"{}")
    event = finalize_event(
        rt.ports.blobs.bucket, rt.ports.blobs.stat("results/dataset=retail/store_id=1.json")
    )
    result = partition.run(rt.ports, event, RUN)
    assert result.status == "skipped" and result.messages == []
    assert list(rt.ports.blobs.list(layout.BATCH_DATA)) == list(rt.ports.blobs.list(layout.REJECTED)) == []


def test_other_messages_are_invalid(rt: Runtime) -> None:
    tick = ScheduleTick(dataset="retail", logical_time=NOW, actions=["train"])
    with pytest.raises(InvalidMessage, match="object-finalized"):
        partition.run(rt.ports, tick, RUN)


def test_a_misnamed_raw_object_is_copied_to_rejected_with_the_reason(rt: Runtime) -> None:
    data = b"not, really\n"
    result = partition.run(rt.ports, upload(rt, data, name="raw/dt=2026-03-02/my upload!.csv"), RUN)
    assert result.status == "rejected" and result.messages == []
    [copy, report_name] = [i.name for i in rt.ports.blobs.list(layout.REJECTED)]
    assert copy.startswith("rejected/dt=2026-03-02/my_upload-") and copy.endswith(".csv")
    assert report_name == copy.removesuffix(".csv") + ".error.json"
    assert rt.ports.blobs.read(copy) == data
    written = json.loads(rt.ports.blobs.read(report_name))
    assert written["file_errors"] == [
        "upload id 'my upload!' is not a valid id (letters, digits, '_', '.', '-')"
    ]
    assert written["raw_object"] == "raw/dt=2026-03-02/my upload!.csv"


def test_an_unsupported_extension_under_raw_is_quarantined(rt: Runtime) -> None:
    result = partition.run(rt.ports, upload(rt, b"PAR1", name="raw/dt=2026-03-02/u1.parquet"), RUN)
    assert result.status == "rejected"
    assert result.errors == {"raw/dt=2026-03-02/u1.parquet": "extension .parquet is not one of csv, avro"}
    names = sorted(i.name for i in rt.ports.blobs.list(layout.REJECTED))
    assert [n.rsplit(".", 1)[-1] for n in names] == ["json", "parquet"]


def test_transient_storage_errors_propagate_for_a_retry(rt: Runtime) -> None:
    message = upload(rt, NATIVE + "1,berlin,2026-02-27,100,1,0,,\n")

    store = rt.ports.blobs

    class Flaky:
        def __getattr__(self, name: str):
            return getattr(store, name)

        def write(self, *args, **kwargs):
            raise TransientError("503 from the bucket")

    rt.ports.blobs = Flaky()
    with pytest.raises(TransientError):
        partition.run(rt.ports, message, RUN)


# -- malformed CSV -------------------------------------------------------------------------------


def test_rows_with_too_many_or_too_few_fields_are_rejected_and_the_rest_flows(rt: Runtime) -> None:
    text = (
        "store_id,city,date,sales\n1,berlin,2026-02-27,100\n2,berlin,2026-02-27,5,oops\n3,berlin\n"
        "4,paris,2026-02-27,7\n"
    )
    result = partition_csv(rt, text)
    assert result.status == "partial"
    assert result.counts == {"rows_read": 4, "rows_accepted": 2, "rows_rejected": 2, "partitions": 2}
    assert reasons(rt) == {
        2: ["malformed row: 5 fields where the header has 4 (line 3); surplus: 'oops'"],
        3: ["malformed row: 2 fields where the header has 4 (line 4)"],
    }
    assert store_ids(rt) == ["1", "4"]
    bad = rejected_rows(rt)
    assert list(bad.columns) == ["row", "store_id", "city", "date", "sales"]
    assert bad.values.tolist() == [["2", "2", "berlin", "2026-02-27", "5"], ["3", "3", "berlin", "", ""]]


def test_an_unterminated_quote_costs_only_its_line(rt: Runtime) -> None:
    text = 'store_id,city,date,sales\n1,berlin,2026-02-27,"100\n2,berlin,2026-02-27,5\n3,paris,2026-02-27,7\n'
    result = partition_csv(rt, text)
    assert result.status == "partial"
    assert reasons(rt) == {
        1: [
            "malformed row: unterminated quote on line 2 (the quoted field never closes); a quote opened on "
            "line 2 runs to line 4, so only line 2 is rejected and reading resumes on line 3"
        ]
    }
    assert store_ids(rt) == ["2", "3"]


def test_quoted_fields_with_commas_and_newlines_are_data() -> None:
    text = 'store_id,city,date,sales\n"1",berlin,2026-02-27,"100"\n"a ""b"" c",berlin,"2026-02-27","5"\n'
    checked = validate(text)
    assert checked.row_errors == [
        {
            "row": 2,
            "reasons": [
                "invalid id: store_id 'a \"b\" c' is not a valid id (letters, digits, '_', '.', '-')"
            ],
        }
    ]
    assert checked.good["store_id"].tolist() == ["1"]


def test_blank_lines_and_crlf_line_ends_are_fine() -> None:
    checked = validate("store_id,city,date,sales\r\n\r\n1,berlin,2026-02-27,100\r\n2,berlin,2026-02-27,5\r\n")
    assert checked.rows_read == checked.rows_accepted == 2 and checked.row_errors == []


# -- whole-file rejections -----------------------------------------------------------------------


def test_missing_columns_reject_the_file_naming_the_closest_mapping(rt: Runtime) -> None:
    text = "Store,Date,Revenue\n1,2026-02-27,100\n"
    result = partition_csv(rt, text)
    why = (
        "missing columns: Sales (closest fit: dataset retail, mapping rossmann; columns found: Store, Date, "
        "Revenue)"
    )
    assert result.status == "rejected" and result.messages == []
    assert result.errors == {layout.raw_object(DT, "u1", "csv"): why}
    assert rt.ports.blobs.read(layout.rejected_object(DT, "u1", "csv")) == text.encode()  # the raw copy
    written = report(rt)
    assert written["file_errors"] == [why] and written["status"] == "rejected"
    assert written["counts"] == {"read": 1, "accepted": 0, "rejected": 1}
    assert list(rt.ports.blobs.list(layout.BATCH_DATA)) == []


def test_extra_columns_are_ignored_with_a_warning(rt: Runtime) -> None:
    text = "Store,DayOfWeek,Date,Sales,Customers,Open,Promo\n1,5,2026-02-27,100,10,1,0\n"
    result = partition_csv(rt, text)
    warning = "ignored columns that mapping rossmann does not map: 'DayOfWeek', 'Customers'"
    assert result.status == "succeeded" and warning in result.notes
    assert accepted(rt)["city"].tolist() == ["berlin"]  # rossmann's constant
    assert list(rt.ports.blobs.list(layout.REJECTED)) == []


def test_extra_columns_reject_the_file_when_the_mapping_says_so() -> None:
    strict = retail_with(
        'optional = ["open", "promo", "temp", "precipitation"]',
        'optional = ["open", "promo", "temp", "precipitation"]\nextra_columns = "reject"',
    )
    checked = validate("store_id,city,date,sales,note\n1,berlin,2026-02-27,100,x\n", profiles=[strict])
    assert checked.file_errors == [
        "unexpected columns 'note': mapping native of dataset retail rejects columns it does not map "
        "(it maps store_id, city, date, sales, open, promo, temp, precipitation)"
    ]
    assert checked.good.empty and checked.rows_rejected == 1


def test_an_empty_file_is_rejected(rt: Runtime) -> None:
    result = partition_csv(rt, "")
    assert result.status == "rejected"
    assert report(rt)["file_errors"] == ["empty file (0 bytes)"]
    assert rt.ports.blobs.read(layout.rejected_object(DT, "u1", "csv")) == b""


def test_a_header_only_file_is_rejected(rt: Runtime) -> None:
    result = partition_csv(rt, "store_id,city,date,sales\n")
    assert result.status == "rejected"
    assert report(rt)["file_errors"] == ["no data rows: the file has a header only"]
    assert report(rt)["dataset"] == "retail" and report(rt)["mapping"] == "native"


def test_text_that_is_not_utf8_is_rejected_naming_the_byte(rt: Runtime) -> None:
    text = "store_id,city,date,sales\nM\u00fcnchen-1,munich,2026-02-27,100\n"
    result = partition_csv(rt, text.encode("latin-1"))
    assert result.status == "rejected"
    assert report(rt)["file_errors"] == ["not UTF-8 text (byte 0xfc at offset 26)"]


def test_a_utf8_bom_is_fine() -> None:
    checked = validate(b"\xef\xbb\xbfstore_id,city,date,sales\n1,berlin,2026-02-27,100\n")
    assert checked.rows_accepted == 1 and checked.file_errors == []
    assert validate(b"\xef\xbb\xbfstore_id,city\n\xff").file_errors == [
        "not UTF-8 text (byte 0xff at offset 17)"
    ]


def test_duplicate_header_names_reject_the_file() -> None:
    checked = validate("store_id,city,date,sales,sales\n1,berlin,2026-02-27,1,2\n")
    assert checked.file_errors == ["duplicate column names in the header: 'sales'"]


def test_a_header_that_fits_two_profiles_equally_is_ambiguous() -> None:
    twin = retail_with('name = "retail"', 'name = "retail"', name="shops")
    checked = validate(
        NATIVE + "1,berlin,2026-02-27,100,1,0,,\n", profiles=[config.load_profile("retail"), twin]
    )
    assert checked.file_errors == [
        "ambiguous header: it fits dataset retail (mapping native) and dataset shops (mapping native) "
        "equally; set the object metadata 'dataset' to choose"
    ]
    pinned = validate(
        NATIVE + "1,berlin,2026-02-27,100,1,0,,\n",
        dataset="shops",
        profiles=[config.load_profile("retail"), twin],
    )
    assert pinned.profile.name == "shops" and pinned.rows_accepted == 1


def test_object_metadata_names_the_dataset_and_mapping(rt: Runtime) -> None:
    result = partition_csv(rt, "x\n1\n", metadata={"dataset": "weather"})
    assert result.errors[layout.raw_object(DT, "u1", "csv")] == (
        "unknown dataset 'weather' (object metadata 'dataset'); known: bikeshare, retail"
    )
    assert validate("x\n1\n", mapping="kaggle").file_errors == [
        "unknown mapping 'kaggle' (object metadata 'mapping'); known: citibike, counts, divvy_legacy, "
        "native, plans, rossmann"
    ]
    named = validate("Store,Date,Sales\n1,2026-02-27,5\n", dataset="retail", mapping="native")
    assert named.file_errors == [
        "missing columns: store_id, city, date, sales (closest fit: dataset retail, mapping native; columns "
        "found: Store, Date, Sales)"
    ]
    assert validate("Store,Date,Sales\n1,2026-02-27,5\n", mapping="rossmann").rows_accepted == 1


# -- Avro uploads --------------------------------------------------------------------------------

ROSSMANN_AVRO = {
    "type": "record",
    "name": "Sale",
    "fields": [
        {"name": "Store", "type": "int"},
        {"name": "Date", "type": {"type": "int", "logicalType": "date"}},
        {"name": "Sales", "type": ["null", "double"]},
        {"name": "Open", "type": ["null", "boolean"]},
    ],
}


def test_an_avro_upload_flows_and_its_bad_rows_are_written_as_csv(rt: Runtime) -> None:
    data = avro_bytes(
        ROSSMANN_AVRO,
        [
            {"Store": 7, "Date": date(2026, 2, 27), "Sales": 10.5, "Open": True},
            {"Store": 7, "Date": date(2026, 2, 28), "Sales": None, "Open": None},
            {"Store": 8, "Date": date(2026, 2, 27), "Sales": -1.0, "Open": False},
        ],
    )
    result = partition.run(rt.ports, upload(rt, data, name=layout.raw_object(DT, "u1", "avro")), RUN)
    assert result.status == "partial"
    assert reasons(rt) == {
        2: ["missing value: Sales is empty"],
        3: ["negative target: Sales = '-1.0' is below zero (dataset retail does not allow a negative sales)"],
    }
    good = accepted(rt)
    assert good[["store_id", "city", "sales"]].values.tolist() == [["7", "berlin", 10.5]]
    assert good["date"].tolist() == [pd.Timestamp("2026-02-27")] and good["open"].tolist() == [True]
    assert rejected_rows(rt).values.tolist() == [
        ["2", "7", "2026-02-28", "", ""],
        ["3", "8", "2026-02-27", "-1.0", "0"],
    ]


def test_an_avro_upload_in_another_schema_is_rejected(rt: Runtime) -> None:
    schema = {"type": "record", "name": "Reading", "fields": [{"name": "sensor", "type": "string"}]}
    data = avro_bytes(schema, [{"sensor": "a"}])
    result = partition.run(rt.ports, upload(rt, data, name=layout.raw_object(DT, "u1", "avro")), RUN)
    assert result.status == "rejected"
    assert report(rt)["file_errors"] == [
        "missing columns: Store, Date, Sales (closest fit: dataset retail, mapping rossmann; "
        "columns found: sensor)"
    ]
    assert rt.ports.blobs.read(layout.rejected_object(DT, "u1", "avro")) == data


def test_a_corrupt_avro_file_is_rejected() -> None:
    data = avro_bytes(
        ROSSMANN_AVRO, [{"Store": 1, "Date": date(2026, 2, 27), "Sales": 1.0, "Open": True}] * 50
    )
    for broken in (b"Obj\x01garbage", data[: len(data) // 2], b"just text"):
        [why] = validate(broken, "avro").file_errors
        assert why.startswith("not a readable Avro file (")


# -- row-level value checks ----------------------------------------------------------------------


def test_unparseable_dates_are_rejected(rt: Runtime) -> None:
    text = (
        NATIVE
        + "1,berlin,2026-02-30,1,,,,\n2,berlin,yesterday,1,,,,\n3,berlin,2026-02-27T10:00,1,,,,\n"
        + "4,berlin,2026-02-27,1,,,,\n"
    )
    partition_csv(rt, text)
    iso = "is not ISO 8601 (2024-05-01, 2024-05-01T08:15:00); for dates in another form set "
    fix = 'mappings.native.date_format (a strftime format, e.g. "%d/%m/%Y")'
    assert reasons(rt) == {
        1: [f"bad date: date = '2026-02-30' {iso}{fix}"],
        2: [f"bad date: date = 'yesterday' {iso}{fix}"],
        3: [
            "bad date: date = '2026-02-27T10:00' is not the start of a day (to add up rows into periods, "
            "set mappings.native.aggregate)"
        ],
    }
    assert store_ids(rt) == ["4"]
    assert report(rt)["reasons"] == {"bad date": 3}


def test_dates_follow_the_mappings_date_format() -> None:
    profile = retail_with(
        'constants = { city = "berlin" }', 'constants = { city = "berlin" }\ndate_format = "%d.%m.%Y"'
    )
    checked = validate("Store,Date,Sales\n1,27.02.2026,5\n2,2026-02-27,5\n", profiles=[profile])
    assert checked.row_errors == [
        {
            "row": 2,
            "reasons": [
                "bad date: Date = '2026-02-27' does not match mappings.rossmann.date_format = '%d.%m.%Y'"
            ],
        }
    ]
    assert checked.good["date"].tolist() == [pd.Timestamp("2026-02-27")]


def test_non_numeric_sales_are_rejected(rt: Runtime) -> None:
    partition_csv(
        rt,
        NATIVE
        + "1,berlin,2026-02-27,abc,,,,\n2,berlin,2026-02-27,1e3,,,warm,\n3,berlin,2026-02-27,12.5,,,,\n",
    )
    assert reasons(rt) == {1: ["not a number: sales = 'abc'"], 2: ["not a number: temp = 'warm'"]}
    assert accepted(rt)["sales"].tolist() == [12.5]


def test_negative_sales_are_rejected_where_the_profile_forbids_them(rt: Runtime) -> None:
    partition_csv(rt, NATIVE + "1,berlin,2026-02-27,-5,,,,\n2,berlin,2026-02-27,0,,,-3.5,\n")
    assert reasons(rt) == {
        1: ["negative target: sales = '-5' is below zero (dataset retail does not allow a negative sales)"]
    }
    assert accepted(rt)["temp"].tolist() == [-3.5]  # only the target has the rule


def test_booleans_follow_the_mappings_true_and_false_values(rt: Runtime) -> None:
    partition_csv(rt, NATIVE + "1,berlin,2026-02-27,5,maybe,,,\n2,berlin,2026-02-27,5,yes,n,,\n")
    expected = "expected one of 1, true, True, TRUE, yes, y or 0, false, False, FALSE, no, n"
    assert reasons(rt) == {1: [f"not a boolean: open = 'maybe' ({expected})"]}
    assert accepted(rt)[["open", "promo"]].values.tolist() == [[True, False]]


def test_exact_duplicates_keep_the_first_and_conflicting_ones_are_all_rejected(rt: Runtime) -> None:
    text = NATIVE + (
        "1,berlin,2026-02-27,100,,,,\n"
        "2,berlin,2026-02-27,50,,,,\n"
        "1,berlin,2026-02-27,100.0,,,,\n"  # the same values as row 1
        "2,berlin,2026-02-27,60,,,,\n"  # the same store-day as row 2 with another value
        "3,berlin,2026-02-27,oops,,,,\n"
        "3,berlin,2026-02-27,7,,,,\n"  # row 5 is bad on its own, so this one is no duplicate
    )
    result = partition_csv(rt, text)
    key2 = "city = 'berlin', store_id = '2', date = '2026-02-27'"
    assert reasons(rt) == {
        2: [f"conflicting duplicate: rows 2, 4 share {key2} but differ in other values"],
        3: ["duplicate row: repeats row 1 (city = 'berlin', store_id = '1', date = '2026-02-27')"],
        4: [f"conflicting duplicate: rows 2, 4 share {key2} but differ in other values"],
        5: ["not a number: sales = 'oops'"],
    }
    assert store_ids(rt) == ["1", "3"] and result.counts["rows_accepted"] == 2


def test_periods_after_the_logical_time_are_rejected_in_the_citys_wall_clock(rt: Runtime) -> None:
    late = NOW.replace(hour=23, minute=30)  # already 2026-03-03 00:30 in Berlin
    text = NATIVE + "1,berlin,2026-03-03,1,,,,\n2,berlin,2026-03-04,1,,,,\n3,berlin,2026-03-02,1,,,,\n"
    message = upload(rt, text).model_copy(update={"logical_time": late})
    partition.run(rt.ports, message, RUN)
    assert reasons(rt) == {
        2: ["future period: date = '2026-03-04' is after the upload's time (2026-03-03 00:30 in berlin)"]
    }
    assert store_ids(rt) == ["1", "3"]


def test_future_hours_are_rejected_in_the_citys_wall_clock() -> None:
    text = (
        "station_id,city,hour,departures,arrivals\n"
        "S1,vancouver,2026-03-02 04:00,1,0\n"  # 04:00 is the hour in progress at NOW in Vancouver
        "S1,vancouver,2026-03-02 05:00,1,0\n"
        "S2,seattle,2026-03-02 05:00,0,1\n"
    )
    checked = validate(text)
    future = "is after the upload's time (2026-03-02 04:00 in"
    assert checked.row_errors == [
        {"row": 2, "reasons": [f"future period: hour = '2026-03-02 05:00' {future} vancouver)"]},
        {"row": 3, "reasons": [f"future period: hour = '2026-03-02 05:00' {future} seattle)"]},
    ]
    assert checked.good["hour"].tolist() == [pd.Timestamp("2026-03-02 04:00")]


def test_unknown_cities_are_rejected_naming_the_known_ones(rt: Runtime) -> None:
    partition_csv(rt, NATIVE + "1,hamburg,2026-02-27,1,,,,\n2,paris,2026-02-27,1,,,,\n")
    assert reasons(rt) == {1: ["unknown city: 'hamburg' (known: berlin, cologne, munich, paris)"]}
    assert accepted(rt)["city"].tolist() == ["paris"]


def test_invalid_entity_ids_are_rejected(rt: Runtime) -> None:
    partition_csv(
        rt,
        NATIVE + "../x,berlin,2026-02-27,1,,,,\nA b,berlin,2026-02-27,1,,,,\nS-1.2,berlin,2026-02-27,1,,,,\n",
    )
    rule = "is not a valid id (letters, digits, '_', '.', '-')"
    assert reasons(rt) == {
        1: [f"invalid id: store_id '../x' {rule}"],
        2: [f"invalid id: store_id 'A b' {rule}"],
    }
    assert store_ids(rt) == ["S-1.2"]


def test_an_id_ending_in_a_newline_is_invalid(rt: Runtime) -> None:
    partition_csv(rt, NATIVE + '"7\n",berlin,2026-02-27,1,,,,\n8,berlin,2026-02-27,1,,,,\n')
    assert reasons(rt) == {
        1: ["invalid id: store_id '7\\n' is not a valid id (letters, digits, '_', '.', '-')"]
    }
    assert store_ids(rt) == ["8"]


def test_missing_required_values_are_rejected_and_optional_ones_may_be_empty(rt: Runtime) -> None:
    partition_csv(
        rt,
        NATIVE + "1,berlin,2026-02-27,,,,,\n,berlin,2026-02-27,3,,,,\n2,,,4,,,,\n3,berlin,2026-02-27,5,,,,\n",
    )
    assert reasons(rt) == {
        1: ["missing value: sales is empty"],
        2: ["missing value: store_id is empty"],
        3: ["missing value: city is empty", "missing value: date is empty"],
    }
    assert store_ids(rt) == ["3"]


def test_a_row_gets_every_reason_and_the_report_counts_them(rt: Runtime) -> None:
    result = partition_csv(rt, NATIVE + "1,hamburg,2030-01-01,-1,x,,,\n2,berlin,2026-02-27,1,,,,\n")
    assert reasons(rt)[1] == [
        "unknown city: 'hamburg' (known: berlin, cologne, munich, paris)",
        "not a boolean: open = 'x' (expected one of 1, true, True, TRUE, yes, y or 0, false, False, FALSE, "
        "no, n)",
        "future period: date = '2030-01-01' is after the upload's time (2026-03-02 13:00 in hamburg)",
        "negative target: sales = '-1' is below zero (dataset retail does not allow a negative sales)",
    ]
    written = report(rt)
    assert written["counts"] == {"read": 2, "accepted": 1, "rejected": 1}
    assert written["reasons"] == {
        "future period": 1,
        "negative target": 1,
        "not a boolean": 1,
        "unknown city": 1,
    }
    assert written["summary"] == (
        "1 of 2 rows accepted; 1 rejected (1 future period, 1 negative target, 1 not a boolean, "
        "1 unknown city)"
    )
    assert (written["upload_id"], written["dataset"], written["mapping"]) == ("u1", "retail", "native")
    assert written["rejected_object"] == layout.rejected_object(DT, "u1", "csv")
    assert result.details["report"] == layout.rejected_report(DT, "u1")


def test_a_file_whose_every_row_is_bad_is_rejected_without_a_message(rt: Runtime) -> None:
    result = partition_csv(rt, NATIVE + "1,berlin,2026-02-27,abc,,,,\n")
    assert result.status == "rejected" and result.messages == []
    assert result.counts == {"rows_read": 1, "rows_accepted": 0, "rows_rejected": 1, "partitions": 0}
    assert rejected_rows(rt)["row"].tolist() == ["1"]


# -- bike-share ----------------------------------------------------------------------------------

TRIPS = "ride_id,started_at,ended_at,start_station_id,end_station_id,city\n"


def test_trips_become_station_hours_with_departures_arrivals_and_net_change(rt: Runtime) -> None:
    text = TRIPS + (
        "r1,2026-03-01 08:10,2026-03-01 08:20,A,B,vancouver\n"
        "r2,2026-03-01 08:50,2026-03-01 09:05,A,A,vancouver\n"
        "r3,2026-03-01T17:10:00Z,2026-03-01T17:30:00-08:00,B,A,vancouver\n"  # 09:10 and 17:30 local
        "r4,2026-03-01 08:15,2026-03-01 08:45,A,B,seattle\n"
    )
    result = partition_csv(rt, text)
    assert result.status == "succeeded" and result.messages[0].cities == ["seattle", "vancouver"]
    assert result.counts == {"rows_read": 4, "rows_accepted": 4, "rows_rejected": 0, "partitions": 4}
    rows = accepted(rt, "bikeshare")
    table = rows[["city", "station_id", "hour", "departures", "arrivals", "net_change"]]
    assert [tuple(r) for r in table.itertuples(index=False)] == [
        ("seattle", "A", pd.Timestamp("2026-03-01 08:00"), 1, 0, -1),
        ("seattle", "B", pd.Timestamp("2026-03-01 08:00"), 0, 1, 1),
        ("vancouver", "A", pd.Timestamp("2026-03-01 08:00"), 2, 0, -2),
        ("vancouver", "A", pd.Timestamp("2026-03-01 09:00"), 0, 1, 1),
        ("vancouver", "A", pd.Timestamp("2026-03-01 17:00"), 0, 1, 1),
        ("vancouver", "B", pd.Timestamp("2026-03-01 08:00"), 0, 1, 1),
        ("vancouver", "B", pd.Timestamp("2026-03-01 09:00"), 1, 0, -1),
    ]
    assert rows["temp"].isna().all() and rows["precipitation"].isna().all()
    station = rt.ports.blobs.stat(layout.batch_data_object("bikeshare", "vancouver", "station_id", "A", "u1"))
    assert station.metadata == {"rows": "3", "first": "2026-03-01T08:00:00", "last": "2026-03-01T17:00:00"}


def test_trips_that_end_before_they_start_or_have_bad_timestamps_are_rejected(rt: Runtime) -> None:
    text = TRIPS + (
        "r1,2026-03-01 10:00,2026-03-01 09:00,A,B,vancouver\n"
        "r2,soon,2026-03-01 09:00,A,B,vancouver\n"
        "r3,2026-03-01 10:00,2026-03-01 10:20,A,B,vancouver\n"
    )
    partition_csv(rt, text)
    assert reasons(rt) == {
        1: ["ended before started: ended_at = '2026-03-01 09:00' is before started_at = '2026-03-01 10:00'"],
        2: [
            "bad timestamp: started_at = 'soon' is not ISO 8601 (2024-05-01, 2024-05-01T08:15:00); for "
            'dates in another form set mappings.native.date_format (a strftime format, e.g. "%d/%m/%Y")'
        ],
    }
    assert accepted(rt, "bikeshare")[["departures", "arrivals"]].sum().tolist() == [1, 1]


def test_duplicate_ride_ids_are_rejected(rt: Runtime) -> None:
    text = TRIPS + (
        "r1,2026-03-01 10:00,2026-03-01 10:20,A,B,vancouver\n"
        "r1,2026-03-01 10:00,2026-03-01 10:20,A,B,vancouver\n"  # sent twice: counted once
        "r2,2026-03-01 10:00,2026-03-01 10:20,A,B,vancouver\n"
        "r2,2026-03-01 11:00,2026-03-01 11:20,B,A,vancouver\n"  # one id, two different trips
        ",2026-03-01 10:00,2026-03-01 10:20,A,B,vancouver\n"  # ride ids may be empty
        ",2026-03-01 10:00,2026-03-01 10:20,A,B,vancouver\n"
    )
    partition_csv(rt, text)
    conflict = "conflicting duplicate: rows 3, 4 share ride_id = 'r2' but differ in other values"
    assert reasons(rt) == {2: ["duplicate row: repeats row 1 (ride_id = 'r1')"], 3: [conflict], 4: [conflict]}
    assert accepted(rt, "bikeshare")["departures"].sum() == 3


def test_a_citibike_export_maps_through_constants_and_ignores_its_extra_columns() -> None:
    header = (
        "ride_id,rideable_type,started_at,ended_at,start_station_name,start_station_id,end_station_name,"
        "end_station_id,member_casual\n"
    )
    checked = validate(header + "x1,classic,2026-03-01 08:00:01,2026-03-01 08:31:00,Main,S1,Bay,S2,member\n")
    assert (checked.profile.name, checked.mapping, checked.row_errors) == ("bikeshare", "citibike", [])
    assert checked.warnings == [
        "ignored columns that mapping citibike does not map: 'rideable_type', 'start_station_name', "
        "'end_station_name', 'member_casual'"
    ]
    assert checked.good[["station_id", "city", "net_change"]].values.tolist() == [
        ["S1", "vancouver", -1],
        ["S2", "vancouver", 1],
    ]


def test_station_hour_counts_derive_net_change_and_reject_bad_counts(rt: Runtime) -> None:
    text = (
        "station_id,city,hour,departures,arrivals\n"
        "S1,vancouver,2026-03-01 08:00,3,5\n"
        "S1,vancouver,2026-03-01 09:00,-1,2\n"
        "S1,vancouver,2026-03-01 10:00,1.5,2\n"
        "S1,vancouver,2026-03-01 10:30,1,2\n"
        "S2,vancouver,2026-03-01 10:00,4,0\n"
    )
    partition_csv(rt, text)
    assert reasons(rt) == {
        2: ["negative count: departures = '-1' is below zero"],
        3: ["not a number: departures = '1.5' is not a whole number within the int range"],
        4: [
            "bad timestamp: hour = '2026-03-01 10:30' is not the start of an hour (to add up rows into "
            "periods, set mappings.counts.aggregate)"
        ],
    }
    rows = accepted(rt, "bikeshare")
    assert rows[["station_id", "departures", "arrivals", "net_change"]].values.tolist() == [
        ["S1", 3, 5, 2],
        ["S2", 4, 0, -4],
    ]


# -- robustness ----------------------------------------------------------------------------------


def test_no_input_makes_validation_raise() -> None:
    rng = random.Random(7)
    base = (
        NATIVE
        + "1,berlin,2026-02-27,100,1,0,2.5,0\n2,paris,2026-02-26,5,,,,\n"
        + TRIPS
        + 'r1,2026-03-01 10:00,2026-03-01 10:20,A,B,vancouver\n"x""y",\n'
    ).encode()
    alphabet = b'",\n\r\x00\xff\xef\xbb\xbf;abc-1.9 T:Z+'
    for case in range(300):
        data = bytearray(base)
        for _ in range(rng.randint(1, 12)):
            data[rng.randrange(len(data))] = rng.choice(alphabet)
        if case % 5 == 0:
            data = bytearray(rng.randbytes(rng.randint(0, 200)))
        for ext in ("csv", "avro"):
            checked = validate(bytes(data), ext)
            assert checked.file_errors or checked.rows_read == checked.rows_accepted + len(checked.row_errors)


# -- streaming: chunks, spool, limits ------------------------------------------------------------


def _run(rt: Runtime, message: ObjectFinalized, **settings) -> StepResult:
    """partition.run with these settings (e.g. a small ``partition_chunk_bytes``)."""
    return partition.run(rt.ports, message, RunContext("t", "partition", RUN.log, Settings(**settings)))


def _outcome(text: str | bytes, ext: str = "csv", **kwargs) -> tuple:
    """What validation makes of an upload, in a form two runs can be compared by."""
    checked = validate(text, ext, **kwargs)
    return (
        checked.good.to_csv(index=False),
        checked.good.dtypes.astype(str).tolist(),
        checked.row_errors,
        checked.rejected.to_csv(index=False),
        checked.reason_counts(),
        (checked.rows_read, checked.rows_accepted, checked.file_errors, checked.warnings),
    )


def _messy_retail() -> str:
    """Retail rows with every kind of trouble spread out: quoted fields holding newlines and commas,
    duplicates and conflicts far apart, broken records, blank lines and CRLF line ends."""
    lines = []
    for day in range(1, 21):
        for store in range(1, 5):
            lines.append(f"{store},berlin,2026-02-{day:02d},{100 + day * store}.5,1,0,{day}.0,\n")
    lines[3] = '"1",berlin,"2026-02-01","1,5",1,0,,\n'  # a comma inside quotes: not a number
    lines[9] = '"S\nX",berlin,2026-02-03,5,1,0,,\n'  # a newline inside quotes: an invalid id
    lines[20] = lines[20].replace(",1,0,", ",1,0,7,")  # one field too many
    lines[33] = '34,berlin,"2026-02-09,1,1,0,,\n'  # a quote that never closes
    lines[40] = "\r\n"
    lines[41] = lines[41].rstrip("\n") + "\r\n"
    lines.append("1,berlin,2026-02-01T00:00,101.5,1,0,1.0,\n")  # repeats row 1, in another spelling
    lines.append("2,berlin,2026-02-20,7,1,0,,\n")  # conflicts with a row 75 rows up
    return NATIVE + "".join(lines)


@pytest.mark.parametrize("chunk_bytes", [16, 37, 64, 100, 333])
def test_small_chunks_give_the_same_outcome_as_one_chunk(chunk_bytes: int) -> None:
    """Chunk edges fall inside quoted fields, on broken records and between duplicates: nothing the
    result says may depend on where they fall."""
    text = _messy_retail()
    whole = _outcome(text)
    assert _outcome(text, chunk_bytes=chunk_bytes) == whole
    good, _, errors, rejected, counts, _ = whole
    assert good.count("\n") > 60 and counts["duplicate row"] == 1 and counts["conflicting duplicate"] == 2
    assert {"malformed row", "not a number", "invalid id"} <= set(counts)
    rows = pd.read_csv(io.StringIO(rejected))["row"].tolist()
    assert rows == [e["row"] for e in errors] and len(rows) > 6  # every rejected row is listed here


def test_each_synthetic_format_gives_the_same_outcome_in_small_chunks() -> None:
    for name in ("retail", "bikeshare"):
        profile = config.load_profile(name)
        for fmt in synth.formats_for(profile):
            frame = synth.generate(profile, entities=3, days=4, seed=8, fmt=fmt, end=date(2026, 2, 28))
            text = frame.to_csv(index=False)
            text += text.split("\n", 1)[1]  # every row twice: the repeats come many chunks later
            assert _outcome(text, chunk_bytes=len(text) // 8) == _outcome(text), (name, fmt)  # 8 chunks


def test_line_numbers_and_rows_count_across_chunks() -> None:
    rows = [f"{i},berlin,2026-02-27,{i}\n" for i in range(1, 40)]
    rows[30] = "31,berlin,2026-02-27\n"  # too few fields, on line 33 (the header and a blank line first)
    text = "store_id,city,date,sales\n\n" + "".join(rows)  # a blank line counts for lines, not rows
    for chunk_bytes in (20, 50, 1 << 20):
        checked = validate(text, chunk_bytes=chunk_bytes)
        assert checked.row_errors == [
            {"row": 31, "reasons": ["malformed row: 3 fields where the header has 4 (line 33)"]}
        ]
        assert checked.rows_read == 39 and checked.rows_accepted == 38


@pytest.mark.parametrize("chunk_bytes", range(30, 62, 3))
def test_a_broken_record_at_a_chunk_edge_costs_only_its_own_line(chunk_bytes: int) -> None:
    text = (
        "store_id,city,date,sales\n"
        "1,berlin,2026-02-27,1\n"
        "2,berlin,2026-02-27,2\n"
        '3,berlin,"2026-02-27,3\n'  # the quote never closes
        "4,berlin,2026-02-27,4\n"
        "5,berlin,2026-02-27,5,5\n"
        "6,berlin,2026-02-27,6\n"
    )
    checked = validate(text, chunk_bytes=chunk_bytes)
    assert [e["row"] for e in checked.row_errors] == [3, 5]
    assert checked.row_errors[0]["reasons"][0].startswith("malformed row: unterminated quote on line 4")
    assert checked.row_errors[1]["reasons"] == [
        "malformed row: 5 fields where the header has 4 (line 6); surplus: '5'"
    ]
    assert checked.good["store_id"].tolist() == ["1", "2", "4", "6"]


def test_duplicates_in_different_chunks_are_found_and_named_by_their_own_text(rt: Runtime) -> None:
    rows = [f"{i},berlin,2026-02-{1 + i % 27:02d},{i}\n" for i in range(1, 60)]
    rows.append("1,berlin,2026-02-02T00:00:00,1\n")  # row 1 again, its date spelled otherwise
    rows.append("2,berlin,2026-02-03,99\n")  # row 2's store-day with other sales
    message = upload(rt, "store_id,city,date,sales\n" + "".join(rows))
    result = _run(rt, message, partition_chunk_bytes=64)
    assert reasons(rt) == {
        2: [
            "conflicting duplicate: rows 2, 61 share city = 'berlin', store_id = '2', date = '2026-02-03' "
            "but differ in other values"
        ],
        60: ["duplicate row: repeats row 1 (city = 'berlin', store_id = '1', date = '2026-02-02T00:00:00')"],
        61: [
            "conflicting duplicate: rows 2, 61 share city = 'berlin', store_id = '2', date = '2026-02-03' "
            "but differ in other values"
        ],
    }
    assert result.counts["rows_accepted"] == 58 and "2" not in store_ids(rt)
    assert rejected_rows(rt)["row"].tolist() == ["2", "60", "61"]


def test_trips_across_chunks_add_up_per_station_hour_and_ride_ids_are_compared_file_wide(rt: Runtime) -> None:
    trips = [f"r{i},2026-03-01 08:{i % 60:02d},2026-03-01 09:{i % 60:02d},A,B,vancouver\n" for i in range(50)]
    trips.append("r7,2026-03-01 08:07,2026-03-01 09:07,A,B,vancouver\n")  # trip r7 sent again
    trips.append("r9,2026-03-01 10:00,2026-03-01 10:30,B,A,vancouver\n")  # another trip under r9's id
    trips.append(",2026-03-01 08:00,2026-03-01 09:00,A,B,vancouver\n")  # no ride id: never a duplicate
    message = upload(rt, TRIPS + "".join(trips))
    result = _run(rt, message, partition_chunk_bytes=80)
    assert sorted(reasons(rt)) == [10, 51, 52]
    assert reasons(rt)[51] == ["duplicate row: repeats row 8 (ride_id = 'r7')"]
    rows = accepted(rt, "bikeshare").set_index(["station_id", "hour"])
    # 49 trips flowed (r9 and its conflict did not; the repeat of r7 counted once), plus the one without id.
    assert rows.loc[("A", pd.Timestamp("2026-03-01 08:00")), "departures"] == 50
    assert rows.loc[("B", pd.Timestamp("2026-03-01 09:00")), "arrivals"] == 50
    assert rows["net_change"].sum() == 0 and len(rows) == 2
    assert result.counts == {"rows_read": 53, "rows_accepted": 50, "rows_rejected": 3, "partitions": 2}


def test_an_avro_upload_is_read_in_batches(rt: Runtime) -> None:
    records = [
        {"Store": s, "Date": date(2026, 2, d), "Sales": float(d), "Open": True}
        for s in (1, 2)
        for d in range(1, 25)
    ]
    records[5]["Sales"] = -1.0
    records.append(dict(records[0]))  # an exact repeat, 47 records later
    data = avro_bytes(ROSSMANN_AVRO, records)
    assert _outcome(data, "avro", chunk_bytes=64 * 5) == _outcome(data, "avro")
    result = _run(
        rt, upload(rt, data, name=layout.raw_object(DT, "u1", "avro")), partition_chunk_bytes=64 * 5
    )
    assert result.counts == {"rows_read": 49, "rows_accepted": 47, "rows_rejected": 2, "partitions": 2}
    assert sorted(reasons(rt)) == [6, 49] and rejected_rows(rt)["row"].tolist() == ["6", "49"]


def test_a_file_over_the_size_limit_is_rejected_unread_saying_what_to_do(rt: Runtime) -> None:
    text = NATIVE + "".join(f"{store},berlin,2026-02-27,100,1,0,,\n" for store in range(40))
    message = upload(rt, text)
    result = _run(rt, message, max_upload_bytes=1000)
    [why] = result.errors.values()
    size = len(text.encode())
    assert why == (
        f"the file is {size / 2**20:.1f} MiB ({size:,} bytes), over the upload limit of 0.0 MiB "
        "(1,000 bytes, BATCHCAST_MAX_UPLOAD_BYTES): split it into several files below the limit and "
        "upload each; rows of one entity may be spread over several uploads"
    )
    assert result.status == "rejected" and result.messages == []
    assert rt.ports.blobs.read(layout.rejected_object(DT, "u1", "csv")) == text.encode()
    assert report(rt)["counts"] == {"read": 0, "accepted": 0, "rejected": 0}
    at_the_limit = upload(rt, text, name=layout.raw_object(DT, "u2", "csv"))
    assert _run(rt, at_the_limit, max_upload_bytes=size).status == "succeeded"


def test_the_raw_object_is_never_read_whole(rt: Runtime) -> None:
    """Partition streams the upload and copies a rejected one inside the bucket."""
    store = rt.ports.blobs

    class NoWholeReads:
        def __getattr__(self, name: str):
            return getattr(store, name)

        def read(self, name: str) -> bytes:
            assert not name.startswith(layout.RAW), f"{name} read whole"
            return store.read(name)

    good = upload(rt, NATIVE + "1,berlin,2026-02-27,100,1,0,,\n2,berlin,2026-02-27,x,1,0,,\n")
    bad = upload(rt, "Store,Date,Revenue\n1,2026-02-27,100\n", name=layout.raw_object(DT, "u2", "csv"))
    misnamed = upload(rt, b"x\n", name="raw/dt=2026-03-02/no good.csv")
    rt.ports.blobs = NoWholeReads()
    assert partition.run(rt.ports, good, RUN).status == "partial"
    assert partition.run(rt.ports, bad, RUN).status == "rejected"
    assert partition.run(rt.ports, misnamed, RUN).status == "rejected"
    assert store.read(layout.rejected_object(DT, "u2", "csv")) == b"Store,Date,Revenue\n1,2026-02-27,100\n"
    assert store.stat(layout.rejected_object(DT, "u2", "csv")).metadata == {}


def test_the_report_lists_the_first_rows_and_counts_them_all(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    from batchcast.data.validation import upload as validating

    monkeypatch.setattr(validating, "MAX_LISTED_ROWS", 3)  # where Upload reads it
    rows = [f"{i},berlin,2026-02-27,{'x' if i % 2 else i}\n" for i in range(1, 21)]  # odd rows are bad
    rows.insert(2, "2,berlin,2026-02-27,2\n")  # an exact repeat of row 2, as row 3
    result = _run(rt, upload(rt, "store_id,city,date,sales\n" + "".join(rows)), partition_chunk_bytes=40)
    written = report(rt)
    assert [e["row"] for e in written["rows"]] == [1, 3, 4]
    assert written["rows"][1]["reasons"] == [
        "duplicate row: repeats row 2 (city = 'berlin', store_id = '2', date = '2026-02-27')"
    ]
    assert written["reasons"] == {"duplicate row": 1, "not a number": 10}
    assert written["counts"] == {"read": 21, "accepted": 10, "rejected": 11}
    assert written["rows_left_out"] == 8
    assert written["note"] == (
        "rows lists the reasons of the first 3 rejected rows and leaves out 8 more (reasons counts them "
        "all); rejected/dt=2026-03-02/u1.csv holds every rejected row and the raw object every row"
    )
    assert len(rejected_rows(rt)) == 11  # the rejected rows are all kept
    assert result.notes[-1] == "10 of 21 rows accepted; 11 rejected (1 duplicate row, 10 not a number)"


def test_a_very_wide_header_is_named_briefly() -> None:
    header = [f"c{i}" for i in range(5000)]
    checked = validate(",".join(header + header[:30]) + "\n" + ",".join("1" * 5030) + "\n")
    [why] = checked.file_errors
    assert why.startswith("duplicate column names in the header: 'c0', 'c1', ") and why.endswith(
        " and 10 more"
    )
    checked = validate(",".join(header) + "\n" + ",".join("1" * 5000) + "\n")
    [why] = checked.file_errors
    assert "columns found: c0, c1, c2" in why and why.endswith(" and 4980 more)")


def test_the_spool_keeps_every_dtype() -> None:
    from batchcast.data.spool import Spool

    frame = pd.DataFrame(
        {
            "text": pd.Series(["a", None, "b", "a"], dtype="str"),
            "when": pd.to_datetime(pd.Series(["2026-01-01", None, "2026-01-03", "2026-01-04"])),
            "flag": pd.Series([True, None, False, True], dtype="boolean"),
            "count": pd.Series([1, None, 3, 4], dtype="Int64"),
            "value": [1.5, float("nan"), 2.0, -3.0],
            "row": [0, 1, 2, 3],
        }
    )
    spool = Spool(3)
    try:
        spool.add(spool.partition_of(frame, ["text"]), frame)
        spool.add(spool.partition_of(frame, ["text"]), frame.assign(row=frame["row"] + 4))
        parts = [spool.take(p) for p in range(3)]
        back = pd.concat([p for p in parts if p is not None]).sort_values("row").reset_index(drop=True)
        expected = pd.concat([frame, frame.assign(row=frame["row"] + 4)], ignore_index=True)
        pd.testing.assert_frame_equal(back, expected)
        assert spool.peak_bytes > 0 and spool.bytes == 0 and spool.take(0) is None
    finally:
        spool.close()


def test_partition_leaves_no_spool_behind(
    rt: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tempfile

    spools = tmp_path / "spools"
    spools.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spools))
    assert _run(rt, upload(rt, _messy_retail()), partition_chunk_bytes=64).status == "partial"
    bad = upload(rt, "Store,Date,Revenue\n1,2026-02-27,100\n", name=layout.raw_object(DT, "u2", "csv"))
    assert _run(rt, bad, partition_chunk_bytes=64).status == "rejected"
    third = upload(rt, NATIVE + "9,berlin,2026-02-27,1,,,,\n", name=layout.raw_object(DT, "u3", "csv"))
    store = rt.ports.blobs

    class Broken:  # the bucket fails while partition writes: the spool goes all the same
        def __getattr__(self, name: str):
            return getattr(store, name)

        def write(self, *args, **kwargs):
            raise TransientError("503 from the bucket")

    rt.ports.blobs = Broken()
    with pytest.raises(TransientError):
        _run(rt, third)
    assert list(spools.iterdir()) == []
