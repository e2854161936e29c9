"""Covariates users declare in their profile, future values of the ones known in advance, and
every profile mistake named when the profile loads.

Each failure mode has its own test, named after it.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from factories import daily_profile_toml
from typer.testing import CliRunner

from batchcast.core import config, layout, schemas
from batchcast.core.config import Profile, load_profile, parse_profile
from batchcast.core.errors import ConfigError
from batchcast.core.messages import ScheduleTick, Topic
from batchcast.core.schemas.frames import read_frame, write_frame
from batchcast.data import future, uploads
from batchcast.data.validation import validate_upload
from batchcast.entrypoints import runtime
from batchcast.ml.features import KNOWN_HIDDEN_SHARE, feature_names, make_features, to_series, with_future
from batchcast.ports import FixedClock
from batchcast.tools.cli import app

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)

# A user's own daily profile: a generated schema (no base_schema) keyed by their own names.
SHOP = daily_profile_toml(
    "shops",
    key="sku",
    target="units",
    city=("berlin", "DE", "Europe/Berlin"),
    head='description = "Units per SKU"\n',
    tail="""[training]
window = 60
max_iter = 20

[backtest]
folds = 1

[covariates.humidity]
type = "number"
timing = "past"

[covariates.closed]
type = "boolean"
timing = "known"

[mappings.history]
columns = { sku = "SKU", city = "Town", day = "Day", units = "Units", humidity = "Hum", closed = "Closed" }
optional = ["humidity", "closed"]

[mappings.plans]
kind = "future"
columns = { sku = "SKU", city = "Town", day = "Day", closed = "Closed" }
optional = ["sku"]
""",
)


def shop(*edits: tuple[str, str], extra: str = "") -> str:
    """The SHOP profile's text with ``(old, new)`` replacements and ``extra`` TOML appended."""
    text = SHOP
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new)
    return text + extra


def problems(text: str) -> str:
    """The error a profile's text raises on load."""
    with pytest.raises(ConfigError) as raised:
        parse_profile(text, "shop.toml")
    return str(raised.value)


# -- the schema a profile derives -----------------------------------------------------------------


def test_a_generated_schema_is_named_by_the_profile_and_ends_with_the_bookkeeping_fields() -> None:
    profile = parse_profile(SHOP)
    observation = schemas.fields(schemas.observation(profile))
    assert list(observation) == [
        "sku",
        "city",
        "day",
        "units",
        "humidity",
        "closed",
        *schemas.BOOKKEEPING_FIELDS,
    ]
    assert observation["day"]["logical"] == "date" and not observation["units"]["nullable"]
    assert observation["humidity"] == {"type": "double", "logical": None, "nullable": True}
    assert observation["closed"]["type"] == "boolean" and observation["closed"]["nullable"]
    planned = schemas.fields(schemas.future(profile))
    assert list(planned) == ["sku", "city", "day", "closed", *schemas.BOOKKEEPING_FIELDS]
    assert planned["sku"]["nullable"]  # an empty entity: the whole city


def test_declared_covariates_extend_a_shipped_schema_before_the_bookkeeping_fields() -> None:
    profile = _retail_plus_humidity()
    derived = schemas.observation(profile)
    assert list(schemas.fields(derived))[-3:] == ["humidity", *schemas.BOOKKEEPING_FIELDS]
    assert derived.raw["name"] == "RetailObservation"  # files of the base resolve against it


def test_the_shipped_profiles_derive_exactly_their_shipped_schemas() -> None:
    """Data written with the .avsc before covariates were declared stays readable, unchanged."""
    for name in config.BUILTIN_PROFILES:
        profile = load_profile(name)
        assert schemas.observation(profile).raw == schemas.schema(profile.base_schema)


def test_a_file_written_before_a_covariate_was_declared_reads_with_nulls() -> None:
    frame = _one_store_day()
    older = write_frame("retail_observation", frame)
    back = read_frame(older, schemas.observation(_retail_plus_humidity()))
    assert back.loc[0, "sales"] == 10.0 and back["humidity"].isna().all()


