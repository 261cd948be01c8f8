"""A non-owner's type-level history over many changed versions lists exactly the readable ones, on both backends.

Institution A's Observations move between a consenting resident (r1) and one who shares nothing (r2), some are
amended in place, some deleted; clinic D owns a few of its own. The versions of a page are decided together
(``fhir_server.access.versions``); every page must hold exactly what a version-by-version judgment keeps.
"""

from __future__ import annotations

import pytest

from tests.fhir_server.access.conftest import Exchange, Institution
from tests.fhir_server.access.test_access_api import _path, consent, observation, patient

SUBJECTS = (
    ("r1", "r2", "r1"),  # shared, hidden, shared again
    ("r2", "r1"),  # hidden first
    ("r1", "r1"),  # the status changes only (tokens differ from the current version's)
    ("r2", "r2", "r2"),  # never shared
    ("r1",),  # one version
)


class ManyVersions:
    def __init__(self, exchange: Exchange) -> None:
        self.a = exchange.institution("Organization/hosp-a")
        self.d = exchange.institution("Organization/clinic-d")
        for res_id in ("r1", "r2"):
            self.a.put(patient(res_id))
        self.a.put(consent("consent-r1", "r1"))
        self.visible: set[str] = set()
        self.hidden: set[str] = set()
        for n in range(40):
            owner = self.d if n % 7 == 0 else self.a
            subjects = SUBJECTS[n % len(SUBJECTS)]
            res_id = f"hp-{n}"
            for version, subject in enumerate(subjects, start=1):
                status = "amended" if version > 1 and n % 2 else "final"
                owner.put({**observation(res_id, subject), "status": status})
                shared = owner is self.d or subject == "r1"
                (self.visible if shared else self.hidden).add(f"{res_id}@{version}")
            if n % 9 == 4:  # deleted: its history is its owner's only
                assert owner.delete(f"/fhir/Observation/{res_id}").status_code in (200, 204)
                versions = {f"{res_id}@{v}" for v in range(1, len(subjects) + 1)}
                if owner is self.a:
                    self.visible -= versions
                    self.hidden |= versions
                else:
                    self.visible.add(f"{res_id}@{len(subjects) + 1}")


@pytest.fixture(scope="module")
def world(exchange: Exchange) -> ManyVersions:
    return ManyVersions(exchange)


def history(who: Institution, count: int) -> list[str]:
    url = f"/fhir/Observation/_history?_count={count}"
    seen: list[str] = []
    while url:
        response = who.get(url)
        assert response.status_code == 200, response.text
        bundle = response.json()
        entries = bundle.get("entry", [])
        assert len(entries) <= count
        for entry in entries:  # a deletion has no resource: its location names the version
            res_id, _, version = entry["response"]["location"].rsplit("/", 3)[1:]
            seen.append(f"{res_id}@{version}")
        url = next((_path(link["url"]) for link in bundle["link"] if link["relation"] == "next"), "")
        if url:
            assert len(entries) == count  # a page that links on is full
    return seen


def test_the_world_mixes_hidden_and_visible_versions(world: ManyVersions) -> None:
    assert len(world.visible) > 30 and len(world.hidden) > 30


@pytest.mark.parametrize("count", [3, 10, 50])
def test_a_non_owners_type_history_lists_exactly_the_readable_versions(world: ManyVersions, count: int) -> None:
    seen = history(world.d, count)
    assert len(seen) == len(set(seen))  # none repeated across pages
    assert set(seen) == world.visible


def test_the_owner_lists_every_version_of_its_records(world: ManyVersions) -> None:
    seen = history(world.a, 50)
    owned = {entry for entry in world.visible | world.hidden if int(entry.split("@")[0][3:]) % 7}
    assert owned <= set(seen)


def test_each_listed_version_reads_and_each_hidden_one_does_not(world: ManyVersions) -> None:
    for entry in sorted(world.visible)[:12]:
        res_id, version = entry.split("@")
        response = world.d.get(f"/fhir/Observation/{res_id}/_history/{version}")
        assert response.status_code in (200, 410), (entry, response.text)
    for entry in sorted(world.hidden)[:12]:
        res_id, version = entry.split("@")
        assert world.d.get(f"/fhir/Observation/{res_id}/_history/{version}").status_code == 404, entry
