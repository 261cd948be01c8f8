"""Normalising search values: escapes, folded strings, prefixes and the implicit ranges of dates and numbers.

R4B §3.1.1.4 (parameter types), §3.1.1.5.7 (escaping), §2.24 (date and time formats).
"""

from __future__ import annotations

import calendar
import re
import unicodedata
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from functools import lru_cache

PREFIXES = frozenset({"eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"})

# Dates and times without an offset are read in the region's zone (Asia/Shanghai, UTC+8, no DST).
REGION_TZ = timezone(timedelta(hours=8))
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DATE = re.compile(
    r"^(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})"
    r"(?:T(?P<H>\d{2})(?::(?P<M>\d{2})(?::(?P<S>\d{2})(?:\.(?P<f>\d+))?)?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)


def fold(text: str) -> str:
    """Case- and accent-insensitive form used for string search (NFKD, combining marks dropped).

    ASCII is its own NFKD form and has no combining marks, so it only needs lower-casing.
    """
    if text.isascii():
        return text.lower().strip()
    return _fold_unicode(text)


@lru_cache(maxsize=16_384)
def _fold_unicode(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    marks = [unicodedata.combining(c) for c in decomposed]
    if not any(marks):  # CJK names and addresses: nothing to drop
        return decomposed.casefold().strip()
    return "".join(c for c, mark in zip(decomposed, marks, strict=True) if not mark).casefold().strip()


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


def split_escaped(text: str, separator: str) -> list[str]:
    """Split on ``separator`` where it is not escaped by a backslash; escapes are kept for the next split."""
    parts, current, escaped = [], [], False
    for char in text:
        if escaped:
            current.append("\\" + char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == separator:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    if escaped:
        current.append("\\")
    parts.append("".join(current))
    return parts


def unescape(text: str) -> str:
    """``\\,`` ``\\$`` ``\\|`` ``\\\\`` → the character itself (R4B §3.1.1.5.7)."""
    out, escaped = [], False
    for char in text:
        if escaped:
            out.append(char if char in ",$|\\" else "\\" + char)
            escaped = False
        elif char == "\\":
            escaped = True
        else:
            out.append(char)
    if escaped:
        out.append("\\")
    return "".join(out)


def split_prefix(value: str) -> tuple[str, str]:
    """``ge2020`` → (``ge``, ``2020``); no prefix means ``eq`` (R4B §3.1.1.4.1)."""
    if len(value) > 2 and value[:2] in PREFIXES and not value[2].isalpha():
        return value[:2], value[2:]
    return "eq", value


def parse_decimal(text: str) -> Decimal | None:
    try:
        number = Decimal(text)
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def number_range(number: Decimal) -> tuple[float, float]:
    """The implicit range of a search number from its significant figures: ``100`` → [99.5, 100.5)."""
    half = Decimal(5).scaleb(number.as_tuple().exponent - 1)  # type: ignore[operator]
    return float(number - half), float(number + half)


def search_date(text: str) -> tuple[int, int] | None:
    """A date search value; a ``+`` offset decoded as a space (unencoded in a URL) is repaired."""
    text = text.strip()
    if len(text) > 19 and text[-6] == " ":
        text = text[:-6] + "+" + text[-5:]
    return date_range(text)