def test_a_covariate_no_longer_declared_is_ignored_when_reading() -> None:
    newer = write_frame(schemas.observation(_retail_plus_humidity()), _one_store_day().assign(humidity=71.0))
    back = read_frame(newer, schemas.observation(load_profile("retail")))
    assert "humidity" not in back.columns and back.loc[0, "sales"] == 10.0


def test_a_covariate_whose_type_changed_incompatibly_fails_loudly() -> None:
    as_number = parse_profile(shop(('type = "boolean"', 'type = "number"')))
    data = write_frame(schemas.observation(as_number), _one_sku_day().assign(closed=0.5))
    with pytest.raises(schemas.SchemaMismatch, match="incompatible"):
        read_frame(data, schemas.observation(parse_profile(SHOP)))  # closed: number -> boolean


def test_an_integer_covariate_declared_a_number_later_reads_promoted() -> None:
    as_integer = parse_profile(shop(('type = "boolean"', 'type = "integer"')))
    data = write_frame(schemas.observation(as_integer), _one_sku_day().assign(closed=3))
    as_number = parse_profile(shop(('type = "boolean"', 'type = "number"')))
    assert read_frame(data, schemas.observation(as_number)).loc[0, "closed"] == 3.0


def _retail_plus_humidity() -> Profile:
    text = (Path(config.__file__).parent / "profiles" / "retail.toml").read_text()
    text = text.replace(
        'precipitation = "precipitation" }', 'precipitation = "precipitation", humidity = "hum" }'
    )
    return parse_profile(text + '\n[covariates.humidity]\ntype = "number"\ntiming = "past"\n')


def _one_store_day() -> pd.DataFrame:
    return pd.DataFrame(
        {"store_id": ["1"], "city": ["berlin"], "date": [pd.Timestamp("2026-03-01")], "sales": [10.0]}
    )


def _one_sku_day() -> pd.DataFrame:
    return pd.DataFrame(
        {"sku": ["a"], "city": ["berlin"], "day": [pd.Timestamp("2026-03-01")], "units": [4.0]}
    )


# -- every mapping mistake is an error when the profile loads ------------------------------------


def test_a_mapping_key_that_is_neither_a_schema_field_nor_a_covariate_is_an_error() -> None:
    error = problems(
        shop(('humidity = "Hum"', 'humidty = "Hum"'), ('optional = ["humidity"', 'optional = ["closed"'))
    )
    assert (
        "mapping 'history' (kind 'rows') maps 'humidty' (from column 'Hum'), which is neither a field of "
        "the schema (sku, city, day, units) nor a declared covariate (humidity, closed); did you mean "
        "'humidity'?"
    ) in error


def test_a_declared_covariate_that_no_mapping_reads_is_an_error() -> None:
    error = problems(shop(extra='\n[covariates.wind]\ntype = "number"\ntiming = "past"\n'))
    assert "covariate 'wind' is declared but no mapping reads it" in error


def test_a_features_covariate_that_is_not_declared_is_an_error() -> None:
    error = problems(shop(("lags = [1, 7]", 'lags = [1, 7]\ncovariates = ["humidity", "wind"]')))
    assert "features.covariates names 'wind', which is not declared: add [covariates.wind]" in error


def test_a_constant_for_an_unknown_field_is_an_error() -> None:
    error = problems(shop(('optional = ["sku"]', 'optional = ["sku"]\nconstants = { region = "north" }')))
    assert "mapping 'plans' (kind 'future') sets a constant for 'region', which a future mapping" in error


def test_a_covariate_with_the_name_of_a_schema_key_is_an_error() -> None:
    error = problems(shop(extra='\n[covariates.day]\ntype = "number"\ntiming = "past"\n'))
    assert "covariate 'day' has the name of the time column: give it another name" in error


def test_a_covariate_listed_twice_in_features_is_an_error() -> None:
    error = problems(shop(("lags = [1, 7]", 'lags = [1, 7]\ncovariates = ["humidity", "humidity"]')))
    assert "features.covariates lists 'humidity' 2 times" in error


def test_names_that_differ_only_in_case_are_an_error() -> None:
    error = problems(shop(extra='\n[covariates.Humidity]\ntype = "number"\ntiming = "past"\n'))
    assert "field names 'Humidity' and 'humidity' differ only in case" in error


