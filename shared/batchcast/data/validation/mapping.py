"""Choosing the profile and column mapping that fit a header, and the fields the mapping reads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from batchcast.core import config, schemas
from batchcast.core.config import ColumnMapping, Profile
from batchcast.core.schemas import GROUP_KEY
from batchcast.data.validation.reasons import FileRejected, listing

DEPARTURES, ARRIVALS = config.COUNT_FIELDS  # what the counts and trips kinds count


@dataclass(frozen=True)
class Field:
    """One pipeline field a mapping reads: what kind of value it holds and whether it may be empty."""

    name: str
    kind: str  # id, city, period, timestamp, integer, number, boolean, text
    nullable: bool
    avro: str = "string"  # the Avro type (its range bounds integers)
    logical: str | None = None


# A trips mapping reads these fields (its schema fields are derived from them).
TRIP_FIELDS = tuple(Field(name, kind, nullable) for name, (kind, nullable) in config.TRIP_FIELDS.items())


# -- choosing the profile and mapping ------------------------------------------------------------


def choose_mapping(
    header: list[str], profiles: list[Profile], dataset: str | None, name: str | None
) -> tuple[Profile, str, ColumnMapping]:
    if dataset is not None:
        known = ", ".join(sorted(p.name for p in profiles))
        profiles = [p for p in profiles if p.name == dataset]
        if not profiles:
            raise FileRejected(f"unknown dataset {dataset!r} (object metadata 'dataset'); known: {known}")
    if name is not None and not any(name in p.mappings for p in profiles):
        known = ", ".join(sorted({m for p in profiles for m in p.mappings}))
        raise FileRejected(f"unknown mapping {name!r} (object metadata 'mapping'); known: {known}")
    fits = []
    for profile in profiles:
        if name is None:
            fit = profile.mapping_for(header)
        elif name in profile.mappings and profile.mappings[name].source_columns <= set(header):
            fit = (name, profile.mappings[name])
        else:
            fit = None
        if fit:
            fits.append((profile, *fit))
    if not fits:
        raise FileRejected(_missing_columns(header, profiles, name))
    best = max(len(m.source_columns) for _, _, m in fits)
    tied = [(p, n, m) for p, n, m in fits if len(m.source_columns) == best]
    if len(tied) > 1:
        options = " and ".join(f"dataset {p.name} (mapping {n})" for p, n, _ in tied)
        raise FileRejected(
            f"ambiguous header: it fits {options} equally; set the object metadata 'dataset' to choose"
        )
    if name is None:
        _refuse_a_guess(header, *tied[0])
    return tied[0]


def _refuse_a_guess(header: list[str], profile: Profile, name: str, mapping: ColumnMapping) -> None:
    """A detected mapping that fits only by ignoring columns another mapping of the dataset reads is
    a guess (a sales export without its sales column is not a plans upload): refuse it, naming what
    the other mapping lacks."""
    dropped = [c for c in header if c not in mapping.read_columns]
    others = [
        (other, m, sorted(m.source_columns - set(header)))
        for other, m in profile.mappings.items()
        if other != name and set(dropped) & m.read_columns
    ]
    if not others:
        return
    other, closest, missing = min(others, key=lambda o: len(o[2]))
    read = sorted(set(dropped) & closest.read_columns)
    raise FileRejected(
        f"no mapping fits without dropping columns: mapping {name} ({mapping.kind}) of dataset "
        f"{profile.name} would ignore {listing(read)}, which mapping {other} ({closest.kind}) reads, and "
        f"for mapping {other} the file lacks {listing(missing)}; add the missing columns, or set the "
        f"object metadata 'mapping' to {name} if the file really is {mapping.kind} data"
    )


def closest_history_mapping(header: list[str], profile: Profile) -> str:
    """``mapping <name> (lacks <columns>)`` for the history mapping the header comes closest to."""
    options = [
        (n, sorted(m.source_columns - set(header))) for n, m in profile.mappings.items() if m.kind != "future"
    ]
    if not options:
        return "no history mapping"
    name, missing = min(options, key=lambda o: len(o[1]))
    return f"mapping {name} (the file lacks {listing(missing)})" if missing else f"mapping {name}"


def with_broken(reason: str, broken: dict[str, str]) -> str:
    """A rejection's reason, plus the profiles that could not be loaded: the upload may be for one."""
    if not broken:
        return reason
    names = "; ".join(" ".join(why.split()) for why in broken.values())
    return f"{reason} (profiles that could not be loaded, so no upload fits them: {names})"


