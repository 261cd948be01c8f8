"""The MLLP listener on a real socket: concurrent senders, split and pipelined frames, broken frames, shutdown."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from adapters.hl7v2 import store
from adapters.hl7v2.listener import MllpListener
from adapters.hl7v2.mllp import MllpDecoder, frame
from adapters.hl7v2.parse import parse_message
from fhir_server.api.app import patient_identifier_check
from fhir_server.service import FhirService
from fhir_server.storage import unit_of_work
from tests.adapters.hl7v2.samples import message_text, wire_variant

MRN_SYSTEM = "https://hie.wuzhou.gov.cn/fhir/sid/mrn/450400-001"
TIMEOUT = 30


class ListenerThread:
    """`MllpListener` on a free port of 127.0.0.1, its event loop in a background thread."""

    def __init__(self, engine) -> None:  # type: ignore[no-untyped-def]
        self.loop = asyncio.new_event_loop()
        self.listener = MllpListener(engine, FhirService(checks=[patient_identifier_check]), port=0)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self._call(self.listener.start())
        self.port = self.listener.port

    def _call(self, coroutine):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(TIMEOUT)

    def stop(self) -> None:
        self._call(self.listener.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(TIMEOUT)
        self.loop.close()


@pytest.fixture(scope="module")
def listener(engine) -> Iterator[ListenerThread]:  # type: ignore[no-untyped-def]
    running = ListenerThread(engine)
    yield running
    running.stop()


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)


def _read_acks(sock: socket.socket, count: int) -> list[bytes]:
    decoder = MllpDecoder()
    acks: list[bytes] = []
    while len(acks) < count:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError(f"closed after {len(acks)} of {count} ACKs")
        decoder.feed(data)
        acks.extend(decoder)
    return acks


def _send(port: int, messages: list[bytes]) -> list[tuple[str, str]]:
    """Send each message and wait for its ACK, on one connection; MSA-1 and MSA-2 of every ACK."""
    answers = []
    with _connect(port) as sock:
        for message in messages:
            sock.sendall(frame(message))
            answers.append(_msa(_read_acks(sock, 1)[0]))
    return answers


def _msa(ack: bytes) -> tuple[str, str]:
    msa = parse_message(ack).require("MSA")
    return msa.value(1), msa.value(2)


def _own_records(name: str, control_id: str, tag: str) -> bytes:
    """A sample whose patient, visit, order and appointment numbers are its sender's own."""
    numbers = {"0012345678": f"L{tag}", "ZY20240315001": f"V{tag}", "L2403150123": f"O{tag}", "SCH-778812": f"S{tag}"}
    text = message_text(name)
    return wire_variant(name, control_id, *((old, new) for old, new in numbers.items() if old in text))


def _closed_by_peer(sock: socket.socket) -> bool:
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True


def test_concurrent_senders_are_acknowledged_and_searchable(listener, client) -> None:
    run = uuid.uuid4().hex[:8]
    senders = {
        sender: [
            _own_records(name, f"{run}-{sender}-{number}", f"{run}{sender}")
            for number, name in enumerate(("adt_a01.hl7", "oru_r01.hl7", "siu_s12.hl7", "adt_a08.hl7"))
        ]
        for sender in range(4)
    }

    with ThreadPoolExecutor(max_workers=len(senders)) as pool:
        answers = dict(zip(senders, pool.map(lambda s: _send(listener.port, senders[s]), senders), strict=True))

    for sender, acks in answers.items():
        assert acks == [("AA", f"{run}-{sender}-{number}") for number in range(4)]
    for sender in senders:
        found = client.get("/fhir/Patient", params={"identifier": f"{MRN_SYSTEM}|L{run}{sender}"}).json()
        assert len(found["entry"]) == 1
        patient = f"Patient/{found['entry'][0]['resource']['id']}"
        assert len(client.get("/fhir/Observation", params={"subject": patient}).json()["entry"]) == 7
        assert len(client.get("/fhir/Appointment", params={"patient": patient}).json()["entry"]) == 1
        encounters = client.get("/fhir/Encounter", params={"subject": patient}).json()["entry"]
        assert [e["resource"]["meta"]["versionId"] for e in encounters] == ["2"], "A01 then A08 of one visit"


