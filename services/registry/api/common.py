"""What every registry router shares: the events and audit topics and the business date."""

from __future__ import annotations

from datetime import date

from services.common.clock import business_date
from services.common.errors import CommonProblem
from services.common.runtime import RuntimeDep

AUTH = (CommonProblem.UNAUTHORIZED, CommonProblem.VALIDATION)


def events_topic(rt: RuntimeDep) -> str:
    return rt.settings.topic("registry.events")


def audit_topic(rt: RuntimeDep) -> str:
    return rt.settings.topic("audit.events")


def today(rt: RuntimeDep) -> date:
    return business_date(rt.settings.zone)
