"""GB/T 2260 行政区划代码 as shipped: where it came from, its shape, and facts a reader can check."""

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest

from services.common import regions

DATA = Path(regions.__file__).with_name("data")


def refresh_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("refresh_regions", DATA / "refresh_regions.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_data_file_names_the_pinned_source_of_the_refresh_script_and_readme() -> None:
    script = refresh_script()
    header = (DATA / "gb2260.tsv").read_text(encoding="utf-8").split("\n", 3)[:3]
    assert f"from {script.PACKAGE} {script.VERSION} (sha256 {script.SHA256})" in header[1]
    readme = (DATA / "README.md").read_text(encoding="utf-8")
    assert f"`{script.PACKAGE}` {script.VERSION}" in readme
    assert script.SHA256 in readme
    assert re.fullmatch(r"[0-9a-f]{64}", script.SHA256)


def test_periods_are_written_as_runs_with_an_open_end_for_the_newest_year() -> None:
    periods = refresh_script().periods
    assert periods({1980, 1981, 1982, 1990, 1991}, 1991) == "1980-1982,1990-"
    assert periods({2015}, 2024) == "2015-2015"


def test_table_covers_1980_to_the_newest_year_with_well_formed_codes_and_periods() -> None:
    table = regions.gb2260()
    assert table.newest_year >= 2024
    assert len(table.regions) > 6000
    years: set[int] = set()
    for code, region in table.regions.items():
        assert re.fullmatch(r"[1-8][0-9]{5}", code) and region.code == code and region.name
        ends = [year for run in region.periods for year in run if year is not None]
        assert all(a < b for a, b in zip(ends[1::2], ends[2::2], strict=False)), region  # runs apart, in order
        assert all(last is None or first <= last for first, last in region.periods)
        assert all(last is not None for _, last in region.periods[:-1])  # only the last run may be open
        years.add(region.first_year)
    assert min(years) == 1980


@pytest.mark.parametrize(
    ("code", "name", "first", "last"),
    [
        ("110000", "北京市", 1980, None),
        ("110101", "东城区", 1980, None),
        ("110103", "崇文区", 1980, 2009),  # merged into 东城区 in 2010
        ("110228", "密云县", 1982, 2014),  # became 110118 密云区 in 2015
        ("110118", "密云区", 2015, None),
        ("460000", "海南省", 1988, None),
        ("500000", "重庆市", 1997, None),
        ("810000", "香港特别行政区", 1997, None),
    ],
)
def test_known_codes_have_the_years_of_their_history(code: str, name: str, first: int, last: int | None) -> None:
    region = regions.lookup(code)
    assert region is not None
    assert (region.name, region.first_year, region.last_year, region.current) == (name, first, last, last is None)


def test_a_code_abolished_and_reused_keeps_both_runs() -> None:
    region = regions.lookup("130107")  # 井陉矿区
    assert region is not None
    assert len(region.periods) == 2 and region.current


@pytest.mark.parametrize("code", ["000000", "100000", "119900", "990000", "130171"])
def test_codes_gb2260_never_had_are_unknown(code: str) -> None:
    assert regions.lookup(code) is None


def test_city_districts_taken_together_exist_whenever_their_city_does() -> None:
    guangzhou = regions.lookup("440100")
    districts = regions.lookup("440101")
    assert guangzhou is not None and districts is not None
    assert districts.periods == guangzhou.periods
    assert districts.name == "广州市市辖区"
    assert regions.lookup("110001") is None  # a province has no 市辖区 row of its own


@pytest.mark.parametrize(
    ("code", "prefix"), [("110000", "11"), ("110100", "1101"), ("110101", "110101"), ("320500", "3205")]
)
def test_scope_prefix_drops_trailing_zero_pairs(code: str, prefix: str) -> None:
    assert regions.scope_prefix(code) == prefix


@pytest.mark.parametrize(
    ("code", "container"),
    [
        ("110101", "110101"),  # still listed
        ("110103", "110100"),  # 崇文区 abolished; its 市辖区 remains
        ("110228", "110000"),  # 密云县 and its 县 (110200) both abolished
        ("320594", "320500"),  # a development-zone code GB/T 2260 never had
    ],
)
def test_current_container_is_the_smallest_listed_division(code: str, container: str) -> None:
    region = regions.current_container(code)
    assert region is not None and region.code == container
