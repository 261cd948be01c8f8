"""Hanyu Pinyin forms of Chinese names for the local ``name-pinyin`` parameter (GB/T 16159 spelling, no tones).

张三 is indexed as ``zhangsan`` (full), ``zs`` (initials) and ``san`` (the given name alone); characters with
several readings (单 dan/shan, 曾 ceng/zeng) give every combination, up to a bound.
"""

from __future__ import annotations

from functools import lru_cache
from itertools import islice, product
from typing import Any

from pypinyin import Style, pinyin

_MAX_READINGS = 8


def is_cjk(char: str) -> bool:
    return "\u3400" <= char <= "\u9fff" or "\U00020000" <= char <= "\U0002ffff"


def spellings(text: str) -> list[str]:
    """Full pinyin of the Chinese characters of ``text``, one string per reading (``张三`` → ``zhangsan``)."""
    characters = "".join(c for c in text if is_cjk(c))
    return list(_spellings(characters)) if characters else []


@lru_cache(maxsize=16384)
def _spellings(characters: str) -> tuple[str, ...]:
    """Given names and words repeat across a region's residents: each is looked up in the dictionary once."""
    readings = pinyin(characters, style=Style.NORMAL, heteronym=True, errors="ignore")
    return tuple("".join(r) for r in islice(product(*readings), _MAX_READINGS))


@lru_cache(maxsize=16384)
def _readings(character: str) -> list[str]:
    """Every reading of one character (not to be changed by the caller: it is shared)."""
    return pinyin(character, style=Style.NORMAL, heteronym=True)[0]


def name_forms(name: Any) -> list[str]:
    """Pinyin search forms of a HumanName (or a plain string): full spellings, initials, given name alone."""
    if isinstance(name, str):
        whole, given = name, ""
    elif isinstance(name, dict):
        given = "".join(g for g in name.get("given") or [] if isinstance(g, str))
        family = name.get("family") if isinstance(name.get("family"), str) else ""
        whole = family + given if family or given else name.get("text") or ""
    else:
        return []
    forms: list[str] = []
    readings = [_readings(c) for c in whole if is_cjk(c)]
    for combination in islice(product(*readings), _MAX_READINGS) if readings else []:
        forms.append("".join(combination))
        forms.append("".join(syllable[0] for syllable in combination))
    forms.extend(spellings(given))
    return list(dict.fromkeys(f for f in forms if f))
