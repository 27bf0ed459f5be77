"""``registry.events`` (proto/registry.proto) as the registry writes it: each kind maps to the wire
and back unchanged, and every message is keyed by its event id (the wire contract)."""

from __future__ import annotations

import uuid
from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.common.contracts.registry import ApplicationChange, ResourceChange, event_message
from services.common.pb import registry_pb2 as pb

TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)


@given(
    st.builds(
        ApplicationChange,
        application_id=st.uuids(),
        resource_code=TEXT,
        provider_dept=TEXT,
        consumer_dept=TEXT,
        client_id=TEXT,
        change=st.sampled_from(["submitted", "approved", "rejected"]),
        status=st.sampled_from(["pending", "approved", "rejected"]),
        items=st.lists(TEXT, max_size=5),
        purpose=TEXT,
        actor=TEXT,
        due_by=st.none() | st.dates(min_value=date(2000, 1, 1)),
        reason=TEXT,
        grant_id=st.none() | st.uuids(),
    )
)
def test_an_application_change_crosses_the_wire_unchanged(change: ApplicationChange) -> None:
    message = event_message("t.registry.events", application_changed=change)
    event = pb.RegistryEvent.FromString(message.value)
    assert message.key == event.event_id.encode()
    assert event.WhichOneof("event") == "application_changed"
    assert ApplicationChange.from_proto(event.application_changed) == change


@given(st.builds(ResourceChange, code=TEXT, provider_dept=TEXT, version=st.integers(1, 2**31 - 1)))
def test_a_resource_change_crosses_the_wire_unchanged(change: ResourceChange) -> None:
    message = event_message("t.registry.events", resource_changed=change)
    event = pb.RegistryEvent.FromString(message.value)
    assert message.key == event.event_id.encode()
    assert ResourceChange.from_proto(event.resource_changed) == change


def test_two_events_of_one_object_have_their_own_keys() -> None:
    grant = uuid.uuid4()
    first = event_message("t", revoked=(grant, "a"))
    second = event_message("t", revoked=(grant, "a"))
    assert first.key != second.key


def test_an_event_carries_exactly_one_kind() -> None:
    change = ResourceChange("101010/000001", "111101000000198608", 1, "created", "admin")
    with pytest.raises(ValueError, match="exactly one"):
        event_message("t", resource_changed=change, revoked=(uuid.uuid4(), "x"))
    with pytest.raises(ValueError, match="exactly one"):
        event_message("t")
