"""Identifiers users type, validated with their check characters.

* 统一社会信用代码 (unified social credit code, GB 32100-2015): 18 characters.
* 居民身份证号码 (resident ID number, GB 11643-1999): 18 characters, mod 11-2 check.
* 行政区划代码 (administrative division code, GB/T 2260): 6 digits.
"""

import re
from datetime import date

# GB 32100-2015 alphabet: digits and capital letters without I, O, Z, S, V.
CREDIT_CODE_CHARS = "0123456789ABCDEFGHJKLMNPQRTUWXY"
CREDIT_CODE_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
ID_CARD_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
ID_CARD_CHECK = "10X98765432"
REGION_CODE = re.compile(r"[1-8][0-9]{5}")  # ASCII digits only; used with fullmatch


class InvalidIdentifier(ValueError):
    """Raised with a message a person can act on (which rule was broken)."""


def credit_code_check_char(first17: str) -> str:
    total = sum(CREDIT_CODE_CHARS.index(c) * w for c, w in zip(first17, CREDIT_CODE_WEIGHTS, strict=True))
    return CREDIT_CODE_CHARS[(31 - total % 31) % 31]


def validate_credit_code(value: str) -> str:
    """Return the normalised (upper-case) 统一社会信用代码 or raise :class:`InvalidIdentifier`."""
    code = value.strip().upper()
    if len(code) != 18:
        raise InvalidIdentifier(f"统一社会信用代码 must be 18 characters, got {len(code)}")
    bad = sorted({c for c in code if c not in CREDIT_CODE_CHARS})
    if bad:
        raise InvalidIdentifier(f"统一社会信用代码 contains characters not allowed by GB 32100: {''.join(bad)}")
    if not REGION_CODE.fullmatch(code[2:8]):
        raise InvalidIdentifier("统一社会信用代码 characters 3-8 must be a 行政区划代码")
    expected = credit_code_check_char(code[:17])
    if code[17] != expected:
        raise InvalidIdentifier(f"统一社会信用代码 check character is wrong (expected {expected}, got {code[17]})")
    return code


def id_card_check_char(first17: str) -> str:
    return ID_CARD_CHECK[sum(int(c) * w for c, w in zip(first17, ID_CARD_WEIGHTS, strict=True)) % 11]


def validate_id_card(value: str) -> str:
    """Return the normalised 居民身份证号码 (capital X) or raise :class:`InvalidIdentifier`."""
    number = value.strip().upper()
    if len(number) != 18:
        raise InvalidIdentifier(f"居民身份证号码 must be 18 characters, got {len(number)}")
    if not number[:17].isdigit() or not (number[17].isdigit() or number[17] == "X"):
        raise InvalidIdentifier("居民身份证号码 must be 17 digits followed by a digit or X")
    if not REGION_CODE.fullmatch(number[:6]):
        raise InvalidIdentifier("居民身份证号码 must start with a 6-digit 行政区划代码")
    try:
        born = date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError as err:
        raise InvalidIdentifier("居民身份证号码 characters 7-14 must be a valid birth date") from err
    if born.year < 1900 or born > date.today():
        raise InvalidIdentifier("居民身份证号码 birth date is out of range")
    expected = id_card_check_char(number[:17])
    if number[17] != expected:
        raise InvalidIdentifier(f"居民身份证号码 check digit is wrong (expected {expected}, got {number[17]})")
    return number


def validate_region_code(value: str) -> str:
    if not REGION_CODE.fullmatch(value):
        raise InvalidIdentifier("行政区划代码 must be 6 digits (GB/T 2260)")
    return value
