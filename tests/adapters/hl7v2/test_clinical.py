"""AL1 and DG1 as AllergyIntolerance and Condition."""

from __future__ import annotations

import pytest

from adapters.hl7v2.errors import MissingRequiredError
from tests.adapters.hl7v2.samples import entry_for, map_sample, resources


def test_drug_allergy() -> None:
    entry = entry_for(map_sample("adt_a01.hl7"), "AllergyIntolerance")
    allergy = entry["resource"]

    assert allergy["identifier"][0]["value"] == "0012345678/Z88.0"
    assert allergy["code"]["coding"][0] == {
        "system": "http://hl7.org/fhir/sid/icd-10",
        "code": "Z88.0",
        "display": "青霉素过敏史",
    }
    assert allergy["category"] == ["medication"]
    assert allergy["criticality"] == "high"
    assert allergy["onsetDateTime"] == "2010-06-01"
    assert allergy["reaction"] == [{"manifestation": [{"text": "皮疹"}, {"text": "呼吸困难"}]}]
    assert allergy["clinicalStatus"]["coding"][0]["code"] == "active"
    assert allergy["patient"]["display"] == "陈建国"
    assert entry["request"]["method"] == "PUT"


def test_food_allergy_by_text_only() -> None:
    allergy = entry_for(map_sample("adt_a28.hl7"), "AllergyIntolerance")["resource"]

    assert allergy["code"] == {"text": "海鲜"}
    assert allergy["category"] == ["food"]
    assert allergy["criticality"] == "low"
    assert allergy["identifier"][0]["value"] == "0020000031/海鲜"


def test_allergy_without_allergen_is_missing_al1_3() -> None:
    with pytest.raises(MissingRequiredError) as caught:
        map_sample("adt_a28.hl7", ("|^海鲜|", "||"))

    assert caught.value.location == "AL1-3"


def test_diagnosis_belongs_to_the_visit() -> None:
    bundle = map_sample("adt_a01.hl7")
    condition = entry_for(bundle, "Condition")["resource"]
    encounter = entry_for(bundle, "Encounter")

    assert condition["identifier"][0]["value"] == "ZY20240315001/I21.9"
    assert condition["code"]["coding"][0]["system"] == "http://hl7.org/fhir/sid/icd-10"
    assert condition["category"][0]["coding"][0]["code"] == "encounter-diagnosis"
    assert condition["encounter"] == {"reference": encounter["fullUrl"]}
    assert condition["recordedDate"] == "2024-03-15T09:30:00+08:00"


def test_discharge_diagnoses_are_one_condition_each() -> None:
    conditions = resources(map_sample("adt_a03.hl7"), "Condition")

    assert [c["code"]["text"] for c in conditions] == ["急性心肌梗死", "高血压"]


def test_dg1_2_names_the_system_older_senders_leave_out() -> None:
    bundle = map_sample("adt_a01.hl7", ("DG1|1||I21.9^急性心肌梗死^I10", "DG1|1|I10|I21.9^急性心肌梗死"))

    coding = entry_for(bundle, "Condition")["resource"]["code"]["coding"][0]
    assert coding["system"] == "http://hl7.org/fhir/sid/icd-10"


def test_diagnosis_by_description_only() -> None:
    bundle = map_sample("adt_a01.hl7", ("DG1|1||I21.9^急性心肌梗死^I10|", "DG1|1|||"))

    assert entry_for(bundle, "Condition")["resource"]["code"] == {"text": "急性心肌梗死"}


def test_diagnosis_without_code_or_description_is_missing_dg1_3() -> None:
    with pytest.raises(MissingRequiredError) as caught:
        map_sample("adt_a01.hl7", ("DG1|1||I21.9^急性心肌梗死^I10|急性心肌梗死|", "DG1|1||||"))

    assert caught.value.location == "DG1-3"
