"""The exchange's projection of ``registry.events``: registry events are keyed by event id, so they
reach the exchange in any order across partitions; what it serves must not depend on that order."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.contracts.registry import GrantTerms, PublishedResource
from services.common.pb import registry_pb2 as pb
from services.exchange.messaging import apply_registry_event
from services.exchange.models import GrantView, ResourceView
from tests.factories import HOUSEHOLD_ITEMS, credit_code

CODE = "101010/000042"


def published(version: int, name: str) -> pb.RegistryEvent:
    resource = PublishedResource(
        code=CODE,
        name=name,
        provider_dept=credit_code("110101"),
        version=version,
        share_type="conditional",
        items=[item.model_dump() for item in HOUSEHOLD_ITEMS],
    )
    return pb.RegistryEvent(event_id=f"e-{version}", resource_published=resource.to_proto())


async def served(session: AsyncSession) -> tuple[int, str]:
    view = (await session.execute(select(ResourceView).where(ResourceView.code == CODE))).scalar_one()
    await session.refresh(view)
    return view.version, view.name


async def test_a_newer_version_replaces_an_older_one(session: AsyncSession) -> None:
    await apply_registry_event(session, published(1, "居民户籍信息"))
    await apply_registry_event(session, published(2, "居民户籍信息（第二版）"))
    assert await served(session) == (2, "居民户籍信息（第二版）")


async def test_an_older_version_arriving_late_changes_nothing(session: AsyncSession) -> None:
    await apply_registry_event(session, published(2, "居民户籍信息（第二版）"))
    await apply_registry_event(session, published(1, "居民户籍信息"))
    assert await served(session) == (2, "居民户籍信息（第二版）")


async def test_a_revocation_before_its_grant_stays_revoked_and_gets_the_terms(session: AsyncSession) -> None:
    # Keyed by event id, the revocation may be applied first: the grant's own event then fills in
    # the terms (so the consumer is told "grant-revoked", not "no-grant") without reviving it.
    grant_id = uuid.uuid4()
    terms = GrantTerms(
        id=grant_id,
        resource_code=CODE,
        provider_dept=credit_code("110101"),
        consumer_dept=credit_code("110102"),
        client_id="sys-projection",
        items=["姓名"],
        purpose="ZWFW-0001",
        masking={},
        valid_until=datetime.now(UTC) + timedelta(days=1),
        daily_quota=10,
    )
    revoked = pb.RegistryEvent(event_id="r", grant_revoked=pb.GrantRevoked(grant_id=str(grant_id), reason="x"))
    await apply_registry_event(session, revoked)
    await apply_registry_event(session, pb.RegistryEvent(event_id="i", grant_issued=terms.to_proto()))
    await apply_registry_event(session, revoked)  # delivered again

    grant = (await session.execute(select(GrantView).where(GrantView.id == grant_id))).scalar_one()
    await session.refresh(grant)
    assert (grant.revoked, grant.client_id, grant.items, grant.daily_quota) == (True, "sys-projection", ["姓名"], 10)
