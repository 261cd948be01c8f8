"""Stored bodies: one codec for every writer and reader; Zstandard with the shipped dictionary, old forms still read."""

from __future__ import annotations

import zlib

import orjson
import pytest
import zstandard
from sqlalchemy import select

from fhir_server.repository import Repository
from fhir_server.search.parameters import default_registry
from fhir_server.storage.codec import DICTIONARY_ID, decode_body, encode_body
from fhir_server.storage.engine import unit_of_work
from fhir_server.storage.tables import resource_versions

PATIENT = {
    "resourceType": "Patient",
    "identifier": [{"system": "urn:oid:2.16.156.10011.1.1", "value": "450403195003150012"}],
    "name": [{"family": "陈", "given": ["建国"]}],
    "gender": "male",
    "birthDate": "1950-03-15",
    "address": [{"city": "梧州市", "district": "万秀区", "text": "广西壮族自治区梧州市万秀区"}],
}


def test_a_body_round_trips_and_is_stored_smaller() -> None:
    body = orjson.dumps({**PATIENT, "id": "p1", "meta": {"versionId": "1", "lastUpdated": "2026-11-28T08:00:00Z"}})
    stored = encode_body(body)
    assert decode_body(stored) == body
    assert len(stored) < len(body) / 2
    assert zstandard.get_frame_parameters(stored).dict_id == DICTIONARY_ID


def test_bodies_stored_before_are_still_read() -> None:
    body = orjson.dumps(PATIENT)
    assert decode_body(body) == body
    assert decode_body(zlib.compress(body, 1)) == body


def test_frames_without_a_dictionary_are_read_and_unknown_dictionaries_refused() -> None:
    body = orjson.dumps(PATIENT)
    assert decode_body(zstandard.ZstdCompressor().compress(body)) == body
    samples = [orjson.dumps({**PATIENT, "id": str(n), "birthDate": f"19{n % 90 + 10}-01-01"}) for n in range(400)]
    unknown = zstandard.train_dictionary(2048, samples, dict_id=40000)
    with pytest.raises(ValueError, match="unknown compression dictionary 40000"):
        decode_body(zstandard.ZstdCompressor(dict_data=unknown).compress(body))


def test_the_repository_stores_frames_and_reads_them_back(engine) -> None:
    repository = Repository(default_registry())
    with unit_of_work(engine) as conn:
        written = repository.create(conn, dict(PATIENT)).version
    with unit_of_work(engine, write=False) as conn:
        stored = conn.execute(
            select(resource_versions.c.body).where(resource_versions.c.res_pk == written.res_pk)
        ).scalar_one()
        read = repository.read(conn, "Patient", written.res_id)
        listed = repository.load_many(conn, [written.res_pk])
    assert bytes(stored).startswith(b"\x28\xb5\x2f\xfd") and len(stored) < len(written.body)
    assert read.body == written.body == listed[0].body
    assert read.resource()["name"] == PATIENT["name"]
