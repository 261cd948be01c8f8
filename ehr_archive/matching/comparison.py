"""Field comparisons of two PersonRecords, each reduced to an agreement level (Fellegi–Sunter 1969 §2.1, γ)."""

from __future__ import annotations

from datetime import date

from ehr_archive.matching.chinese import ChineseName, fuzzy_syllable
from ehr_archive.matching.records import PersonRecord

__all__ = [
    "FIELD_LEVELS",
    "MISSING",
    "compare_addresses",
    "compare_birth_dates",
    "compare_cards",
    "compare_names",
    "compare_phones",
    "compare_records",
    "compare_resident_ids",
    "resident_id_is_consistent",
]

MISSING = "missing"

# The agreement levels of each field, from the strongest agreement to disagreement; "missing" carries no weight.
FIELD_LEVELS: dict[str, tuple[str, ...]] = {
    "resident_id": ("agree", "close", "disagree", MISSING),
    "cards": ("agree", "disagree", MISSING),
    "name": ("exact", "pinyin", "fuzzy", "one-char", "initials", "disagree", MISSING),
    "birth_date": ("exact", "transposed", "off-by-one", "digit", "disagree", MISSING),
    "sex": ("agree", "disagree", MISSING),
    "phone": ("agree", "close", "disagree", MISSING),
    "address": ("village", "township", "district", "disagree", MISSING),
}


def compare_records(a: PersonRecord, b: PersonRecord) -> dict[str, str]:
    """The comparison vector γ of a record pair: one agreement level per field of FIELD_LEVELS."""
    return {
        "resident_id": compare_resident_ids(a, b),
        "cards": compare_cards(a, b),
        "name": compare_names(a.name, b.name),
        "birth_date": compare_birth_dates(a.birth_date, b.birth_date),
        "sex": MISSING if not (a.sex and b.sex) else "agree" if a.sex == b.sex else "disagree",
        "phone": compare_phones(a.phones, b.phones),
        "address": compare_addresses(a, b),
    }


def compare_names(a: ChineseName | None, b: ChineseName | None) -> str:
    """exact characters; same pinyin without tones (homophones); southern fuzzy pinyin; one character off; initials."""
    if a is None or b is None:
        return MISSING
    if a.text == b.text:
        return "exact"
    if len(a.readings) == len(b.readings) and not any(
        x.isdisjoint(y) for x, y in zip(a.readings, b.readings, strict=True)
    ):
        return "pinyin"
    if a.full_pinyin == b.full_pinyin:
        return "pinyin"
    if len(a.syllables) == len(b.syllables) and all(_same_sound(a, i, b, i) for i in range(len(a.syllables))):
        return "fuzzy"
    if a.surname and b.surname and _one_given_char_off(a, b):
        return "one-char"
    if a.initials == b.initials:
        return "initials"
    return "disagree"


def compare_birth_dates(a: date | None, b: date | None) -> str:
    """exact; day and month transposed; one day apart; one digit mistyped or two adjacent digits swapped."""
    if a is None or b is None:
        return MISSING
    if a == b:
        return "exact"
    if a.year == b.year and a.month == b.day and a.day == b.month:
        return "transposed"
    if abs((a - b).days) == 1:
        return "off-by-one"
    if _one_keystroke_off(a.strftime("%Y%m%d"), b.strftime("%Y%m%d")):
        return "digit"
    return "disagree"


def compare_phones(a: frozenset[str], b: frozenset[str]) -> str:
    """agree when the records share a number; close when two numbers differ by one keystroke."""
    if not a or not b:
        return MISSING
    if a & b:
        return "agree"
    if any(_one_keystroke_off(x, y) for x in a for y in b):
        return "close"
    return "disagree"


def compare_addresses(a: PersonRecord, b: PersonRecord) -> str:
    """The finest administrative level on which both addresses agree: village, township or district."""
    if a.district and b.district and a.district != b.district:
        return "disagree"
    same_district = bool(a.district) and a.district == b.district
    if a.township and b.township:
        if a.township != b.township:
            return "district" if same_district else "disagree"
        return "village" if a.village and a.village == b.village else "township"
    return "district" if same_district else MISSING


def compare_cards(a: PersonRecord, b: PersonRecord) -> str:
    """agree when a card system both records carry has a common number; disagree when all such numbers differ."""
    cards_a, cards_b = a.card_map, b.card_map
    shared = cards_a.keys() & cards_b.keys()
    if not shared:
        return MISSING
    return "agree" if any(cards_a[key] & cards_b[key] for key in shared) else "disagree"


def compare_resident_ids(a: PersonRecord, b: PersonRecord) -> str:
    """Resident ID numbers, valid or not: equal, one keystroke apart (a typo), different, or absent."""
    x, y = a.resident_id or a.resident_id_raw, b.resident_id or b.resident_id_raw
    if not x or not y:
        return MISSING
    if x == y:
        return "agree"
    return "close" if _one_keystroke_off(x, y) else "disagree"


def resident_id_is_consistent(record: PersonRecord) -> bool:
    """A valid ID number whose embedded birth date and sex (GB 11643-1999 §5) fit the record's own."""
    if record.resident_id is None:
        return False
    if record.sex and record.resident_id_sex and record.sex != record.resident_id_sex:
        return False
    level = compare_birth_dates(record.birth_date, record.resident_id_birth_date)
    return level != "disagree"


def _one_keystroke_off(x: str, y: str) -> bool:
    if len(x) != len(y) or x == y:
        return False
    diffs = [i for i, (p, q) in enumerate(zip(x, y, strict=True)) if p != q]
    if len(diffs) == 1:
        return True
    i = diffs[0]
    return len(diffs) == 2 and diffs[1] == i + 1 and x[i] == y[i + 1] and x[i + 1] == y[i]


def _one_given_char_off(a: ChineseName, b: ChineseName) -> bool:
    """Surnames agree and the given names are one substitution, insertion or deletion apart (by sound)."""
    ns_a, ns_b = a.surname_syllables, b.surname_syllables
    if ns_a != ns_b or not all(_same_sound(a, i, b, i) for i in range(ns_a)):
        return False
    given_a, given_b = range(ns_a, len(a.syllables)), range(ns_b, len(b.syllables))
    if not given_a or not given_b or abs(len(given_a) - len(given_b)) > 1:
        return False
    previous = list(range(len(given_b) + 1))
    for row, i in enumerate(given_a, start=1):
        current = [row]
        for col, j in enumerate(given_b, start=1):
            cost = 0 if _same_sound(a, i, b, j) else 1
            current.append(min(previous[col] + 1, current[col - 1] + 1, previous[col - 1] + cost))
        previous = current
    return previous[-1] == 1


def _same_sound(a: ChineseName, i: int, b: ChineseName, j: int) -> bool:
    return not a.readings[i].isdisjoint(b.readings[j]) or fuzzy_syllable(a.syllables[i]) == fuzzy_syllable(
        b.syllables[j]
    )
