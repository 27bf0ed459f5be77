"""Business time: dates that people and rules count in (due dates, daily quotas) are days in the
platform's time zone (``TONGBAN_TIMEZONE``, Asia/Shanghai by default), not in UTC — an
application filed at 07:00 Beijing time is filed today, not yesterday."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo


def business_date(zone: ZoneInfo, now: datetime | None = None) -> date:
    """The calendar date in ``zone`` at ``now`` (default: this instant)."""
    return (now or datetime.now(UTC)).astimezone(zone).date()


def seconds_to_midnight(zone: ZoneInfo, now: datetime | None = None) -> int:
    """Seconds until the business day in ``zone`` ends (at least 1): when a daily quota renews."""
    local = (now or datetime.now(UTC)).astimezone(zone)
    tomorrow = datetime.combine(local.date() + timedelta(days=1), datetime.min.time(), zone)
    return max(1, int((tomorrow - local).total_seconds()))
