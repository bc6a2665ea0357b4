"""The event-stream encoder, checked by the decoder boto3 itself uses."""

from __future__ import annotations

import json

from botocore.eventstream import EventStreamBuffer

from lamina.api.eventstream import encode_message, invoke_complete, payload_chunk


def _decode(data: bytes, step: int | None = None) -> list[tuple[dict[str, object], bytes]]:
    buf = EventStreamBuffer()
    out = []
    pieces = [data] if step is None else [data[i : i + step] for i in range(0, len(data), step)]
    for piece in pieces:
        buf.add_data(piece)
        out += [(msg.headers, msg.payload) for msg in buf]
    return out


def test_a_message_round_trips_through_botocore() -> None:
    data = encode_message([(":message-type", "event"), ("x-ünïcode", "välue")], b"\x00\x01raw")
    [(headers, payload)] = _decode(data)
    assert headers == {":message-type": "event", "x-ünïcode": "välue"}
    assert payload == b"\x00\x01raw"


def test_invoke_stream_events_decode_in_order_even_when_split() -> None:
    big = bytes(range(256)) * 1000
    data = payload_chunk(b"hello ") + payload_chunk(big) + payload_chunk(b"")
    data += invoke_complete({"ErrorCode": "ValueError", "ErrorDetails": "nope"})
    for step in (None, 7, 4096):
        msgs = _decode(data, step)
        assert [h[":event-type"] for h, _ in msgs] == ["PayloadChunk"] * 3 + ["InvokeComplete"]
        assert all(h[":message-type"] == "event" for h, _ in msgs)
        assert msgs[0][0][":content-type"] == "application/octet-stream"
        assert msgs[0][1] == b"hello " and msgs[1][1] == big and msgs[2][1] == b""
        assert msgs[3][0][":content-type"] == "application/json"
        assert json.loads(msgs[3][1]) == {"ErrorCode": "ValueError", "ErrorDetails": "nope"}
    byte_by_byte = _decode(payload_chunk(b"ab") + invoke_complete({}), 1)
    assert [payload for _, payload in byte_by_byte] == [b"ab", b"{}"]


def test_botocore_parses_the_events_as_the_lambda_model_says() -> None:
    import botocore.session
    from botocore.eventstream import EventStream
    from botocore.parsers import EventStreamJSONParser

    model = botocore.session.get_session().get_service_model("lambda")
    op = model.operation_model("InvokeWithResponseStream")
    shape = op.output_shape.members["EventStream"]
    body = payload_chunk(b"one") + payload_chunk(b"two") + invoke_complete({"LogResult": "eA=="})

    class Raw:
        def stream(self):  # type: ignore[no-untyped-def]
            yield body[:10]
            yield body[10:]

    events = list(EventStream(Raw(), shape, EventStreamJSONParser(), op.name))
    assert events == [
        {"PayloadChunk": {"Payload": b"one"}},
        {"PayloadChunk": {"Payload": b"two"}},
        {"InvokeComplete": {"LogResult": "eA=="}},
    ]
