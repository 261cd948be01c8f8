"""Fellegi–Sunter scoring of record pairs: clear matches, non-matches, each error kind, twins, ID rules."""

from __future__ import annotations

import math
from typing import Any

import pytest

from ehr_archive.identifiers import NCMS_CARD_SYSTEM, RESIDENT_ID_SYSTEM, resident_id_check_char
from ehr_archive.matching import (
    DEFAULT_MODEL,
    MatchGrade,
    MatchModel,
    MatchResult,
    Thresholds,
    compare_records,
    person_record_from_patient,
    score_pair,
)

LINKED = (MatchGrade.CERTAIN, MatchGrade.PROBABLE)


def resident_id(first17: str) -> str:
    return first17 + resident_id_check_char(first17)


def patient(**changes: Any) -> dict[str, Any]:
    """梁家豪, born 1990-03-08 in 藤县塘步镇新安村, with a phone; `None` removes a field."""
    base: dict[str, Any] = {
        "resourceType": "Patient",
        "name": [{"text": "梁家豪"}],
        "gender": "male",
        "birthDate": "1990-03-08",
        "telecom": [{"system": "phone", "value": "13807745678"}],
        "address": [{"district": "藤县", "line": ["塘步镇", "新安村", "8号"]}],
    }
    base.update(changes)
    return {key: value for key, value in base.items() if value is not None}


def ids(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"system": system, "value": value} for system, value in pairs]


ID_A = resident_id("45042219900308011")
ID_TWIN = resident_id("45042219900308031")
CARD = (NCMS_CARD_SYSTEM, "4504220012345678")


def score(a: dict[str, Any], b: dict[str, Any]) -> MatchResult:
    return score_pair(person_record_from_patient(a), person_record_from_patient(b))


def test_same_valid_resident_id_is_certain_by_rule() -> None:
    result = score(
        patient(identifier=ids((RESIDENT_ID_SYSTEM, ID_A))), patient(identifier=ids((RESIDENT_ID_SYSTEM, ID_A)))
    )
    assert (result.grade, result.rule) == (MatchGrade.CERTAIN, "same-resident-id")


def test_legacy_15_digit_number_links_to_its_18_digit_form() -> None:
    legacy = ID_A[:6] + ID_A[8:17]
    result = score(
        patient(identifier=ids((RESIDENT_ID_SYSTEM, ID_A))), patient(identifier=ids((RESIDENT_ID_SYSTEM, legacy)))
    )
    assert result.rule == "same-resident-id"


def test_namesakes_with_different_valid_ids_are_certainly_not() -> None:
    other = resident_id("45048119900308051")
    result = score(
        patient(identifier=ids((RESIDENT_ID_SYSTEM, ID_A))), patient(identifier=ids((RESIDENT_ID_SYSTEM, other)))
    )
    assert (result.grade, result.rule) == (MatchGrade.CERTAINLY_NOT, "different-resident-ids")
    assert result.score > 0  # the demographics agree; the numbers decide


def test_card_and_demographics_without_id_number_are_certain() -> None:
    result = score(patient(identifier=ids(CARD)), patient(identifier=ids(CARD, (RESIDENT_ID_SYSTEM, ID_A))))
    assert result.grade is MatchGrade.CERTAIN and result.rule is None


def test_demographics_alone_are_never_certain() -> None:
    result = score(patient(), patient())
    assert result.grade is MatchGrade.PROBABLE


def test_clear_non_match_is_certainly_not() -> None:
    other = patient(
        name=[{"text": "王秀英"}],
        gender="female",
        birthDate="1962-11-21",
        telecom=[{"system": "phone", "value": "13977441122"}],
        address=[{"text": "岑溪市糯垌镇大塘村"}],
    )
    assert score(patient(), other).grade is MatchGrade.CERTAINLY_NOT


ERROR_KINDS = {
    "homophone": ({"name": [{"text": "梁嘉豪"}]}, "name", "pinyin"),
    "homophones-in-every-given-character": ({"name": [{"text": "梁佳好"}]}, "name", "pinyin"),
    "transposed-date": ({"birthDate": "1990-08-03"}, "birth_date", "transposed"),
    "date-off-by-one": ({"birthDate": "1990-03-09"}, "birth_date", "off-by-one"),
    "phone-swapped-digits": ({"telecom": [{"system": "phone", "value": "13807746578"}]}, "phone", "close"),
    "missing-phone": ({"telecom": None}, "phone", "missing"),
    "missing-address": ({"address": None}, "address", "missing"),
    "missing-date": ({"birthDate": None}, "birth_date", "missing"),
    "moved-within-district": ({"address": [{"text": "藤县琅南镇"}]}, "address", "district"),
}


@pytest.mark.parametrize("kind", list(ERROR_KINDS))
def test_each_error_kind_still_links_without_identifiers(kind: str) -> None:
    changes, field, level = ERROR_KINDS[kind]
    a, b = person_record_from_patient(patient()), person_record_from_patient(patient(**changes))
    assert compare_records(a, b)[field] == level
    assert score_pair(a, b).grade in LINKED


def test_traditional_characters_agree_exactly() -> None:
    a = person_record_from_patient(patient(name=[{"text": "陈伟强"}]))
    b = person_record_from_patient(patient(name=[{"family": "陳", "given": ["偉強"]}]))
    assert compare_records(a, b)["name"] == "exact"
    assert score_pair(a, b).grade in LINKED


def test_southern_fuzzy_pinyin_is_its_own_level() -> None:
    a = person_record_from_patient(patient(name=[{"text": "林建宁"}]))
    b = person_record_from_patient(patient(name=[{"text": "凌建玲"}]))
    assert compare_records(a, b)["name"] == "fuzzy"
    assert score_pair(a, b).grade in LINKED


