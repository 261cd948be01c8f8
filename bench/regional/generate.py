"""Seed-deterministic records of Wuzhou residents: one transaction Bundle per resident, or NDJSON per type.

Each resident (from the MPI test set's households: Chinese names, GB 11643-1999 resident ID numbers, cards,
townships and villages) gets a Patient with the MRNs of the institutions that treated them, an insurance
Coverage, and encounters at those institutions with ICD-10 diagnoses, LOINC vitals and labs in UCUM units,
MedicationRequests (ATC) and a Claim each. Resident ``i`` is the same for a given seed whatever the size.

    python -m bench.regional.generate --residents 1000 --out DIR [--seed 0] [--bundles]
"""

from __future__ import annotations

import argparse
import random
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson

from bench.regional.clinical import ATC, DIAGNOSES, ICD10, LABS, LOINC, MEDICINES, UCUM, VITALS, Measure
from ehr_archive.identifiers import IDENTIFIER_SYSTEMS, RESIDENT_ID_SYSTEM, WUZHOU_REGIONS, mrn_system
from tests.ehr_archive.mpi_dataset import Resident, generate_dataset

__all__ = [
    "INSTITUTIONS",
    "RegionalData",
    "ResidentRecord",
    "institutions",
    "institutions_batch",
    "write_ndjson",
]

_CHINA = timezone(timedelta(hours=8))
_NAMESPACE = uuid.UUID("6f1c1f7e-3c2a-5b8e-9d41-2f0b7c4e9a10")
_V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
_ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
_OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
_CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
_CONDITION_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
_CONDITION_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
_CLAIM_TYPE = "http://terminology.hl7.org/CodeSystem/claim-type"
_PRIORITY = "http://terminology.hl7.org/CodeSystem/processpriority"
_ORG_TYPE = "http://terminology.hl7.org/CodeSystem/organization-type"
_SERVICE = "https://hie.wuzhou.gov.cn/fhir/CodeSystem/service-item"
_POSTCODES = {
    "450403": "543000",
    "450405": "543003",
    "450406": "543100",
    "450421": "543100",
    "450422": "543300",
    "450423": "546700",
    "450481": "543200",
}
_FIRST_DAY = date(2023, 1, 1)
_LAST_DAY = date(2025, 6, 30)

# The region's institutions: the MPI test set's `wz-org-NNN` ids (their MRN systems), with real-style names.
_CITY_HOSPITALS = (
    "梧州市红十字会医院",
    "梧州市工人医院",
    "梧州市人民医院",
    "梧州市中医医院",
    "梧州市妇幼保健院",
    "梧州市第三人民医院",
    "梧州市中西医结合医院",
    "梧州市南山医院",
)
_COUNTY_HOSPITALS = {
    "450421": "苍梧县人民医院",
    "450422": "藤县人民医院",
    "450423": "蒙山县人民医院",
    "450481": "岑溪市人民医院",
    "450406": "龙圩区人民医院",
}
_TOWNSHIP_CENTRES = (
    ("450422", "塘步镇"),
    ("450422", "太平镇"),
    ("450481", "糯垌镇"),
    ("450481", "归义镇"),
    ("450421", "石桥镇"),
    ("450421", "六堡镇"),
    ("450423", "西河镇"),
    ("450406", "大坡镇"),
    ("450405", "倒水镇"),
    ("450403", "夏郢镇"),
)
INSURER_ID = "wz-healthcare-security"


@dataclass(frozen=True)
class Institution:
    org_id: str
    name: str
    district: str


def _institutions() -> tuple[Institution, ...]:
    rows = [Institution(f"wz-org-{n + 1:03d}", name, "450403") for n, name in enumerate(_CITY_HOSPITALS)]
    for code, name in _COUNTY_HOSPITALS.items():
        rows.append(Institution(f"wz-org-{len(rows) + 1:03d}", name, code))
    for code, town in _TOWNSHIP_CENTRES:
        name = f"{WUZHOU_REGIONS[code]}{town}卫生院"
        rows.append(Institution(f"wz-org-{len(rows) + 1:03d}", name, code))
    return tuple(rows)


INSTITUTIONS = _institutions()


