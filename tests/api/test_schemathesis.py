"""Requests generated from the committed OpenAPI schema, sent to ``batchcast serve`` over the stale
bucket with an operator's token: no server errors, and every answer as the schema documents it.

Two runs: the schema as it is (valid and invalid requests, random ids), and valid requests whose ids
are often ones the bucket has, so that 200 answers (JSON and CSV) are checked too.
"""

from __future__ import annotations

from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

OPENAPI = Path(__file__).resolve().parents[2] / "api" / "openapi.json"
KNOWN = {"dataset": ["retail", "bikeshare"], "store_id": ["1", "2", "4"], "entity_id": ["1", "4", "st-1"]}
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
OPERATOR = {"Authorization": "Bearer ops-token"}

schema = schemathesis.openapi.from_path(OPENAPI)
known_ids = schemathesis.openapi.from_path(OPENAPI)
known_ids.config.generation.update(modes=[schemathesis.GenerationMode.POSITIVE])


@known_ids.hook
def flatmap_path_parameters(context, path_parameters):
    """Half of the cases keep the generated ids, half use ids the bucket has."""
    if not path_parameters or not set(path_parameters) <= set(KNOWN):
        return st.just(path_parameters)
    known = st.fixed_dictionaries({name: st.sampled_from(KNOWN[name]) for name in path_parameters})
    return st.one_of(st.just(path_parameters), known)


@schema.parametrize()
@SETTINGS
def test_the_api_keeps_its_schema_and_never_fails(case, server):
    case.call_and_validate(base_url=server, headers=OPERATOR)


@known_ids.parametrize()
@SETTINGS
def test_existing_entities_answer_as_documented(case, server):
    case.call_and_validate(base_url=server, headers=OPERATOR)
