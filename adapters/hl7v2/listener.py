"""The MLLP listener (HL7 v2.5.1 Appendix C, MLLP release 1): an asyncio TCP server around `apply_message`.

Each connection is read as a stream of frames; each message is applied off the event loop (a worker thread) and
answered with its ACK before the next is read, as the protocol expects. A truncated or garbled frame closes that
connection (the sender reconnects and resends what was not acknowledged); it never stops the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from functools import partial

from sqlalchemy import Engine

from adapters.hl7v2.apply import apply_message
from adapters.hl7v2.identifier_systems import IdentifierSystems
from adapters.hl7v2.mllp import MllpDecoder, MllpFramingError, frame
from fhir_server.service import FhirService

__all__ = ["MllpListener"]

log = logging.getLogger("hie.hl7v2.mllp")

_READ_SIZE = 64 * 1024


class MllpListener:
    """Accepts MLLP connections on `host:port` (port 0 picks a free one) and applies what they send."""

    def __init__(
        self,
        engine: Engine,
        service: FhirService,
        *,
        host: str = "127.0.0.1",
        port: int = 2575,
        systems: IdentifierSystems | None = None,
        max_message_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        self.engine = engine
        self.service = service
        self.host = host
        self.port = port
        self.systems = systems
        self.max_message_bytes = max_message_bytes
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Bind and start accepting; `port` then holds the bound port."""
        self._server = await asyncio.start_server(self._serve_connection, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("MLLP listener on %s:%s", self.host, self.port)

    async def serve_forever(self) -> None:
        if self._server is None:
            await self.start()
        assert self._server is not None
        async with self._server:
            await self._server.serve_forever()

    async def close(self) -> None:
        """Stop accepting, end open connections and wait for them."""
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        peer = writer.get_extra_info("peername")
        decoder = MllpDecoder(max_message_bytes=self.max_message_bytes)
        address = peer[0] if isinstance(peer, tuple) and peer else None  # recorded as the sender's address
        apply = partial(apply_message, self.engine, self.service, systems=self.systems, peer=address)
        try:
            while True:
                data = await reader.read(_READ_SIZE)
                if not data:
                    decoder.close()
                    return
                decoder.feed(data)
                for payload in decoder:
                    ack = await asyncio.to_thread(apply, payload)
                    writer.write(frame(ack))
                    await writer.drain()
        except MllpFramingError as error:
            log.warning("MLLP connection from %s closed: %s", peer, error)
        except (ConnectionError, asyncio.IncompleteReadError) as error:
            log.info("MLLP connection from %s lost: %s", peer, error)
        except Exception:
            log.exception("MLLP connection from %s closed after an unexpected error", peer)
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
