"""The wire encodings: msgspec straight from the message, as msgpack/JSON of its builtins."""

from __future__ import annotations

import json
import math

import msgpack
import msgspec

from edgeloop.net import protocol
from edgeloop.net.protocol import ComponentValue, WorldUpdate
from edgeloop.net.registry import info


def _update() -> WorldUpdate:
    values = {"position": [1.25, -2.5, 0.0], "connection": True, "mode": "auto", "t": 2**40}
    return WorldUpdate([ComponentValue(7, "Robot", values)], removed=[3], version=2**33)


def test_msgpack_is_the_bytes_of_its_builtins() -> None:
    update = _update()
    found = info(WorldUpdate)
    expected = msgpack.packb([found.name, found.schema_hash, msgspec.to_builtins(update)])
    assert protocol.encode(update) == expected


def test_json_triple_carries_the_hash_in_hex() -> None:
    update = _update()
    found = info(WorldUpdate)
    name, hash_hex, payload = json.loads(
        protocol.encode_json_parts(found.name, found.schema_hash, update)
    )
    assert (name, int(hash_hex, 16)) == (found.name, found.schema_hash)
    assert len(hash_hex) == 16
    assert payload == msgspec.to_builtins(update)


def test_json_has_no_nan_token() -> None:
    """JSON.parse in a browser refuses NaN: a value that is not a number goes as null."""
    text = protocol.encode_json_parts("x.Y", 1, {"level": math.nan, "ok": 1.5})
    assert json.loads(text)[2] == {"level": None, "ok": 1.5}
    assert "NaN" not in text
