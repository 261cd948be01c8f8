"""Normalising search values: folded strings and the implicit ranges of FHIR dates (R4B §3.1.1.4.3, §2.24)."""

from __future__ import annotations

import calendar
import re
import unicodedata
from datetime import UTC, datetime, timedelta, timezone

# Dates and times without an offset are read in the region's zone (Asia/Shanghai, UTC+8, no DST).
REGION_TZ = timezone(timedelta(hours=8))
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DATE = re.compile(
    r"^(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})"
    r"(?:T(?P<H>\d{2})(?::(?P<M>\d{2})(?::(?P<S>\d{2})(?:\.(?P<f>\d+))?)?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)


def fold(text: str) -> str:
    """Case- and accent-insensitive form used for string search (NFKD, combining marks dropped)."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold().strip()


def to_micros(moment: datetime) -> int:
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


def date_range(value: str) -> tuple[int, int] | None:
    """The implicit [low, high] range of a date, dateTime or instant, in microseconds (inclusive)."""
    match = _DATE.match(value.strip())
    if not match:
        return None
    parts = match.groupdict()
    tz = _offset(parts["tz"])
    year = int(parts["y"])
    try:
        if parts["m"] is None:
            low = datetime(year, 1, 1, tzinfo=tz)
            high = datetime(year + 1, 1, 1, tzinfo=tz)
        elif parts["d"] is None:
            month = int(parts["m"])
            low = datetime(year, month, 1, tzinfo=tz)
            high = low + timedelta(days=calendar.monthrange(year, month)[1])
        elif parts["H"] is None:
            low = datetime(year, int(parts["m"]), int(parts["d"]), tzinfo=tz)
            high = low + timedelta(days=1)
        else:
            base = datetime(year, int(parts["m"]), int(parts["d"]), int(parts["H"]), tzinfo=tz)
            if parts["M"] is None:
                low, high = base, base + timedelta(hours=1)
            elif parts["S"] is None:
                low = base.replace(minute=int(parts["M"]))
                high = low + timedelta(minutes=1)
            else:
                fraction = parts["f"] or ""
                micros = int((fraction + "000000")[:6]) if fraction else 0
                low = base.replace(minute=int(parts["M"]), second=int(parts["S"]), microsecond=micros)
                step = timedelta(microseconds=10 ** max(0, 6 - len(fraction))) if fraction else timedelta(seconds=1)
                high = low + step
    except ValueError:
        return None
    return to_micros(low), to_micros(high) - 1


def _offset(text: str | None) -> timezone:
    if text is None:
        return REGION_TZ
    if text == "Z":
        return UTC
    sign = 1 if text[0] == "+" else -1
    hours, minutes = int(text[1:3]), int(text[4:6])
    return timezone(sign * timedelta(hours=hours, minutes=minutes))
