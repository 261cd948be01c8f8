"""A date range bounded on both sides leads a search through the stored reach of its parameter (migration 0017)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, event, inspect, select, text

from fhir_server.migrations import downgrade, upgrade
from fhir_server.repository import Repository
from fhir_server.search import date_spans, param_ids, query
from fhir_server.search.index import UNBOUNDED_HIGH, UNBOUNDED_LOW, reach_of_dates
from fhir_server.search.parameters import default_registry
from fhir_server.search.predicates import DateWindow, date_windows
from fhir_server.search.query import conditions, search
from fhir_server.search.request import parse_request
from fhir_server.storage.engine import unit_of_work
from fhir_server.storage.tables import resources, search_date_spans
from tests.conftest import database_at

LOINC = "http://loinc.org"
HEART_RATE = f"{LOINC}|8867-4"
REGISTRY = default_registry()
DAY = 86_400_000_000


def _observation(effective: dict, code: str = "8867-4", subject: str = "Patient/dw0") -> dict:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "subject": {"reference": subject},
        **effective,
    }


def _at(day: int) -> dict:
    return {"effectiveDateTime": f"2024-03-{day:02}T08:00:00+08:00"}


OBSERVATIONS = {
    **{f"day{d:02}": _at(d) for d in range(1, 29)},
    "other-code": {**_at(12), "code": {"coding": [{"system": LOINC, "code": "8310-5"}]}},
    "long-period": {"effectivePeriod": {"start": "2023-12-01", "end": "2024-03-11"}},
    "open-end": {"effectivePeriod": {"start": "2023-06-01"}},
    "open-start": {"effectivePeriod": {"end": "2024-03-20"}},
    "backwards": {"effectivePeriod": {"start": "2024-04-20", "end": "2024-03-02"}},
    "timing": {"effectiveTiming": {"event": ["2023-01-05", "2024-03-25T10:00:00+08:00"]}},
    "later-year": {"effectiveDateTime": "2025-03-12"},
}
SEARCHES = [
    [("code", HEART_RATE), ("date", "ge2024-03-10"), ("date", "lt2024-03-17")],
    [("code", HEART_RATE), ("date", "gt2024-03-10"), ("date", "le2024-03-17")],
    [("code", HEART_RATE), ("date", "sa2024-03-10"), ("date", "eb2024-03-17")],
    [("code", HEART_RATE), ("date", "2024-03-14")],
    [("code", HEART_RATE), ("date", "ge2024-03-01,ge2024-03-20"), ("date", "lt2024-03-05")],
    [("code", HEART_RATE), ("date", "ge2024-03-20"), ("date", "lt2024-03-05")],
    [("code", HEART_RATE), ("date", "ge2024-02-01"), ("date", "lt2024-02-08")],
    [("code", HEART_RATE), ("date", "ge2024-03-11"), ("date", "lt2024-03-12"), ("_sort", "-date")],
    [("date", "ge2024-03-10"), ("date", "lt2024-03-17")],
    [("date", "ge2024-03-10"), ("date", "lt2024-03-17"), ("date", "ne2024-03-12")],
    [("status", "final"), ("date", "ge2023-01-01"), ("date", "le2024-12-31")],
    [("subject", "Patient/dw0"), ("date", "ge2024-03-10"), ("date", "lt2024-03-17")],
    [("code", HEART_RATE), ("date", "ge2024-03-10"), ("date", "ap2024-03-17")],
    [("code", "8867-4"), ("date", "ge2024-03-10"), ("date", "lt2024-03-17")],  # a code without its system
    [("code", f"{HEART_RATE},{LOINC}|8310-5"), ("date", "ge2024-03-10"), ("date", "lt2024-03-17")],
    [("code", HEART_RATE), ("date", "ge2024-03-10"), ("date", "lt2024-03-17"), ("_sort", "date")],
    [("code", HEART_RATE), ("date", "ge2024-03-10"), ("date", "lt2024-03-17"), ("_total", "accurate")],
    [("code", HEART_RATE), ("date", "ge2024-03-10"), ("date", "lt2024-03-17"), ("_total", "none")],
]


@pytest.fixture(scope="module")
def stored(engine: Engine) -> Engine:
    """Heart rates of every day of March 2024, and date shapes a window must not lose: periods (long, open at
    either end, written backwards), Timing events far apart, another code, another year."""
    repository = Repository(REGISTRY)
    with engine.begin() as conn:
        repository.create_many(conn, [({"resourceType": "Patient"}, "dw0")])
        repository.create_many(conn, [(_observation(effective), res_id) for res_id, effective in OBSERVATIONS.items()])
    return engine


def _pages(engine: Engine, params: list[tuple[str, str]]) -> tuple[list[str], set[int | None]]:
    """Every page of five, forward, and the totals the pages gave."""
    ids: list[str] = []
    totals: set[int | None] = set()
    cursor: str | None = None
    with engine.connect() as conn:
        for _ in range(40):
            request = parse_request(REGISTRY, ("Observation",), [*params, ("_count", "5"), *_cursor(cursor)])
            page = search(conn, request, count_limit=1_000)
            ids += [hit.id for hit in page.hits]
            totals.add(page.total)
            cursor = page.next_cursor
            if cursor is None:
                break
    return ids, totals


def _cursor(cursor: str | None) -> list[tuple[str, str]]:
    return [("_cursor", cursor)] if cursor else []


@pytest.mark.parametrize("params", SEARCHES, ids=lambda p: "&".join(f"{k}={v}" for k, v in p))
def test_a_window_gives_the_pages_and_totals_of_the_criteria_alone(stored, params, monkeypatch):
    monkeypatch.setattr(query, "NARROW_WINDOW", 2**62)  # every window leads where it may
    with_window = _pages(stored, params)
    monkeypatch.setattr(query, "_leading_window", lambda *args: None)
    assert with_window == _pages(stored, params)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        (SEARCHES[0], {f"day{d}" for d in range(10, 17)} | {"long-period", "open-end", "open-start", "timing"}),
        (SEARCHES[5], {"open-end", "timing"}),  # ge and lt met by two events a year apart
        (SEARCHES[6], {"long-period", "open-end", "open-start", "timing"}),
        (SEARCHES[3], {"day14", "backwards"}),  # low after and high before the day: "contained"
        ([("code", HEART_RATE), ("date", "2024-03")], {f"day{d:02}" for d in range(1, 29)} | {"backwards", "timing"}),
    ],
)
def test_matches_of_rows_far_from_the_window(stored, params, expected, monkeypatch):
    """Long, open and backwards periods and far-apart events reach the window from outside it."""
    monkeypatch.setattr(query, "NARROW_WINDOW", 2**62)
    assert _uses_window(stored, params)
    ids, totals = _pages(stored, params)
    assert set(ids) == expected and len(ids) == len(expected)
    assert totals == {len(expected)}


def _uses_window(engine: Engine, params: list[tuple[str, str]]) -> bool:
    request = parse_request(REGISTRY, ("Observation",), params)
    with engine.connect() as conn:
        statement = select(resources.c.res_pk).where(*conditions(conn, request, resources))
        return "search_date_spans" in str(statement.compile(conn))


@pytest.mark.parametrize(
    ("params", "reach_days", "leads"),
    [
        (SEARCHES[0], 0, True),  # a week before a code
        (SEARCHES[0], 13, False),  # a week widened by 13 days on each side: the code
        ([("code", HEART_RATE), ("date", "ge2024-01-01"), ("date", "lt2024-03-01")], 0, False),  # two months
        ([("date", "ge2024-01-01"), ("date", "lt2025-01-01")], 30, True),  # nothing else to start from
        ([("value-quantity", "gt10"), ("date", "ge2024-01-01"), ("date", "lt2025-01-01")], 30, True),
        (SEARCHES[11], 0, False),  # a reference: the resource's own few
        ([("subject:Patient.identifier", "urn:x|1"), *SEARCHES[0][1:]], 0, False),  # a chain
        ([("_id", "day12"), *SEARCHES[0][1:]], 0, False),
        ([("code", HEART_RATE), ("date", "ge2024-03-10")], 0, False),  # open above
        ([("code", HEART_RATE), ("date", "ne2024-03-10")], 0, False),
    ],
)
def test_which_criterion_leads(stored, params, reach_days, leads, monkeypatch):
    monkeypatch.setattr(date_spans, "longest", lambda conn, param_id: reach_days * DAY)
    assert _uses_window(stored, params) is leads


def test_the_window_leads_in_the_plan(stored, monkeypatch):
    monkeypatch.setattr(query, "NARROW_WINDOW", 2**62)  # the events a year apart make this window wide
    request = parse_request(REGISTRY, ("Observation",), SEARCHES[0])
    with stored.connect() as conn:
        statement = select(resources.c.res_pk).where(*conditions(conn, request, resources)).limit(21)
        compiled = statement.compile(conn, compile_kwargs={"literal_binds": True})
        if stored.dialect.name == "sqlite":
            plan = " ".join(row[3] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}"))
            assert "COVERING INDEX ix_date_low (param_id=? AND low>? AND low<?)" in plan, plan
            assert "ix_date_high (param_id=? AND high=?)" in plan, plan
        else:
            plan = "\n".join(row[0] for row in conn.exec_driver_sql(f"EXPLAIN {compiled}"))
            assert "ix_date_low" in plan and "ix_date_high" in plan, plan  # index-only once vacuumed


def _pages_back(engine: Engine, params: list[tuple[str, str]]) -> tuple[list[list[str]], set[int | None]]:
    """Forward to the last page of two, then back through the previous links: the pages and their totals."""
    pages: list[list[str]] = []
    totals: set[int | None] = set()
    cursor: str | None = None
    with engine.connect() as conn:
        for _ in range(40):
            request = parse_request(REGISTRY, ("Observation",), [*params, ("_count", "2"), *_cursor(cursor)])
            page = search(conn, request, count_limit=1_000)
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        for _ in range(40):
            request = parse_request(REGISTRY, ("Observation",), [*params, ("_count", "2"), *_cursor(cursor)])
            page = search(conn, request, count_limit=1_000)
            pages.append([hit.id for hit in page.hits])
            totals.add(page.total)
            cursor = page.previous_cursor
            if cursor is None:
                break
    return pages, totals


@pytest.mark.parametrize("params", [SEARCHES[0], SEARCHES[7], SEARCHES[15]], ids=["week", "day desc", "week asc"])
def test_backward_pages_and_totals_are_those_of_the_criteria_alone(stored, params, monkeypatch):
    monkeypatch.setattr(query, "NARROW_WINDOW", 2**62)
    with_window = _pages_back(stored, params)
    assert len(with_window[0]) > 1  # several pages, walked back
    monkeypatch.setattr(query, "_leading_window", lambda *args: None)
    assert with_window == _pages_back(stored, params)


def test_a_window_counts_its_matches_in_the_page_statement(stored, monkeypatch):
    """The page reads and tests every candidate of the window anyway: its total comes with it, not from a
    second statement that would read them all again."""
    monkeypatch.setattr(query, "NARROW_WINDOW", 2**62)
    statements: list[str] = []

    def note(conn, cursor, statement, *args):  # type: ignore[no-untyped-def]
        statements.append(statement)

    event.listen(stored, "before_cursor_execute", note)
    try:
        with stored.connect() as conn:
            params = [*SEARCHES[0], ("_count", "3")]
            page = search(conn, parse_request(REGISTRY, ("Observation",), params), count_limit=1_000)
            later = search(
                conn,
                parse_request(REGISTRY, ("Observation",), [*params, ("_cursor", page.next_cursor)]),
                count_limit=1_000,
            )
    finally:
        event.remove(stored, "before_cursor_execute", note)
    assert (page.total, later.total) == (11, 11) and not page.total_estimated
    assert len(page.hits) == 3 and page.next_cursor is not None
    searches = [s for s in statements if "FROM resources AS r" in s]
    assert len(searches) == 2, statements  # one per page: no count statement
    assert not any(s.lstrip().upper().startswith("SELECT COUNT(*)") for s in statements), statements


@pytest.mark.parametrize("explicit", [False, True])
def test_past_the_count_limit_a_counted_window_gives_the_total_as_before(stored, explicit, monkeypatch):
    """More matches than ``count_limit``: the planner's estimate on PostgreSQL, the count on SQLite, the count
    everywhere when ``_total=accurate`` is asked for, as when a count statement gave the total."""
    monkeypatch.setattr(query, "NARROW_WINDOW", 2**62)
    params = [*SEARCHES[0], ("_count", "3"), *([("_total", "accurate")] if explicit else [])]
    with stored.connect() as conn:
        page = search(conn, parse_request(REGISTRY, ("Observation",), params), count_limit=5)
    if explicit or stored.dialect.name == "sqlite":
        assert (page.total, page.total_estimated) == (11, False)
    else:
        assert page.total_estimated and page.total is not None and page.total >= 6


def _plan(conn, statement, *, generic: bool = False) -> str:  # type: ignore[no-untyped-def]
    """The plan of a statement; on PostgreSQL with ``generic``, the plan of it as a prepared statement that no
    longer looks at its parameters (what a connection uses after a few executions)."""
    if conn.dialect.name == "sqlite":
        compiled = statement.compile(conn, compile_kwargs={"literal_binds": True})
        return " ".join(row[3] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}"))
    if not generic:
        compiled = statement.compile(conn, compile_kwargs={"literal_binds": True})
        return "\n".join(row[0] for row in conn.exec_driver_sql(f"EXPLAIN {compiled}"))
    compiled = statement.compile(conn)
    names = list(compiled.params)
    sql = compiled.string
    for position, name in enumerate(names, 1):
        sql = sql.replace(f"%({name})s", f"${position}")
    conn.exec_driver_sql(f"PREPARE window_search AS {sql}")
    try:
        conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_generic_plan")
        arguments = ", ".join(str(compiled.params[name]) for name in names)
        return "\n".join(row[0] for row in conn.exec_driver_sql(f"EXPLAIN EXECUTE window_search({arguments})"))
    finally:
        conn.exec_driver_sql("DEALLOCATE window_search")


@pytest.mark.parametrize("generic", [False, True])
def test_the_code_is_probed_per_row_of_the_window(stored, generic, monkeypatch):
    """The displaced code is tested on the window's rows, one ``ix_token_sys_value`` probe each, before any
    ``resources`` row is read: never a join with every row of the code in the archive (which a generic plan
    of the EXISTS form chose)."""
    monkeypatch.setattr(query, "NARROW_WINDOW", 2**62)
    request = parse_request(REGISTRY, ("Observation",), SEARCHES[0])
    with stored.connect() as conn:
        statement = select(resources.c.res_pk).where(*conditions(conn, request, resources)).limit(21)
        if stored.dialect.name == "sqlite" and generic:
            pytest.skip("SQLite plans each statement with its values")
        plan = _plan(conn, statement, generic=generic)
        conn.rollback()
    if stored.dialect.name == "sqlite":
        assert "ix_token_sys_value" in _sqlite_probes_of_the_range(stored, statement), plan
    else:
        window = _cte_of(plan)
        assert "SubPlan" in window and "ix_token_sys_value" in window, plan
        assert "Hash" not in window and "Merge" not in window, plan


def _sqlite_probes_of_the_range(engine: Engine, statement) -> str:  # type: ignore[no-untyped-def]
    """What SQLite reads in the subqueries it runs per row of the window's range (its left-most branch)."""
    with engine.connect() as conn:
        compiled = statement.compile(conn, compile_kwargs={"literal_binds": True})
        rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}").all()
    [left] = [row[0] for row in rows if row[3] == "LEFT-MOST SUBQUERY"]
    per_row = {row[0] for row in rows if row[1] == left and row[3].startswith("CORRELATED SCALAR SUBQUERY")}
    return " ".join(row[3] for row in rows if row[1] in per_row)


