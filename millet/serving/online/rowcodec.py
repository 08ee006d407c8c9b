"""One online row per entity per feature view: the row's Feast `Value`s, packed as a `RepeatedValue`.

The bytes are exactly what `RepeatedValue(val=[ValueProto(...), ...]).SerializeToString()` gives, so a
read is one protobuf parse; `pack_columns` builds them for a whole Arrow batch at once with numpy instead
of one message per value (which is what makes stock materialization slow).

Wire format (protobuf): each element is tag 0x0A (field 1, length-delimited), its length, then the
Value message: float_val is field 6, fixed32 (tag 0x35); int32_val is field 3, varint (tag 0x18).
A null is an empty Value (no field set), which Feast reads back as a missing value.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

ELEMENT_TAG = 0x0A
FLOAT_TAG = 0x35
INT32_TAG = 0x18
NULL_ELEMENT = bytes([ELEMENT_TAG, 0])


def pack_columns(columns: Sequence[pa.Array]) -> pa.BinaryArray:
    """Row i of the result is the serialized RepeatedValue of (columns[0][i], columns[1][i], ...).

    Each column's cells are laid out at a fixed width in one (rows × total width) byte matrix; a mask of
    the bytes each cell really uses, read in row order, leaves each row's elements back to back."""
    if not columns:
        raise ValueError("a row needs at least one feature")
    cells = [_cells(_as_array(column)) for column in columns]
    rows = len(cells[0][1])
    widths = [body.shape[1] for body, _ in cells]
    matrix = np.empty((rows, sum(widths)), np.uint8)
    used = np.empty(matrix.shape, bool)
    row_bytes = np.zeros(rows, np.int64)
    at = 0
    for (body, lengths), width in zip(cells, widths, strict=True):
        matrix[:, at:at + width] = body
        np.less(np.arange(width), lengths[:, None], out=used[:, at:at + width])
        row_bytes += lengths
        at += width
    return _binary(matrix[used], row_bytes)


def unpack_row(blob: bytes):
    """The Values of one packed row, in the order they were packed."""
    from feast.protos.feast.types.Value_pb2 import RepeatedValue

    row = RepeatedValue()
    row.ParseFromString(blob)
    return row.val


def pack_values(values: Sequence) -> bytes:
    """One row from Value messages (the slow path, for Feast's per-row `online_write_batch`)."""
    from feast.protos.feast.types.Value_pb2 import RepeatedValue

    return RepeatedValue(val=values).SerializeToString()


def _as_array(column) -> pa.Array:
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def _cells(column: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Each cell as one serialized RepeatedValue element: its bytes, padded, and its length."""
    if pa.types.is_float32(column.type):
        body, lengths = _float_elements(column)
    elif pa.types.is_int32(column.type):
        body, lengths = _int32_elements(column)
    else:
        raise TypeError(f"no packed encoding for Arrow type {column.type}; features are float32 or int32")
    if column.null_count:
        nulls = ~column.is_valid().to_numpy(zero_copy_only=False)
        body[nulls, : len(NULL_ELEMENT)] = np.frombuffer(NULL_ELEMENT, np.uint8)
        lengths = np.where(nulls, len(NULL_ELEMENT), lengths)
    return body, lengths


def _float_elements(column: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    values = column.fill_null(0).to_numpy().astype("<f4", copy=False)
    body = np.empty((len(values), 7), np.uint8)
    body[:, :3] = (ELEMENT_TAG, 5, FLOAT_TAG)
    body[:, 3:] = values.view(np.uint8).reshape(-1, 4)
    return body, np.full(len(values), 7)


def _int32_elements(column: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    values = column.fill_null(0).to_numpy().astype(np.int64).view(np.uint64)
    width = np.ones(len(values), np.int64)  # varint bytes: 7 bits each
    for bits in range(7, 64, 7):
        width += values >= np.uint64(1 << bits)
    widest = int(width.max(initial=1))  # counts are small: most columns need one or two bytes
    shifts = 7 * np.arange(widest, dtype=np.uint64)
    groups = ((values[:, None] >> shifts) & np.uint64(0x7F)).astype(np.uint8)
    more = np.arange(widest) < (width - 1)[:, None]  # continuation bit on all but the last byte
    body = np.empty((len(values), 3 + widest), np.uint8)
    body[:, :3] = (ELEMENT_TAG, 0, INT32_TAG)
    body[:, 1] = 1 + width
    body[:, 3:] = groups | (more.astype(np.uint8) << 7)
    return body, 3 + width


def _binary(data: np.ndarray, lengths: np.ndarray) -> pa.BinaryArray:
    """Consecutive values of `lengths` bytes each, out of `data`, as one Arrow binary array."""
    offsets = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return pa.LargeBinaryArray.from_buffers(pa.large_binary(), len(lengths),
                                            [None, pa.py_buffer(offsets), pa.py_buffer(data)])
