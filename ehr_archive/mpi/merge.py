"""``Patient/$merge`` and ``$unmerge`` on the MPI: new versions only, nothing deleted, every step undoable.

Two institutions' records (after FHIR R5 Patient-merge): the source becomes inactive with ``replaced-by`` the
target and joins the target's golden; the target gains ``replaces`` and, unless a ``result-patient`` is given,
the source's identifiers as ``use: old``. Two goldens: the source golden becomes inactive, ``replaced-by`` the
target golden, and its records are relinked to the target. Clinical resources keep their references (nothing is
moved). What the merge changed is kept in ``mpi_merges``; ``$unmerge`` restores the source from its version
before the merge, takes back what was added to the target and relinks the records.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection

from ehr_archive.matching import blocking_keys, person_record_from_patient
from ehr_archive.mpi import links
from ehr_archive.mpi.records import demographics, is_golden, with_golden_link
from fhir_server.errors import FhirError, invalid
from fhir_server.repository import Version

if TYPE_CHECKING:
    from ehr_archive.mpi.service import MasterPatientIndex


def _current(mpi: MasterPatientIndex, conn: Connection, res_id: str, role: str) -> Version:
    found = mpi.service.repository.current(conn, "Patient", res_id, lock=True)
    if found is None:
        raise FhirError("not-found", f"The {role} Patient/{res_id} is not known to this server.")
    if found.deleted:
        raise FhirError("deleted", f"The {role} Patient/{res_id} was deleted.")
    return found


def _write(mpi: MasterPatientIndex, conn: Connection, patient: dict[str, Any]) -> Version:
    mpi.service.validate(patient, "Patient")
    return mpi.service.repository.update(conn, "Patient", patient["id"], patient).version


def merge(
    mpi: MasterPatientIndex, conn: Connection, source_id: str, target_id: str, result: dict[str, Any] | None
) -> tuple[dict[str, Any], str]:
    """Merge ``source_id`` into ``target_id``; the target as stored afterwards and a sentence of what happened."""
    if source_id == target_id:
        raise invalid("source-patient and target-patient are the same Patient.", expression=("source-patient",))
    first, second = sorted((source_id, target_id))
    versions = {first: _current(mpi, conn, first, "merged"), second: _current(mpi, conn, second, "merged")}
    source, target = versions[source_id], versions[target_id]
    source_body, target_body = source.resource(), target.resource()
    if is_golden(source_body) != is_golden(target_body):
        raise invalid("Merge two institutions' records or two golden Patients, not one of each.")
    if source_body.get("active") is False and any(
        link.get("type") == "replaced-by" for link in source_body.get("link") or []
    ):
        raise FhirError("business-rule", f"Patient/{source_id} is already merged into another Patient.")
    if is_golden(source_body):
        if result is not None:
            raise invalid("result-patient is not taken when merging golden Patients (the MPI builds them).")
        return _merge_goldens(mpi, conn, source, target)
    return _merge_records(mpi, conn, source, target, result)


def _merge_records(
    mpi: MasterPatientIndex, conn: Connection, source: Version, target: Version, result: dict[str, Any] | None
) -> tuple[dict[str, Any], str]:
    mpi.source_record(conn, source.res_id)
    mpi.source_record(conn, target.res_id)
    source_row, target_row = links.get_record(conn, source.res_id), links.get_record(conn, target.res_id)
    assert source_row is not None and target_row is not None
    golden_id = target_row.golden_id
    merged = source.resource()
    merged["active"] = False
    merged["link"] = [link for link in merged.get("link") or [] if link.get("type") != "replaced-by"]
    merged["link"].append({"other": {"reference": f"Patient/{target.res_id}"}, "type": "replaced-by"})
    with_golden_link(merged, golden_id, {source_row.golden_id, golden_id})
    added: list[dict[str, Any]] = []
    if result is not None:
        if result.get("id") != target.res_id:
            raise invalid("result-patient must carry the target's id.", expression=("result-patient",))
        if is_golden(result):
            raise invalid("result-patient may not carry the golden-record tag.", expression=("result-patient",))
        survivor = dict(result)
    else:
        survivor = target.resource()
        have = {(i.get("system"), i.get("value")) for i in survivor.get("identifier") or []}
        for identifier in source.resource().get("identifier") or []:
            if (identifier.get("system"), identifier.get("value")) not in have:
                added.append({**identifier, "use": "old"})
        if added:
            survivor["identifier"] = [*(survivor.get("identifier") or []), *added]
    if not any(
        link.get("type") == "replaces" and link.get("other", {}).get("reference") == f"Patient/{source.res_id}"
        for link in survivor.get("link") or []
    ):
        survivor["link"] = [
            *(survivor.get("link") or []),
            {"other": {"reference": f"Patient/{source.res_id}"}, "type": "replaces"},
        ]
    with_golden_link(survivor, golden_id, {target_row.golden_id, golden_id})
    new_source, new_target = _write(mpi, conn, merged), _write(mpi, conn, survivor)
    links.save_record(
        conn,
        source.res_id,
        golden_id=golden_id,
        link_kind="merged",
        demographics=demographics(merged),
        keys=(),
        active=False,
    )
    target_keys = blocking_keys(person_record_from_patient(survivor, target.res_id))
    links.save_record(
        conn,
        target.res_id,
        golden_id=golden_id,
        link_kind=target_row.link_kind,
        demographics=demographics(survivor),
        keys=target_keys,
    )
    written = [new_source.location, new_target.location]
    old_golden = source_row.golden_id
    if old_golden != golden_id:
        left = [m for m in links.members(conn, old_golden) if m.active]
        version = mpi.refresh_golden(conn, old_golden, replaced_by=None if left else golden_id)
        if version is not None:
            written.append(version.location)
    version = mpi.refresh_golden(conn, golden_id)
    if version is not None:
        written.append(version.location)
    state = {
        "source_version": source.version,
        "target_version": target.version,
        "source_golden": old_golden,
        "source_kind": source_row.link_kind,
        "added_identifiers": added,
    }
    links.add_merge(conn, "source", source.res_id, target.res_id, state)
    text = f"Patient/{source.res_id} merged into Patient/{target.res_id} (golden Patient/{golden_id})"
    mpi.record_provenance(conn, "merge", written, [source.location, target.location], text)
    return new_target.resource(), text


def _merge_goldens(
    mpi: MasterPatientIndex, conn: Connection, source: Version, target: Version
) -> tuple[dict[str, Any], str]:
    if not links.golden_active(conn, target.res_id):
        raise FhirError("business-rule", f"Golden Patient/{target.res_id} is inactive; merge into an active one.")
    moved = []
    written = []
    for row in links.members(conn, source.res_id):
        record = mpi.service.repository.current(conn, "Patient", row.source_id, lock=True)
        moved.append({"source_id": row.source_id, "kind": row.link_kind})
        links.relink(conn, row.source_id, target.res_id, "manual")
        if record is not None and not record.deleted:
            patient = with_golden_link(record.resource(), target.res_id, {source.res_id, target.res_id})
            written.append(_write(mpi, conn, patient).location)
    gone = mpi.refresh_golden(conn, source.res_id, replaced_by=target.res_id)
    replaces = [*_replaces(target.resource()), source.res_id]
    kept = mpi.refresh_golden(conn, target.res_id, replaces=replaces)
    written += [v.location for v in (gone, kept) if v is not None]
    links.add_merge(conn, "golden", source.res_id, target.res_id, {"moved": moved})
    text = f"Golden Patient/{source.res_id} merged into golden Patient/{target.res_id} ({len(moved)} record(s) moved)"
    mpi.record_provenance(conn, "merge", written, [source.location, target.location], text)
    survivor = mpi.service.repository.read(conn, "Patient", target.res_id)
    return survivor.resource(), text


def _replaces(patient: dict[str, Any]) -> list[str]:
    return [
        link["other"]["reference"].removeprefix("Patient/")
        for link in patient.get("link") or []
        if link.get("type") == "replaces"
    ]


def unmerge(mpi: MasterPatientIndex, conn: Connection, source_id: str) -> tuple[dict[str, Any], str]:
    """Undo the latest merge of ``source_id``; the restored source and a sentence of what happened."""
    merge_row = links.last_merge(conn, source_id)
    if merge_row is None:
        raise FhirError("business-rule", f"Patient/{source_id} has no merge to undo.")
    source = _current(mpi, conn, source_id, "merged")
    target = _current(mpi, conn, merge_row.target_id, "surviving")
    state = merge_row.state
    written = []
    if merge_row.kind == "golden":
        for moved in state["moved"]:
            row = links.get_record(conn, moved["source_id"])
            if row is None or row.golden_id != merge_row.target_id:
                continue  # relinked or deleted since: a later decision stands
            links.relink(conn, row.source_id, source_id, moved["kind"])
            record = mpi.service.repository.current(conn, "Patient", row.source_id, lock=True)
            if record is not None and not record.deleted:
                patient = with_golden_link(record.resource(), source_id, {source_id, merge_row.target_id})
                written.append(_write(mpi, conn, patient).location)
        restored = mpi.refresh_golden(conn, source_id, replaced_by=None)
        replaces = [r for r in _replaces(target.resource()) if r != source_id]
        kept = mpi.refresh_golden(conn, merge_row.target_id, replaces=replaces)
        written += [v.location for v in (restored, kept) if v is not None]
        restored_body = mpi.service.repository.read(conn, "Patient", source_id).resource()
    else:
        before = mpi.service.repository.vread(conn, "Patient", source_id, state["source_version"]).resource()
        golden_id = state["source_golden"]
        before["id"] = source_id
        with_golden_link(before, golden_id, {golden_id, merge_row.target_id})
        new_source = _write(mpi, conn, before)
        keys = blocking_keys(person_record_from_patient(before, source_id))
        links.save_record(
            conn,
            source_id,
            golden_id=golden_id,
            link_kind=state["source_kind"],
            demographics=demographics(before),
            keys=keys,
        )
        survivor = target.resource()
        added = {(i.get("system"), i.get("value")) for i in state["added_identifiers"]}
        survivor["identifier"] = [
            i
            for i in survivor.get("identifier") or []
            if not (i.get("use") == "old" and (i.get("system"), i.get("value")) in added)
        ]
        if not survivor["identifier"]:
            del survivor["identifier"]
        survivor["link"] = [
            link
            for link in survivor.get("link") or []
            if not (link.get("type") == "replaces" and link.get("other", {}).get("reference") == f"Patient/{source_id}")
        ]
        new_target = _write(mpi, conn, survivor)
        target_row = links.get_record(conn, merge_row.target_id)
        if target_row is not None:
            links.save_record(
                conn,
                merge_row.target_id,
                golden_id=target_row.golden_id,
                link_kind=target_row.link_kind,
                demographics=demographics(survivor),
                keys=blocking_keys(person_record_from_patient(survivor, merge_row.target_id)),
            )
        written += [new_source.location, new_target.location]
        for golden in dict.fromkeys((golden_id, target_row.golden_id if target_row else golden_id)):
            version = (
                mpi.refresh_golden(conn, golden, replaced_by=None)
                if golden == golden_id
                else mpi.refresh_golden(conn, golden)
            )
            if version is not None:
                written.append(version.location)
        restored_body = new_source.resource()
    links.mark_undone(conn, merge_row.id)
    text = f"Merge of Patient/{source_id} into Patient/{merge_row.target_id} undone"
    mpi.record_provenance(conn, "unmerge", written, [source.location, target.location], text)
    return restored_body, text
