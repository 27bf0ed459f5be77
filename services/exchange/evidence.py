"""Evidence bundles (免提交材料包): one call fetches every government-issued material (政府部门核发的
申请材料) of a service item (政务服务事项) about one subject, so the applicant submits none of them.

The exchange knows service items and their materials from ``registry.events`` (ServiceItemChanged,
projected into ``exchange.service_items`` by ``messaging.apply_registry_event``), like resources and
grants: a bundle never waits for the registry, and works while it is down. Each mapped material is
one query through the ordinary query path (:meth:`Exchange.query`: the same grant checks, quota,
idempotency, audit record and deadline), at most ``evidence_concurrency`` at a time. A material's
outcome is ``fetched``, ``denied`` (the sharing rules refused: the problem says which) or
``unavailable`` (not mapped, no record, provider error or timeout).

Audit: every material asked is audited by its query (one ``exchange.query`` record per query,
carrying the bundle's id as ``bundle_id``); the bundle adds one ``exchange.evidence`` record whose
``query_id`` and ``bundle_id`` are the bundle id and whose ``fields`` are the ids of the queries it
fetched — so an auditor finds every record of a bundle by ``bundle_id``. A bundle
refused as a whole (not a consumer, a bad subject, an unknown service item) writes nothing but its
``exchange.evidence`` denial.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.bus import Message
from services.common.contracts.audit import AuditAction, AuditContext, audit_message
from services.common.contracts.registry import GOVERNMENT_ISSUED
from services.common.errors import NotFound, Problem
from services.common.identifiers import InvalidIdentifier
from services.common.security import Principal
from services.common.subjects import normalise_subject, subject_hash
from services.exchange.models import EvidenceBundle, Query, ServiceItemView
from services.exchange.problems import ExchangeProblem
from services.exchange.schemas import (
    EvidenceBundlePublic,
    EvidenceCreate,
    MaterialOutcome,
    MaterialResult,
    QueryCreate,
)
from services.exchange.service import Denied, Exchange, query_view

COMPLETED = "completed"  # the audit outcome of a bundle answered (whatever its materials' outcomes)

# Refusals that say the catalogue moved under the material's mapping (the resource or an item is
# gone), not that the sharing rules refused: the material is unavailable, not denied.
CATALOGUE_MOVED = frozenset({ExchangeProblem.UNKNOWN_RESOURCE, ExchangeProblem.UNKNOWN_ITEMS})


class EvidenceMetrics:
    """How evidence bundles end, and what their materials came to."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.bundles = Counter(
            "tongban_exchange_evidence_bundles",
            "Evidence bundles (免提交) asked for, by outcome: completed, or the refusal's problem code",
            ["outcome"],
            registry=registry,
        )
        self.materials = Counter(
            "tongban_exchange_evidence_materials",
            "Government-issued materials of evidence bundles, by outcome: fetched, denied or unavailable",
            ["outcome"],
            registry=registry,
        )
        self.latency = Histogram(
            "tongban_exchange_evidence_seconds",
            "Time to answer an evidence bundle (every material fetched or given up)",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=registry,
        )


def not_mapped(material: dict[str, Any]) -> Problem:
    return ExchangeProblem.MATERIAL_NOT_MAPPED.problem(
        f"材料 {material['name']} is issued by a department but not mapped to a catalogue resource; "
        "the applicant submits it."
    )


