"""统一社会信用代码, 居民身份证号码 and 行政区划代码: what a person typing one is told."""

from collections.abc import Callable
from datetime import date, timedelta
from types import ModuleType

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError as PydanticValidationError
from stdnum.cn import ric as stdnum_ric
from stdnum.cn import uscc as stdnum_uscc
from stdnum.exceptions import ValidationError

from services.common import regions
from services.common.identifiers import (
    CREDIT_CODE_CHARS,
    InvalidIdentifier,
    check_department_region,
    credit_code_check_char,
    id_card_check_char,
    validate_credit_code,
    validate_id_card,
    validate_region_code,
)
from services.common.subjects import normalise_subject, subject_hash
from services.connector.service import synthetic_residents
from services.demo import CIVIL_AFFAIRS, POLICE
from services.gateway.schemas import DepartmentCreate

# A real, published 统一社会信用代码 (Fujian); it must be accepted as typed.
PUBLISHED_CREDIT_CODE = "91350100M000100Y43"
VALID_ID_CARD = "11010519491231002X"
FULL_WIDTH = str.maketrans(
    "0123456789ABCDEFGHJKLMNPQRTUWXYabcdefghjklmnpqrtuwxy",
    "０１２３４５６７８９ＡＢＣＤＥＦＧＨＪＫＬＭＮＰＱＲＴＵＷＸＹａｂｃｄｅｆｇｈｊｋｌｍｎｐｑｒｔｕｗｘｙ",
)


def credit_code(first17: str) -> str:
    return first17 + credit_code_check_char(first17)


def id_card(first17: str) -> str:
    return first17 + id_card_check_char(first17)


def replace_last(value: str, candidates: str) -> str:
    """``value`` with its last character swapped for the first candidate that differs from it."""
    return value[:-1] + next(c for c in candidates if c != value[-1])


# --------------------------------------------------------------------------- 统一社会信用代码


def test_published_credit_code_is_valid() -> None:
    assert validate_credit_code(PUBLISHED_CREDIT_CODE) == PUBLISHED_CREDIT_CODE


@pytest.mark.parametrize(
    "first17", ["91110000600037341", "12110000400000770", "52320000MJ5042893", "93440300MA5DABCDE"]
)
def test_credit_code_with_computed_check_char_is_valid(first17: str) -> None:
    code = credit_code(first17)
    assert validate_credit_code(code) == code


def test_credit_code_check_char_matches_published_code() -> None:
    assert credit_code_check_char(PUBLISHED_CREDIT_CODE[:17]) == PUBLISHED_CREDIT_CODE[17]


def test_credit_code_with_wrong_check_char_names_the_expected_one() -> None:
    wrong = replace_last(PUBLISHED_CREDIT_CODE, "0123456789")
    with pytest.raises(InvalidIdentifier, match="check") as info:
        validate_credit_code(wrong)
    assert "expected 3" in str(info.value)
    assert f"got {wrong[-1]}" in str(info.value)


@pytest.mark.parametrize("value", [PUBLISHED_CREDIT_CODE[:17], PUBLISHED_CREDIT_CODE + "0", "", "9135"])
def test_credit_code_of_wrong_length_is_refused_with_its_length(value: str) -> None:
    with pytest.raises(InvalidIdentifier, match="18 characters") as info:
        validate_credit_code(value)
    assert f"got {len(value)}" in str(info.value)


@pytest.mark.parametrize("letter", ["I", "O", "Z", "S", "V"])
def test_credit_code_with_forbidden_letter_names_the_letter(letter: str) -> None:
    # Put the letter in the organisation-code part (position 9), where letters are otherwise allowed.
    value = PUBLISHED_CREDIT_CODE[:8] + letter + PUBLISHED_CREDIT_CODE[9:]
    with pytest.raises(InvalidIdentifier, match="not allowed by GB 32100") as info:
        validate_credit_code(value)
    assert str(info.value).endswith(letter)


def test_credit_code_in_lower_case_with_spaces_is_normalised() -> None:
    assert validate_credit_code(f"  {PUBLISHED_CREDIT_CODE.lower()} ") == PUBLISHED_CREDIT_CODE