def institutions() -> list[dict[str, Any]]:
    """The Organizations: institutions and the city's healthcare security bureau (the payer of claims)."""
    orgs = [
        {
            "resourceType": "Organization",
            "id": inst.org_id,
            "active": True,
            "type": [{"coding": [{"system": _ORG_TYPE, "code": "prov", "display": "Healthcare Provider"}]}],
            "name": inst.name,
            "address": [_address_of(inst.district, "")],
        }
        for inst in INSTITUTIONS
    ]
    orgs.append(
        {
            "resourceType": "Organization",
            "id": INSURER_ID,
            "active": True,
            "type": [{"coding": [{"system": _ORG_TYPE, "code": "pay", "display": "Payer"}]}],
            "name": "梧州市医疗保障局",
            "address": [_address_of("450403", "")],
        }
    )
    return orgs


def institutions_batch() -> bytes:
    """A batch Bundle that PUTs the Organizations of :func:`institutions` under their fixed ids."""
    entries = [
        {"resource": org, "request": {"method": "PUT", "url": f"Organization/{org['id']}"}} for org in institutions()
    ]
    return orjson.dumps({"resourceType": "Bundle", "type": "batch", "entry": entries})


def _address_of(district: str, line: str) -> dict[str, Any]:
    name = WUZHOU_REGIONS[district]
    address: dict[str, Any] = {"use": "work" if not line else "home", "text": f"广西壮族自治区梧州市{name}{line}"}
    if line:
        address["line"] = [line]
    return address | {
        "city": "梧州市",
        "district": name,
        "state": "广西壮族自治区",
        "postalCode": _POSTCODES[district],
        "country": "CN",
    }


@dataclass
class ResidentRecord:
    """One resident's resources with their final ids; references are ``Type/id``."""

    index: int
    resources: list[dict[str, Any]]

    @property
    def patient(self) -> dict[str, Any]:
        return self.resources[0]

    def transaction(self) -> dict[str, Any]:
        """The record as a transaction Bundle: no ids, ``urn:uuid`` full URLs and references, POST entries."""
        ids = {f"{r['resourceType']}/{r['id']}": f"urn:uuid:{r['id']}" for r in self.resources}
        entries = []
        for resource in self.resources:
            body = _rewrite(resource, ids)
            full_url = ids[f"{resource['resourceType']}/{resource['id']}"]
            del body["id"]
            entries.append(
                {"fullUrl": full_url, "resource": body, "request": {"method": "POST", "url": resource["resourceType"]}}
            )
        return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def _rewrite(node: Any, ids: dict[str, str]) -> Any:
    if isinstance(node, dict):
        out = {k: _rewrite(v, ids) for k, v in node.items()}
        ref = out.get("reference")
        if isinstance(ref, str) and ref in ids:
            out["reference"] = ids[ref]
        return out
    if isinstance(node, list):
        return [_rewrite(v, ids) for v in node]
    return node


class RegionalData:
    """``residents`` residents of ``seed``; with ``heavy`` > 0 resident 0 has a record of about that many resources."""

    def __init__(self, residents: int, *, seed: int = 0, heavy: int = 0) -> None:
        self.seed = seed
        self.heavy = heavy
        self.people: tuple[Resident, ...] = generate_dataset(residents=residents, seed=seed).residents

    def __len__(self) -> int:
        return len(self.people)

    def records(self, indexes: Iterable[int]) -> Iterator[ResidentRecord]:
        for i in indexes:
            yield self.record(i)

    def record(self, index: int) -> ResidentRecord:
        rng = random.Random(f"{self.seed}:{index}")
        return _RecordBuilder(self.seed, index, self.people[index], rng).build(self.heavy if index == 0 else 0)