def test_a_covariate_declared_twice_is_an_error() -> None:
    error = problems(shop(extra='\n[covariates.humidity]\ntype = "number"\ntiming = "known"\n'))
    assert "not valid TOML" in error and "humidity" in error


def test_one_column_read_for_two_fields_is_an_error() -> None:
    error = problems(
        shop(('closed = "Closed" }\noptional = ["humidity"', 'closed = "Hum" }\noptional = ["humidity"'))
    )
    assert "mapping 'history' (kind 'rows') reads column 'Hum' for humidity and closed: map it once" in error


def test_an_optional_field_the_mapping_does_not_map_is_an_error() -> None:
    error = problems(shop(('optional = ["sku"]', 'optional = ["sku", "humidity"]')))
    assert "mapping 'plans' (kind 'future') lists 'humidity' as optional but maps no column to it" in error


def test_a_required_field_without_column_or_constant_is_an_error() -> None:
    error = problems(shop(('units = "Units", ', "")))
    assert "mapping 'history' (kind 'rows') provides no column or constant for the required units" in error


def test_a_known_covariate_no_future_mapping_reads_is_an_error() -> None:
    without_plans = SHOP.split("[mappings.plans]")[0]
    error = problems(without_plans)
    assert "covariate 'closed' is known in advance" in error and 'declare timing = "past"' in error


def test_a_future_mapping_of_a_past_covariate_is_an_error() -> None:
    plans = 'closed = "Closed" }\noptional = ["sku"]'
    error = problems(shop((plans, plans.replace('"Closed" }', '"Closed", humidity = "Hum" }'))))
    assert (
        "mapping 'plans' (kind 'future') maps 'humidity' (from column 'Hum'), which a future mapping "
        "does not read (it reads the entity key, city, the time column and the covariates declared "
        'timing = "known": sku, city, day, closed)'
    ) in error


def test_a_covariate_typed_unlike_its_shipped_schema_field_is_an_error() -> None:
    text = (Path(config.__file__).parent / "profiles" / "retail.toml").read_text()
    error = problems(
        text.replace('[covariates.open]\ntype = "boolean"', '[covariates.open]\ntype = "number"')
    )
    assert (
        "covariate 'open' is declared type = 'number', but schema retail_observation has it as optional "
        "boolean (declare it type = 'boolean')"
    ) in error


def test_an_unknown_base_schema_is_an_error() -> None:
    error = problems(shop(('entity_key = "sku"', 'base_schema = "sales_v9"\nentity_key = "sku"')))
    assert "base_schema 'sales_v9' is not a shipped schema" in error


def test_a_profile_naming_its_base_schema_by_the_old_key_still_loads() -> None:
    text = (Path(config.__file__).parent / "profiles" / "retail.toml").read_text()
    old = parse_profile(text.replace("base_schema = ", "schema_name = "))
    assert old.base_schema == "retail_observation"
    assert schemas.observation(old) == schemas.observation(load_profile("retail"))


def test_an_invalid_covariate_name_is_an_error() -> None:
    error = problems(shop(extra='\n[covariates."wind speed"]\ntype = "number"\ntiming = "past"\n'))
    assert "covariate 'wind speed' is not a valid field name" in error


def test_every_mistake_of_a_profile_is_listed_at_once() -> None:
    error = problems(
        shop(
            ('humidity = "Hum"', 'humidty = "Hum"'),
            ('optional = ["sku"]', 'optional = ["sku"]\nconstants = { region = "north" }'),
        )
    )
    lines = error.splitlines()
    assert lines[0] == "shop.toml: invalid profile:"
    assert any("maps 'humidty'" in line for line in lines)
    assert any("lists 'humidity' as optional" in line for line in lines)
    assert any("constant for 'region'" in line for line in lines)
    assert any("covariate 'humidity' is declared but no mapping reads it" in line for line in lines)


# -- profile files ---------------------------------------------------------------------------------


@pytest.fixture
def profile_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    directory = tmp_path / "profiles"
    directory.mkdir()
    monkeypatch.setenv("BATCHCAST_PROFILE_DIR", str(directory))
    monkeypatch.delenv("BATCHCAST_PROFILES", raising=False)
    load_profile.cache_clear()
    yield directory
    load_profile.cache_clear()


