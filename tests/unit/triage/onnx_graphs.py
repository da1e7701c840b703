"""Tiny ONNX models written by hand (protobuf wire format), for tests that need graphs the
shipped model does not have: a fixed batch size, several inputs, a dynamic image size.

The model is ``ReduceMax`` over every axis but the batch, then ``Flatten``: its score for a
slice is the largest value of the slice's preprocessed input, a result the tests can compute
themselves. Field numbers are those of ``onnx.proto`` (ModelProto, GraphProto, NodeProto,
AttributeProto, ValueInfoProto, TypeProto, TensorShapeProto); opset 13, IR version 7.
"""

from __future__ import annotations

from collections.abc import Sequence

import blake3

__all__ = ["max_model", "write_model"]

Dim = int | str


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, value: int | str | bytes) -> bytes:
    if isinstance(value, int):
        return _varint(number << 3) + _varint(value)
    data = value.encode() if isinstance(value, str) else value
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _value_info(name: str, shape: Sequence[Dim], elem_type: int = 1) -> bytes:
    dims = b"".join(_field(1, _field(1, d) if isinstance(d, int) else _field(2, d)) for d in shape)
    tensor = _field(1, elem_type) + _field(2, dims)
    return _field(1, name) + _field(2, _field(1, tensor))


def max_model(
    input_shapes: Sequence[Sequence[Dim]],
    output_shape: Sequence[Dim],
    elem_type: int = 1,
    columns: int = 1,
) -> bytes:
    """A model with one input per entry of *input_shapes* (only the first is used), whose output
    (declared *output_shape*) is the maximum of the first input over its non-batch axes, repeated
    in *columns* columns. *elem_type* 1 is float32, 10 float16."""
    axes = b"".join(_field(8, a) for a in range(1, len(input_shapes[0])))
    reduce_max = (
        _field(1, "x0")
        + _field(2, "m")
        + _field(4, "ReduceMax")
        + _field(5, _field(1, "axes") + axes + _field(20, 7))
        + _field(5, _field(1, "keepdims") + _field(3, 1) + _field(20, 2))
    )
    flatten = (
        _field(1, "m")
        + _field(2, "y" if columns == 1 else "f")
        + _field(4, "Flatten")
        + _field(5, _field(1, "axis") + _field(3, 1) + _field(20, 2))
    )
    concat = (
        b"".join(_field(1, "f") for _ in range(columns))
        + _field(2, "y")
        + _field(4, "Concat")
        + _field(5, _field(1, "axis") + _field(3, 1) + _field(20, 2))
    )
    graph = (
        _field(1, reduce_max)
        + _field(1, flatten)
        + (_field(1, concat) if columns > 1 else b"")
        + _field(2, "max")
        + b"".join(
            _field(11, _value_info(f"x{i}", shape, elem_type))
            for i, shape in enumerate(input_shapes)
        )
        + _field(12, _value_info("y", output_shape, elem_type))
    )
    return _field(1, 7) + _field(2, "radiogate-tests") + _field(7, graph) + _field(8, _field(2, 13))


def write_model(path: str, data: bytes) -> str:
    """Write *data* to *path*; return its BLAKE3 (hex) for the card."""
    with open(path, "wb") as f:
        f.write(data)
    return blake3.blake3(data).hexdigest()
