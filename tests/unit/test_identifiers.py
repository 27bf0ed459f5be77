"""统一社会信用代码, 居民身份证号码 and 行政区划代码: what a person typing one is told."""

from datetime import date, timedelta

import pytest

from services.common.identifiers import (
    InvalidIdentifier,
    credit_code_check_char,
    id_card_check_char,
    validate_credit_code,
    validate_id_card,
    validate_region_code,
)

# A real, published 统一社会信用代码 (Fujian); it must be accepted as typed.
PUBLISHED_CREDIT_CODE = "91350100M000100Y43"
VALID_ID_CARD = "11010519491231002X"


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


def test_id_card_in_full_width_digits_is_refused_or_normalised_to_ascii() -> None:
    # Chinese input methods often produce full-width digits (０-９). Accepting them unchanged would
    # make the same person two different subjects (their hash differs from the ASCII number's).
    ascii_number = id_card("11010519900307123")
    assert ascii_number[-1].isdigit()
    full_width = ascii_number.translate(str.maketrans("0123456789", "０１２３４５６７８９"))
    try:
        result = validate_id_card(full_width)
    except InvalidIdentifier:
        return
    assert result == ascii_number


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
