"""ORU^R01 as DiagnosticReport and Observations: value types, units, ranges, flags, status, keys."""

from __future__ import annotations

import base64

import pytest

from adapters.hl7v2.errors import InvalidValueError, MissingRequiredError
from tests.adapters.hl7v2.samples import assert_valid_bundle, entry_for, map_sample, resources

UCUM = "http://unitsofmeasure.org"
FILLER = "https://hie.wuzhou.gov.cn/fhir/sid/filler-order/450400-001/WZLIS"
PLACER = "https://hie.wuzhou.gov.cn/fhir/sid/placer-order/450400-001/WZHIS"


@pytest.fixture(scope="module")
def cbc() -> dict:
    return map_sample("oru_r01.hl7")


def _observation(bundle: dict, set_id: int) -> dict:
    return resources(bundle, "Observation")[set_id - 1]


def test_bundles_validate(cbc: dict) -> None:
    assert_valid_bundle(cbc)
    assert_valid_bundle(map_sample("oru_r01_gbk.hl7"))


def test_report_is_keyed_by_filler_number_and_based_on_the_placer_order(cbc: dict) -> None:
    entry = entry_for(cbc, "DiagnosticReport")
    report = entry["resource"]

    assert entry["request"] == {"method": "PUT", "url": f"DiagnosticReport?identifier={FILLER}|L2403150123"}
    assert [i["type"]["coding"][0]["code"] for i in report["identifier"]] == ["FILL", "PLAC"]
    assert report["basedOn"] == [
        {"type": "ServiceRequest", "identifier": {"system": PLACER, "value": "ORD20240315-77"}}
    ]
    assert report["status"] == "final"
    assert report["code"]["coding"][0] == {"system": "http://loinc.org", "code": "58410-2", "display": "血常规"}
    assert report["category"][0]["coding"][0]["code"] == "HM"
    assert report["effectiveDateTime"] == "2024-03-15T10:00:00+08:00"
    assert report["issued"] == "2024-03-15T14:28:00+08:00"
    assert report["conclusion"] == "标本轻度溶血，结果仅供参考"
    assert report["encounter"]["identifier"]["value"] == "ZY20240315001"
    assert report["result"] == [
        {"reference": e["fullUrl"]} for e in cbc["entry"] if e["resource"]["resourceType"] == "Observation"
    ]


def test_patient_is_only_created_when_absent(cbc: dict) -> None:
    request = entry_for(cbc, "Patient")["request"]

    assert request["method"] == "POST"
    assert request["ifNoneExist"] == "identifier=https://hie.wuzhou.gov.cn/fhir/sid/mrn/450400-001|0012345678"


def test_observations_are_keyed_by_filler_number_and_set_id(cbc: dict) -> None:
    keys = [o["identifier"][0]["value"] for o in resources(cbc, "Observation")]

    assert keys == [f"WZLIS/L2403150123/{n}" for n in range(1, 8)]


def test_numeric_result_with_escaped_unit_range_and_flag(cbc: dict) -> None:
    wbc = _observation(cbc, 1)

    assert wbc["valueQuantity"] == {"value": 11.2, "unit": "10^9/L", "system": UCUM, "code": "10*9/L"}
    assert wbc["referenceRange"] == [
        {
            "low": {"value": 3.5, "unit": "10^9/L", "system": UCUM, "code": "10*9/L"},
            "high": {"value": 9.5, "unit": "10^9/L", "system": UCUM, "code": "10*9/L"},
            "text": "3.5-9.5",
        }
    ]
    assert wbc["interpretation"][0]["coding"][0]["code"] == "H"
    assert wbc["effectiveDateTime"] == "2024-03-15T12:00:00+08:00"
    assert wbc["status"] == "final"


def test_chinese_double_dash_range_and_coded_ucum_unit(cbc: dict) -> None:
    hemoglobin, platelets = _observation(cbc, 2), _observation(cbc, 3)

    assert hemoglobin["referenceRange"][0]["low"]["value"] == 130
    assert hemoglobin["referenceRange"][0]["high"]["value"] == 175
    assert hemoglobin["effectiveDateTime"] == "2024-03-15T10:00:00+08:00"
    assert platelets["valueQuantity"] == {"value": 210, "unit": "10*9/L", "system": UCUM, "code": "10*9/L"}