class _RecordBuilder:
    def __init__(self, seed: int, index: int, person: Resident, rng: random.Random) -> None:
        self.seed, self.index, self.person, self.rng = seed, index, person, rng
        self.resources: list[dict[str, Any]] = []
        self.serial = 0
        local = [i for i in INSTITUTIONS if i.district == person.district]
        city = [i for i in INSTITUTIONS if i.org_id <= "wz-org-008"]
        self.providers = rng.sample(local, min(len(local), 1)) + rng.sample(city, rng.choice((1, 1, 2)))

    def _id(self, kind: str) -> str:
        self.serial += 1
        return str(uuid.uuid5(_NAMESPACE, f"{self.seed}:{self.index}:{kind}:{self.serial}"))

    def _add(self, resource: dict[str, Any]) -> str:
        resource["id"] = self._id(resource["resourceType"])
        self.resources.append(resource)
        return f"{resource['resourceType']}/{resource['id']}"

    def build(self, heavy: int) -> ResidentRecord:
        rng, person = self.rng, self.person
        patient = self._add(self._patient())
        coverage = self._add(self._coverage(patient))
        age = (_LAST_DAY - person.birth_date).days // 365
        chronic = [d for d in DIAGNOSES if d.chronic and rng.random() < d.weight / 100 * (0.4 + age / 60)]
        visits = min(2 + len(chronic) * 2, max(1, round(rng.expovariate(1 / (1.5 + age / 30)))))
        for _ in range(visits):
            self._encounter(patient, coverage, chronic)
        while len(self.resources) < heavy:
            self._wearable_reading(patient)
        return ResidentRecord(self.index, self.resources)

    def _patient(self) -> dict[str, Any]:
        p, rng = self.person, self.rng
        identifiers = [
            {
                "use": "official",
                "type": _concept(_V2_0203, "NNCHN"),
                "system": RESIDENT_ID_SYSTEM,
                "value": p.resident_id,
            }
        ]
        for inst in self.providers:
            identifiers.append(
                {
                    "use": "usual",
                    "type": _concept(_V2_0203, "MR"),
                    "system": mrn_system(inst.org_id),
                    "value": f"{inst.org_id[-3:]}{rng.randrange(10**7):07d}",
                    "assigner": {"reference": f"Organization/{inst.org_id}"},
                }
            )
        for key, value in sorted(p.cards.items()):
            system = next(s for s in IDENTIFIER_SYSTEMS.values() if s.key == key)
            identifiers.append({"type": _concept(_V2_0203, system.type_code), "system": system.uri, "value": value})
        line = f"{p.township}{p.village}{p.house}"
        patient: dict[str, Any] = {
            "resourceType": "Patient",
            "identifier": identifiers,
            "active": True,
            "name": [{"use": "official", "text": p.surname + p.given, "family": p.surname, "given": [p.given]}],
            "gender": p.sex,
            "birthDate": p.birth_date.isoformat(),
            "address": [_address_of(p.district, line)],
            "managingOrganization": {"reference": f"Organization/{self.providers[0].org_id}"},
        }
        phones = [{"system": "phone", "value": n, "use": "mobile"} for n in p.phones]
        phones += [{"system": "phone", "value": n, "use": "home"} for n in p.family_phones[:1]]
        if phones:
            patient["telecom"] = phones
        return patient

    def _coverage(self, patient: str) -> dict[str, Any]:
        employee = "social-security-card" in self.person.cards
        return {
            "resourceType": "Coverage",
            "status": "active",
            "type": {
                "coding": [{"system": _ACT_CODE, "code": "PUBLICPOL", "display": "public healthcare"}],
                "text": "城镇职工基本医疗保险" if employee else "城乡居民基本医疗保险",
            },
            "beneficiary": {"reference": patient},
            "payor": [{"reference": f"Organization/{INSURER_ID}"}],
            "period": {"start": "2025-01-01", "end": "2025-12-31"},
        }

    def _when(self) -> datetime:
        day = _FIRST_DAY + timedelta(days=self.rng.randrange((_LAST_DAY - _FIRST_DAY).days))
        return datetime(day.year, day.month, day.day, 8, 0, tzinfo=_CHINA) + timedelta(minutes=self.rng.randrange(600))

    def _encounter(self, patient: str, coverage: str, chronic: list[Any]) -> None:
        rng = self.rng
        inst = rng.choice(self.providers)
        org = f"Organization/{inst.org_id}"
        start = self._when()
        inpatient = rng.random() < 0.08
        end = start + (timedelta(days=rng.randint(3, 12)) if inpatient else timedelta(minutes=rng.randint(10, 90)))
        acute = [d for d in DIAGNOSES if not d.chronic]
        diagnoses = ([rng.choice(chronic)] if chronic and rng.random() < 0.7 else []) + (
            [rng.choices(acute, weights=[d.weight for d in acute])[0]] if rng.random() < 0.6 or not chronic else []
        )
        encounter = self._add(
            {
                "resourceType": "Encounter",
                "status": "finished",
                "class": {
                    "system": _ACT_CODE,
                    "code": "IMP" if inpatient else "AMB",
                    "display": "inpatient encounter" if inpatient else "ambulatory",
                },
                "type": [{"text": "住院" if inpatient else "门诊"}],
                "subject": {"reference": patient},
                "period": {"start": _instant(start), "end": _instant(end)},
                "reasonCode": [_concept(ICD10, d.code, d.display) for d in diagnoses],
                "serviceProvider": {"reference": org},
            }
        )
        conditions = []
        for diagnosis in diagnoses:
            conditions.append(
                self._add(
                    {
                        "resourceType": "Condition",
                        "clinicalStatus": _concept(_CONDITION_CLINICAL, "active" if diagnosis.chronic else "resolved"),
                        "verificationStatus": _concept(_CONDITION_VERIFICATION, "confirmed"),
                        "category": [_concept(_CONDITION_CATEGORY, "encounter-diagnosis")],
                        "code": _concept(ICD10, diagnosis.code, diagnosis.display),
                        "subject": {"reference": patient},
                        "encounter": {"reference": encounter},
                        "onsetDateTime": _instant(
                            start - timedelta(days=rng.randint(1, 2000 if diagnosis.chronic else 5))
                        ),
                        "recordedDate": _instant(start),
                    }
                )
            )
        when = start + timedelta(minutes=5)
        self._blood_pressure(patient, encounter, org, when)
        for code in rng.sample(sorted(VITALS), rng.randint(1, 3)):
            self._measure(VITALS[code], patient, encounter, org, when)
        for code in sorted({lab for d in diagnoses for lab in d.labs}):
            self._measure(LABS[code], patient, encounter, org, when + timedelta(hours=1))
        fee = rng.randint(1500, 8000) + (rng.randint(200000, 900000) if inpatient else 0)
        items = [("registration" if not inpatient else "ward", fee)]
        for diagnosis in diagnoses:
            for atc in diagnosis.medicines[: rng.randint(0, len(diagnosis.medicines))]:
                self._medication(MEDICINES[atc], patient, encounter, org, start, diagnosis.chronic)
                items.append((atc, rng.randint(800, 30000)))
        self._claim(patient, coverage, encounter, org, conditions, start, items)

    def _blood_pressure(self, patient: str, encounter: str | None, org: str, when: datetime) -> None:
        systolic, diastolic = round(self.rng.gauss(136, 18)), round(self.rng.gauss(83, 10))
        self._add(
            {
                **_observation_base(
                    "vital-signs", "85354-9", "Blood pressure panel with all children optional", "血压"
                ),
                **_context(patient, encounter, org, when),
                "component": [
                    {"code": _concept(LOINC, "8480-6", "Systolic blood pressure"), "valueQuantity": _mmhg(systolic)},
                    {"code": _concept(LOINC, "8462-4", "Diastolic blood pressure"), "valueQuantity": _mmhg(diastolic)},
                ],
            }
        )

    def _measure(self, measure: Measure, patient: str, encounter: str | None, org: str, when: datetime) -> None:
        value = round(max(measure.sd, self.rng.gauss(measure.mean, measure.sd)), measure.decimals)
        quantity = {
            "value": value if measure.decimals else int(value),
            "unit": measure.unit,
            "system": UCUM,
            "code": measure.ucum,
        }
        self._add(
            {
                **_observation_base(measure.category, measure.code, measure.display, measure.text),
                **_context(patient, encounter, org, when),
                "valueQuantity": quantity,
            }
        )

    def _wearable_reading(self, patient: str) -> None:
        """Home readings of an eldercare wearable: heart rate and blood pressure, no encounter."""
        when = self._when()
        org = f"Organization/{self.providers[0].org_id}"
        if self.rng.random() < 0.6:
            self._measure(VITALS["8867-4"], patient, None, org, when)
        else:
            self._blood_pressure(patient, None, org, when)

    def _medication(
        self, medicine: Any, patient: str, encounter: str, org: str, start: datetime, chronic: bool
    ) -> None:
        self._add(
            {
                "resourceType": "MedicationRequest",
                "status": "active" if chronic else "completed",
                "intent": "order",
                "medicationCodeableConcept": _concept(ATC, medicine.atc, medicine.display),
                "subject": {"reference": patient},
                "encounter": {"reference": encounter},
                "authoredOn": _instant(start + timedelta(minutes=20)),
                "requester": {"reference": org},
                "dosageInstruction": [{"text": medicine.dose}],
                "dispenseRequest": {"expectedSupplyDuration": _duration(30 if chronic else 5)},
            }
        )

    def _claim(
        self,
        patient: str,
        coverage: str,
        encounter: str,
        org: str,
        conditions: list[str],
        start: datetime,
        items: list[tuple[str, int]],
    ) -> None:
        total = sum(fen for _, fen in items)
        self._add(
            {
                "resourceType": "Claim",
                "status": "active",
                "type": _concept(_CLAIM_TYPE, "institutional" if items[0][0] == "ward" else "professional"),
                "use": "claim",
                "patient": {"reference": patient},
                "created": _instant(start + timedelta(hours=2)),
                "provider": {"reference": org},
                "priority": _concept(_PRIORITY, "normal"),
                "insurer": {"reference": f"Organization/{INSURER_ID}"},
                "diagnosis": [
                    {"sequence": n, "diagnosisReference": {"reference": ref}} for n, ref in enumerate(conditions, 1)
                ],
                "insurance": [{"sequence": 1, "focal": True, "coverage": {"reference": coverage}}],
                "item": [
                    {
                        "sequence": n,
                        "productOrService": _concept(ATC if code[0].isupper() else _SERVICE, code),
                        "encounter": [{"reference": encounter}],
                        "net": _money(fen),
                    }
                    for n, (code, fen) in enumerate(items, 1)
                ],
                "total": _money(total),
            }
        )


