"""Search latency at scale: a generated Wuzhou archive loaded through the bulk write path, then common searches.

``load`` fills a scratch PostgreSQL (or SQLite) database with Patients (Chinese names, resident ID numbers,
addresses in Wuzhou's districts), Observations and Conditions through ``Repository.create_many`` (the same index
rows as a REST create). ``measure`` runs each search through ``search.query.search`` (and ``includes`` for
``_include``) with varying values and prints p50/p99; ``--explain`` prints ``EXPLAIN (ANALYZE, BUFFERS)`` of the
statements of one run of each search.

    .venv/bin/python bench/search_scale.py load --patients 100000          # 1.0 M resources
    .venv/bin/python bench/search_scale.py measure --runs 30 [--explain]
    .venv/bin/python bench/search_scale.py read --reads 5000 --clients 1,8   # W3 over HTTP, `hie serve`
"""

from __future__ import annotations

import argparse
import inspect
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import Connection, Engine, bindparam, event, text
from sqlalchemy.engine import make_url

from bench.scratch_db import check_loopback, postgres_version, recreate_postgres
from ehr_archive.identifiers import RESIDENT_ID_SYSTEM, mrn_system, resident_id_check_char
from fhir_server.config import Settings
from fhir_server.migrations import upgrade
from fhir_server.repository import Repository
from fhir_server.search.includes import included
from fhir_server.search.parameters import default_registry
from fhir_server.search.query import search
from fhir_server.search.request import parse_request
from fhir_server.storage.engine import create_db_engine

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/hie_search_scale"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤"  # noqa: E501
GIVEN = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超兰霞平刚桂华玉萍红建文辉力林宇浩凯鹏飞志国东海波斌宁俊峰"
DISTRICTS = {"450403": "万秀区", "450405": "长洲区", "450406": "龙圩区", "450421": "苍梧县", "450422": "藤县"}
DISTRICTS |= {"450423": "蒙山县", "450481": "岑溪市"}
STREETS = ["新兴一路", "新兴二路", "西江四路", "大学路", "居仁路", "南环路", "蝶山一路", "富民路", "钱鉴路"]
# (LOINC code, UCUM unit, low, high, weight): vital signs dominate, as in a regional archive.
OBSERVATIONS = [
    ("8867-4", "/min", 50, 110, 12),
    ("8480-6", "mm[Hg]", 95, 180, 12),
    ("8462-4", "mm[Hg]", 55, 110, 12),
    ("8310-5", "Cel", 36.0, 39.5, 8),
    ("29463-7", "kg", 40, 95, 8),
    ("8302-2", "cm", 145, 185, 5),
    ("2339-0", "mg/dL", 70, 200, 6),
    ("2345-7", "mmol/L", 3.5, 11.0, 6),
    ("4548-4", "%", 4.5, 9.5, 4),
    ("2093-3", "mmol/L", 3.0, 7.5, 4),
    ("718-7", "g/L", 90, 170, 4),
    ("6690-2", "10*9/L", 3.5, 11, 4),
    ("777-3", "10*9/L", 100, 400, 3),
    ("2160-0", "umol/L", 45, 130, 3),
    ("1742-6", "U/L", 7, 60, 3),
    ("3016-3", "mIU/L", 0.3, 5, 1),
    ("2951-2", "mmol/L", 135, 148, 2),
    ("2823-3", "mmol/L", 3.4, 5.4, 2),
    ("14682-9", "umol/L", 200, 500, 1),
    ("59408-5", "%", 88, 100, 1),
]
CONDITIONS = ["I10", "E11.9", "J06.9", "K29.7", "M54.5", "I25.1", "J44.9", "N18.3", "E78.5", "I63.9", "C22.0"]
CONDITIONS += ["A15.0", "B18.1", "F32.9", "G40.9", "K74.6", "O80", "R50.9", "S72.0", "Z00.0"]
ORGANIZATIONS = 20


def resident_id(rng: random.Random, born: date) -> str:
    region = rng.choice(list(DISTRICTS))
    first17 = f"{region}{born:%Y%m%d}{rng.randrange(1000):03d}"
    return first17 + resident_id_check_char(first17)


