"""``registry.events`` (proto/registry.proto): what the registry tells the exchange.

The registry builds these from its tables; the exchange keeps them as its projection
(``exchange.resources``, ``exchange.grants``, ``exchange.service_items``). Both sides use the functions here.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from typing import Any

from services.common.bus import Message
from services.common.pb import registry_pb2 as pb

Item = Mapping[str, Any]  # name, data_type, length, sensitive, masking (as the catalogue keeps it)


@dataclass(frozen=True, slots=True)
class PublishedResource:
    """ResourcePublished — 信息资源发布: a catalogue entry the exchange may serve."""

    code: str
    name: str
    provider_dept: str
    version: int
    share_type: str
    items: list[dict[str, Any]]

    def to_proto(self) -> pb.ResourcePublished:
        return pb.ResourcePublished(
            code=self.code,
            name=self.name,
            provider_dept=self.provider_dept,
            version=self.version,
            share_type=self.share_type,
            items=[
                pb.InformationItem(
                    name=i["name"],
                    data_type=i["data_type"],
                    length=i["length"],
                    sensitive=bool(i.get("sensitive")),
                    masking=i.get("masking") or "",
                )
                for i in self.items
            ],
        )

    @classmethod
    def from_proto(cls, m: pb.ResourcePublished) -> PublishedResource:
        items = [
            {
                "name": i.name,
                "data_type": i.data_type,
                "length": i.length,
                "sensitive": i.sensitive,
                "masking": i.masking,
            }
            for i in m.items
        ]
        return cls(m.code, m.name, m.provider_dept, m.version, m.share_type, items)

    def values(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class GrantTerms:
    """GrantIssued — 授权: what a consuming system may fetch, for which purpose, until when."""

    id: uuid.UUID
    resource_code: str
    provider_dept: str
    consumer_dept: str
    client_id: str
    items: list[str]
    purpose: str
    masking: dict[str, str]
    valid_until: datetime
    daily_quota: int

    def to_proto(self) -> pb.GrantIssued:
        return pb.GrantIssued(
            grant_id=str(self.id),
            resource_code=self.resource_code,
            provider_dept=self.provider_dept,
            consumer_dept=self.consumer_dept,
            client_id=self.client_id,
            items=self.items,
            purpose=self.purpose,
            valid_until_unix_ms=int(self.valid_until.timestamp() * 1000),
            daily_quota=self.daily_quota,
            masking=self.masking,
        )

    @classmethod
    def from_proto(cls, m: pb.GrantIssued) -> GrantTerms:
        return cls(
            id=uuid.UUID(m.grant_id),
            resource_code=m.resource_code,
            provider_dept=m.provider_dept,
            consumer_dept=m.consumer_dept,
            client_id=m.client_id,
            items=list(m.items),
            purpose=m.purpose,
            masking=dict(m.masking),
            valid_until=datetime.fromtimestamp(m.valid_until_unix_ms / 1000, UTC),
            daily_quota=m.daily_quota,
        )

    def values(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class ResourceChange:
    """ResourceChanged — a catalogue entry's lifecycle transition other than publication."""

    code: str
    provider_dept: str
    version: int
    change: str  # created | edited | submitted | rejected | deprecated
    actor: str
    reason: str = ""

    def to_proto(self) -> pb.ResourceChanged:
        return pb.ResourceChanged(**asdict(self))

    @classmethod
    def from_proto(cls, m: pb.ResourceChanged) -> ResourceChange:
        return cls(m.code, m.provider_dept, m.version, m.change, m.actor, m.reason)


@dataclass(frozen=True, slots=True)
class ApplicationChange:
    """ApplicationChanged — an application (共享申请) submitted, approved or rejected."""

    application_id: uuid.UUID
    resource_code: str
    provider_dept: str
    consumer_dept: str
    client_id: str
    change: str  # submitted | approved | rejected
    status: str
    items: list[str]
    purpose: str
    actor: str
    due_by: date | None = None
    reason: str = ""
    grant_id: uuid.UUID | None = None

    def to_proto(self) -> pb.ApplicationChanged:
        return pb.ApplicationChanged(
            application_id=str(self.application_id),
            resource_code=self.resource_code,
            provider_dept=self.provider_dept,
            consumer_dept=self.consumer_dept,
            client_id=self.client_id,
            change=self.change,
            status=self.status,
            items=self.items,
            purpose=self.purpose,
            actor=self.actor,
            due_by=self.due_by.isoformat() if self.due_by else "",
            reason=self.reason,
            grant_id=str(self.grant_id) if self.grant_id else "",
        )

    @classmethod
    def from_proto(cls, m: pb.ApplicationChanged) -> ApplicationChange:
        return cls(
            application_id=uuid.UUID(m.application_id),
            resource_code=m.resource_code,
            provider_dept=m.provider_dept,
            consumer_dept=m.consumer_dept,
            client_id=m.client_id,
            change=m.change,
            status=m.status,
            items=list(m.items),
            purpose=m.purpose,
            actor=m.actor,
            due_by=date.fromisoformat(m.due_by) if m.due_by else None,
            reason=m.reason,
            grant_id=uuid.UUID(m.grant_id) if m.grant_id else None,
        )


