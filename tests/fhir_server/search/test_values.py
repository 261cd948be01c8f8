"""Search value parsing without a database: escapes, prefixes, implicit ranges, pinyin forms."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from fhir_server.search.pinyin import name_forms
from fhir_server.search.values import (
    date_range,
    fold,
    number_range,
    search_date,
    split_escaped,
    split_prefix,
    to_micros,
    unescape,
)


def micros(*args: int) -> int:
    return to_micros(datetime(*args, tzinfo=UTC))


def test_escapes_split_then_unescape():
    assert split_escaped(r"a\,b,c", ",") == [r"a\,b", "c"]
    assert [unescape(p) for p in split_escaped(r"urn:x|a\|b", "|")] == ["urn:x", "a|b"]
    assert unescape(r"100\$mg\\") == "100$mg\\"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("ge2020", ("ge", "2020")), ("2020", ("eq", "2020")), ("ap5.4", ("ap", "5.4")), ("eq", ("eq", "eq"))],
)
def test_prefixes(text, expected):
    assert split_prefix(text) == expected


def test_number_implicit_range_follows_significant_figures():
    assert number_range(Decimal("100")) == (99.5, 100.5)
    assert number_range(Decimal("100.00")) == (99.995, 100.005)
    assert number_range(Decimal("1e2")) == (50.0, 150.0)


def test_partial_dates_are_ranges_in_the_region_zone_unless_an_offset_is_given():
    assert date_range("2024") == (micros(2023, 12, 31, 16), micros(2024, 12, 31, 16) - 1)
    assert date_range("2024-02") == (micros(2024, 1, 31, 16), micros(2024, 2, 29, 16) - 1)
    assert date_range("2024-01-02T10:00:00Z") == (micros(2024, 1, 2, 10), micros(2024, 1, 2, 10, 0, 1) - 1)
    assert search_date("2024-01-02T18:00:00 08:00") == date_range("2024-01-02T10:00:00Z")
    assert date_range("2024-13") is None
    assert date_range("yesterday") is None


def test_fold_is_case_and_accent_insensitive_and_keeps_chinese():
    assert fold("Ängela MÜLLER") == "angela muller"
    assert fold("张三") == "张三"


def test_pinyin_forms_cover_full_initials_given_and_heteronyms():
    assert name_forms({"family": "张", "given": ["三"]}) == ["zhangsan", "zs", "san"]
    forms = name_forms({"family": "单", "given": ["田芳"]})
    assert {"shantianfang", "stf", "tianfang"} <= set(forms)
    assert name_forms({"family": "Smith", "given": ["John"]}) == []
    assert name_forms({"text": "李四"}) == ["lisi", "ls"]
