"""ADT events: which resources each writes, Encounter status by event, repeats that update, A40 merges."""

from __future__ import annotations

import pytest

from adapters.hl7v2.errors import InvalidValueError, MissingRequiredError
from tests.adapters.hl7v2.samples import assert_valid_bundle, entry_for, map_sample, resources

ADT_SAMPLES = [
    "adt_a01.hl7",
    "adt_a02.hl7",
    "adt_a03.hl7",
    "adt_a04_gb18030.hl7",
    "adt_a05.hl7",
    "adt_a08.hl7",
    "adt_a11.hl7",
    "adt_a13.hl7",
    "adt_a28.hl7",
    "adt_a31.hl7",
    "adt_a40.hl7",
]


def _types(bundle: dict) -> list[str]:
    return [entry["resource"]["resourceType"] for entry in bundle["entry"]]


@pytest.mark.parametrize("name", ADT_SAMPLES)
def test_every_adt_sample_maps_to_a_valid_bundle(name: str) -> None:
    bundle = map_sample(name)

    assert_valid_bundle(bundle)
    assert _types(bundle)[-1] == "Provenance"


@pytest.mark.parametrize(
    ("name", "status", "period"),
    [
        ("adt_a01.hl7", "in-progress", {"start": "2024-03-15T09:20:00+08:00"}),
        ("adt_a02.hl7", "in-progress", {"start": "2024-03-15T09:20:00+08:00"}),
        ("adt_a03.hl7", "finished", {"start": "2024-03-15T09:20:00+08:00", "end": "2024-03-25T10:00:00+08:00"}),
        ("adt_a04_gb18030.hl7", "arrived", {"start": "2024-03-16T08:10:00+08:00"}),
        ("adt_a05.hl7", "planned", None),
        ("adt_a08.hl7", "in-progress", {"start": "2024-03-15T09:20:00+08:00"}),
        ("adt_a11.hl7", "entered-in-error", {"start": "2024-03-15T09:20:00+08:00"}),
        ("adt_a13.hl7", "in-progress", {"start": "2024-03-15T09:20:00+08:00"}),
    ],
)
def test_encounter_status_by_event(name: str, status: str, period: dict | None) -> None:
    encounter = entry_for(map_sample(name), "Encounter")["resource"]

    assert encounter["status"] == status
    assert encounter.get("period") == period


def test_discharge_time_falls_back_to_evn_6() -> None:
    bundle = map_sample("adt_a03.hl7", ("|20240315092000+0800|20240325100000+0800", "|20240315092000+0800|"))

    assert entry_for(bundle, "Encounter")["resource"]["period"]["end"] == "2024-03-25T10:00:00+08:00"


def test_transfer_records_the_prior_location_as_completed() -> None:
    bundle = map_sample("adt_a02.hl7")
    locations = entry_for(bundle, "Encounter")["resource"]["location"]

    assert [(item["location"]["display"], item["status"]) for item in locations] == [
        ("重症监护室105室3床", "active"),
        ("心内科一病区302室12床", "completed"),
    ]
    assert len(resources(bundle, "Location")) == 2


def test_repeated_and_updating_messages_address_the_same_records() -> None:
    admit, update = map_sample("adt_a01.hl7"), map_sample("adt_a08.hl7")

    def requests(bundle: dict) -> dict[str, str]:
        return {e["resource"]["resourceType"]: e["request"]["url"] for e in bundle["entry"][:-1]}

    assert requests(update)["Patient"] == requests(admit)["Patient"]
    assert requests(update)["Encounter"] == requests(admit)["Encounter"]
    assert all(e["request"]["method"] == "PUT" for e in update["entry"][:-1])
    assert map_sample("adt_a01.hl7") == admit
    phones = entry_for(update, "Patient")["resource"]["telecom"]
    assert phones[0]["value"] == "13807749999"


def test_update_without_a_visit_touches_only_the_patient() -> None:
    bundle = map_sample("adt_a08.hl7", ("PV1|1|I|", "PV1|1|N|"))

    assert _types(bundle) == ["Patient", "Provenance"]


def test_cancel_admit_does_not_overwrite_demographics() -> None:
    bundle = map_sample("adt_a11.hl7")
    patient = entry_for(bundle, "Patient")

    assert patient["request"]["method"] == "POST"
    assert patient["request"]["ifNoneExist"].endswith("/mrn/450400-001|0012345678")
    assert "RelatedPerson" not in _types(bundle)


def test_cancel_discharge_drops_the_end() -> None:
    encounter = entry_for(map_sample("adt_a13.hl7"), "Encounter")["resource"]

    assert encounter["status"] == "in-progress"
    assert "end" not in encounter["period"]
    assert encounter["location"][0]["status"] == "active"


@pytest.mark.parametrize("name", ["adt_a28.hl7", "adt_a31.hl7"])
def test_person_events_write_no_encounter(name: str) -> None:
    types = _types(map_sample(name))

    assert "Encounter" not in types
    assert types[0] == "Patient"


def test_person_update_changes_the_address() -> None:
    patient = entry_for(map_sample("adt_a31.hl7"), "Patient")["resource"]

    assert patient["address"][0]["line"] == ["城中路18号"]
    assert patient["gender"] == "male"
    assert patient["maritalStatus"]["coding"][0]["code"] == "W"


def test_merge_asks_the_mpi_with_both_identifiers() -> None:
    bundle = map_sample("adt_a40.hl7")
    patient = entry_for(bundle, "Patient")
    merge = entry_for(bundle, "Parameters")
    provenance = entry_for(bundle, "Provenance")["resource"]

    mrn = "https://hie.wuzhou.gov.cn/fhir/sid/mrn/450400-001"
    assert merge["request"] == {"method": "POST", "url": "Patient/$merge"}
    assert merge["resource"]["parameter"] == [
        {"name": "source-patient-identifier", "valueIdentifier": {"system": mrn, "value": "0012399999"}},
        {"name": "target-patient", "valueReference": {"reference": patient["fullUrl"], "display": "陈建国"}},
        {"name": "target-patient-identifier", "valueIdentifier": {"system": mrn, "value": "0012345678"}},
    ]
    assert provenance["target"] == [{"reference": patient["fullUrl"]}]


def test_merge_without_mrg_is_missing_it() -> None:
    with pytest.raises(MissingRequiredError) as caught:
        map_sample("adt_a40.hl7", ("\rMRG|0012399999^^^450400-001^MR||||||陈^建囯", ""))

    assert caught.value.segment == "MRG"


def test_merge_into_itself_is_invalid() -> None:
    with pytest.raises(InvalidValueError) as caught:
        map_sample("adt_a40.hl7", ("MRG|0012399999", "MRG|0012345678"))

    assert caught.value.location == "MRG-1"


def test_admission_without_pid_is_missing_pid() -> None:
    with pytest.raises(MissingRequiredError) as caught:
        map_sample("adt_a11.hl7", ("PID|1||0012345678^^^450400-001^MR||陈^建国\r", ""))

    assert caught.value.segment == "PID"
    assert caught.value.code == "100"


def test_admission_without_pv1_is_missing_pv1() -> None:
    with pytest.raises(MissingRequiredError) as caught:
        map_sample("adt_a02.hl7", ("\rPV1|", "\rZPV|"))

    assert caught.value.segment == "PV1"
