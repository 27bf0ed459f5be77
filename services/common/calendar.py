"""工作日历 — the platform's working-day calendar: the registry counts application deadlines on it,
the audit service's off-hours rule (非工作时间访问) tells working days from days off with it.

Each year is data (``data/calendar/<year>.json``) copied from the State Council General Office's
yearly notice 《国务院办公厅关于<year>年部分节假日安排的通知》, which the file cites (title,
国办发明电 number, date). A day is a working day (工作日) when it is a weekday outside the notice's
holidays (放假), or a weekend day the notice makes a working day (调休上班).

A year without a notice file is never guessed silently: its days count as working on weekdays
only, and every count that touches such a year logs a warning and increments
``tongban_<service>_calendar_fallback_total`` (labelled with the year; ``service`` is the one
that counted: registry, audit), so an operator sees that next year's file is missing before due
dates or alerts are wrong. :meth:`WorkingCalendar.covered_years`
says which years the data covers.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter

CALENDAR_DIR = Path(__file__).parent / "data" / "calendar"

log = logging.getLogger("tongban.calendar")


@dataclass(frozen=True, slots=True)
class Notice:
    """The notice a year's calendar is taken from (部分节假日安排的通知)."""

    title: str
    number: str  # 国办发明电〔…〕…号
    issued: date


@dataclass(frozen=True, slots=True)
class YearPlan:
    """One year's holidays (放假, including the weekends inside them) and 调休 working days."""

    year: int
    notice: Notice
    holidays: frozenset[date]
    workdays: frozenset[date]


class CalendarDataError(ValueError):
    """A calendar file contradicts itself or its year (a typo in the data, caught at start-up)."""


def _days(first: date, last: date) -> Iterable[date]:
    for n in range((last - first).days + 1):
        yield first + timedelta(days=n)


def parse_year(raw: Mapping[str, Any]) -> YearPlan:
    """A :class:`YearPlan` from a calendar file's content; :class:`CalendarDataError` if a date
    falls outside the year, a range is reversed, a 调休 working day is not a weekend day, or a
    day is both a holiday and a working day."""
    year = int(raw["year"])
    notice = Notice(raw["notice"]["title"], raw["notice"]["number"], date.fromisoformat(raw["notice"]["issued"]))
    holidays: set[date] = set()
    for span in raw["holidays"]:
        first, last = date.fromisoformat(span["from"]), date.fromisoformat(span["to"])
        if last < first:
            raise CalendarDataError(f"{year}: holiday {span['festival']} ends before it starts")
        holidays.update(_days(first, last))
    workdays = {date.fromisoformat(w["date"]) for w in raw["workdays"]}
    outside = sorted(d for d in holidays | workdays if d.year != year)
    if outside:
        raise CalendarDataError(f"{year}: dates of another year: {outside}")
    if weekdays := sorted(d for d in workdays if d.weekday() < 5):
        raise CalendarDataError(f"{year}: 调休 working days must be weekend days: {weekdays}")
    if both := sorted(holidays & workdays):
        raise CalendarDataError(f"{year}: both holiday and working day: {both}")
    return YearPlan(year, notice, frozenset(holidays), frozenset(workdays))


def load_years(directory: Path = CALENDAR_DIR) -> dict[int, YearPlan]:
    """Every ``<year>.json`` of ``directory``, by year."""
    plans: dict[int, YearPlan] = {}
    for path in sorted(directory.glob("*.json")):
        plan = parse_year(json.loads(path.read_text(encoding="utf-8")))
        if path.stem != str(plan.year):
            raise CalendarDataError(f"{path.name} holds the year {plan.year}")
        plans[plan.year] = plan
    return plans


class WorkingCalendar:
    """Working days (工作日) on the official calendar, weekends only for years it lacks (counted)."""

    def __init__(self, years: Mapping[int, YearPlan], registry: CollectorRegistry, service: str) -> None:
        self.years = dict(years)
        # One name per service (its alerts and panels already say which), in the service's registry.
        self.fallbacks = Counter(
            f"tongban_{service}_calendar_fallback_total",
            "Working-day counts that touched a year without holiday data (weekends only were skipped)",
            ["year"],
            registry=registry,
        )

    @classmethod
    def load(cls, registry: CollectorRegistry, service: str, directory: Path = CALENDAR_DIR) -> WorkingCalendar:
        return cls(load_years(directory), registry, service)

    def covered_years(self) -> list[int]:
        """The years whose holidays and 调休 working days the calendar knows, ascending."""
        return sorted(self.years)

    def notice(self, year: int) -> Notice | None:
        plan = self.years.get(year)
        return plan.notice if plan else None

    def _is_working_day(self, day: date, guessed: set[int]) -> bool:
        plan = self.years.get(day.year)
        if plan is None:
            guessed.add(day.year)
            return day.weekday() < 5
        return day in plan.workdays or (day.weekday() < 5 and day not in plan.holidays)

    def _report(self, guessed: set[int], what: str) -> None:
        for year in sorted(guessed):
            self.fallbacks.labels(year=str(year)).inc()
            log.warning(
                "no holiday calendar for %s: %s counted weekends only (add services/common/data/calendar/%s.json "
                "from the State Council notice)",
                year,
                what,
                year,
                extra={"ctx_year": year},
            )

    def is_working_day(self, day: date) -> bool:
        guessed: set[int] = set()
        working = self._is_working_day(day, guessed)
        self._report(guessed, f"whether {day} is a working day")
        return working

    def working_days_among(self, days: Sequence[date]) -> set[date]:
        """Those of ``days`` that are working days (one warning per year without data, not per day)."""
        guessed: set[int] = set()
        working = {d for d in days if self._is_working_day(d, guessed)}
        if days:
            self._report(guessed, f"which of {min(days)}..{max(days)} are working days")
        return working

    def add_working_days(self, start: date, days: int) -> date:
        """The day ``days`` working days after ``start`` (``start`` itself not counted): the due
        date of something filed on ``start``. Holidays are skipped; 调休 working days count."""
        guessed: set[int] = set()
        current = start
        while days > 0:
            current += timedelta(days=1)
            if self._is_working_day(current, guessed):
                days -= 1
        self._report(guessed, f"the due date {current} of {start}")
        return current

    def working_days_between(self, start: date, end: date) -> int:
        """Working days after ``start`` up to and including ``end``; negative (the working days
        already past) when ``end`` is before ``start``. With ``start`` today and ``end`` a due date:
        the working days left, 0 on the due date itself."""
        if end < start:
            return -self.working_days_between(end, start)
        guessed: set[int] = set()
        count = sum(self._is_working_day(d, guessed) for d in _days(start + timedelta(days=1), end))
        self._report(guessed, f"the working days from {start} to {end}")
        return count