class Evidence:
    """Answers evidence bundles through ``exchange``'s query path."""

    def __init__(self, exchange: Exchange, metrics: EvidenceMetrics | None = None) -> None:
        self.exchange = exchange
        self.metrics = metrics or EvidenceMetrics(CollectorRegistry())

    def audit_message(self, ctx: AuditContext, *, outcome: str, reason: str = "") -> Message:
        return audit_message(
            self.exchange.settings.topic("audit.events"),
            "exchange",
            AuditAction.EXCHANGE_EVIDENCE,
            ctx,
            outcome=outcome,
            reason=reason,
        )

    async def deny(self, ctx: AuditContext, denied: Denied) -> Problem:
        """Record the bundle's refusal durably (its only record), then hand it back to raise."""
        async with self.exchange.outbox.unit_of_work(wait_for_publish=False) as uow:
            uow.emit(self.audit_message(ctx, outcome="denied", reason=str(denied.code)))
        self.metrics.bundles.labels(str(denied.code)).inc()
        return denied

    async def bundle(
        self, principal: Principal, body: EvidenceCreate, idempotency_key: str | None
    ) -> EvidenceBundlePublic:
        """Fetch every government-issued material of ``body.service_item`` about ``body.subject``.

        With an ``Idempotency-Key``, each material's query uses ``<key>:<material id>``: a retry of
        the bundle asks no provider again (the answers are replayed), though it is a new bundle."""
        began = time.monotonic()
        purpose = body.purpose or body.service_item
        ctx = AuditContext(
            actor=principal.sub,
            consumer_dept=principal.dept,
            consumer_client_id=principal.client_id or "",
            purpose=purpose,
            subject_type=body.subject.type,
        )
        try:
            self.exchange.authorise(principal)
            ctx = ctx.with_(
                subject_hash=self.subject_hash(body), subject_key_id=self.exchange.settings.subject_hash_key_id
            )
            item = await self.service_item(body.service_item)
        except Denied as denied:
            raise await self.deny(ctx, denied) from None

        bundle_id = uuid.uuid4()  # before the materials are asked: their audit records name it
        limit = asyncio.Semaphore(self.exchange.settings.evidence_concurrency)
        government = [m for m in item.materials if m["source"] == GOVERNMENT_ISSUED]
        results = await asyncio.gather(
            *(self.fetch(principal, body, purpose, m, limit, idempotency_key, bundle_id) for m in government),
            return_exceptions=True,
        )
        # Anything but a problem (the database went away before a query was written) fails the
        # bundle: raised only once every material's query has ended, so none is left running.
        for result in results:
            if isinstance(result, BaseException):
                raise result
        materials = [r for r in results if isinstance(r, MaterialResult)]
        fetched = [r for r in materials if r.outcome == MaterialOutcome.FETCHED]
        bundle = EvidenceBundle(
            id=bundle_id,
            client_id=principal.client_id or "",
            consumer_dept=principal.dept,
            actor=principal.sub,
            service_item=item.code,
            purpose=purpose,
            subject_type=body.subject.type,
            subject_hash=ctx.subject_hash,
            materials_total=len(item.materials),
            exempt=len(fetched),
            outcomes=[r.model_dump(mode="json", exclude={"answer"}) for r in materials],
            created_at=datetime.now(UTC),
        )
        record = ctx.with_(
            query_id=str(bundle.id), bundle_id=str(bundle.id), fields=tuple(str(r.query_id) for r in fetched)
        )
        async with self.exchange.outbox.unit_of_work(wait_for_publish=False) as uow:
            uow.session.add(bundle)
            uow.emit(self.audit_message(record, outcome=COMPLETED))
        self.metrics.bundles.labels(COMPLETED).inc()
        for r in materials:
            self.metrics.materials.labels(r.outcome).inc()
        self.metrics.latency.observe(time.monotonic() - began)
        return public(bundle, materials)

    def subject_hash(self, body: EvidenceCreate) -> str:
        """The subject's keyed hash, its identifier checked first (as a query checks it): a bad
        check digit refuses the bundle once, not once per material."""
        try:
            value = normalise_subject(body.subject.type, body.subject.value)
        except InvalidIdentifier as err:
            raise Denied(ExchangeProblem.INVALID_SUBJECT, str(err)) from err
        return subject_hash(self.exchange.settings.subject_hash_key, body.subject.type, value)

    async def service_item(self, code: str) -> ServiceItemView:
        """The service item as the registry last published it; unknown or withdrawn is refused."""
        async with self.exchange.outbox.sessions() as session:
            item = await session.get(ServiceItemView, code)
        if item is None or item.withdrawn:
            raise Denied(ExchangeProblem.UNKNOWN_SERVICE_ITEM, f"No published service item (事项) {code!r}.")
        return item

    async def fetch(
        self,
        principal: Principal,
        body: EvidenceCreate,
        purpose: str,
        material: dict[str, Any],
        limit: asyncio.Semaphore,
        idempotency_key: str | None,
        bundle_id: uuid.UUID,
    ) -> MaterialResult:
        """One material: its query's answer, or why it could not be fetched."""
        head: dict[str, Any] = {
            "material_id": material["id"],
            "name": material["name"],
            "necessity": material["necessity"],
            "resource": material["resource_code"],
        }
        if not material["resource_code"]:
            return MaterialResult(**head, outcome=MaterialOutcome.UNAVAILABLE, problem=not_mapped(material).body())
        query = QueryCreate(
            resource=material["resource_code"],
            purpose=purpose,
            subject=body.subject,
            fields=material["items"] or None,
            timeout_ms=body.timeout_ms,
        )
        key = f"{idempotency_key}:{material['id']}" if idempotency_key else None
        async with limit:
            try:
                answer = await self.exchange.query(principal, query, key, bundle_id=bundle_id)
            except Denied as denied:
                outcome = MaterialOutcome.UNAVAILABLE if denied.code in CATALOGUE_MOVED else MaterialOutcome.DENIED
                return MaterialResult(**head, outcome=outcome, problem=denied.body())
            except Problem as problem:  # no record, provider error, timeout: asked, not answered
                query_id = problem.extra.get("query_id")
                return MaterialResult(
                    **head, outcome=MaterialOutcome.UNAVAILABLE, query_id=query_id, problem=problem.body()
                )
        return MaterialResult(**head, outcome=MaterialOutcome.FETCHED, query_id=answer["id"], answer=answer)


def public(bundle: EvidenceBundle, materials: list[MaterialResult]) -> EvidenceBundlePublic:
    return EvidenceBundlePublic(
        id=bundle.id,
        service_item=bundle.service_item,
        purpose=bundle.purpose,
        materials_total=bundle.materials_total,
        government_issued=len(materials),
        exempt=bundle.exempt,
        materials=materials,
        created_at=bundle.created_at,
    )


async def read_bundle(session: AsyncSession, principal: Principal, bundle_id: uuid.UUID) -> EvidenceBundlePublic:
    """A bundle for the system that asked for it (anyone else: 404), with each fetched material's
    answer as its query now shows it (gone once purged after the answer retention period)."""
    bundle = await session.get(EvidenceBundle, bundle_id)
    if bundle is None or not principal.is_system or bundle.client_id != principal.client_id:
        raise NotFound("evidence bundle", str(bundle_id))
    materials = [MaterialResult.model_validate(o) for o in bundle.outcomes]
    ids = [m.query_id for m in materials if m.outcome == MaterialOutcome.FETCHED and m.query_id is not None]
    queries = {
        q.id: q
        for q in (
            await session.scalars(select(Query).where(Query.id.in_(ids), Query.client_id == bundle.client_id))
        ).all()
    }
    for m in materials:
        if m.query_id in queries:
            m.answer = query_view(queries[m.query_id])
    return public(bundle, materials)
