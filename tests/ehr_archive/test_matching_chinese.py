"""Chinese names folded for matching: simplified characters, surname readings, toneless and fuzzy pinyin."""

from __future__ import annotations

from ehr_archive.matching.chinese import fuzzy_syllable, parse_chinese_name, to_simplified


def test_traditional_characters_fold_to_simplified() -> None:
    assert to_simplified("陳偉強") == "陈伟强"
    assert to_simplified("歐陽麗華") == "欧阳丽华"
    assert to_simplified("李明") == "李明"


def test_name_text_is_split_into_surname_and_given_name() -> None:
    name = parse_chinese_name(text="黄家豪")
    assert (name.surname, name.given, name.syllables) == ("黄", "家豪", ("huang", "jia", "hao"))
    assert (name.initials, name.full_pinyin, name.surname_pinyin) == ("hjh", "huangjiahao", "huang")


def test_compound_surname_is_kept_whole() -> None:
    name = parse_chinese_name(text="歐陽娜娜")
    assert (name.surname, name.given, name.surname_pinyin) == ("欧阳", "娜娜", "ouyang")


def test_family_and_given_parts_win_over_text() -> None:
    name = parse_chinese_name(family="司马", given="光", text="ignored")
    assert (name.surname, name.given) == ("司马", "光")


def test_surnames_take_their_surname_reading() -> None:
    assert parse_chinese_name(text="单雄信").surname_pinyin == "shan"
    assert parse_chinese_name(text="覃小明").surname_pinyin == "qin"
    assert parse_chinese_name(text="曾国藩").surname_pinyin == "zeng"
    assert parse_chinese_name(text="区志强").surname_pinyin == "ou"


def test_given_name_characters_keep_every_reading() -> None:
    name = parse_chinese_name(text="李长乐")
    assert name.readings[1] >= {"zhang", "chang"} and name.readings[2] >= {"le", "yue"}


def test_latin_name_is_read_as_pinyin_words() -> None:
    latin = parse_chinese_name(family="Zhang", given="Xiaoming")
    assert latin.syllables == ("zhang", "xiaoming")
    assert latin.full_pinyin == parse_chinese_name(text="张晓明").full_pinyin
    assert parse_chinese_name(text="Lü Bu").full_pinyin == "lvbu"


def test_empty_name_is_none() -> None:
    assert parse_chinese_name() is None
    assert parse_chinese_name(text=" · ") is None


def test_fuzzy_syllable_merges_southern_confusions() -> None:
    assert fuzzy_syllable("zhang") == fuzzy_syllable("zan")
    assert fuzzy_syllable("ling") == fuzzy_syllable("lin") == fuzzy_syllable("nin")
    assert fuzzy_syllable("fang") == fuzzy_syllable("han")
    assert fuzzy_syllable("shi") != fuzzy_syllable("xi")