def test_credit_code_without_region_code_is_refused() -> None:
    value = credit_code("91" + "000000" + "M000100Y4")  # 000000 is no 行政区划代码
    with pytest.raises(InvalidIdentifier, match="行政区划代码"):
        validate_credit_code(value)


# --------------------------------------------------------------------------- 居民身份证号码


def test_id_card_example_is_valid() -> None:
    assert validate_id_card(VALID_ID_CARD) == VALID_ID_CARD


def test_id_card_with_lower_case_x_is_normalised() -> None:
    assert validate_id_card(" " + VALID_ID_CARD.lower() + " ") == VALID_ID_CARD


def test_id_card_with_wrong_check_digit_names_the_expected_one() -> None:
    with pytest.raises(InvalidIdentifier, match="check digit") as info:
        validate_id_card("110105194912310021")
    assert "expected X" in str(info.value)


def test_id_card_with_impossible_birth_date_is_refused() -> None:
    with pytest.raises(InvalidIdentifier, match="birth date"):
        validate_id_card(id_card("110105" + "19490230" + "002"))


def test_id_card_born_tomorrow_is_refused() -> None:
    tomorrow = (date.today() + timedelta(days=1)).strftime("%Y%m%d")
    with pytest.raises(InvalidIdentifier, match="out of range"):
        validate_id_card(id_card("110105" + tomorrow + "002"))


def test_id_card_born_before_1900_is_refused() -> None:
    with pytest.raises(InvalidIdentifier, match="out of range"):
        validate_id_card(id_card("110105" + "18991231" + "002"))


def test_id_card_born_today_is_valid() -> None:
    number = id_card("110105" + date.today().strftime("%Y%m%d") + "002")
    assert validate_id_card(number) == number


def test_id_card_of_17_digits_is_refused_with_its_length() -> None:
    with pytest.raises(InvalidIdentifier, match="18 characters, got 17"):
        validate_id_card(VALID_ID_CARD[:17])


@pytest.mark.parametrize("value", ["11010519491231002A", "1101051949123100X2", "A1010519491231002X"])
def test_id_card_with_letters_is_refused(value: str) -> None:
    with pytest.raises(InvalidIdentifier, match="17 digits followed by a digit or X"):
        validate_id_card(value)


def test_id_card_without_region_code_is_refused() -> None:
    with pytest.raises(InvalidIdentifier, match="行政区划代码"):
        validate_id_card(id_card("010105" + "19491231" + "002"))


def test_id_card_in_full_width_digits_is_the_same_number_in_ascii() -> None:
    # Chinese input methods often produce full-width digits (０-９) and letters (Ｘ). Folding them
    # gives the same person the same subject hash whichever way the number was typed.
    full_width = VALID_ID_CARD.translate(FULL_WIDTH)
    assert full_width != VALID_ID_CARD
    assert validate_id_card(full_width) == VALID_ID_CARD
    assert subject_hash("k", "id_card", normalise_subject("id_card", full_width)) == subject_hash(
        "k", "id_card", VALID_ID_CARD
    )


def test_credit_code_in_full_width_with_an_ideographic_space_is_the_same_code() -> None:
    typed = "\u3000" + PUBLISHED_CREDIT_CODE.lower().translate(FULL_WIDTH) + "\u3000"
    assert validate_credit_code(typed) == PUBLISHED_CREDIT_CODE


@pytest.mark.parametrize(
    ("char", "codepoint"),
    [
        ("²", "U+00B2"),  # superscript two: NFKC would make it '2'; the old code raised a bare ValueError
        ("₂", "U+2082"),  # subscript two
        ("②", "U+2461"),  # circled two
        ("𝟐", "U+1D7D0"),  # mathematical bold two
        ("٢", "U+0662"),  # Arabic-Indic two: the old code accepted it (str.isdigit) under another hash
        ("۲", "U+06F2"),  # extended Arabic-Indic two
        ("\ud800", "U+D800"),  # a lone surrogate: named, never echoed
    ],
)
def test_id_card_with_a_digit_that_is_not_ascii_or_full_width_is_refused(char: str, codepoint: str) -> None:
    value = VALID_ID_CARD[:16] + char + VALID_ID_CARD[17:]
    with pytest.raises(InvalidIdentifier, match="only ASCII") as info:
        validate_id_card(value)
    assert codepoint in str(info.value)


