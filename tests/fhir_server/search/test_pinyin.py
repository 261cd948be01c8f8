"""Pinyin forms of names: the cached dictionary lookups give what the dictionary gives, call after call."""

from __future__ import annotations

from itertools import islice, product

import pytest
from pypinyin import Style, pinyin

from fhir_server.search.pinyin import is_cjk, name_forms, spellings

NAMES = [
    {"family": "张", "given": ["三"]},
    {"family": "单", "given": ["田芳"]},
    {"family": "曾", "given": ["单", "三"]},
    {"family": "欧阳", "given": ["娜娜"]},
    {"text": "李四"},
    "王五",
    {"family": "Smith", "given": ["张"]},
    {"given": [1, "行"]},
]


def _reference(name):  # type: ignore[no-untyped-def]
    """The forms straight from the dictionary, nothing cached."""
    if isinstance(name, str):
        whole, given = name, ""
    else:
        given = "".join(g for g in name.get("given") or [] if isinstance(g, str))
        family = name.get("family") if isinstance(name.get("family"), str) else ""
        whole = family + given if family or given else name.get("text") or ""
    forms = []
    readings = [pinyin(c, style=Style.NORMAL, heteronym=True)[0] for c in whole if is_cjk(c)]
    for combination in islice(product(*readings), 8) if readings else []:
        forms.append("".join(combination))
        forms.append("".join(s[0] for s in combination))
    characters = "".join(c for c in given if is_cjk(c))
    if characters:
        words = pinyin(characters, style=Style.NORMAL, heteronym=True, errors="ignore")
        forms.extend("".join(r) for r in islice(product(*words), 8))
    return list(dict.fromkeys(f for f in forms if f))


@pytest.mark.parametrize("name", NAMES, ids=str)
def test_forms_equal_the_dictionarys_on_every_call(name) -> None:  # type: ignore[no-untyped-def]
    expected = _reference(name)
    assert name_forms(name) == expected
    name_forms(name).clear()  # a caller changing its list changes nothing shared
    assert name_forms(name) == expected


def test_heteronyms_give_every_reading() -> None:
    assert {"shantianfang", "dantianfang"} <= set(name_forms({"family": "单", "given": ["田芳"]}))
    words = spellings("单")
    words.append("x")
    assert "x" not in spellings("单")
