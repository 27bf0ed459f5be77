"""Identifiers users type, validated with their check characters and against GB/T 2260.

* 统一社会信用代码 (unified social credit code, GB 32100-2015): 18 characters.
* 居民身份证号码 (resident ID number, GB 11643-1999): 18 characters, mod 11-2 check.
* 行政区划代码 (administrative division code, GB/T 2260): 6 digits, looked up in
  :mod:`services.common.regions`.

Every validator first normalises what was typed (:func:`normalise`) and raises only
:class:`InvalidIdentifier`, whatever the text; its result is the one spelling that is hashed, so one
person or organisation has exactly one subject hash.
"""

import re
import unicodedata
from datetime import date

from services.common import regions

# GB 32100-2015 alphabet: digits and capital letters without I, O, Z, S, V.
CREDIT_CODE_CHARS = "0123456789ABCDEFGHJKLMNPQRTUWXY"
CREDIT_CODE_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
ID_CARD_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
ID_CARD_CHECK = "10X98765432"
REGION_CODE = re.compile(r"[1-8][0-9]{5}")  # ASCII digits only; used with fullmatch
ID_CARD = re.compile(r"[0-9]{17}[0-9X]")

# Only these compatibility decompositions are folded: they are what Chinese input methods produce
# (full-width ０-９, Ａ-Ｚ, the ideographic space U+3000). NFKC would also turn '²', '①' or '𝟐' into
# digits; those are refused instead, as is every other non-ASCII character (Arabic-Indic digits too).
_FOLDED_DECOMPOSITIONS = ("<wide>", "<narrow>")


class InvalidIdentifier(ValueError):
    """Raised with a message a person can act on (which rule was broken)."""


def normalise(value: str, what: str) -> str:
    """Fold full-width and half-width forms to ASCII the way NFKC does; refuse anything else that is
    not ASCII. ``what`` names the identifier in the error message."""
    if value.isascii():
        return value
    folded = []
    for char in value:
        ascii_char = char
        if not char.isascii() and unicodedata.decomposition(char).startswith(_FOLDED_DECOMPOSITIONS):
            ascii_char = unicodedata.normalize("NFKC", char)
        if not ascii_char.isascii():
            # Name the code point, never echo it: it may be a lone surrogate that cannot be encoded.
            raise InvalidIdentifier(f"{what} may contain only ASCII letters and digits, not U+{ord(char):04X}")
        folded.append(ascii_char)
    return "".join(folded)


def credit_code_check_char(first17: str) -> str:
    total = sum(CREDIT_CODE_CHARS.index(c) * w for c, w in zip(first17, CREDIT_CODE_WEIGHTS, strict=True))
    return CREDIT_CODE_CHARS[(31 - total % 31) % 31]


def _registration_region_known(code: str) -> bool:
    """Characters 3-8 of a credit code name the registration authority's region (登记管理机关行政区划码).

    Accepted: the central value ``100000``; any GB/T 2260 code of any year (a credit code never changes,
    so a region abolished since is normal); and a code inside a listed prefecture that GB/T 2260 itself
    does not list, because registration authorities of development zones and of city-level offices use
    such codes in practice (``91320594…`` 苏州工业园区, ``91440101…`` 广州市).
    """
    return (
        code == regions.CENTRAL_REGISTRATION
        or regions.lookup(code) is not None
        or regions.lookup(regions.prefecture_of(code)) is not None
    )


def validate_credit_code(value: str) -> str:
    """Return the normalised (upper-case) 统一社会信用代码 or raise :class:`InvalidIdentifier`."""
    code = normalise(value, "统一社会信用代码").strip().upper()
    if len(code) != 18:
        raise InvalidIdentifier(f"统一社会信用代码 must be 18 characters, got {len(code)}")
    bad = sorted({c for c in code if c not in CREDIT_CODE_CHARS})
    if bad:
        raise InvalidIdentifier(f"统一社会信用代码 contains characters not allowed by GB 32100: {''.join(bad)}")
    if not REGION_CODE.fullmatch(code[2:8]):
        raise InvalidIdentifier("统一社会信用代码 characters 3-8 must be a 行政区划代码")
    if not _registration_region_known(code[2:8]):
        raise InvalidIdentifier(f"统一社会信用代码 characters 3-8 ({code[2:8]}) are not a GB/T 2260 行政区划代码")
    expected = credit_code_check_char(code[:17])
    if code[17] != expected:
        raise InvalidIdentifier(f"统一社会信用代码 check character is wrong (expected {expected}, got {code[17]})")
    return code


