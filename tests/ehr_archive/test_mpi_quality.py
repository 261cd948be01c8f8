"""Linkage quality on a generated labelled set: the targets bench/mpi_quality.py reports at 20,000 residents."""

from __future__ import annotations

from collections import Counter

import pytest

from ehr_archive.identifiers import validate_patient_identifiers
from tests.ehr_archive.mpi_dataset import MpiDataset, evaluate_linkage, generate_dataset


@pytest.fixture(scope="module")
def dataset() -> MpiDataset:
    return generate_dataset(residents=2_000, seed=7)


def test_same_seed_same_set_and_other_seed_other_set(dataset: MpiDataset) -> None:
    again = generate_dataset(residents=2_000, seed=7)
    assert [r.patient for r in again.records[:200]] == [r.patient for r in dataset.records[:200]]
    assert generate_dataset(residents=200, seed=8).records[0].patient != dataset.records[0].patient


def test_set_holds_every_kind_of_difficulty(dataset: MpiDataset) -> None:
    assert len(dataset.residents) == 2_000
    kinds = Counter(error for record in dataset.records for error in record.errors)
    expected = {"homophone", "typo", "traditional", "transposed-date", "phone-swapped-digits", "card-only",
                "family-phone", "missing-date", "legacy-id", "id-typo", "moved"}  # fmt: skip
    assert expected <= kinds.keys()
    assert sum(1 for person in dataset.residents if person.twin_of) >= 10
    assert len(dataset.true_pairs()) > 1_000


def test_error_free_records_carry_valid_identifiers(dataset: MpiDataset) -> None:
    clean = [r for r in dataset.records if not {"id-typo", "legacy-id"} & set(r.errors)][:300]
    assert all(validate_patient_identifiers(r.patient).ok for r in clean)


def test_precision_of_certain_and_recall_of_probable_meet_the_targets(dataset: MpiDataset) -> None:
    quality = evaluate_linkage(dataset)
    assert quality.certain_precision >= 0.995
    assert quality.probable_recall >= 0.95
    assert quality.twin_certain == 0 < quality.twin_pairs
    assert quality.twin_probable <= quality.twin_pairs // 20
    assert quality.candidate_pairs < 10 * quality.records
