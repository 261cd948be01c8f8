"""SIU S12-S15 as an Appointment: booking, rescheduling, modification and cancellation."""

from __future__ import annotations

import pytest

from adapters.hl7v2.errors import MissingRequiredError
from tests.adapters.hl7v2.samples import assert_valid_bundle, entry_for, map_sample

FILLER = "https://hie.wuzhou.gov.cn/fhir/sid/filler-appointment/450400-001/WZYY"


def _appointment(*replacements: tuple[str, str]) -> dict:
    bundle = map_sample("siu_s12.hl7", *replacements)
    assert_valid_bundle(bundle)
    return entry_for(bundle, "Appointment")


def test_booking() -> None:
    entry = _appointment()
    appointment = entry["resource"]

    assert entry["request"] == {"method": "PUT", "url": f"Appointment?identifier={FILLER}|SCH-778812"}
    assert [i["value"] for i in appointment["identifier"]] == ["SCH-778812", "WZ-APT-20240401-015"]
    assert appointment["status"] == "booked"
    assert appointment["start"] == "2024-04-01T09:00:00+08:00"
    assert appointment["end"] == "2024-04-01T09:30:00+08:00"
    assert appointment["minutesDuration"] == 30
    assert appointment["appointmentType"]["coding"][0] == {
        "system": "http://terminology.hl7.org/CodeSystem/v2-0276",
        "code": "ROUTINE",
        "display": "常规",
    }
    assert appointment["reasonCode"][0]["text"] == "初诊"
    assert appointment["serviceType"][0]["text"] == "心内科专家门诊"
    assert appointment["comment"] == "请携带既往检查报告及医保卡"


def test_participants_are_patient_doctor_room_and_equipment() -> None:
    participants = _appointment()["resource"]["participant"]

    assert [p["actor"]["display"] for p in participants] == [
        "陈建国",
        "黄志明",
        "心内科门诊205诊室",
        "十二导联心电图机",
    ]
    assert participants[3]["actor"]["type"] == "Device"
    assert participants[1]["type"][0]["text"] == "主诊医师"
    assert all(p["status"] == "accepted" for p in participants)


def test_doctor_and_room_are_created_only_when_absent() -> None:
    bundle = map_sample("siu_s12.hl7")

    assert entry_for(bundle, "Practitioner")["request"]["method"] == "POST"
    assert entry_for(bundle, "Location")["request"]["method"] == "POST"
    assert entry_for(bundle, "Patient")["request"]["method"] == "POST"


def test_reschedule_updates_the_same_appointment() -> None:
    booked = _appointment()
    moved = _appointment(
        ("SIU^S12^SIU_S12", "SIU^S13^SIU_S13"),
        ("|20240401090000+0800|20240401093000+0800", "|20240402143000+0800|20240402150000+0800"),
    )

    assert moved["request"] == booked["request"]
    assert moved["resource"]["start"] == "2024-04-02T14:30:00+08:00"
    assert moved["resource"]["status"] == "booked"


def test_modification_takes_the_filler_status() -> None:
    appointment = _appointment(("SIU^S12^SIU_S12", "SIU^S14^SIU_S14"), ("|Booked", "|Started"))

    assert appointment["resource"]["status"] == "arrived"


def test_cancellation() -> None:
    appointment = _appointment(("SIU^S12^SIU_S12", "SIU^S15^SIU_S15"), ("|Booked", "|Cancelled"))

    assert appointment["resource"]["status"] == "cancelled"


def test_end_comes_from_the_duration_when_only_a_start_is_sent() -> None:
    appointment = _appointment(
        ("TQ1|1||||||20240401090000+0800|20240401093000+0800", "TQ1|1||||||20240401090000+0800"),
        ("^^30^20240401090000+0800^20240401093000+0800", "^^30^20240401090000+0800"),
    )

    assert appointment["resource"]["end"] == "2024-04-01T09:30:00+08:00"


def test_booking_without_a_time_is_missing_tq1_7() -> None:
    with pytest.raises(MissingRequiredError) as caught:
        map_sample(
            "siu_s12.hl7",
            ("TQ1|1||||||20240401090000+0800|20240401093000+0800", "TQ1|1"),
            ("|^^30^20240401090000+0800^20240401093000+0800", "|"),
            ("|20240401090000+0800|||30|min", "|||||"),
        )

    assert caught.value.location == "TQ1-7"


def test_booking_without_appointment_ids_is_missing_sch_2() -> None:
    with pytest.raises(MissingRequiredError) as caught:
        map_sample("siu_s12.hl7", ("SCH|WZ-APT-20240401-015^WZHIS|SCH-778812^WZYY|", "SCH|||"))

    assert caught.value.location == "SCH-2"


@pytest.mark.parametrize("segment", ["SCH", "PID"])
def test_missing_schedule_or_patient(segment: str) -> None:
    with pytest.raises(MissingRequiredError) as caught:
        map_sample("siu_s12.hl7", (f"\r{segment}|", "\rZZZ|"))

    assert caught.value.segment == segment
