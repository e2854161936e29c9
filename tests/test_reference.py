"""The profile reference and JSON Schema in docs/ are generated from the models and kept current;
a profile's mistakes are all reported at once."""

from __future__ import annotations

import json
import tomllib
from importlib import resources

import jsonschema
import pytest

from batchcast.core import config
from batchcast.core.errors import ConfigError
from batchcast.tools import reference

STALE = "is out of date: run `python -m batchcast.tools.reference` and commit the result"


def test_the_reference_page_is_current() -> None:
    assert reference.REFERENCE.read_text() == reference.reference_markdown(), f"{reference.REFERENCE} {STALE}"


def test_the_json_schema_is_current() -> None:
    assert reference.SCHEMA.read_text() == reference.schema_text(), f"{reference.SCHEMA} {STALE}"


def test_every_field_has_a_description_and_an_example_or_is_required() -> None:
    rows = [line for line in reference.reference_markdown().splitlines() if line.startswith("| `")]
    assert len(rows) == sum(len(model.model_fields) for model, _ in reference.SECTIONS)
    for row in rows:
        field, _type, default, does, example = (cell.strip() for cell in row.strip("|").split(" | "))
        assert does, f"{field} has no description (give it a docstring in batchcast/core/config.py)"
        assert example or default == "required", f"{field} has neither an example nor a default"


@pytest.mark.parametrize("name", config.BUILTIN_PROFILES)
def test_the_built_in_profiles_pass_the_json_schema(name: str) -> None:
    text = (resources.files("batchcast.core") / "profiles" / f"{name}.toml").read_text()
    jsonschema.validate(tomllib.loads(text), json.loads(reference.SCHEMA.read_text()))


def test_the_json_schema_catches_a_misspelt_field_as_an_editor_would() -> None:
    text = (resources.files("batchcast.core") / "profiles" / "retail.toml").read_text()
    table = tomllib.loads(text.replace("[features]", "[feature]"))
    with pytest.raises(jsonschema.ValidationError, match="feature"):
        jsonschema.validate(table, json.loads(reference.SCHEMA.read_text()))


def test_every_profile_mistake_is_reported_at_once() -> None:
    text = """
name = "rides"
entity_key = "station"
time_column = "hour"
target = "rides"
frequency = "hourly"
timezone = "UTC"
[cities.dc]
country = "US"
[[schedule]]
cron = "0 * * * *"
actions = ["predict"]
[mappings.m]
columns = { station = "s", hour = "h", rides = "r", city = "c" }
"""
    with pytest.raises(ConfigError) as raised:
        config.parse_profile(text, "rides.toml")
    assert str(raised.value).splitlines() == [
        "rides.toml: invalid profile:",
        "  features: Field required",
        "  training: Field required",
        "  an hourly profile needs horizon.windows (e.g. [[6, 12], [12, 18]], local hours)",
    ]
    fixed = text.replace("[mappings.m]", "[features]\nlags = [1]\n[training]\nwindow = 30\n[mappings.m]")
    with pytest.raises(ConfigError) as raised:
        config.parse_profile(fixed.replace('"UTC"', '"UTC"\nhorizon = { windows = [[0, 6]] }'), "rides.toml")
    assert "every lag must be >= the horizon (6 periods); features.lags has 1" in str(raised.value)