def test_id_card_all_in_arabic_indic_digits_is_refused() -> None:
    arabic = VALID_ID_CARD[:17].translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")) + "X"
    with pytest.raises(InvalidIdentifier, match="only ASCII"):
        validate_id_card(arabic)


def test_check_char_of_non_ascii_digits_raises_invalid_identifier_not_value_error() -> None:
    with pytest.raises(InvalidIdentifier):
        id_card_check_char("1101051949123100²")


def test_id_card_with_unknown_region_is_refused() -> None:
    # 119900 is shaped like a code but GB/T 2260 never had it; the old code accepted it.
    with pytest.raises(InvalidIdentifier, match="119900 is not a GB/T 2260"):
        validate_id_card(id_card("119900" + "19900307" + "123"))


def test_id_card_region_abolished_before_birth_is_refused() -> None:
    # 110103 崇文区 was last listed in 2009 and merged into 东城区 in 2010.
    with pytest.raises(InvalidIdentifier, match=r"110103 \(崇文区\) was abolished before the birth date"):
        validate_id_card(id_card("110103" + "20110101" + "123"))


@pytest.mark.parametrize("born", ["19490101", "20090615", "20101231"])
def test_id_card_region_abolished_after_birth_or_in_the_birth_year_is_valid(born: str) -> None:
    # Last listed at the end of 2009, so it may still have been in force during 2010.
    number = id_card("110103" + born + "123")
    assert validate_id_card(number) == number


def test_id_card_region_created_after_birth_is_valid() -> None:
    # 110118 密云区 exists since 2015; a person born there in 1960 was given it when re-registered.
    number = id_card("110118" + "19600101" + "123")
    assert validate_id_card(number) == number


def test_synthetic_residents_of_the_connector_are_valid() -> None:
    for resident in synthetic_residents(200):
        assert validate_id_card(resident.id_number) == resident.id_number


# --------------------------------------------------------------------------- 行政区划代码


@pytest.mark.parametrize("value", ["110105", "350100", "810000"])
def test_region_code_valid(value: str) -> None:
    assert validate_region_code(value) == value


@pytest.mark.parametrize("value", ["000000", "910000", "11010", "1101050", "11010A", "", " 110105"])
def test_region_code_invalid_is_refused(value: str) -> None:
    with pytest.raises(InvalidIdentifier, match="6 digits"):
        validate_region_code(value)


def test_region_code_with_trailing_newline_is_refused() -> None:
    with pytest.raises(InvalidIdentifier, match="6 digits"):
        validate_region_code("110105\n")


def test_region_code_unknown_to_gb2260_is_refused() -> None:
    with pytest.raises(InvalidIdentifier, match="119900 does not exist in GB/T 2260"):
        validate_region_code("119900")


def test_region_code_historical_is_valid_but_not_as_current() -> None:
    assert validate_region_code("110103") == "110103"
    with pytest.raises(InvalidIdentifier, match=r"110103 \(崇文区\) is no longer in use \(last listed in 2009\)"):
        validate_region_code("110103", current=True)


def test_region_code_in_full_width_digits_is_folded() -> None:
    assert validate_region_code("１１０１０５") == "110105"


# --------------------------------------------------------------------------- registration regions


@pytest.mark.parametrize(
    "code",
    [
        "11100000000013338W",  # 住房和城乡建设部: central registration, characters 3-8 = 100000
        "12100000000018032A",  # a central public institution
        "91320594780268314T",  # 苏州工业园区: 320594 is a registration code GB/T 2260 does not list
        "91440101MA5D693M4Q",  # 广州市: 440101 市辖区
        "91110228MA00000008",  # 110228 密云县, abolished in 2015: a credit code never changes
    ],
)
def test_credit_code_with_central_historical_or_zone_registration_region_is_valid(code: str) -> None:
    code = credit_code(code[:17])
    assert validate_credit_code(code) == code