def test_one_character_typo_links_when_a_card_agrees() -> None:
    typo = patient(name=[{"text": "梁家強"}], identifier=ids(CARD))
    a, b = person_record_from_patient(patient(identifier=ids(CARD))), person_record_from_patient(typo)
    assert compare_records(a, b)["name"] == "one-char"
    assert score_pair(a, b).grade in LINKED


def test_resident_id_typo_is_close_and_links() -> None:
    typo = ID_A[:10] + ("9" if ID_A[10] != "9" else "8") + ID_A[11:]
    a = person_record_from_patient(patient(identifier=ids((RESIDENT_ID_SYSTEM, ID_A))))
    b = person_record_from_patient(patient(identifier=ids((RESIDENT_ID_SYSTEM, typo))))
    assert compare_records(a, b)["resident_id"] == "close"
    assert score_pair(a, b).grade is MatchGrade.CERTAIN


def test_card_only_record_links_to_the_record_with_the_id_number() -> None:
    card_only = patient(identifier=ids(CARD), telecom=None, name=[{"text": "梁嘉豪"}])
    full = patient(identifier=ids((RESIDENT_ID_SYSTEM, ID_A), CARD))
    assert score(card_only, full).grade is MatchGrade.CERTAIN


def twin(**changes: Any) -> dict[str, Any]:
    return patient(name=[{"text": "梁家俊"}], **changes)


def test_twins_with_id_numbers_are_certainly_not() -> None:
    result = score(
        patient(identifier=ids((RESIDENT_ID_SYSTEM, ID_A))), twin(identifier=ids((RESIDENT_ID_SYSTEM, ID_TWIN)))
    )
    assert result.grade is MatchGrade.CERTAINLY_NOT


def test_twins_without_id_numbers_are_not_linked() -> None:
    result = score(patient(), twin())
    levels = {e.field: e.level for e in result.evidence}
    assert levels["name"] == "one-char" and levels["birth_date"] == "exact" and levels["phone"] == "agree"
    assert result.grade not in LINKED


def test_twins_with_different_cards_are_certainly_not() -> None:
    other_card = (NCMS_CARD_SYSTEM, "4504220012349999")
    assert score(patient(identifier=ids(CARD)), twin(identifier=ids(other_card))).grade is MatchGrade.CERTAINLY_NOT


def test_family_sharing_a_phone_and_address_is_not_linked() -> None:
    mother = patient(name=[{"text": "莫秀英"}], gender="female", birthDate="1965-07-19")
    assert score(patient(), mother).grade is MatchGrade.CERTAINLY_NOT


def test_borrowed_id_number_never_links_by_rule() -> None:
    # a newborn registered under the mother's ID number: the number contradicts the record's own birth date and sex
    mother_id = resident_id("45042219650719002")
    mother = patient(name=[{"text": "莫秀英"}], gender="female", birthDate="1965-07-19")
    baby = patient(name=[{"text": "莫秀英之子"}], birthDate="2024-05-01")
    result = score(
        {**mother, "identifier": ids((RESIDENT_ID_SYSTEM, mother_id))},
        {**baby, "identifier": ids((RESIDENT_ID_SYSTEM, mother_id))},
    )
    assert result.rule == "resident-id-contradicts-record"
    assert result.grade is not MatchGrade.CERTAIN


def test_evidence_explains_the_score() -> None:
    result = score(patient(identifier=ids(CARD)), patient(identifier=ids(CARD), birthDate="1990-08-03"))
    assert math.isclose(result.score, sum(e.weight for e in result.evidence))
    by_field = {e.field: e for e in result.evidence}
    assert by_field["birth_date"].level == "transposed"
    assert by_field["cards"].weight == pytest.approx(DEFAULT_MODEL.weight("cards", "agree"))
    assert by_field["resident_id"].weight == 0.0
    shown = result.to_dict()
    assert shown["grade"] == "certain" and shown["rule"] is None
    assert {"field": "birth_date", "level": "transposed", "weight": round(by_field["birth_date"].weight, 2)} in (
        shown["evidence"]
    )


def test_thresholds_are_configurable() -> None:
    strict = Thresholds(certain=100.0, probable=50.0, possible=20.0)
    a, b = (
        person_record_from_patient(patient(identifier=ids(CARD))),
        person_record_from_patient(patient(identifier=ids(CARD))),
    )
    assert score_pair(a, b, thresholds=strict).grade is MatchGrade.CERTAINLY_NOT
    with pytest.raises(ValueError, match="certain >= probable >= possible"):
        Thresholds(certain=1.0, probable=2.0, possible=0.0)


def test_model_rejects_impossible_probabilities() -> None:
    with pytest.raises(ValueError, match="name/exact"):
        MatchModel({"name": {"exact": (0.0, 0.1)}})
    assert MatchModel({}).weight("name", "exact") == 0.0


def test_each_model_scores_with_its_own_weights() -> None:
    a, b = person_record_from_patient(patient()), person_record_from_patient(patient(birthDate="1990-03-09"))
    doubled = MatchModel(
        {
            name: {level: (min(1.0, 2 * m), u) for level, (m, u) in levels.items()}
            for name, levels in DEFAULT_MODEL.probabilities.items()
        }
    )

    for model in (DEFAULT_MODEL, doubled):
        result = score_pair(a, b, model=model)
        assert [(e.field, e.level, e.weight) for e in result.evidence] == [
            (name, level, model.weight(name, level)) for name, level in compare_records(a, b).items()
        ]
        assert result.score == sum(model.weight(name, level) for name, level in compare_records(a, b).items())
    assert score_pair(a, b, model=doubled).score > score_pair(a, b).score
