"""Fellegi–Sunter (1969) match scores: log2(m/u) weights summed over fields, graded by thresholds.

The m/u figures below were estimated from labelled candidate pairs of a synthetic training set (see docs/MPI.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from ehr_archive.matching.comparison import FIELD_LEVELS, MISSING, compare_records, resident_id_is_consistent
from ehr_archive.matching.records import PersonRecord

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_THRESHOLDS",
    "FieldEvidence",
    "MatchGrade",
    "MatchModel",
    "MatchResult",
    "Thresholds",
    "grade_comparison",
    "score_pair",
]


class MatchGrade(StrEnum):
    """FHIR match-grade codes (R4B Patient $match, http://terminology.hl7.org/CodeSystem/match-grade)."""

    CERTAIN = "certain"
    PROBABLE = "probable"
    POSSIBLE = "possible"
    CERTAINLY_NOT = "certainly-not"


@dataclass(frozen=True)
class Thresholds:
    """Lowest scores (bits) for each grade; below `possible` a pair is graded certainly-not."""

    certain: float
    probable: float
    possible: float

    def __post_init__(self) -> None:
        if not self.certain >= self.probable >= self.possible:
            raise ValueError("thresholds must satisfy certain >= probable >= possible")

    def grade(self, score: float) -> MatchGrade:
        if score >= self.certain:
            return MatchGrade.CERTAIN
        if score >= self.probable:
            return MatchGrade.PROBABLE
        if score >= self.possible:
            return MatchGrade.POSSIBLE
        return MatchGrade.CERTAINLY_NOT


@dataclass(frozen=True)
class MatchModel:
    """m = P(level | same person) and u = P(level | different persons) for every field and level."""

    probabilities: Mapping[str, Mapping[str, tuple[float, float]]]
    weights: Mapping[str, Mapping[str, float]] = field(init=False, repr=False, compare=False)
    evidence: Mapping[str, Mapping[str, FieldEvidence]] = field(init=False, repr=False, compare=False)
    """Every field's evidence at every level, built once: a comparison only looks its levels up."""

    def __post_init__(self) -> None:
        weights: dict[str, dict[str, float]] = {}
        for name, levels in FIELD_LEVELS.items():
            given = self.probabilities.get(name, {})
            weights[name] = {}
            for level in levels:
                m, u = given.get(level, (1.0, 1.0))
                if not (0 < m <= 1 and 0 < u <= 1):
                    raise ValueError(f"m and u of {name}/{level} must lie in (0, 1]")
                weights[name][level] = 0.0 if level == MISSING else math.log2(m / u)
        object.__setattr__(self, "weights", weights)
        evidence = {
            name: {level: FieldEvidence(name, level, weight) for level, weight in levels.items()}
            for name, levels in weights.items()
        }
        object.__setattr__(self, "evidence", evidence)

    def weight(self, name: str, level: str) -> float:
        return self.weights[name][level]


@dataclass(frozen=True)
class FieldEvidence:
    """One field's agreement level and the weight it added to the score."""

    field: str
    level: str
    weight: float


@dataclass(frozen=True)
class MatchResult:
    """Score, grade and per-field evidence of one record pair; `rule` names a deterministic decision."""

    score: float
    grade: MatchGrade
    evidence: tuple[FieldEvidence, ...]
    rule: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "score": round(self.score, 2),
            "grade": self.grade.value,
            "rule": self.rule,
            "evidence": [{"field": e.field, "level": e.level, "weight": round(e.weight, 2)} for e in self.evidence],
        }


# Estimated by `python -m bench.mpi_quality --estimate-seed 1` (20,000 residents, seed 1; see docs/MPI.md).
DEFAULT_MODEL = MatchModel(
    {
        "resident_id": {
            "agree": (0.6207, 0.002),
            "close": (0.01724, 0.002),
            "disagree": (0.002, 0.6198),
            "missing": (0.3618, 0.3802),
        },
        "cards": {"agree": (0.3529, 0.002), "disagree": (0.002, 0.2103), "missing": (0.6471, 0.7897)},
        "name": {
            "exact": (0.844, 0.03821),
            "pinyin": (0.07838, 0.03755),
            "fuzzy": (0.01147, 0.002),
            "one-char": (0.04736, 0.09466),
            "initials": (0.002, 0.1417),
            "disagree": (0.002, 0.671),
            "missing": (0.01858, 0.0154),
        },
        "birth_date": {
            "exact": (0.8948, 0.04982),
            "transposed": (0.01564, 0.007801),
            "off-by-one": (0.05441, 0.003029),
            "digit": (0.01833, 0.008429),
            "disagree": (0.002115, 0.9196),
            "missing": (0.01468, 0.01211),
        },
        "sex": {"agree": (0.9901, 0.46), "disagree": (0.002, 0.5307), "missing": (0.009932, 0.00933)},
        "phone": {
            "agree": (0.5177, 0.7044),
            "close": (0.03057, 0.0416),
            "disagree": (0.3193, 0.4345),
            "missing": (0.1325, 0.03739),
        },
        "address": {
            "village": (0.6788, 0.5019),
            "township": (0.1317, 0.1029),
            "district": (0.03928, 0.1172),
            "disagree": (0.03358, 0.1707),
            "missing": (0.1166, 0.1073),
        },
    }
)
DEFAULT_THRESHOLDS = Thresholds(certain=10.67, probable=5.26, possible=3.55)


def score_pair(
    a: PersonRecord,
    b: PersonRecord,
    *,
    model: MatchModel = DEFAULT_MODEL,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
) -> MatchResult:
    """Score two records; a shared valid resident ID number is `certain`, two different ones `certainly-not`."""
    return grade_comparison(compare_records(a, b), a, b, model=model, thresholds=thresholds)


def grade_comparison(
    levels: Mapping[str, str],
    a: PersonRecord,
    b: PersonRecord,
    *,
    model: MatchModel = DEFAULT_MODEL,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
) -> MatchResult:
    """Grade an already computed comparison vector of `a` and `b` (GB 11643 numbers decide when both are sound)."""
    known = model.evidence
    evidence = tuple(known[name][level] for name, level in levels.items())
    score = sum(e.weight for e in evidence)
    grade = thresholds.grade(score)
    if not (a.resident_id and b.resident_id):
        return MatchResult(score, grade, evidence)
    if resident_id_is_consistent(a) and resident_id_is_consistent(b):
        if a.resident_id == b.resident_id:
            return MatchResult(score, MatchGrade.CERTAIN, evidence, "same-resident-id")
        return MatchResult(score, MatchGrade.CERTAINLY_NOT, evidence, "different-resident-ids")
    if grade is MatchGrade.CERTAIN:
        grade = MatchGrade.PROBABLE
    return MatchResult(score, grade, evidence, "resident-id-contradicts-record")
