"""Parts of search statements built once and shared by later statements (``search.predicates``: parameter
conditions, open-ended date rows, ``NOT deleted``; ``search.query``: the page's columns by name) carry no
search's values into another: searches that share them, one after another, each find their own matches."""

from __future__ import annotations

import uuid
from urllib.parse import parse_qsl, urlsplit

from fhir_server.api.search import searchset
from fhir_server.search.parameters import default_registry
from fhir_server.search.query import Page
from fhir_server.search.request import parse_request

SYSTEM = "urn:test:statement-parts"


def ids(bundle: dict) -> list[str]:
    return sorted(e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match")


def test_searches_sharing_built_parts_find_their_own_matches(client):
    tag = uuid.uuid4().hex
    x, y = f"x-{tag}", f"y-{tag}"
    people = {}
    for name in ("a", "b"):
        body = {"resourceType": "Patient", "identifier": [{"system": SYSTEM, "value": f"{name}-{tag}"}]}
        people[name] = client.post("/fhir/Patient", json=body).json()["id"]

    def observation(who: str, code: str, day: str) -> str:
        body = {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": SYSTEM, "code": code}]},
            "subject": {"reference": f"Patient/{people[who]}"},
            "effectiveDateTime": day,
        }
        return client.post("/fhir/Observation", json=body).json()["id"]

    ax, ay, bx = observation("a", x, "2024-01-01"), observation("a", y, "2024-02-01"), observation("b", x, "2024-03-01")
    expected = [
        ("Observation", {"subject": f"Patient/{people['a']}", "code": f"{SYSTEM}|{x}"}, [ax]),
        ("Observation", {"subject": f"Patient/{people['b']}", "code": f"{SYSTEM}|{x}"}, [bx]),
        ("Observation", {"patient": people["a"], "code": f"{SYSTEM}|{y}"}, [ay]),
        ("Observation", {"code": f"{SYSTEM}|{x}", "date": ["ge2024-02-15", "lt2024-03-15"]}, [bx]),
        ("Observation", {"code": f"{SYSTEM}|{x}", "date": ["ge2023-12-25", "lt2024-01-05"]}, [ax]),
        ("Observation", {"code": f"{SYSTEM}|{y}", "date": ["ge2024-02-15", "lt2024-03-15"]}, []),
        ("Observation", {"subject:Patient.identifier": f"{SYSTEM}|a-{tag}", "code": f"{SYSTEM}|{x}"}, [ax]),
        ("Observation", {"subject:Patient.identifier": f"{SYSTEM}|b-{tag}", "code": f"{SYSTEM}|{x}"}, [bx]),
        ("Patient", {"_has:Observation:subject:code": f"{SYSTEM}|{y}"}, [people["a"]]),
        ("Patient", {"_has:Observation:subject:code": f"{SYSTEM}|{x}"}, sorted(people.values())),
    ]
    for _ in range(2):  # the second round reuses what the first built
        for res_type, params, found in expected:
            bundle = client.get(f"/fhir/{res_type}", params=params).json()
            assert ids(bundle) == sorted(found), (res_type, params)
            assert bundle["total"] == len(found)


def test_window_led_search_counts_its_matches_on_later_pages(client):
    tag = uuid.uuid4().hex
    code = f"w-{tag}"
    made = []
    for day in range(1, 6):
        body = {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": SYSTEM, "code": code}]},
            "effectiveDateTime": f"2024-05-0{day}",
        }
        made.append(client.post("/fhir/Observation", json=body).json()["id"])
    params = {"code": f"{SYSTEM}|{code}", "date": ["ge2024-05-01", "lt2024-05-08"], "_count": 2, "_total": "accurate"}
    page = client.get("/fhir/Observation", params=params).json()
    seen, totals = ids(page), [page["total"]]
    while (url := next((x["url"] for x in page["link"] if x["relation"] == "next"), None)) is not None:
        page = client.get(url.replace("http://testserver", "")).json()
        seen += ids(page)
        totals.append(page["total"])
    assert sorted(seen) == sorted(made)
    assert totals == [5, 5, 5]


def test_links_carry_the_search_parameters_and_the_page_cursor(client):
    tag = uuid.uuid4().hex
    for n in range(3):
        body = {"resourceType": "Patient", "identifier": [{"system": SYSTEM, "value": f"{tag}-{n}"}]}
        client.post("/fhir/Patient", json=body)
    first = client.get("/fhir/Patient", params={"identifier": f"{SYSTEM}|", "_count": 2, "_sort": "identifier"})
    links = {x["relation"]: x["url"] for x in first.json()["link"]}
    assert links["self"] == links["first"]
    assert urlsplit(links["next"]).path == urlsplit(links["first"]).path
    applied = parse_qsl(urlsplit(links["first"]).query)
    following = parse_qsl(urlsplit(links["next"]).query)
    assert following[:-1] == applied and following[-1][0] == "_cursor"
    second = client.get(links["next"].replace("http://testserver", "")).json()
    later = {x["relation"]: x["url"] for x in second["link"]}
    assert later["self"] == links["next"] and later["first"] == links["first"]
    assert parse_qsl(urlsplit(later["previous"]).query)[:-1] == applied


def test_links_of_a_search_without_parameters():
    request = parse_request(default_registry(), ("Patient",), [])
    bundle = searchset("http://example.org/fhir", "Patient", request, Page([], 0, "n1", "p1"), {}, [])
    links = {x["relation"]: x["url"] for x in bundle["link"]}
    assert links == {
        "self": "http://example.org/fhir/Patient",
        "first": "http://example.org/fhir/Patient",
        "previous": "http://example.org/fhir/Patient?_cursor=p1",
        "next": "http://example.org/fhir/Patient?_cursor=n1",
    }