def id_card_check_char(first17: str) -> str:
    """The mod 11-2 check character of 17 ASCII digits (anything else raises :class:`InvalidIdentifier`)."""
    if len(first17) != 17 or not first17.isascii() or not first17.isdigit():
        raise InvalidIdentifier("居民身份证号码 must start with 17 digits")
    return ID_CARD_CHECK[sum(int(c) * w for c, w in zip(first17, ID_CARD_WEIGHTS, strict=True)) % 11]


def validate_id_card(value: str) -> str:
    """Return the normalised 居民身份证号码 (capital X) or raise :class:`InvalidIdentifier`.

    Its region (characters 1-6) must be a GB/T 2260 code that was still listed when the person was
    born. A code created after the birth date is normal (the number is issued later, where the person
    lives then); a code abolished before it is impossible. Since each yearly list gives the codes in
    force at its year's end, a code last listed in year L may still have been in force during L + 1.
    """
    number = normalise(value, "居民身份证号码").strip().upper()
    if len(number) != 18:
        raise InvalidIdentifier(f"居民身份证号码 must be 18 characters, got {len(number)}")
    if not ID_CARD.fullmatch(number):
        raise InvalidIdentifier("居民身份证号码 must be 17 digits followed by a digit or X")
    if not REGION_CODE.fullmatch(number[:6]):
        raise InvalidIdentifier("居民身份证号码 must start with a 6-digit 行政区划代码")
    try:
        born = date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError as err:
        raise InvalidIdentifier("居民身份证号码 characters 7-14 must be a valid birth date") from err
    if born.year < 1900 or born > date.today():
        raise InvalidIdentifier("居民身份证号码 birth date is out of range")
    region = regions.lookup(number[:6])
    if region is None:
        raise InvalidIdentifier(f"居民身份证号码 region {number[:6]} is not a GB/T 2260 行政区划代码")
    if region.last_year is not None and born.year > region.last_year + 1:
        raise InvalidIdentifier(
            f"居民身份证号码 region {region.code} ({region.name}) was abolished before the birth date "
            f"(last listed in {region.last_year})"
        )
    expected = id_card_check_char(number[:17])
    if number[17] != expected:
        raise InvalidIdentifier(f"居民身份证号码 check digit is wrong (expected {expected}, got {number[17]})")
    return number


def validate_region_code(value: str, *, current: bool = False) -> str:
    """Return the 6-digit 行政区划代码 if GB/T 2260 has it (in any year, or with ``current`` in the
    newest list), else raise :class:`InvalidIdentifier`."""
    code = normalise(value, "行政区划代码")
    if not REGION_CODE.fullmatch(code):
        raise InvalidIdentifier("行政区划代码 must be 6 digits (GB/T 2260)")
    region = regions.lookup(code)
    if region is None:
        raise InvalidIdentifier(f"行政区划代码 {code} does not exist in GB/T 2260")
    if current and not region.current:
        raise InvalidIdentifier(
            f"行政区划代码 {code} ({region.name}) is no longer in use (last listed in {region.last_year})"
        )
    return code


def check_department_region(credit_code: str, region_code: str) -> None:
    """A department's 行政区划代码 must agree with characters 3-8 of its 统一社会信用代码 (the region of
    the authority that registered it): the same code, or a code inside it (``110100`` admits
    ``110101``). Both arguments are already valid.

    Exceptions, each because the credit code never changes while divisions do:
    * a central (中央) credit code (``100000``) admits any region: central departments are registered
      nationally whatever their seat;
    * a credit code whose region is no longer listed (abolished since, or a development-zone code that
      GB/T 2260 never had) admits any region inside the smallest listed division that contains it
      (``110228`` 密云县 → ``110000`` 北京市; ``320594`` → ``320500`` 苏州市).

    Raises :class:`InvalidIdentifier` with a Chinese and English message.
    """
    registered = credit_code[2:8]
    if registered == regions.CENTRAL_REGISTRATION:
        return
    container = regions.current_container(registered)
    scope = container.code if container is not None else registered
    if not region_code.startswith(regions.scope_prefix(scope)):
        raise InvalidIdentifier(
            f"部门行政区划代码 {region_code} 不在统一社会信用代码第3-8位 {registered} 所示区划内 / "
            f"region_code {region_code} is not within {scope}, the region of the credit code's characters 3-8"
        )
