"""Blocking keys: the equality probes that bring a record's candidates together."""

from __future__ import annotations

from ehr_archive.identifiers import NCMS_CARD_SYSTEM, RESIDENT_ID_SYSTEM
from ehr_archive.matching import PersonRecord, blocking_keys, candidate_pairs, person_record_from_patient

WUZHOU_MALE = "450403198501011236"


def record(**changes: object) -> PersonRecord:
    patient = {
        "identifier": [
            {"system": RESIDENT_ID_SYSTEM, "value": WUZHOU_MALE},
            {"system": NCMS_CARD_SYSTEM, "value": "4504030012345678"},
        ],
        "name": [{"text": "黄家豪"}],
        "birthDate": "1985-01-07",
        "telecom": [{"system": "phone", "value": "13807745678"}],
        "address": [{"text": "万秀区城东镇新安村"}],
    }
    patient.update(changes)
    return person_record_from_patient({k: v for k, v in patient.items() if v is not None})


def test_a_full_record_is_filed_under_every_kind_of_key() -> None:
    assert blocking_keys(record()) == {
        f"rid:{WUZHOU_MALE}",
        "card:ncms-card:4504030012345678",
        "tel:13807745678",
        "ini:hjh:1985",
        "sur:huang:1985:0107",
        "py:huangjiahao:450403",
    }


def test_homophone_and_traditional_names_share_the_name_keys() -> None:
    keys = blocking_keys(record())
    for name in ("黃家豪", "黄嘉豪"):
        other = blocking_keys(record(name=[{"text": name}]))
        assert {"ini:hjh:1985", "py:huangjiahao:450403"} <= keys & other


def test_transposed_day_and_month_share_the_surname_key() -> None:
    swapped = blocking_keys(record(identifier=None, birthDate="1985-07-01"))
    assert "sur:huang:1985:0107" in swapped


def test_record_without_name_or_numbers_has_only_the_keys_it_can_have() -> None:
    assert blocking_keys(record(identifier=None, name=None)) == {"tel:13807745678"}
    assert blocking_keys(PersonRecord(record_id="empty")) == frozenset()


def test_invalid_id_number_is_still_a_key() -> None:
    keys = blocking_keys(record(identifier=[{"system": RESIDENT_ID_SYSTEM, "value": "450403198501011237"}]))
    assert "rid:450403198501011237" in keys


def test_candidate_pairs_are_records_sharing_a_key() -> None:
    records = [
        record(),
        record(identifier=None, telecom=None, name=[{"text": "黄嘉豪"}]),  # shares the name keys
        record(identifier=None, name=[{"text": "李四"}], birthDate="1950-02-02", address=None),  # shares the phone
        record(identifier=None, name=[{"text": "王五"}], birthDate="1960-03-03", telecom=None, address=None),
    ]
    assert candidate_pairs(records) == {(0, 1), (0, 2)}


def test_oversized_blocks_are_skipped() -> None:
    shared_phone = [record(identifier=None, name=[{"text": n}], address=None) for n in ("甲乙", "丙丁", "戊己")]
    assert len(candidate_pairs(shared_phone)) == 3
    assert candidate_pairs(shared_phone, max_block_size=2) == set()