@pytest.mark.parametrize("region", ["119900", "810100", "700000", "123456"])
def test_credit_code_whose_characters_3_to_8_are_no_region_is_refused(region: str) -> None:
    # The old code accepted any six digits starting 1-8 here.
    with pytest.raises(InvalidIdentifier, match=f"characters 3-8 \\({region}\\) are not a GB/T 2260"):
        validate_credit_code(credit_code("11" + region + "000000198"))


# --------------------------------------------------------------------------- departments


def test_demo_departments_agree_with_their_credit_codes() -> None:
    for dept in (POLICE, CIVIL_AFFAIRS):
        check_department_region(validate_credit_code(dept["code"]), validate_region_code(dept["region_code"]))


@pytest.mark.parametrize("region_code", ["110100", "110101", "110108"])
def test_department_inside_the_credit_codes_region_agrees(region_code: str) -> None:
    check_department_region(POLICE["code"], region_code)  # registered in 110100 北京市市辖区


@pytest.mark.parametrize("region_code", ["110000", "110229", "120101", "440305"])
def test_department_outside_the_credit_codes_region_is_refused(region_code: str) -> None:
    with pytest.raises(InvalidIdentifier, match=f"部门行政区划代码 {region_code} 不在.*is not within 110100"):
        check_department_region(POLICE["code"], region_code)


def test_central_department_may_sit_in_any_region() -> None:
    check_department_region("11100000000013338W", "110000")
    check_department_region("11100000000013338W", "440305")


def test_department_registered_in_an_abolished_county_agrees_with_its_successor() -> None:
    code = credit_code("11110228MA0000000")  # 110228 密云县 → 110118 密云区 in 2015
    check_department_region(code, "110118")
    with pytest.raises(InvalidIdentifier, match="is not within 110000"):
        check_department_region(code, "120101")


def test_development_zone_department_agrees_with_its_city() -> None:
    code = credit_code("11320594MB0000000")
    check_department_region(code, "320506")
    with pytest.raises(InvalidIdentifier, match="is not within 320500"):
        check_department_region(code, "320200")


# --------------------------------------------------------------------------- any text at all

validators = pytest.mark.parametrize("validate", [validate_id_card, validate_credit_code, validate_region_code])


@validators
@given(text=st.text())
def test_validators_return_a_str_or_raise_invalid_identifier_for_any_text(
    validate: Callable[[str], str], text: str
) -> None:
    assert_ascii_or_refused(validate, text)


@validators
@given(text=st.text(alphabet=st.sampled_from("0123456789X²٣０１Ｘ\u3000 ①\ud800"), min_size=5, max_size=20))
def test_validators_on_near_miss_identifiers_return_a_str_or_raise_invalid_identifier(
    validate: Callable[[str], str], text: str
) -> None:
    assert_ascii_or_refused(validate, text)


def assert_ascii_or_refused(validate: Callable[[str], str], text: str) -> None:
    """``validate`` answers ASCII or raises its own error — never another exception (a 500)."""
    try:
        result = validate(text)
    except InvalidIdentifier:
        return
    assert isinstance(result, str) and result.isascii()


# --------------------------------------------------------------------------- python-stdnum as a reference
#
# stdnum.cn.ric and stdnum.cn.uscc check the same structure independently. Where we differ, on purpose:
# * ric: stdnum has its own region list (from Wikipedia) with its own years, and refuses a region
#   created after the birth year; we use the ministry's lists and accept that (the number is issued
#   later). stdnum accepts any birth date; we refuse dates before 1900 or in the future. stdnum raises
#   KeyError (not a ValidationError) for some regions it half-knows.
# * uscc: stdnum requires digits in positions 1-8; GB 32100 and real codes also use letters in
#   positions 1-2 (registration authority, category: e.g. N2… for rural collectives). stdnum does not
#   check characters 3-8 against GB/T 2260; we do (see _registration_region_known).
# * neither folds full-width input; we fold it and refuse every other non-ASCII character.
# So: on the structure we must agree exactly; on the region, only where both data sets agree.

