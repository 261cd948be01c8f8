"""Estimate m/u probabilities and grade thresholds from labelled pairs (Fellegi–Sunter 1969 §3, supervised).

m and u are level frequencies among the true and false *candidate* pairs that blocking yields, so u reflects the
people an MPI actually confuses (relatives sharing a phone and address, namesakes), not random pairs.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping

from ehr_archive.matching.comparison import FIELD_LEVELS, MISSING
from ehr_archive.matching.scoring import DEFAULT_MODEL, MatchModel, Thresholds

__all__ = ["IDENTIFIER_FIELDS", "choose_thresholds", "demographic_ceiling", "estimate_model"]

# Fields that identify a person by a number issued to them; the others are demographics.
IDENTIFIER_FIELDS = ("resident_id", "cards")


def estimate_model(
    labelled: Iterable[tuple[Mapping[str, str], bool]],
    *,
    prior: MatchModel = DEFAULT_MODEL,
    prior_pairs: float = 20.0,
    floor: float = 0.002,
) -> MatchModel:
    """m/u as level frequencies among true and false pairs, smoothed towards `prior`, none below `floor`.

    A partial agreement never weighs more than the full agreement of its field (levels are ordered).
    """
    counts: dict[bool, dict[str, Counter[str]]] = {True: {}, False: {}}
    totals: Counter[bool] = Counter()
    for levels, is_match in labelled:
        totals[is_match] += 1
        for name, level in levels.items():
            counts[is_match].setdefault(name, Counter())[level] += 1
    probabilities: dict[str, dict[str, tuple[float, float]]] = {}
    for name, levels in FIELD_LEVELS.items():
        given = prior.probabilities.get(name, {})
        prior_m = _normalized({level: given.get(level, (1.0, 1.0))[0] for level in levels})
        prior_u = _normalized({level: given.get(level, (1.0, 1.0))[1] for level in levels})
        estimated = {}
        for level in levels:
            m = _smoothed(counts[True].get(name, Counter())[level], totals[True], prior_m[level], prior_pairs)
            u = _smoothed(counts[False].get(name, Counter())[level], totals[False], prior_u[level], prior_pairs)
            estimated[level] = (max(m, floor), max(u, floor))
        probabilities[name] = _ordered(estimated, levels)
    return MatchModel(probabilities)


def demographic_ceiling(model: MatchModel) -> float:
    """The highest score demographics alone can reach: every non-identifier field at its best level (or missing)."""
    return sum(
        max(model.weight(name, level) for level in levels)
        for name, levels in FIELD_LEVELS.items()
        if name not in IDENTIFIER_FIELDS
    )


def choose_thresholds(
    scored: Iterable[tuple[float, bool]],
    *,
    model: MatchModel,
    certain_precision: float = 0.999,
    probable_recall: float = 0.96,
    possible_recall: float = 0.99,
    identifier_required: bool = True,
) -> Thresholds:
    """`certain` at the lowest score reaching the precision, `probable`/`possible` at the scores keeping the recalls.

    With `identifier_required`, `certain` also lies above `demographic_ceiling`: in a population of millions,
    namesakes born on the same day exist, so a link made on demographics alone always goes to review.
    """
    ranked = sorted(scored, key=lambda pair: -pair[0])
    true_scores = [score for score, is_match in ranked if is_match]
    if not true_scores:
        raise ValueError("no true pairs to choose thresholds from")
    certain = ranked[0][0] + 1.0
    hits = 0
    for position, (score, is_match) in enumerate(ranked, start=1):
        hits += is_match
        tie_follows = position < len(ranked) and ranked[position][0] == score
        if not tie_follows and hits / position >= certain_precision:
            certain = score
    if identifier_required:
        certain = max(certain, demographic_ceiling(model) + 0.5)
    probable = min(certain, _quantile(true_scores, probable_recall))
    possible = min(probable, _quantile(true_scores, possible_recall))
    return Thresholds(certain=round(certain, 2), probable=round(probable, 2), possible=round(possible, 2))


def _quantile(descending: list[float], share: float) -> float:
    return descending[min(len(descending) - 1, math.ceil(share * len(descending)) - 1)]


def _ordered(estimated: dict[str, tuple[float, float]], levels: tuple[str, ...]) -> dict[str, tuple[float, float]]:
    m_top, u_top = estimated[levels[0]]
    ordered = {levels[0]: (m_top, u_top)}
    for level in levels[1:]:
        m, u = estimated[level]
        ordered[level] = (m, u if level == MISSING else max(u, m * u_top / m_top))
    return ordered


def _normalized(values: dict[str, float]) -> dict[str, float]:
    total = sum(values.values())
    return {key: value / total for key, value in values.items()}


def _smoothed(count: int, total: int, prior: float, prior_pairs: float) -> float:
    return (count + prior_pairs * prior) / (total + prior_pairs)
