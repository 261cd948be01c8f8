"""What a caller may read, as SQL conditions on a ``resources`` row: added to every query, never after paging.

An institution reads what it owns (``resources.owner_org``). It reads another owner's resource when the
resource is about no resident, or when every resident it is about (R4B Patient CompartmentDefinition, through
the reference index; a Patient is about itself) has consent rules (``consent_grants``, recorded on any record
the master patient index links to the same person) permitting this read now, as
:func:`fhir_server.access.consent.permits` decides: an applicable permit with no applicable deny at the same or a
deeper level. Deleted resources and their history are their owner's only. A resident's own app
(``Principal.patient``) reads that resident's record (every record the master patient index links to the same
person) and, outside the Patient compartment, the types open to residents. A client of neither reads only the
types open to residents. Provenance and AuditEvent about no resident are their owner's only.
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, ClassVar, NamedTuple

from sqlalchemy import (
    BigInteger,
    Boolean,
    Connection,
    Select,
    String,
    and_,
    bindparam,
    case,
    exists,
    false,
    func,
    literal,
    or_,
    select,
    true,
    union_all,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import ColumnElement, literal_column
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import BindParameter
from sqlalchemy.sql.visitors import InternalTraversal

from fhir_server import definitions
from fhir_server.auth.principal import Principal
from fhir_server.errors import not_found
from fhir_server.search.param_ids import ids_named, ids_of
from fhir_server.search.query import Restriction
from fhir_server.storage.tables import consent_grants, mpi_records, reference_index, resources, token_index

_ALIAS_PREFIX = {"consent_grants": "cg", "mpi_records": "mpi", "idx_reference": "ref", "idx_token": "tok"}
"""Aliases of the condition's own: names no search predicate uses (those are ``idx_token_3`` …)."""
OWNER_ONLY = frozenset({"Provenance", "AuditEvent"})
"""Types another institution reads only when they belong to a shared resident's record (never on their own)."""


