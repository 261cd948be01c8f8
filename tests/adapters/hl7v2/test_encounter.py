"""PV1 as Encounter, with Location (PV1-3/PV1-6) and Practitioner (PV1-7/8/9/17)."""

from __future__ import annotations

import pytest

from adapters.hl7v2.errors import MissingRequiredError
from tests.adapters.hl7v2.samples import entry_for, map_sample, resources

FACILITY = "450400-001"
VISITS = f"https://hie.wuzhou.gov.cn/fhir/sid/visit/{FACILITY}"


def test_inpatient_encounter() -> None:
    bundle = map_sample("adt_a01.hl7")
    entry = entry_for(bundle, "Encounter")
    encounter = entry["resource"]

    assert entry["request"] == {"method": "PUT", "url": f"Encounter?identifier={VISITS}|ZY20240315001"}
    assert encounter["identifier"][0]["type"]["coding"][0]["code"] == "VN"
    assert encounter["class"] == {
        "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
        "code": "IMP",
        "display": "inpatient encounter",
    }
    assert encounter["subject"]["reference"] == entry_for(bundle, "Patient")["fullUrl"]
    assert encounter["period"] == {"start": "2024-03-15T09:20:00+08:00"}
    assert encounter["serviceType"] == {"text": "心血管内科"}
    assert encounter["reasonCode"][0]["coding"][0]["code"] == "I21.9"
    assert encounter["hospitalization"] == {"admitSource": {"text": "7"}}
    assert encounter["serviceProvider"]["identifier"]["value"] == FACILITY


def test_attending_and_admitting_doctor_is_one_practitioner() -> None:
    bundle = map_sample("adt_a01.hl7")
    practitioners = resources(bundle, "Practitioner")
    participants = entry_for(bundle, "Encounter")["resource"]["participant"]

    assert [p["identifier"][0]["value"] for p in practitioners] == ["D0012", "D0345"]
    assert practitioners[0]["name"][0]["text"] == "黄志明"
    roles = [(p["type"][0]["coding"][0]["code"], p["individual"]["display"]) for p in participants]
    assert roles == [("ATND", "黄志明"), ("REF", "梁伟"), ("ADM", "黄志明")]
    assert participants[0]["individual"]["reference"] == participants[2]["individual"]["reference"]


def test_bed_location() -> None:
    bundle = map_sample("adt_a01.hl7")
    location = entry_for(bundle, "Location")
    encounter = entry_for(bundle, "Encounter")["resource"]

    assert location["resource"]["identifier"][0]["value"] == "CARDW/0302/12"
    assert location["resource"]["name"] == "心内科一病区302室12床"
    assert location["resource"]["physicalType"]["coding"][0]["code"] == "bd"
    assert encounter["location"] == [
        {"location": {"reference": location["fullUrl"], "display": "心内科一病区302室12床"}, "status": "active"}
    ]


@pytest.mark.parametrize(("code", "act_code"), [("E", "EMER"), ("O", "AMB"), ("P", "PRENC"), ("X", "UNK")])
def test_patient_class(code: str, act_code: str) -> None:
    bundle = map_sample("adt_a01.hl7", ("PV1|1|I|", f"PV1|1|{code}|"))

    assert entry_for(bundle, "Encounter")["resource"]["class"]["code"] == act_code


def test_alternate_visit_id_keys_the_encounter_without_a_visit_number() -> None:
    bundle = map_sample(
        "adt_a01.hl7",
        ("|ZY20240315001^^^450400-001^VN|", "||"),
        ("|20240315092000+0800\rPV2", "|20240315092000+0800||||||ALT-77\rPV2"),
    )

    assert "/alternate-visit|ALT-77" in entry_for(bundle, "Encounter")["request"]["url"]


def test_admit_time_keys_the_encounter_as_a_last_resort() -> None:
    bundle = map_sample("adt_a01.hl7", ("|ZY20240315001^^^450400-001^VN|", "||"))

    url = entry_for(bundle, "Encounter")["request"]["url"]
    assert url.endswith("/hl7v2-record/450400-001/admission|0012345678/20240315092000%2B0800")


def test_visit_without_any_key_is_missing_pv1_19() -> None:
    # The pre-admission has no PV1-44 admit time yet, so without PV1-19 nothing identifies the visit.
    with pytest.raises(MissingRequiredError) as caught:
        map_sample("adt_a05.hl7", ("|ZY20240401007^^^450400-001^VN", "|"))

    assert caught.value.location == "PV1-19"