# 来源渠道 of a material issued by a government department (the registry's MaterialSource.GOVERNMENT):
# the only kind that maps to a resource, so the only kind the exchange can fetch.
GOVERNMENT_ISSUED = "government"


@dataclass(frozen=True, slots=True)
class MaterialEntry:
    """One 申请材料 of a service item: where it comes from (来源渠道), whether it is needed
    (必要性), and, for a government-issued one, the resource and 信息项 that cover it."""

    id: uuid.UUID
    name: str
    source: str
    necessity: str
    resource_code: str | None
    items: list[str]

    def to_proto(self) -> pb.ServiceItemMaterial:
        return pb.ServiceItemMaterial(
            id=str(self.id),
            name=self.name,
            source=self.source,
            necessity=self.necessity,
            resource_code=self.resource_code or "",
            items=self.items,
        )

    @classmethod
    def from_proto(cls, m: pb.ServiceItemMaterial) -> MaterialEntry:
        return cls(uuid.UUID(m.id), m.name, m.source, m.necessity, m.resource_code or None, list(m.items))


@dataclass(frozen=True, slots=True)
class ServiceItemSnapshot:
    """ServiceItemChanged — 政务服务事项: the whole item after a change; the highest ``version``
    wins, so snapshots may be applied in any order."""

    code: str
    name: str
    dept: str
    version: int
    withdrawn: bool
    materials: list[MaterialEntry]

    def to_proto(self) -> pb.ServiceItemChanged:
        return pb.ServiceItemChanged(
            code=self.code,
            name=self.name,
            dept=self.dept,
            version=self.version,
            withdrawn=self.withdrawn,
            materials=[m.to_proto() for m in self.materials],
        )

    @classmethod
    def from_proto(cls, m: pb.ServiceItemChanged) -> ServiceItemSnapshot:
        materials = [MaterialEntry.from_proto(x) for x in m.materials]
        return cls(m.code, m.name, m.dept, m.version, m.withdrawn, materials)


def event_message(
    topic: str,
    *,
    published: PublishedResource | None = None,
    issued: GrantTerms | None = None,
    revoked: tuple[uuid.UUID, str] | None = None,
    resource_changed: ResourceChange | None = None,
    application_changed: ApplicationChange | None = None,
    service_item: ServiceItemSnapshot | None = None,
) -> Message:
    """A ``RegistryEvent`` carrying exactly one of its kinds, keyed by its event id (the wire
    contract: consumers are idempotent by event id, and a revocation that overtakes its grant
    leaves a tombstone in the exchange's projection)."""
    event = pb.RegistryEvent(event_id=uuid.uuid4().hex, occurred_unix_ms=int(time.time() * 1000))
    kinds: Sequence[object] = [
        k for k in (published, issued, revoked, resource_changed, application_changed, service_item) if k is not None
    ]
    if len(kinds) != 1:
        raise ValueError("a registry event carries exactly one kind")
    if published is not None:
        event.resource_published.CopyFrom(published.to_proto())
    elif issued is not None:
        event.grant_issued.CopyFrom(issued.to_proto())
    elif revoked is not None:
        event.grant_revoked.CopyFrom(pb.GrantRevoked(grant_id=str(revoked[0]), reason=revoked[1]))
    elif resource_changed is not None:
        event.resource_changed.CopyFrom(resource_changed.to_proto())
    elif application_changed is not None:
        event.application_changed.CopyFrom(application_changed.to_proto())
    elif service_item is not None:
        event.service_item_changed.CopyFrom(service_item.to_proto())
    return Message(topic=topic, key=event.event_id.encode(), value=event.SerializeToString())