def test_a_profile_is_found_by_the_name_it_declares_whatever_its_file_is_called(profile_dir: Path) -> None:
    (profile_dir / "our demand (v2).toml").write_text(SHOP)
    assert load_profile("shops").entity_key == "sku"
    assert "shops" in config.profile_names()
    with pytest.raises(ConfigError, match=r"unknown profile 'our demand \(v2\)'.*is named 'shops'"):
        load_profile("our demand (v2)")


def test_two_files_declaring_one_name_are_an_error_naming_both(profile_dir: Path) -> None:
    (profile_dir / "a.toml").write_text(SHOP)
    (profile_dir / "b.toml").write_text(SHOP)
    with pytest.raises(ConfigError) as raised:
        load_profile("shops")
    assert str(raised.value) == (
        f"profiles {profile_dir / 'a.toml'} and {profile_dir / 'b.toml'} both declare name = 'shops': "
        "rename one"
    )


def test_an_unreadable_profile_file_is_named_when_a_profile_is_not_found(profile_dir: Path) -> None:
    (profile_dir / "broken.toml").write_text("name = ")
    with pytest.raises(ConfigError, match=r"unknown profile 'shops'.*broken\.toml could not be read"):
        load_profile("shops")


def test_batchcast_profiles_lists_each_profiles_covariates_and_timings(profile_dir: Path) -> None:
    (profile_dir / "mine.toml").write_text(SHOP)
    result = CliRunner().invoke(app, ["profiles"])
    assert result.exit_code == 0, result.output
    assert "  covariates  humidity (number, past), closed (boolean, known)\n" in result.output
    assert (
        "  schema      sku, city, day, units, humidity, closed (+ ingested_at, upload_id)\n" in result.output
    )
    assert (
        "  covariates  open (boolean, known), promo (boolean, known), temp (number, past), "
        "precipitation (number, past)\n"
    ) in result.output
    assert "  mapping     history (rows): sku <- 'SKU', city <- 'Town'" in result.output


def test_batchcast_profiles_prints_every_mistake_of_a_file_and_fails(tmp_path: Path) -> None:
    path = tmp_path / "shop.toml"
    path.write_text(shop(extra='\n[covariates.wind]\ntype = "number"\ntiming = "past"\n'))
    result = CliRunner().invoke(app, ["profiles", str(path)])
    assert result.exit_code == 1
    assert f"{path}: invalid profile:\n" in result.output
    assert "  covariate 'wind' is declared but no mapping reads it" in result.output


# -- validation: covariates parsed by type, future values ---------------------------------------


def test_covariate_columns_are_parsed_by_type_with_the_usual_reasons() -> None:
    profile = parse_profile(
        shop(
            (
                'closed = "Closed" }\noptional = ["humidity"',
                'closed = "Closed", visitors = "Visitors" }\noptional = ["humidity"',
            ),
            extra='\n[covariates.visitors]\ntype = "integer"\ntiming = "past"\n',
        )
    )
    text = (
        "SKU,Town,Day,Units,Hum,Closed,Visitors\n"
        "a,berlin,2026-02-27,5,61.5,no,120\n"
        "a,berlin,2026-02-28,6,damp,no,120\n"
        "b,berlin,2026-02-28,7,55,maybe,120\n"
        "c,berlin,2026-02-28,8,55,yes,12.5\n"
        "d,berlin,2026-02-28,9,,,\n"
    )
    checked = validate_upload(text.encode(), "csv", logical_time=NOW, profiles=[profile])
    assert {e["row"]: e["reasons"] for e in checked.row_errors} == {
        2: ["not a number: Hum = 'damp'"],
        3: [
            "not a boolean: Closed = 'maybe' (expected one of 1, true, True, TRUE, yes, y or 0, false, "
            "False, FALSE, no, n)"
        ],
        4: ["not a number: Visitors = '12.5' is not a whole number within the long range"],
    }
    good = checked.good.set_index("sku")
    assert list(checked.good.columns) == list(schemas.fields(schemas.observation(profile)))
    assert good.loc["a", "humidity"] == 61.5 and good.loc["a", "visitors"] == 120
    assert (
        not good.loc["a", "closed"]
        and pd.isna(good.loc["d", "closed"])
        and pd.isna(good.loc["d", "humidity"])
    )


