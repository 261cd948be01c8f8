"""Blocking keys: records sharing a key become candidate pairs, so no one scans all pairs (Fellegi–Sunter 1969 §4)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from ehr_archive.matching.records import PersonRecord

__all__ = ["blocking_keys", "candidate_pairs"]


def blocking_keys(record: PersonRecord) -> frozenset[str]:
    """The keys under which a record is filed; a database fetches candidates by equality on any of them."""
    keys: set[str] = set()
    number = record.resident_id or record.resident_id_raw
    if number:
        keys.add(f"rid:{number}")
    keys.update(f"card:{system}:{value}" for system, value in record.cards)
    keys.update(f"tel:{phone}" for phone in record.phones)
    name, born = record.name, record.birth_date
    if name is not None and born is not None:
        keys.add(f"ini:{name.initials}:{born.year}")
        if name.surname_pinyin:
            low, high = sorted((born.month, born.day))
            keys.add(f"sur:{name.surname_pinyin}:{born.year}:{low:02d}{high:02d}")
    if name is not None and record.district:
        keys.add(f"py:{name.full_pinyin}:{record.district}")
    return frozenset(keys)


def candidate_pairs(records: Sequence[PersonRecord], *, max_block_size: int = 500) -> set[tuple[int, int]]:
    """Index pairs (i < j) of records sharing a blocking key; keys held by more than `max_block_size` are skipped."""
    blocks: defaultdict[str, list[int]] = defaultdict(list)
    for index, record in enumerate(records):
        for key in blocking_keys(record):
            blocks[key].append(index)
    pairs: set[tuple[int, int]] = set()
    for members in blocks.values():
        if 1 < len(members) <= max_block_size:
            pairs.update((x, y) for i, x in enumerate(members) for y in members[i + 1 :])
    return pairs