def _missing_columns(header: list[str], profiles: list[Profile], name: str | None) -> str:
    """Name the closest mapping and exactly which of its columns the header lacks.

    A future-values mapping needs few columns, so it would be the closest fit of any stray file: it
    is only suggested when the header has one of its covariates' columns (or it was named).
    """
    present = set(header)
    candidates = [
        (p, n, [c for f, c in m.columns.items() if f not in m.optional and c not in present])
        for p in profiles
        for n, m in p.mappings.items()
        if name in (None, n) and (m.kind != "future" or name or _reads_a_covariate(p, m, present))
    ]
    if not candidates:
        return "missing columns: no profile is enabled"
    profile, closest, missing = min(candidates, key=lambda c: len(c[2]))
    found = listing(header, quote=False) if header else "none"
    return (
        f"missing columns: {', '.join(missing)} (closest fit: dataset {profile.name}, mapping {closest}; "
        f"columns found: {found})"
    )


def _reads_a_covariate(profile: Profile, mapping: ColumnMapping, header: set[str]) -> bool:
    return any(mapping.columns.get(c) in header for c in profile.covariates)


def check_columns(header: list[str], profile: Profile, name: str, mapping: ColumnMapping) -> list[str]:
    """File-level column rules; return the warnings they leave."""
    fields = input_fields(profile, mapping)
    unfilled = [f.name for f in fields if not f.nullable and source_of(f.name, mapping, header) is None]
    if unfilled:
        raise FileRejected(
            f"mapping {name} of dataset {profile.name} provides no column or constant for the required "
            f"fields {', '.join(unfilled)}"
        )
    known = [c for c in profile.known_covariates if c in mapping.columns]
    if mapping.kind == "future" and not any(source_of(c, mapping, header) for c in known):
        wanted = ", ".join(f"{c} (column {mapping.columns[c]!r})" for c in known)
        raise FileRejected(
            f"no values: mapping {name} of dataset {profile.name} reads future values of {wanted}, "
            "and the file has none of those columns"
        )
    extra = [c for c in header if c not in mapping.read_columns]
    if not extra:
        return []
    listed = listing(extra)
    if mapping.extra_columns == "reject":
        raise FileRejected(
            f"unexpected columns {listed}: mapping {name} of dataset {profile.name} rejects "
            f"columns it does not map (it maps {', '.join(mapping.columns.values())})"
        )
    return [f"ignored columns that mapping {name} does not map: {listed}"]


def input_fields(profile: Profile, mapping: ColumnMapping) -> list[Field]:
    """The fields a mapping reads from the file, in the order they are checked (city first)."""
    if mapping.kind == "trips":
        fields = list(TRIP_FIELDS)
    else:
        schema = schemas.future(profile) if mapping.kind == "future" else schemas.observation(profile)
        readable = profile.mapping_fields(mapping.kind)
        fields = [
            Field(n, _kind(n, info, profile), info["nullable"], info["type"], info["logical"])
            for n, info in schemas.fields(schema).items()
            if n in readable
        ]
    return sorted(fields, key=lambda f: f.kind != "city")


def _kind(name: str, info: dict[str, Any], profile: Profile) -> str:
    if name == profile.entity_key:
        return "id"
    if name == GROUP_KEY:
        return "city"
    if name == profile.time_column:
        return "period"
    if info["logical"] in ("date", "local-timestamp-millis", "timestamp-millis"):
        return "timestamp"
    return {
        "int": "integer",
        "long": "integer",
        "float": "number",
        "double": "number",
        "boolean": "boolean",
    }.get(info["type"], "text")


def source_of(field_name: str, mapping: ColumnMapping, header: list[str]) -> str | None:
    """Where a field's values come from: its column if the file has it, else a constant, else None."""
    column = mapping.columns.get(field_name)
    if column is not None and column in header:
        return column
    return None if field_name not in mapping.constants else f"{field_name} (constant)"
