"""The transaction builder: conditional requests, de-duplicated keys, deterministic fullUrls, Provenance."""

from __future__ import annotations

from adapters.hl7v2.bundle import TransactionBuilder, conditional_query

SYSTEM = "https://hie.wuzhou.gov.cn/fhir/sid/mrn/450400-001"


def _bundle(builder: TransactionBuilder) -> dict:
    return builder.bundle(
        recorded="2024-03-15T09:30:00+08:00",
        agent={"display": "梧州市红十字会医院"},
        source={"identifier": {"system": "urn:example", "value": "MSG1"}},
        activity={"text": "A01"},
    )


def test_conditional_query_escapes_search_specials_and_url() -> None:
    assert conditional_query(SYSTEM, "0012345678") == f"identifier={SYSTEM}|0012345678"
    assert conditional_query("urn:x", "4 East, room 1|b$") == "identifier=urn:x|4%20East%5C%2C%20room%201%5C%7Cb%5C%24"
    assert conditional_query("urn:x", "病区") == "identifier=urn:x|%E7%97%85%E5%8C%BA"


def test_upsert_is_a_conditional_put_and_ensure_a_conditional_create() -> None:
    builder = TransactionBuilder("450400-001|MSG1")
    builder.upsert({"resourceType": "Patient"}, SYSTEM, "1")
    builder.ensure({"resourceType": "Practitioner"}, SYSTEM, "2")

    first, second, provenance = _bundle(builder)["entry"]

    assert first["request"] == {"method": "PUT", "url": f"Patient?identifier={SYSTEM}|1"}
    assert second["request"] == {"method": "POST", "url": "Practitioner", "ifNoneExist": f"identifier={SYSTEM}|2"}
    assert provenance["request"] == {"method": "POST", "url": "Provenance"}


def test_same_key_gives_one_entry_and_one_full_url() -> None:
    builder = TransactionBuilder("450400-001|MSG1")
    first = builder.upsert({"resourceType": "Practitioner", "name": [{"text": "黄志明"}]}, SYSTEM, "D0012")
    again = builder.upsert({"resourceType": "Practitioner"}, SYSTEM, "D0012")

    bundle = _bundle(builder)

    assert first == again
    assert builder.full_url("Practitioner", SYSTEM, "D0012") == first
    assert len(bundle["entry"]) == 2
    assert bundle["entry"][0]["resource"]["name"] == [{"text": "黄志明"}]


def test_full_urls_are_uuid_urns_derived_from_the_message() -> None:
    def url(message_key: str) -> str:
        return TransactionBuilder(message_key).upsert({"resourceType": "Patient"}, SYSTEM, "1")

    assert url("450400-001|MSG1").startswith("urn:uuid:")
    assert url("450400-001|MSG1") == url("450400-001|MSG1")
    assert url("450400-001|MSG1") != url("450400-001|MSG2")


def test_provenance_targets_written_resources_not_operations() -> None:
    builder = TransactionBuilder("450400-001|MSG1")
    patient = builder.upsert({"resourceType": "Patient"}, SYSTEM, "1")
    builder.invoke({"resourceType": "Parameters"}, "Patient/$merge")

    bundle = _bundle(builder)
    provenance = bundle["entry"][-1]["resource"]

    assert bundle["entry"][1]["request"] == {"method": "POST", "url": "Patient/$merge"}
    assert provenance["target"] == [{"reference": patient}]
    assert provenance["agent"][0]["who"] == {"display": "梧州市红十字会医院"}
    assert provenance["entity"] == [
        {"role": "source", "what": {"identifier": {"system": "urn:example", "value": "MSG1"}}}
    ]
