"""The suite's results as Markdown: all cells, footprint, the database-alone limits and the targets of issue 6."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from bench.regional.load import Cell

__all__ = ["TARGETS", "figures_table", "targets_table"]


def _num(value: float, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:,.{digits}f}"


def figures_table(cells: Iterable[Cell]) -> list[str]:
    """One row per measured cell (W1–W7 and the bulk load)."""
    lines = [
        "| workload | backend | residents | resources in db | what | clients | done | rate | p50 ms | p99 ms | failed "
        "| note |",
        "| --- | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for c in cells:
        if c.workload in ("W8", "limit"):
            continue
        r = c.recorder
        rate = r.unit_rate if c.unit in ("res/s",) else r.rate
        note = ", ".join(f"{k} {v}" for k, v in c.extra.items() if k not in ("residents", "db resources"))
        if c.failures_text:
            note = (note + "; " if note else "") + f"first failure: {c.failures_text}"
        lines.append(
            f"| {c.workload} | {c.backend} | {c.extra.get('residents', '')} | {_num(c.extra.get('db resources', 0))} "
            f"| {c.label} | {c.clients} | {c.count} | {_num(rate)} {c.unit} | {_num(r.ms(50), 1)} "
            f"| {_num(r.ms(99), 1)} | {len(r.failures)} | {note} |"
        )
    return lines


def footprint_table(cells: Iterable[Cell]) -> list[str]:
    lines = [
        "| backend | residents | resources | files on disk | bytes/resource | of which tables | of which indexes "
        "| bodies (versions table) | search index tables with their indexes | server RSS (processes) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for c in cells:
        if c.workload != "W8":
            continue
        e = c.extra
        lines.append(
            f"| {c.backend} | {e.get('residents', '')} | {_num(c.resources)} | {_num(e['total bytes'])} "
            f"| {_num(e['bytes/resource'])} | {_num(e.get('table bytes/resource', math.nan))} "
            f"| {_num(e.get('index bytes/resource', math.nan))} | {_num(e.get('body bytes/resource', math.nan))} "
            f"| {_num(e.get('search index bytes/resource', math.nan))} | {e['rss bytes'] / 2**20:,.0f} MiB "
            f"({e['processes']}) |"
        )
    return lines


def limits_table(cells: list[Cell]) -> list[str]:
    """The database alone, and the server's figure as a share of it."""
    lines = [
        "| backend | database alone | rate | index rows/resource | server figure | server ÷ database |",
        "| --- | --- | ---: | ---: | --- | ---: |",
    ]
    for c in cells:
        if c.workload != "limit":
            continue
        limit = c.recorder.units
        if "read" in c.label:
            match = [x for x in cells if x.workload == "W3" and x.backend == c.backend and x.clients == 1]
            server, what = (match[-1].recorder.rate, "W3 ×1 req/s") if match else (math.nan, "")
        elif "scan" in c.label:
            match = [x for x in cells if x.workload == "W7" and x.backend == c.backend and x.count]
            server, what = (
                (match[-1].recorder.units / sum(match[-1].recorder.latencies), "W7 res/s") if match else (math.nan, "")
            )
        else:
            match = [x for x in cells if x.workload == "W1" and x.backend == c.backend]
            server, what = (match[-1].recorder.unit_rate, "W1 res/s") if match else (math.nan, "")
        ratio = server / limit if limit and not math.isnan(server) else math.nan
        lines.append(
            f"| {c.backend} | {c.label.removeprefix('database alone: ')} | {_num(limit)} res/s "
            f"| {_num(c.extra['index rows/resource'], 1)} | {_num(server)} {what} | {_num(ratio * 100, 1)}% |"
        )
    return lines


@dataclass(frozen=True)
class Target:
    row: str
    sqlite: str
    postgresql: str


TARGETS = (
    Target("W1 ingest", "≥ 1,000 resources/s", "≥ 600 resources/s"),
    Target("W2 small transactions at 32 clients", "≥ 800 tx/s, p99 ≤ 50 ms", "≥ 500 tx/s"),
    Target("W3 read by id, 8 clients", "≥ 1,500 req/s, p99 ≤ 15 ms", "≥ 1,200 req/s"),
    Target("W4 token/date search", "p50 ≤ 10 ms, p99 ≤ 50 ms, ≤ 1.5× growth 1k → 10k", "same"),
    Target("W5 $everything (~1,000 resources)", "p50 ≤ 100 ms, p99 ≤ 300 ms", "same"),
    Target("W7 export", "≥ 20,000 resources/s", "same"),
    Target("W8 footprint", "≤ 3 kB per resource with indexes", "—"),
)


def _measured(row: str, backend: str, cells: list[Cell]) -> str:
    mine = [c for c in cells if c.backend == backend]

    def pick(workload: str, clients: int | None = None, label: str | None = None) -> list[Cell]:
        return [
            c
            for c in mine
            if c.workload == workload
            and (clients is None or c.clients == clients)
            and (label is None or label in c.label)
        ]

    if row.startswith("W1"):
        return "; ".join(f"{c.recorder.unit_rate:,.0f} res/s (p50 {c.recorder.ms(50):.0f} ms)" for c in pick("W1"))
    if row.startswith("W2"):
        return "; ".join(f"{c.recorder.rate:,.0f} tx/s, p99 {c.recorder.ms(99):,.0f} ms" for c in pick("W2", 32))
    if row.startswith("W3"):
        return "; ".join(
            f"{c.recorder.rate:,.0f} req/s, p99 {c.recorder.ms(99):,.0f} ms at {c.extra.get('db resources', 0):,} "
            "resources"
            for c in pick("W3", 8)
        )
    if row.startswith("W4"):
        parts = []
        for kind in ("token + patient", "token + date range"):
            found = pick("W4", label=kind)
            text = ", ".join(
                f"p50 {c.recorder.ms(50):.0f} / p99 {c.recorder.ms(99):.0f} ms @ {c.extra.get('residents')}"
                for c in found
            )
            if len(found) >= 2 and found[0].recorder.ms(50) > 0:
                text += f" (growth ×{found[-1].recorder.ms(50) / found[0].recorder.ms(50):.2f})"
            if found:
                parts.append(f"{kind}: {text}")
        return "; ".join(parts)
    if row.startswith("W5"):
        return "; ".join(
            f"p50 {c.recorder.ms(50):,.0f} / p99 {c.recorder.ms(99):,.0f} ms ({c.extra.get('resources')} resources)"
            for c in pick("W5")
        )
    if row.startswith("W7"):
        return "; ".join(
            f"{c.recorder.units / max(sum(c.recorder.latencies), 1e-9):,.0f} res/s ({c.recorder.units:,})"
            for c in pick("W7")
            if c.count
        )
    if row.startswith("W8"):
        return "; ".join(f"{c.extra['bytes/resource']:,.0f} B/resource" for c in pick("W8"))
    return ""


def targets_table(cells: list[Cell]) -> list[str]:
    lines = [
        "| workload | target SQLite | measured SQLite | target PostgreSQL | measured PostgreSQL |",
        "| --- | --- | --- | --- | --- |",
    ]
    for t in TARGETS:
        lines.append(
            f"| {t.row} | {t.sqlite} | {_measured(t.row, 'sqlite', cells) or '–'} | {t.postgresql} "
            f"| {_measured(t.row, 'postgresql', cells) or '–'} |"
        )
    return lines
