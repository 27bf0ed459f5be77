"""脱敏: what a consumer sees of a masked information item."""

import pytest

from services.common.masking import (
    apply_masking,
    effective_masking,
    grant_masking,
    mask_full,
    mask_id_card,
    mask_mobile,
    mask_name,
)


def test_id_card_keeps_first_six_and_last_four() -> None:
    assert mask_id_card("110101199003071234") == "110101********1234"


def test_id_card_with_x_keeps_the_x() -> None:
    assert mask_id_card("11010519491231002X") == "110105********002X"


def test_mobile_keeps_first_three_and_last_four() -> None:
    assert mask_mobile("13812345678") == "138****5678"


@pytest.mark.parametrize(
    ("name", "masked"), [("张三", "张*"), ("李小龙", "李**"), ("欧阳娜娜", "欧阳**"), ("司马光", "司马*")]
)
def test_name_keeps_only_the_surname(name: str, masked: str) -> None:
    assert mask_name(name) == masked


def test_two_character_name_that_looks_like_a_compound_surname_keeps_one_character() -> None:
    # 欧阳 alone is more likely surname 欧 + given name 阳 than a surname with no given name.
    assert mask_name("欧阳") == "欧*"


def test_full_hides_everything() -> None:
    assert mask_full("北京市朝阳区") == "******"


@pytest.mark.parametrize("value", ["", "1", "1234", "1234567890"])
def test_id_card_too_short_to_keep_both_ends_is_hidden_entirely(value: str) -> None:
    assert mask_id_card(value) == "*" * len(value)


@pytest.mark.parametrize("value", ["", "138", "1381234"])
def test_mobile_too_short_to_keep_both_ends_is_hidden_entirely(value: str) -> None:
    assert mask_mobile(value) == "*" * len(value)


def test_mobile_one_longer_than_kept_parts_hides_one_character() -> None:
    assert mask_mobile("13812345") == "138*2345"


def test_apply_masking_masks_only_items_with_a_rule_and_lists_them() -> None:
    data = {"姓名": "张三", "身份证号": "110101199003071234", "手机号": "13812345678", "住址": "北京市"}
    rules = {"姓名": "name", "身份证号": "id_card", "手机号": "mobile"}

    masked, items = apply_masking(data, rules)

    assert masked == {"姓名": "张*", "身份证号": "110101********1234", "手机号": "138****5678", "住址": "北京市"}
    assert sorted(items) == sorted(["姓名", "身份证号", "手机号"])
    assert data["身份证号"] == "110101199003071234"  # the input is not changed in place


def test_apply_masking_ignores_rules_for_items_not_in_the_data() -> None:
    masked, items = apply_masking({"住址": "北京市"}, {"身份证号": "id_card"})
    assert masked == {"住址": "北京市"}
    assert items == []


def test_apply_masking_without_rules_returns_the_data_unchanged() -> None:
    data = {"姓名": "张三"}
    assert apply_masking(data, {}) == ({"姓名": "张三"}, [])


def test_a_grant_takes_the_catalogue_defaults_and_the_approver_overrides_them() -> None:
    items = [{"name": "姓名", "masking": "name"}, {"name": "公民身份号码", "masking": "id_card"}, {"name": "住址"}]
    assert grant_masking(items, {"公民身份号码": "full"}) == {"姓名": "name", "公民身份号码": "full"}


def test_a_sensitive_item_without_a_rule_is_hidden_not_shown() -> None:
    items = [{"name": "公民身份号码", "sensitive": True}, {"name": "住址", "sensitive": False}, {"name": "姓名"}]
    assert effective_masking({"姓名": "name"}, items) == {"姓名": "name", "公民身份号码": "full"}


def test_a_sensitive_item_keeps_the_rule_its_grant_gives_it() -> None:
    assert effective_masking({"公民身份号码": "id_card"}, [{"name": "公民身份号码", "sensitive": True}]) == {
        "公民身份号码": "id_card"
    }
