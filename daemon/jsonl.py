"""One typed JSON line per msgspec Struct, shared by the order journal and the decision records.

The line is the Struct's own msgspec JSON (Decimal as an exact string) with a leading `"type"`
field naming its class, spliced in front so the hot path builds no intermediate dict.
"""

from __future__ import annotations

import msgspec

_ENCODER = msgspec.json.Encoder(decimal_format="string")


_HEADS: dict[type, bytes] = {}


def typed_line(record: msgspec.Struct) -> bytes:
    body = _ENCODER.encode(record)  # b'{...}' (b'{}' for a Struct without fields)
    cls = type(record)
    head = _HEADS.get(cls)
    if head is None:
        head = _HEADS[cls] = b'{"type":"' + cls.__name__.encode() + b'"'
    return head + (b"," + body[1:] if len(body) > 2 else b"}") + b"\n"
