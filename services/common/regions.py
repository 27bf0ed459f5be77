"""GB/T 2260 行政区划代码 (administrative division codes), current and historical, with the years
each code was listed.

The table is ``data/gb2260.tsv``, generated from a pinned, checksummed source by ``make regions``
(``data/README.md`` says which, under what licence, and how to refresh it). It holds the Ministry of
Civil Affairs' (民政部) yearly lists of county-level and higher codes from 1980 to the newest year the
source has. Each list gives the codes in force at the end of its year, so a code last listed in year L
was abolished at some point in year L + 1 at the earliest. Codes created after the newest year are
unknown until the data is refreshed.

A code is six digits: province (2), prefecture (2), county (2); ``00`` in the last pairs means "the
whole of the division above" (``110000`` 北京市, ``110100`` its 市辖区, ``110101`` 东城区).
"""

import functools
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Final

DATA_FILE: Final = Path(__file__).with_name("data") / "gb2260.tsv"

# Characters 3-8 of a 统一社会信用代码 issued by a central (中央) registration authority, such as the
# credit codes of the State Council's ministries (111000000000…). It is no GB/T 2260 code: it stands
# for the whole country.
CENTRAL_REGISTRATION: Final = "100000"


@dataclass(frozen=True, slots=True)
class Region:
    """One 行政区划代码 and the years it was listed; ``None`` as a last year means "still listed"."""

    code: str
    name: str
    periods: tuple[tuple[int, int | None], ...]

    @property
    def first_year(self) -> int:
        return self.periods[0][0]

    @property
    def last_year(self) -> int | None:
        """The last year this code was listed, or ``None`` if it is in the newest list."""
        return self.periods[-1][1]

    @property
    def current(self) -> bool:
        return self.last_year is None


@dataclass(frozen=True, slots=True)
class RegionTable:
    newest_year: int
    regions: MappingProxyType[str, Region]

    def get(self, code: str) -> Region | None:
        return self.regions.get(code)


def _periods(text: str) -> tuple[tuple[int, int | None], ...]:
    result: list[tuple[int, int | None]] = []
    for run in text.split(","):
        first, last = run.split("-")
        result.append((int(first), int(last) if last else None))
    return tuple(result)


@functools.cache
def gb2260() -> RegionTable:
    """The table, read once per process (it is immutable, so sharing it is safe)."""
    newest_year = 0
    regions: dict[str, Region] = {}
    for line in DATA_FILE.read_text(encoding="utf-8").splitlines():
        if line.startswith("# newest-year\t"):
            newest_year = int(line.split("\t")[1])
        if not line or line.startswith("#"):
            continue
        code, name, periods = line.split("\t")
        regions[code] = Region(code, name, _periods(periods))
    if not newest_year or not regions:
        raise RuntimeError(f"{DATA_FILE.name} is incomplete; rebuild it with `make regions`")
    return RegionTable(newest_year, MappingProxyType(regions))


def lookup(code: str) -> Region | None:
    """The region with this code in any year since 1980, or ``None`` if GB/T 2260 never had it.

    ``xxxx01`` 市辖区 (the districts of city ``xxxx00`` taken together) is in the editions of the
    standard and on real ID numbers and credit codes (``91440101…`` 广州市), but the ministry's yearly
    lists leave it out; it is taken to exist whenever its city does.
    """
    table = gb2260()
    region = table.get(code)
    if region is None and code.endswith("01") and not code.endswith("0001"):
        city = table.get(prefecture_of(code))
        if city is not None:
            return Region(code, f"{city.name}市辖区", city.periods)
    return region


def scope_prefix(code: str) -> str:
    """The prefix every code inside ``code`` starts with: ``110000`` → ``11``, ``110100`` → ``1101``."""
    prefix = code
    while prefix.endswith("00") and len(prefix) > 2:
        prefix = prefix[:-2]
    return prefix


def prefecture_of(code: str) -> str:
    """``320594`` → ``320500``: the prefecture-level division a county-level code lies in."""
    return code[:4] + "00"


def province_of(code: str) -> str:
    return code[:2] + "0000"


def current_container(code: str) -> Region | None:
    """The smallest division in the newest list that contains ``code``: the code itself if it is still
    listed, else its prefecture, else its province (``110228`` 密云县, abolished in 2015 together
    with ``110200`` 县, → ``110000`` 北京市). ``None`` if not even the province is listed."""
    for candidate in (code, prefecture_of(code), province_of(code)):
        region = lookup(candidate)
        if region is not None and region.current:
            return region
    return None
