"""What every registry router shares: the events and audit topics, the business date and the calendar."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import Depends, Request

from services.common.calendar import WorkingCalendar
from services.common.clock import business_date
from services.common.errors import CommonProblem
from services.common.runtime import RuntimeDep
from services.registry.events import Topics

AUTH = (CommonProblem.UNAUTHORIZED, CommonProblem.VALIDATION)


def topics(rt: RuntimeDep) -> Topics:
    return Topics(events=rt.settings.topic("registry.events"), audit=rt.settings.topic("audit.events"))


def audit_topic(rt: RuntimeDep) -> str:
    return topics(rt).audit


def today(rt: RuntimeDep) -> date:
    return business_date(rt.settings.zone)


def working_calendar(request: Request) -> WorkingCalendar:
    calendar: WorkingCalendar = request.app.state.calendar
    return calendar


TopicsDep = Annotated[Topics, Depends(topics)]
CalendarDep = Annotated[WorkingCalendar, Depends(working_calendar)]