def _cte_of(plan: str) -> str:
    """The lines of a PostgreSQL plan under its (first) CTE: how the window's rows are read."""
    lines = plan.splitlines()
    start = next(i for i, line in enumerate(lines) if line.lstrip().startswith("CTE lead_"))
    depth = len(lines[start]) - len(lines[start].lstrip())
    end = next((i for i in range(start + 1, len(lines)) if len(lines[i]) - len(lines[i].lstrip()) <= depth), None)
    return "\n".join(lines[start:end])


def test_date_windows_of_the_prefixes():
    def windows(*values: str) -> list[DateWindow]:
        request = parse_request(REGISTRY, ("Observation",), [("date", v) for v in values])
        return date_windows(request.clauses)

    assert windows("ge2024-03-10") == [] and windows("ne2024-03-10", "lt2024-04-01") == []
    [week] = windows("ge2024-03-10", "lt2024-03-17")
    assert week.before - week.after == 7 * DAY - 1
    [day] = windows("2024-03-10")
    assert day.before - day.after == DAY - 1
    [after] = windows("gt2024-03-10", "le2024-03-11")
    assert after.before - after.after == DAY - 1  # from the end of the 10th to the end of the 11th
    [either] = windows("ge2024-03-01,ge2024-03-20", "lt2024-03-05", "lt2024-03-31")
    assert either.before - either.after == 4 * DAY - 1  # the looser of ORed values, the tighter of ANDed