def test_pipelined_and_split_frames_are_answered_in_order(listener) -> None:
    run = uuid.uuid4().hex[:8]
    first, second = (wire_variant("adt_a28.hl7", f"{run}-{n}", ("0020000031", f"P{run}{n}")) for n in range(2))
    framed = frame(first) + frame(second)

    with _connect(listener.port) as sock:
        for start in range(0, len(framed), 97):
            sock.sendall(framed[start : start + 97])
            time.sleep(0.001)
        acks = _read_acks(sock, 2)

    assert [_msa(ack) for ack in acks] == [("AA", f"{run}-0"), ("AA", f"{run}-1")]


def test_a_broken_message_is_answered_over_the_wire_and_kept(listener, engine) -> None:
    control_id = f"B-{uuid.uuid4().hex[:8]}"
    raw = wire_variant("adt_a01.hl7", control_id, ("|19580312|M|", "|19580312|X|"))

    assert _send(listener.port, [raw]) == [("AE", control_id)]

    with unit_of_work(engine, write=False) as conn:
        dead = store.find_message(conn, sending_facility="450400-001", control_id=control_id)
    assert dead is not None
    assert (dead.status, dead.raw) == (store.DEAD, raw)


@pytest.mark.parametrize(
    ("case", "data"),
    [
        ("truncated at end of stream", b"\x0bMSH|^~\\&|WZHIS|450400-001|HIE|WZHIE|2024"),
        ("new frame before the end block", b"\x0bMSH|^~\\&|WZHIS\x0bMSH|^~\\&|WZHIS|450400-001\x1c\r"),
        ("bytes outside a frame", b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"),
        ("end block without CR", b"\x0bMSH|^~\\&|WZHIS|450400-001\x1cX"),
    ],
)
def test_a_broken_frame_closes_its_connection_and_the_listener_goes_on(
    listener, caplog: pytest.LogCaptureFixture, case: str, data: bytes
) -> None:
    caplog.set_level(logging.WARNING, logger="hie.hl7v2.mllp")
    with _connect(listener.port) as sock:
        sock.sendall(data)
        if case == "truncated at end of stream":
            sock.shutdown(socket.SHUT_WR)
        assert _closed_by_peer(sock), "the listener closes a connection whose framing is broken"

    control_id = f"F-{uuid.uuid4().hex[:8]}"
    assert _send(listener.port, [wire_variant("adt_a28.hl7", control_id)]) == [("AA", control_id)]
    assert any("MLLP connection from" in record.getMessage() for record in caplog.records)


def test_close_ends_idle_connections(engine) -> None:
    running = ListenerThread(engine)
    idle = _connect(running.port)
    control_id = f"I-{uuid.uuid4().hex[:8]}"
    idle.sendall(frame(wire_variant("adt_a28.hl7", control_id)))
    assert _msa(_read_acks(idle, 1)[0]) == ("AA", control_id)
    try:
        started = time.monotonic()
        running.stop()
        assert time.monotonic() - started < 5
        assert _closed_by_peer(idle)
        with pytest.raises(OSError):
            _connect(running.port).close()
    finally:
        idle.close()


def test_a_slow_message_does_not_hold_up_other_connections(listener, monkeypatch) -> None:
    import adapters.hl7v2.listener as listener_module

    release = threading.Event()
    real_apply = listener_module.apply_message

    def apply_slowly_when_asked(engine, service, raw, **kwargs):  # type: ignore[no-untyped-def]
        if b"|SLOW-" in raw:
            release.wait(TIMEOUT)
        return real_apply(engine, service, raw, **kwargs)

    monkeypatch.setattr(listener_module, "apply_message", apply_slowly_when_asked)
    slow_id, quick_id = f"SLOW-{uuid.uuid4().hex[:8]}", f"Q-{uuid.uuid4().hex[:8]}"
    with _connect(listener.port) as slow:
        slow.sendall(frame(wire_variant("adt_a28.hl7", slow_id)))

        assert _send(listener.port, [wire_variant("adt_a28.hl7", quick_id)]) == [("AA", quick_id)]

        release.set()
        assert _msa(_read_acks(slow, 1)[0]) == ("AA", slow_id)
