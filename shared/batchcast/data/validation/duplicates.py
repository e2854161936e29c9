"""Duplicates: which fields identify a row, and which repeats and conflicts are rejected."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from batchcast.core.config import ColumnMapping, Profile
from batchcast.core.schemas import GROUP_KEY
from batchcast.data.validation.mapping import source_of
from batchcast.data.validation.reasons import CONFLICT, DUPLICATE, show


def identity_fields(profile: Profile, mapping: ColumnMapping, fields: list[str]) -> list[str]:
    """The fields that identify a row: a trip's ride id (none when unmapped); else city, entity
    and period (future values without an entity column: city and period)."""
    if mapping.kind == "trips":
        return ["ride_id"] if "ride_id" in fields else []
    return [k for k in (GROUP_KEY, profile.entity_key, profile.time_column) if k in fields]


def find_duplicates(frame: pd.DataFrame, keys: list[str], versions: list[str]) -> pd.DataFrame:
    """Among rows (``_row``, good on their own) that share an identity (``keys``): if their values
    (``versions``) are all equal, the first stays and each repeat is rejected naming it; if they
    differ, all are rejected, since nothing says which is right. An empty identity (``_keyed``
    false: a trip without ride id) is never a duplicate.

    Returns every row of an identity held more than once: ``_row``, ``_identity`` (a number per
    identity), ``_first`` (its first row), ``_conflict`` and ``_rejected``.
    """
    columns = ["_row", "_identity", "_first", "_conflict", "_rejected"]
    if not keys:
        return pd.DataFrame(columns=columns)
    frame = frame[frame["_keyed"].to_numpy()]
    frame = frame[frame.duplicated(keys, keep=False)]
    if frame.empty:
        return pd.DataFrame(columns=columns)
    # pandas decides equality (NaN equals NaN); nothing walks the rows in Python.
    identity = frame.groupby(keys, dropna=False, sort=False).ngroup().to_numpy()
    version = frame.groupby(versions, dropna=False, sort=False).ngroup().to_numpy()
    rows = frame["_row"].to_numpy()
    conflict = pd.Series(version).groupby(identity).transform("nunique").to_numpy() > 1
    first = pd.Series(rows).groupby(identity).transform("min").to_numpy()
    return pd.DataFrame(
        {
            "_row": rows,
            "_identity": identity,
            "_first": first,
            "_conflict": conflict,
            "_rejected": conflict | (rows != first),
        }
    )


def kept_rows(frame: pd.DataFrame, found: pd.DataFrame) -> np.ndarray:
    """Which rows of ``frame`` :func:`find_duplicates` (its result ``found``) did not reject."""
    return ~frame["_row"].isin(found["_row"][found["_rejected"].astype(bool)]).to_numpy()


def repeat_reason(category: str, what: Any, identity: str) -> str:
    """The reason of a duplicate (``what``: the row it repeats) or a conflict (``what``: the first
    rows sharing its identity, and how many there are)."""
    if category == DUPLICATE:
        return f"{DUPLICATE}: repeats row {what + 1} ({identity})"
    rows, count = what
    listed = ", ".join(str(row + 1) for row in rows) + (
        f" and {count - len(rows)} more" if count > len(rows) else ""
    )
    return f"{CONFLICT}: rows {listed} share {identity} but differ in other values"


def raw_shown(text: pd.DataFrame, mapping: ColumnMapping, header: list[str], name: str, position: int) -> str:
    """``<user column> = '<value>'`` of one field of one row, from the row's text."""
    source = source_of(name, mapping, header)
    value = text[source].iat[position] if source in text.columns else mapping.constants.get(name, "")
    return f"{source} = {show(value)}"