def test_the_reach_of_a_resource():
    rows = [
        {"param_id": 1, "low": 10, "high": 20},
        {"param_id": 1, "low": 50, "high": 40},  # written backwards
        {"param_id": 2, "low": 5, "high": 5},
        {"param_id": 3, "low": 7, "high": UNBOUNDED_HIGH},
        {"param_id": 3, "low": 1, "high": 2},
        {"param_id": 4, "low": UNBOUNDED_LOW, "high": 9},
    ]
    assert reach_of_dates(rows) == {1: 40, 2: 0}


def _stored_spans(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT p.param, s.span FROM search_date_spans s NATURAL JOIN search_param_ids p"))
        return {param: span for param, span in rows if param == "date"}


def test_the_bound_is_the_longest_reach_written(stored):
    # "timing": from 2023-01-05 00:00 to 2024-03-25 10:00:01 (UTC+8), farther than every period
    assert _stored_spans(stored)["date"] == (365 + 80) * DAY + (10 * 3600 + 1) * 1_000_000 - 1


@pytest.fixture
def blank(backend, tmp_path) -> Iterator[Engine]:  # type: ignore[no-untyped-def]
    with database_at(backend.name, "head", tmp_path) as engine:
        yield engine


def test_a_rolled_back_write_leaves_the_bound_as_it_was(blank):
    repository = Repository(REGISTRY)
    with unit_of_work(blank) as conn:
        repository.create(conn, _observation(_at(1)), res_id="short")
    assert _stored_spans(blank) == {"date": 999_999}  # one second
    month = {"effectivePeriod": {"start": "2024-03-01", "end": "2024-03-31"}}
    with pytest.raises(RuntimeError), unit_of_work(blank) as conn:
        repository.create(conn, _observation(month), res_id="long")
        assert _stored_spans_in(conn) == 31 * DAY - 1
        raise RuntimeError("roll back")
    assert _stored_spans(blank) == {"date": 999_999}
    with unit_of_work(blank) as conn:  # the same span again is written again: the rolled back one is not cached
        repository.create(conn, _observation(month), res_id="long")
    assert _stored_spans(blank) == {"date": 31 * DAY - 1}
    with blank.connect() as conn:
        found = search(
            conn, parse_request(REGISTRY, ("Observation",), [("date", "ge2024-03-30"), ("date", "lt2024-04-01")])
        )
        assert [hit.id for hit in found.hits] == ["long"]


def _stored_spans_in(conn) -> int | None:  # type: ignore[no-untyped-def]
    param_id = param_ids.lookup(conn, "Observation", "date")
    return date_spans.longest(conn, param_id)  # as a search inside the transaction reads it


def test_a_savepoint_rolled_back_does_not_hide_a_later_raise(blank):
    """A raise undone with its savepoint is raised again by a later write of the same transaction."""
    repository = Repository(REGISTRY)
    month = {"effectivePeriod": {"start": "2024-03-01", "end": "2024-03-31"}}
    with unit_of_work(blank) as conn:
        repository.create(conn, _observation(_at(1)), res_id="short")
        savepoint = conn.begin_nested()
        repository.create(conn, _observation(month), res_id="shadow")
        savepoint.rollback()
        assert _stored_spans_in(conn) == 999_999
        repository.create(conn, _observation(month), res_id="long")
        assert _stored_spans_in(conn) == 31 * DAY - 1


def test_open_periods_do_not_raise_the_bound_and_are_found(blank):
    repository = Repository(REGISTRY)
    with unit_of_work(blank) as conn:
        repository.create(conn, _observation({"effectivePeriod": {"start": "2001-01-01"}}), res_id="open")
    assert _stored_spans(blank) == {}
    with blank.connect() as conn:
        request = parse_request(REGISTRY, ("Observation",), [("date", "ge2024-03-10"), ("date", "lt2024-03-17")])
        assert [hit.id for hit in search(conn, request).hits] == ["open"]
        assert date_spans.longest(conn, param_ids.lookup(conn, "Observation", "date")) is None


def test_a_bound_raised_elsewhere_is_read_before_writing(blank):
    """Another process's larger bound is kept: a write compares with what is stored, not only its cache."""
    repository = Repository(REGISTRY)
    with unit_of_work(blank) as conn:
        repository.create(conn, _observation(_at(1)), res_id="first")
    with blank.begin() as conn:
        conn.execute(text("UPDATE search_date_spans SET span = :s"), {"s": 40 * DAY})
    with unit_of_work(blank) as conn:
        repository.create(
            conn, _observation({"effectivePeriod": {"start": "2024-03-01", "end": "2024-03-05"}}), res_id="x"
        )
    assert _stored_spans(blank) == {"date": 40 * DAY}


def test_migration_fills_the_bounds_and_goes_back(backend, tmp_path):
    with database_at(backend.name, "0016", tmp_path) as engine:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO search_param_ids (res_type, param) VALUES ('Observation', 'date')"))
            conn.execute(text("INSERT INTO search_param_ids (res_type, param) VALUES ('Encounter', 'date')"))
            ids = dict(
                conn.execute(text("SELECT param, param_id FROM search_param_ids WHERE res_type = 'Observation'")).all()
            )
            encounter = conn.execute(
                text("SELECT param_id FROM search_param_ids WHERE res_type = 'Encounter'")
            ).scalar_one()
            rows = [
                (1, ids["date"], 100, 200),
                (1, ids["date"], 900, 950),  # several rows: reach 850
                (2, ids["date"], 5000, 4000),  # backwards: 1000
                (3, ids["date"], 0, UNBOUNDED_HIGH),  # open: left out
                (3, ids["date"], 10, 100_000),
                (4, encounter, UNBOUNDED_LOW, 7),
            ]
            for pk in (1, 2, 3, 4):
                conn.execute(
                    text(
                        "INSERT INTO resources (res_pk, res_type, res_id, version, ts, deleted) "
                        "VALUES (:pk, 'Observation', :id, 1, 1, false)"
                    ),
                    {"pk": pk, "id": f"o{pk}"},
                )
            conn.execute(
                text("INSERT INTO idx_date (res_pk, param_id, low, high) VALUES (:pk, :p, :low, :high)"),
                [{"pk": pk, "p": p, "low": low, "high": high} for pk, p, low, high in rows],
            )
        upgrade(engine, "0017")
        with engine.connect() as conn:
            assert dict(conn.execute(select(search_date_spans)).all()) == {ids["date"]: 1000}
        assert _date_low_columns(engine) == ["param_id", "low", "res_pk"]
        downgrade(engine, "0016")
        assert "search_date_spans" not in inspect(engine).get_table_names()
        assert _date_low_columns(engine) == ["param_id", "low"]
        upgrade(engine)
        assert "search_date_spans" in inspect(engine).get_table_names()


def _date_low_columns(engine: Engine) -> list[str]:
    return next(i["column_names"] for i in inspect(engine).get_indexes("idx_date") if i["name"] == "ix_date_low")


def test_a_period_written_backwards_is_found(blank):
    """Its ``low`` lies after the window: the window is widened on that side too."""
    repository = Repository(REGISTRY)
    backwards = {"effectivePeriod": {"start": "2024-04-20", "end": "2024-03-02"}}
    with unit_of_work(blank) as conn:
        repository.create(conn, _observation(backwards), res_id="backwards")
    with blank.connect() as conn:
        request = parse_request(REGISTRY, ("Observation",), [("date", "2024-03")])
        assert _uses_window(blank, [("date", "2024-03")])
        assert [hit.id for hit in search(conn, request).hits] == ["backwards"]


@pytest.mark.parametrize(("held", "waiting"), [(31, 14), (14, 31)])
def test_concurrent_writers_keep_the_larger_bound(blank, held, waiting):
    """PostgreSQL: a writer raising a bound another transaction holds waits for it, then compares with what
    that one committed."""
    if blank.dialect.name != "postgresql":
        pytest.skip("concurrent writers of PostgreSQL (SQLite writers take turns)")
    repository = Repository(REGISTRY)

    def period(days: int) -> dict:
        return _observation({"effectivePeriod": {"start": "2024-03-01", "end": f"2024-03-{days:02}"}})

    with unit_of_work(blank) as conn:
        repository.create(conn, _observation(_at(1)), res_id="short")
    errors: list[BaseException] = []

    def second_writer() -> None:
        try:
            with unit_of_work(blank) as conn:
                repository.create(conn, period(waiting), res_id="second")
        except BaseException as error:
            errors.append(error)

    with blank.connect() as first:
        with first.begin():
            repository.create(first, period(held), res_id="first")
            thread = threading.Thread(target=second_writer)
            thread.start()
            thread.join(0.5)  # the second writer is now waiting for the row this transaction raised
        thread.join(30)
    assert not thread.is_alive() and not errors
    assert _stored_spans(blank) == {"date": 31 * DAY - 1}


def test_the_bound_for_choosing_the_start_is_read_again_after_the_interval(blank, monkeypatch):
    repository = Repository(REGISTRY)
    with unit_of_work(blank) as conn:
        repository.create(conn, _observation(_at(1)), res_id="first")
    with blank.begin() as conn:
        conn.execute(text("UPDATE search_date_spans SET span = :s"), {"s": 40 * DAY})
    monkeypatch.setattr(date_spans, "CHECK_INTERVAL", 3600.0)
    with blank.connect() as conn:
        param_id = param_ids.lookup(conn, "Observation", "date")
        assert date_spans.longest(conn, param_id) == 40 * DAY
        conn.rollback()
        with blank.begin() as other:
            other.execute(text("UPDATE search_date_spans SET span = :s"), {"s": 50 * DAY})
        assert date_spans.longest(conn, param_id) == 40 * DAY  # the plan's choice only: read a moment ago
        monkeypatch.setattr(date_spans, "CHECK_INTERVAL", 0.0)
        assert date_spans.longest(conn, param_id) == 50 * DAY


@pytest.mark.parametrize(
    "params",
    [
        [("name", "Wang"), ("birthdate", "ge1950-03-01"), ("birthdate", "lt1950-03-08")],
        [("name:exact", "Wang Fang"), ("birthdate", "ge1950-03-01"), ("birthdate", "lt1950-03-08")],
        [("family", "li"), ("birthdate", "1950-03-03")],
    ],
    ids=["prefix", "exact", "family"],
)
def test_a_displaced_string_is_probed_on_the_window_as_it_was_tested(blank, params, monkeypatch):
    repository = Repository(REGISTRY)
    people = [("Wang", "Fang"), ("Wang", "Wei"), ("Li", "Na"), ("Wangshi", "Lan"), ("Zhang", "Wang")]
    patients = [
        (
            {
                "resourceType": "Patient",
                "name": [{"family": family, "given": [given], "text": f"{family} {given}"}],
                "birthDate": f"1950-03-0{day}",
            },
            f"p{day}{n}",
        )
        for n, (family, given) in enumerate(people)
        for day in (1, 3, 9)
    ]
    with unit_of_work(blank) as conn:
        repository.create_many(conn, patients)

    def ids(windowed: bool) -> tuple[list[str], list[str], int | None]:
        """Every match in ``res_pk`` order, the first page of two and its total."""
        with blank.connect() as conn:
            request = parse_request(REGISTRY, ("Patient",), [*params, ("_count", "2")])
            page = search(conn, request, count_limit=1_000)
            where = conditions(conn, request, resources)
            assert ("search_date_spans" in str(select(resources.c.res_pk).where(*where).compile(conn))) is windowed
            every = conn.execute(select(resources.c.res_id).where(*where).order_by(resources.c.res_pk)).scalars()
            return list(every), [hit.id for hit in page.hits], page.total

    monkeypatch.setattr(query, "NARROW_WINDOW", 2**62)
    with_window = ids(True)
    monkeypatch.setattr(query, "_leading_window", lambda *args: None)
    assert with_window == ids(False)
    assert with_window[0] and with_window[2] == len(with_window[0])
