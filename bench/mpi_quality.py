"""Linkage quality of the MPI matcher on a generated, labelled set of Wuzhou residents (Fellegi–Sunter 1969).

Run from the repository root:  python -m bench.mpi_quality [--residents 20000] [--seed 0] [--estimate-seed 1]
With --estimate-seed, m/u and thresholds are first estimated on a training set of that seed and printed.
"""

from __future__ import annotations

import argparse
import time
from pprint import pformat

from ehr_archive.matching import (
    DEFAULT_MODEL,
    DEFAULT_THRESHOLDS,
    MatchModel,
    Thresholds,
    candidate_pairs,
    choose_thresholds,
    compare_records,
    estimate_model,
    grade_comparison,
    person_record_from_patient,
)
from tests.ehr_archive.mpi_dataset import LinkageQuality, MpiDataset, evaluate_linkage, generate_dataset


def estimate(dataset: MpiDataset) -> tuple[MatchModel, Thresholds]:
    """m/u from the labelled candidate pairs of a training set, then thresholds from their scores."""
    folded = [person_record_from_patient(r.patient) for r in dataset.records]
    truth = dataset.true_pairs()
    pairs = sorted(candidate_pairs(folded))
    vectors = [(compare_records(folded[i], folded[j]), (i, j) in truth) for i, j in pairs]
    model = estimate_model(vectors)
    scored = []
    for (levels, is_match), (i, j) in zip(vectors, pairs, strict=True):
        result = grade_comparison(levels, folded[i], folded[j], model=model)
        if result.rule is None:
            scored.append((result.score, is_match))
    return model, choose_thresholds(scored, model=model)


def report(quality: LinkageQuality, dataset: MpiDataset, seconds_generate: float) -> None:
    f1 = LinkageQuality.f1
    print(f"residents               {len(dataset.residents):>10,}")
    print(f"records                 {quality.records:>10,}")
    print(f"true pairs              {quality.true_pairs:>10,}")
    print(f"candidate pairs         {quality.candidate_pairs:>10,}")
    print(f"blocking recall         {quality.blocking_recall:>10.4f}")
    print(
        f"certain                 precision {quality.certain_precision:.4f}  recall {quality.certain_recall:.4f}"
        f"  F1 {f1(quality.certain_precision, quality.certain_recall):.4f}"
        f"  ({quality.certain_true:,} true, {quality.certain_false:,} false)"
    )
    print(
        f"probable or better      precision {quality.probable_precision:.4f}  recall {quality.probable_recall:.4f}"
        f"  F1 {f1(quality.probable_precision, quality.probable_recall):.4f}"
        f"  ({quality.probable_true:,} true, {quality.probable_false:,} false)"
    )
    print(
        f"twin pairs              {quality.twin_pairs:>10,}  certain {quality.twin_certain}"
        f"  probable {quality.twin_probable} (review)"
    )
    print(
        f"seconds                 generate {seconds_generate:.1f}  fold {quality.seconds_records:.1f}"
        f"  block {quality.seconds_blocking:.1f}  score {quality.seconds_scoring:.1f}"
        f"  ({quality.candidate_pairs / max(quality.seconds_scoring, 1e-9):,.0f} pairs/s)"
    )


def show_pairs(title: str, pairs: tuple[tuple[int, int], ...], dataset: MpiDataset, limit: int) -> None:
    for i, j in pairs[:limit]:
        a, b = dataset.records[i], dataset.records[j]
        print(f"{title}: {a.record_id}/{a.person_id} {a.errors}  ~  {b.record_id}/{b.person_id} {b.errors}")
        print("   ", compare_records(person_record_from_patient(a.patient), person_record_from_patient(b.patient)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--residents", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0, help="seed of the evaluation set")
    parser.add_argument("--estimate-seed", type=int, help="estimate m/u and thresholds on this training seed first")
    parser.add_argument("--show", type=int, default=0, help="print this many false certain and missed pairs")
    args = parser.parse_args()
    model, thresholds = DEFAULT_MODEL, DEFAULT_THRESHOLDS
    if args.estimate_seed is not None:
        model, thresholds = estimate(generate_dataset(residents=args.residents, seed=args.estimate_seed))
        rounded = {
            f: {lv: (round(m, 4), round(u, 5)) for lv, (m, u) in v.items()} for f, v in model.probabilities.items()
        }
        print("estimated m/u:\n" + pformat(rounded, width=110, sort_dicts=False))
        print(f"estimated thresholds: {thresholds}\n")
    started = time.perf_counter()
    dataset = generate_dataset(residents=args.residents, seed=args.seed)
    generated = time.perf_counter() - started
    quality = evaluate_linkage(dataset, model=model, thresholds=thresholds)
    report(quality, dataset, generated)
    show_pairs("false certain", quality.false_certain, dataset, args.show)
    show_pairs("missed", quality.missed, dataset, args.show)


if __name__ == "__main__":
    main()
