"""What clients can send to the three lists and the service items: any JSON either makes a valid
body or is a validation error (a 422 problem), never another exception; and a valid body holds
only text PostgreSQL can store."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from services.common.schemas import storable_text_problem
from services.registry.lists.schemas import DemandCreate, NegativeLineCreate, ResponsibilityCreate
from services.registry.service_items.schemas import MaterialSpec, ServiceItemCreate

BODIES: list[type[BaseModel]] = [
    ResponsibilityCreate,
    DemandCreate,
    NegativeLineCreate,
    MaterialSpec,
    ServiceItemCreate,
]
FIELDS = sorted({name for body in BODIES for name in body.model_fields})

# Values a client could put in a field: nearby-valid and hostile text, numbers, lists, nulls.
texts = st.one_of(
    st.text(max_size=60),
    st.sampled_from(["government", "applicant", "required", "conditional", "姓名", "2027-03-31", "\x00", "\ud800"]),
    st.text(alphabet="名", min_size=190, max_size=520),
)
values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), texts),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=8,
)


@pytest.mark.parametrize("body", BODIES, ids=lambda b: b.__name__)
@given(data=st.dictionaries(st.sampled_from(FIELDS), values, max_size=8))
@settings(deadline=None)  # on a busy shared machine one example may take longer than 200 ms
def test_any_json_is_a_body_or_a_validation_error(body: type[BaseModel], data: dict[str, Any]) -> None:
    try:
        parsed = body.model_validate(data)
    except ValidationError:
        return
    assert storable_text_problem(parsed.model_dump(mode="json")) is None
