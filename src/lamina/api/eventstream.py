"""The AWS event-stream encoding (`application/vnd.amazon.eventstream`), the encoder side.

A message is a prelude (total length and headers length, u32 big-endian each, then the CRC32
of those 8 bytes), the headers, the payload, and the CRC32 of everything before it. A header
is a 1-byte name length, the name, a type byte and a value; lamina only sends strings (type 7,
u16 big-endian length, UTF-8 bytes).
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Sequence
from typing import Any

_STRING = 7
_PRELUDE = struct.Struct(">II")
_CRC = struct.Struct(">I")


def encode_headers(headers: Sequence[tuple[str, str]]) -> bytes:
    out = bytearray()
    for name, value in headers:
        raw_name, raw_value = name.encode("utf-8"), value.encode("utf-8")
        if len(raw_name) > 255 or len(raw_value) > 0xFFFF:
            raise ValueError(f"event-stream header {name!r} is too long")
        out += bytes((len(raw_name),)) + raw_name + bytes((_STRING,))
        out += len(raw_value).to_bytes(2, "big") + raw_value
    return bytes(out)


def encode_message(headers: Sequence[tuple[str, str]], payload: bytes) -> bytes:
    encoded = encode_headers(headers)
    total = _PRELUDE.size + _CRC.size + len(encoded) + len(payload) + _CRC.size
    prelude = _PRELUDE.pack(total, len(encoded))
    head = prelude + _CRC.pack(zlib.crc32(prelude))
    crc = zlib.crc32(payload, zlib.crc32(encoded, zlib.crc32(head)))
    return b"".join((head, encoded, payload, _CRC.pack(crc)))


def event(event_type: str, payload: bytes, content_type: str) -> bytes:
    """An `event` message, as a service sends inside an event-stream response."""
    headers = (
        (":event-type", event_type),
        (":content-type", content_type),
        (":message-type", "event"),
    )
    return encode_message(headers, payload)


def payload_chunk(data: bytes) -> bytes:
    return event("PayloadChunk", data, "application/octet-stream")


def invoke_complete(fields: dict[str, Any]) -> bytes:
    return event("InvokeComplete", json.dumps(fields).encode(), "application/json")