def patient(rng: random.Random, number: int) -> dict[str, Any]:
    born = date(1930, 1, 1) + timedelta(days=rng.randrange(33_000))
    family = rng.choice(SURNAMES)
    given = "".join(rng.choice(GIVEN) for _ in range(rng.choice((1, 2))))
    district_code = rng.choice(list(DISTRICTS))
    org = f"org{number % ORGANIZATIONS}"
    return {
        "resourceType": "Patient",
        "identifier": [
            {"system": RESIDENT_ID_SYSTEM, "value": resident_id(rng, born)},
            {"system": mrn_system(org), "value": f"MR{number:08d}"},
        ],
        "active": True,
        "name": [{"family": family, "given": [given]}],
        "telecom": [{"system": "phone", "value": f"1{rng.randrange(3, 9)}{rng.randrange(10**9):09d}"}],
        "gender": rng.choice(("male", "female")),
        "birthDate": born.isoformat(),
        "address": [
            {
                "line": [f"{rng.choice(STREETS)}{rng.randrange(1, 300)}号"],
                "city": "梧州市",
                "district": DISTRICTS[district_code],
                "state": "广西壮族自治区",
                "postalCode": "543000",
            }
        ],
        "managingOrganization": {"reference": f"Organization/{org}"},
    }


def observation(rng: random.Random, subject: str) -> dict[str, Any]:
    code, unit, low, high, _ = rng.choices(OBSERVATIONS, weights=[o[4] for o in OBSERVATIONS])[0]
    when = date(2020, 1, 1) + timedelta(days=rng.randrange(6 * 365), seconds=rng.randrange(86_400))
    category = "vital-signs" if code[0] in "825" and unit in ("/min", "mm[Hg]", "Cel", "kg", "cm") else "laboratory"
    return {
        "resourceType": "Observation",
        "status": "final",
        "category": [
            {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": category}]}
        ],
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "subject": {"reference": subject},
        "effectiveDateTime": f"{when.isoformat()}T{rng.randrange(8, 18):02d}:{rng.randrange(60):02d}:00+08:00",
        "valueQuantity": {"value": round(rng.uniform(low, high), 1), "unit": unit, "system": UCUM, "code": unit},
    }


def condition(rng: random.Random, subject: str) -> dict[str, Any]:
    when = date(2010, 1, 1) + timedelta(days=rng.randrange(16 * 365))
    return {
        "resourceType": "Condition",
        "clinicalStatus": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]
        },
        "code": {"coding": [{"system": ICD10, "code": rng.choice(CONDITIONS)}]},
        "subject": {"reference": subject},
        "onsetDateTime": when.isoformat(),
    }


def generate(rng: random.Random, patients: int, per_patient: int, start: int = 0) -> Iterator[tuple[dict, str]]:
    """Each patient followed by its Observations (``per_patient`` on average) and one Condition in three."""
    for number in range(start, patients):
        pid = f"p{number}"
        yield patient(rng, number), pid
        subject = f"Patient/{pid}"
        for k in range(rng.randrange(2 * per_patient + 1)):
            yield observation(rng, subject), f"o{number}-{k}"
        if number % 3 == 0:
            yield condition(rng, subject), f"c{number}"


def engine_for(url: str) -> Engine:
    return create_db_engine(Settings(database_url=url))


def load(args: argparse.Namespace) -> None:
    url = args.url
    if url.startswith("postgresql"):
        check_loopback(url)
        print(postgres_version(url))
        recreate_postgres(url)
    elif make_url(url).database:
        Path(make_url(url).database).unlink(missing_ok=True)
    engine = engine_for(url)
    upgrade(engine, args.revision)
    repository = Repository(default_registry())
    rng = random.Random(args.seed)
    batch: list[tuple[dict, str]] = []
    written, started = 0, time.perf_counter()
    with engine.begin() as conn:
        orgs = [
            ({"resourceType": "Organization", "name": f"梧州市第{i + 1}医院"}, f"org{i}") for i in range(ORGANIZATIONS)
        ]
        repository.create_many(conn, orgs)
    for item in generate(rng, args.patients, args.observations):
        batch.append(item)
        if len(batch) >= 1000:
            with engine.begin() as conn:
                repository.create_many(conn, batch)
            written += len(batch)
            batch = []
            if written % 50_000 == 0:
                rate = written / (time.perf_counter() - started)
                print(f"{written:,} resources, {rate:,.0f}/s", flush=True)
    if batch:
        with engine.begin() as conn:
            repository.create_many(conn, batch)
        written += len(batch)
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("VACUUM ANALYZE")
        else:
            conn.exec_driver_sql("ANALYZE")
    print(f"loaded {written:,} resources in {time.perf_counter() - started:,.0f} s")


Search = Callable[[random.Random], tuple[str, list[tuple[str, str]]]]


def _pid(rng: random.Random, patients: int) -> str:
    return f"p{rng.randrange(patients)}"


