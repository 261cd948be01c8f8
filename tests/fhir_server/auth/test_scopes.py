"""Parsing SMART v1 and v2 scopes and deciding what they grant (pure, no database)."""

from __future__ import annotations

import pytest

from fhir_server.auth.policy import needs_of
from fhir_server.auth.scopes import Grants, ScopeError, granted_scopes, parse_scope


@pytest.mark.parametrize(
    ("text", "letters"),
    [
        ("system/Patient.read", "rs"),
        ("system/Patient.write", "cud"),
        ("system/Patient.*", "cruds"),
        ("system/*.*", "cruds"),
        ("system/Patient.cruds", "cruds"),
        ("system/Patient.rs", "rs"),
        ("user/Observation.r", "r"),
        ("system/Observation.cd", "cd"),
    ],
)
def test_v1_and_v2_permissions(text, letters):
    assert parse_scope(text).permissions == frozenset(letters)


def test_v2_constraint():
    scope = parse_scope("system/Observation.rs?category=vital-signs&status=final")
    assert scope.constraint == (("category", "vital-signs"), ("status", "final"))
    assert scope.text() == "system/Observation.rs?category=vital-signs&status=final"


@pytest.mark.parametrize(
    "text",
    [
        "system/Patient.sr",
        "system/Patient.rr",
        "system/Patient.x",
        "system/patient.read",
        "system/NotAType.read",
        "system/Patient.read?category=x",
        "system/*.rs?category=x",
        "system/Observation.rs?",
        "other/Patient.read",
    ],
)
def test_malformed_scopes(text):
    with pytest.raises(ScopeError):
        parse_scope(text)


@pytest.mark.parametrize("text", ["openid", "fhirUser", "launch/patient", "offline_access", "launch"])
def test_non_clinical_scopes_grant_nothing(text):
    assert parse_scope(text) is None


def test_grants_answer_per_type_and_permission():
    grants = Grants(["system/Patient.rs", "system/Observation.rs?category=vital-signs", "patient/Condition.read"])
    assert grants.access("Patient", "r").allowed and not grants.access("Patient", "r").constraints
    assert not grants.access("Patient", "c").allowed
    assert grants.access("Observation", "s").constraints == ((("category", "vital-signs"),),)
    assert grants.access("Condition", "r").allowed and grants.patient_scopes
    assert not grants.access("Condition", "c").allowed and not Grants(["patient/*.write"]).access("*", "c").allowed
    assert not grants.access("*", "r").allowed
    assert Grants(["system/*.*"]).everything() and not Grants(["system/*.rs"]).everything()


def test_malformed_scope_in_a_token_grants_nothing():
    assert not Grants(["system/Patient.zz"]).access("Patient", "r").allowed


def test_granted_is_requested_cut_to_registered():
    registered = ["system/*.rs", "system/Patient.cud"]
    assert granted_scopes(["system/Patient.read"], registered) == ["system/Patient.read"]
    assert granted_scopes(["system/Patient.cruds"], registered) == ["system/Patient.rs", "system/Patient.cud"]
    assert granted_scopes(["system/*.*"], registered) == ["system/*.rs", "system/Patient.cud"]
    assert granted_scopes(["system/Observation.rs?category=vital-signs"], registered) == [
        "system/Observation.rs?category=vital-signs"
    ]
    assert granted_scopes(["system/Observation.c"], registered) == []
    assert granted_scopes([], registered) == registered
    assert granted_scopes(["openid"], registered) == []


def test_constrained_registration_stays_constrained():
    registered = ["system/Observation.rs?category=vital-signs"]
    assert granted_scopes(["system/Observation.read"], registered) == registered


def test_patient_scopes_are_refused():
    with pytest.raises(ScopeError):
        granted_scopes(["patient/Patient.read"], ["system/*.*"])


@pytest.mark.parametrize(
    ("method", "path", "needs"),
    [
        ("GET", "Patient/1", [("Patient", "r")]),
        ("HEAD", "Patient/1", [("Patient", "r")]),
        ("GET", "Patient/1/_history/2", [("Patient", "r")]),
        ("GET", "Patient/1/_history", [("Patient", "r")]),
        ("GET", "Patient/_history", [("Patient", "r")]),
        ("GET", "_history", [("*", "r")]),
        ("GET", "Patient", [("Patient", "s")]),
        ("POST", "Patient/_search", [("Patient", "s")]),
        ("POST", "Patient", [("Patient", "c")]),
        ("PUT", "Patient/1", [("Patient", "u")]),
        ("PUT", "Patient", [("Patient", "u")]),
        ("PATCH", "Patient/1", [("Patient", "u")]),
        ("DELETE", "Patient/1", [("Patient", "d")]),
        ("DELETE", "Patient", [("Patient", "d")]),
        ("GET", "Patient/1/Observation", [("Observation", "s")]),
        ("GET", "Patient/1/$meta", [("Patient", "r")]),
        ("POST", "Patient/1/$meta-add", [("Patient", "u")]),
        ("POST", "Patient/$validate", [("Patient", "r")]),
        ("GET", "Observation/$lastn", [("Observation", "r")]),
        ("POST", "Patient/1/$expunge", [("Patient", "d")]),
        ("GET", "metadata", []),
        ("GET", "$export", []),
        ("GET", "$export-status/abc", []),
        ("GET", "Patient/1/$access-log", []),
        ("POST", "", []),
        ("GET", "", []),
        ("GET", "NotAType/1", []),
    ],
)
def test_needs_of_each_interaction(method, path, needs):
    parts = [p for p in path.split("/") if p]
    assert [(n.res_type, n.permission) for n in needs_of(method, parts)] == needs
