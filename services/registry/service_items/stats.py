"""The registry's figures (``GET /v1/registry/stats``), per department and overall.

免提交 — a material the applicant need not submit — is the reform's headline figure (材料 cut by
60 %). A material counts as 免提交 only when the exchange can really fetch it, today:

- it is government-issued (政府部门核发) and mapped to a resource and the 信息项 covering it;
- that resource is published, shared (无条件 or 有条件, not 不予共享), still has those 信息项,
  and neither it nor any of them is on the 负面清单;
- the implementing department holds a live grant (active, not expired) on that resource covering
  those 信息项 for this very 事项 — purpose binding: data granted for one 事项 may not be used for
  another, so a grant for another purpose does not exempt the material.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable
from datetime import date, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.calendar import WorkingCalendar
from services.registry.models import (
    ApplicationStatus,
    GrantStatus,
    MaterialSource,
    ResourceStatus,
    ResponsibilityState,
)
from services.registry.service_items.schemas import (
    ApplicationCounts,
    CalendarCoverage,
    DepartmentStats,
    ResponsibilityCounts,
    StatsPublic,
)

# The materials with the resource each could be fetched from: joined only when it is government
# issued, mapped, published, shared, still has the mapped 信息项 and none of it is 负面清单-listed.
MATERIAL_SOURCES = """
      FROM registry.materials m
      JOIN registry.service_items si ON si.code = m.service_item_code
      LEFT JOIN registry.resources r
        ON r.code = m.resource_code
       AND m.source = :government
       AND cardinality(m.items) > 0
       AND r.status = :published
       AND r.share_type IN ('unconditional', 'conditional')
       AND m.items::text[] <@ ARRAY(SELECT jsonb_array_elements(r.items)->>'name')
       AND NOT EXISTS (
           SELECT 1 FROM registry.negative_lines n
            WHERE n.resource_code = r.code AND (n.item IS NULL OR n.item = ANY(m.items))
       )
"""
# ... and 免提交 when, moreover, its department holds a live grant covering them for this 事项.
EXEMPT = """
      r.code IS NOT NULL AND EXISTS (
          SELECT 1 FROM registry.grants g
           WHERE g.resource_code = r.code AND g.consumer_dept = si.dept AND g.purpose = si.code
             AND g.status = :active AND g.valid_until > :now
             AND m.items::text[] <@ g.items::text[]
      )
"""
MATERIALS = text(
    f"SELECT si.dept, count(*) AS materials, count(*) FILTER (WHERE {EXEMPT}) AS exempt"
    f" {MATERIAL_SOURCES} GROUP BY si.dept"
)
EXEMPT_OF = text(f"SELECT m.id {MATERIAL_SOURCES} WHERE si.code = ANY(:codes) AND {EXEMPT}")


RESOURCES = text(
    """
    SELECT provider_dept, share_type, count(*) AS n
      FROM registry.resources WHERE status = :published
     GROUP BY provider_dept, share_type
    """
)

RESPONSIBILITIES = text(
    """
    SELECT dept, count(*) AS total,
           count(*) FILTER (WHERE status = :fulfilled) AS fulfilled,
           count(*) FILTER (WHERE status = :planned AND due_by < :today) AS overdue
      FROM registry.responsibilities
     GROUP BY dept
    """
)

# The due date is the last day to decide (10 working days): overdue from the day after it.
APPLICATIONS = text(
    """
    SELECT provider_dept, count(*) AS pending, count(*) FILTER (WHERE due_by < :today) AS overdue
      FROM registry.applications WHERE status = :pending
     GROUP BY provider_dept
    """
)


def exemption_params(now: datetime) -> dict[str, Any]:
    return {
        "active": GrantStatus.ACTIVE.value,
        "now": now,
        "government": MaterialSource.GOVERNMENT.value,
        "published": ResourceStatus.PUBLISHED.value,
    }


async def exempt_materials(session: AsyncSession, codes: Collection[str], now: datetime) -> set[uuid.UUID]:
    """The materials of the service items ``codes`` that are 免提交 at ``now`` (the same rule as the
    figures: a service item's page shows its own share of them)."""
    if not codes:
        return set()
    rows = await session.scalars(EXEMPT_OF, {**exemption_params(now), "codes": list(codes)})
    return set(rows.all())


def rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def total(departments: Iterable[DepartmentStats]) -> DepartmentStats:
    overall = DepartmentStats(dept=None)
    for d in departments:
        overall.materials += d.materials
        overall.exempt_materials += d.exempt_materials
        for share, n in d.resources_by_share.items():
            overall.resources_by_share[share] = overall.resources_by_share.get(share, 0) + n
        overall.responsibilities.total += d.responsibilities.total
        overall.responsibilities.fulfilled += d.responsibilities.fulfilled
        overall.responsibilities.overdue += d.responsibilities.overdue
        overall.applications.pending += d.applications.pending
        overall.applications.overdue += d.applications.overdue
    finish(overall)
    return overall


def finish(stats: DepartmentStats) -> None:
    stats.exempt_rate = rate(stats.exempt_materials, stats.materials)
    stats.responsibilities.fulfilment_rate = rate(stats.responsibilities.fulfilled, stats.responsibilities.total)


async def registry_stats(
    session: AsyncSession, *, today: date, now: datetime, calendar: WorkingCalendar
) -> StatsPublic:
    """The figures on the business date ``today`` (overdue lines and applications) at ``now``
    (live grants)."""
    departments: dict[str, DepartmentStats] = {}

    def of(dept: str) -> DepartmentStats:
        return departments.setdefault(dept, DepartmentStats(dept=dept))

    for dept, materials, exempt in await session.execute(MATERIALS, exemption_params(now)):
        of(dept).materials, of(dept).exempt_materials = materials, exempt
    for dept, share_type, n in await session.execute(RESOURCES, {"published": ResourceStatus.PUBLISHED.value}):
        of(dept).resources_by_share[share_type] = n
    lines = {
        "fulfilled": ResponsibilityState.FULFILLED.value,
        "planned": ResponsibilityState.PLANNED.value,
        "today": today,
    }
    for dept, count, fulfilled, overdue in await session.execute(RESPONSIBILITIES, lines):
        of(dept).responsibilities = ResponsibilityCounts(total=count, fulfilled=fulfilled, overdue=overdue)
    pending = {"pending": ApplicationStatus.PENDING.value, "today": today}
    for dept, count, overdue in await session.execute(APPLICATIONS, pending):
        of(dept).applications = ApplicationCounts(pending=count, overdue=overdue)
    for stats in departments.values():
        finish(stats)
    listed = sorted(departments.values(), key=lambda d: d.dept or "")
    years = calendar.covered_years()
    coverage = CalendarCoverage(covered_years=years, business_year_covered=today.year in years)
    return StatsPublic(as_of=now, business_date=today, overall=total(listed), departments=listed, calendar=coverage)
