"""Business dates are days in the platform's time zone, not in UTC."""

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from services.common.clock import business_date, seconds_to_midnight

SHANGHAI = ZoneInfo("Asia/Shanghai")


def test_seven_in_the_morning_in_beijing_is_today_there_though_yesterday_in_utc() -> None:
    filed = datetime(2026, 11, 27, 7, 0, tzinfo=SHANGHAI)
    assert filed.astimezone(UTC).date() == date(2026, 11, 26)  # what the old code counted from
    assert business_date(SHANGHAI, filed) == date(2026, 11, 27)


def test_a_daily_quota_renews_at_midnight_in_the_platforms_zone() -> None:
    late_evening = datetime(2026, 11, 27, 23, 59, 30, tzinfo=SHANGHAI)
    assert seconds_to_midnight(SHANGHAI, late_evening) == 30
    # 16:00 UTC is already 00:00 in Beijing: a full day to go, not 8 hours.
    assert seconds_to_midnight(SHANGHAI, datetime(2026, 11, 27, 16, 0, tzinfo=UTC)) == 86400
