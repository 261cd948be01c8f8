"""Request and response headers of the RESTful API: header values, HTTP dates (RFC 9110 §5.6.7)."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime

import pytest
from starlette.requests import Request

from fhir_server.api.negotiation import header_value, http_date


def _micros(moment: datetime) -> int:
    return int(moment.timestamp()) * 1_000_000 + moment.microsecond


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        (datetime(2024, 11, 19, 7, 6, 40, 123456, tzinfo=UTC), "Tue, 19 Nov 2024 07:06:40 GMT"),
        (datetime(1970, 1, 1, tzinfo=UTC), "Thu, 01 Jan 1970 00:00:00 GMT"),
        (datetime(2000, 2, 29, 23, 59, 59, 999999, tzinfo=UTC), "Tue, 29 Feb 2000 23:59:59 GMT"),
        (datetime(2099, 12, 31, 12, 0, 5, tzinfo=UTC), "Thu, 31 Dec 2099 12:00:05 GMT"),
    ],
)
def test_http_dates_are_imf_fixdates_truncated_to_the_second(moment, text):
    assert http_date(_micros(moment)) == text
    assert http_date(_micros(moment)) == format_datetime(moment.replace(microsecond=0), usegmt=True)
    assert parsedate_to_datetime(text) == moment.replace(microsecond=0)


def test_every_day_of_a_year_names_its_weekday_and_month():
    start = _micros(datetime(2023, 1, 1, tzinfo=UTC))
    for day in range(365):
        micros = start + day * 86_400_000_000
        moment = datetime.fromtimestamp(micros / 1_000_000, UTC)
        assert http_date(micros) == format_datetime(moment, usegmt=True)


def _request(*headers: tuple[bytes, bytes]) -> Request:
    return Request({"type": "http", "method": "GET", "path": "/fhir/Patient/1", "headers": list(headers)})


def test_a_header_value_is_the_first_of_its_name_or_none():
    request = _request((b"accept", b"application/fhir+json"), (b"if-none-match", b'W/"2"'), (b"accept", b"*/*"))
    assert header_value(request, b"accept") == "application/fhir+json"
    assert header_value(request, b"if-none-match") == 'W/"2"'
    assert header_value(request, b"if-modified-since") is None
    assert header_value(_request(), b"accept") is None