def _concept(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    coding = {"system": system, "code": code}
    if display:
        coding["display"] = display
    return {"coding": [coding]}


def _observation_base(category: str, code: str, display: str, text: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "category": [_concept(_OBS_CATEGORY, category)],
        "code": {"coding": [{"system": LOINC, "code": code, "display": display}], "text": text},
    }


def _context(patient: str, encounter: str | None, org: str, when: datetime) -> dict[str, Any]:
    context: dict[str, Any] = {"subject": {"reference": patient}}
    if encounter:
        context["encounter"] = {"reference": encounter}
    return context | {"effectiveDateTime": _instant(when), "performer": [{"reference": org}]}


def _mmhg(value: int) -> dict[str, Any]:
    return {"value": value, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"}


def _money(fen: int) -> dict[str, Any]:
    """Money in yuan with two decimals (FHIR decimal), from integer fen."""
    yuan, cents = divmod(fen, 100)
    return {"value": float(f"{yuan}.{cents:02d}"), "currency": "CNY"}


def _duration(days: int) -> dict[str, Any]:
    return {"value": days, "unit": "天", "system": UCUM, "code": "d"}


def _instant(when: datetime) -> str:
    return when.isoformat(timespec="seconds")


def write_ndjson(records: Iterable[ResidentRecord], out: Path, *, with_institutions: bool = True) -> dict[str, int]:
    """NDJSON files, one per resource type (``Type.ndjson``), under ``out``; returns the count per type."""
    out.mkdir(parents=True, exist_ok=True)
    handles: dict[str, Any] = {}
    counts: dict[str, int] = {}
    try:

        def put(resource: dict[str, Any]) -> None:
            res_type = resource["resourceType"]
            if res_type not in handles:
                handles[res_type] = (out / f"{res_type}.ndjson").open("ab")
            handles[res_type].write(orjson.dumps(resource) + b"\n")
            counts[res_type] = counts.get(res_type, 0) + 1

        if with_institutions:
            for org in institutions():
                put(org)
        for record in records:
            for resource in record.resources:
                put(resource)
    finally:
        for handle in handles.values():
            handle.close()
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--residents", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--heavy", type=int, default=0, help="resident 0 gets a record of about this many resources")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--bundles", action="store_true", help="write one transaction Bundle per resident instead")
    args = parser.parse_args(argv)
    data = RegionalData(args.residents, seed=args.seed, heavy=args.heavy)
    if args.bundles:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "institutions.json").write_bytes(institutions_batch())
        for record in data.records(range(len(data))):
            (args.out / f"resident-{record.index:07d}.json").write_bytes(orjson.dumps(record.transaction()))
        print(f"{len(data)} transaction Bundles written to {args.out}")
        return 0
    counts = write_ndjson(data.records(range(len(data))), args.out)
    print(
        f"{sum(counts.values())} resources written to {args.out}: " + ", ".join(f"{k} {v}" for k, v in counts.items())
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
