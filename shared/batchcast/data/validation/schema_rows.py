"""Good rows in the profile's Avro schema (trips aggregated to station-period counts)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from batchcast.core import schemas
from batchcast.core.config import Profile
from batchcast.core.schemas import GROUP_KEY
from batchcast.data.validation.mapping import ARRIVALS, DEPARTURES
from batchcast.data.validation.rows import Context


def add_up_station_periods(counts: pd.DataFrame, profile: Profile) -> pd.DataFrame:
    """Station-period counts of one (city, entity) made from several parts of a trips file: add up
    departures, arrivals and the net change per period (the other fields are null for trips)."""
    keys = [GROUP_KEY, profile.entity_key, profile.time_column]
    if not counts.duplicated(keys).any():
        return counts
    additive = [DEPARTURES, ARRIVALS, profile.target]
    summed = counts.groupby(keys, sort=False)[additive].sum()
    rest = counts.drop_duplicates(keys).set_index(keys).drop(columns=additive)
    return rest.join(summed).reset_index()[list(counts.columns)].astype(counts.dtypes.to_dict())


# -- good rows in the schema ---------------------------------------------------------------------


def schema_rows(context: Context, good: np.ndarray) -> pd.DataFrame:
    """The accepted rows as the schema's fields (the future-values schema's for a future mapping),
    typed and sorted by city, entity and period."""
    profile = context.profile
    rows = pd.DataFrame({n: v[good] for n, v in context.typed.items()}).reset_index(drop=True)
    if context.mapping.kind == "trips":
        rows = _station_periods(rows, profile)
    if context.mapping.kind in ("trips", "counts"):
        rows[profile.target] = rows[ARRIVALS] - rows[DEPARTURES]
    future = context.mapping.kind == "future"
    spec = schemas.fields(schemas.future(profile) if future else schemas.observation(profile))
    out = pd.DataFrame(index=rows.index)
    for name, info in spec.items():
        out[name] = _schema_column(rows.get(name), info, len(rows))
    keys = [GROUP_KEY, profile.entity_key, profile.time_column]
    return out.sort_values(keys, kind="stable").reset_index(drop=True)


def _station_periods(trips: pd.DataFrame, profile: Profile) -> pd.DataFrame:
    """Departures at (start station, start period) and arrivals at (end station, end period)."""
    step = pd.Timedelta(profile.period)
    index = [GROUP_KEY, profile.entity_key, profile.time_column]
    ends = {DEPARTURES: ("start_station_id", "started_at"), ARRIVALS: ("end_station_id", "ended_at")}
    counts = [
        pd.DataFrame(
            {
                GROUP_KEY: trips[GROUP_KEY],
                profile.entity_key: trips[station],
                profile.time_column: trips[when].dt.floor(step),
            }
        )
        .groupby(index)
        .size()
        .rename(name)
        for name, (station, when) in ends.items()
    ]
    return pd.concat(counts, axis=1).fillna(0).astype("int64").reset_index()


def _schema_column(values: pd.Series | None, info: dict[str, Any], rows: int) -> pd.Series | Any:
    """A column in the dtype ``schemas.write_frame`` expects (all null when the file lacks it)."""
    base, logical = info["type"], info["logical"]
    if logical in ("date", "local-timestamp-millis", "timestamp-millis"):
        return values if values is not None else pd.Series(pd.NaT, index=range(rows), dtype="datetime64[us]")
    if base in ("int", "long"):
        dtype = "Int64" if info["nullable"] else "int64"
    elif base in ("float", "double"):
        dtype = "float64"
    elif base == "boolean":
        dtype = "boolean"
    else:
        dtype = "str"
    if values is None:
        return pd.Series(pd.NA if dtype != "float64" else np.nan, index=range(rows), dtype=dtype)
    if dtype == "str" and info["nullable"]:
        text = values.astype("str")
        return text.where(text != "", None)  # an empty id may mean something: a future value's whole city
    return values.astype(dtype)


def add_up_rows(frame: pd.DataFrame, keys: list[str], reducers: dict[str, str]) -> pd.DataFrame:
    """Rows sharing ``keys`` (city, entity, period) as one, each field reduced as the mapping's
    ``aggregate`` says (sum, mean, max or last, in file order; unlisted fields keep the last value).
    ``_row`` becomes the group's first row."""
    if not frame.duplicated(keys).any():
        return frame
    frame = frame.sort_values("_row", kind="stable")
    grouped = frame.groupby(keys, sort=False, dropna=False)
    columns = {"_row": grouped["_row"].min()}
    for column in frame.columns.difference([*keys, "_row"]):
        how = reducers.get(column, "last")
        # A sum of nothing but empty values stays empty (not 0), as the other reducers do.
        columns[column] = grouped[column].sum(min_count=1) if how == "sum" else grouped[column].agg(how)
    added = pd.DataFrame(columns).reset_index()
    return added[list(frame.columns)].astype(frame.dtypes.to_dict())