def searches(conn: Connection, patients: int) -> dict[str, Search]:
    """The measured searches: name → (resource type, parameters) drawn from the generated values."""
    identifiers = [
        row[0]
        for row in conn.execute(
            text(
                "SELECT code FROM idx_token t JOIN search_param_ids p ON p.param_id = t.param_id "
                "WHERE p.res_type = 'Patient' AND p.param = 'identifier' AND t.system = :s"
            ),
            {"s": RESIDENT_ID_SYSTEM},
        ).fetchmany(2000)
    ]
    codes = [o[0] for o in OBSERVATIONS]
    common = [o[0] for o in OBSERVATIONS if o[4] >= 8]
    rare = ["3016-3", "14682-9", "59408-5"]

    def month(rng: random.Random) -> tuple[str, str]:
        first = date(2020 + rng.randrange(6), rng.randrange(1, 13), 1)
        following = (first + timedelta(days=32)).replace(day=1)
        return f"ge{first.isoformat()}", f"lt{following.isoformat()}"

    return {
        "identifier (conditional create)": lambda r: (
            "Patient",
            [("identifier", f"{RESIDENT_ID_SYSTEM}|{r.choice(identifiers)}")],
        ),
        "token+patient": lambda r: (
            "Observation",
            [("patient", "Patient/" + _pid(r, patients)), ("code", f"{LOINC}|{r.choice(codes)}")],
        ),
        "token+date range": lambda r: (
            "Observation",
            [("code", f"{LOINC}|{r.choice(codes)}"), *[("date", v) for v in month(r)]],
        ),
        "string prefix (name)": lambda r: ("Patient", [("name", r.choice(SURNAMES) + r.choice(GIVEN))]),
        "string prefix broad (family, total)": lambda r: ("Patient", [("family", r.choice(SURNAMES[:10]))]),
        "chained (subject:Patient.identifier)": lambda r: (
            "Observation",
            [("subject:Patient.identifier", f"{RESIDENT_ID_SYSTEM}|{r.choice(identifiers)}")],
        ),
        "chained (subject:Patient.name + code)": lambda r: (
            "Observation",
            [
                ("subject:Patient.name", r.choice(SURNAMES) + r.choice(GIVEN) + r.choice(GIVEN)),
                ("code", r.choice(codes)),
            ],
        ),
        "_include": lambda r: (
            "Observation",
            [("patient", "Patient/" + _pid(r, patients)), ("_include", "Observation:subject")],
        ),
        "broad code-only, total": lambda r: ("Observation", [("code", f"{LOINC}|{r.choice(common)}")]),
        "broad code-only, _count=0": lambda r: ("Observation", [("code", r.choice(common)), ("_count", "0")]),
        "broad value-quantity gt": lambda r: ("Observation", [("value-quantity", f"gt{r.randrange(150, 175)}")]),
        "broad _has": lambda r: (
            "Patient",
            [("_has:Observation:subject:code", r.choice(rare)), ("gender", r.choice(("male", "female")))],
        ),
        "sort by birthdate": lambda r: ("Patient", [("family", r.choice(SURNAMES[10:40])), ("_sort", "birthdate")]),
    }


def run_search(conn: Connection, res_type: str, params: list[tuple[str, str]]) -> int:
    request = parse_request(_REGISTRY, (res_type,), params)
    page = search(conn, request, **_COUNT_LIMIT)
    extra = included(conn, page.hits, request.includes, limit=1000)
    return len(page.hits) + len(extra)


_REGISTRY = default_registry()
# what the API passes (HIE_SEARCH_COUNT_LIMIT); code from before the bound counts everything
_COUNT_LIMIT = (
    {"count_limit": Settings().search_count_limit} if "count_limit" in inspect.signature(search).parameters else {}
)


def measure(args: argparse.Namespace) -> None:
    engine = engine_for(args.url)
    rng = random.Random(args.seed + 1)
    with engine.connect() as conn:
        patients = conn.execute(text("SELECT count(*) FROM resources WHERE res_type = 'Patient'")).scalar_one()
        total = conn.execute(text("SELECT count(*) FROM resources")).scalar_one()
        rows = sum(
            conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one()
            for t in ("idx_token", "idx_string", "idx_date", "idx_quantity", "idx_reference")
        )
        print(f"{engine.dialect.name}: {total:,} resources ({patients:,} Patients), {rows:,} index rows")
        chosen = searches(conn, patients)
        print(f"{'search':42} {'p50 ms':>9} {'p99 ms':>9} {'max ms':>9}  results")
        for name, make in chosen.items():
            if args.only and args.only not in name:
                continue
            res_type, params = make(rng)
            run_search(conn, res_type, params)  # warm-up
            times, sizes = [], []
            for _ in range(args.runs):
                res_type, params = make(rng)
                started = time.perf_counter()
                sizes.append(run_search(conn, res_type, params))
                times.append((time.perf_counter() - started) * 1000)
            times.sort()
            p99 = times[min(len(times) - 1, round(0.99 * (len(times) - 1)))]
            print(
                f"{name:42} {statistics.median(times):9.1f} {p99:9.1f} {times[-1]:9.1f}  {statistics.median(sizes):.0f}"
            )
            if args.explain:
                explain(conn, res_type, params)
            conn.rollback()


