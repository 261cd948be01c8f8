"""Stored resource bodies: canonical JSON compressed with Zstandard (RFC 8878) and a dictionary shipped here.

Every body is written by :func:`encode_body` and every stored body is read through :func:`decode_body`.
A resource of about 900 bytes of JSON is stored in about 130: the dictionary holds what FHIR resources of
the region share (element names, code systems, identifier systems, reference shapes). Frames name their
dictionary (the Zstandard dictionary id, private range), so a dictionary once shipped is kept for reading;
a new one gets a new id and a new file (``train_dictionary``). Bodies stored before migration 0015 (plain
JSON, or zlib from 2 kB) are still read.
"""

from __future__ import annotations

import threading
import zlib
from functools import cache
from importlib import resources

import zstandard

__all__ = ["DICTIONARY_ID", "decode_body", "encode_body"]

_LEVEL = 3
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_DICTIONARIES = {32769: "bodies-32769.zdict"}
"""Shipped dictionaries by their Zstandard dictionary id: never remove one, rows may still name it."""
DICTIONARY_ID = 32769
"""The dictionary new bodies are compressed with."""

_local = threading.local()


@cache
def _dictionary(dict_id: int) -> zstandard.ZstdCompressionDict:
    name = _DICTIONARIES.get(dict_id)
    if name is None:
        raise ValueError(f"stored body names the unknown compression dictionary {dict_id}")
    data = resources.files(__package__).joinpath(name).read_bytes()
    dictionary = zstandard.ZstdCompressionDict(data, dict_type=zstandard.DICT_TYPE_FULLDICT)
    if dictionary.dict_id() != dict_id:
        raise ValueError(f"{name} has dictionary id {dictionary.dict_id()}, expected {dict_id}")
    dictionary.precompute_compress(level=_LEVEL)
    return dictionary


def _compressor() -> zstandard.ZstdCompressor:
    # Compressor and decompressor objects are not thread-safe: one of each per thread.
    found = getattr(_local, "compressor", None)
    if found is None:
        found = _local.compressor = zstandard.ZstdCompressor(
            level=_LEVEL, dict_data=_dictionary(DICTIONARY_ID), write_checksum=False, write_content_size=True
        )
    return found


def _decompressor(dict_id: int) -> zstandard.ZstdDecompressor:
    cached = getattr(_local, "decompressors", None)
    if cached is None:
        cached = _local.decompressors = {}
    found = cached.get(dict_id)
    if found is None:
        dictionary = _dictionary(dict_id) if dict_id else None
        found = cached[dict_id] = zstandard.ZstdDecompressor(dict_data=dictionary)
    return found


def encode_body(body: bytes) -> bytes:
    """The stored form of a canonical JSON body: a Zstandard frame with the current dictionary."""
    return _compressor().compress(body)


def decode_body(stored: bytes) -> bytes:
    """The canonical JSON of a stored body, whichever form it was stored in (zstd, zlib or plain JSON)."""
    first = stored[:1]
    if first == b"\x28" and stored[:4] == _ZSTD_MAGIC:
        dict_id = zstandard.get_frame_parameters(stored).dict_id
        return _decompressor(dict_id).decompress(stored)
    if first == b"\x78":  # zlib (RFC 1950) header byte; JSON never starts with it
        return zlib.decompress(stored)
    return stored