@dataclass(frozen=True)
class Access:
    """What one request may read: the caller's institution, resident, stated purpose and the instant of the read."""

    org: str | None
    patient: str | None = None
    """Id of the Patient a resident-facing app acts for."""
    purpose: str | None = None
    at: int = field(default_factory=lambda: time.time_ns() // 1000)
    restricted: bool = True
    """False for the exchange and its clients (``Principal.exchange``): no institution or consent filter."""
    break_glass: bool = False
    """An emergency read: the consent rules are set aside (scopes still apply)."""
    client: str | None = None
    """The client reading (not part of the SQL: it names who a background job works for)."""

    @classmethod
    def of(cls, principal: Principal, *, break_glass: bool = False) -> Access:
        patient = principal.patient.split("/")[-1] if principal.patient else None
        return cls(
            org=principal.organization,
            patient=patient,
            purpose=principal.purpose_of_use,
            restricted=not principal.exchange,
            break_glass=break_glass,
            client=principal.client_id,
        )

    def to_json(self) -> str | None:
        """What a background job needs to apply the same rules later (None: the exchange's own work)."""
        if not self.restricted:
            return None if self.client is None else json.dumps({"exchange": True, "client": self.client})
        return json.dumps({"org": self.org, "patient": self.patient, "purpose": self.purpose, "client": self.client})

    @classmethod
    def from_json(cls, text: str | None) -> Access:
        """The access of :meth:`to_json`, evaluated at the time it is read back (consent as of now)."""
        if text is None:
            return UNRESTRICTED
        saved = json.loads(text)
        if saved.get("exchange"):  # a client acting for the exchange: no institution or consent filter
            return cls(org=None, restricted=False, client=saved.get("client"))
        return cls(org=saved["org"], patient=saved["patient"], purpose=saved["purpose"], client=saved.get("client"))

    @property
    def restriction(self) -> Restriction | None:
        """The condition builder for queries, None when nothing is filtered (the exchange, break-glass)."""
        if not self.restricted or self.break_glass:
            return None
        return self.condition

    def condition(self, table: Any, type_name: str | None) -> ColumnElement[bool]:
        """``owner_org = :org OR <shared with this caller now> OR <the resident's own record>``."""
        shape = self._shape(type_name)
        values = self._values()
        binds = tuple(
            bindparam(f"access_{name}", values[name], type_=_bind_type(name), unique=True) for name in shape.bound()
        )
        return AccessCondition(table, shape, binds)

    def readable(self, conn: Connection, res_type: str, res_pk: int, owner_org: str | None) -> bool:
        """Whether the resource ``res_pk`` (already found, owned by ``owner_org``) may be read: what
        :meth:`condition` decides, without SQL when the caller owns it or is not filtered, else by one statement
        prepared once per shape of the condition (its values bound, nothing built for the read)."""
        if not self.restricted or self.break_glass:
            return True
        if self.org is not None and owner_org == self.org:
            return True
        shape = self._shape(res_type)
        values = self._values()
        params: dict[str, Any] = {f"access_{name}": values[name] for name in shape.bound()}
        params["access_pk"] = res_pk
        return bool(conn.execute(_row_readable(shape), params).scalar())

    def readable_column(self, statement: Select[Any], res_type: str) -> tuple[Select[Any], dict[str, Any]] | None:
        """``statement`` (rows of ``resources`` of type ``res_type``) with a column ``readable`` added: what
        :meth:`condition` decides for each row, so that a read by id fetches and judges in one statement. The
        statement is built once per statement and shape of the condition; the values to bind come with it.
        None when nothing is filtered (the exchange, break-glass)."""
        if not self.restricted or self.break_glass:
            return None
        shape = self._shape(res_type)
        values = self._values()
        return _with_readable(statement, shape), {f"access_{name}": values[name] for name in shape.bound()}

    def _shape(self, type_name: str | None) -> _Shape:
        return _Shape(type_name, self.org is not None, self.patient is not None, self.purpose is not None)

    def _values(self) -> dict[str, Any]:
        return {"org": self.org, "patient": self.patient, "purpose": self.purpose, "at": self.at}


UNRESTRICTED = Access(org=None, restricted=False)
"""The exchange itself: every resource."""


def check_readable(conn: Connection, access: Access, res_type: str, res_id: str) -> None:
    """404, worded like a missing resource, when the resource exists but is not the caller's to read (one
    statement: the row and the decision together)."""
    judged = access.readable_column(_ROW, res_type)
    if judged is None:
        return
    statement, params = judged
    found = conn.execute(statement, {**params, "row_type": res_type, "row_id": res_id}).first()
    if found is not None and not found.readable:
        raise not_found(f"{res_type}/{res_id} is not known to this server.")


_ROW = select(resources.c.res_pk).where(
    resources.c.res_type == bindparam("row_type"), resources.c.res_id == bindparam("row_id")
)
"""The row of one resource, built once."""


_BIGINT, _STRING = BigInteger(), String()
"""One instance of each bind type: SQLAlchemy memoizes a type's cache key on the instance, so a fresh instance per
read would have its key derived again (the class's constructor arguments inspected) for every search."""


def _bind_type(name: str) -> Any:
    return _BIGINT if name == "at" else _STRING


@lru_cache(maxsize=1024)
def _row_readable(shape: _Shape) -> Any:
    """Whether one resource row (``:access_pk``) meets the condition of this shape: built once per shape, so
    SQLAlchemy computes its cache key once; each read binds only its values."""
    binds = tuple(bindparam(f"access_{name}", type_=_bind_type(name)) for name in shape.bound())
    r = resources
    return select(AccessCondition(r, shape, binds)).where(r.c.res_pk == bindparam("access_pk"))


@lru_cache(maxsize=1024)
def _with_readable(statement: Select[Any], shape: _Shape) -> Select[Any]:
    """``statement`` and the condition of this shape on its ``resources`` row as the column ``readable`` (1 or 0):
    built once, so SQLAlchemy computes its cache key once; each read binds only its values. A row the condition
    leaves undecided (SQL NULL) is not readable. In ``CASE WHEN`` the condition stops at the first alternative that
    holds (SQLite evaluates every operand of an ``OR`` in a result column: the owner's read would pay for the
    consent lookups)."""
    binds = tuple(bindparam(f"access_{name}", type_=_bind_type(name)) for name in shape.bound())
    decided = case((AccessCondition(resources, shape, binds), literal_column("1")), else_=literal_column("0"))
    return statement.add_columns(decided.label("readable"))


class _Shape(NamedTuple):
    """What the SQL of a condition depends on besides the values it compares against."""

    type_name: str | None
    org: bool
    patient: bool
    purpose: bool

    def bound(self) -> list[str]:
        """The values a condition of this shape compares against, in the order of its bind parameters."""
        present = {"org": self.org, "patient": self.patient, "purpose": self.purpose, "at": self.org}
        return [name for name, used in present.items() if used]


class AccessCondition(ColumnElement[bool]):
    """:meth:`Access.condition` as one SQL element whose cache key is its shape: the conditions are built when a
    statement is first compiled, not for every read (building them cost more than the rest of a search)."""

    __visit_name__ = "access_condition"
    inherit_cache = True
    _traverse_internals: ClassVar[list[tuple[str, InternalTraversal]]] = [
        ("table", InternalTraversal.dp_clauseelement),
        ("shape", InternalTraversal.dp_plain_obj),
        ("binds", InternalTraversal.dp_clauseelement_tuple),
    ]
    type = Boolean()

    def __init__(self, table: Any, shape: _Shape, binds: tuple[BindParameter[Any], ...]) -> None:
        self.table = table
        self.shape = shape
        self.binds = binds

    @property
    def _from_objects(self) -> list[Any]:
        return [self.table]

    def self_group(self, against: Any = None) -> AccessCondition:
        return self  # rendered in parentheses


_PLACEHOLDERS = {name: f"[[access:{name}]]" for name in ("org", "patient", "purpose", "at")}


@compiles(AccessCondition)
def _compile_access_condition(element: AccessCondition, compiler: SQLCompiler, **kw: Any) -> str:
    """Built only when a statement is compiled; SQLAlchemy's statement cache keeps the SQL for the next read."""
    built = _Condition(element.shape).build(element.table)
    sql = compiler.process(built, **{**kw, "literal_binds": True})
    for name, bind in zip(element.shape.bound(), element.binds, strict=True):
        sql = sql.replace(_PLACEHOLDERS[name], compiler.process(bind, **kw))
    return f"({sql})"


class _Condition:
    """Builds the SQL of a condition of one shape, with placeholders where a read's values go."""

    def __init__(self, shape: _Shape) -> None:
        self.shape = shape
        self.type_name = shape.type_name
        self.org = literal_column(_PLACEHOLDERS["org"], String) if shape.org else None
        self.patient = literal_column(_PLACEHOLDERS["patient"], String) if shape.patient else None
        self.purpose = literal_column(_PLACEHOLDERS["purpose"], String) if shape.purpose else None
        self.at = literal_column(_PLACEHOLDERS["at"], BigInteger)
        self.aliases = itertools.count()

    def build(self, table: Any) -> ColumnElement[bool]:
        type_name = self.type_name
        r = table.c
        res_type = literal(type_name) if type_name else r.res_type
        shared: list[ColumnElement[bool]] = [r.deleted.is_(False)]
        link = _alias(reference_index, next(self.aliases))
        member = _member(link, type_name)
        if member is not None:
            others = self._permitted(link.c.target_id, r.res_pk, res_type)
            # in CASE, only a reference that makes the resource a member has its resident's consent looked up
            # (PostgreSQL would judge every reference to a Patient before joining the parameter ids)
            unconsented = case((member, ~others), else_=false()) if self.org is not None else member
            shared.append(
                ~exists()
                .where(
                    link.c.res_pk == r.res_pk,
                    link.c.target_type == "Patient",
                    link.c.target_id.is_not(None),
                    unconsented,
                )
                .correlate_except(link)
            )
        if type_name in (None, "Patient"):
            itself = self._permitted(r.res_id, r.res_pk, res_type)
            shared.append(itself if type_name == "Patient" else or_(r.res_type != "Patient", itself))
        if type_name is None or type_name in OWNER_ONLY:
            shared.append(self._about_a_resident(table))
        if self.org is None and self.patient is not None:
            shared.append(_open_to_residents(table, type_name))
        if self.org is None and self.patient is None:  # a client of no institution and no resident
            shared.append(_shared_with_everyone(table, type_name))
        alternatives = [and_(*shared)]
        if self.org is not None:
            alternatives.insert(0, r.owner_org == self.org)
        if self.patient is not None:
            alternatives.append(self._own_record(table))
        return or_(*alternatives)

    def _permitted(self, patient_id: Any, res_pk: Any, res_type: Any) -> ColumnElement[bool]:
        """A permit of the resident's consent applies and no deny at the same or a deeper level overrides it, decided
        in one pass over the applicable rules: the deepest permit is deeper than the deepest deny (depths start at
        -1; -2 stands for none, so the decision is never NULL and its negation is as definite).

        The resident's rules are those recorded on any of their records (:meth:`_records_of`), each record's found
        by an index probe on ``consent_grants (patient_id, effect)``.
        """
        if self.org is None:  # consent shares with institutions; a client of none gets nothing by it
            return false()
        ids = self._records_of(patient_id)
        grant = _alias(consent_grants, next(self.aliases))
        g = grant.c
        deepest = {
            effect: func.coalesce(func.max(case((g.effect == effect, g.depth))), literal_column("-2"))
            for effect in ("permit", "deny")
        }
        return (
            select(deepest["permit"] > deepest["deny"])
            .select_from(ids.join(grant, g.patient_id == ids.c.id))
            .where(*self._applies(grant, res_pk, res_type))
            .correlate_except(grant, ids)
            .scalar_subquery()
        )

    def _records_of(self, patient_id: Any) -> Any:
        """Every record of the resident ``patient_id`` is, as the master patient index links them now
        (``mpi_records``, docs/MPI.md): itself, its golden and the golden's records (a golden: itself and its
        records). A Patient the index does not know is only itself. As SQL: the golden (or the Patient itself) and
        the records linked to it, which include the Patient when the index knows it."""
        outer = patient_id.table
        mine = _alias(mpi_records, next(self.aliases))
        same = _alias(mpi_records, next(self.aliases))
        golden = select(mine.c.golden_id).where(mine.c.source_id == patient_id).correlate_except(mine)
        person = func.coalesce(golden.scalar_subquery(), patient_id)
        return union_all(
            select(person.label("id")).correlate(outer),
            select(same.c.source_id.label("id")).where(same.c.golden_id == person).correlate(outer),
        ).subquery(f"rec{next(self.aliases)}")

    def _applies(self, grant: Any, res_pk: Any, res_type: Any) -> list[ColumnElement[bool]]:
        """Every criterion a rule states, but the resident, matches this read (the SQL of :func:`consent.applies`)."""
        g = grant.c
        return [
            or_(g.org.is_(None), g.org == self.org),
            or_(g.res_type.is_(None), g.res_type == res_type),
            or_(g.purpose.is_(None), g.purpose == self.purpose) if self.purpose is not None else g.purpose.is_(None),
            or_(g.low.is_(None), g.low <= self.at),
            or_(g.high.is_(None), g.high >= self.at),
            or_(g.label_code.is_(None), _coded(res_pk, "_security", g.label_system, g.label_code, self.aliases)),
            or_(g.code.is_(None), _coded(res_pk, "code", g.code_system, g.code, self.aliases)),
        ]

    def _about_a_resident(self, table: Any) -> ColumnElement[bool]:
        """Records of writes and accesses (:data:`OWNER_ONLY`) are shared only as part of a resident's record."""
        r = table.c
        link = _alias(reference_index, next(self.aliases))
        member = _member(link, self.type_name)
        about = (
            exists().where(link.c.res_pk == r.res_pk, link.c.target_type == "Patient", member).correlate_except(link)
            if member is not None
            else false()
        )
        return about if self.type_name is not None else or_(r.res_type.not_in(OWNER_ONLY), about)

    def _own_record(self, table: Any) -> ColumnElement[bool]:
        r = table.c
        link = _alias(reference_index, next(self.aliases))
        member = _member(link, self.type_name)
        alternatives = []
        if self.type_name is None or _guarded(self.type_name):
            alternatives.append(self._only_about_own_resident(table))
        if member is not None:
            alternatives.append(
                exists()
                .where(
                    link.c.res_pk == r.res_pk,
                    link.c.target_type == "Patient",
                    link.c.target_id.in_(self._own_person()),
                    member,
                )
                .correlate_except(link)
            )
        if self.type_name in (None, "Patient"):
            alternatives.append(and_(r.res_type == "Patient", r.res_id.in_(self._own_person())))
        return and_(r.deleted.is_(False), or_(*alternatives)) if alternatives else false()

    def _own_person(self) -> Any:
        """The ids of the app's resident's records: its Patient and every record the master patient index links to
        the same golden (the golden included), as :meth:`_records_of` finds a resident's records."""
        mine = _alias(mpi_records, next(self.aliases))
        same = _alias(mpi_records, next(self.aliases))
        golden = select(mine.c.golden_id).where(mine.c.source_id == self.patient).scalar_subquery()
        person = func.coalesce(golden, self.patient)
        return union_all(
            select(self.patient.label("id")),  # type: ignore[union-attr]
            select(person.label("id")),
            select(same.c.source_id.label("id")).where(same.c.golden_id == person),
        )

    def _only_about_own_resident(self, table: Any) -> ColumnElement[bool]:
        """A resource of a :func:`_guarded` type that references the app's resident and no other (a Task for them)."""
        r = table.c
        own = _alias(reference_index, next(self.aliases))
        other = _alias(reference_index, next(self.aliases))
        references = exists().where(
            own.c.res_pk == r.res_pk, own.c.target_type == "Patient", own.c.target_id.in_(self._own_person())
        )
        strangers = exists().where(
            other.c.res_pk == r.res_pk,
            other.c.target_type == "Patient",
            other.c.target_id.not_in(self._own_person()),
        )
        condition = and_(references.correlate_except(own), ~strangers.correlate_except(other))
        return condition if self.type_name is not None else and_(r.res_type.not_in(_open_types()), condition)


SHARED_WITH_RESIDENTS = frozenset(
    {
        # directories of the region's care providers
        "Organization", "OrganizationAffiliation", "Practitioner", "PractitionerRole", "Location",
        "HealthcareService", "Endpoint", "InsurancePlan", "Slot",
        # medicines and products
        "Medication", "MedicationKnowledge", "Substance", "SubstanceDefinition", "MedicinalProductDefinition",
        "PackagedProductDefinition", "AdministrableProductDefinition", "ManufacturedItemDefinition", "Ingredient",
        "ClinicalUseDefinition", "RegulatedAuthorization", "NutritionProduct", "DeviceDefinition",
        # terminology and conformance
        "CodeSystem", "ValueSet", "ConceptMap", "NamingSystem", "TerminologyCapabilities", "CapabilityStatement",
        "StructureDefinition", "StructureMap", "ImplementationGuide", "SearchParameter", "OperationDefinition",
        "CompartmentDefinition", "GraphDefinition", "ExampleScenario", "MessageDefinition", "SubscriptionTopic",
        # knowledge and definitions
        "ActivityDefinition", "PlanDefinition", "Questionnaire", "Measure", "Library", "ObservationDefinition",
        "SpecimenDefinition", "EventDefinition", "ChargeItemDefinition", "Evidence", "EvidenceReport",
        "EvidenceVariable", "Citation", "ResearchDefinition", "ResearchElementDefinition", "ResearchStudy",
        "CatalogEntry", "TestScript",
    }
)  # fmt: skip
"""Types outside the Patient compartment a resident's app reads whoever wrote them: directories, products,
terminology, definitions. Other such types can hold a resident's data without being in the compartment
(Task, Device, Bundle, Binary, Contract, Subscription, MessageHeader …): an app reads those only when they
reference its resident and no other. A client of no institution and no resident reads these types only."""


def _guarded(type_name: str) -> bool:
    """Outside the Patient compartment and not open to residents' apps."""
    return type_name not in SHARED_WITH_RESIDENTS and not definitions.compartment("Patient").get(type_name)


@lru_cache(maxsize=1)
def _open_types() -> list[str]:
    """Types a resident's app reads as any caller does: the Patient compartment's and :data:`SHARED_WITH_RESIDENTS`."""
    return sorted(t for t in definitions.resource_types() if not _guarded(t))


def _open_to_residents(table: Any, type_name: str | None) -> ColumnElement[bool]:
    """For a resident's app, resources of other owners outside its record: only of the open types."""
    if type_name is not None:
        return true() if not _guarded(type_name) else false()
    return table.c.res_type.in_(_open_types())


def _shared_with_everyone(table: Any, type_name: str | None) -> ColumnElement[bool]:
    """For a client of no institution and no resident, resources of other owners: only of the types in
    :data:`SHARED_WITH_RESIDENTS` (least privilege: it speaks for no one a resident's data could be shared with)."""
    if type_name is not None:
        return true() if type_name in SHARED_WITH_RESIDENTS else false()
    return table.c.res_type.in_(sorted(SHARED_WITH_RESIDENTS))


def _member(link: Any, type_name: str | None) -> ColumnElement[bool] | None:
    """The reference rows that make a resource of this type a member of a Patient compartment.

    A Patient is about itself (its ``link`` to a golden is not membership); the consent of the records linked to
    the same golden is found by :meth:`_Condition._records_of`.
    """
    members = {t: params for t, params in definitions.compartment("Patient").items() if t != "Patient" and params}
    if type_name is not None:
        params = members.get(type_name)
        return link.c.param_id.in_(ids_named(params, [type_name])) if params else None
    return link.c.param_id.in_(ids_of(members))


def _alias(table: Any, number: int) -> Any:
    """``consent_grants AS cg4``: short names keep a condition's SQL short (psycopg converts the placeholders of a
    statement over 4,096 bytes again on every execution, which can cost more client CPU than the read itself)."""
    return table.alias(f"{_ALIAS_PREFIX[table.name]}{number}")


def _coded(res_pk: Any, param: str, system: Any, code: Any, aliases: itertools.count) -> ColumnElement[bool]:
    token = _alias(token_index, next(aliases))
    return (
        exists()
        .where(
            token.c.res_pk == res_pk,
            token.c.param_id.in_(ids_named([param])),
            token.c.code == code,
            or_(system.is_(None), token.c.system == system),
        )
        .correlate_except(token)
    )