def test_future_values_may_lie_after_the_upload_and_an_empty_entity_means_the_whole_city() -> None:
    text = "SKU,Town,Day,Closed\na,berlin,2026-03-05,yes\n,berlin,2026-03-06,no\n,berlin,2026-03-06,no\n"
    checked = validate_upload(text.encode(), "csv", logical_time=NOW, profiles=[parse_profile(SHOP)])
    assert (checked.mapping, checked.kind) == ("plans", "future")
    assert [e["reasons"] for e in checked.row_errors] == [
        ["duplicate row: repeats row 2 (Town = 'berlin', SKU = '', Day = '2026-03-06')"]
    ]
    assert list(checked.good.columns) == list(schemas.fields(schemas.future(parse_profile(SHOP))))
    assert checked.good["sku"].isna().tolist() == [False, True]
    assert checked.good["closed"].tolist() == [True, False]


def test_a_future_upload_with_no_covariate_column_is_rejected() -> None:
    profile = parse_profile(shop(('optional = ["sku"]', 'optional = ["sku", "closed"]')))
    data = b"SKU,Town,Day\na,berlin,2026-03-05\n"
    checked = validate_upload(data, "csv", logical_time=NOW, profiles=[profile])
    assert checked.file_errors == [
        "no values: mapping plans of dataset shops reads future values of closed (column 'Closed'), and the "
        "file has none of those columns"
    ]


def test_a_history_file_is_not_taken_for_future_values() -> None:
    text = "SKU,Town,Day,Units,Closed\na,berlin,2026-03-01,5,no\n"
    checked = validate_upload(text.encode(), "csv", logical_time=NOW, profiles=[parse_profile(SHOP)])
    assert (checked.mapping, checked.kind) == ("history", "rows")


# -- features: past covariates as of the origin, known ones at the target -----------------------


