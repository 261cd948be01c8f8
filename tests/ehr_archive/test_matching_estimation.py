"""Supervised estimation of m/u and grade thresholds from labelled candidate pairs."""

from __future__ import annotations

import math

import pytest

from ehr_archive.matching import DEFAULT_MODEL, FIELD_LEVELS, choose_thresholds, estimate_model
from ehr_archive.matching.estimation import demographic_ceiling


def vector(**levels: str) -> dict[str, str]:
    return {field: levels.get(field, "missing") for field in FIELD_LEVELS}


def test_m_and_u_are_level_frequencies_among_true_and_false_pairs() -> None:
    labelled = [(vector(name="exact"), True)] * 90 + [(vector(name="pinyin"), True)] * 10
    labelled += [(vector(name="exact"), False)] * 5 + [(vector(name="disagree"), False)] * 95
    model = estimate_model(labelled, prior_pairs=0.0)
    m, u = model.probabilities["name"]["exact"]
    assert (m, u) == (pytest.approx(0.9), pytest.approx(0.05))
    assert model.weight("name", "exact") == pytest.approx(math.log2(0.9 / 0.05))


def test_unseen_levels_are_floored_and_never_outweigh_full_agreement() -> None:
    labelled = [(vector(birth_date="exact"), True)] * 50 + [(vector(birth_date="off-by-one"), True)] * 50
    labelled += [(vector(birth_date="exact"), False)] * 50 + [(vector(birth_date="disagree"), False)] * 50
    model = estimate_model(labelled, prior_pairs=0.0, floor=0.01)
    assert model.probabilities["birth_date"]["transposed"] == (0.01, 0.01)
    assert model.weight("birth_date", "off-by-one") <= model.weight("birth_date", "exact")
    assert model.weight("birth_date", "missing") == 0.0


def test_prior_keeps_levels_the_sample_lacks() -> None:
    model = estimate_model([(vector(), True), (vector(), False)], prior_pairs=1e6)
    assert model.weight("name", "exact") == pytest.approx(DEFAULT_MODEL.weight("name", "exact"), abs=0.01)


def test_thresholds_meet_precision_and_recall_targets() -> None:
    scored = [(20.0, True)] * 50 + [(12.0, True)] * 45 + [(12.0, False)] * 1
    scored += [(5.0, True)] * 5 + [(5.0, False)] * 10 + [(2.0, False)] * 50
    thresholds = choose_thresholds(
        scored, model=DEFAULT_MODEL, certain_precision=0.98, probable_recall=0.95, identifier_required=False
    )
    assert thresholds.certain == 12.0
    assert thresholds.probable == 12.0 and thresholds.possible == 5.0


def test_certain_threshold_stays_above_what_demographics_alone_reach() -> None:
    thresholds = choose_thresholds([(1.0, True), (0.0, False)], model=DEFAULT_MODEL)
    assert thresholds.certain > demographic_ceiling(DEFAULT_MODEL)
    with pytest.raises(ValueError, match="no true pairs"):
        choose_thresholds([(1.0, False)], model=DEFAULT_MODEL)
