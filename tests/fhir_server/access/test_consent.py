"""Consent rules as pure functions: which reads a resident's regional-sharing Consent permits."""

from __future__ import annotations

from typing import Any

import pytest

from fhir_server.access.codes import CONSENT_CATEGORY_SYSTEM, REGIONAL_SHARING, RESOURCE_TYPES_SYSTEM
from fhir_server.access.consent import Grant, Read, consent_patient, grants_of, is_regional_sharing, permits
from fhir_server.search.values import date_range

NOW = date_range("2026-06-15T08:00:00Z")[0]  # type: ignore[index]
A, B = "Organization/hosp-a", "Organization/hosp-b"


def consent(provision: dict[str, Any] | None = None, *, status: str = "active", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Consent",
        "status": status,
        "scope": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]
        },
        "category": [{"coding": [{"system": CONSENT_CATEGORY_SYSTEM, "code": REGIONAL_SHARING}]}],
        "patient": {"reference": "Patient/r1"},
        **extra,
    }
    if provision is not None:
        body["provision"] = provision
    return body


def read(org: str = B, res_type: str = "Observation", **kwargs: Any) -> Read:
    return Read(org=org, res_type=res_type, at=kwargs.pop("at", NOW), **kwargs)


def allowed(body: dict[str, Any], request: Read) -> bool:
    return permits(grants_of(body), request)


def test_no_consent_shares_nothing() -> None:
    assert not permits([], read())


def test_consent_without_provision_shares_everything() -> None:
    assert allowed(consent(), read())
    assert allowed(consent(), read(A, "Condition"))


def test_permit_provision() -> None:
    assert allowed(consent({"type": "permit"}), read())


def test_only_active_regional_sharing_consents_count() -> None:
    for status in ("inactive", "rejected", "draft", "proposed", "entered-in-error"):
        assert grants_of(consent(status=status)) == []
    other = consent()
    other["category"] = [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}]
    assert not is_regional_sharing(other)
    assert grants_of(other) == []
    assert grants_of(consent(patient={"reference": "Group/1"})) == []


def test_patient_reference_forms() -> None:
    assert consent_patient(consent()) == "r1"
    assert consent_patient(consent(patient={"reference": "https://hie.example/fhir/Patient/r9"})) == "r9"
    assert consent_patient(consent(patient={"reference": "Patient/r2/_history/3"})) == "r2"
    assert consent_patient(consent(patient={"display": "no reference"})) is None


def test_root_deny_without_criteria_shares_nothing() -> None:
    assert not allowed(consent({"type": "deny"}), read())


def test_period_past_future_and_current() -> None:
    past = consent({"type": "permit", "period": {"start": "2025-01-01", "end": "2026-01-01"}})
    future = consent({"type": "permit", "period": {"start": "2027-01-01"}})
    current = consent({"type": "permit", "period": {"start": "2026-01-01", "end": "2026-12-31"}})
    assert not allowed(past, read())
    assert not allowed(future, read())
    assert allowed(current, read())
    # dates without an offset are the region's (UTC+08:00); the end date is inclusive to its last moment
    assert allowed(current, read(at=date_range("2026-12-31T23:59:59+08:00")[0]))  # type: ignore[index]
    assert not allowed(current, read(at=date_range("2027-01-01T00:00:00+08:00")[0]))  # type: ignore[index]


def test_purpose_of_use() -> None:
    treatment = consent(
        {
            "type": "permit",
            "purpose": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "TREAT"}],
        }
    )
    assert allowed(treatment, read(purpose="TREAT"))
    assert not allowed(treatment, read(purpose="HRESCH"))
    assert not allowed(treatment, read())


def test_actor_denial_of_one_institution() -> None:
    body = consent(
        {
            "type": "permit",
            "provision": [{"type": "deny", "actor": [{"reference": {"reference": "Organization/hosp-b"}}]}],
        }
    )
    assert not allowed(body, read(B))
    assert allowed(body, read(A))


def test_opt_in_with_an_excepted_institution() -> None:
    """A root deny naming an actor (R4B consent-example-notThem): everyone but that institution."""
    body = consent({"type": "deny", "actor": [{"reference": {"reference": "Organization/hosp-b"}}]})
    assert not allowed(body, read(B))
    assert allowed(body, read(A))


def test_permit_only_named_institutions() -> None:
    body = consent({"type": "permit", "actor": [{"reference": {"reference": "Organization/hosp-a"}}]})
    assert allowed(body, read(A))
    assert not allowed(body, read(B))


def test_non_institution_actor_is_not_enforced_as_a_permit() -> None:
    body = consent({"type": "permit", "actor": [{"reference": {"reference": "Practitioner/7"}}]})
    assert not allowed(body, read(A))


def test_category_denial_by_resource_type() -> None:
    body = consent(
        {
            "type": "permit",
            "provision": [{"type": "deny", "class": [{"system": RESOURCE_TYPES_SYSTEM, "code": "Condition"}]}],
        }
    )
    assert not allowed(body, read(res_type="Condition"))
    assert allowed(body, read(res_type="Observation"))


def test_category_denial_by_security_label() -> None:
    label = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "PSY"}
    body = consent({"type": "permit", "provision": [{"type": "deny", "securityLabel": [label]}]})
    assert not allowed(body, read(labels=frozenset({(label["system"], "PSY")})))
    assert allowed(body, read(labels=frozenset({(label["system"], "HIV")})))
    assert allowed(body, read())


def test_category_denial_by_code() -> None:
    body = consent(
        {
            "type": "permit",
            "provision": [
                {"type": "deny", "code": [{"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "F20"}]}]}
            ],
        }
    )
    assert not allowed(body, read(res_type="Condition", codes=frozenset({("http://hl7.org/fhir/sid/icd-10", "F20")})))
    assert allowed(body, read(res_type="Condition", codes=frozenset({("http://hl7.org/fhir/sid/icd-10", "I10")})))


def test_nested_permit_overrides_root_deny() -> None:
    body = consent(
        {
            "type": "deny",
            "provision": [{"type": "permit", "actor": [{"reference": {"reference": "Organization/hosp-a"}}]}],
        }
    )
    assert allowed(body, read(A))
    assert not allowed(body, read(B))


def test_nested_rule_inherits_parent_criteria() -> None:
    body = consent(
        {
            "type": "permit",
            "period": {"start": "2026-01-01", "end": "2026-12-31"},
            "provision": [{"type": "deny", "class": [{"system": RESOURCE_TYPES_SYSTEM, "code": "Condition"}]}],
        }
    )
    grants = grants_of(body)
    assert all(g.low is not None and g.high is not None for g in grants)
    assert [g.effect for g in grants] == ["permit", "deny"]


def test_deny_at_the_same_level_wins() -> None:
    grants = [Grant("permit", 0), Grant("deny", 0, org=B)]
    assert not permits(grants, read(B))
    assert permits(grants, read(A))


def test_deeper_permit_beats_shallower_deny() -> None:
    grants = [Grant("permit", -1), Grant("deny", 0), Grant("permit", 1, res_type="Observation")]
    assert permits(grants, read(res_type="Observation"))
    assert not permits(grants, read(res_type="Condition"))


@pytest.mark.parametrize("provision", [[], {"type": "permit", "provision": []}])
def test_empty_nested_lists(provision: Any) -> None:
    assert allowed(consent(provision or None), read())


def test_consent_shares_with_institutions_only() -> None:
    assert not allowed(consent(), read(org=None))  # type: ignore[arg-type]