def read(args: argparse.Namespace) -> None:
    """W3 at this archive's size: read by id of random resources over HTTP from ``hie serve --workers N``."""
    import asyncio
    import tempfile

    from bench.regional.load import expect, run_clients, use_token
    from bench.regional.server import Database, Server, load_average

    workdir = Path(tempfile.mkdtemp(prefix="hie-read-scale-"))
    export_dir = workdir / "export"
    export_dir.mkdir()
    if make_url(args.url).get_backend_name() == "sqlite":
        database = Database("sqlite", args.url, recreate=False)
    else:
        database = Database.postgres(args.url, recreate=False)
    database.prepare(export_dir)  # `hie db upgrade`: the archive at the served code's schema
    engine = engine_for(args.url)
    with engine.connect() as conn:
        total = conn.execute(text("SELECT count(*) FROM resources WHERE NOT deleted")).scalar_one()
        rng = random.Random(args.seed + 3)
        # A random sample of keys, then their ids: every read is a different resource, spread over the archive.
        top = conn.execute(text("SELECT max(res_pk) FROM resources")).scalar_one()
        keys = sorted({rng.randint(1, top) for _ in range(args.reads * 2)})
        rows = conn.execute(
            text("SELECT res_type, res_id FROM resources WHERE res_pk IN :keys AND NOT deleted").bindparams(
                bindparam("keys", expanding=True)
            ),
            {"keys": keys},
        ).all()
    engine.dispose()
    paths = [f"{t}/{i}" for t, i in rows]
    rng.shuffle(paths)
    paths = paths[: args.reads]
    use_token(database.bench_token(export_dir))
    server = Server(database, args.workers, workdir / "server.log", export_dir, auth=True)
    server.start()
    try:
        print(f"{database.describe()}: {total:,} resources; hie serve --workers {args.workers}; load {load_average()}")
        print(f"{'clients':>7} {'reads':>6} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'failed':>6}")
        for clients in (int(c) for c in args.clients.split(",")):

            async def send(client, i: int):  # type: ignore[no-untyped-def]
                return expect(200, await client.get(paths[i]))

            recorder = asyncio.run(
                run_clients(server.base, send, total=len(paths), clients=clients, label=f"W3 ×{clients}")
            )
            print(
                f"{clients:7} {len(recorder.latencies):6} {recorder.rate:8.0f} {recorder.ms(50):8.1f} "
                f"{recorder.ms(99):8.1f} {len(recorder.failures):6}"
            )
    finally:
        server.stop()


def explain(conn: Connection, res_type: str, params: list[tuple[str, str]]) -> None:
    statements: list[tuple[str, Any]] = []

    def record(_conn, _cursor, statement, parameters, _context, _many) -> None:  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith(("SELECT", "WITH")):
            statements.append((statement, parameters))

    event.listen(conn, "before_cursor_execute", record)
    try:
        run_search(conn, res_type, params)
    finally:
        event.remove(conn, "before_cursor_execute", record)
    print(f"    {res_type}?{'&'.join(f'{k}={v}' for k, v in params)}")
    prefix = "EXPLAIN (ANALYZE, BUFFERS) " if conn.dialect.name == "postgresql" else "EXPLAIN QUERY PLAN "
    for statement, parameters in statements:
        for line in conn.exec_driver_sql(prefix + statement, parameters).all():
            print("    | " + " ".join(str(c) for c in line))
        print("    +")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("phase", choices=("load", "measure", "read"))
    parser.add_argument("--url", default=DEFAULT_URL, help=f"database URL (default {DEFAULT_URL})")
    parser.add_argument("--patients", type=int, default=100_000)
    parser.add_argument("--observations", type=int, default=8, help="Observations per Patient on average")
    parser.add_argument("--revision", default="head", help="migrate the scratch database to this revision")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--only", help="measure only searches whose name contains this")
    parser.add_argument("--explain", action="store_true")
    parser.add_argument("--reads", type=int, default=5000, help="read: requests per concurrency")
    parser.add_argument("--clients", default="1,8", help="read: concurrencies, comma-separated")
    parser.add_argument("--workers", type=int, default=2, help="read: hie serve workers")
    args = parser.parse_args()
    {"load": load, "measure": measure, "read": read}[args.phase](args)


if __name__ == "__main__":
    main()
