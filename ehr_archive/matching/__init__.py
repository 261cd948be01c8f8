"""Probabilistic record linkage of Chinese residents for the regional MPI (Fellegi–Sunter 1969)."""

from ehr_archive.matching.blocking import blocking_keys, candidate_pairs
from ehr_archive.matching.chinese import ChineseName, parse_chinese_name, to_simplified
from ehr_archive.matching.comparison import FIELD_LEVELS, compare_records
from ehr_archive.matching.estimation import choose_thresholds, estimate_model
from ehr_archive.matching.records import PersonRecord, person_record_from_patient
from ehr_archive.matching.scoring import (
    DEFAULT_MODEL,
    DEFAULT_THRESHOLDS,
    FieldEvidence,
    MatchGrade,
    MatchModel,
    MatchResult,
    Thresholds,
    grade_comparison,
    score_pair,
)

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_THRESHOLDS",
    "FIELD_LEVELS",
    "ChineseName",
    "FieldEvidence",
    "MatchGrade",
    "MatchModel",
    "MatchResult",
    "PersonRecord",
    "Thresholds",
    "blocking_keys",
    "candidate_pairs",
    "choose_thresholds",
    "compare_records",
    "estimate_model",
    "grade_comparison",
    "parse_chinese_name",
    "person_record_from_patient",
    "score_pair",
    "to_simplified",
]