def _frame(days: int = 60, skus: int = 3, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    dates = pd.date_range("2026-01-01", periods=days, freq="D")
    return pd.DataFrame(
        {
            "sku": np.repeat([f"s{i}" for i in range(skus)], days),
            "city": "berlin",
            "day": np.tile(dates.to_numpy(), skus),
            "units": rng.uniform(5, 10, days * skus),
            "humidity": rng.uniform(40, 90, days * skus),
            "closed": pd.array(rng.random(days * skus) < 0.1, dtype="boolean"),
        }
    )


def test_known_covariates_are_taken_at_the_target_and_past_ones_as_of_the_origin() -> None:
    profile = parse_profile(SHOP)
    assert feature_names(profile)[-3:] == ["cov_humidity", "known_closed", "log_scale"]
    series = to_series(_frame(), profile)
    features = make_features(series, profile, "berlin")
    row = 40
    assert features.loc[row, "known_closed"] == series.loc[row, "closed"]
    assert features.loc[row, "cov_humidity"] == pytest.approx(series.loc[row - 1, "humidity"], rel=1e-6)


def test_training_hides_the_same_share_of_known_values_whichever_rows_are_asked_for() -> None:
    profile = parse_profile(SHOP)
    series = to_series(_frame(days=400, skus=5), profile)
    hidden = make_features(series, profile, "berlin", hide_known=True)["known_closed"].isna()
    assert KNOWN_HIDDEN_SHARE - 0.03 < hidden.mean() < KNOWN_HIDDEN_SHARE + 0.03
    later = series[series["ts"] >= pd.Timestamp("2026-06-01")]  # another fold's targets
    again = make_features(series, profile, "berlin", later[["entity_id", "ts"]], hide_known=True)
    assert again["known_closed"].isna().tolist() == hidden[later.index].tolist()
    assert not make_features(series, profile, "berlin")["known_closed"].isna().any()


def test_future_values_reach_the_target_rows_and_nothing_else() -> None:
    profile = parse_profile(SHOP)
    series = to_series(_frame(), profile)
    target = pd.Timestamp("2026-03-02")
    plans = pd.DataFrame({"entity_id": ["s1"], "ts": [target], "closed": [1.0]})
    history = with_future(series, plans, profile)
    targets = pd.DataFrame({"entity_id": ["s0", "s1"], "ts": [target, target]})
    features = make_features(history, profile, "berlin", targets)
    assert np.isnan(features.loc[0, "known_closed"]) and features.loc[1, "known_closed"] == 1.0
    plain = make_features(series, profile, "berlin", targets)
    columns = [c for c in feature_names(profile) if c != "known_closed"]
    pd.testing.assert_frame_equal(features[columns], plain[columns])


# -- the future-values store ------------------------------------------------------------------------


def _store_future(blobs, profile: Profile, text: str, upload_id: str, at: datetime) -> int:
    checked = validate_upload(text.encode(), "csv", logical_time=at, profiles=[profile])
    assert not checked.row_errors and not checked.file_errors
    return future.write(
        blobs, profile, checked.good, upload_id=upload_id, logical_time=at, raw_object="raw/x"
    )


def test_future_values_are_filed_by_target_date_and_the_latest_upload_wins_per_value(tmp_path: Path) -> None:
    profile = parse_profile(
        shop(
            ('optional = ["sku"]', 'optional = ["sku", "humidity"]'),
            ('timing = "past"', 'timing = "known"'),
            (
                'closed = "Closed" }\noptional = ["sku"',
                'closed = "Closed", humidity = "Hum" }\noptional = ["sku"',
            ),
        )
    )
    blobs = runtime.embedded(tmp_path / "bucket").ports.blobs
    files = _store_future(
        blobs,
        profile,
        "SKU,Town,Day,Closed,Hum\na,berlin,2026-03-05,yes,80\na,berlin,2026-03-06,no,70\n",
        "u1",
        NOW,
    )
    assert files == 2
    assert [i.name for i in blobs.list(layout.FUTURE)] == [
        "future/dataset=shops/city=berlin/dt=2026-03-05/u1.avro",
        "future/dataset=shops/city=berlin/dt=2026-03-06/u1.avro",
    ]
    later = NOW + timedelta(hours=1)
    _store_future(blobs, profile, "SKU,Town,Day,Closed,Hum\na,berlin,2026-03-05,no,\n", "u0-later", later)
    found = future.read(blobs, profile, "berlin", datetime(2026, 3, 5), datetime(2026, 3, 6), ["a", "b"])
    assert [source.split("#")[0] for source in found.sources] == [  # what the forecast depends on
        "future/dataset=shops/city=berlin/dt=2026-03-05/u0-later.avro",
        "future/dataset=shops/city=berlin/dt=2026-03-05/u1.avro",
    ]
    # The later upload corrects closed; it has no humidity, so the earlier one's stays.
    assert found.values.to_dict("records") == [
        {"entity_id": "a", "ts": pd.Timestamp("2026-03-05"), "closed": 0.0, "humidity": 80.0}
    ]


def test_an_entitys_own_future_value_beats_its_citys(tmp_path: Path) -> None:
    profile = parse_profile(SHOP)
    blobs = runtime.embedded(tmp_path / "bucket").ports.blobs
    _store_future(blobs, profile, "SKU,Town,Day,Closed\na,berlin,2026-03-05,no\n", "u1", NOW)
    _store_future(
        blobs, profile, "SKU,Town,Day,Closed\n,berlin,2026-03-05,yes\n", "u2", NOW + timedelta(hours=1)
    )
    found = future.read(blobs, profile, "berlin", datetime(2026, 3, 5), datetime(2026, 3, 6), ["a", "b", "c"])
    assert found.values.set_index("entity_id")["closed"].to_dict() == {"a": 0.0, "b": 1.0, "c": 1.0}
    other_day = future.read(blobs, profile, "berlin", datetime(2026, 3, 6), datetime(2026, 3, 7), ["a"])
    assert other_day.values.empty and other_day.sources == ()


def test_a_stray_object_under_future_is_not_read(tmp_path: Path) -> None:
    profile = parse_profile(SHOP)
    blobs = runtime.embedded(tmp_path / "bucket").ports.blobs
    blobs.write(layout.future_prefix("shops", "berlin", date(2026, 3, 5)) + "notes.txt", b"hello")
    found = future.read(blobs, profile, "berlin", datetime(2026, 3, 5), datetime(2026, 3, 6), ["a"])
    assert found.values.empty and found.sources == ()


# -- the whole flow: uploaded plans change the forecast -------------------------------------------

END = date(2026, 3, 1)
PLANNED = END + timedelta(days=2)  # forecast by the tick after next; the upload's own forecast is END + 1


def _history(stores: int = 12, days: int = 240, seed: int = 5) -> pd.DataFrame:
    """Store-days whose closures and promos are irregular (renovations, strikes, campaigns), so the
    model can only learn them from the covariates, not from the calendar."""
    rng = np.random.default_rng(seed)
    dates = pd.date_range(end=pd.Timestamp(END), periods=days, freq="D")
    level = rng.uniform(50, 500, stores)
    weekly = np.array([1.0, 1.05, 1.1, 1.0, 1.3, 1.5, 0.7])[dates.day_of_week]
    is_open = rng.random((days, stores)) >= 0.08
    promo = (rng.random((days, stores)) < 0.25) & is_open
    sales = level * weekly[:, None] * np.where(promo, 1.6, 1.0) * rng.lognormal(0, 0.05, (days, stores))
    return pd.DataFrame(
        {
            "store_id": np.tile([f"S{i:03d}" for i in range(stores)], days),
            "city": "berlin",
            "date": np.repeat(dates.strftime("%Y-%m-%d"), stores),
            "sales": np.where(is_open, sales, 0.0).round(2).ravel(),
            "open": is_open.astype(int).ravel(),
            "promo": promo.astype(int).ravel(),
            "temp": rng.normal(8, 4, days * stores).round(1),
            "precipitation": rng.exponential(1.0, days * stores).round(1),
        }
    )


def _forecasts(root: Path, profile: Profile, plans: str | None) -> tuple[dict[str, float], list]:
    """Upload the history (and the plans), tick predict for PLANNED; each store's P50 and the
    partition result of the plans upload."""
    zone = profile.zone()
    clock = FixedClock(datetime(END.year, END.month, END.day, 22, tzinfo=zone))
    deployment = runtime.embedded(root, clock=clock, backoff_seconds=0.001)
    data = _history().to_csv(index=False).encode()
    uploads.store_upload(deployment.ports.blobs, data, ext="csv", now=clock.now(), dataset=profile.name)
    deployment.bus.drain()
    if plans is not None:
        clock.set(clock.now() + timedelta(minutes=30))
        blobs = deployment.ports.blobs
        uploads.store_upload(blobs, plans.encode(), ext="csv", now=clock.now(), dataset=profile.name)
        deployment.bus.drain()
    clock.set(datetime(PLANNED.year, PLANNED.month, PLANNED.day, tzinfo=zone))
    tick = ScheduleTick(dataset=profile.name, actions=["predict"], logical_time=clock.now())
    deployment.ports.bus.publish(Topic.SCHEDULE, tick)
    deployment.bus.drain()
    p50 = {}
    for info in deployment.ports.blobs.list(layout.results_prefix(profile.name)):
        result = json.loads(deployment.ports.blobs.read(info.name))
        assert result["target"]["start"] == f"{PLANNED.isoformat()}T00:00:00"
        p50[result["entity_id"]] = result["forecast"][0]["p50"]
    return p50, [r for f, r in deployment.results if f == "partition"]


@pytest.mark.slow
def test_a_planned_closure_drives_the_forecast_to_zero_and_a_planned_promo_raises_it(
    tmp_path: Path, small_retail
) -> None:
    profile = small_retail("planned")
    plans = (
        "store_id,city,date,open,promo\n"
        f"S000,berlin,{PLANNED},0,0\n"  # closed for a renovation
        f"S001,berlin,{PLANNED},1,1\n"  # a promo
    )
    planned, partitions = _forecasts(tmp_path / "planned", profile, plans)
    unplanned, _ = _forecasts(tmp_path / "unplanned", profile, None)

    assert len(planned) == len(unplanned) == 12
    assert planned["S000"] < 0.05 * unplanned["S000"]
    assert planned["S001"] > 1.2 * unplanned["S001"]
    others = [s for s in planned if s not in ("S000", "S001")]
    assert [planned[s] for s in others] == [unplanned[s] for s in others]  # nobody else's forecast moved
    upload_of_plans = partitions[-1]
    assert upload_of_plans.status == "succeeded" and upload_of_plans.counts["partitions"] == 1
    # The plans re-forecast the stores they name at once; the schedule then forecast everyone.
    [ready] = upload_of_plans.messages
    assert ready.entities == {"berlin": ["S000", "S001"]}


@pytest.mark.slow
def test_a_city_wide_future_value_re_forecasts_every_store_of_its_city_at_once(
    tmp_path: Path, small_retail
) -> None:
    profile = small_retail("citywide")
    zone = profile.zone()
    clock = FixedClock(datetime(END.year, END.month, END.day, 22, tzinfo=zone))
    deployment = runtime.embedded(tmp_path, clock=clock, backoff_seconds=0.001)
    data = _history().to_csv(index=False).encode()
    uploads.store_upload(deployment.ports.blobs, data, ext="csv", now=clock.now(), dataset=profile.name)
    deployment.bus.drain()
    clock.set(clock.now() + timedelta(minutes=30))
    tomorrow = END + timedelta(days=1)  # what an upload at 22:30 forecasts
    plans = f"store_id,city,date,open,promo\n,berlin,{tomorrow},0,0\n"  # a city-wide closure: a strike
    blobs = deployment.ports.blobs
    uploads.store_upload(blobs, plans.encode(), ext="csv", now=clock.now(), dataset=profile.name)
    deployment.bus.drain()
    results = [json.loads(blobs.read(i.name)) for i in blobs.list(layout.results_prefix(profile.name))]
    assert len(results) == 12
    for result in results:
        assert datetime.fromisoformat(result["as_of"]) == clock.now()  # re-forecast by the plans
        assert result["target"]["start"] == f"{tomorrow.isoformat()}T00:00:00"
        assert result["forecast"][0]["p50"] < 0.05 * max(h["actual"] or 0 for h in result["history"])


def test_future_names_parse_back_and_other_names_are_refused() -> None:
    name = layout.future_object("shops", "berlin", date(2026, 3, 5), "u1")
    assert name == "future/dataset=shops/city=berlin/dt=2026-03-05/u1.avro"
    assert layout.parse_future(name) == layout.FutureName("shops", "berlin", date(2026, 3, 5), "u1")
    for bad in ("future/dataset=shops/city=berlin/dt=2026-02-30/u1.avro", "future/dataset=shops/u1.avro"):
        with pytest.raises(layout.LayoutError):
            layout.parse_future(bad)
    with pytest.raises(layout.LayoutError):
        layout.future_object("shops", "berlin", date(2026, 3, 5), "../u1")


def test_hourly_future_values_are_read_for_every_hour_of_the_window(tmp_path: Path) -> None:
    hourly = parse_profile(
        shop(
            ('frequency = "daily"', 'frequency = "hourly"'),
            ("lags = [1, 7]", "lags = [6, 24]"),
            extra="\n[horizon]\nwindows = [[6, 12], [12, 18]]\n",
        )
    )
    assert schemas.fields(schemas.future(hourly))["day"]["logical"] == "local-timestamp-millis"
    blobs = runtime.embedded(tmp_path / "bucket").ports.blobs
    rows = "".join(
        f",berlin,2026-03-05T{hour:02d}:00:00,{'yes' if hour < 9 else 'no'}\n" for hour in range(4, 14)
    )
    assert _store_future(blobs, hourly, "SKU,Town,Day,Closed\n" + rows, "u1", NOW) == 1
    window = (datetime(2026, 3, 5, 6), datetime(2026, 3, 5, 12))
    values = future.read(blobs, hourly, "berlin", *window, ["a"]).values
    assert values["ts"].dt.hour.tolist() == [6, 7, 8, 9, 10, 11]
    assert values["closed"].tolist() == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]