REGION_CODES = sorted(regions.gb2260().regions)


def stdnum_accepts(module: ModuleType, number: str) -> bool:
    try:
        module.validate(number)
    except (ValidationError, KeyError):
        return False
    return True


def ours_accepts(validate: Callable[[str], str], number: str) -> bool:
    try:
        validate(number)
    except InvalidIdentifier:
        return False
    return True


@st.composite
def id_card_numbers(draw: st.DrawFn) -> str:
    """ID numbers with a listed region and a real date, mostly with the right check digit."""
    region = draw(st.sampled_from(REGION_CODES))
    born = draw(st.dates(min_value=date(1900, 1, 1), max_value=date.today()))
    first17 = f"{region}{born:%Y%m%d}{draw(st.integers(0, 999)):03d}"
    check = draw(st.sampled_from([id_card_check_char(first17), *"0123456789X"]))
    return first17 + check


@given(number=id_card_numbers())
def test_id_card_agrees_with_stdnum_on_structure(number: str) -> None:
    ours = ours_accepts(validate_id_card, number)
    structure_ok = number[17] == stdnum_ric.calc_check_digit(number)
    assert not ours or structure_ok
    region = regions.lookup(number[:6])
    assert region is not None
    born_year = int(number[6:10])
    in_force_at_birth = region.last_year is None or born_year <= region.last_year + 1
    assert ours == (structure_ok and in_force_at_birth)
    if stdnum_accepts(stdnum_ric, number) and in_force_at_birth:
        assert ours  # stdnum accepting a number whose region our data also has in force: so do we


@given(text=st.text(alphabet="0123456789X", min_size=16, max_size=19))
def test_id_card_never_accepts_what_stdnum_refuses_for_length_format_or_check_digit(text: str) -> None:
    if ours_accepts(validate_id_card, text):
        assert len(text) == 18 and stdnum_ric.calc_check_digit(text) == text[17]
        stdnum_ric.get_birth_date(text)  # a real date to stdnum too (raises otherwise)


@st.composite
def credit_codes(draw: st.DrawFn) -> str:
    head = draw(st.sampled_from(["11", "12", "51", "52", "91", "92", "93", "Y1", "N2"]))
    region = draw(st.sampled_from([*REGION_CODES, regions.CENTRAL_REGISTRATION, "119900", "123456"]))
    body = draw(st.text(alphabet=CREDIT_CODE_CHARS, min_size=9, max_size=9))
    first17 = head + region + body
    return first17 + draw(st.sampled_from([credit_code_check_char(first17), *CREDIT_CODE_CHARS]))


@given(code=credit_codes())
def test_credit_code_agrees_with_stdnum_except_where_we_differ_on_purpose(code: str) -> None:
    ours = ours_accepts(validate_credit_code, code)
    theirs = stdnum_accepts(stdnum_uscc, code)
    letters_in_head = not code[:2].isdigit()
    region_known = code[2:8] not in ("119900", "123456")
    if letters_in_head:
        assert not theirs
        assert ours == (code[17] == credit_code_check_char(code[:17]) and region_known)
    else:
        assert ours == (theirs and region_known)


# --------------------------------------------------------------------------- the gateway's schema


def test_department_create_refuses_a_region_that_disagrees_with_the_code() -> None:
    with pytest.raises(PydanticValidationError, match="不在统一社会信用代码第3-8位"):
        DepartmentCreate.model_validate({**POLICE, "region_code": "120101"})


@pytest.mark.parametrize(("region_code", "message"), [("119900", "does not exist"), ("110103", "no longer in use")])
def test_department_create_refuses_a_region_code_not_in_use(region_code: str, message: str) -> None:
    with pytest.raises(PydanticValidationError, match=message):
        DepartmentCreate.model_validate({**POLICE, "region_code": region_code})


def test_department_create_accepts_the_demo_departments() -> None:
    for dept in (POLICE, CIVIL_AFFAIRS):
        assert DepartmentCreate.model_validate(dept).region_code == dept["region_code"]
