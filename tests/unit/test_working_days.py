"""Due dates counted in working days (工作日) on the official calendar: holidays skipped, 调休
make-up working days counted, checked day by day against an independent source (the
``chinesecalendar`` package); a year without data falls back to weekends only, loudly."""

from __future__ import annotations

import logging
from datetime import date, timedelta

import chinese_calendar
import pytest
from prometheus_client import CollectorRegistry

from services.common.calendar import CalendarDataError, WorkingCalendar, parse_year
from services.registry.applications.service import APPROVAL_WORKING_DAYS

FIRST, LAST = date(2024, 1, 1), date(2026, 12, 31)


def official() -> tuple[WorkingCalendar, CollectorRegistry]:
    registry = CollectorRegistry()
    return WorkingCalendar.load(registry, "registry"), registry


def fallbacks(registry: CollectorRegistry, year: int) -> float:
    return registry.get_sample_value("tongban_registry_calendar_fallback_total", {"year": str(year)}) or 0.0


def reference_is_working(day: date) -> bool:
    """The independent answer: chinesecalendar for the years it knows, weekdays after them."""
    try:
        return bool(chinese_calendar.is_workday(day))
    except NotImplementedError:  # a year the package has no notice for either
        return day.weekday() < 5


def reference_due(start: date, days: int) -> date:
    current = start
    while days:
        current += timedelta(days=1)
        days -= reference_is_working(current)
    return current


def test_the_shipped_years_are_those_of_the_latest_notices() -> None:
    calendar, _ = official()
    years = calendar.covered_years()
    assert years[:3] == [2024, 2025, 2026]
    assert years == list(range(2024, years[-1] + 1))  # no gap
    notice = calendar.notice(2025)
    assert notice is not None and notice.number == "国办发明电〔2024〕12号"


def test_every_day_of_every_shipped_year_agrees_with_chinesecalendar() -> None:
    calendar, registry = official()
    for year in calendar.covered_years():
        day = date(year, 1, 1)
        while day.year == year:
            assert calendar.is_working_day(day) == chinese_calendar.is_workday(day), day
            day += timedelta(days=1)
        assert fallbacks(registry, year) == 0


def test_every_start_date_2024_to_2026_gets_the_official_due_date() -> None:
    calendar, _ = official()
    wrong_before = 0
    start = FIRST
    while start <= LAST:
        due = calendar.add_working_days(start, APPROVAL_WORKING_DAYS)
        expected = reference_due(start, APPROVAL_WORKING_DAYS)
        assert due == expected, start
        wrong_before += WorkingCalendar({}, CollectorRegistry(), "registry").add_working_days(start, 10) != expected
        start += timedelta(days=1)
    assert wrong_before > 300  # the weekends-only count this replaces was wrong for about a third


@pytest.mark.parametrize(
    ("start", "due"),
    [
        pytest.param(
            date(2025, 1, 24), date(2025, 2, 13), id="春节 2025: 1-26 counts, 1-28..2-04 skipped, 2-08 counts"
        ),
        pytest.param(date(2026, 9, 25), date(2026, 10, 15), id="国庆 2026: 10-01..10-07 skipped, 10-10 counts"),
        pytest.param(date(2024, 4, 30), date(2024, 5, 16), id="劳动节 2024: 5-01..5-05 skipped, 5-11 counts"),
    ],
)
def test_holidays_are_skipped_and_make_up_days_count(start: date, due: date) -> None:
    calendar, _ = official()
    assert calendar.add_working_days(start, 10) == due


def test_working_days_left_count_to_the_due_date() -> None:
    calendar, _ = official()
    start = date(2026, 9, 18)
    due = calendar.add_working_days(start, 10)
    assert calendar.working_days_between(start, due) == 10
    assert calendar.working_days_between(due, due) == 0
    assert due == date(2026, 10, 9)
    assert calendar.working_days_between(due + timedelta(days=1), due) == -1  # 10-10, a Saturday, is worked


def test_a_year_without_data_falls_back_to_weekends_with_a_warning_and_a_metric(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calendar, registry = official()
    beyond = calendar.covered_years()[-1] + 1
    start = date(beyond, 3, 2)  # a Monday in March: no holiday of any year near it
    while start.weekday() != 0:
        start += timedelta(days=1)

    with caplog.at_level(logging.WARNING, logger="tongban.calendar"):
        due = calendar.add_working_days(start, 10)

    assert due == start + timedelta(days=14)  # two weeks of weekdays
    assert fallbacks(registry, beyond) == 1
    assert any(str(beyond) in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    calendar.add_working_days(date(2026, 6, 1), 10)  # a covered stretch is not counted
    assert fallbacks(registry, beyond) == 1


def test_a_count_crossing_into_a_year_without_data_is_reported() -> None:
    calendar, registry = official()
    last = calendar.covered_years()[-1]
    calendar.add_working_days(date(last, 12, 28), 10)
    assert fallbacks(registry, last + 1) == 1
    assert fallbacks(registry, last) == 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param({"workdays": [{"festival": "x", "date": "2026-01-05"}]}, "weekend", id="make-up day on a Monday"),
        pytest.param(
            {"holidays": [{"festival": "x", "from": "2027-01-01", "to": "2027-01-01"}]}, "another year", id="other year"
        ),
        pytest.param(
            {"holidays": [{"festival": "x", "from": "2026-01-03", "to": "2026-01-01"}]}, "before", id="reversed"
        ),
        pytest.param(
            {
                "holidays": [{"festival": "x", "from": "2026-01-03", "to": "2026-01-04"}],
                "workdays": [{"festival": "x", "date": "2026-01-04"}],
            },
            "both",
            id="holiday and working day",
        ),
    ],
)
def test_contradictory_calendar_data_is_refused(change: dict[str, object], message: str) -> None:
    raw = {
        "year": 2026,
        "notice": {"title": "t", "number": "n", "issued": "2025-11-04"},
        "holidays": [],
        "workdays": [],
        **change,
    }
    with pytest.raises(CalendarDataError, match=message):
        parse_year(raw)