def test_structured_numeric_with_comparator_and_one_sided_range(cbc: dict) -> None:
    crp = _observation(cbc, 4)

    assert crp["valueQuantity"] == {"value": 10, "comparator": ">", "unit": "mg/L", "system": UCUM, "code": "mg/L"}
    assert crp["referenceRange"][0]["high"]["value"] == 10
    assert "low" not in crp["referenceRange"][0]


def test_coded_and_text_results(cbc: dict) -> None:
    blood_group, morphology, conclusion = _observation(cbc, 5), _observation(cbc, 6), _observation(cbc, 7)

    assert blood_group["valueCodeableConcept"]["coding"][0]["system"] == "http://snomed.info/sct"
    assert morphology["valueString"] == "未见异常细胞"
    assert morphology["status"] == "preliminary"
    assert morphology["note"] == [{"text": "已人工镜检复核"}]
    assert conclusion["valueString"] == "白细胞升高\n提示感染|请结合临床复查"
    assert conclusion["status"] == "corrected"


def test_specimen_observations_are_not_results(cbc: dict) -> None:
    assert len(resources(cbc, "Observation")) == 7


def test_gbk_results_with_micro_sign_unit() -> None:
    bundle = map_sample("oru_r01_gbk.hl7")
    bilirubin = resources(bundle, "Observation")[1]

    assert bilirubin["code"]["text"] == "总胆红素"
    assert bilirubin["valueQuantity"]["code"] == "umol/L"
    assert bilirubin["valueQuantity"]["unit"] == "μmol/L"
    assert entry_for(bundle, "DiagnosticReport")["resource"]["identifier"][0]["value"] == "SH240316009"


def test_numeric_type_with_text_value_is_kept_as_string() -> None:
    bundle = map_sample("oru_r01.hl7", ("|NM|6690-2^白细胞计数^LN||11.2|", "|NM|6690-2^白细胞计数^LN||溶血|"))

    assert _observation(bundle, 1)["valueString"] == "溶血"


def test_encapsulated_pdf_is_the_presented_form() -> None:
    pdf = base64.b64encode(b"%PDF-1.4 report").decode()
    obx = f"\rOBX|8|ED|11526-1^检验报告单^LN||WZLIS^AP^PDF^Base64^{pdf}||||||F"
    bundle = map_sample("oru_r01.hl7", ("\rSPM|", obx + "\rSPM|"))

    report = entry_for(bundle, "DiagnosticReport")["resource"]
    assert report["presentedForm"] == [{"contentType": "application/pdf", "data": pdf, "title": "检验报告单"}]
    assert len(resources(bundle, "Observation")) == 7


def test_placer_number_keys_the_report_without_a_filler_number() -> None:
    bundle = map_sample("oru_r01_gbk.hl7", ("|SH240316009^RMLIS|", "||"))

    url = entry_for(bundle, "DiagnosticReport")["request"]["url"]
    assert url == "DiagnosticReport?identifier=https://hie.wuzhou.gov.cn/fhir/sid/placer-order/450400-002|MZ-ORD-5521"


def test_report_without_order_numbers_is_missing_obr_3() -> None:
    with pytest.raises(MissingRequiredError) as caught:
        map_sample("oru_r01_gbk.hl7", ("|MZ-ORD-5521|SH240316009^RMLIS|", "|||"))

    assert caught.value.location == "OBR-3"


def test_result_without_pid_is_missing_pid() -> None:
    with pytest.raises(MissingRequiredError) as caught:
        map_sample("oru_r01_gbk.hl7", ("PID|", "ZPI|"))

    assert caught.value.segment == "PID"


def test_unknown_result_status_names_obx_11() -> None:
    with pytest.raises(InvalidValueError) as caught:
        map_sample("oru_r01_gbk.hl7", ("|7-40||||F", "|7-40||||Q"))

    assert caught.value.location == "OBX-11"
    assert caught.value.sequence == 1


def test_repeated_set_id_keeps_both_results() -> None:
    bundle = map_sample("oru_r01_gbk.hl7", ("OBX|2|NM|1975-2", "OBX|1|NM|1975-2"))

    keys = [o["identifier"][0]["value"] for o in resources(bundle, "Observation")]
    assert keys == ["RMLIS/SH240316009/1", "RMLIS/SH240316009/1#2"]
